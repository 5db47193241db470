"""`mailer status`."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import click

from mailer.cli.common import emit_json, print_table, session, workspace_json
from mailer.core.wording import counted

if TYPE_CHECKING:
    from mailer.store.daemon_state import DaemonView


@click.command()
@workspace_json
def status(ctx: click.Context, workspace: str | None, as_json: bool) -> None:
    """Counts of customers, subscribed, pending, orders and deliveries by state; the
    daemon."""
    from datetime import UTC

    from mailer.core.clock import iso_z
    from mailer.store.customers import status_counts
    from mailer.store.daemon_state import NEVER_RUN, read_state
    from mailer.store.feeds.apply import last_events
    from mailer.store.operator.pauses import pauses

    engine = session(ctx, workspace).engine
    counts = status_counts(engine)
    now = datetime.now(UTC)
    daemon = read_state(engine, now)
    heard = last_events(engine)
    with engine.connect() as conn:
        paused = pauses(conn)
    if as_json:
        emit_json({**counts.as_json(),
                   "daemon": NEVER_RUN if daemon is None else daemon.as_json(),
                   "hooks": {e.source: {"topic": e.topic, "received_at": iso_z(e.received_at),
                                        "lag_seconds": None if e.lag_seconds is None
                                        else round(e.lag_seconds)} for e in heard},
                   "paused": {slug: {"at": iso_z(p.at), "by": p.by, "reason": p.reason}
                              for slug, p in paused.items()}})
        return
    rows = [("customers", counts.customers), ("subscribed", counts.subscribed)]
    if counts.pending:  # double opt-in: waiting to confirm
        rows.append(("pending", counts.pending))
    rows.append(("orders", counts.orders))
    rows += [(f"deliveries {state}", n) for state, n in counts.deliveries.items()]
    print_table(("", ""), rows, title="mailer status", show_header=False)
    for line in daemon_lines(daemon, now):
        click.echo(line)
    for event in heard:  # the shop's webhooks: the last of each source, and how late
        lag = "" if event.lag_seconds is None else \
            f", {event.lag_seconds:.0f} s after the shop's change"
        click.echo(f"hooks: {event.source} {event.topic} {_ago(now - event.received_at)}{lag}")
    for slug, pause in paused.items():  # an operator's pauses (`mailer pause`)
        why = f": {pause.reason}" if pause.reason else ""
        click.echo(f"paused: {slug} since {_when(pause.at)} by {pause.by}{why}")


def daemon_lines(daemon: DaemonView | None, now: datetime) -> list[str]:
    """The daemon in words: where it runs (or ran), its last sweep, what is next."""
    if daemon is None:
        return ["daemon: never run on this database"]
    where = f"on host {daemon.host}" + ("" if daemon.pid is None else f" as pid {daemon.pid}")
    if daemon.running:
        sweep = ("no sweep yet" if daemon.last_sweep is None else
                 f"last sweep {_ago(now - daemon.heartbeat)} (planned {daemon.last_planned})")
        said = f"running {where} since {_when(daemon.started)}, {sweep}"
    else:
        how = ("when it stopped" if daemon.stopped is not None
               else "and it never said it stopped: killed, or its host is down")
        said = f"not running (last seen {_when(daemon.heartbeat)} {where}, {how})"
        if daemon.last_sweep is not None:
            said += f"; its last sweep planned {daemon.last_planned}"
    lines = [f"daemon: {said}"]
    if daemon.next_due is None:
        lines.append("next due: nothing (no campaign can become due, no row waits)")
    else:
        at = _when(daemon.next_due, seconds=daemon.next_due.second != 0)
        lines.append(f"next due: {daemon.next_due_campaign} at {at}"
                     if daemon.next_due_campaign else f"next due: {at}")
    if daemon.workspace_problems:
        lines.append(f"workspace: {counted(daemon.workspace_problems, 'problem')} ignored "
                     "(the last good workspace runs)")
    return lines


def _when(moment: datetime, *, seconds: bool = False) -> str:
    """'2026-11-23 10:00 UTC' (with ':SS' when SECONDS)."""
    from datetime import UTC

    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M" + (":%S" if seconds else "")
                                           + " UTC")


def _ago(span: timedelta) -> str:
    """'just now', '40 seconds ago', '2 minutes ago', '3 hours ago', '4 days ago'."""
    seconds = max(0, int(span.total_seconds()))
    if seconds == 0:
        return "just now"
    for unit, size, below in (("second", 1, 60), ("minute", 60, 120 * 60),
                              ("hour", 3600, 48 * 3600)):
        if seconds < below:
            return f"{counted(seconds // size, unit)} ago"
    return f"{counted(seconds // 86400, 'day')} ago"
