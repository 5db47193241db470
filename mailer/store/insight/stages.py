"""Relationship stages in SQL and their history (the stage_history table).

`stage_case` is the one SQL form of the rules of mailer.insight.stages: segments
(mailer.segments.compiler), `stages update` and `stages show` all build on it, so
a segment's `stage:` and the recorded history never disagree. Every query here
reads orders grouped by customer (the covering index ix_orders_customer_placed
serves it); none runs per customer.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BindParameter,
    ColumnElement,
    Select,
    and_,
    bindparam,
    case,
    func,
    insert,
    literal,
    or_,
    select,
)

from mailer.config.settings import STAGE_NAMES, StageSettings
from mailer.store.db import IDS, Connection, Engine
from mailer.store.locks import STAGES_KEY, one_writer
from mailer.store.models import Customer, Order, StageChange

AWARENESS, EXPLORATION, EXPANSION, COMMITMENT, TERMINATION = STAGE_NAMES
BATCH = 20_000  # customers per statement of `stages update`


def stage_case(orders: ColumnElement[Any], last_at: ColumnElement[Any],
               recent: ColumnElement[Any], *, now: datetime,
               rules: StageSettings) -> ColumnElement[str]:
    """The stage from a customer's paid orders by NOW: their count (0, never NULL), the
    latest one's time and how many were placed in [now − committed_within, now]."""
    return case(
        (orders == 0, literal(AWARENESS)),
        (last_at < now - rules.lapsed_after, literal(TERMINATION)),
        (recent >= rules.committed_orders, literal(COMMITMENT)),
        (orders >= 2, literal(EXPANSION)),
        else_=literal(EXPLORATION))


def _paid(now: datetime | BindParameter[Any]) -> ColumnElement[bool]:
    return and_(Order.status == "paid", Order.placed_at <= now)


def _stages_now(now: datetime, rules: StageSettings, lo: int, hi: int) -> Any:
    """(customer id, stage) of the customers with ids in [LO, HI], as a subquery."""
    orders = (select(Order.customer_id, func.count().label("n"),
                     func.max(Order.placed_at).label("last"),
                     func.sum(case((Order.placed_at >= now - rules.committed_within, 1),
                                   else_=0)).label("recent"))
              .where(_paid(now), Order.customer_id.between(lo, hi))
              .group_by(Order.customer_id).subquery("paid"))
    stage = stage_case(func.coalesce(orders.c.n, 0), orders.c.last,
                       func.coalesce(orders.c.recent, 0), now=now, rules=rules)
    return (select(Customer.id.label("customer_id"), stage.label("stage"))
            .select_from(Customer.__table__.outerjoin(orders, orders.c.customer_id == Customer.id))
            .where(Customer.id.between(lo, hi)).subquery("now"))


def _recorded(lo: int, hi: int) -> Any:
    """(customer id, stage) of each customer's latest recording, ids in [LO, HI]."""
    latest = (select(func.max(StageChange.id).label("id"))
              .where(StageChange.customer_id.between(lo, hi))
              .group_by(StageChange.customer_id).subquery("latest"))
    return (select(StageChange.customer_id, StageChange.to_stage)
            .join(latest, latest.c.id == StageChange.id).subquery("recorded"))


@dataclass(frozen=True)
class Recorded:
    """What one `stages update` wrote: first recordings and changes, by (from, to)."""

    first: int
    moves: Counter[tuple[str, str]]


def record_changes(engine: Engine, *, now: datetime, rules: StageSettings) -> Recorded:
    """Compute every customer's stage as of NOW, BATCH customers a statement, and record
    each that differs from the customer's latest recording (a customer never recorded
    gets a row without from_stage). One transaction: all of it, or none."""
    first, moves = 0, Counter[tuple[str, str]]()
    with engine.connect() as conn, conn.begin(), one_writer(
            engine, conn, key=STAGES_KEY, name="stages", doing="updating stages"):
        low, high = conn.execute(select(func.min(Customer.id), func.max(Customer.id))).one()
        for lo in range(low or 0, (high or -1) + 1, BATCH):
            hi = lo + BATCH - 1
            current, recorded = _stages_now(now, rules, lo, hi), _recorded(lo, hi)
            rows = conn.execute(
                select(current.c.customer_id, recorded.c.to_stage, current.c.stage)
                .select_from(current.outerjoin(
                    recorded, recorded.c.customer_id == current.c.customer_id))
                .where(or_(recorded.c.to_stage.is_(None),
                           recorded.c.to_stage != current.c.stage))).all()
            if not rows:
                continue
            conn.execute(insert(StageChange), [
                {"customer_id": customer_id, "from_stage": before, "to_stage": after,
                 "detected_at": now} for customer_id, before, after in rows])
            for _, before, after in rows:
                if before is None:
                    first += 1
                else:
                    moves[(before, after)] += 1
    return Recorded(first, moves)


def latest_detection(engine: Engine) -> datetime | None:
    """When the latest change was recorded (None before the first update)."""
    with engine.connect() as conn:
        found: datetime | None = conn.execute(select(func.max(StageChange.detected_at))).scalar()
    if isinstance(found, str):  # SQLite's aggregates lose the column type
        found = datetime.fromisoformat(found)
    return None if found is None else found.replace(tzinfo=found.tzinfo or UTC)


def flow(engine: Engine, *, start: datetime, end: datetime,
         rules: StageSettings) -> dict[tuple[str, str], int]:
    """How many customers were in each (stage at START, stage at END), from their paid
    orders: one pass over orders placed by END, grouped in the database."""
    def stage_at(moment: datetime, orders: Any, last: Any, recent: Any) -> ColumnElement[str]:
        return stage_case(func.coalesce(orders, 0), last, func.coalesce(recent, 0), now=moment,
                          rules=rules)

    before_start = Order.placed_at <= start
    paid = (select(Order.customer_id,
                   func.sum(case((before_start, 1), else_=0)).label("n_start"),
                   func.max(case((before_start, Order.placed_at))).label("last_start"),
                   func.sum(case((and_(before_start,
                                       Order.placed_at >= start - rules.committed_within), 1),
                                 else_=0)).label("recent_start"),
                   func.count().label("n_end"), func.max(Order.placed_at).label("last_end"),
                   func.sum(case((Order.placed_at >= end - rules.committed_within, 1),
                                 else_=0)).label("recent_end"))
            .where(_paid(end)).group_by(Order.customer_id).subquery("paid"))
    # Stages in a subquery, grouped outside: PostgreSQL refuses a GROUP BY that repeats
    # an expression with its own parameters.
    stages = (select(stage_at(start, paid.c.n_start, paid.c.last_start, paid.c.recent_start)
                     .label("at_start"),
                     stage_at(end, paid.c.n_end, paid.c.last_end, paid.c.recent_end)
                     .label("at_end"))
              .select_from(Customer.__table__.outerjoin(paid, paid.c.customer_id == Customer.id))
              .subquery("stages"))
    with engine.connect() as conn:
        rows = conn.execute(select(stages.c.at_start, stages.c.at_end, func.count())
                            .group_by(stages.c.at_start, stages.c.at_end))
        return {(str(before), str(after)): int(n) for before, after, n in rows}


# Built once (a mail batch's read, as mailer.store.customers' are): values bound per call.
_RANKED = (select(Order.customer_id, Order.placed_at,
                  func.row_number().over(partition_by=Order.customer_id,
                                         order_by=(Order.placed_at.desc(), Order.id.desc()))
                  .label("rank"))
           .where(_paid(bindparam("now")), Order.customer_id.in_(IDS)).subquery("ranked"))
_LATEST = (select(_RANKED.c.customer_id, _RANKED.c.placed_at)
           .where(_RANKED.c.rank <= bindparam("limit"))
           .order_by(_RANKED.c.customer_id, _RANKED.c.rank))


def latest_paid_times(conn: Connection, ids: Sequence[int], *, now: datetime,
                      limit: int) -> dict[int, list[datetime]]:
    """The times of each customer's latest LIMIT paid orders placed by NOW, newest first
    (customers without one are left out): what a mail's `customer.stage` needs."""
    found: dict[int, list[datetime]] = {}
    for customer_id, placed_at in conn.execute(_LATEST, {"ids": list(ids), "now": now,
                                                         "limit": limit}):
        found.setdefault(customer_id, []).append(placed_at)
    return found


def changes_into(members: Any, to: str, from_: str | None, *, zone_name: str,
                 default_zone: str, start: datetime, end: datetime, now: datetime,
                 occurrence: str) -> Select[int, str]:
    """(customer id, OCCURRENCE) of the customers among MEMBERS (a query of customer
    ids) living in ZONE_NAME (those without a zone live in DEFAULT_ZONE) with a recorded
    change into TO (out of FROM_, when given) detected in [START, END) and by NOW: a
    stage_change campaign's candidates for one local day. A first recording (no
    from_stage) is never a change; several changes the same day give one row."""
    changed = select(StageChange.customer_id).where(
        StageChange.to_stage == to, StageChange.from_stage.is_not(None),
        StageChange.detected_at >= start, StageChange.detected_at < end,
        StageChange.detected_at <= now)
    if from_ is not None:
        changed = changed.where(StageChange.from_stage == from_)
    return (select(Customer.id, literal(occurrence))
            .where(Customer.id.in_(changed), Customer.id.in_(members),
                   func.coalesce(Customer.timezone, default_zone) == zone_name))


def stage_change_times(conn: Connection, default_zone: str, since: datetime,
                       until: datetime) -> list[tuple[str, str, str, datetime]]:
    """(zone of its customer, to, from, detected_at) of the stage changes detected in
    [SINCE, UNTIL); first recordings (no from stage) are no change and are left out."""
    zone_of = func.coalesce(Customer.timezone, default_zone)
    return [(str(z), str(to), str(from_), detected) for z, to, from_, detected in conn.execute(
        select(zone_of, StageChange.to_stage, StageChange.from_stage, StageChange.detected_at)
        .join(Customer, Customer.id == StageChange.customer_id)
        .where(StageChange.from_stage.is_not(None), StageChange.detected_at >= since,
               StageChange.detected_at < until))]
