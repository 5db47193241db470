"""The customers table family: every consent and suppression write, and what the
rest of mailer reads about customers.

Consent (DESIGN §3): one guard for every opt-out — consent only moves up `RANK`
(subscribed or not_subscribed < unsubscribed < bounced < complained), so a replayed
unsubscribe changes nothing, a bounce never hides a complaint, and nothing automatic
ever re-subscribes anyone (imports move only between the two lowest ranks, and never
from an opt-out). The one way back down is `resubscribe`: a person's new opt-in,
recorded by hand with where it came from; a bounce or a complaint needs `force`,
because the address itself was the problem. Every consent write adds
the consent it set to consent_history (the customer card's history), in the same
transaction. Suppressions are one upsert
(`INSERT … ON CONFLICT DO NOTHING`): two processes suppressing one address at once
both succeed, where a select-then-insert let the second fail on the unique key.

Reads: store-wide counts; what planning reads (who they are, suppressions, paid
orders, time zones, the pages of candidates); what templates and previews read
(profiles, paid-order stats, favourite categories), in batches, never a query per
recipient.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import UTC, date, datetime
from typing import Any, NamedTuple, cast

from sqlalchemy import (
    ColumnElement,
    Select,
    Table,
    and_,
    bindparam,
    case,
    column,
    delete,
    func,
    insert,
    literal_column,
    select,
    table,
    text,
    update,
)

from mailer.core.addresses import Address, parse_address
from mailer.core.errors import InvalidValue
from mailer.core.states import Consent
from mailer.store.db import IDS, Connection, Engine, among, is_server, serial_plans, upsert
from mailer.store.models import (
    DELIVERY_STATES,
    Base,
    ConsentChange,
    Customer,
    Delivery,
    Event,
    Order,
    OrderLine,
    Suppression,
    UTCDateTime,
)

# --- consent and suppressions -----------------------------------------------------

RANK = {Consent.SUBSCRIBED: 0, Consent.NOT_SUBSCRIBED: 0, Consent.PENDING: 0,
        Consent.UNSUBSCRIBED: 1, Consent.BOUNCED: 2, Consent.COMPLAINED: 3}


def opt_out(conn: Connection, which: ColumnElement[bool], consent: Consent, *, now: datetime,
            source: str, reason: str) -> int:
    """Set CONSENT on the customers WHICH selects, where it ranks above theirs; how many
    changed."""
    below = [state for state, rank in RANK.items() if rank < RANK[consent]]
    # RETURNING names exactly the customers this statement moved (not those already
    # opted out, nor one a concurrent writer moved first): each gets its history row in
    # the same transaction.
    moved = list(conn.execute(update(Customer).where(which, Customer.consent.in_(below)).values(
        consent=consent, consent_at=now, consent_source=source, consent_reason=reason,
        updated_at=now).returning(Customer.id)).scalars())
    if moved:
        conn.execute(insert(ConsentChange), [
            {"customer_id": customer_id, "state": str(consent), "since": now, "source": source,
             "reason": reason} for customer_id in moved])
    return len(moved)


def record_consent(conn: Connection, which: ColumnElement[bool]) -> None:
    """Add the consent the customers WHICH selects hold now to their consent history, in
    one INSERT … SELECT: the importer calls it once per batch for the customers it
    created or whose consent it moved."""
    conn.execute(insert(ConsentChange).from_select(
        ["customer_id", "state", "since", "source", "reason"],
        select(Customer.id, Customer.consent, Customer.consent_at, Customer.consent_source,
               Customer.consent_reason).where(which)))


def suppress(conn: Connection, keys: Iterable[str], *, now: datetime, source: str,
             reason: str) -> set[str]:
    """Put the address keys on the suppression list; the keys that were not on it yet."""
    rows = [{"email_key": key, "reason": reason, "source": source, "created_at": now}
            for key in sorted(set(keys))]
    if not rows:
        return set()
    statement = (upsert(conn, cast(Table, Suppression.__table__)).values(rows)
                 .on_conflict_do_nothing(index_elements=[Suppression.email_key])
                 .returning(Suppression.email_key))
    return set(conn.execute(statement).scalars())


@dataclass(frozen=True)
class OptIn:
    """What `resubscribe` did with one address."""

    email: str
    outcome: str  # resubscribed | already | refused | unknown | invalid
    consent: str | None = None  # the consent it had
    reason: str | None = None


NEEDS_FORCE = {Consent.BOUNCED, Consent.COMPLAINED}


def _address_failed(suppression_reason: str | None) -> bool:
    """Whether a suppression is about the address itself: a bounce or a complaint (as
    the sender and `mailer bounces` write them), not a manual opt-out."""
    return suppression_reason is not None and suppression_reason.startswith(
        ("bounce", "complain"))


def _customers_of(conn: Connection, emails: Iterable[str]
                  ) -> Iterator[tuple[str, Address | InvalidValue, Any]]:
    """Each address as given, parsed (or why it is not an address), with its customer's
    (id, consent) row, None when no customer has it."""
    for raw in emails:
        try:
            address = parse_address(raw)
        except InvalidValue as err:
            yield raw, err, None
            continue
        yield raw, address, conn.execute(
            select(Customer.id, Customer.consent, Customer.consent_at, Customer.consent_source,
                   Customer.consent_reason).where(Customer.email_key == address.key)).first()


def resubscribe(engine: Engine, emails: list[str], *, now: datetime, source: str,
                force: bool = False) -> list[OptIn]:
    """Record a new opt-in for each address: consent `subscribed` with SOURCE and NOW, and
    the address off the suppression list. A bounced or complained customer only with
    FORCE; an address no customer has is `unknown` (its suppression stays)."""
    with engine.begin() as conn:
        return resubscribe_in(conn, emails, now=now, source=source, force=force)


def resubscribe_in(conn: Connection, emails: list[str], *, now: datetime, source: str,
                   force: bool = False, reason: str = "opt_in") -> list[OptIn]:
    """resubscribe in the caller's transaction; REASON is the new consent's reason (an
    operator's words, else `opt_in`)."""
    results = []
    for raw, address, row in _customers_of(conn, emails):
        if isinstance(address, InvalidValue):
            results.append(OptIn(raw, "invalid", reason=address.message))
            continue
        if row is None:
            results.append(OptIn(address.email, "unknown",
                                 reason="no customer has this address: import it first"))
            continue
        consent = Consent(row.consent)
        suppressed = conn.execute(select(Suppression.reason).where(
            Suppression.email_key == address.key)).scalar()
        if consent == Consent.SUBSCRIBED and suppressed is None:
            results.append(OptIn(address.email, "already", consent))
            continue
        # The address itself failed (a bounce) or its owner called our mail spam: a
        # suppression says so even when consent ranked lower first (an unsubscribe
        # recorded while the mail was in flight keeps its own source).
        failed = consent in NEEDS_FORCE or _address_failed(suppressed)
        if failed and not force:
            why = consent if consent in NEEDS_FORCE else f"is suppressed ({suppressed})"
            results.append(OptIn(address.email, "refused", consent,
                                 f"the address {why}: mail to it failed or was "
                                 "reported as spam; use --force if the person asked again"))
            continue
        conn.execute(update(Customer).where(Customer.id == row.id).values(
            consent=Consent.SUBSCRIBED, consent_at=now, consent_source=source,
            consent_reason=reason, updated_at=now))
        conn.execute(insert(ConsentChange).values(
            customer_id=row.id, state=Consent.SUBSCRIBED, since=now, source=source,
            reason=reason))
        conn.execute(delete(Suppression).where(Suppression.email_key == address.key))
        # What the opt-in replaced stays on record: the consent columns now hold the
        # new one, and the suppression row is gone.
        previous = (f"was {consent} since {row.consent_at:%Y-%m-%d %H:%M} UTC "
                    if row.consent_at else f"was {consent} ")
        previous += f"(source {row.consent_source or '-'}, reason {row.consent_reason or '-'})"
        if suppressed is not None:
            previous += f"; suppression lifted: {suppressed}"
        conn.execute(insert(Event).values(kind="resubscribe", customer_id=row.id,
                                          campaign=None, delivery_id=None, at=now,
                                          comment=f"{previous}; new source {source}"))
        results.append(OptIn(address.email, "resubscribed", consent))
    return results


def opt_out_customer(conn: Connection, customer_id: int, consent: Consent, *, now: datetime,
                     source: str, reason: str) -> int:
    """opt_out for one customer by id; how many changed (0 or 1)."""
    return opt_out(conn, Customer.id == customer_id, consent, now=now, source=source,
                   reason=reason)


# --- double opt-in ---------------------------------------------------------------------

# Spelled out, not bound: SQLite uses the partial index ix_customers_pending only for a
# WHERE that names its literal condition.
_PENDING = literal_column("consent") == literal_column("'pending'")


class Asking(NamedTuple):
    """A pending customer a confirmation notice (or its reminder) is for."""

    id: int
    store_id: str
    email: str
    first_name: str | None
    requested_at: datetime
    sent_at: datetime | None


def _asking(conn: Connection, where: ColumnElement[bool], limit: int) -> list[Asking]:
    return [Asking(*row) for row in conn.execute(
        select(Customer.id, Customer.store_id, Customer.email, Customer.first_name,
               func.coalesce(Customer.opt_in_requested_at, Customer.consent_at,
                             Customer.created_at).label("requested_at"),
               Customer.opt_in_sent_at)
        .where(_PENDING, where).order_by(Customer.id).limit(limit))]


def pending_unasked(conn: Connection, limit: int) -> list[Asking]:
    """Pending customers whose confirmation notice is not queued yet, by id."""
    return _asking(conn, Customer.opt_in_sent_at.is_(None), limit)


def pending_to_remind(conn: Connection, asked_by: datetime, limit: int,
                      after_id: int = 0) -> list[Asking]:
    """Pending customers whose confirmation was queued at or before ASKED_BY and who have
    had no reminder (nor a decision against one), by id from AFTER_ID on."""
    return _asking(conn, and_(Customer.opt_in_sent_at <= asked_by,
                              Customer.opt_in_reminded_at.is_(None), Customer.id > after_id),
                   limit)


def mark_asked(conn: Connection, ids: Sequence[int], now: datetime, *,
               reminder: bool) -> set[int]:
    """Record that the confirmation (REMINDER: its reminder) of these customers is queued
    at NOW (or, for a reminder, that none will go); the ids of those still pending and
    not yet marked, the ones to queue for. Written before the notice, in its transaction:
    a customer who confirmed a moment ago is no longer pending, and gets nothing."""
    if not ids:
        return set()
    column = Customer.opt_in_reminded_at if reminder else Customer.opt_in_sent_at
    return set(conn.execute(update(Customer).where(
        among(conn, Customer.id, list(ids)), _PENDING, column.is_(None))
        .values({column.key: now}).returning(Customer.id)).scalars())


def confirm_opt_in(engine: Engine, store_id: str, now: datetime, ip: str | None) -> str | None:
    """A pending customer's confirmation (the POST of their /confirm/ link): consent
    `subscribed` with the source they asked through, reason `double_opt_in`, and the
    time and IP kept as proof (opt_in_confirmed_at, opt_in_ip), with its consent history
    row. Returns what the customer was before: `pending` when this call confirmed them,
    `subscribed` for a replay, another consent (nothing written), None for no such
    customer. Only `pending` ever moves: an old link never re-subscribes an opt-out."""
    with engine.begin() as conn:
        row = conn.execute(select(Customer.id, Customer.consent, Customer.consent_source,
                                  Customer.opt_in_source)
                           .where(Customer.store_id == store_id)).first()
        if row is None or row.consent != Consent.PENDING:
            return None if row is None else str(row.consent)
        source = row.opt_in_source or row.consent_source or "double_opt_in"
        moved = conn.execute(update(Customer).where(
            Customer.id == row.id, Customer.consent == Consent.PENDING).values(
            consent=Consent.SUBSCRIBED, consent_at=now, consent_source=source,
            consent_reason="double_opt_in", opt_in_confirmed_at=now,
            opt_in_ip=(ip or None) and ip[:45], updated_at=now).returning(Customer.id)).first()
        if moved is None:  # a second press at the same moment confirmed them first
            return str(Consent.SUBSCRIBED)
        conn.execute(insert(ConsentChange).values(
            customer_id=row.id, state=Consent.SUBSCRIBED, since=now, source=source,
            reason="double_opt_in"))
    return str(Consent.PENDING)


# --- opt-outs by address, store-wide counts ----------------------------------


@dataclass(frozen=True)
class OptOut:
    """What `unsubscribe` did with one address."""

    email: str
    outcome: str  # unsubscribed | already | suppressed | invalid
    reason: str | None = None


def unsubscribe(engine: Engine, emails: list[str], *, now: datetime, source: str = "cli",
                reason: str = "manual") -> list[OptOut]:
    """Record opt-outs; an unknown but valid address is suppressed anyway."""
    with engine.begin() as conn:
        return unsubscribe_in(conn, emails, now=now, source=source, reason=reason)


def unsubscribe_in(conn: Connection, emails: list[str], *, now: datetime, source: str,
                   reason: str) -> list[OptOut]:
    """unsubscribe in the caller's transaction."""
    results = []
    for raw, address, row in _customers_of(conn, emails):
        if isinstance(address, InvalidValue):
            results.append(OptOut(raw, "invalid", address.message))
            continue
        if row is None:
            suppress(conn, [address.key], now=now, source=source, reason=reason)
            results.append(OptOut(address.email, "suppressed"))
        elif opt_out(conn, Customer.id == row.id, Consent.UNSUBSCRIBED, now=now, source=source,
                     reason=reason):
            results.append(OptOut(address.email, "unsubscribed"))
        else:
            results.append(OptOut(address.email, "already", row.consent))
    return results


def customer_count(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(Customer)).scalar_one())


@dataclass(frozen=True)
class StatusCounts:
    """What `mailer status` counts; the fields are in the order of its JSON keys."""

    customers: int
    subscribed: int
    orders: int  # every stored order, whatever its status
    deliveries: Mapping[str, int]  # every ledger state, in DELIVERY_STATES order, zeros too
    pending: int = 0  # waiting to confirm their opt-in (consent.double_opt_in)

    def as_json(self) -> dict[str, Any]:
        return {"customers": self.customers, "subscribed": self.subscribed,
                "pending": self.pending, "orders": self.orders,
                "deliveries": dict(self.deliveries)}


def status_counts(engine: Engine) -> StatusCounts:
    """Customers, subscribed, pending, every stored order, deliveries by state (zeros
    included)."""
    with engine.connect() as conn:
        customers = conn.execute(select(func.count()).select_from(Customer)).scalar_one()
        subscribed = conn.execute(select(func.count()).select_from(Customer)
                                  .where(Customer.consent == "subscribed")).scalar_one()
        pending = conn.execute(select(func.count()).select_from(Customer)
                               .where(_PENDING)).scalar_one()
        orders = conn.execute(select(func.count()).select_from(Order)).scalar_one()
        deliveries: dict[str, int] = dict.fromkeys(DELIVERY_STATES, 0)
        for state, count in conn.execute(select(Delivery.status, func.count())
                                         .group_by(Delivery.status)):
            deliveries[state] = int(count)
    return StatusCounts(int(customers), int(subscribed), int(orders), deliveries,
                        int(pending))


def clear_store(engine: Engine) -> None:
    """Delete every row of every mailer table, children first."""
    with engine.begin() as conn:
        for table in reversed(Base.metadata.sorted_tables):
            conn.execute(delete(table))


# --- what planning reads ------------------------------------------------------------------


class Addressee(NamedTuple):
    """What planning reads about a customer (a tuple: one is made per candidate)."""

    id: int
    store_id: str
    email: str
    email_key: str
    consent: str
    timezone: str | None
    paused_until: datetime | None
    weekly_cap: int | None
    topics: list[str] | None


def addressees_by_id(conn: Connection, ids: list[int]) -> dict[int, Addressee]:
    """The customers with these ids, by id, as the planner addresses them."""
    return {row[0]: Addressee(*row) for row in conn.execute(
        select(Customer.id, Customer.store_id, Customer.email, Customer.email_key,
               Customer.consent, Customer.timezone, Customer.paused_until,
               Customer.weekly_cap, Customer.topics)
        .where(among(conn, Customer.id, ids)))}


def suppressed_keys(conn: Connection, keys: list[str]) -> set[str]:
    """The email keys among KEYS that are suppressed."""
    return {row[0] for row in conn.execute(
        select(Suppression.email_key).where(among(conn, Suppression.email_key, keys)))}


def paid_between(conn: Connection, ids: list[int], since: datetime,
                 until: datetime) -> set[int]:
    """The customers among IDS with a paid order placed in [SINCE, UNTIL]."""
    return {row[0] for row in conn.execute(
        select(Order.customer_id).where(among(conn, Order.customer_id, ids),
                                        Order.status == "paid",
                                        Order.placed_at >= since,
                                        Order.placed_at <= until))}


def sign_of_life_rows(now: datetime, keep: Callable[[Any], Any]) -> list[Any]:
    """(customer_id, at) of the signs of life these tables hold, up to NOW, for the
    customers whose id KEEP lets through (policy.sunset; mailer.store.events adds the
    human clicks and "keep me subscribed"): the sign-up (`signed_up_at`, else the moment
    the store learned of them), each opt-in or resubscribe after that (consent_history's
    `subscribed` rows later than the customer's creation: an import's first row records
    the creation, not an opt-in), and each paid order."""
    return [
        select(Customer.id.label("customer_id"),
               func.coalesce(Customer.signed_up_at, Customer.created_at).label("at"))
        .where(keep(Customer.id),
               func.coalesce(Customer.signed_up_at, Customer.created_at) <= now),
        select(ConsentChange.customer_id, ConsentChange.since)
        .join(Customer, Customer.id == ConsentChange.customer_id)
        .where(keep(ConsentChange.customer_id), ConsentChange.state == Consent.SUBSCRIBED,
               ConsentChange.since > Customer.created_at, ConsentChange.since <= now),
        select(Order.customer_id, Order.placed_at)
        .where(keep(Order.customer_id), Order.status == "paid", Order.placed_at <= now)]


def time_zones(engine: Engine) -> set[str]:
    """Every time zone a customer has (those without one live in the workspace's)."""
    with engine.connect() as conn:
        return {z for z in conn.execute(select(Customer.timezone).distinct()).scalars() if z}


_CANDIDATES = table("plan_candidates", column("seq"), column("customer_id"),
                    column("occurrence"), column("expires_from", UTCDateTime))
# (customer id, occurrence, the moment its expiry counts from, or None: the query's own)
CandidateRow = tuple[int, str, datetime | None]


def candidate_pages(engine: Engine, query: Select[int, str] | Select[int, str, datetime],
                    size: int) -> Iterator[list[CandidateRow]]:
    """The (customer id, occurrence, expires_from) rows of QUERY, SIZE at a time, in its
    order, in flat memory; expires_from is QUERY's third column when it selects one
    (signup's signed_up_at), else None. The rows go to a temporary table first and are
    read back page by page, each page a short read: a reader held open while the planner
    writes keeps SQLite's WAL from being checkpointed, and planning 1M customers slowed
    from linear to 200 s."""
    timed = len(query.selected_columns) > 2
    with engine.connect() as conn, conn.begin():
        serial_plans(conn)  # as every audience query: see store.db.serial_plans
        first = [(row[0], row[1], row[2] if timed else None)
                 for row in conn.execute(query.limit(size + 1))]
    if len(first) <= size:  # most sweeps find a handful: no temporary table for those
        if first:
            yield first
        return
    serial = ("BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY" if is_server(engine)
              else "INTEGER PRIMARY KEY")
    names = ["customer_id", "occurrence", "expires_from"][:3 if timed else 2]
    with engine.connect() as conn:
        with conn.begin():
            serial_plans(conn)
            conn.execute(text(f"CREATE TEMPORARY TABLE IF NOT EXISTS plan_candidates "
                              f"(seq {serial}, customer_id INTEGER NOT NULL, "
                              f"occurrence TEXT NOT NULL, expires_from TIMESTAMP)"))
            conn.execute(text("DELETE FROM plan_candidates"))
            conn.execute(insert(_CANDIDATES).from_select(names, query))
        last = 0
        while True:
            with conn.begin():
                rows = conn.execute(
                    select(_CANDIDATES.c.seq, _CANDIDATES.c.customer_id,
                           _CANDIDATES.c.occurrence, _CANDIDATES.c.expires_from)
                    .where(_CANDIDATES.c.seq > last).order_by(_CANDIDATES.c.seq)
                    .limit(size)).all()
            if not rows:
                break
            last = rows[-1][0]
            yield [(row[1], row[2], row[3]) for row in rows]
        with conn.begin():
            conn.execute(text("DROP TABLE IF EXISTS plan_candidates"))


# --- what templates and previews read -----------------------------------------


@dataclass(frozen=True, slots=True)
class Profile:
    """A customer as the template context reads them: the two required fields, then
    the optional ones (None when missing)."""

    store_id: str
    email: str
    first_name: str | None = None
    last_name: str | None = None
    birth_date: date | None = None
    country: str | None = None
    city: str | None = None
    locale: str | None = None
    timezone: str | None = None
    tags: list[str] | None = None
    attributes: dict[str, Any] | None = None
    signed_up_at: datetime | None = None
    referral_code: str | None = None


@dataclass(frozen=True, slots=True)
class OrderStats:
    """One customer's paid orders placed by then: SPENT_MINOR and COUNTED are over the
    orders in the store's currency only."""

    customer_id: int
    orders: int
    spent_minor: int
    counted: int
    first_at: datetime
    last_at: datetime


# The batch reads of a mail's render (people_by_id, order_stats, favourite_categories),
# built once with their values bound: building the statement per call cost SQLAlchemy more
# than SQLite took to answer it (its expression, then its cache key), a few hundred µs a
# batch of mails each.
_PROFILE_COLUMNS = [field.name for field in fields(Profile)]  # in order
_PROFILES = select(Customer.__table__.c.id,
                   *(Customer.__table__.c[name] for name in _PROFILE_COLUMNS)
                   ).where(Customer.__table__.c.id.in_(IDS))


def people_by_id(conn: Connection, ids: Sequence[int]) -> dict[int, Profile]:
    """The profiles of these customers, by id (ids not found are left out)."""
    return {row[0]: Profile(*row[1:]) for row in conn.execute(_PROFILES, {"ids": list(ids)})}


# their paid orders placed by :now, what stats and favourites count
_PAID = and_(Order.status == "paid", Order.placed_at <= bindparam("now"),
             Order.customer_id.in_(IDS))


_IN_CURRENCY = Order.currency == bindparam("currency")
_ORDER_STATS = (select(Order.customer_id, func.count(),
                       func.sum(case((_IN_CURRENCY, Order.total_minor), else_=0)),
                       func.sum(case((_IN_CURRENCY, 1), else_=0)),
                       func.min(Order.placed_at), func.max(Order.placed_at))
                .where(_PAID).group_by(Order.customer_id))


def order_stats(conn: Connection, ids: Sequence[int], *, now: datetime,
                currency: str) -> list[OrderStats]:
    """One aggregation over these customers' paid orders (those with any)."""
    rows = conn.execute(_ORDER_STATS, {"ids": list(ids), "now": now, "currency": currency})
    return [OrderStats(customer_id, int(orders), int(spent or 0), int(counted or 0),
                       _utc(first), _utc(last))
            for customer_id, orders, spent, counted, first, last in rows]


_FAVOURITES = (select(Order.customer_id, OrderLine.category)
               .join(Order, Order.id == OrderLine.order_id)
               .where(_PAID, OrderLine.category.is_not(None))
               .group_by(Order.customer_id, OrderLine.category)
               .order_by(Order.customer_id, func.sum(OrderLine.quantity).desc(),
                         OrderLine.category))


def favourite_categories(conn: Connection, ids: Sequence[int], *,
                         now: datetime) -> dict[int, str]:
    """Each customer's most bought category over their paid orders (by quantity; a tie
    goes to the first by name); customers without one are left out."""
    favourites: dict[int, str] = {}
    for customer_id, category in conn.execute(_FAVOURITES, {"ids": list(ids), "now": now}):
        favourites.setdefault(customer_id, str(category))  # never NULL: filtered above
    return favourites


def _utc(value: Any) -> Any:
    """SQLite aggregates lose the column type: read back as aware UTC either way."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if isinstance(value, datetime) and value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value


def id_of_address(engine: Engine, address: str) -> int | None:
    """The id of the customer with this address (compared by its key), or None."""
    from mailer.core.addresses import email_key  # email-validator and idna: only when asked

    with engine.connect() as conn:
        found = conn.execute(select(Customer.id).where(
            Customer.email_key == email_key(address))).scalar()
    return None if found is None else int(found)


def missing_counts(conn: Connection, members: Select[Any], field: str) -> tuple[int, int]:
    """(members, members whose FIELD is NULL) for MEMBERS, a query of customers' ids."""
    table = Customer.__table__
    column = table.c[field]
    chosen = members.subquery()
    total, missing = conn.execute(
        select(func.count(), func.sum(case((column.is_(None), 1), else_=0)))
        .select_from(table.join(chosen, chosen.c.id == table.c.id))).one()
    return int(total), int(missing or 0)


# What the forecast's sweeps take as fixed, read once from its scratch copy: a sweep
# changes the ledger (and gives codes), never where customers live, their birthdays,
# orders or recorded stage changes (mailer.store.insight.stages.stage_change_times).
# mailer.planning.frozen skips by these the per-zone trigger queries that cannot find anyone.


def birthdays_by_zone(conn: Connection, default_zone: str) -> set[tuple[str, str]]:
    """(zone, "MM-DD") of every customer with a birthday on file; those without a zone
    live in DEFAULT_ZONE (as the birthday trigger's query reads it)."""
    zone_of = func.coalesce(Customer.timezone, default_zone)
    return {(str(z), str(md)) for z, md in conn.execute(
        select(zone_of, Customer.birth_md).where(Customer.birth_md.is_not(None)).distinct())}


def countries_by_zone(conn: Connection, default_zone: str) -> set[tuple[str, str | None]]:
    """(zone, folded country or None) of every customer; those without a zone live in
    DEFAULT_ZONE (as the holiday trigger's query reads it)."""
    zone_of = func.coalesce(Customer.timezone, default_zone)
    return {(str(z), None if country is None else str(country)) for z, country in
            conn.execute(select(zone_of, Customer.country_folded).distinct())}


def date_values(conn: Connection, default_zone: str, field: str) -> Iterator[tuple[str, Any]]:
    """(zone, value) of every customer with a value for a date campaign's FIELD: the
    placed_at of their first paid order (first_order_at, whatever now), signed_up_at, or
    attributes.NAME's text; those without a zone live in DEFAULT_ZONE."""
    zone_of = func.coalesce(Customer.timezone, default_zone)
    query: Select[str, Any]
    if field == "first_order_at":
        query = (select(zone_of, func.min(Order.placed_at))
                 .join(Customer, Customer.id == Order.customer_id)
                 .where(Order.status == "paid").group_by(Customer.id, zone_of))
    elif field == "signed_up_at":
        query = select(zone_of, Customer.signed_up_at).where(Customer.signed_up_at.is_not(None))
    else:
        name = field.removeprefix("attributes.")
        text = cast(Table, Customer.__table__).c.attributes[name].as_string()
        query = select(zone_of, text).where(text.is_not(None))
    for zone_name, value in conn.execute(query):
        # SQLite's min() of a timestamp column comes back as its stored text
        if field == "first_order_at" and isinstance(value, str):
            value = datetime.fromisoformat(value).replace(tzinfo=UTC)
        yield str(zone_name), value


def paid_order_times(conn: Connection, default_zone: str, since: datetime,
                     until: datetime) -> list[tuple[str, datetime]]:
    """(zone of its customer, placed_at) of the paid orders placed in [SINCE, UNTIL)."""
    zone_of = func.coalesce(Customer.timezone, default_zone)
    return [(str(z), placed) for z, placed in conn.execute(
        select(zone_of, Order.placed_at).join(Customer, Customer.id == Order.customer_id)
        .where(Order.status == "paid", Order.placed_at >= since, Order.placed_at < until))]


@dataclass(frozen=True)
class Found:
    """A customer a console search found."""

    store_id: str
    email: str
    first_name: str | None
    last_name: str | None
    consent: str


# The columns a search reads by prefix, each with an index on its lower-case value
# (migration 0020): the id, the folded address, the first and the last name.
SEARCHED = ("store_id", "email_key", "first_name", "last_name")


def _starts_with(conn: Connection, column: Any, prefix: str) -> ColumnElement[bool]:
    """COLUMN begins with PREFIX (already lower-case), as its index can answer: LIKE on
    PostgreSQL (a text_pattern_ops index), a range on SQLite (whose LIKE optimisation
    does not reach an expression index); the upper end is PREFIX with its last character
    one higher."""
    if is_server(conn):
        escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        matches: ColumnElement[bool] = column.like(escaped + "%", escape="\\")
        return matches
    upper = prefix[:-1] + chr(ord(prefix[-1]) + 1)
    return and_(column >= prefix, column < upper)


def search(conn: Connection, text_: str, *, limit: int = 50) -> list[Found]:
    """Customers whose store id, email or first or last name begins with TEXT_, ignoring
    case (ASCII on SQLite, whose lower() folds no other letter), by store id; at most LIMIT."""
    prefix = text_.strip().lower()
    if not prefix:
        return []
    found: dict[str, Found] = {}
    for name in SEARCHED:
        column = getattr(Customer, name)
        key = column if name == "email_key" else func.lower(column)
        query = (select(Customer.store_id, Customer.email, Customer.first_name,
                        Customer.last_name, Customer.consent)
                 .where(_starts_with(conn, key, prefix)).order_by(key).limit(limit))
        for row in conn.execute(query):
            found.setdefault(row[0], Found(*row))
    return [found[key] for key in sorted(found)][:limit]
