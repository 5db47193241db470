"""`mailer customer ID|EMAIL`: one customer's card (docs/customers.md, "The customer card").

The store's facts come from one read transaction (mailer.store.insight.card); the rest is
worked out here from them, purely: the stage by the workspace's rules, the stats'
`days_between_orders`, each mail's subject as its campaign version wrote it, and what is
coming — the queued ledger rows, and the next due date of each birthday, once, schedule,
promotion, date and holiday campaign whose segment the customer is in now, when they can be mailed
(consent `subscribed`, not suppressed, the campaign's topic wanted). Segment membership
is asked for this customer alone (mailer.segments.runner.memberships_of), so a card
costs the same on a store of a hundred customers or of a million.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from mailer.config.campaign import Campaign, anniversary_in
from mailer.config.conditions import All, AnyOf, Node, Not, SegmentSpec
from mailer.config.settings import MAX_COMMITTED_ORDERS, Settings
from mailer.core.clock import as_local, iso_z, localize, zone
from mailer.core.errors import NotFoundError, Problem
from mailer.core.holidays import UNKNOWN, country_code, holidays_on
from mailer.core.money import exponent
from mailer.core.states import Consent
from mailer.core.suggest import did_you_mean
from mailer.insight.stages import stage_of_latest
from mailer.planning.triggers import (
    birthday_keys,
    date_occurrence,
    holiday_date,
    holiday_occurrence,
    is_fixed_occasion,
    latest_fire,
    next_fire,
    parse_cron,
)
from mailer.segments.runner import memberships_of, scope_for
from mailer.store.db import Engine
from mailer.store.insight import card as store_card
from mailer.store.insight.card import CardFacts, ConsentEntry, EventRow, MailRow

PROFILE_FIELDS = ("first_name", "last_name", "birth_date", "age", "country", "city", "locale",
                  "timezone", "tags", "attributes", "signed_up_at", "referral_code")
WAITING = ("queued", "deferred")  # ledger rows still to go out
UPCOMING_TRIGGERS = ("birthday", "once", "schedule", "promotion", "date", "holiday")


def _time(moment: datetime | None) -> str | None:
    return None if moment is None else iso_z(moment)


def _number(amount: Decimal | None) -> float | int | None:
    """Money in major units as a JSON number (exact for every amount a store holds:
    at most 15 significant digits)."""
    if amount is None:
        return None
    return int(amount) if amount == amount.to_integral_value() else float(amount)


@dataclass(frozen=True)
class Stats:
    """Paid orders placed by now: counts in any currency, money in the store's."""

    orders: int = 0
    spent: Decimal = Decimal(0)
    average_order: Decimal | None = None  # None without an order in the store's currency
    first_order_at: datetime | None = None
    last_order_at: datetime | None = None
    favourite_category: str | None = None
    days_between_orders: float | None = None  # None with fewer than 2 paid orders

    def as_json(self) -> dict[str, Any]:
        return {"orders": self.orders, "spent": _number(self.spent),
                "average_order": _number(self.average_order),
                "first_order_at": _time(self.first_order_at),
                "last_order_at": _time(self.last_order_at),
                "favourite_category": self.favourite_category,
                "days_between_orders": self.days_between_orders}


@dataclass(frozen=True)
class Mail:
    campaign: str
    occurrence: str
    subject: str | None  # the variant's subject line as the campaign file wrote it
    status: str
    planned_at: datetime
    sent_at: datetime | None
    opened: bool
    clicked: bool

    def as_json(self) -> dict[str, Any]:
        return {"campaign": self.campaign, "occurrence": self.occurrence,
                "subject": self.subject, "status": self.status,
                "planned_at": _time(self.planned_at), "sent_at": _time(self.sent_at),
                "opened": self.opened, "clicked": self.clicked}


@dataclass(frozen=True)
class Upcoming:
    """A mail on its way: a ledger row still to go out (STATUS queued or deferred, AT
    its release or next attempt) or a trigger's next due occurrence not planned yet
    (STATUS `due`, AT when it becomes due — before now when it is due already)."""

    campaign: str
    trigger: str
    occurrence: str
    at: datetime
    status: str

    def as_json(self) -> dict[str, Any]:
        return {"campaign": self.campaign, "trigger": self.trigger,
                "occurrence": self.occurrence, "at": iso_z(self.at), "status": self.status}


@dataclass(frozen=True)
class CardEvent:
    kind: str
    at: datetime
    campaign: str | None
    detail: str | None  # a click's URL, a rating's score and comment, a bounce's status

    def as_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "at": iso_z(self.at), "detail": self.detail,
                "campaign": self.campaign}


@dataclass(frozen=True)
class Card:
    """One customer as the store knows them now."""

    id: str
    email: str
    profile: dict[str, Any]
    consent: ConsentEntry
    suppressed: bool
    consent_history: list[ConsentEntry]
    # double opt-in: where and when they asked, the notices, the confirmation's time and
    # IP (the proof); None for a customer never asked to confirm
    opt_in: dict[str, Any] | None
    stats: Stats
    stage: str
    stage_history: list[store_card.StageEntry]
    predictions: dict[str, Any] | None
    predictions_reason: str | None
    recommendations: list[dict[str, str | None]]
    segments: list[str]
    mails: list[Mail]
    upcoming: list[Upcoming]
    events: list[CardEvent]
    now: datetime

    def as_json(self) -> dict[str, Any]:
        profile = {name: (value.isoformat() if isinstance(value, date)
                          and not isinstance(value, datetime)
                          else _time(value) if isinstance(value, datetime) else value)
                   for name, value in self.profile.items()}
        predictions = None if self.predictions is None else {
            name: (_time(value) if isinstance(value, datetime)
                   else _number(value) if isinstance(value, Decimal) else value)
            for name, value in self.predictions.items()}
        return {
            "id": self.id, "email": self.email, "profile": profile,
            "consent": _consent(self.consent), "suppressed": self.suppressed,
            "consent_history": [_consent(entry) for entry in self.consent_history],
            "stats": self.stats.as_json(), "stage": self.stage,
            "stage_history": [{"from": s.from_stage, "to": s.to_stage,
                               "detected_at": iso_z(s.detected_at)}
                              for s in self.stage_history],
            "predictions": predictions, "predictions_reason": self.predictions_reason,
            "recommendations": self.recommendations, "segments": self.segments,
            "mails": [mail.as_json() for mail in self.mails],
            "upcoming": [entry.as_json() for entry in self.upcoming],
            "events": [event.as_json() for event in self.events],
            "now": iso_z(self.now),
            "opt_in": None if self.opt_in is None else {
                name: _time(value) if isinstance(value, datetime) else value
                for name, value in self.opt_in.items()}}


def _consent(entry: ConsentEntry) -> dict[str, Any]:
    return {"state": entry.state, "since": _time(entry.since), "source": entry.source,
            "reason": entry.reason}


# --- finding the customer ------------------------------------------------------------


def card(engine: Engine, root: Path, settings: Settings, now: datetime, who: str, *,
         loaded: tuple[dict[str, SegmentSpec], list[Problem], dict[str, Campaign]]
         | None = None) -> Card:
    """The card of WHO (an email when it holds `@`, else the store's id) as of NOW; an
    unknown one raises NotFoundError with "did you mean" for near addresses or ids.
    LOADED, the segments, their files' problems and the campaigns parsed before (the
    console keeps them), saves reading the files."""
    from mailer.config.workspace import load_campaigns, load_segments

    now = now.replace(microsecond=0)  # as segments see it (scope_for)
    _check_asked(who)
    is_email = "@" in who
    with engine.connect() as conn, conn.begin():
        key = _key(who) if is_email else who.strip()
        customer = (store_card.find(conn, email_key=key) if is_email
                    else store_card.find(conn, store_id=key))
        if customer is None:
            near = (store_card.near(conn, email_key=key) if is_email
                    else store_card.near(conn, store_id=key))
            what = "email" if is_email else "id"
            raise NotFoundError(f"no customer with {what} {who.strip()!r}"
                                + did_you_mean(key, near))
        facts = store_card.read(engine, conn, customer, now=now,
                                currency=settings.store.currency,
                                latest_orders=MAX_COMMITTED_ORDERS)
        planned = store_card.occurrences(conn, int(customer.id))
    specs, problems = load_segments(root) if loaded is None else loaded[:2]
    scope = scope_for(settings, now, engine)
    usable = usable_segments(specs, {p.path for p in problems})
    if loaded is not None and usable.keys() == specs.keys():
        campaigns = loaded[2]  # parsed against these same segments
    else:
        campaigns, _ = load_campaigns(root, set(usable))
    segments = memberships_of(engine, usable, int(customer.id), scope)
    return assemble(facts, settings=settings, now=now, segments=segments,
                    campaigns=campaigns, planned=planned)


def _check_asked(who: str) -> None:
    """Refuse what no customer can be: text that is not UTF-8 (a shell passes undecodable
    bytes as surrogates), control characters, more than an address's 320 characters."""
    if (len(who) > 320 or any(0xD800 <= ord(c) <= 0xDFFF or ord(c) < 32 for c in who)
            or not who.strip()):
        raise NotFoundError(f"no customer with {who[:80]!r}: an id or email is at most 320 "
                            "characters of UTF-8 text without control characters")


def _key(email: str) -> str:
    from mailer.core.addresses import email_key  # email-validator and idna: only when asked

    return email_key(email.strip())


def usable_segments(specs: Mapping[str, SegmentSpec],
                    broken_paths: set[str]) -> dict[str, SegmentSpec]:
    """The segments that compile: those whose file has no problem (a cycle or an unknown
    reference is a problem of the file that refers), less those referring to a segment
    left out, directly or not (validate names the problems; the card shows the rest)."""
    usable = {name: spec for name, spec in specs.items() if spec.path not in broken_paths}
    while True:
        dropped = [name for name, spec in usable.items()
                   if not _references(spec.root) <= usable.keys()]
        if not dropped:
            return usable
        for name in dropped:
            del usable[name]


def _references(node: Node) -> set[str]:
    """The segments NODE names in in_segment (not those they name in turn)."""
    if isinstance(node, (All, AnyOf)):
        return set().union(*(_references(item) for item in node.items))
    if isinstance(node, Not):
        return _references(node.item)
    return {node.name} if node.kind == "in_segment" and node.name else set()


# --- the card, from the facts (pure) -------------------------------------------------


def assemble(facts: CardFacts, *, settings: Settings, now: datetime, segments: list[str],
             campaigns: Mapping[str, Campaign], planned: set[tuple[str, str]]) -> Card:
    """The card from the store's FACTS, the segments the customer is in and the
    workspace's campaigns (PLANNED: the customer's (campaign, occurrence) ledger keys)."""
    row = facts.customer
    tz = zone(row.timezone or settings.timezone)
    consent = ConsentEntry(row.consent, row.consent_at, row.consent_source, row.consent_reason)
    stats = stats_of(facts, settings.store.currency)
    stage = stage_of_latest(stats.orders, facts.latest_paid, now=now, rules=settings.stages)
    predictions = None
    if facts.predictions is not None:
        from mailer.mail.context import prediction_fields

        predictions = {"p_alive": None, "expected_orders_90d": None,
                       "predicted_clv_365d": None, "next_order_expected_at": None,
                       "churn_risk": None,
                       **prediction_fields(facts.predictions, settings.store.currency)}
    mailable = (row.consent == Consent.SUBSCRIBED and not facts.suppressed)
    upcoming = waiting_rows(facts.mails, campaigns)
    if mailable:
        from mailer.mail.context import date_value

        dates = {campaign.field: date_value(campaign.field, attributes=row.attributes,
                                            signed_up_at=row.signed_up_at,
                                            first_order_at=stats.first_order_at, tz=tz)
                 for campaign in campaigns.values() if campaign.field is not None}
        upcoming += next_due(campaigns, segments=set(segments), topics=row.topics,
                             birth_date=row.birth_date, tz_name=tz.key,
                             workspace_tz=settings.timezone, now=now, planned=planned,
                             dates={k: v for k, v in dates.items() if v is not None},
                             country=row.country, workspace_country=settings.holidays.country
                             if settings.holidays is not None else None)
    upcoming.sort(key=lambda entry: (entry.at, entry.campaign, entry.occurrence))
    return Card(
        id=row.store_id, email=row.email, profile=profile_of(row, tz.key, now),
        consent=consent, suppressed=facts.suppressed, consent_history=facts.consent_history,
        opt_in=None if row.opt_in_requested_at is None else {
            "source": row.opt_in_source, "requested_at": row.opt_in_requested_at,
            "confirmation_queued_at": row.opt_in_sent_at,
            "reminder_queued_at": row.opt_in_reminded_at,
            "confirmed_at": row.opt_in_confirmed_at, "ip": row.opt_in_ip},
        stats=stats, stage=str(stage), stage_history=facts.stage_history,
        predictions=predictions, predictions_reason=facts.predictions_reason,
        recommendations=[product.as_json() for product in facts.recommendations],
        segments=segments, mails=[mail_of(m, facts.campaign_sources) for m in facts.mails],
        upcoming=upcoming, events=[event_of(e) for e in facts.events], now=now)


def profile_of(row: Any, tz_name: str, now: datetime) -> dict[str, Any]:
    """The §4.4 customer fields, every key (None when missing); the time zone the
    customer's own or the workspace's, as templates see it."""
    from mailer.mail.context import age

    values = {name: getattr(row, name, None) for name in PROFILE_FIELDS if name != "age"}
    values["timezone"] = tz_name
    values["age"] = (age(row.birth_date, now.astimezone(zone(tz_name)).date())
                     if row.birth_date is not None else None)
    return {name: values[name] for name in PROFILE_FIELDS}


def stats_of(facts: CardFacts, currency: str) -> Stats:
    """The stats of §4.4 plus days_between_orders: the mean gap between consecutive paid
    orders, which is the span from the first to the last divided by the gaps in it."""
    paid = facts.stats
    if paid is None:
        return Stats(favourite_category=facts.favourite_category)
    places = exponent(currency)
    spent = Decimal(paid.spent_minor).scaleb(-places)
    average = ((spent / paid.counted).quantize(Decimal(1).scaleb(-places))
               if paid.counted else None)
    gaps = None
    if paid.orders >= 2:
        span = (paid.last_at - paid.first_at).total_seconds() / 86400
        gaps = round(span / (paid.orders - 1), 1)
    return Stats(paid.orders, spent, average, paid.first_at, paid.last_at,
                 facts.favourite_category, gaps)


def subject_of(source: str | None, variant: int, occurrence: str) -> str | None:
    """The subject line of VARIANT as the campaign file SOURCE wrote it (its template,
    not rendered); a promotion's reminder has its own."""
    if source is None:
        return None
    from mailer.config.yamlsrc import load_yaml
    from mailer.core.errors import ConfigError

    try:
        data = load_yaml(source, "campaign")
    except ConfigError:
        return None
    if not isinstance(data, Mapping):
        return None
    subjects: Any = data.get("subject")
    reminder = data.get("reminder")
    if occurrence == "reminder" and isinstance(reminder, Mapping) and reminder.get("subject"):
        subjects = reminder.get("subject")
    if isinstance(subjects, str):
        return subjects
    if isinstance(subjects, list) and subjects:
        chosen = subjects[variant % len(subjects)]
        return chosen if isinstance(chosen, str) else None
    return None


def mail_of(row: MailRow, sources: Mapping[int, str]) -> Mail:
    return Mail(row.campaign, row.occurrence,
                subject_of(sources.get(row.campaign_version_id), row.subject_variant,
                           row.occurrence),
                row.status, row.planned_at, row.sent_at, row.opened, row.clicked)


def event_of(row: EventRow) -> CardEvent:
    """An event with what it says in one line: a click's URL, a rating's score (and its
    comment), a mail's survey answers, the status of a bounce or complaint, what a
    resubscription replaced."""
    detail: str | None = row.comment
    if row.kind == "click":
        detail = row.url
    elif row.kind == "rating":
        detail = f"{row.score}/5" + (f": {row.comment}" if row.comment else "")
    return CardEvent(row.kind, row.at, row.campaign, detail)


def waiting_rows(mails: Iterable[MailRow], campaigns: Mapping[str, Campaign]) -> list[Upcoming]:
    """The ledger rows still to go out, at their release (or next attempt)."""
    found = []
    for mail in mails:
        if mail.status in WAITING:
            at = mail.next_attempt_at if mail.status == "deferred" and mail.next_attempt_at \
                else mail.send_after
            spec = campaigns.get(mail.campaign)
            found.append(Upcoming(mail.campaign, spec.trigger if spec else "", mail.occurrence,
                                  at, mail.status))
    return found


def next_due(campaigns: Mapping[str, Campaign], *, segments: set[str],
             topics: list[str] | None, birth_date: date | None, tz_name: str,
             workspace_tz: str, now: datetime, planned: set[tuple[str, str]],
             dates: Mapping[str, date] | None = None, country: str | None = None,
             workspace_country: str | None = None) -> list[Upcoming]:
    """The next occurrence of each birthday, once, schedule, promotion, date and holiday
    campaign (DATES: the customer's date of each field, where they have one; COUNTRY: the
    customer's; WORKSPACE_COUNTRY: mailer.yaml's) that
    is not in the ledger yet, for a customer who can be mailed, is in the campaign's
    segment now (membership is as of now, not as of the due date) and wants its topic.
    after_order and stage_change campaigns wait for an order or a recorded change: none."""
    found = []
    for slug in sorted(campaigns):
        campaign = campaigns[slug]
        if campaign.trigger not in UPCOMING_TRIGGERS or campaign.segment not in segments:
            continue
        if topics is not None and campaign.topic not in topics:
            continue
        mine = {occurrence for name, occurrence in planned if name == slug}
        if campaign.trigger == "holiday":
            due = next_holiday(campaign, country=country, workspace_country=workspace_country,
                               tz_name=tz_name, now=now, planned=mine.__contains__)
        else:
            due = _next_occurrence(campaign, birth_date=birth_date, tz_name=tz_name,
                                   workspace_tz=zone(workspace_tz), now=now,
                                   planned=mine.__contains__, dates=dates or {})
        if due is not None:
            found.append(Upcoming(slug, campaign.trigger, due[0], due[1], "due"))
    return found


def _next_occurrence(campaign: Campaign, *, birth_date: date | None, tz_name: str,
                     workspace_tz: ZoneInfo, now: datetime,
                     planned: Callable[[str], bool],
                     dates: Mapping[str, date]) -> tuple[str, datetime] | None:
    """(occurrence, when it is due) of CAMPAIGN's next occurrence not PLANNED yet: the
    one due now, else the next one (planning.triggers' rules)."""
    if campaign.trigger == "birthday" and birth_date is not None:
        return next_birthday(birth_date, campaign.send_time, tz_name, now, planned)
    if campaign.trigger == "date" and campaign.field is not None and campaign.field in dates:
        return next_date(dates[campaign.field], campaign, tz_name, now, planned)
    if campaign.trigger == "once" and campaign.at is not None:
        at = as_local(campaign.at, workspace_tz)
        return ("once", at) if now < at + campaign.grace and not planned("once") else None
    if campaign.trigger == "schedule" and campaign.schedule is not None:
        cron = parse_cron(campaign.schedule)
        fire = latest_fire(cron, now, workspace_tz)
        if fire is None or now >= fire + campaign.grace or planned(f"cron:{iso_z(fire)}"):
            fire = next_fire(cron, now, workspace_tz)
        return None if fire is None else (f"cron:{iso_z(fire)}", fire)
    if campaign.trigger == "promotion" and campaign.starts and campaign.ends:
        live = now < as_local(campaign.ends, workspace_tz) and not planned("main")
        return ("main", as_local(campaign.starts, workspace_tz)) if live else None
    return None


def next_holiday(campaign: Campaign, *, country: str | None, workspace_country: str | None,
                 tz_name: str, now: datetime,
                 planned: Callable[[str], bool]) -> tuple[str, datetime] | None:
    """(occurrence, send_at on the day it is due) of the customer's next occasion of a
    holiday campaign within a year whose local day has not ended by NOW, by the
    planner's rules (mailer.planning.planner.holiday_queries): a fixed date under the
    customer's country (else the workspace's, else ZZ); with `country: true`, a public
    holiday of the customer's country, else of the workspace's."""
    tz = zone(tz_name)
    today = now.astimezone(tz).date()
    own = country_code(country)
    calendar = own or workspace_country
    for offset in range(367):
        day = today + timedelta(days=offset)
        holiday = holiday_date(day, campaign.days_before or 0)
        if is_fixed_occasion(holiday, campaign.dates):
            code = own or workspace_country or UNKNOWN
        elif campaign.country and calendar is not None and holidays_on(
                holiday, only=campaign.only or (), except_=campaign.except_ or (),
                countries=(calendar,)):
            code = calendar
        else:
            continue
        occurrence = holiday_occurrence(code, holiday)
        end = localize(datetime.combine(day + timedelta(days=1), time()), tz)
        if end > now and not planned(occurrence):
            return occurrence, localize(datetime.combine(day, campaign.send_time), tz)
    return None


def next_date(value: date, campaign: Campaign, tz_name: str, now: datetime,
              planned: Callable[[str], bool]) -> tuple[str, datetime] | None:
    """(occurrence, send_at on its day) of a date campaign's next mail for a customer
    whose date is VALUE: once on VALUE + offset, or (yearly) on each anniversary from
    year 1 + offset, whose local day has not ended by NOW and which is not PLANNED."""
    tz = zone(tz_name)
    offset = timedelta(days=campaign.offset_days)
    if campaign.yearly:
        first = max(value.year + 1, (now.astimezone(tz).date() - offset).year - 1)
        marks = [anniversary_in(value, year) for year in range(first, first + 4)]
    else:
        marks = [value]
    for marked in marks:
        day = marked + offset
        occurrence = date_occurrence(campaign.field or "", marked)
        end = localize(datetime.combine(day + timedelta(days=1), time()), tz)
        if end > now and not planned(occurrence):
            return occurrence, localize(datetime.combine(day, campaign.send_time), tz)
    return None


def next_birthday(born: date, send_at: time, tz_name: str, now: datetime,
                  planned: Callable[[str], bool]) -> tuple[str, datetime] | None:
    """(occurrence, send_at on that day) of the customer's next birthday whose local day
    has not ended by NOW and whose `birthday:YYYY` is not PLANNED (a predicate); 29
    February is celebrated on 28 February in other years (planning.triggers)."""
    tz = zone(tz_name)
    today = now.astimezone(tz).date()
    wanted = f"{born:%m-%d}"
    for offset in range(366 * 2 + 1):
        day = today + timedelta(days=offset)
        if wanted not in birthday_keys(day) or planned(f"birthday:{day.year}"):
            continue
        end = localize(datetime.combine(day + timedelta(days=1), time()), tz)
        if end > now:
            return f"birthday:{day.year}", localize(datetime.combine(day, send_at), tz)
    return None
