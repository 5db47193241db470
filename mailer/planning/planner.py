"""Planning (DESIGN §4.2, §4.3): who gets which mail of a campaign, and when.

`plan` finds what is due at `now` (the trigger table in mailer.planning.triggers), reads
the candidates in batches of store ids, decides each with mailer.planning.policy and, when
asked to write, inserts ledger rows (status `queued`) with their campaign
version, and appends the counts per exclusion reason to the plan runs.
Exclusions are reported, never stored as deliveries. A dry run (`mailer plan`)
computes exactly the same and writes nothing. The ledger's unique key
(campaign, occurrence, customer) makes a second row for the same mail
impossible, also when two planners race: a conflicting insert is skipped and
counted as `already_sent`.
"""

from __future__ import annotations

import logging
import secrets
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from functools import cache
from typing import Any

from mailer.config.campaign import Campaign
from mailer.config.conditions import SegmentSpec
from mailer.config.settings import Cap, Settings, Sunset
from mailer.core.addresses import has_control_character
from mailer.core.clock import as_local, zone
from mailer.core.folding import fold
from mailer.core.occurrences import is_reminder, stock_occurrence
from mailer.core.states import ORDERED, OUT_OF_STOCK, PAUSED_CAMPAIGN
from mailer.mail.message import new_message_id
from mailer.mail.version import first_intro
from mailer.planning.frozen import FrozenStore, send_prior
from mailer.planning.policy import (
    Facts,
    Ranked,
    allowed_hours,
    decide,
    in_test_group,
    winning_variant,
)
from mailer.planning.runcounts import RunCounts, RunTopics
from mailer.planning.send_hour import (
    LOOKBACK,
    NO_ENGAGEMENT,
    by_customer,
    ranked_hours,
)
from mailer.planning.triggers import (
    CHECKOUT_EXPIRY,
    SIGNUP,
    SIGNUP_EXPIRY,
    STOCK_EXPIRY,
    after_order_window,
    anniversary_dates,
    birthday_keys,
    checkout_reminder_window,
    checkout_window,
    date_marked,
    date_occurrence,
    day_windows,
    holiday_date,
    holiday_occurrence,
    is_fixed_occasion,
    local_day,
    once_due,
    parse_cron,
    promotion_due,
    reminder_due,
    restock_window,
    schedule_due,
    signup_window,
    stage_change_days,
    sunset_due,
)
from mailer.segments.compiler import (
    CUSTOMERS,
    CandidateQuery,
    CompiledSegment,
    Scope,
    TimedCandidateQuery,
    after_order_members,
    attribute_date_members,
    birthday_members,
    checkout_members,
    checkout_reminder_members,
    due_members,
    holiday_members,
    in_plan_order,
    members_query,
    signup_members,
    stock_alert_members,
    sunset_members,
    timestamp_date_members,
)
from mailer.segments.runner import compiled, memberships
from mailer.store import coupons, events, ledger
from mailer.store.customers import (
    Addressee,
    addressees_by_id,
    candidate_pages,
    paid_between,
    suppressed_keys,
    time_zones,
)
from mailer.store.db import Connection, Engine
from mailer.store.events import human_hours
from mailer.store.feeds.stock import restocked_between
from mailer.store.insight.stages import changes_into
from mailer.store.operator.pauses import is_paused
from mailer.store.versions import record_plan_run, stored_version_id

log = logging.getLogger("mailer.plan")
BATCH = 1000
OCCURRENCE_LENGTH = 255  # deliveries.occurrence
ANALYZE_AFTER = 5000  # planned rows after which PostgreSQL's statistics are refreshed
PERSONAL_CAP_SPAN = timedelta(days=7)  # "at most N mails a week" from the preference centre


@dataclass(frozen=True)
class Candidate:
    customer_id: int
    occurrence: str
    expires: datetime
    reason: str = ""  # set: excluded before any fact is read (no_holidays, no_date)


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
    cap: str = ""  # "1 per 24h" when the reason is frequency_cap


@dataclass
class PlanResult:
    """What a planning run decided. The per-customer lists are kept only when asked
    (`keep`): a million-recipient plan needs its counts, not a million objects."""

    campaign: str
    now: datetime
    keep: bool = True
    planned: list[Planned] = field(default_factory=list)
    excluded: list[Excluded] = field(default_factory=list)
    tally: Counter[tuple[str, str]] = field(default_factory=Counter)  # (occurrence, reason)

    def counts(self) -> dict[str, int]:
        """Exclusions per reason."""
        found: Counter[str] = Counter()
        for (_, reason), count in self.tally.items():
            if reason != PLANNED:
                found[reason] += count
        return dict(found)

    _planned: int = 0  # the PLANNED counts of TALLY summed: the planner asks every row

    @property
    def planned_count(self) -> int:
        return self._planned

    def add(self, item: Planned | Excluded) -> None:
        reason = item.reason if isinstance(item, Excluded) else PLANNED
        self.tally[(item.occurrence, reason)] += 1
        if reason == PLANNED:
            self._planned += 1
        if self.keep:
            if isinstance(item, Excluded):
                self.excluded.append(item)
            else:
                self.planned.append(item)

    def lose(self, lost: set[tuple[int, str]]) -> None:
        """Planned mails another planner wrote first: they count as already_sent."""
        for _, occurrence in lost:
            self.tally[(occurrence, PLANNED)] -= 1
            self._planned -= 1
            self.tally[(occurrence, "already_sent")] += 1
        if self.keep:
            gone = [p for p in self.planned if (p.customer_id, p.occurrence) in lost]
            self.planned = [p for p in self.planned if (p.customer_id, p.occurrence) not in lost]
            self.excluded += [Excluded(p.customer_id, p.id, p.email, p.occurrence,
                                       "already_sent") for p in gone]


PLANNED = ""  # the tally's reason for a planned mail


# --- what is due --------------------------------------------------------------------------


def candidates(engine: Engine, specs: dict[str, SegmentSpec], slug: str, campaign: Campaign,
               scope: Scope, settings: Settings,
               frozen: FrozenStore | None = None) -> Iterator[list[Candidate]]:
    """Batches of due candidates, ordered by store id within each occurrence. FROZEN (a
    forecast's fixed store data) leaves out the per-zone queries that cannot find anyone;
    the segment is compiled only for a query that runs (most sweeps run none)."""
    now, tz = scope.now, zone(settings.timezone)
    segment = cache(lambda: compiled(specs, campaign.segment, scope))
    # (customer id, occurrence), expiry, the reason all its rows are excluded ("": none).
    # An expiry that is a span counts from each row's third column (signup's
    # signed_up_at): one expiry per row.
    queries: list[tuple[CandidateQuery, datetime] | tuple[CandidateQuery, datetime, str]
                  | tuple[TimedCandidateQuery, timedelta]
                  | tuple[TimedCandidateQuery, timedelta, str]] = []
    trigger = campaign.trigger
    zones = (frozen.zones if frozen is not None else
             sorted(time_zones(engine) | {settings.timezone})) \
        if trigger in ("birthday", "after_order", "stage_change", "holiday", "date") else []
    if trigger == "schedule" and campaign.schedule:
        due = schedule_due(parse_cron(campaign.schedule), campaign.grace, now, tz)
        if due is not None:
            queries.append((due_members(segment(), due.occurrence), due.expires))
    elif trigger == "once" and campaign.at is not None:
        due = once_due(as_local(campaign.at, tz), campaign.grace, now)
        if due is not None:
            queries.append((due_members(segment(), due.occurrence), due.expires))
    elif trigger == "promotion" and campaign.starts is not None and campaign.ends is not None:
        starts, ends = as_local(campaign.starts, tz), as_local(campaign.ends, tz)
        if campaign.reminder is not None and campaign.reminder.before_end is not None:
            reminder = reminder_due(ends, campaign.reminder.before_end, now)
            if reminder is not None:
                # To those whose main mail went out (or probably did), not to the segment.
                queries.append((ledger.main_recipients(slug, reminder.occurrence),
                                reminder.expires))
        due = promotion_due(starts, ends, now)
        if due is not None:
            queries.insert(0, (due_members(segment(), due.occurrence), due.expires))
    elif trigger in ("birthday", "after_order"):
        # every zone customers live in (the workspace's for those without one)
        for name in zones:
            day = local_day(name, campaign.send_time, now)
            if day is None:
                continue
            if trigger == "birthday":
                keys = birthday_keys(day.day)
                if frozen is not None and not frozen.may_have_birthdays(name, keys):
                    continue
                queries.append((birthday_members(segment(), name, settings.timezone, keys,
                                                 f"birthday:{day.day.year}"), day.end))
            else:
                assert campaign.after is not None
                start, end = after_order_window(day, campaign.after)
                if frozen is not None and not frozen.may_have_orders(name, start, end):
                    continue
                queries.append((after_order_members(segment(), name, settings.timezone,
                                                    start, end), day.end))
    elif trigger == "holiday":
        # one query for the zones sharing a local day and its end (most of a sweep's)
        days: dict[tuple[date, datetime], list[str]] = {}
        for name in zones:
            day = local_day(name, campaign.send_time, now)
            if day is not None:
                days.setdefault((day.day, day.end), []).append(name)
        for (today, end), names in sorted(days.items()):
            queries += holiday_queries(segment, campaign, settings, names, today, end,
                                       frozen)
    elif trigger == "date" and campaign.field is not None:
        queries += date_queries(segment, campaign, settings, zones, now, frozen)
    elif trigger == "stage_change" and campaign.to is not None:
        members = cache(lambda: members_query(segment(), CUSTOMERS.c.id))
        for name in zones:
            for change in stage_change_days(name, campaign.to, now):
                if frozen is not None and not frozen.may_have_changes(
                        name, campaign.to, campaign.from_, change.start, change.end, now):
                    continue
                queries.append((changes_into(members(), campaign.to, campaign.from_,
                                             zone_name=name, default_zone=settings.timezone,
                                             start=change.start, end=change.end, now=now,
                                             occurrence=change.occurrence), change.expires))
    elif trigger == "sunset" and settings.policy.sunset is not None:
        rule = settings.policy.sunset
        due = sunset_due(now, tz)
        queries.append((sunset_members(segment(), slug, now=now, after=rule.after,
                                       min_mails=rule.min_mails, occurrence=due.occurrence),
                        due.expires))
    elif trigger == "signup":
        start, end = signup_window(now, campaign.delay)
        queries.append((signup_members(segment(), start, end, SIGNUP),
                        campaign.delay + SIGNUP_EXPIRY))
    elif trigger == "abandoned_checkout":
        created_after, created_by = checkout_window(now, campaign.delay)
        for ordered, reason in ((False, ""), (True, ORDERED)):
            queries.append((checkout_members(segment(), created_by=created_by,
                                             created_after=created_after, now=now,
                                             ordered=ordered), CHECKOUT_EXPIRY, reason))
        if campaign.reminder is not None and campaign.reminder.after is not None:
            # The reminder: to those whose first mail of this checkout went out.
            created_after, sent_by = checkout_reminder_window(now, campaign.reminder.after)
            for ordered, reason in ((False, ""), (True, ORDERED)):
                queries.append((checkout_reminder_members(
                    slug, sent_by=sent_by, created_after=created_after, now=now,
                    ordered=ordered), CHECKOUT_EXPIRY, reason))
    elif trigger == "back_in_stock":
        start, end = restock_window(now)
        with engine.connect() as conn:
            restocks = restocked_between(conn, start, end)
        for restock in restocks:  # a few products a day: one query each
            occurrence = stock_occurrence(restock.sku, restock.restocked_at, tz)
            if len(occurrence) > OCCURRENCE_LENGTH:  # a sku of 240 characters and more
                log.warning("back_in_stock: sku %.40r… is too long for an occurrence",
                            restock.sku)
                continue
            # Sold out again since: its alerts' customers are told why, and wait for the
            # next restock (their alerts stay open).
            queries.append((stock_alert_members(segment(), restock.sku, occurrence),
                            restock.restocked_at + STOCK_EXPIRY,
                            "" if restock.in_stock else OUT_OF_STOCK))
    for query, expires, *excluded in queries:
        reason = excluded[0] if excluded else ""
        for page in candidate_pages(engine, in_plan_order(query), BATCH):
            yield [Candidate(customer_id, occurrence, row_expiry(expires, expires_from),
                             reason)
                   for customer_id, occurrence, expires_from in page]


def row_expiry(expires: datetime | timedelta, expires_from: datetime | None) -> datetime:
    """A query's one expiry, or (a span) the row's own: its moment + the span."""
    if isinstance(expires, datetime):
        return expires
    assert expires_from is not None, "a per-row expiry needs the query's third column"
    return expires_from + expires


@cache
def _known() -> tuple[str, ...]:
    """The supported countries as the folded column holds them. The holiday data is
    imported on first use: loading every country's calendar took a fifth of a second of
    each `mailer send` start that plans no holiday campaign."""
    from mailer.core.holidays import COUNTRIES

    return tuple(sorted(fold(code) for code in COUNTRIES))


@cache
def _known_set() -> frozenset[str]:
    return frozenset(_known())


def holiday_queries(compiled: Callable[[], CompiledSegment], campaign: Campaign, settings: Settings,
                    zone_names: list[str], today: date, expires: datetime,
                    frozen: FrozenStore | None = None,
                    ) -> list[tuple[CandidateQuery, datetime, str]]:
    """`holiday` in the zones whose local day is TODAY and ends at EXPIRES: the members
    with an occasion `days_before` ahead (their country's public holiday, else the
    workspace's, or a fixed date), and, with `country: true`, those without any calendar
    (`no_holidays`). FROZEN leaves out a query no customer of these zones can meet."""
    from mailer.core.holidays import UNKNOWN, holidays_on

    known = _known()

    def may(countries: tuple[str, ...], others: str | None) -> bool:
        return frozen is None or frozen.may_have_holidays(
            zone_names, countries, _known_set(), others is not None)

    holiday = holiday_date(today, campaign.days_before or 0)
    fixed = is_fixed_occasion(holiday, campaign.dates)
    workspace = settings.holidays.country if settings.holidays is not None else None
    found = holidays_on(holiday, only=campaign.only or (), except_=campaign.except_ or ()) \
        if campaign.country and not fixed else {}
    countries = known if fixed else tuple(sorted(fold(code) for code in found))
    others = None
    if fixed or (workspace is not None and workspace in found):
        others = holiday_occurrence(workspace or UNKNOWN, holiday)
    queries = [] if (not countries and others is None) or not may(countries, others) else [
        (holiday_members(compiled(), zone_names, settings.timezone, known=known,
                         countries=countries, holiday=holiday, others=others), expires, "")]
    if campaign.country and workspace is None and not fixed and may((), UNKNOWN):
        queries.append((holiday_members(compiled(), zone_names, settings.timezone,
                                        known=known, countries=(), holiday=holiday,
                                        others=holiday_occurrence(UNKNOWN, holiday)),
                        expires, NO_HOLIDAYS))
    return queries


NO_HOLIDAYS = "no_holidays"


def date_queries(compiled: Callable[[], CompiledSegment], campaign: Campaign, settings: Settings,
                 zones: list[str], now: datetime, frozen: FrozenStore | None = None,
                 ) -> list[tuple[CandidateQuery, datetime, str]]:
    """`date` in each zone whose send_at has passed today: the members whose field's date
    (yearly: an anniversary of it) is today − offset in their zone, `date:<field>:<year>`,
    expiring at the end of that local day; for an attribute also those whose value is no
    date (`no_date`). A timestamp's local date depends on the zone: one query per zone;
    an attribute's date is as written: one per group of zones sharing a local day. FROZEN
    leaves out the queries that cannot find anyone."""
    field = campaign.field
    assert field is not None
    days: dict[tuple[date, datetime], list[str]] = {}
    for name in zones:
        day = local_day(name, campaign.send_time, now)
        if day is not None:
            days.setdefault((day.day, day.end), []).append(name)
    queries: list[tuple[CandidateQuery, datetime, str]] = []
    for (today, end), names in sorted(days.items()):
        marked = date_marked(today, campaign.offset_days)
        occurrence = date_occurrence(field, marked)
        if field.startswith("attributes."):
            name = field.removeprefix("attributes.")
            month_days = birthday_keys(marked) if campaign.yearly else None
            for dated, reason in ((True, ""), (False, NO_DATE)):
                if frozen is not None and not any(
                        frozen.may_have_dates(z, field, marked, bool(campaign.yearly)) if dated
                        else frozen.may_have_undated(z, field) for z in names):
                    continue
                queries.append((attribute_date_members(
                    compiled(), names, settings.timezone, name=name, marked=marked,
                    month_days=month_days, occurrence=occurrence, dated=dated), end, reason))
            continue
        marked_days = anniversary_dates(marked) if campaign.yearly else [marked]
        for name in names:
            if frozen is not None and not frozen.may_have_dates(name, field, marked,
                                                                bool(campaign.yearly)):
                continue
            queries.append((timestamp_date_members(
                compiled(), name, settings.timezone, field=field,
                windows=day_windows(marked_days, zone(name)), occurrence=occurrence,
                now=now), end, ""))
    return queries


NO_DATE = "no_date"


# --- the facts about a batch -----------------------------------------------------------------


def batch_facts(conn: Connection, slug: str, campaign: Campaign, batch: list[Candidate],
           now: datetime, caps_span: timedelta, run: RunCounts,
           starts: datetime | None, *, topics: frozenset[str] = frozenset(),
           run_topics: RunTopics | None = None,
           sunset: Sunset | None = None,
           ) -> tuple[dict[int, Addressee], dict[tuple[int, str], Facts]]:
    """The batch's customers by id, and the facts of each candidate mail. TOPICS: those
    the caps name (their rows are counted apart); RUN_TOPICS: this run's planned mails
    per (customer, topic); SUNSET: policy.sunset, whose silent customers only a
    `trigger: sunset` campaign mails."""
    ids = sorted({c.customer_id for c in batch})
    people = addressees_by_id(conn, ids)
    if any(p.weekly_cap for p in people.values()):  # personal caps look back a week
        caps_span = max(caps_span, PERSONAL_CAP_SPAN)
    suppressed = suppressed_keys(conn, [p.email_key for p in people.values()])
    existing = ledger.planned_pairs(conn, slug, sorted({c.occurrence for c in batch}), ids)
    plans: dict[int, list[tuple[datetime, str | None]]] = {}
    if topics:  # the same one query, with each row's topic
        plans = ledger.live_plans(conn, ids, now - caps_span, now)
        recent = {customer_id: [planned for planned, _ in rows]
                  for customer_id, rows in plans.items()}
    else:
        recent = ledger.live_plan_times(conn, ids, now - caps_span, now)
    in_run = run_topics if run_topics is not None else RunTopics()
    cooling: set[int] = set()
    if campaign.cooldown is not None:
        cooling = ledger.with_live_plans(conn, slug, ids, now - campaign.cooldown, now)
    ordered: set[int] = set()
    if starts is not None:
        ordered = paid_between(conn, ids, starts, now)
    silent = sunset_ids(conn, ids, now, sunset) \
        if sunset is not None and campaign.trigger != "sunset" else set()
    facts = {}
    for candidate in batch:
        person = people[candidate.customer_id]
        facts[(candidate.customer_id, candidate.occurrence)] = Facts(
            consent=person.consent, suppressed=person.email_key in suppressed,
            valid_address=plausible_address(person.email),
            already_planned=(candidate.customer_id, candidate.occurrence) in existing,
            in_cooldown=candidate.customer_id in cooling,
            # mails planned earlier in this run count as planned now
            recent=(*recent.get(candidate.customer_id, ()),
                    *((now,) * run[candidate.customer_id])),
            ordered_since_start=candidate.customer_id in ordered,
            paused=person.paused_until is not None and person.paused_until > now,
            topic_unwanted=person.topics is not None and campaign.topic not in person.topics,
            personal_caps=(Cap(max=person.weekly_cap, per=PERSONAL_CAP_SPAN),)
            if person.weekly_cap else (),
            by_topic={topic: (*(planned for planned, of in plans.get(candidate.customer_id, ())
                                if of == topic),
                              *((now,) * in_run[(candidate.customer_id, topic)]))
                      for topic in topics},
            topic=campaign.topic, sunset=candidate.customer_id in silent)
    return people, facts


# --- the right hour (`send_at: best`) -------------------------------------------------------


def best_hours(conn: Connection, campaign: Campaign, people: dict[int, Addressee],
               settings: Settings, prior: tuple[float, ...], now: datetime
               ) -> dict[int, Ranked]:
    """Each of the batch's customers' allowed local hours, best first (in groups that
    tie): the campaign's
    window less the quiet hours, ranked by their own engagement and the store's PRIOR
    (one query for the batch)."""
    zones = {customer_id: zone(person.timezone or settings.timezone)
             for customer_id, person in people.items()}
    own = by_customer(human_hours(conn, sorted(people), now - LOOKBACK, now), zones)
    allowed = allowed_hours(campaign.send_window.hours(), settings.policy.quiet_hours)
    return {customer_id: ranked_hours(own.get(customer_id, NO_ENGAGEMENT), prior, allowed)
            for customer_id in people}
def sunset_ids(conn: Connection, ids: list[int], now: datetime, rule: Sunset) -> set[int]:
    """The customers among IDS that policy.sunset RULE holds back at NOW: their last sign
    of life is before now − after (one exactly that long ago is not), and their
    min_mails-th latest marketing mail went out after it. One query each for the batch."""
    last = events.last_signs(conn, ids, now)
    nth = ledger.nth_latest_sent(conn, ids, rule.min_mails, now)
    return {customer_id for customer_id, sent in nth.items()
            if customer_id in last and last[customer_id] < now - rule.after
            and sent > last[customer_id]}


# --- planning ---------------------------------------------------------------------------------


def cap_label(cap: Cap) -> str:
    """`1 per 24h`, `1 per 7d (promotions)`: the words plan --json and forecast use."""
    return cap.label()


def plausible_address(email: str) -> bool:
    """A cheap check at plan time: addresses were fully validated at import, so this
    only catches rows changed around the importer (a missing @, spaces, controls)."""
    local, at, domain = email.rpartition("@")
    return bool(at and local and "." in domain and " " not in email
                and not has_control_character(email))


def plan(engine: Engine, specs: dict[str, SegmentSpec], slug: str, campaign: Campaign, *,
         scope: Scope, settings: Settings, version: dict[str, Any] | None = None,
         run: RunCounts | None = None,
         run_topics: RunTopics | None = None, keep: bool = True,
         choose_intros: bool = True, stop: Callable[[], bool] | None = None,
         frozen: FrozenStore | None = None, record_runs: bool = True) -> PlanResult:
    """Plan what is due at scope.now. With VERSION (the definition to store), rows are
    written; without, nothing is (the dry run). RUN carries the planned times of
    mails planned earlier in the same planning run, so caps see them (RUN_TOPICS the
    same per customer and topic, for the caps that name a topic). Written rows
    carry the intro segment each customer is in (CHOOSE_INTROS; the forecast skips it).
    STOP, asked between batches, ends the plan early (a stopping daemon): what was
    written stays, and the next planning run goes on from there. FROZEN: the forecast's
    store data, fixed over its sweeps (mailer.planning.frozen). RECORD_RUNS appends the
    plan runs of written rows (the forecast's scratch copy, thrown away, needs none)."""
    now, tz_default = scope.now, zone(settings.timezone)
    result = PlanResult(slug, now, keep=keep)
    planned_in_run = run if run is not None else RunCounts()
    topics_in_run = run_topics if run_topics is not None else RunTopics()
    caps = settings.policy.frequency
    cap_topics = frozenset(cap.topic for cap in caps if cap.topic is not None)
    caps_span = max((cap.per for cap in caps), default=timedelta(0))
    reminder_starts = (as_local(campaign.starts, tz_default)
                       if campaign.reminder is not None and campaign.starts else None)
    variants = len(campaign.subject)
    base: int | None = None  # the campaign's earlier rows: variants continue their count
    version_id: int | None = None
    intro_segments = list(campaign.intros)
    domain = settings.sender.from_address.rsplit("@", 1)[1]  # of the rows' Message-IDs
    segmented = choose_intros and version is not None and \
        any(name != "default" for name in intro_segments)

    winner = campaign.winner if variants > 1 else None
    ab: dict[str, int | None] = {}  # occurrence -> the winning variant, None while testing

    def ab_variant(occurrence: str) -> int | None:
        if occurrence not in ab:
            ab[occurrence] = ab_winner(engine, slug, occurrence, campaign, now)
        return ab[occurrence]

    @cache
    def prior() -> tuple[float, ...]:  # once per run, and only when someone is due
        if frozen is not None and frozen.send_prior is not None:
            return frozen.send_prior
        return send_prior(engine, settings.timezone, now)

    def intro_groups(batch: list[Candidate]) -> dict[int, set[str]]:
        """Intro segments of the batch's customers, looked up only when rows are written."""
        if not segmented:
            return {}
        return memberships(engine, specs, intro_segments,
                           scope, sorted({c.customer_id for c in batch}))

    # An operator's pause holds back every candidate, before any fact is read; asked
    # once per plan (a pause during a plan takes effect at the lease, see ledger.due).
    paused = is_paused(engine, slug)
    for batch in candidates(engine, specs, slug, campaign, scope, settings, frozen):
        if stop is not None and stop():
            break
        if paused:
            _hold_back(engine, batch, result, PAUSED_CAMPAIGN)
            continue
        with engine.begin() as conn:
            if base is None:
                base = ledger.campaign_rows(conn, slug)
            people, facts = batch_facts(conn, slug, campaign, batch, now, caps_span,
                                   planned_in_run, reminder_starts, topics=cap_topics,
                                   run_topics=topics_in_run, sunset=settings.policy.sunset)
            groups = intro_groups(batch)
            hours = best_hours(conn, campaign, people, settings, prior(), now) \
                if campaign.best_hour else {}
            rows = []
            for candidate in batch:
                person = people[candidate.customer_id]
                if candidate.reason:
                    result.add(Excluded(candidate.customer_id, person.store_id, person.email,
                                        candidate.occurrence, candidate.reason))
                    continue
                tz = zone(person.timezone or settings.timezone)
                decision = decide(facts[(candidate.customer_id, candidate.occurrence)],
                                  now=now, caps=caps, tz=tz,
                                  quiet=settings.policy.quiet_hours, expires=candidate.expires,
                                  reminder=candidate.occurrence == "reminder",
                                  hours=hours.get(candidate.customer_id))
                if decision.reason is not None:
                    result.add(Excluded(candidate.customer_id, person.store_id, person.email,
                                        candidate.occurrence, decision.reason,
                                        cap_label(decision.cap) if decision.cap else ""))
                    continue
                assert decision.send_after is not None
                variant = (base + result.planned_count) % variants
                if winner is not None and not is_reminder(candidate.occurrence):
                    chosen = ab_variant(candidate.occurrence)
                    if chosen is not None:
                        variant = chosen
                    elif not in_test_group(slug, candidate.customer_id, winner.test_share):
                        result.add(Excluded(candidate.customer_id, person.store_id,
                                            person.email, candidate.occurrence,
                                            "waiting_for_winner"))
                        continue
                result.add(Planned(candidate.customer_id, person.store_id, person.email,
                                   candidate.occurrence, variant, decision.send_after,
                                   candidate.expires))
                planned_in_run.add(candidate.customer_id)
                topics_in_run.add(candidate.customer_id, campaign.topic)
                rows.append({"campaign": slug, "occurrence": candidate.occurrence,
                             "customer_id": candidate.customer_id, "email": person.email,
                             "subject_variant": variant, "status": "queued", "attempts": 0,
                             "intro": first_intro(intro_segments,
                                                  groups.get(candidate.customer_id, set())),
                             "planned_at": now, "send_after": decision.send_after,
                             "expires_at": candidate.expires, "topic": campaign.topic,
                             # made now, so every attempt (and an `unknown` row) has it
                             "message_id": new_message_id(domain)})
            if version is not None and rows:
                if version_id is None:
                    version_id = stored_version_id(conn, slug, version, now)
                for row in rows:  # the rows are this batch's own: no copies
                    row["campaign_version_id"] = version_id
                written = _insert_rows(conn, rows, result)
                _give_codes(conn, slug, campaign, written, now)
    runs = (sorted({o for o, _ in result.tally}) or ["-"]) if record_runs else []
    analyze = result.planned_count >= ANALYZE_AFTER
    if version is not None and (runs or analyze):
        with engine.begin() as conn:
            for occurrence in runs:
                record_plan_run(conn, slug, occurrence, now,
                                planned=result.tally[(occurrence, PLANNED)],
                                excluded={reason: n for (o, reason), n
                                          in sorted(result.tally.items())
                                          if o == occurrence and reason != PLANNED and n})
            if analyze:  # fresh statistics for the senders
                ledger.refresh_statistics(conn)
    return result


def _hold_back(engine: Engine, batch: list[Candidate], result: PlanResult,
               reason: str) -> None:
    """Exclude the whole batch for REASON."""
    with engine.connect() as conn:
        people = addressees_by_id(conn, sorted({c.customer_id for c in batch}))
    for candidate in batch:
        person = people[candidate.customer_id]
        result.add(Excluded(candidate.customer_id, person.store_id, person.email,
                            candidate.occurrence, reason))


def ab_winner(engine: Engine, slug: str, occurrence: str, campaign: Campaign,
               now: datetime) -> int | None:
    """`winner:` (DESIGN §4.2): None while the test share is being sent (until `after`
    from the occurrence's first planned mail), then the variant with the best rate of
    the chosen metric among its sent mails."""
    assert campaign.winner is not None
    with engine.connect() as conn:
        first = ledger.first_planned_at(conn, slug, occurrence)
        if first is None or now < first + campaign.winner.after:
            return None
        sent = ledger.sent_by_variant(conn, slug, occurrence)
        kind = "click" if campaign.winner.metric == "clicks" else "open"
        engaged = ledger.engaged_by_variant(conn, slug, occurrence, kind)
    return winning_variant(sent, engaged)


def _give_codes(conn: Connection, slug: str, campaign: Campaign,
               written: dict[tuple[int, str], int], now: datetime) -> None:
    """A unique coupon per planned mail, and a stable referral code per customer. Codes
    are random, so two can meet (at a million coupons of 40 bits, one pair did): a code
    already taken is drawn again."""
    if campaign.coupon is not None and written:
        coupon = campaign.coupon
        owed = {delivery_id: customer_id for (customer_id, _), delivery_id in written.items()}
        for _ in range(DRAWS):
            if not owed:
                break
            prefix, expires = coupon.prefix.upper(), now + coupon.valid_for
            rows = [{"code": f"{prefix}-{code}", "customer_id": customer_id,
                     "campaign": slug, "delivery_id": delivery_id, "value": coupon.value,
                     "expires_at": expires}
                    for (delivery_id, customer_id), code
                    in zip(sorted(owed.items()), _codes(len(owed)), strict=True)]
            for delivery_id in coupons.insert_coupons(conn, rows):
                owed.pop(delivery_id, None)
        if owed:
            raise RuntimeError(f"no free coupon code after {DRAWS} draws")
    if campaign.referral is not None and written:
        ids = sorted({customer_id for customer_id, _ in written})
        missing = coupons.without_referral_code(conn, ids)
        codes = _fresh_codes(conn, len(missing))
        for customer_id, code in zip(missing, codes, strict=True):
            coupons.give_referral_code(conn, customer_id, code)


DRAWS = 5


def _fresh_codes(conn: Connection, count: int) -> list[str]:
    """COUNT referral codes that no customer has yet."""
    codes: set[str] = set()
    for _ in range(DRAWS):
        wanted = set(_codes(count - len(codes)))
        taken = coupons.taken_referral_codes(conn, sorted(wanted))
        codes |= wanted - taken
        if len(codes) >= count:
            break
    return sorted(codes)[:count]


def _code() -> str:
    """10 characters from 32 unambiguous ones: 50 bits, unguessable for a coupon (five
    random bits per character, drawn at once: secrets.choice per character cost 30 µs)."""
    return _codes(1)[0]


def _codes(count: int) -> list[str]:
    """COUNT codes as _code draws them, from one read of the system's randomness (a
    read per code was one system call per planned mail)."""
    pool = secrets.token_bytes(7 * count)
    found = []
    for start in range(0, 7 * count, 7):
        bits = int.from_bytes(pool[start:start + 7], "big") >> 6
        found.append("".join(_ALPHABET[(bits >> shift) & 31] for shift in range(0, 50, 5)))
    return found


_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"


def _insert_rows(conn: Connection, rows: list[dict[str, Any]],
                 result: PlanResult) -> dict[tuple[int, str], int]:
    """Insert ledger rows; one another planner wrote first is skipped as already_sent.
    Returns the ids of the rows written, by (customer id, occurrence)."""
    written = ledger.insert_planned(conn, rows)
    lost = {(row["customer_id"], row["occurrence"]) for row in rows} - set(written)
    if lost:
        result.lose(lost)
    return written


def plan_due(engine: Engine, specs: dict[str, SegmentSpec], campaigns: dict[str, Campaign], *,
             scope: Scope, settings: Settings,
             versions: dict[str, dict[str, Any]] | None = None,
             keep: bool = True, choose_intros: bool = True,
             stop: Callable[[], bool] | None = None,
             frozen: FrozenStore | None = None, record_runs: bool = True) -> list[PlanResult]:
    """One planning run: every campaign, higher priority first, sharing the caps' view
    of what this run has planned. With VERSIONS (definitions by campaign), rows are
    written; a queued mail is never withdrawn for a later one."""
    run, run_topics = RunCounts(), RunTopics()
    order = sorted(campaigns, key=lambda slug: (-campaigns[slug].priority, slug))
    return [plan(engine, specs, slug, campaigns[slug], scope=scope, settings=settings,
                 version=versions[slug] if versions is not None else None, run=run,
                 run_topics=run_topics,
                 keep=keep, choose_intros=choose_intros, stop=stop, frozen=frozen,
                 record_runs=record_runs)
            for slug in order if stop is None or not stop()]
