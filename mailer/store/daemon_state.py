"""The daemon's row in `daemon_state` (DESIGN §6): written by `mailer run`, read by
`mailer status`. Apart from the daemon, so that `status` starts without loading
the scheduler and the sender."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import insert, select, update

from mailer.core.clock import iso_z
from mailer.store.db import Engine
from mailer.store.models import DaemonState

ROLE = "planner"
STALE_AFTER = timedelta(minutes=3)  # a leader silent for longer is not running
# What `status --json` says of a database no daemon ever ran on (its keys since 0.1).
NEVER_RUN: dict[str, Any] = {"running": False, "leader": None, "last_sweep": None,
                             "next_due": None}
def write_state(engine: Engine, values: dict[str, Any], *, started: datetime) -> None:
    """Update the planner's row of daemon_state, creating it the first time."""
    with engine.begin() as conn:
        if conn.execute(update(DaemonState).where(DaemonState.role == ROLE)
                        .values(**values)).rowcount == 0:
            conn.execute(insert(DaemonState).values(
                {"role": ROLE, "started_at": started, "heartbeat_at": started,
                 "last_planned": 0, "workspace_problems": 0, **values}))


@dataclass(frozen=True)
class DaemonView:
    """The daemon as its row last described it. `started`, `heartbeat` and `stopped` are
    wall time (the heartbeat: its last sweep, start or stop); `last_sweep` and `next_due`
    are the daemon's clock (`--now` plus elapsed time)."""

    owner: str  # host:pid:id, as the ledger's leases name a sender
    running: bool
    started: datetime
    heartbeat: datetime
    stopped: datetime | None
    last_sweep: datetime | None
    last_planned: int
    next_due: datetime | None
    next_due_campaign: str | None
    workspace_problems: int

    @property
    def host(self) -> str:
        return self._owner_parts()[0]

    @property
    def pid(self) -> int | None:
        return self._owner_parts()[1]

    def _owner_parts(self) -> tuple[str, int | None]:
        parts = self.owner.rsplit(":", 2)  # a host name may hold a colon, pid and id cannot
        if len(parts) == 3 and parts[1].isdigit():
            return parts[0], int(parts[1])
        return self.owner, None

    def as_json(self) -> dict[str, Any]:
        return {"running": self.running, "leader": self.owner,
                "last_sweep": _iso(self.last_sweep), "next_due": _iso(self.next_due),
                "started": iso_z(self.started), "heartbeat": iso_z(self.heartbeat),
                "last_planned": self.last_planned,
                "workspace_problems": self.workspace_problems,
                "host": self.host, "pid": self.pid, "stopped": _iso(self.stopped),
                "next_due_campaign": self.next_due_campaign}


def read_state(engine: Engine, now: datetime, stale_after: timedelta = STALE_AFTER
               ) -> DaemonView | None:
    """The daemon as `mailer status` shows it (None: no daemon ever ran here): running
    when its leader wrote within STALE_AFTER and has not stopped."""
    with engine.connect() as conn:
        row = conn.execute(select(DaemonState.__table__)
                           .where(DaemonState.role == ROLE)).first()
    if row is None:
        return None
    running = row.stopped_at is None and row.heartbeat_at > now - stale_after
    return DaemonView(owner=row.owner, running=running, started=row.started_at,
                      heartbeat=row.heartbeat_at, stopped=row.stopped_at,
                      last_sweep=row.last_sweep_at, last_planned=row.last_planned,
                      next_due=row.next_due_at,
                      next_due_campaign=row.next_due_campaign,
                      workspace_problems=row.workspace_problems)


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else iso_z(moment)
