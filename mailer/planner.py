"""Planning (DESIGN §4.2, §4.3): who gets which mail of a campaign, and when.

`plan` finds what is due at `now` (the trigger table in mailer.schedule), reads
the candidates in batches of store ids, decides each with mailer.policy and, when
asked to write, inserts ledger rows (status `queued`) with their campaign
version, and appends the counts per exclusion reason to the plan runs.
Exclusions are reported, never stored as deliveries. A dry run (`mailer plan`)
computes exactly the same and writes nothing. The ledger's unique key
(campaign, occurrence, customer) makes a second row for the same mail
impossible, also when two planners race: a conflicting insert is skipped and
counted as `already_sent`.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Connection, Engine, Table, func, insert, literal, select, update

from mailer.addresses import parse_address
from mailer.audience import compiled, reading
from mailer.campaign import Campaign
from mailer.clock import as_local, zone
from mailer.conditions import SegmentSpec
from mailer.errors import InvalidValue
from mailer.models import (
    CampaignVersion,
    Coupon,
    Customer,
    Delivery,
    Order,
    PlanRun,
    Suppression,
)
from mailer.policy import LIVE, Facts, decide
from mailer.schedule import (
    after_order_window,
    birthday_keys,
    local_day,
    once_due,
    parse_cron,
    promotion_due,
    reminder_due,
    schedule_due,
)
from mailer.segments import CUSTOMERS, Scope, members_query
from mailer.settings import Settings

BATCH = 1000


@dataclass(frozen=True)
class Candidate:
    customer_id: int
    occurrence: str
    expires: datetime


@dataclass(frozen=True)
class Planned:
    customer_id: int
    id: str  # the store's id
    email: str
    occurrence: str
    variant: int
    send_after: datetime
    expires: datetime


@dataclass(frozen=True)
class Excluded:
    customer_id: int
    id: str
    email: str
    occurrence: str
    reason: str


@dataclass
class PlanResult:
    campaign: str
    now: datetime
    planned: list[Planned] = field(default_factory=list)
    excluded: list[Excluded] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        return dict(Counter(e.reason for e in self.excluded))


# --- what is due --------------------------------------------------------------------------


def _zones(conn: Connection, default: str) -> list[str]:
    """Every zone customers live in (the workspace's for those without one)."""
    found = {row[0] for row in conn.execute(select(Customer.timezone).distinct()) if row[0]}
    return sorted(found | {default})


def candidates(engine: Engine, specs: dict[str, SegmentSpec], slug: str, campaign: Campaign,
               scope: Scope, settings: Settings) -> Iterator[list[Candidate]]:
    """Batches of due candidates, ordered by store id within each occurrence."""
    now, tz = scope.now, zone(settings.timezone)
    members = members_query(compiled(specs, campaign.segment, scope), CUSTOMERS.c.id)
    effective_zone = func.coalesce(Customer.timezone, settings.timezone)
    queries: list[tuple[Any, Any]] = []  # (select of customer id, occurrence), expiry
    trigger = campaign.trigger
    if trigger == "schedule" and campaign.schedule:
        due = schedule_due(parse_cron(campaign.schedule), campaign.grace, now, tz)
        if due is not None:
            queries.append((members.add_columns(literal(due.occurrence)), due.expires))
    elif trigger == "once" and campaign.at is not None:
        due = once_due(as_local(campaign.at, tz), campaign.grace, now)
        if due is not None:
            queries.append((members.add_columns(literal(due.occurrence)), due.expires))
    elif trigger == "promotion" and campaign.starts is not None and campaign.ends is not None:
        starts, ends = as_local(campaign.starts, tz), as_local(campaign.ends, tz)
        if campaign.reminder is not None:
            reminder = reminder_due(ends, campaign.reminder.before_end, now)
            if reminder is not None:
                # To those whose main mail went out (or probably did), not to the segment.
                main = (select(Delivery.customer_id, literal(reminder.occurrence))
                        .where(Delivery.campaign == slug,
                               Delivery.occurrence == "main",
                               Delivery.status.in_(("sent", "unknown"))))
                queries.append((main, reminder.expires))
        due = promotion_due(starts, ends, now)
        if due is not None:
            queries.insert(0, (members.add_columns(literal(due.occurrence)), due.expires))
    elif trigger in ("birthday", "after_order"):
        with engine.connect() as conn:
            zones = _zones(conn, settings.timezone)
        for name in zones:
            day = local_day(name, campaign.send_time, now)
            if day is None:
                continue
            in_zone = CUSTOMERS.c.id.in_(select(Customer.id).where(effective_zone == name))
            query: Any
            if trigger == "birthday":
                query = members.where(in_zone, CUSTOMERS.c.birth_md.in_(birthday_keys(day.day)))
                queries.append((query.add_columns(literal(f"birthday:{day.day.year}")),
                                day.end))
            else:
                assert campaign.after is not None
                start, end = after_order_window(day, campaign.after)
                query = (select(Order.customer_id, literal("order:") + Order.store_id)
                         .where(Order.status == "paid", Order.placed_at >= start,
                                Order.placed_at < end, Order.customer_id.in_(members),
                                Order.customer_id.in_(select(Customer.id)
                                                      .where(effective_zone == name))))
                queries.append((query, day.end))
    for query, expires in queries:
        with reading(engine) as conn:
            rows = conn.execute(query.order_by(query.selected_columns[0]))
            batch: list[Candidate] = []
            for customer_id, occurrence in rows:
                batch.append(Candidate(customer_id, occurrence, expires))
                if len(batch) >= BATCH:
                    yield batch
                    batch = []
            if batch:
                yield batch


# --- the facts about a batch -----------------------------------------------------------------


def _facts(conn: Connection, slug: str, campaign: Campaign, batch: list[Candidate],
           now: datetime, caps_span: timedelta, run: dict[int, list[datetime]],
           starts: datetime | None) -> dict[tuple[int, str], Facts]:
    ids = sorted({c.customer_id for c in batch})
    people = {row.id: row for row in conn.execute(
        select(Customer.id, Customer.email, Customer.email_key, Customer.consent)
        .where(Customer.id.in_(ids)))}
    keys = [p.email_key for p in people.values()]
    suppressed = {row[0] for row in conn.execute(
        select(Suppression.email_key).where(Suppression.email_key.in_(keys)))}
    occurrences = sorted({c.occurrence for c in batch})
    existing = {(row[0], row[1]) for row in conn.execute(
        select(Delivery.customer_id, Delivery.occurrence)
        .where(Delivery.campaign == slug, Delivery.occurrence.in_(occurrences),
               Delivery.customer_id.in_(ids)))}
    recent: dict[int, list[datetime]] = {}
    for customer_id, planned in conn.execute(
            select(Delivery.customer_id, Delivery.planned_at)
            .where(Delivery.customer_id.in_(ids), Delivery.status.in_(LIVE),
                   Delivery.planned_at > now - caps_span, Delivery.planned_at <= now)):
        recent.setdefault(customer_id, []).append(planned)
    cooling: set[int] = set()
    if campaign.cooldown is not None:
        cooling = {row[0] for row in conn.execute(
            select(Delivery.customer_id).where(
                Delivery.campaign == slug, Delivery.customer_id.in_(ids),
                Delivery.status.in_(LIVE), Delivery.planned_at > now - campaign.cooldown,
                Delivery.planned_at <= now))}
    ordered: set[int] = set()
    if starts is not None:
        ordered = {row[0] for row in conn.execute(
            select(Order.customer_id).where(Order.customer_id.in_(ids), Order.status == "paid",
                                            Order.placed_at >= starts,
                                            Order.placed_at <= now))}
    facts = {}
    for candidate in batch:
        person = people[candidate.customer_id]
        try:
            parse_address(person.email)
            valid = True
        except InvalidValue:
            valid = False
        facts[(candidate.customer_id, candidate.occurrence)] = Facts(
            consent=person.consent, suppressed=person.email_key in suppressed,
            valid_address=valid,
            already_planned=(candidate.customer_id, candidate.occurrence) in existing,
            in_cooldown=candidate.customer_id in cooling,
            recent=tuple(recent.get(candidate.customer_id, []) + run.get(candidate.customer_id,
                                                                         [])),
            ordered_since_start=candidate.customer_id in ordered)
    return facts


# --- planning ---------------------------------------------------------------------------------


def version_definition(slug: str, campaign: Campaign, html: str, text: str) -> dict[str, Any]:
    """What a worker needs to render the campaign's mails, whatever its own files say."""
    return {"campaign": slug, "spec": json.loads(campaign.model_dump_json(by_alias=True)),
            "html": html, "text": text}


def store_version(conn: Connection, slug: str, definition: dict[str, Any],
                  now: datetime) -> int:
    """The id of the campaign version with this content, created if new."""
    digest = hashlib.sha256(json.dumps(definition, sort_keys=True).encode()).hexdigest()
    found = conn.execute(select(CampaignVersion.id)
                         .where(CampaignVersion.content_hash == digest)).scalar()
    if found is not None:
        return int(found)
    return int(conn.execute(insert(CampaignVersion).values(
        campaign=slug, content_hash=digest, definition=definition, created_at=now)
        .returning(CampaignVersion.id)).scalar_one())


def plan(engine: Engine, specs: dict[str, SegmentSpec], slug: str, campaign: Campaign, *,
         scope: Scope, settings: Settings, version: dict[str, Any] | None = None,
         run: dict[int, list[datetime]] | None = None) -> PlanResult:
    """Plan what is due at scope.now. With VERSION (the definition to store), rows are
    written; without, nothing is (the dry run). RUN carries the planned times of
    mails planned earlier in the same planning run, so caps see them."""
    now, tz_default = scope.now, zone(settings.timezone)
    result = PlanResult(slug, now)
    planned_in_run = run if run is not None else {}
    caps = settings.policy.frequency
    caps_span = max((cap.per for cap in caps), default=timedelta(0))
    reminder_starts = (as_local(campaign.starts, tz_default)
                       if campaign.reminder is not None and campaign.starts else None)
    with engine.connect() as conn:
        base = int(conn.execute(select(func.count()).select_from(Delivery)
                                .where(Delivery.campaign == slug)).scalar_one())
        zones = dict(conn.execute(select(Customer.id, Customer.timezone)
                                  .where(Customer.timezone.is_not(None))).all()) \
            if settings.policy.quiet_hours else {}
    variants = len(campaign.subject)
    for batch in candidates(engine, specs, slug, campaign, scope, settings):
        with engine.begin() as conn:
            facts = _facts(conn, slug, campaign, batch, now, caps_span, planned_in_run,
                           reminder_starts)
            people = {row.id: row for row in conn.execute(
                select(Customer.id, Customer.store_id, Customer.email)
                .where(Customer.id.in_([c.customer_id for c in batch])))}
            rows = []
            for candidate in batch:
                person = people[candidate.customer_id]
                tz = zone(zones.get(candidate.customer_id) or settings.timezone)
                decision = decide(facts[(candidate.customer_id, candidate.occurrence)],
                                  now=now, caps=caps, tz=tz,
                                  quiet=settings.policy.quiet_hours, expires=candidate.expires,
                                  reminder=candidate.occurrence == "reminder")
                if decision.reason is not None:
                    result.excluded.append(Excluded(candidate.customer_id, person.store_id,
                                                    person.email, candidate.occurrence,
                                                    decision.reason))
                    continue
                assert decision.send_after is not None
                variant = (base + len(result.planned)) % variants
                result.planned.append(Planned(candidate.customer_id, person.store_id,
                                              person.email, candidate.occurrence, variant,
                                              decision.send_after, candidate.expires))
                planned_in_run.setdefault(candidate.customer_id, []).append(now)
                rows.append({"campaign": slug, "occurrence": candidate.occurrence,
                             "customer_id": candidate.customer_id, "email": person.email,
                             "subject_variant": variant, "status": "queued", "attempts": 0,
                             "planned_at": now, "send_after": decision.send_after,
                             "expires_at": candidate.expires})
            if version is not None and rows:
                version_id = store_version(conn, slug, version, now)
                written = _insert_rows(conn, [{**row, "campaign_version_id": version_id}
                                              for row in rows], result)
                _give_codes(conn, slug, campaign, written, now)
    if version is not None:
        with engine.begin() as conn:
            for occurrence in sorted({p.occurrence for p in result.planned}
                                     | {e.occurrence for e in result.excluded}) or ["-"]:
                counts = Counter(e.reason for e in result.excluded
                                 if e.occurrence == occurrence)
                conn.execute(insert(PlanRun).values(
                    campaign=slug, occurrence=occurrence, now=now,
                    planned=sum(1 for p in result.planned if p.occurrence == occurrence),
                    excluded=dict(counts)))
    return result


def _give_codes(conn: Connection, slug: str, campaign: Campaign,
               written: dict[tuple[int, str], int], now: datetime) -> None:
    """A unique coupon per planned mail, and a stable referral code per customer."""
    if campaign.coupon is not None and written:
        coupon = campaign.coupon
        conn.execute(insert(Coupon), [
            {"code": f"{coupon.prefix.upper()}-{_code()}", "customer_id": customer_id,
             "campaign": slug, "delivery_id": delivery_id, "value": coupon.value,
             "expires_at": now + coupon.valid_for}
            for (customer_id, _), delivery_id in sorted(written.items())])
    if campaign.referral is not None and written:
        ids = sorted({customer_id for customer_id, _ in written})
        missing = [row[0] for row in conn.execute(
            select(Customer.id).where(Customer.id.in_(ids), Customer.referral_code.is_(None)))]
        for customer_id in missing:
            conn.execute(update(Customer).where(Customer.id == customer_id,
                                                Customer.referral_code.is_(None))
                         .values(referral_code=_code()))


def _code() -> str:
    """8 characters from 32 unambiguous ones: 40 bits, unguessable for a coupon."""
    alphabet = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"
    return "".join(secrets.choice(alphabet) for _ in range(8))


def _insert_rows(conn: Connection, rows: list[dict[str, Any]],
                 result: PlanResult) -> dict[tuple[int, str], int]:
    """Insert ledger rows; one another planner wrote first is skipped as already_sent.
    Returns the ids of the rows written, by (customer id, occurrence)."""
    table = cast(Table, Delivery.__table__)
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as upsert
    else:
        from sqlalchemy.dialects.sqlite import insert as upsert  # type: ignore[assignment]
    written = {(row[0], row[1]): row[2] for row in conn.execute(
        upsert(table).on_conflict_do_nothing(
            index_elements=["campaign", "occurrence", "customer_id"])
        .returning(table.c.customer_id, table.c.occurrence, table.c.id), rows)}
    tried = {(row["customer_id"], row["occurrence"]) for row in rows}
    lost = [p for p in result.planned
            if (p.customer_id, p.occurrence) in tried - set(written)]
    for planned in lost:
        result.planned.remove(planned)
        result.excluded.append(Excluded(planned.customer_id, planned.id, planned.email,
                                        planned.occurrence, "already_sent"))
    return written



def plan_due(engine: Engine, specs: dict[str, SegmentSpec], campaigns: dict[str, Campaign], *,
             scope: Scope, settings: Settings,
             versions: dict[str, dict[str, Any]] | None = None) -> list[PlanResult]:
    """One planning run: every campaign, higher priority first, sharing the caps' view
    of what this run has planned. With VERSIONS (definitions by campaign), rows are
    written; a queued mail is never withdrawn for a later one."""
    run: dict[int, list[datetime]] = {}
    order = sorted(campaigns, key=lambda slug: (-campaigns[slug].priority, slug))
    return [plan(engine, specs, slug, campaigns[slug], scope=scope, settings=settings,
                 version=versions[slug] if versions is not None else None, run=run)
            for slug in order]
