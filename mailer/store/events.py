"""What recipients do with their mails, written to the store (DESIGN §6): one-click
unsubscribes, the preference centre, opens, clicks and ratings; the bounces and
complaints about them; and the counts a campaign's report reads back.

Every function takes the verified claims of a signed link: the customer's store
id, the campaign and the ledger row the mail came from. Writes are idempotent
where a replay must change nothing (an unsubscribe, a rating clicked twice).

`bound(engine)` makes every connection the engine hands out give up at the caller's
DEADLINE, so a locked or unreachable database costs a request a known wait, not
SQLite's 30 s busy timeout or a PostgreSQL lock held for an hour.
"""

from __future__ import annotations

import math
import re
import time
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

from sqlalchemy import (
    Integer,
    Select,
    cast,
    event,
    func,
    insert,
    select,
    text,
    true,
    union_all,
    update,
)
from sqlalchemy.exc import DisconnectionError

from mailer.core import machines
from mailer.core.claims import Claims
from mailer.core.states import OPTED_OUT, Consent
from mailer.store.customers import opt_out, sign_of_life_rows
from mailer.store.db import Connection, Engine, among, is_server
from mailer.store.models import Customer, Delivery, Event

PAUSE = timedelta(days=30)

# time.monotonic() by which the current database work must be done; None: no limit
DEADLINE: ContextVar[float | None] = ContextVar("mailer_database_deadline", default=None)


def _left_ms() -> int | None:
    deadline = DEADLINE.get()
    return None if deadline is None else max(1, int((deadline - time.monotonic()) * 1000))


def bound(engine: Engine) -> Engine:
    """ENGINE, its connections made to wait no longer than DEADLINE: on each checkout
    SQLite's busy timeout, PostgreSQL's lock and statement timeouts, and on connecting
    PostgreSQL's connect timeout are set to the time left."""
    postgres = is_server(engine)

    @event.listens_for(engine, "do_connect")
    def _connect(dialect: Any, record: Any, cargs: Any, cparams: dict[str, Any]) -> None:
        left = _left_ms()
        if postgres and left is not None:  # libpq counts whole seconds, at least 2
            cparams["connect_timeout"] = max(2, math.ceil(left / 1000))

    @event.listens_for(engine, "checkout")
    def _checkout(dbapi_connection: Any, record: Any, proxy: Any) -> None:
        left = _left_ms()
        if left is None:
            return
        cursor = dbapi_connection.cursor()
        try:
            if postgres:  # session settings, made again at every checkout
                cursor.execute("SELECT set_config('lock_timeout', %s, false), "
                               "set_config('statement_timeout', %s, false)",
                               (f"{left}ms", f"{left}ms"))
            else:
                cursor.execute(f"PRAGMA busy_timeout = {left}")
        except Exception as err:  # a pooled connection that died: the pool gets a new one
            raise DisconnectionError(str(err)) from err
        finally:
            cursor.close()

    return engine


# The events that are a sign of life (policy.sunset): a person's click and a "keep me
# subscribed" POST. Opens never are (mail programs load pixels), nor a machine's click.
KEEP_SUBSCRIBED = "keep_subscribed"
SIGN_KINDS = ("click", KEEP_SUBSCRIBED)


def last_signs_query(now: datetime, keep: Any = None) -> Select[Any]:
    """(customer_id, last_sign): each customer's latest sign of life up to NOW, of the
    customers whose id KEEP (a column -> condition) lets through; every customer has
    one (the sign-up)."""
    def kept(column: Any) -> Any:
        return true() if keep is None else keep(column)

    signs = union_all(
        *sign_of_life_rows(now, kept),
        select(Event.customer_id, Event.at).where(
            kept(Event.customer_id), Event.kind.in_(SIGN_KINDS), Event.at <= now)
    ).subquery("signs")
    return (select(signs.c.customer_id, func.max(signs.c.at).label("last_sign"))
            .group_by(signs.c.customer_id))


def last_signs(conn: Connection, ids: list[int], now: datetime) -> dict[int, datetime]:
    """The latest sign of life of each of IDS up to NOW (one query for the batch)."""
    return {customer_id: _utc(at) for customer_id, at in conn.execute(
        last_signs_query(now, lambda column: among(conn, column, ids)))}


def keep_subscribed(engine: Engine, claims: Claims, now: datetime) -> Person | None:
    """A "keep me subscribed" POST: a sign of life (an event of the mail's campaign),
    recorded again at each POST; nothing is written for a customer who is not
    subscribed (opted out, or never opted in: the button is no opt-in) or when no
    customer has the link's store id (None)."""
    with engine.begin() as conn:
        found = _person(conn, claims)
        if found is not None and found.consent == Consent.SUBSCRIBED:
            _event(conn, KEEP_SUBSCRIBED, claims, found.id, now)
        return found


def ping(engine: Engine) -> None:
    """A round trip to the database (for /healthz)."""
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))


@dataclass(frozen=True)
class Person:
    """The customer a link was signed for, as the pages show them."""

    id: int
    email: str
    consent: str
    paused_until: datetime | None
    weekly_cap: int | None
    topics: list[str] | None


def _person(conn: Connection, claims: Claims) -> Person | None:
    row = conn.execute(select(Customer.id, Customer.email, Customer.consent,
                              Customer.paused_until, Customer.weekly_cap, Customer.topics)
                       .where(Customer.store_id == claims.customer)).first()
    return None if row is None else Person(*row)


def person(engine: Engine, claims: Claims) -> Person | None:
    with engine.connect() as conn:
        return _person(conn, claims)


def _delivery_id(claims: Claims) -> int | None:
    return int(claims.message) if claims.message.isdigit() else None


def add(conn: Connection, kind: str, *, customer_id: int | None, campaign: str | None,
        delivery_id: int | None, at: datetime, **values: str | int | None) -> None:
    """One event of a mail; VALUES: its score, comment or URL."""
    conn.execute(insert(Event).values(kind=kind, customer_id=customer_id, campaign=campaign,
                                      delivery_id=delivery_id, at=at, **values))


def _event(conn: Connection, kind: str, claims: Claims, customer_id: int | None,
           now: datetime, **values: str | int | None) -> None:
    add(conn, kind, customer_id=customer_id, campaign=claims.campaign,
        delivery_id=_delivery_id(claims), at=now, **values)


def unsubscribe(engine: Engine, claims: Claims, now: datetime, *,
                reason: str = "one-click") -> bool:
    """Opt the customer out (source `link`); False when they already were (a replay)."""
    with engine.begin() as conn:
        found = _person(conn, claims)
        if found is None or found.consent in OPTED_OUT:
            return False
        changed = opt_out(conn, Customer.id == found.id, Consent.UNSUBSCRIBED, now=now,
                          source="link", reason=f"{reason} ({claims.campaign})")
        if changed:
            _event(conn, "unsubscribe", claims, found.id, now)
        return bool(changed)


def set_preferences(engine: Engine, claims: Claims, now: datetime, *, pause: bool,
                    weekly_cap: int | None, topics: list[str] | None) -> None:
    """The preference centre's choices: pause for 30 days (or resume), a personal cap
    per week, the topics wanted (None: every topic)."""
    with engine.begin() as conn:
        found = _person(conn, claims)
        if found is None:
            return
        conn.execute(update(Customer).where(Customer.id == found.id).values(
            paused_until=now + PAUSE if pause else None, weekly_cap=weekly_cap,
            topics=topics, updated_at=now))
        _event(conn, "preferences", claims, found.id, now)


def record(engine: Engine, kind: str, claims: Claims, now: datetime,
           url: str | None = None, *, user_agent: str | None = None,
           ip_hash: str | None = None) -> None:
    """An open or a click (with its URL)."""
    record_many(engine, [Hit(kind, claims, now, url, user_agent, ip_hash)])


class Hit(NamedTuple):
    """An open or a click as the service saw it. MACHINE: a privacy proxy's request
    (mailer.core.machines.proxy_of, judged where the address is known, before it is
    hashed)."""

    kind: str
    claims: Claims
    at: datetime
    url: str | None
    user_agent: str | None = None
    ip_hash: str | None = None
    machine: bool = False


def record_many(engine: Engine, hits: list[Hit]) -> list[int]:
    """Opens and clicks in one transaction: one lookup of their customers and mails, one
    insert. Each is stored as a machine's (machine_open, machine_click) when it came
    within 10 s of its mail's delivery, or is a proxy's open (mailer.core.machines).
    Returns the ledger rows whose clicks may be a scanner's burst (two URLs within 2 s):
    mark_bursts() decides once their link counts are known."""
    if not hits:
        return []
    with engine.begin() as conn:
        ids = dict(conn.execute(select(Customer.store_id, Customer.id).where(
            Customer.store_id.in_(sorted({hit.claims.customer for hit in hits})))).all())
        mails = sorted({d for hit in hits if (d := _delivery_id(hit.claims)) is not None})
        sent = _sent_at(conn, mails)
        rows: list[dict[str, Any]] = []
        times: dict[int, list[datetime]] = {}  # the new clicks' times, by ledger row
        for hit in hits:
            delivery = _delivery_id(hit.claims)
            kind = machines.kind_of(hit.kind, at=hit.at, sent_at=sent.get(delivery or -1))
            if hit.machine and kind in machines.MACHINE:
                kind = machines.MACHINE[kind]
            rows.append({"kind": kind, "customer_id": ids.get(hit.claims.customer),
                         "campaign": hit.claims.campaign, "delivery_id": delivery,
                         "at": hit.at, "url": hit.url, "score": None, "comment": None,
                         "user_agent": machines.user_agent(hit.user_agent),
                         "ip_hash": hit.ip_hash})
            if kind in machines.CLICKS and delivery is not None:
                times.setdefault(delivery, []).append(hit.at)
        conn.execute(insert(Event), rows)
        return [mail for mail in sorted(times) if machines.may_burst(
            _clicks_around(conn, mail, min(times[mail]), max(times[mail])))]


def _sent_at(conn: Connection, mails: list[int]) -> dict[int, datetime]:
    """The delivery time of each of MAILS (ledger ids) that has one, in UTC."""
    found: dict[int, datetime] = {}
    for chunk in range(0, len(mails), 500):
        for row_id, sent_at in conn.execute(select(Delivery.id, Delivery.sent_at).where(
                Delivery.id.in_(mails[chunk:chunk + 500]), Delivery.sent_at.is_not(None))):
            if sent_at is not None:
                found[int(row_id)] = _utc(sent_at)
    return found


def _clicks_around(conn: Connection, mail: int, first: datetime, last: datetime
                   ) -> list[tuple[datetime, str]]:
    """MAIL's stored clicks (human and machine) from BURST before FIRST to BURST after
    LAST: (when, URL)."""
    return [(_utc(at), str(url or "")) for at, url in conn.execute(
        select(Event.at, Event.url).where(
            Event.delivery_id == mail, Event.kind.in_(machines.CLICKS),
            Event.at >= first - machines.BURST, Event.at <= last + machines.BURST))]


def mark_bursts(engine: Engine, links: dict[int, int]) -> int:
    """Store as machine_click every click of each mail in LINKS (ledger id -> the number
    of distinct links its mail has) that is part of a burst over all of them
    (mailer.core.machines.bursts), reclassifying clicks first stored as a reader's;
    returns how many changed."""
    changed = 0
    with engine.begin() as conn:
        for mail, count in sorted(links.items()):
            clicks = [(event_id, at, url, kind) for event_id, at, url, kind in conn.execute(
                select(Event.id, Event.at, Event.url, Event.kind).where(
                    Event.delivery_id == mail, Event.kind.in_(machines.CLICKS))
                .order_by(Event.at, Event.id))]
            found = machines.bursts([(_utc(at), str(url or "")) for _, at, url, _ in clicks],
                                    count)
            human = sorted(clicks[i][0] for i in found if clicks[i][3] == machines.CLICK)
            if human:
                conn.execute(update(Event).where(Event.id.in_(human))
                             .values(kind=machines.MACHINE_CLICK))
                changed += len(human)
    return changed


def _utc(at: datetime) -> datetime:
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def rate(engine: Engine, claims: Claims, score: int, now: datetime) -> None:
    """A rating of a mail's order or visit; a later click on another score replaces it."""
    with engine.begin() as conn:
        found = _person(conn, claims)
        if found is None:
            return
        existing = _rating(conn, claims, found.id)
        if existing is None:
            _event(conn, "rating", claims, found.id, now, score=score)
        else:
            conn.execute(update(Event).where(Event.id == existing)
                         .values(score=score, at=now))


def comment(engine: Engine, claims: Claims, text: str, now: datetime) -> bool:
    """The optional comment that goes with a rating; False without a rating."""
    with engine.begin() as conn:
        found = _person(conn, claims)
        existing = _rating(conn, claims, found.id) if found else None
        if existing is None:
            return False
        conn.execute(update(Event).where(Event.id == existing).values(
            comment=_printable(text)[:2000]))
        return True


_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def _printable(text: str) -> str:
    """TEXT without control characters but tab and line breaks (PostgreSQL refuses NUL in
    text; escape sequences have no place in a report)."""
    return _CONTROL.sub("", text)


def _rating(conn: Connection, claims: Claims, customer_id: int) -> int | None:
    query = select(Event.id).where(Event.kind == "rating", Event.customer_id == customer_id,
                                   Event.campaign == claims.campaign)
    delivery = _delivery_id(claims)
    query = query.where(Event.delivery_id == delivery) if delivery is not None \
        else query.where(Event.delivery_id.is_(None))
    found = conn.execute(query.limit(1)).scalar()
    return None if found is None else int(found)


# --- what a campaign's report reads back ------------------------------------------------


def mails_and_count(conn: Connection, campaign: str, kind: str) -> tuple[int, int]:
    """CAMPAIGN's events of KIND: (how many mails had one, how many there are)."""
    total, mails = conn.execute(
        select(func.count(), func.count(func.distinct(Event.delivery_id)))
        .where(Event.campaign == campaign, Event.kind == kind)).one()
    return int(mails), int(total)


def count(conn: Connection, campaign: str, kind: str) -> int:
    """How many events of KIND CAMPAIGN has."""
    return int(conn.execute(select(func.count()).where(
        Event.campaign == campaign, Event.kind == kind)).scalar_one())


def ratings_given(conn: Connection, campaign: str) -> list[tuple[int, int, datetime]]:
    """CAMPAIGN's ratings, oldest first: (customer id, score, when); 0 for a missing id or
    score."""
    return [(int(customer or 0), int(score or 0), at) for customer, score, at in conn.execute(
        select(Event.customer_id, Event.score, Event.at).where(
            Event.campaign == campaign, Event.kind == "rating").order_by(Event.at))]


def comments_given(conn: Connection, campaign: str, limit: int
                   ) -> list[tuple[datetime, str | None, int, str]]:
    """CAMPAIGN's latest LIMIT rating comments, newest first (by the rating's time):
    (when, the customer's store id or None, score, comment)."""
    return [(at, store_id, int(score or 0), str(text)) for at, store_id, score, text in
            conn.execute(select(Event.at, Customer.store_id, Event.score, Event.comment)
                         .outerjoin(Customer, Customer.id == Event.customer_id)
                         .where(Event.campaign == campaign, Event.kind == "rating",
                                Event.comment.is_not(None), Event.comment != "")
                         .order_by(Event.at.desc(), Event.id.desc()).limit(limit))]


# --- the overview of campaigns (`mailer campaigns`) ------------------------------------------


def mails_with_event_by_campaign(conn: Connection, kind: str) -> dict[str, int]:
    """Campaign -> its mails with at least one event of KIND."""
    return {str(campaign): int(n) for campaign, n in conn.execute(
        select(Event.campaign, func.count(func.distinct(Event.delivery_id)))
        .where(Event.kind == kind, Event.campaign.is_not(None)).group_by(Event.campaign))}


def count_by_campaign(conn: Connection, kind: str) -> dict[str, int]:
    """Campaign -> how many events of KIND it has."""
    return {str(campaign): int(n) for campaign, n in conn.execute(
        select(Event.campaign, func.count())
        .where(Event.kind == kind, Event.campaign.is_not(None)).group_by(Event.campaign))}


# --- when customers engage (`send_at: best`, mailer.planning.send_hour) ------------------

_HUMAN = sorted(machines.HUMAN)
# Events are counted per half hour, so a zone half an hour off UTC (India's) still puts
# each in its own local hour; an hour's buckets would not.
BUCKET_SECONDS = 1800


def _bucket(bind: Connection) -> Any:
    """The half hour since the epoch an event's time falls in, as a number."""
    if is_server(bind):
        return func.floor(func.extract("epoch", Event.at) / BUCKET_SECONDS)
    # floor division: an integer `/` on SQLite (a plain `/` renders `/ (1800 + 0.0)`,
    # true division, and would group by the second)
    return cast(func.strftime("%s", Event.at), Integer) // BUCKET_SECONDS


def human_hours(conn: Connection, ids: list[int], since: datetime, until: datetime
                ) -> list[tuple[int, str, int, int]]:
    """The human opens and clicks (mailer.core.machines.HUMAN) of the customers IDS in
    [SINCE, UNTIL), counted per half hour: (customer id, kind, the half hour since the
    epoch, how many). One query for a batch of the planner's (ix_events_customer_at
    serves it)."""
    if not ids:
        return []
    bucket = _bucket(conn)
    rows = conn.execute(
        select(Event.customer_id, Event.kind, bucket, func.count())
        .where(among(conn, Event.customer_id, ids), Event.kind.in_(_HUMAN),
               Event.at >= since, Event.at < until)
        .group_by(Event.customer_id, Event.kind, bucket))
    return [(int(customer_id), str(kind), int(start), int(n))
            for customer_id, kind, start, n in rows]


def store_human_hours(conn: Connection, since: datetime, until: datetime
                      ) -> list[tuple[str | None, str, int, int]]:
    """The whole store's human opens and clicks in [SINCE, UNTIL), counted per customer
    zone and half hour: (the customers' `timezone`, None for none; kind; the half hour
    since the epoch; how many). At most zones × half hours × 2 rows, whatever the number
    of events."""
    bucket = _bucket(conn)
    rows = conn.execute(
        select(Customer.timezone, Event.kind, bucket, func.count())
        .join(Customer, Customer.id == Event.customer_id)
        .where(Event.kind.in_(_HUMAN), Event.at >= since, Event.at < until)
        .group_by(Customer.timezone, Event.kind, bucket))
    return [(zone_name or None, str(kind), int(start), int(n))
            for zone_name, kind, start, n in rows]
