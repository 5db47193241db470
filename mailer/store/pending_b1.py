"""Statements moved out of the sender, the report and the bounce handler whose homes are
query modules being reworked meanwhile (issue 16, item 3). TEMPORARY: each block goes to
the module its comment names, and this file goes away."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, and_, exists, func, select, update

from mailer.core.states import WENT_OUT, Consent
from mailer.store.consent import opt_out
from mailer.store.ledger import DELIVERIES, DUE_STATES, due
from mailer.store.models import (
    CampaignVersion,
    Coupon,
    Customer,
    Delivery,
    Event,
    PlanRun,
    Suppression,
)

# -> store/versions.py


def version_definition(engine: Engine, version_id: int) -> dict[str, Any]:
    """The stored definition of one campaign version (what a row is rendered from)."""
    with engine.connect() as conn:
        stored: dict[str, Any] = conn.execute(
            select(CampaignVersion.definition)
            .where(CampaignVersion.id == version_id)).scalar_one()
    return stored


def plan_run_exclusions(conn: Connection, campaign: str) -> list[dict[str, int]]:
    """Per plan run of CAMPAIGN, the customers it excluded by reason."""
    return [{reason: int(n) for reason, n in (found or {}).items()}
            for (found,) in conn.execute(select(PlanRun.excluded)
                                         .where(PlanRun.campaign == campaign))]


# -> store/coupons.py


def coupons_of_rows(conn: Connection, delivery_ids: Sequence[int]
                    ) -> dict[int, tuple[str, datetime]]:
    """Ledger row id -> (code, expiry) of the coupon made for it."""
    return {int(row[0] or 0): (row[1], row[2]) for row in conn.execute(
        select(Coupon.delivery_id, Coupon.code, Coupon.expires_at)
        .where(Coupon.delivery_id.in_(list(delivery_ids))))}


# -> store/ledger.py


def any_due(engine: Engine, now: datetime, campaigns: Sequence[str] | None) -> bool:
    """Whether any row (of CAMPAIGNS, None: of any) is due at NOW; nothing is leased."""
    with engine.connect() as conn:
        return conn.execute(select(DELIVERIES.c.id).where(
            due(now, campaigns)).limit(1)).first() is not None


def consent_of_rows(conn: Connection, ids: Sequence[int]
                    ) -> list[tuple[int, str, datetime | None, bool]]:
    """Per row id: its customer's consent, paused_until, and whether the address is
    suppressed."""
    return [(int(row_id), consent, paused_until, bool(suppressed))
            for row_id, consent, paused_until, suppressed in conn.execute(
                select(DELIVERIES.c.id, Customer.consent, Customer.paused_until,
                       exists().where(Suppression.email_key == Customer.email_key))
                .join(Customer, Customer.id == DELIVERIES.c.customer_id)
                .where(DELIVERIES.c.id.in_(list(ids))))]


def unlease(conn: Connection, owner: str, ids: Sequence[int]) -> None:
    """OWNER's lease of these due rows given up: others may claim them."""
    conn.execute(update(DELIVERIES).where(
        and_(DELIVERIES.c.id.in_(list(ids)), DELIVERIES.c.lease_owner == owner,
             DELIVERIES.c.status.in_(DUE_STATES))).values(
        lease_owner=None, lease_until=None))


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


# -> store/consent.py


def opt_out_customer(conn: Connection, customer_id: int, consent: Consent, *, now: datetime,
                     source: str, reason: str) -> int:
    """opt_out for one customer by id; how many changed (0 or 1)."""
    return opt_out(conn, Customer.id == customer_id, consent, now=now, source=source,
                   reason=reason)
