"""Running segments against the store: sizes, members, one customer's memberships, SQL
and the funnel."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from mailer.config.conditions import All, SegmentSpec
from mailer.config.settings import Settings
from mailer.core.clock import zone
from mailer.core.errors import NotFoundError
from mailer.core.suggest import did_you_mean
from mailer.segments.compiler import (
    CUSTOMERS,
    CompiledSegment,
    Scope,
    compile_segment,
    count_query,
    funnel_query,
    members_query,
)
from mailer.store.db import Connection, Engine, serial_plans

MEMBER_COLUMNS = ("store_id", "email", "first_name", "last_name", "country", "city", "consent")


@dataclass(frozen=True)
class FunnelStep:
    condition: str
    line: int
    remaining: int


def scope_for(settings: Settings, now: datetime, engine: Engine) -> Scope:
    """Segments are evaluated as of the start of the current second, so that window
    boundaries given to the second (`--now`) hold exactly."""
    return Scope(now=now.replace(microsecond=0), tz=zone(settings.timezone),
                 currency=settings.store.currency, dialect=engine.dialect.name,
                 stages=settings.stages)


def pick(specs: dict[str, SegmentSpec], name: str) -> SegmentSpec:
    """The named segment; an unknown name gets a "did you mean"."""
    if name in specs:
        return specs[name]
    raise NotFoundError(f"unknown segment {name!r}" + did_you_mean(
        name, specs, otherwise=f"; known: {', '.join(specs)}"))


@contextmanager
def reading(engine: Engine) -> Iterator[Connection]:
    """A read transaction with serial plans (store.db.serial_plans says why)."""
    with engine.connect() as conn, conn.begin():
        serial_plans(conn)
        yield conn


def compiled(specs: dict[str, SegmentSpec], name: str, scope: Scope) -> CompiledSegment:
    return compile_segment(pick(specs, name), specs, scope)


def count(engine: Engine, specs: dict[str, SegmentSpec], name: str, scope: Scope) -> int:
    with reading(engine) as conn:
        return int(conn.execute(count_query(compiled(specs, name, scope))).scalar_one())


def members(engine: Engine, specs: dict[str, SegmentSpec], name: str, scope: Scope,
            limit: int) -> tuple[int, list[dict[str, Any]]]:
    """The segment's size and its first LIMIT members by store id."""
    segment = compiled(specs, name, scope)
    columns = [CUSTOMERS.c[c] for c in MEMBER_COLUMNS]
    with reading(engine) as conn:
        size = int(conn.execute(count_query(segment)).scalar_one())
        rows = conn.execute(members_query(segment, *columns)
                            .order_by(CUSTOMERS.c.store_id).limit(limit))
        found = [{("id" if key == "store_id" else key): value
                  for key, value in row._mapping.items()} for row in rows]
    return size, found


def member_ids(engine: Engine, specs: dict[str, SegmentSpec], name: str, scope: Scope, *,
               limit: int, within: str | None = None,
               among: list[int] | None = None) -> list[int]:
    """Ids of NAME's members (also in segment WITHIN, among AMONG), by store id."""
    query = members_query(compiled(specs, name, scope), CUSTOMERS.c.id)
    if within is not None:
        query = query.where(CUSTOMERS.c.id.in_(
            members_query(compiled(specs, within, scope), CUSTOMERS.c.id)))
    if among is not None:
        query = query.where(CUSTOMERS.c.id.in_(among))
    with reading(engine) as conn:
        return [row[0] for row in conn.execute(query.order_by(CUSTOMERS.c.store_id)
                                               .limit(limit))]


def memberships(engine: Engine, specs: dict[str, SegmentSpec], segments: list[str],
                scope: Scope, ids: list[int]) -> dict[int, set[str]]:
    """Which of SEGMENTS (`default` aside) each customer is in: one query per segment."""
    found: dict[int, set[str]] = {i: set() for i in ids}
    for name in segments:
        if name != "default" and ids:
            for member in member_ids(engine, specs, name, scope, limit=len(ids), among=ids):
                found[member].add(name)
    return found


def memberships_of(engine: Engine, specs: dict[str, SegmentSpec], customer_id: int,
                   scope: Scope) -> list[str]:
    """The names of every segment the customer is in, sorted: each segment compiled for
    this customer alone (compile_segment's AMONG), so the answer reads their own rows
    through the customer-led indexes and never scans the store."""
    found = []
    with reading(engine) as conn:
        for name in sorted(specs):
            segment = compile_segment(specs[name], specs, scope, among=[customer_id])
            if conn.execute(members_query(segment, CUSTOMERS.c.id)).first() is not None:
                found.append(name)
    return found


def sql(engine: Engine, specs: dict[str, SegmentSpec], name: str, scope: Scope) -> str:
    """The member query as the database receives it, values inlined."""
    query = members_query(compiled(specs, name, scope), CUSTOMERS.c.id)
    return str(query.compile(dialect=engine.dialect, compile_kwargs={"literal_binds": True}))


def funnel(engine: Engine, specs: dict[str, SegmentSpec], name: str,
           scope: Scope) -> list[FunnelStep]:
    """How many customers remain after each condition of a top-level all: (one step for
    any other tree), in one pass over the data."""
    spec = pick(specs, name)
    segment = compile_segment(spec, specs, scope)
    items = spec.root.items if isinstance(spec.root, All) else (spec.root,)
    with reading(engine) as conn:
        counts = conn.execute(funnel_query(segment)).one()
    return [FunnelStep(_label(item), getattr(item, "line", 0), int(n or 0))
            for item, n in zip(items, counts, strict=True)]


def _label(item: Any) -> str:
    from mailer.config.conditions import AnyOf, Condition, Not

    if isinstance(item, Condition):
        return item.text
    if isinstance(item, Not):
        return "not: {" + _label(item.item) + "}"
    word = "all" if isinstance(item, All) else "any" if isinstance(item, AnyOf) else "?"
    return f"{word}: [" + ", ".join(_label(i) for i in item.items) + "]"
