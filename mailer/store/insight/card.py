"""What the customer card reads about one customer (`mailer customer`, mailer.app.card).

Every query here is led by the customer: by store id or email key (unique indexes), by
customer id on consent_history, stage_history, deliveries, predictions and
recommendations (each has an index or a key that starts with it), and the ledger's rows
by their ids for opens and clicks (ix_events_delivery_id). The store's size does not
change a card's cost, except for events: that table has no index led by customer_id
yet, so reading a customer's events filters the table.
The stats reuse what templates read (mailer.store.customers), so a card and a mail never
disagree about a customer's orders.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, exists, select

from mailer.store.customers import (
    OrderStats,
    favourite_categories,
    order_stats,
    suppressed_keys,
)
from mailer.store.db import Connection, Engine
from mailer.store.insight.predictions import Scored, latest_fit, predictions_of
from mailer.store.insight.recommendations import Recommended, recommendations_of
from mailer.store.insight.stages import latest_paid_times
from mailer.store.models import (
    CampaignVersion,
    ConsentChange,
    Customer,
    Delivery,
    Event,
    Response,
    StageChange,
)

MAILS_SHOWN = 100  # the latest mails and events a card lists
EVENTS_SHOWN = 100
NEAR_READ = 500  # candidate addresses or ids read for a "did you mean"


@dataclass(frozen=True)
class ConsentEntry:
    """A consent as it became: its state, since when, from where and why."""

    state: str
    since: datetime | None
    source: str | None
    reason: str | None


@dataclass(frozen=True)
class StageEntry:
    from_stage: str | None  # None: the first recording, no change
    to_stage: str
    detected_at: datetime


@dataclass(frozen=True)
class MailRow:
    """One ledger row of the customer, with whether its mail was opened or clicked."""

    id: int
    campaign: str
    occurrence: str
    subject_variant: int
    campaign_version_id: int
    status: str
    planned_at: datetime
    send_after: datetime
    next_attempt_at: datetime | None
    sent_at: datetime | None
    opened: bool
    clicked: bool


@dataclass(frozen=True)
class EventRow:
    kind: str
    at: datetime
    campaign: str | None
    url: str | None
    score: int | None
    comment: str | None


@dataclass(frozen=True)
class CardFacts:
    """Everything the store knows about one customer, as read (mailer.app.card makes the
    card of it)."""

    customer: Any  # the customers row (every column)
    suppressed: bool
    consent_history: list[ConsentEntry]
    stats: OrderStats | None  # None: no paid order by now
    favourite_category: str | None
    latest_paid: list[datetime]  # newest first, as many as the stage rules read
    stage_history: list[StageEntry]
    predictions: Scored | None
    predictions_reason: str | None  # why there are none (no fit yet, the fit's reason)
    recommendations: list[Recommended]
    mails: list[MailRow]  # the latest MAILS_SHOWN, oldest first
    campaign_sources: dict[int, str]  # the campaign file each mail's version was planned with
    events: list[EventRow]  # the latest EVENTS_SHOWN, oldest first


def find(conn: Connection, *, store_id: str | None = None,
         email_key: str | None = None) -> Any | None:
    """The customers row with this store id or email key, or None."""
    which = Customer.store_id == store_id if store_id is not None \
        else Customer.email_key == email_key
    return conn.execute(select(*Customer.__table__.c).where(which)).first()


def near(conn: Connection, *, store_id: str | None = None,
         email_key: str | None = None) -> list[str]:
    """Store ids (or email keys) that share the first characters of the one asked for:
    the candidates of a "did you mean", read as index ranges (never the whole table)."""
    column = Customer.store_id if store_id is not None else Customer.email_key
    wanted = store_id if store_id is not None else email_key
    assert wanted is not None
    found: list[str] = []
    for length in (3, 1):
        prefix = wanted[:length]
        if not prefix:
            continue
        last = ord(prefix[-1])
        within = [column >= prefix]
        if last < 0x10FFFF:  # the last code point has nothing above it: no upper bound
            within.append(column < prefix[:-1] + chr(last + 1))
        found += conn.execute(select(column).where(*within)
                              .order_by(column).limit(NEAR_READ)).scalars()
        if found:
            break
    return found


def _fit_reason(engine: Engine) -> str:
    fit = latest_fit(engine)
    if fit is None:
        return "no predictions yet: run `mailer predict`"
    if not fit.fitted:
        return fit.reason or "the latest fit failed"
    return "not among the buyers of the latest fit (`mailer predict` scores every buyer)"


def read(engine: Engine, conn: Connection, customer: Any, *, now: datetime, currency: str,
         latest_orders: int) -> CardFacts:
    """Everything the card shows of CUSTOMER (a row from `find`), as of NOW."""
    cid = int(customer.id)
    ids = [cid]
    history = [ConsentEntry(*row) for row in conn.execute(
        select(ConsentChange.state, ConsentChange.since, ConsentChange.source,
               ConsentChange.reason)
        .where(ConsentChange.customer_id == cid)
        .order_by(ConsentChange.since, ConsentChange.id))]
    stats = next(iter(order_stats(conn, ids, now=now, currency=currency)), None)
    stages = [StageEntry(*row) for row in conn.execute(
        select(StageChange.from_stage, StageChange.to_stage, StageChange.detected_at)
        .where(StageChange.customer_id == cid)
        .order_by(StageChange.detected_at, StageChange.id))]
    predicted = predictions_of(conn, ids).get(cid)
    mails = _mails(conn, cid)
    return CardFacts(
        customer=customer,
        suppressed=bool(suppressed_keys(conn, [customer.email_key])),
        consent_history=history,
        stats=stats,
        favourite_category=favourite_categories(conn, ids, now=now).get(cid),
        latest_paid=latest_paid_times(conn, ids, now=now, limit=latest_orders).get(cid, []),
        stage_history=stages,
        predictions=predicted,
        predictions_reason=None if predicted is not None else _fit_reason(engine),
        recommendations=recommendations_of(conn, ids, now=now).get(cid, []),
        mails=mails,
        campaign_sources=_campaign_sources(conn, {m.campaign_version_id for m in mails}),
        events=_events(conn, cid))


def _engaged(kind: str) -> ColumnElement[bool]:
    return exists().where(Event.delivery_id == Delivery.id, Event.kind == kind)


def _mails(conn: Connection, customer_id: int) -> list[MailRow]:
    """The customer's latest ledger rows (ix_deliveries_customer_planned), oldest first."""
    rows = conn.execute(
        select(Delivery.id, Delivery.campaign, Delivery.occurrence, Delivery.subject_variant,
               Delivery.campaign_version_id, Delivery.status, Delivery.planned_at,
               Delivery.send_after, Delivery.next_attempt_at, Delivery.sent_at,
               _engaged("open"), _engaged("click"))
        .where(Delivery.customer_id == customer_id)
        .order_by(Delivery.planned_at.desc(), Delivery.id.desc()).limit(MAILS_SHOWN)).all()
    return [MailRow(*row[:10], opened=bool(row[10]), clicked=bool(row[11]))
            for row in reversed(rows)]


def _campaign_sources(conn: Connection, version_ids: set[int]) -> dict[int, str]:
    """The campaign file (as written) of each campaign version."""
    if not version_ids:
        return {}
    found: dict[int, str] = {}
    for version_id, definition in conn.execute(
            select(CampaignVersion.id, CampaignVersion.definition)
            .where(CampaignVersion.id.in_(sorted(version_ids)))):
        source = (definition or {}).get("campaign_source")
        if isinstance(source, str):
            found[int(version_id)] = source
    return found


def _events(conn: Connection, customer_id: int) -> list[EventRow]:
    """The customer's latest events, oldest first, their survey answers among them (one
    `survey` event per mail answered)."""
    rows = conn.execute(
        select(Event.kind, Event.at, Event.campaign, Event.url, Event.score, Event.comment)
        .where(Event.customer_id == customer_id)
        .order_by(Event.at.desc(), Event.id.desc()).limit(EVENTS_SHOWN)).all()
    found = [EventRow(*row) for row in rows] + _survey_answers(conn, customer_id)
    return sorted(found, key=lambda e: e.at)[-EVENTS_SHOWN:]


def _survey_answers(conn: Connection, customer_id: int) -> list[EventRow]:
    """Each mail's survey answers as one event, `SURVEY: overall 2, comment: …` by
    question id, at the latest answer's time (read through the unique key of responses,
    which the customer leads: no scan)."""
    mails: dict[tuple[str, str, str], tuple[datetime, list[str]]] = {}
    for survey, campaign, occurrence, question, number, value, at in conn.execute(
            select(Response.survey, Response.campaign, Response.occurrence, Response.question,
                   Response.value_number, Response.value_text, Response.at)
            .where(Response.customer_id == customer_id)
            .order_by(Response.campaign, Response.occurrence, Response.question)):
        answer = f"{question} {number:g}" if number is not None else f"{question}: {value}"
        latest, answers = mails.setdefault((survey, campaign, occurrence), (at, []))
        answers.append(answer)
        mails[(survey, campaign, occurrence)] = (max(latest, at), answers)
    return [EventRow("survey", at, campaign, None, None, f"{survey}: " + ", ".join(answers))
            for (survey, campaign, _), (at, answers) in mails.items()][-EVENTS_SHOWN:]


def occurrences(conn: Connection, customer_id: int) -> set[tuple[str, str]]:
    """Every (campaign, occurrence) the ledger holds for the customer, whatever its status:
    what the card's upcoming leaves out (read from the ledger's unique key alone)."""
    return {(str(campaign), str(occurrence)) for campaign, occurrence in conn.execute(
        select(Delivery.campaign, Delivery.occurrence).where(Delivery.customer_id == customer_id))}
