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

import hashlib
import json
import secrets
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import (
    Connection,
    Engine,
    Table,
    any_,
    bindparam,
    column,
    func,
    insert,
    literal,
    select,
    table,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY

from mailer.config.campaign import Campaign
from mailer.config.conditions import SegmentSpec
from mailer.config.settings import Cap, Settings
from mailer.core.addresses import has_control_character
from mailer.core.clock import as_local, format_duration, zone
from mailer.core.states import LIVE, WENT_OUT
from mailer.mail.message import new_message_id
from mailer.mail.version import first_intro
from mailer.planning.policy import Facts, decide, in_test_group, winning_variant
from mailer.planning.triggers import (
    after_order_window,
    birthday_keys,
    local_day,
    once_due,
    parse_cron,
    promotion_due,
    reminder_due,
    schedule_due,
)
from mailer.segments.compiler import CUSTOMERS, Scope, members_query
from mailer.segments.runner import compiled, memberships
from mailer.store.models import (
    CampaignVersion,
    Coupon,
    Customer,
    Delivery,
    Event,
    Order,
    PlanRun,
    Suppression,
    naive_utc,
)

BATCH = 1000
ANALYZE_AFTER = 5000  # planned rows after which PostgreSQL's statistics are refreshed
PERSONAL_CAP_SPAN = timedelta(days=7)  # "at most N mails a week" from the preference centre


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

    @property
    def planned_count(self) -> int:
        return sum(n for (_, reason), n in self.tally.items() if reason == PLANNED)

    def add(self, item: Planned | Excluded) -> None:
        reason = item.reason if isinstance(item, Excluded) else PLANNED
        self.tally[(item.occurrence, reason)] += 1
        if self.keep:
            if isinstance(item, Excluded):
                self.excluded.append(item)
            else:
                self.planned.append(item)

    def lose(self, lost: set[tuple[int, str]]) -> None:
        """Planned mails another planner wrote first: they count as already_sent."""
        for _, occurrence in lost:
            self.tally[(occurrence, PLANNED)] -= 1
            self.tally[(occurrence, "already_sent")] += 1
        if self.keep:
            gone = [p for p in self.planned if (p.customer_id, p.occurrence) in lost]
            self.planned = [p for p in self.planned if (p.customer_id, p.occurrence) not in lost]
            self.excluded += [Excluded(p.customer_id, p.id, p.email, p.occurrence,
                                       "already_sent") for p in gone]


PLANNED = ""  # the tally's reason for a planned mail


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
                        .join(Customer, Customer.id == Delivery.customer_id)
                        .where(Delivery.campaign == slug,
                               Delivery.occurrence == "main",
                               Delivery.status.in_(WENT_OUT)))
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
                         .join(Customer, Customer.id == Order.customer_id)
                         .where(Order.status == "paid", Order.placed_at >= start,
                                Order.placed_at < end, Order.customer_id.in_(members),
                                Order.customer_id.in_(select(Customer.id)
                                                      .where(effective_zone == name))))
                queries.append((query, day.end))
    for query, expires in queries:
        # plan order is store-id order: variants go round-robin in it
        ordered = query.order_by(Customer.store_id, query.selected_columns[1])
        for page in _pages(engine, ordered):
            yield [Candidate(customer_id, occurrence, expires) for customer_id, occurrence in page]


_CANDIDATES = table("plan_candidates", column("seq"), column("customer_id"),
                    column("occurrence"))


def _pages(engine: Engine, query: Any) -> Iterator[list[tuple[int, str]]]:
    """The query's rows, BATCH at a time, in its order, in flat memory. The rows go to a
    temporary table first and are read back page by page, each page a short read: a
    reader held open while the planner writes keeps SQLite's WAL from being
    checkpointed, and planning 1M customers slowed from linear to 200 s."""
    with engine.connect() as conn, conn.begin():
        if conn.dialect.name == "postgresql":  # see mailer.segments.runner.reading
            conn.execute(text("SET LOCAL max_parallel_workers_per_gather = 0"))
        first = [(row[0], row[1]) for row in conn.execute(query.limit(BATCH + 1))]
    if len(first) <= BATCH:  # most sweeps find a handful: no temporary table for those
        if first:
            yield first
        return
    serial = ("INTEGER PRIMARY KEY" if engine.dialect.name == "sqlite"
              else "BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY")
    with engine.connect() as conn:
        with conn.begin():
            if conn.dialect.name == "postgresql":  # see mailer.segments.runner.reading
                conn.execute(text("SET LOCAL max_parallel_workers_per_gather = 0"))
            conn.execute(text(f"CREATE TEMPORARY TABLE IF NOT EXISTS plan_candidates "
                              f"(seq {serial}, customer_id INTEGER NOT NULL, "
                              f"occurrence TEXT NOT NULL)"))
            conn.execute(text("DELETE FROM plan_candidates"))
            conn.execute(insert(_CANDIDATES).from_select(["customer_id", "occurrence"], query))
        last = 0
        while True:
            with conn.begin():
                rows = conn.execute(
                    select(_CANDIDATES.c.seq, _CANDIDATES.c.customer_id,
                           _CANDIDATES.c.occurrence)
                    .where(_CANDIDATES.c.seq > last).order_by(_CANDIDATES.c.seq)
                    .limit(BATCH)).all()
            if not rows:
                break
            last = rows[-1][0]
            yield [(row[1], row[2]) for row in rows]
        with conn.begin():
            conn.execute(text("DROP TABLE IF EXISTS plan_candidates"))


# --- the facts about a batch -----------------------------------------------------------------


def _among(conn: Connection, column: Any, values: list[Any]) -> Any:
    """column IN values. On PostgreSQL one array parameter (= ANY): a thousand separate
    parameters made each batch query cost more to plan than to run."""
    if conn.dialect.name == "postgresql":
        return column == any_(bindparam(None, list(values), type_=ARRAY(column.type)))
    return column.in_(values)


def _facts(conn: Connection, slug: str, campaign: Campaign, batch: list[Candidate],
           now: datetime, caps_span: timedelta, run: Counter[int],
           starts: datetime | None) -> tuple[dict[int, Any], dict[tuple[int, str], Facts]]:
    """The batch's customers by id, and the facts of each candidate mail."""
    ids = sorted({c.customer_id for c in batch})
    people = {row.id: row for row in conn.execute(
        select(Customer.id, Customer.store_id, Customer.email, Customer.email_key,
               Customer.consent, Customer.timezone, Customer.paused_until,
               Customer.weekly_cap, Customer.topics)
        .where(_among(conn, Customer.id, ids)))}
    if any(p.weekly_cap for p in people.values()):  # personal caps look back a week
        caps_span = max(caps_span, PERSONAL_CAP_SPAN)
    keys = [p.email_key for p in people.values()]
    suppressed = {row[0] for row in conn.execute(
        select(Suppression.email_key).where(_among(conn, Suppression.email_key, keys)))}
    occurrences = sorted({c.occurrence for c in batch})
    existing = {(row[0], row[1]) for row in conn.execute(
        select(Delivery.customer_id, Delivery.occurrence)
        .where(Delivery.campaign == slug, Delivery.occurrence.in_(occurrences),
               _among(conn, Delivery.customer_id, ids)))}
    # Statuses are filtered here, not in SQL: with `status IN (...)` SQLite chose the
    # status index and scanned every queued row per batch (quadratic: 185 s for 1M).
    recent: dict[int, list[datetime]] = {}
    for customer_id, planned, status in conn.execute(
            select(Delivery.customer_id, Delivery.planned_at, Delivery.status)
            .where(_among(conn, Delivery.customer_id, ids),
                   Delivery.planned_at > now - caps_span,
                   Delivery.planned_at <= now)):
        if status in LIVE:
            recent.setdefault(customer_id, []).append(planned)
    cooling: set[int] = set()
    if campaign.cooldown is not None:
        cooling = {row[0] for row in conn.execute(
            select(Delivery.customer_id, Delivery.status).where(
                _among(conn, Delivery.customer_id, ids),
                Delivery.planned_at > now - campaign.cooldown,
                Delivery.planned_at <= now, Delivery.campaign == slug)) if row[1] in LIVE}
    ordered: set[int] = set()
    if starts is not None:
        ordered = {row[0] for row in conn.execute(
            select(Order.customer_id).where(_among(conn, Order.customer_id, ids),
                                            Order.status == "paid",
                                            Order.placed_at >= starts,
                                            Order.placed_at <= now))}
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
            if person.weekly_cap else ())
    return people, facts


# --- planning ---------------------------------------------------------------------------------


def cap_label(cap: Cap) -> str:
    return f"{cap.max} per {format_duration(cap.per)}"


def plausible_address(email: str) -> bool:
    """A cheap check at plan time: addresses were fully validated at import, so this
    only catches rows changed around the importer (a missing @, spaces, controls)."""
    local, at, domain = email.rpartition("@")
    return bool(at and local and "." in domain and " " not in email
                and not has_control_character(email))


def store_version(conn: Connection, slug: str, definition: dict[str, Any],
                  now: datetime) -> int:
    """The id of the campaign version with this content, created if new."""
    digest = hashlib.sha256(json.dumps(definition, sort_keys=True).encode()).hexdigest()
    # Two planners may store the same version at once: insert-or-ignore, then read.
    conn.execute(_upsert(conn, cast(Table, CampaignVersion.__table__))
                 .values(campaign=slug, content_hash=digest, definition=definition,
                         created_at=now)
                 .on_conflict_do_nothing(index_elements=["content_hash"]))
    return int(conn.execute(select(CampaignVersion.id)
                            .where(CampaignVersion.content_hash == digest)).scalar_one())


def _upsert(conn: Connection, table: Table) -> Any:
    """The dialect's INSERT with ON CONFLICT support."""
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as postgres_insert

        return postgres_insert(table)
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return sqlite_insert(table)


def plan(engine: Engine, specs: dict[str, SegmentSpec], slug: str, campaign: Campaign, *,
         scope: Scope, settings: Settings, version: dict[str, Any] | None = None,
         run: Counter[int] | None = None, keep: bool = True,
         choose_intros: bool = True, stop: Callable[[], bool] | None = None) -> PlanResult:
    """Plan what is due at scope.now. With VERSION (the definition to store), rows are
    written; without, nothing is (the dry run). RUN carries the planned times of
    mails planned earlier in the same planning run, so caps see them. Written rows
    carry the intro segment each customer is in (CHOOSE_INTROS; the forecast skips it).
    STOP, asked between batches, ends the plan early (a stopping daemon): what was
    written stays, and the next planning run goes on from there."""
    now, tz_default = scope.now, zone(settings.timezone)
    result = PlanResult(slug, now, keep=keep)
    planned_in_run: Counter[int] = run if run is not None else Counter()
    caps = settings.policy.frequency
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
            ab[occurrence] = _ab_winner(engine, slug, occurrence, campaign, now)
        return ab[occurrence]

    def intro_groups(batch: list[Candidate]) -> dict[int, set[str]]:
        """Intro segments of the batch's customers, looked up only when rows are written."""
        if not segmented:
            return {}
        return memberships(engine, specs, intro_segments,
                           scope, sorted({c.customer_id for c in batch}))

    for batch in candidates(engine, specs, slug, campaign, scope, settings):
        if stop is not None and stop():
            break
        with engine.begin() as conn:
            if base is None:
                base = int(conn.execute(select(func.count()).select_from(Delivery)
                                        .where(Delivery.campaign == slug)).scalar_one())
            people, facts = _facts(conn, slug, campaign, batch, now, caps_span,
                                   planned_in_run, reminder_starts)
            groups = intro_groups(batch)
            rows = []
            for candidate in batch:
                person = people[candidate.customer_id]
                tz = zone(person.timezone or settings.timezone)
                decision = decide(facts[(candidate.customer_id, candidate.occurrence)],
                                  now=now, caps=caps, tz=tz,
                                  quiet=settings.policy.quiet_hours, expires=candidate.expires,
                                  reminder=candidate.occurrence == "reminder")
                if decision.reason is not None:
                    result.add(Excluded(candidate.customer_id, person.store_id, person.email,
                                        candidate.occurrence, decision.reason,
                                        cap_label(decision.cap) if decision.cap else ""))
                    continue
                assert decision.send_after is not None
                variant = (base + result.planned_count) % variants
                if winner is not None and candidate.occurrence != "reminder":
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
                planned_in_run[candidate.customer_id] += 1
                rows.append({"campaign": slug, "occurrence": candidate.occurrence,
                             "customer_id": candidate.customer_id, "email": person.email,
                             "subject_variant": variant, "status": "queued", "attempts": 0,
                             "intro": first_intro(intro_segments,
                                                  groups.get(candidate.customer_id, set())),
                             "planned_at": now, "send_after": decision.send_after,
                             "expires_at": candidate.expires,
                             # made now, so every attempt (and an `unknown` row) has it
                             "message_id": new_message_id(domain)})
            if version is not None and rows:
                if version_id is None:
                    version_id = store_version(conn, slug, version, now)
                written = _insert_rows(conn, [{**row, "campaign_version_id": version_id}
                                              for row in rows], result)
                _give_codes(conn, slug, campaign, written, now)
    if version is not None:
        with engine.begin() as conn:
            for occurrence in sorted({o for o, _ in result.tally}) or ["-"]:
                conn.execute(insert(PlanRun).values(
                    campaign=slug, occurrence=occurrence, now=now,
                    planned=result.tally[(occurrence, PLANNED)],
                    excluded={reason: n for (o, reason), n in sorted(result.tally.items())
                              if o == occurrence and reason != PLANNED and n}))
            if conn.dialect.name == "postgresql" and result.planned_count >= ANALYZE_AFTER:
                # Fresh statistics for the senders: with the ledger's counts from before a
                # big plan, PostgreSQL scanned every row to record each batch of outcomes.
                conn.execute(text("ANALYZE deliveries, coupons"))
    return result


def latest_plan_run(engine: Engine) -> datetime | None:
    """The `now` of the store's latest planning run that wrote a plan, or None before any
    (a `--now` before it is refused by the commands that write plans)."""
    with engine.connect() as conn:
        latest: datetime | None = conn.execute(select(func.max(PlanRun.now))).scalar()
    return latest


def _ab_winner(engine: Engine, slug: str, occurrence: str, campaign: Campaign,
               now: datetime) -> int | None:
    """`winner:` (DESIGN §4.2): None while the test share is being sent (until `after`
    from the occurrence's first planned mail), then the variant with the best rate of
    the chosen metric among its sent mails."""
    assert campaign.winner is not None
    with engine.connect() as conn:
        first = conn.execute(select(func.min(Delivery.planned_at)).where(
            Delivery.campaign == slug, Delivery.occurrence == occurrence)).scalar()
        if first is None or now < first + campaign.winner.after:
            return None
        sent = {int(v): int(n) for v, n in conn.execute(
            select(Delivery.subject_variant, func.count()).where(
                Delivery.campaign == slug, Delivery.occurrence == occurrence,
                Delivery.status == "sent").group_by(Delivery.subject_variant))}
        kind = "click" if campaign.winner.metric == "clicks" else "open"
        engaged = {int(v): int(n) for v, n in conn.execute(
            select(Delivery.subject_variant, func.count(func.distinct(Event.delivery_id)))
            .join(Delivery, Delivery.id == Event.delivery_id)
            .where(Event.kind == kind, Delivery.campaign == slug,
                   Delivery.occurrence == occurrence)
            .group_by(Delivery.subject_variant))}
    return winning_variant(sent, engaged)


def _give_codes(conn: Connection, slug: str, campaign: Campaign,
               written: dict[tuple[int, str], int], now: datetime) -> None:
    """A unique coupon per planned mail, and a stable referral code per customer. Codes
    are random, so two can meet (at a million coupons of 40 bits, one pair did): a code
    already taken is drawn again."""
    if campaign.coupon is not None and written:
        coupon = campaign.coupon
        table = cast(Table, Coupon.__table__)
        owed = {delivery_id: customer_id for (customer_id, _), delivery_id in written.items()}
        for _ in range(DRAWS):
            if not owed:
                break
            rows = [{"code": f"{coupon.prefix.upper()}-{_code()}", "customer_id": customer_id,
                     "campaign": slug, "delivery_id": delivery_id, "value": coupon.value,
                     "expires_at": now + coupon.valid_for}
                    for delivery_id, customer_id in sorted(owed.items())]
            if conn.dialect.name == "postgresql":  # one array per column, as for the ledger
                given = conn.execute(_UNNEST_COUPONS, {
                    name: [naive_utc(row[name]) for row in rows] for name in _COUPON_COLUMNS})
            else:
                given = conn.execute(
                    _upsert(conn, table).on_conflict_do_nothing(index_elements=["code"])
                    .returning(table.c.delivery_id), rows)
            for (delivery_id,) in given:
                owed.pop(delivery_id, None)
        if owed:
            raise RuntimeError(f"no free coupon code after {DRAWS} draws")
    if campaign.referral is not None and written:
        ids = sorted({customer_id for customer_id, _ in written})
        missing = [row[0] for row in conn.execute(
            select(Customer.id).where(Customer.id.in_(ids), Customer.referral_code.is_(None)))]
        codes = _fresh_codes(conn, len(missing))
        for customer_id, code in zip(missing, codes, strict=True):
            conn.execute(update(Customer).where(Customer.id == customer_id,
                                                Customer.referral_code.is_(None))
                         .values(referral_code=code))


DRAWS = 5


def _fresh_codes(conn: Connection, count: int) -> list[str]:
    """COUNT referral codes that no customer has yet."""
    codes: set[str] = set()
    for _ in range(DRAWS):
        wanted = {_code() for _ in range(count - len(codes))}
        taken = set(conn.execute(select(Customer.referral_code)
                                 .where(Customer.referral_code.in_(sorted(wanted)))).scalars())
        codes |= wanted - taken
        if len(codes) >= count:
            break
    return sorted(codes)[:count]


def _code() -> str:
    """10 characters from 32 unambiguous ones: 50 bits, unguessable for a coupon (five
    random bits per character, drawn at once: secrets.choice per character cost 30 µs)."""
    bits = int.from_bytes(secrets.token_bytes(7), "big") >> 6
    return "".join(_ALPHABET[(bits >> shift) & 31] for shift in range(0, 50, 5))


_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"


_LEDGER_COLUMNS = {
    "campaign": "text", "campaign_version_id": "integer", "occurrence": "text",
    "customer_id": "integer", "email": "text", "subject_variant": "integer", "intro": "text",
    "status": "text",
    "attempts": "integer", "planned_at": "timestamp", "send_after": "timestamp",
    "expires_at": "timestamp", "message_id": "text"}
# On PostgreSQL a batch is inserted from one array per column: a thousand-row VALUES
# list of 11,000 parameters cost ~110 ms a batch to parse and plan.
_ARRAYS = ", ".join(f"CAST(:{name} AS {kind}[])" for name, kind in _LEDGER_COLUMNS.items())
_UNNEST_INSERT = text(
    f"INSERT INTO deliveries ({', '.join(_LEDGER_COLUMNS)}) SELECT * FROM unnest({_ARRAYS}) "
    "ON CONFLICT (customer_id, campaign, occurrence) DO NOTHING "
    "RETURNING customer_id, occurrence, id")


_COUPON_COLUMNS = {"code": "text", "customer_id": "integer", "campaign": "text",
                   "delivery_id": "integer", "value": "text", "expires_at": "timestamp"}
_UNNEST_COUPONS = text(
    f"INSERT INTO coupons ({', '.join(_COUPON_COLUMNS)}) SELECT * FROM unnest("
    + ", ".join(f"CAST(:{name} AS {kind}[])" for name, kind in _COUPON_COLUMNS.items())
    + ") ON CONFLICT (code) DO NOTHING RETURNING delivery_id")


def _insert_rows(conn: Connection, rows: list[dict[str, Any]],
                 result: PlanResult) -> dict[tuple[int, str], int]:
    """Insert ledger rows; one another planner wrote first is skipped as already_sent.
    Returns the ids of the rows written, by (customer id, occurrence)."""
    table = cast(Table, Delivery.__table__)
    if conn.dialect.name == "postgresql":
        result_rows = conn.execute(_UNNEST_INSERT, {
            name: [naive_utc(row[name]) for row in rows] for name in _LEDGER_COLUMNS})
    else:
        result_rows = conn.execute(
            _upsert(conn, table).on_conflict_do_nothing(
                index_elements=["customer_id", "campaign", "occurrence"])
            .returning(table.c.customer_id, table.c.occurrence, table.c.id), rows)
    written = {(row[0], row[1]): row[2] for row in result_rows}
    lost = {(row["customer_id"], row["occurrence"]) for row in rows} - set(written)
    if lost:
        result.lose(lost)
    return written



def plan_due(engine: Engine, specs: dict[str, SegmentSpec], campaigns: dict[str, Campaign], *,
             scope: Scope, settings: Settings,
             versions: dict[str, dict[str, Any]] | None = None,
             keep: bool = True, choose_intros: bool = True,
             stop: Callable[[], bool] | None = None) -> list[PlanResult]:
    """One planning run: every campaign, higher priority first, sharing the caps' view
    of what this run has planned. With VERSIONS (definitions by campaign), rows are
    written; a queued mail is never withdrawn for a later one."""
    run: Counter[int] = Counter()
    order = sorted(campaigns, key=lambda slug: (-campaigns[slug].priority, slug))
    return [plan(engine, specs, slug, campaigns[slug], scope=scope, settings=settings,
                 version=versions[slug] if versions is not None else None, run=run,
                 keep=keep, choose_intros=choose_intros, stop=stop)
            for slug in order if stop is None or not stop()]
