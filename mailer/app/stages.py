"""`mailer stages update | show`: the relationship stages (docs/customers.md).

`update` records in stage_history each customer whose stage as of now differs from
their latest recording (the daemon runs it hourly and after each import); `show`
recomputes a month's flow from orders alone (the stage at the month's start and at
its end), so its answer does not depend on when `update` ran.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, datetime
from typing import Any

from mailer.config.settings import Settings
from mailer.core.clock import iso_z, localize, zone
from mailer.core.errors import UserError
from mailer.insight.stages import Stage
from mailer.store.db import Engine
from mailer.store.insight.stages import flow, latest_detection, record_changes

ORDER = {stage.value: n for n, stage in enumerate(Stage)}


def _moves(pairs: Iterable[tuple[tuple[str, str], int]]) -> list[dict[str, Any]]:
    """[{from, to, customers}] of the pairs that are moves, in the stages' order."""
    moves = [(before, after, n) for (before, after), n in pairs if before != after and n]
    moves.sort(key=lambda move: (ORDER[move[0]], ORDER[move[1]]))
    return [{"from": before, "to": after, "customers": n} for before, after, n in moves]


def update(engine: Engine, settings: Settings, now: datetime) -> dict[str, Any]:
    """Record the changes of stage as of NOW: {now, recorded, changed, moves}."""
    now = now.replace(microsecond=0)  # as segments see it (mailer.segments.runner.scope_for)
    latest = latest_detection(engine)
    if latest is not None and now < latest:
        raise UserError(f"--now {iso_z(now)} is before the latest stage recording "
                        f"({iso_z(latest)}): the history only moves forward")
    recorded = record_changes(engine, now=now, rules=settings.stages)
    return {"now": iso_z(now), "recorded": recorded.first,
            "changed": sum(recorded.moves.values()), "moves": _moves(recorded.moves.items())}


def update_forward(engine: Engine, settings: Settings, now: datetime
                   ) -> dict[str, Any] | UserError:
    """update() as a step of another command (an import, a sweep of `run --once`): a now
    before the latest recording leaves the history as it is and says why instead."""
    try:
        return update(engine, settings, now)
    except UserError as err:
        return err


def month_bounds(month: date, settings: Settings) -> tuple[datetime, datetime]:
    """00:00 of the month's first day and of the next month's, in the workspace zone."""
    tz = zone(settings.timezone)
    following = date(month.year + month.month // 12, month.month % 12 + 1, 1)
    return (localize(datetime.combine(month, datetime.min.time()), tz),
            localize(datetime.combine(following, datetime.min.time()), tz))


def show(engine: Engine, settings: Settings, now: datetime,
         month: date | None) -> dict[str, Any]:
    """MONTH's flow (default: the month of NOW in the workspace zone): {month, counts,
    moves}. The stage at its end is as of 00:00 of the next month, or as of NOW for the
    month still running; a month after NOW is an error."""
    now = now.replace(microsecond=0)
    if month is None:
        month = now.astimezone(zone(settings.timezone)).date().replace(day=1)
    start, end = month_bounds(month, settings)
    if start > now:
        raise UserError(f"{month:%Y-%m} has not begun at {iso_z(now)}")
    pairs = flow(engine, start=start, end=min(end, now), rules=settings.stages)
    counts = dict.fromkeys((stage.value for stage in Stage), 0)
    for (_, after), n in pairs.items():
        counts[after] += n
    return {"month": f"{month:%Y-%m}", "counts": counts, "moves": _moves(pairs.items())}
