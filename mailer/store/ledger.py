"""The ledger's writes around delivery (DESIGN §6): claims, leases, outcomes, recovery.

A sender leases due rows without changing their status (`claim`), turns a few
of them `sending` right before they go on the wire (`start`, at most the
concurrency's worth at any time) and records each outcome (`finish`). On
SQLite exactly one process sends (a file lock beside the database); on
PostgreSQL any number of senders claim with FOR UPDATE SKIP LOCKED, each
holding an advisory lock named after itself for as long as it lives, so a
survivor can tell at once that a lease owner is dead and resolve its rows:
leased rows go back to the queue, `sending` rows become `unknown`.

Every statement on `deliveries` lives here: besides delivery's, what planning reads
of the ledger and the rows it writes, and the scratch copy the forecast plans into.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import socket
import sqlite3
import tempfile
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

from sqlalchemy import (
    BindParameter,
    FunctionElement,
    Integer,
    Select,
    String,
    Table,
    Update,
    and_,
    bindparam,
    case,
    column,
    event,
    exists,
    func,
    insert,
    literal,
    literal_column,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.ext.compiler import compiles

from mailer.core.states import (
    COUNT_TOWARD_CAPS,
    DUE,
    EXPIRED_REASON,
    WENT_OUT,
    Consent,
    DeliveryState,
)
from mailer.store.db import (
    IDS,
    Connection,
    Engine,
    among,
    binds_arrays,
    create,
    insert_returning,
    is_server,
    stored_moment,
)
from mailer.store.locks import file_lock, lock_path
from mailer.store.models import (
    DELIVERY_STATES,
    Customer,
    Delivery,
    Event,
    Suppression,
    UTCDateTime,
)
from mailer.store.operator.pauses import PAUSED, paused_clause

LEASE = timedelta(minutes=5)  # how long claimed rows stay with a sender before others may take them
IN_FLIGHT = timedelta(minutes=10)  # a `sending` row older than this is certainly abandoned
DUE_STATES = DUE
DELIVERIES = cast(Table, Delivery.__table__)


def relax_commits(engine: Engine) -> None:
    """A sender's sessions (PostgreSQL) commit without waiting for the disk, except when
    rows turn `sending` (`start`, before the wire), which always waits. A write lost in a
    database crash can then never cause a second copy: a lost lease frees a row for
    others, a lost outcome leaves the row `sending`, which recovery makes `unknown`, a
    lost rate permit comes back after a minute. Waiting for the disk on every commit
    made PostgreSQL the bottleneck of delivery (13.3 s for 3,000 mails, 7.6 s without)."""
    if not is_server(engine):
        return

    def relax(dbapi_connection: Any, _record: Any) -> None:
        with dbapi_connection.cursor() as cursor:
            cursor.execute("SET synchronous_commit = off")
            # PostgreSQL's own choice between a custom and a generic plan for the
            # statements psycopg prepares: the turn's start, planned afresh each time,
            # spent 1.6-1.9 ms planning for 0.3 ms of work. The turn's statements reach
            # their rows through an index in either plan (the ids, the `sending` rows);
            # the claim's and expiry's generic plans would scan the ledger, and
            # PostgreSQL keeps their custom plans on cost (0 generic of 45 claims on a
            # 300,000-row ledger): docs/performance.md, 2026-12-04 evening.
        dbapi_connection.commit()

    event.listen(engine, "connect", relax)
    engine.dispose()  # pooled connections opened before would keep the default


def new_owner() -> str:
    """A sender's name in the ledger: host, pid and a random part."""
    return f"{socket.gethostname()[:30]}:{os.getpid()}:{uuid.uuid4().hex[:12]}"


def _owner_key(owner: str) -> int:
    """The PostgreSQL advisory lock key of a sender (signed 64 bits)."""
    return int.from_bytes(hashlib.sha256(owner.encode()).digest()[:8], "big", signed=True)


@dataclass(frozen=True)
class Row:
    """A claimed ledger row: what rendering and sending need."""

    id: int
    campaign: str
    campaign_version_id: int
    occurrence: str
    customer_id: int
    email: str
    subject_variant: int
    intro: str | None
    attempts: int
    send_after: datetime
    expires_at: datetime
    message_id: str | None = None  # made at plan time; NULL on rows planned before that


_ROW_COLUMNS = [DELIVERIES.c[name] for name in Row.__dataclass_fields__]


def row_by_id(conn: Connection, row_id: int) -> tuple[Row, str, datetime | None] | None:
    """Ledger row ROW_ID with its state and when it was sent (None: never), or None."""
    found = conn.execute(select(*_ROW_COLUMNS, DELIVERIES.c.status, DELIVERIES.c.sent_at)
                         .where(DELIVERIES.c.id == row_id)).first()
    if found is None:
        return None
    *values, status, sent_at = found
    return Row(*values), str(status), sent_at


def due(now: datetime | BindParameter[Any], campaigns: Sequence[str] | BindParameter[Any] | None,
        paused: Sequence[str] = ()) -> Any:
    """SQL: a row due at NOW (of CAMPAIGNS, None: of any), not of the PAUSED campaigns
    (NOW and CAMPAIGNS may be bound parameters: `claim` builds its statements once).

    The paused ones are named, read first (`paused_campaigns`): with a NOT EXISTS on that
    table instead, PostgreSQL took the anti-join for selective and sorted every due row
    of a `send CAMPAIGN` per lease, instead of reading the (status, send_after) index in
    order: 22 ms a lease at 20,000 due rows, 2.2 ms now (`mailer send` of 20,000 mails:
    53 s → 27 s, load average 5)."""
    condition = and_(
        DELIVERIES.c.status.in_(DUE_STATES),
        DELIVERIES.c.send_after <= now,
        or_(DELIVERIES.c.next_attempt_at.is_(None), DELIVERIES.c.next_attempt_at <= now),
        DELIVERIES.c.expires_at > now,
        or_(DELIVERIES.c.lease_until.is_(None), DELIVERIES.c.lease_until <= now))
    if paused:  # an operator's pause: none are leased
        condition = and_(condition, DELIVERIES.c.campaign.not_in(list(paused)))
    if campaigns is None:
        return condition
    return and_(condition, DELIVERIES.c.campaign.in_(
        campaigns if isinstance(campaigns, BindParameter) else list(campaigns)))


def _paused(conn: Connection) -> list[str]:
    return [str(name) for name in conn.execute(select(PAUSED.c.campaign)).scalars()]


def claim(engine: Engine, owner: str, now: datetime, limit: int,
          campaigns: Sequence[str] | None = None) -> list[Row]:
    """Lease up to LIMIT due rows, queued ones first, oldest due first, without changing
    their status (only `start` makes a row `sending`): one UPDATE … RETURNING per state.
    One state at a time, so the (status, send_after) index yields the oldest rows
    directly; with `status IN (...)` the database sorted every due row per claim and
    a 20,000-mail campaign slowed down as it went."""
    rows: list[Row] = []
    with engine.begin() as conn:
        paused = _paused(conn)  # a pause after this read: `start` refuses the rows
        values: dict[str, Any] = {"now": now, "owner": owner, "until": now + LEASE}
        if campaigns is not None:
            values["campaigns"] = list(campaigns)
        for state in DUE_STATES:
            if len(rows) >= limit:
                break
            statement = _claim_statement(state, campaigns is not None, tuple(paused),
                                         is_server(conn))
            rows += [Row(*row) for row in conn.execute(statement,
                                                       {**values, "n": limit - len(rows)})]
    return sorted(rows, key=lambda r: (r.send_after, r.id))


@functools.lru_cache(maxsize=64)
def _claim_statement(state: str, by_campaign: bool, paused: tuple[str, ...],
                     server: bool) -> Update:
    """claim's UPDATE for one state, built once (values bound: now, owner, until, n and
    the campaigns): a sender leases every batch, and building the statement and its
    cache key cost SQLAlchemy more than the database took to run it."""
    campaigns: BindParameter[Any] | None = (bindparam("campaigns", expanding=True)
                                             if by_campaign else None)
    picked = select(DELIVERIES.c.id).where(
        DELIVERIES.c.status == state, due(bindparam("now"), campaigns, paused)) \
        .order_by(DELIVERIES.c.send_after).limit(bindparam("n", type_=Integer))
    if server:  # other senders may claim at once
        picked = picked.with_for_update(skip_locked=True)
    return (update(DELIVERIES).where(DELIVERIES.c.id.in_(picked.scalar_subquery()))
            .values(lease_owner=bindparam("owner"), lease_until=bindparam("until"))
            .returning(*_ROW_COLUMNS))


def start(conn: Connection, owner: str, ids: Sequence[int], now: datetime,
          outcomes: Sequence[tuple[int, dict[str, Any]]] = ()) -> set[int]:
    """Turn leased rows `sending` right before they go on the wire, in the statement that
    checks consent, a pause and suppressions once more; returns the ids started. A row whose
    lease another sender took, whose customer opted out or whose campaign an operator
    paused since its lease, is left as it is. The
    transaction's commit waits for the disk whatever relax_commits set, as after `durable`:
    this is before the wire. On PostgreSQL the statement says so itself, one round trip
    a turn fewer than a `SET LOCAL` of its own.

    OUTCOMES (as finish_sent takes them: other rows, `sending` until now) are recorded in
    the same transaction first; on PostgreSQL in the same statement, a data-modifying
    WITH: a turn's outcomes and its next group cost one round trip, not two."""
    if ids and outcomes and binds_arrays(conn):
        return {row[0] for row in conn.execute(_START_AFTER_OUTCOMES, {
            **_outcome_params(outcomes, "o_"), "ids": list(ids), "owner": owner,
            "until": now + IN_FLIGHT, "now": now})}
    finish_sent(conn, owner, outcomes)
    if not ids:
        return set()
    statement = _START_DURABLE if is_server(conn) else _START
    return {row[0] for row in conn.execute(statement, {
        "ids": list(ids), "owner": owner, "until": now + IN_FLIGHT, "now": now})}


_MAY_MAIL = exists().where(
    Customer.id == DELIVERIES.c.customer_id, Customer.consent == "subscribed",
    or_(Customer.paused_until.is_(None), Customer.paused_until <= bindparam("now")),
    ~exists().where(Suppression.email_key == Customer.email_key))


class _LeaseOwner(FunctionElement[str]):
    """A row's lease owner, for statements that name their rows by id. PostgreSQL
    compares it through coalesce (an owner is never '') so no plan reaches the rows
    through the lease_owner index, which statistics from before the leases favour (one
    row estimated for a sender: the start scanned the ~900 it holds, 0.35 ms a turn,
    0.04 ms by id). SQLite compares the column itself: given the coalesce, its planner
    took the (status, send_after) index for 20 ids and a start of a 1M-row queue took
    100 ms instead of 0.1."""

    type = String()
    inherit_cache = True


@compiles(_LeaseOwner)
def _lease_owner(element: _LeaseOwner, compiler: Any, **kw: Any) -> str:
    return str(compiler.process(element.clauses, **kw))


@compiles(_LeaseOwner, "postgresql")
def _lease_owner_server(element: _LeaseOwner, compiler: Any, **kw: Any) -> str:
    return f"coalesce({compiler.process(element.clauses, **kw)}, '')"


def _held_by(owner: BindParameter[Any]) -> Any:
    """The row's lease is OWNER's (_LeaseOwner)."""
    return _LeaseOwner(DELIVERIES.c.lease_owner) == owner


_START = (update(DELIVERIES)
          .where(DELIVERIES.c.id.in_(IDS),
                 _held_by(bindparam("owner")),
                 DELIVERIES.c.status.in_(DUE_STATES), _MAY_MAIL,
                 ~paused_clause(DELIVERIES.c.campaign))
          .values(status="sending", attempts=DELIVERIES.c.attempts + 1,
                  lease_until=bindparam("until"))
          .returning(DELIVERIES.c.id))
# set_config(…, true) is SET LOCAL; an uncorrelated subquery is evaluated once, and any row
# turned `sending` passed this condition, so its commit waits for the disk.
_START_DURABLE = _START.where(
    select(func.set_config("synchronous_commit", "on", True)).scalar_subquery() == "on")


def durable(conn: Connection) -> None:
    """This transaction's commit waits for the disk, whatever relax_commits set."""
    if is_server(conn):
        conn.execute(text("SET LOCAL synchronous_commit = on"))


def finish(conn: Connection, owner: str, changes: Sequence[tuple[int, dict[str, Any]]],
           *, from_states: Sequence[str] = ("sending",)) -> None:
    """Write the new values of rows this sender holds."""
    if not changes:
        return
    by_columns: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for row_id, values in changes:
        by_columns.setdefault(tuple(sorted(values)), []).append(
            {**{f"v_{k}": v for k, v in values.items()}, "b_id": row_id, "b_owner": owner})
    for columns, params in by_columns.items():
        conn.execute(_finish_statement(columns, tuple(from_states)), params)


@functools.lru_cache(maxsize=64)
def _finish_statement(columns: tuple[str, ...], from_states: tuple[str, ...]) -> Update:
    """finish's UPDATE for rows changing COLUMNS, built once: a sender runs it every
    turn, and building it and its cache key cost about a tenth of a turn's CPU."""
    # executemany cannot expand an IN list: the states (our constants) are inlined
    states: list[Any] = [literal_column(f"'{state}'") for state in from_states
                         if state in DELIVERY_STATES]
    return (update(DELIVERIES)
            .where(DELIVERIES.c.id == bindparam("b_id"),
                   _held_by(bindparam("b_owner")),
                   DELIVERIES.c.status.in_(states))
            .values({name: bindparam(f"v_{name}") for name in columns}))


_OUTCOME_TYPES = {"id": "integer", "status": "text", "reason": "text",
                  "next_attempt_at": "timestamp", "last_reply": "text", "sent_at": "timestamp",
                  "message_id": "text"}


def _finish_sent_sql(prefix: str) -> str:
    """finish_sent's UPDATE on PostgreSQL: the outcomes as one JSON array bound as
    :PREFIXrows (psycopg dumped an array per column in Python, a third of a turn's
    CPU in the driver), their ids as an integer array :PREFIXid."""
    record = ", ".join(f"{name} {kind}" for name, kind in _OUTCOME_TYPES.items())
    return (
        "UPDATE deliveries AS d SET status = v.status, reason = v.reason, "
        "next_attempt_at = v.next_attempt_at, last_reply = v.last_reply, "
        "sent_at = v.sent_at, message_id = v.message_id, lease_owner = NULL, "
        f"lease_until = NULL FROM json_to_recordset(CAST(:{prefix}rows AS json)) "
        f"AS v({record}) "
        # d.id = ANY(:id) beside the `sending` rows' index: the planner never has to scan
        # the whole ledger (it once did, from `d.id = v.id` alone)
        f"WHERE d.id = ANY(CAST(:{prefix}id AS integer[])) AND d.id = v.id "
        "AND d.lease_owner = :owner AND d.status = 'sending'")


_FINISH_SENT = text(_finish_sent_sql(""))
# start's statement with a turn's outcomes recorded first in a WITH (their rows are
# `sending`, the started ones due: never the same row); :owner is the same sender's in both
_START_AFTER_OUTCOMES = _START_DURABLE.add_cte(
    text(_finish_sent_sql("o_") + " RETURNING d.id").columns(column("id", Integer))
    .cte("outcomes"))


def _outcome_params(changes: Sequence[tuple[int, dict[str, Any]]], prefix: str
                    ) -> dict[str, Any]:
    return {f"{prefix}id": [row_id for row_id, _ in changes],
            f"{prefix}rows": json.dumps([{name: _json_value(values[name]) if name != "id"
                                          else row_id for name in _OUTCOME_TYPES}
                                         for row_id, values in changes])}


def _json_value(value: Any) -> Any:
    """A value as json_to_recordset reads it into its column."""
    return stored_moment(value, "deliveries") if isinstance(value, datetime) else value


def finish_sent(conn: Connection, owner: str,
                changes: Sequence[tuple[int, dict[str, Any]]]) -> None:
    """Record attempts' outcomes (values from mailer.delivery.outcomes.settle plus
    message_id). On PostgreSQL one statement from one JSON parameter, else one UPDATE
    per row."""
    if not changes or not binds_arrays(conn):
        finish(conn, owner, changes)
        return
    conn.execute(_FINISH_SENT, {**_outcome_params(changes, ""), "owner": owner})


def suppress(conn: Connection, emails: Sequence[str], now: datetime) -> None:
    """Suppress addresses whose mailbox the server says does not exist (5.1.x)."""
    from mailer.core.addresses import email_key
    from mailer.store.customers import opt_out
    from mailer.store.customers import suppress as add_suppressions

    keys = {email_key(address) for address in emails}
    if not keys:
        return
    add_suppressions(conn, keys, now=now, source="smtp", reason="bounced")
    # only the subscribed: an opt-out already recorded keeps its own source and reason
    opt_out(conn, Customer.email_key.in_(keys) & (Customer.consent == Consent.SUBSCRIBED),
            Consent.BOUNCED, now=now, source="smtp",
            reason="mailbox does not exist")


def expire(engine: Engine, now: datetime, campaigns: Sequence[str] | None = None
           ) -> Counter[str]:
    """Rows still queued or deferred at their expiry become `expired`; returns how many,
    by campaign (a send's summary counts them)."""
    condition = and_(DELIVERIES.c.status.in_(DUE_STATES), DELIVERIES.c.expires_at <= now)
    if campaigns is not None:
        condition = and_(condition, DELIVERIES.c.campaign.in_(list(campaigns)))
    with engine.begin() as conn:
        return Counter(conn.execute(update(DELIVERIES).where(condition).values(
            status="expired", reason=EXPIRED_REASON, lease_owner=None,
            lease_until=None, next_attempt_at=None).returning(DELIVERIES.c.campaign)
        ).scalars())


def _abandon(conn: Connection, owners: Sequence[str] | None, caller: str) -> int:
    """Resolve what dead senders left: their `sending` rows become `unknown`, their
    leases are dropped. OWNERS None means every sender but the CALLER is dead (SQLite)."""
    mine = and_(DELIVERIES.c.lease_owner.is_not(None), DELIVERIES.c.lease_owner != caller) \
        if owners is None else DELIVERIES.c.lease_owner.in_(list(owners))
    lost = conn.execute(update(DELIVERIES).where(mine, DELIVERIES.c.status == "sending").values(
        status="unknown", lease_owner=None, lease_until=None,
        reason="its sender died while it was in flight: probably delivered, not resent"
    )).rowcount
    conn.execute(update(DELIVERIES).where(mine).values(lease_owner=None, lease_until=None))
    return int(lost)


def recover(engine: Engine, owner: str, now: datetime) -> int:
    """Resolve the rows of senders that are gone; returns how many became `unknown`.

    SQLite: called under the sending lock, so every other owner is dead. PostgreSQL:
    an owner whose advisory lock can be taken is dead; a `sending` row far past its
    in-flight time is abandoned whatever its owner."""
    with engine.begin() as conn:
        if not is_server(conn):
            return _abandon(conn, None, owner)
        owners = [o for o in conn.execute(
            select(DELIVERIES.c.lease_owner).where(DELIVERIES.c.lease_owner.is_not(None),
                                                   DELIVERIES.c.lease_owner != owner)
            .distinct()).scalars()]
        dead = []
        for other in owners:
            key = _owner_key(other)
            if _gone_from_this_host(other) or conn.execute(
                    text("SELECT pg_try_advisory_xact_lock(:k)"), {"k": key}).scalar():
                dead.append(other)
        lost = _abandon(conn, dead, owner) if dead else 0
        lost += conn.execute(update(DELIVERIES).where(
            DELIVERIES.c.status == "sending", DELIVERIES.c.lease_until < now - IN_FLIGHT
        ).values(status="unknown", lease_owner=None, lease_until=None,
                 reason="in flight for too long: probably delivered, not resent")).rowcount
        return int(lost)


def _gone_from_this_host(owner: str) -> bool:
    """A sender of this host whose process no longer exists (its database session may
    not have noticed yet)."""
    host, _, rest = owner.partition(":")
    pid = rest.partition(":")[0]
    if host != socket.gethostname()[:30] or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


@contextmanager
def sending_lock(engine: Engine, owner: str) -> Iterator[None]:
    """Hold the right to send for OWNER. SQLite: one sending process per database file,
    a second raises LockHeld at once (exit 3). PostgreSQL: an advisory lock named
    after OWNER, held on its own connection while the sender lives."""
    if is_server(engine):
        with engine.connect() as conn:
            conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": _owner_key(owner)})
            conn.commit()
            try:
                yield
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": _owner_key(owner)})
                conn.commit()
        return
    name = os.path.basename(engine.url.database or "mailer.db")
    with file_lock(lock_path(engine, "send-lock"), wait=False, doing=f"sending from {name}"):
        yield

def counts(engine: Engine, campaign: str) -> dict[str, int]:
    """The campaign's rows by state (every state, zeros included)."""
    found: dict[str, int] = dict.fromkeys(DELIVERY_STATES, 0)
    with engine.connect() as conn:
        for state, n in conn.execute(select(DELIVERIES.c.status, func.count())
                                     .where(DELIVERIES.c.campaign == campaign)
                                     .group_by(DELIVERIES.c.status)):
            found[state] = int(n)
    return found


def waiting(engine: Engine, campaign: str) -> int:
    """The campaign's rows that will still go: queued or deferred."""
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(DELIVERIES).where(
            DELIVERIES.c.campaign == campaign,
            DELIVERIES.c.status.in_(DUE_STATES))).scalar_one())


def queued_rows(engine: Engine) -> int:
    """How many ledger rows are queued (due now or later)."""
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(Delivery)
                                .where(Delivery.status == DeliveryState.QUEUED)).scalar_one())


def next_release_of(engine: Engine, now: datetime) -> tuple[datetime, str] | None:
    """The earliest time after NOW a queued or deferred row may go (quiet hours, retries),
    with that row's campaign (the first by name when several are due then). One query
    per state: each walks the (status, send_after) index to its first row."""
    with engine.connect() as conn:
        found = [row for state in DUE for row in conn.execute(
            select(Delivery.send_after, Delivery.campaign)
            .where(Delivery.status == state, Delivery.send_after > now)
            .order_by(Delivery.send_after, Delivery.campaign).limit(1))]
    if not found:
        return None
    at, campaign = min((row[0], str(row[1])) for row in found)
    return at, campaign


# --- planning: what the planner reads of the ledger and the rows it writes ----------------


def campaign_rows(conn: Connection, campaign: str) -> int:
    """How many ledger rows CAMPAIGN has, in any state."""
    return int(conn.execute(select(func.count()).select_from(Delivery)
                            .where(Delivery.campaign == campaign)).scalar_one())


def planned_pairs(conn: Connection, campaign: str, occurrences: list[str],
                  ids: list[int]) -> set[tuple[int, str]]:
    """(customer id, occurrence) of CAMPAIGN's rows for these customers and occurrences."""
    return {(row[0], row[1]) for row in conn.execute(
        select(Delivery.customer_id, Delivery.occurrence)
        .where(Delivery.campaign == campaign, Delivery.occurrence.in_(occurrences),
               among(conn, Delivery.customer_id, ids)))}


def live_plan_times(conn: Connection, ids: list[int], after: datetime,
                    until: datetime) -> dict[int, list[datetime]]:
    """Per customer, the planned times in (AFTER, UNTIL] of their live mails of any
    campaign (the frequency caps count them)."""
    return {customer_id: [planned for planned, _ in plans]
            for customer_id, plans in live_plans(conn, ids, after, until).items()}


def live_plans(conn: Connection, ids: list[int], after: datetime,
               until: datetime) -> dict[int, list[tuple[datetime, str | None]]]:
    """Per customer, (planned time, topic) of their live mails of any campaign planned in
    (AFTER, UNTIL]: the caps without a topic count them all, a cap with one its topic's."""
    # Statuses are filtered here, not in SQL: with `status IN (...)` SQLite chose the
    # status index and scanned every queued row per batch (quadratic: 185 s for 1M).
    # The topic is read from the row itself (ix_deliveries_customer_planned finds the
    # rows; no join to campaign_versions per batch). The planner asks for it only when a
    # cap names a topic: live_plan_times' callers keep their index-only scan.
    recent: dict[int, list[tuple[datetime, str | None]]] = {}
    for customer_id, planned, status, topic in conn.execute(
            select(Delivery.customer_id, Delivery.planned_at, Delivery.status, Delivery.topic)
            .where(among(conn, Delivery.customer_id, ids),
                   Delivery.planned_at > after,
                   Delivery.planned_at <= until)):
        if status in COUNT_TOWARD_CAPS:
            recent.setdefault(customer_id, []).append((planned, topic))
    return recent


def with_live_plans(conn: Connection, campaign: str, ids: list[int], after: datetime,
                    until: datetime) -> set[int]:
    """The customers among IDS with a live mail of CAMPAIGN planned in (AFTER, UNTIL]
    (statuses filtered as in live_plan_times)."""
    return {row[0] for row in conn.execute(
        select(Delivery.customer_id, Delivery.status).where(
            among(conn, Delivery.customer_id, ids),
            Delivery.planned_at > after,
            Delivery.planned_at <= until, Delivery.campaign == campaign))
        if row[1] in COUNT_TOWARD_CAPS}


def nth_latest_sent_query(n: int, now: datetime, keep: Any = None) -> Select[Any]:
    """(customer_id, at): when each customer's Nth most recent marketing mail went out
    (rows `sent` or `unknown`, of any campaign; `at` is sent_at, else send_after for an
    `unknown` row), up to NOW, for the customers whose id KEEP lets through; customers
    with fewer such mails have no row. policy.sunset: at least N mails since a customer's
    last sign of life means this one is later than it."""
    went_out = case((Delivery.status.in_(WENT_OUT), 1), else_=0)
    at = func.coalesce(Delivery.sent_at, Delivery.send_after)
    # The status is a partition, not a filter: with `status IN (...)` in WHERE SQLite
    # may lead with the status index (live_plans says why), where the customer's leads.
    ranked = (select(Delivery.customer_id, at.label("at"), went_out.label("went_out"),
                     func.row_number().over(partition_by=(Delivery.customer_id, went_out),
                                            order_by=at.desc()).label("rank"))
              .where(at <= now, *(() if keep is None else (keep(Delivery.customer_id),)))
              .subquery("sent_ranked"))
    # Grouped (one row a customer anyway) so that SQLite keeps it a table of its own
    # and joins it by customer: flattened into a join, it searched every customer's
    # row per customer (44 s for 20,000 customers).
    return (select(ranked.c.customer_id, func.max(ranked.c.at).label("at"))
            .where(ranked.c.went_out == 1, ranked.c.rank == n)
            .group_by(ranked.c.customer_id))


def nth_latest_sent(conn: Connection, ids: list[int], n: int,
                    now: datetime) -> dict[int, datetime]:
    """nth_latest_sent_query for the customers IDS (one query for the batch)."""
    return {customer_id: _aware(at) for customer_id, at in conn.execute(
        nth_latest_sent_query(n, now, lambda column: among(conn, column, ids)))}


def _aware(at: datetime) -> datetime:
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def mailed_after(campaign: str, customer_id: Any, after: Any) -> Any:
    """Whether CAMPAIGN has a live row (queued … sent, unknown) for the customer
    CUSTOMER_ID planned after AFTER (SQL columns): a sunset campaign's candidates are
    those it has not mailed since their last sign of life."""
    return exists().where(Delivery.campaign == campaign, Delivery.customer_id == customer_id,
                          Delivery.planned_at > after,
                          Delivery.status.in_(COUNT_TOWARD_CAPS))


def record_sent(conn: Connection, store_id: str, rows: list[dict[str, Any]]) -> None:
    """Rows of mails sent to the customer STORE_ID in the past, each sent at its planned
    time (campaign, version, occurrence, topic, planned_at, message_id given): the demo
    store's history (mailer.app.demodata), never a plan."""
    customer = conn.execute(select(Customer.id, Customer.email)
                            .where(Customer.store_id == store_id)).one()
    conn.execute(insert(Delivery), [
        {**row, "customer_id": customer.id, "email": customer.email, "subject_variant": 0,
         "status": DeliveryState.SENT, "attempts": 1, "send_after": row["planned_at"],
         "expires_at": row["planned_at"] + timedelta(hours=6), "sent_at": row["planned_at"],
         "last_reply": "250 OK (demo history)"} for row in rows])


def main_recipients(campaign: str, occurrence: str) -> Select[int, str]:
    """(customer id, OCCURRENCE) of those whose main mail of CAMPAIGN went out (or
    probably did): a reminder's candidates, joined with customers for their store ids."""
    return (select(Delivery.customer_id, literal(occurrence))
            .join(Customer, Customer.id == Delivery.customer_id)
            .where(Delivery.campaign == campaign,
                   Delivery.occurrence == "main",
                   Delivery.status.in_(WENT_OUT)))


_LEDGER_COLUMNS = {
    "campaign": "text", "campaign_version_id": "integer", "occurrence": "text",
    "customer_id": "integer", "email": "text", "subject_variant": "integer", "intro": "text",
    "status": "text",
    "attempts": "integer", "planned_at": "timestamp", "send_after": "timestamp",
    "expires_at": "timestamp", "message_id": "text", "topic": "text"}


def insert_planned(conn: Connection, rows: list[dict[str, Any]]) -> dict[tuple[int, str], int]:
    """Insert planned rows; one whose (customer, campaign, occurrence) another planner
    wrote first is skipped. Returns the ids of the rows written, by (customer id,
    occurrence)."""
    result_rows = insert_returning(
        conn, "deliveries", _LEDGER_COLUMNS, rows,
        conflict="customer_id, campaign, occurrence",
        returning="customer_id, occurrence, id")
    return {(row[0], row[1]): row[2] for row in result_rows}


def refresh_statistics(conn: Connection) -> None:
    """After a big plan, on a server: with the ledger's counts from before it, PostgreSQL
    scanned every row to record each batch of outcomes."""
    if is_server(conn):
        conn.execute(text("ANALYZE deliveries, coupons"))


def first_planned_at(conn: Connection, campaign: str, occurrence: str) -> datetime | None:
    """When the occurrence's first mail was planned, None before any."""
    first: datetime | None = conn.execute(select(func.min(Delivery.planned_at)).where(
        Delivery.campaign == campaign, Delivery.occurrence == occurrence)).scalar()
    return first


def sent_by_variant(conn: Connection, campaign: str, occurrence: str) -> dict[int, int]:
    """Subject variant -> the occurrence's sent mails."""
    return {int(v): int(n) for v, n in conn.execute(
        select(Delivery.subject_variant, func.count()).where(
            Delivery.campaign == campaign, Delivery.occurrence == occurrence,
            Delivery.status == "sent").group_by(Delivery.subject_variant))}


def engaged_by_variant(conn: Connection, campaign: str, occurrence: str,
                       kind: str) -> dict[int, int]:
    """Subject variant -> the occurrence's mails with at least one event of KIND."""
    return {int(v): int(n) for v, n in conn.execute(
        select(Delivery.subject_variant, func.count(func.distinct(Event.delivery_id)))
        .join(Delivery, Delivery.id == Event.delivery_id)
        .where(Event.kind == kind, Delivery.campaign == campaign,
               Delivery.occurrence == occurrence)
        .group_by(Delivery.subject_variant))}


# --- the forecast's ledger: planned into, then thrown away -----------------------------------


class _Nested:
    """A connection whose begin() opens a savepoint inside the scratch transaction."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def begin(self) -> Any:
        return self._conn.begin_nested()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)

    def __enter__(self) -> _Nested:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


class _Scratch:
    """An engine stand-in: every connection is the one scratch connection."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self.dialect = conn.dialect
        self.url = conn.engine.url

    def connect(self) -> _Nested:
        return _Nested(self._conn)

    @contextmanager
    def begin(self) -> Iterator[_Nested]:
        with self._conn.begin_nested():
            yield _Nested(self._conn)


@contextmanager
def scratch_ledger(engine: Engine) -> Iterator[Engine]:
    """A copy of the store to plan into and throw away: a backup of the SQLite file, or
    on a server one transaction rolled back at the end."""
    if not is_server(engine):
        with tempfile.TemporaryDirectory(prefix="mailer-forecast-") as folder:
            copy = Path(folder) / "forecast.db"
            source = sqlite3.connect(str(engine.url.database))
            target = sqlite3.connect(str(copy))
            try:
                source.backup(target)
            finally:
                source.close()
                target.close()
            scratch_engine = create(engine.url.set(database=str(copy)))
            try:
                yield scratch_engine
            finally:
                scratch_engine.dispose()
        return
    with engine.connect() as conn:
        outer = conn.begin()
        try:
            yield cast(Engine, _Scratch(conn))
        finally:
            outer.rollback()


def count_queued_as_sent(conn: Connection) -> None:
    """Every queued row becomes sent at its planned time (the forecast's sweeps)."""
    conn.execute(update(Delivery).where(Delivery.status == "queued")
                 .values(status="sent", sent_at=Delivery.planned_at))


def planned_times(conn: Connection, since: datetime) -> Iterator[tuple[int, datetime]]:
    """(customer id, planned time) of the rows planned from SINCE on, by customer then
    time, read as they come."""
    yield from conn.execute(select(Delivery.customer_id, Delivery.planned_at)
                            .where(Delivery.planned_at >= since)
                            .order_by(Delivery.customer_id, Delivery.planned_at))


def any_due(engine: Engine, now: datetime, campaigns: Sequence[str] | None) -> bool:
    """Whether any row (of CAMPAIGNS, None: of any) is due at NOW; nothing is leased."""
    with engine.connect() as conn:
        return conn.execute(select(DELIVERIES.c.id).where(
            due(now, campaigns, _paused(conn))).limit(1)).first() is not None


_CONSENT_OF_ROWS = (select(DELIVERIES.c.id, Customer.consent, Customer.paused_until,
                           exists().where(Suppression.email_key == Customer.email_key))
                    .join(Customer, Customer.id == DELIVERIES.c.customer_id)
                    .where(DELIVERIES.c.id.in_(IDS)))


def consent_of_rows(conn: Connection, ids: Sequence[int]
                    ) -> list[tuple[int, str, datetime | None, bool]]:
    """Per row id: its customer's consent, paused_until, and whether the address is
    suppressed."""
    return [(int(row_id), consent, paused_until, bool(suppressed))
            for row_id, consent, paused_until, suppressed in conn.execute(
                _CONSENT_OF_ROWS, {"ids": list(ids)})]


_UNLEASE = (update(DELIVERIES)
            .where(DELIVERIES.c.id.in_(IDS),
                   _held_by(bindparam("owner")),
                   DELIVERIES.c.status.in_(DUE_STATES))
            .values(lease_owner=None, lease_until=None))


def unlease(conn: Connection, owner: str, ids: Sequence[int]) -> None:
    """OWNER's lease of these due rows given up: others may claim them."""
    conn.execute(_UNLEASE, {"ids": list(ids), "owner": owner})


def variant_states(conn: Connection, campaign: str) -> list[tuple[int, str, int]]:
    """(subject variant, state, rows) of CAMPAIGN's ledger."""
    return [(int(variant), str(status), int(n)) for variant, status, n in conn.execute(
        select(Delivery.subject_variant, Delivery.status, func.count())
        .where(Delivery.campaign == campaign)
        .group_by(Delivery.subject_variant, Delivery.status))]


def mails_with_event_by_variant(conn: Connection, campaign: str, kind: str
                                ) -> list[tuple[int, int]]:
    """(subject variant, mails with at least one event of KIND) of CAMPAIGN."""
    return [(int(variant), int(n)) for variant, n in conn.execute(
        select(Delivery.subject_variant, func.count(func.distinct(Event.delivery_id)))
        .join(Delivery, Delivery.id == Event.delivery_id)
        .where(Event.campaign == campaign, Event.kind == kind)
        .group_by(Delivery.subject_variant))]


@dataclass(frozen=True)
class SentMail:
    """A ledger row whose mail went out: what a bounce or complaint about it needs."""

    id: int
    campaign: str
    customer_id: int
    email: str


_SENT_COLUMNS = (Delivery.id, Delivery.campaign, Delivery.customer_id, Delivery.email)
_WENT_OUT = Delivery.status.in_(WENT_OUT)  # a bounce can only be about mail that went out


def sent_mail_with_message_id(conn: Connection, message_id: str) -> SentMail | None:
    """The sent or unknown row whose mail had MESSAGE_ID."""
    found = conn.execute(select(*_SENT_COLUMNS).where(
        Delivery.message_id == message_id, _WENT_OUT)).first()
    return None if found is None else SentMail(*found)


def sent_mail(conn: Connection, row_id: int) -> SentMail | None:
    """Row ROW_ID, if its mail went out (sent or unknown)."""
    found = conn.execute(select(*_SENT_COLUMNS).where(Delivery.id == row_id, _WENT_OUT)).first()
    return None if found is None else SentMail(*found)


# --- the overview of campaigns (`mailer campaigns`) ------------------------------------------


def sent_by_campaign(conn: Connection) -> dict[str, int]:
    """Campaign -> its rows whose mail was sent."""
    return {str(campaign): int(n) for campaign, n in conn.execute(
        select(Delivery.campaign, func.count()).where(Delivery.status == "sent")
        .group_by(Delivery.campaign))}


# SQLite's planner scans the whole ledger for a few statuses when its statistics say
# nearly every row has one status (`sent`, as on any ledger that has done its work):
# 0.4 s at 2M rows. The rows that may still go out are few, so the status index is named.
_PENDING_ON_SQLITE = text(
    "SELECT campaign, count(*) FROM deliveries INDEXED BY ix_deliveries_status_send_after"
    " WHERE status IN ('sending', " + ", ".join(f"'{state}'" for state in DUE) + ")"
    " AND (status = 'sending' OR expires_at > :now) GROUP BY campaign"
).bindparams(bindparam("now", type_=UTCDateTime()))


def pending_by_campaign(conn: Connection, now: datetime) -> dict[str, int]:
    """Campaign -> its rows that may still go out at or after NOW: `sending`, or queued
    or deferred before their expiry (a row past it can only become `expired`); read
    through the status index."""
    if not is_server(conn):
        return {str(campaign): int(n) for campaign, n in conn.execute(
            _PENDING_ON_SQLITE, {"now": now})}
    may_go = or_(Delivery.status == "sending",
                 and_(Delivery.status.in_(DUE_STATES), Delivery.expires_at > now))
    return {str(campaign): int(n) for campaign, n in conn.execute(
        select(Delivery.campaign, func.count()).where(may_go).group_by(Delivery.campaign))}


def sent_by_day(conn: Connection, campaign: str) -> list[tuple[str, int]]:
    """(UTC day as YYYY-MM-DD, mails sent that day) of CAMPAIGN's rows, oldest first: the
    timeline of its sends."""
    day = func.date(Delivery.sent_at)
    return [(str(on), int(n)) for on, n in conn.execute(
        select(day, func.count()).where(Delivery.campaign == campaign,
                                        Delivery.status == "sent")
        .group_by(day).order_by(day))]


# --- an operator's retry of failed rows (mailer.app.operator) --------------------------------


def failed_rows(conn: Connection, campaign: str
                ) -> list[tuple[int, str | None, str | None, datetime]]:
    """(id, reason, last reply, expiry) of CAMPAIGN's `failed` rows, by id."""
    return [(int(row_id), reason, reply, expires_at)
            for row_id, reason, reply, expires_at in conn.execute(
                select(DELIVERIES.c.id, DELIVERIES.c.reason, DELIVERIES.c.last_reply,
                       DELIVERIES.c.expires_at)
                .where(DELIVERIES.c.campaign == campaign,
                       DELIVERIES.c.status == DeliveryState.FAILED)
                .order_by(DELIVERIES.c.id))]


def retry_failed(conn: Connection, ids: Sequence[int], now: datetime) -> list[int]:
    """Rows IDS, still `failed` and before their expiry, become `deferred`, due at NOW
    (their attempts, last reply and expiry kept); the ids that did."""
    if not ids:
        return []
    return sorted(int(row_id) for row_id in conn.execute(
        update(DELIVERIES).where(DELIVERIES.c.id.in_(list(ids)),
                                 DELIVERIES.c.status == DeliveryState.FAILED,
                                 DELIVERIES.c.expires_at > now)
        .values(status=DeliveryState.DEFERRED, reason=None, next_attempt_at=now,
                lease_owner=None, lease_until=None)
        .returning(DELIVERIES.c.id)).scalars())

