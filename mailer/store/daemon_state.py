"""The daemon's row in `daemon_state` (DESIGN §6): written by `mailer run`, read by
`mailer status`. Apart from the daemon, so that `status` starts without loading
the scheduler and the sender."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, insert, select, update

from mailer.core.clock import iso_z
from mailer.store.models import DaemonState

ROLE = "planner"


def write_state(engine: Engine, values: dict[str, Any], *, started: datetime) -> None:
    """Update the planner's row of daemon_state, creating it the first time."""
    with engine.begin() as conn:
        if conn.execute(update(DaemonState).where(DaemonState.role == ROLE)
                        .values(**values)).rowcount == 0:
            conn.execute(insert(DaemonState).values(
                {"role": ROLE, "started_at": started, "last_planned": 0,
                 "workspace_problems": 0, **values}))


def read_state(engine: Engine, now: datetime, stale_after: timedelta = timedelta(minutes=3)
               ) -> dict[str, Any]:
    """The daemon as `mailer status` shows it: running when its leader wrote within
    STALE_AFTER and has not stopped."""
    with engine.connect() as conn:
        row = conn.execute(select(DaemonState.__table__)
                           .where(DaemonState.role == ROLE)).first()
    if row is None:
        return {"running": False, "leader": None, "last_sweep": None, "next_due": None}
    running = row.stopped_at is None and row.heartbeat_at > now - stale_after
    return {"running": running, "leader": row.owner,
            "last_sweep": iso_z(row.last_sweep_at) if row.last_sweep_at else None,
            "next_due": iso_z(row.next_due_at) if row.next_due_at else None,
            "started": iso_z(row.started_at), "heartbeat": iso_z(row.heartbeat_at),
            "last_planned": row.last_planned, "workspace_problems": row.workspace_problems}
