"""The store's tables as typed SQLAlchemy models (DESIGN §3).

Every time is stored as UTC. Money is integer minor units with its currency.
Later features add their tables here, each with a migration.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

from mailer.config.survey import OPTION_LIMIT
from mailer.core.folding import fold
from mailer.core.states import Consent, DeliveryState

CONSENT_STATES = tuple(Consent)
ORDER_STATUSES = ("paid", "refunded", "cancelled")
DELIVERY_STATES = tuple(DeliveryState)

# None is stored as SQL NULL, not the JSON null, so "IS NULL" means missing on both databases.
Json = JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")


def naive_utc(value: Any) -> Any:
    """An aware datetime as the naive UTC value the columns store; other values as they
    are (for statements written as text, which bypass UTCDateTime)."""
    return value.astimezone(UTC).replace(tzinfo=None) if isinstance(value, datetime) else value


class UTCDateTime(TypeDecorator[datetime]):
    """An aware datetime stored as naive UTC; read back as aware UTC on both databases."""

    impl = DateTime(timezone=False)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        stored: datetime = naive_utc(value)
        return stored

    def process_literal_param(self, value: datetime | None, dialect: Dialect) -> Any:
        """For `mailer segments sql`, which prints queries with their values inlined."""
        return self.process_bind_param(value, dialect)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


class Base(DeclarativeBase):
    pass


class Customer(Base):
    __tablename__ = "customers"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    store_id: Mapped[str] = mapped_column(String(255), unique=True)
    email: Mapped[str] = mapped_column(String(320))
    # NFC, case-folded address: `John@x.com` and `john@x.com` are one person.
    email_key: Mapped[str] = mapped_column(String(320), unique=True)
    first_name: Mapped[str | None] = mapped_column(Text)
    last_name: Mapped[str | None] = mapped_column(Text)
    birth_date: Mapped[date | None] = mapped_column(Date)
    # "MM-DD" of birth_date, indexed so birthday segments and triggers find today's fast.
    birth_md: Mapped[str | None] = mapped_column(String(5), index=True)
    timezone: Mapped[str | None] = mapped_column(String(64))
    locale: Mapped[str | None] = mapped_column(String(35))
    country: Mapped[str | None] = mapped_column(String(64))
    city: Mapped[str | None] = mapped_column(Text)
    signed_up_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    tags: Mapped[list[str] | None] = mapped_column(Json)
    attributes: Mapped[dict[str, Any] | None] = mapped_column(Json)
    referral_code: Mapped[str | None] = mapped_column(String(64), unique=True)
    # The referrer's store id; text, so a referrer may arrive later in the same import.
    referred_by: Mapped[str | None] = mapped_column(String(255), index=True)
    consent: Mapped[str] = mapped_column(String(16), default="subscribed")
    consent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    consent_source: Mapped[str | None] = mapped_column(String(64))
    consent_reason: Mapped[str | None] = mapped_column(Text)
    # The preference centre: no mail before paused_until; at most weekly_cap mails in
    # any 7 days (besides the store's caps); only these topics (None: every topic).
    paused_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    weekly_cap: Mapped[int | None] = mapped_column(Integer)
    topics: Mapped[list[str] | None] = mapped_column(Json)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # Folded shadows of the values segments match case-insensitively (see folded()).
    # Text, not String(n): folding can lengthen a value ('ß' -> 'ss').
    country_folded: Mapped[str | None] = mapped_column(Text)
    city_folded: Mapped[str | None] = mapped_column(Text)
    locale_folded: Mapped[str | None] = mapped_column(Text)
    tags_folded: Mapped[list[str] | None] = mapped_column(Json)
    attributes_folded: Mapped[dict[str, Any] | None] = mapped_column(Json)
    # The shop's own updated_at of the last webhook written (an older one is ignored).
    source_updated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Double opt-in (consent.double_opt_in, mailer.delivery.confirmations): where and when the
    # customer asked (consent `pending`), when the confirmation notice and its one
    # reminder were queued, and, once confirmed, when and from which IP: the proof.
    opt_in_source: Mapped[str | None] = mapped_column(String(64))
    opt_in_requested_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    opt_in_sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    opt_in_reminded_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    opt_in_confirmed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    opt_in_ip: Mapped[str | None] = mapped_column(String(45))  # IPv6 written out: 45

    __table_args__ = (
        # The confirmation sweep reads only the pending customers (a handful of a store).
        Index("ix_customers_pending", "opt_in_sent_at",
              sqlite_where=text("consent = 'pending'"),
              postgresql_where=text("consent = 'pending'")),
    )


# The console's customer search (migration 0020): prefixes of the lower-case id and names,
# and of the folded address, with text_pattern_ops on PostgreSQL so LIKE 'abc%' uses them
# under any collation (SQLite answers a range on them).
for _name, _column in (("store_id", Customer.store_id), ("first_name", Customer.first_name),
                       ("last_name", Customer.last_name)):
    Index(f"ix_customers_{_name}_lower", func.lower(_column).label(f"{_name}_lower"),
          postgresql_ops={f"{_name}_lower": "text_pattern_ops"})
Index("ix_customers_email_key_prefix", Customer.email_key,
      postgresql_ops={"email_key": "text_pattern_ops"})


class Order(Base):
    __tablename__ = "orders"
    __table_args__ = (
        # Segment aggregation reads orders per customer within a time window and
        # needs status, currency and total: a covering index serves it without the table.
        Index("ix_orders_customer_placed", "customer_id", "placed_at", "status", "currency",
              "total_minor"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    store_id: Mapped[str] = mapped_column(String(255), unique=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id", ondelete="CASCADE"))
    placed_at: Mapped[datetime] = mapped_column(UTCDateTime)
    status: Mapped[str] = mapped_column(String(16))
    currency: Mapped[str] = mapped_column(String(3))
    total_minor: Mapped[int] = mapped_column(BigInteger)
    coupon_code: Mapped[str | None] = mapped_column(String(64))
    source_updated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class OrderLine(Base):
    __tablename__ = "order_lines"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    order_id: Mapped[int] = mapped_column(ForeignKey("orders.id", ondelete="CASCADE"), index=True)
    position: Mapped[int] = mapped_column(Integer)
    sku: Mapped[str | None] = mapped_column(String(255))
    product: Mapped[str | None] = mapped_column(Text)
    category: Mapped[str | None] = mapped_column(Text)
    quantity: Mapped[int] = mapped_column(Integer, default=1)
    price_minor: Mapped[int | None] = mapped_column(BigInteger)
    sku_folded: Mapped[str | None] = mapped_column(Text)
    product_folded: Mapped[str | None] = mapped_column(Text)
    category_folded: Mapped[str | None] = mapped_column(Text)


# Columns that segments match case-insensitively (DESIGN §4.1), each with a shadow
# `<name>_folded` holding mailer.core.folding.fold of it. SQLite's lower() folds ASCII only
# and PostgreSQL's follows the database's collation, so neither is asked: every writer
# of these columns writes folded(values) beside them, and segments compare folded
# shadows with folded literals.
FOLDED = {"customers": ("country", "city", "locale", "tags", "attributes"),
          "order_lines": ("sku", "product", "category")}


def _fold_value(value: Any) -> Any:
    if isinstance(value, str):
        return fold(value)
    if isinstance(value, list):
        return [_fold_value(item) for item in value]
    if isinstance(value, dict):
        return {key: _fold_value(item) for key, item in value.items()}
    return value  # numbers, booleans and None compare as they are


def folded(table: str, values: Mapping[str, Any]) -> dict[str, Any]:
    """The folded shadow columns of TABLE for the matched columns present in VALUES."""
    return {f"{name}_folded": _fold_value(values[name])
            for name in FOLDED[table] if name in values}


class Suppression(Base):
    __tablename__ = "suppressions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    email_key: Mapped[str] = mapped_column(String(320), unique=True)
    reason: Mapped[str] = mapped_column(String(64))
    source: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class CampaignVersion(Base):
    """The compiled definition a ledger row was planned with, keyed by content hash:
    workers render from it, never from their own workspace files."""

    __tablename__ = "campaign_versions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    campaign: Mapped[str] = mapped_column(String(255))
    content_hash: Mapped[str] = mapped_column(String(64), unique=True)
    definition: Mapped[dict[str, Any]] = mapped_column(Json)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Delivery(Base):
    """The ledger: one row per campaign, occurrence and customer, written before the wire."""

    __tablename__ = "deliveries"
    __table_args__ = (
        # One row per mail. Customer first: the planner looks rows up for a batch of
        # customers. (With an index led by campaign, PostgreSQL's stale statistics on a
        # fast-growing ledger made it filter every row of the campaign per batch.)
        UniqueConstraint("customer_id", "campaign", "occurrence", name="uq_deliveries_mail"),
        # Frequency caps and cooldowns count a customer's rows by planned time.
        Index("ix_deliveries_customer_planned", "customer_id", "planned_at", "status"),
        # Senders pick rows that are due.
        Index("ix_deliveries_status_send_after", "status", "send_after"),
        Index("ix_deliveries_lease_owner", "lease_owner"),
        Index("ix_deliveries_message_id", "message_id"),  # bounces find their mail by it
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    campaign: Mapped[str] = mapped_column(String(255))
    campaign_version_id: Mapped[int] = mapped_column(ForeignKey("campaign_versions.id"))
    occurrence: Mapped[str] = mapped_column(String(255))
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id", ondelete="CASCADE"))
    email: Mapped[str] = mapped_column(String(320))
    subject_variant: Mapped[int] = mapped_column(Integer, default=0)
    # The intro segment the customer was in when planned (None: the default intro);
    # workers render it without evaluating segments of their own.
    intro: Mapped[str | None] = mapped_column(String(255))
    # The campaign's topic when planned: caps with a topic count these rows (None: a row
    # whose campaign version named no readable topic, counted by caps without one only).
    topic: Mapped[str | None] = mapped_column(String(255))
    status: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_reply: Mapped[str | None] = mapped_column(Text)
    message_id: Mapped[str | None] = mapped_column(String(255))
    planned_at: Mapped[datetime] = mapped_column(UTCDateTime)
    send_after: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    lease_owner: Mapped[str | None] = mapped_column(String(64))
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime)


class Coupon(Base):
    __tablename__ = "coupons"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    code: Mapped[str] = mapped_column(String(64), unique=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id", ondelete="CASCADE"))
    campaign: Mapped[str] = mapped_column(String(255))
    delivery_id: Mapped[int | None] = mapped_column(
        ForeignKey("deliveries.id", ondelete="SET NULL"), index=True)
    value: Mapped[str] = mapped_column(String(64))
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    redeemed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class RateSlot(Base):
    """One of `rate_per_second` send permits shared by the senders of a PostgreSQL
    database (mailer.delivery.ratelimit.SharedRateLimit): held while a mail is on the wire and
    free again one second after its reply."""

    __tablename__ = "rate_slots"
    __table_args__ = (Index("ix_rate_slots_free_at", "free_at"),)

    slot: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    free_at: Mapped[datetime] = mapped_column(UTCDateTime)


class PlanRun(Base):
    """Counts of one planning run per exclusion reason (report sums them)."""

    __tablename__ = "plan_runs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    campaign: Mapped[str] = mapped_column(String(255), index=True)
    occurrence: Mapped[str] = mapped_column(String(255))
    now: Mapped[datetime] = mapped_column(UTCDateTime)
    planned: Mapped[int] = mapped_column(Integer)
    excluded: Mapped[dict[str, int]] = mapped_column(Json)


class DaemonState(Base):
    """What the planning daemon (`mailer run`) last said of itself, for `mailer status`.

    One row per role; the leader rewrites it at every sweep. `heartbeat_at` is wall
    time; `last_sweep_at` and `next_due_at` are the daemon's logical time (`--now`)."""

    __tablename__ = "daemon_state"

    role: Mapped[str] = mapped_column(String(20), primary_key=True)
    owner: Mapped[str] = mapped_column(String(100))
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    heartbeat_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_sweep_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_planned: Mapped[int] = mapped_column(Integer, default=0)
    next_due_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    next_due_campaign: Mapped[str | None] = mapped_column(String(255))  # what is due then
    workspace_problems: Mapped[int] = mapped_column(Integer, default=0)
    stopped_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


# machine_open / machine_click: what mailer.core.machines found a machine did (never
# counted as opens or clicks; HUMAN there is the split)
EVENT_KINDS = ("open", "click", "unsubscribe", "preferences", "rating", "bounce", "complaint",
               "machine_open", "machine_click", "keep_subscribed")


class Event(Base):
    """Something a recipient (or a mail server, later) did about a mail: an open, a
    click (with its URL), an unsubscribe, a rating (score, comment), a bounce or a
    complaint. `delivery_id` is the ledger row the mail came from, when known."""

    __tablename__ = "events"
    __table_args__ = (Index("ix_events_campaign_kind", "campaign", "kind"),
                      Index("ix_events_delivery_id", "delivery_id"),
                      # the customer card reads one customer's events, newest first
                      Index("ix_events_customer_at", "customer_id", "at"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    customer_id: Mapped[int | None] = mapped_column(ForeignKey("customers.id"))
    campaign: Mapped[str | None] = mapped_column(String(255))
    delivery_id: Mapped[int | None] = mapped_column(Integer)
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    url: Mapped[str | None] = mapped_column(Text)
    score: Mapped[int | None] = mapped_column(Integer)
    comment: Mapped[str | None] = mapped_column(Text)
    # opens and clicks: the request's user agent, and its address's keyed hash (never
    # the address: mailer.core.machines.ip_hash)
    user_agent: Mapped[str | None] = mapped_column(String(512))
    ip_hash: Mapped[str | None] = mapped_column(String(64))


class StageChange(Base):
    """A customer's relationship stage as `mailer stages update` found it changed
    (mailer.insight.stages): FROM_STAGE None is the first recording of the customer, a
    stage without a change."""

    __tablename__ = "stage_history"
    __table_args__ = (Index("ix_stage_history_customer_detected", "customer_id", "detected_at"),
                      # stage_change campaigns read the changes into a stage by time
                      Index("ix_stage_history_to_detected", "to_stage", "detected_at"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id", ondelete="CASCADE"))
    from_stage: Mapped[str | None] = mapped_column(String(16))
    to_stage: Mapped[str] = mapped_column(String(16))
    detected_at: Mapped[datetime] = mapped_column(UTCDateTime)


class Prediction(Base):
    """A customer's purchase predictions from the latest fit (`mailer predict`,
    mailer.insight.bgnbd and gamma_gamma); replaced as a whole at each fit, and none at
    all when the latest fit failed. FITTED_AT is the moment they describe (the fit's now)."""

    __tablename__ = "predictions"

    customer_id: Mapped[int] = mapped_column(
        ForeignKey("customers.id", ondelete="CASCADE"), primary_key=True, autoincrement=False)
    p_alive: Mapped[float] = mapped_column(Float)
    expected_orders_90d: Mapped[float] = mapped_column(Float)
    predicted_clv_365d: Mapped[int] = mapped_column(BigInteger)  # minor units, store currency
    next_order_expected_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    churn_risk: Mapped[str] = mapped_column(String(8))
    fitted_at: Mapped[datetime] = mapped_column(UTCDateTime)


class PredictionFit(Base):
    """One `mailer predict` run: the data it saw, the parameters (None when unfit, with
    the reason) and the holdout check. FITTED_AT is wall time, NOW the clock it fitted as of."""

    __tablename__ = "prediction_fits"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    fitted_at: Mapped[datetime] = mapped_column(UTCDateTime)
    now: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    fitted: Mapped[bool] = mapped_column(Boolean)
    reason: Mapped[str | None] = mapped_column(Text)
    customers: Mapped[int] = mapped_column(Integer)
    repeat_buyers: Mapped[int] = mapped_column(Integer)
    days_of_history: Mapped[int] = mapped_column(Integer)
    r: Mapped[float | None] = mapped_column(Float)
    alpha: Mapped[float | None] = mapped_column(Float)
    a: Mapped[float | None] = mapped_column(Float)
    b: Mapped[float | None] = mapped_column(Float)
    p: Mapped[float | None] = mapped_column(Float)
    q: Mapped[float | None] = mapped_column(Float)
    gamma: Mapped[float | None] = mapped_column(Float)
    holdout_days: Mapped[int] = mapped_column(Integer)
    holdout_predicted: Mapped[float | None] = mapped_column(Float)
    holdout_actual: Mapped[int | None] = mapped_column(Integer)


class ConsentChange(Base):
    """A customer's consent as it became (state, since, source, reason): written with every
    consent change (mailer.store.customers and the importer), the customer card's
    consent_history. Migration 0011 recorded each customer's consent of that moment."""

    __tablename__ = "consent_history"
    __table_args__ = (Index("ix_consent_history_customer", "customer_id", "since"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id", ondelete="CASCADE"))
    state: Mapped[str] = mapped_column(String(16))
    since: Mapped[datetime | None] = mapped_column(UTCDateTime)
    source: Mapped[str | None] = mapped_column(String(64))
    reason: Mapped[str | None] = mapped_column(Text)


class Recommendation(Base):
    """One of a customer's "you may like" products (mailer.store.recommendations), RANK 1
    first; replaced as a whole by each daily computation. COMPUTED_AT is the moment they
    describe (the computation's now)."""

    __tablename__ = "recommendations"

    customer_id: Mapped[int] = mapped_column(
        ForeignKey("customers.id", ondelete="CASCADE"), primary_key=True, autoincrement=False)
    rank: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    sku: Mapped[str] = mapped_column(String(255))
    product: Mapped[str | None] = mapped_column(Text)
    category: Mapped[str | None] = mapped_column(Text)
    computed_at: Mapped[datetime] = mapped_column(UTCDateTime)


SHORT_TEXT = f"value_number IS NULL AND length(value_text) <= {OPTION_LIMIT}"


class Response(Base):
    """One answer to one survey question (mailer.store.insight.responses): a rating or nps
    answer in VALUE_NUMBER, a choice or comment in VALUE_TEXT. One row per mail and
    question, so a later answer to the same mail replaces it; VERSION_HASH is the content
    hash of the campaign version whose frozen survey the answer was given to, AT when the
    answer was recorded (the latest time, for a replaced one)."""

    __tablename__ = "responses"
    __table_args__ = (
        UniqueConstraint("customer_id", "campaign", "occurrence", "question",
                         name="uq_responses_answer"),
        # `mailer responses` reads one survey: its first and latest answer (survey, at);
        # the counts per question and value in the index's order, every column in it (no
        # sort, no table lookup); the mails that answered, grouped in the index's order
        Index("ix_responses_survey_at", "survey", "at"),
        Index("ix_responses_survey_question", "survey", "question", "value_number", "at"),
        Index("ix_responses_survey_mail", "survey", "customer_id", "campaign", "occurrence",
              "at"),
        # choices counted by value: the short texts only (a 2,000-character comment would
        # not fit a PostgreSQL index entry); queries repeat SHORT_TEXT to use it
        Index("ix_responses_survey_choice", "survey", "question", "value_text",
              sqlite_where=text(SHORT_TEXT), postgresql_where=text(SHORT_TEXT)))

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id", ondelete="CASCADE"))
    campaign: Mapped[str] = mapped_column(String(255))
    occurrence: Mapped[str] = mapped_column(String(255))
    survey: Mapped[str] = mapped_column(String(255))
    version_hash: Mapped[str] = mapped_column(String(64))
    question: Mapped[str] = mapped_column(String(40))
    value_number: Mapped[int | None] = mapped_column(Integer)
    value_text: Mapped[str | None] = mapped_column(Text)
    at: Mapped[datetime] = mapped_column(UTCDateTime)


NOTICE_STATES = ("queued", "deferred", "sending", "sent", "failed", "unknown")


class Notice(Base):
    """Mail that is not marketing (mailer.store.notices): a low-score alert, the monthly
    review. KEY makes it exactly-once (`review:2026-11`, `alert:<campaign>:<occurrence>:
    <customer>`); its body is stored whole (a few per month, not per customer). Delivered
    like the ledger's rows (lease, attempts, back-off) but with no caps, consent check or
    unsubscribe footer."""

    __tablename__ = "notices"
    __table_args__ = (
        UniqueConstraint("key", name="uq_notices_key"),
        Index("ix_notices_status_send_after", "status", "send_after"),  # senders pick due ones
        Index("ix_notices_kind_created", "kind", "created_at"),  # the review counts alerts
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    key: Mapped[str] = mapped_column(String(255))
    to: Mapped[str] = mapped_column(String(320))
    subject: Mapped[str] = mapped_column(Text)
    html: Mapped[str] = mapped_column(Text)
    text: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_reply: Mapped[str | None] = mapped_column(Text)
    message_id: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    send_after: Mapped[datetime] = mapped_column(UTCDateTime)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    lease_owner: Mapped[str | None] = mapped_column(String(64))
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime)


class HookDelivery(Base):
    """One webhook delivery taken (mailer.store.feeds.apply): the platform's delivery id
    makes it exactly-once (a replay finds its row and changes nothing)."""

    __tablename__ = "hook_deliveries"
    __table_args__ = (
        UniqueConstraint("source", "delivery_id", name="uq_hook_deliveries_source_id"),
        Index("ix_hook_deliveries_source_received", "source", "received_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    source: Mapped[str] = mapped_column(String(16))  # shopify, woocommerce, custom
    delivery_id: Mapped[str] = mapped_column(String(255))
    topic: Mapped[str] = mapped_column(String(64))
    received_at: Mapped[datetime] = mapped_column(UTCDateTime)
    event_at: Mapped[datetime | None] = mapped_column(UTCDateTime)  # the shop's time of it
    outcome: Mapped[str] = mapped_column(String(64))  # stored, ignored: <why>


class Checkout(Base):
    """A checkout begun at the shop; completed_at set once it became an order."""

    __tablename__ = "checkouts"
    __table_args__ = (Index("ix_checkouts_open", "completed_at", "created_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    store_id: Mapped[str] = mapped_column(String(255), unique=True)
    customer_id: Mapped[int | None] = mapped_column(
        ForeignKey("customers.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    url: Mapped[str | None] = mapped_column(Text)
    # [{"sku", "product", "quantity", "price_minor"}], as the order lines hold them
    items: Mapped[list[dict[str, Any]] | None] = mapped_column(Json)
    currency: Mapped[str] = mapped_column(String(3))
    total_minor: Mapped[int] = mapped_column(BigInteger)
    source_updated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class Product(Base):
    """A product (a variant, on Shopify) by its sku; restocked_at is when it last
    turned in stock (back-in-stock mails name that day)."""

    __tablename__ = "products"
    __table_args__ = (Index("ix_products_restocked_at", "restocked_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sku: Mapped[str] = mapped_column(String(255), unique=True)
    # Shopify's inventory_item_id: inventory_levels/update names only that
    stock_key: Mapped[str | None] = mapped_column(String(255), index=True)
    name: Mapped[str | None] = mapped_column(Text)
    category: Mapped[str | None] = mapped_column(Text)
    currency: Mapped[str | None] = mapped_column(String(3))
    price_minor: Mapped[int | None] = mapped_column(BigInteger)
    url: Mapped[str | None] = mapped_column(Text)  # the product's page, when the shop sent one
    in_stock: Mapped[bool] = mapped_column(Boolean)
    restocked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    source_updated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class StockAlert(Base):
    """A customer asked to hear when SKU is back; open while notified_at is None."""

    __tablename__ = "stock_alerts"
    __table_args__ = (
        UniqueConstraint("customer_id", "sku", name="uq_stock_alerts_customer_sku"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id", ondelete="CASCADE"))
    sku: Mapped[str] = mapped_column(String(255), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    notified_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class PausedCampaign(Base):
    """A campaign an operator paused (mailer.store.operator.pauses): while its row is here the
    planner excludes its candidates (`paused_campaign`) and no sender leases its rows;
    resuming deletes the row. Keyed by the campaign's id (its file stem)."""

    __tablename__ = "paused_campaigns"

    campaign: Mapped[str] = mapped_column(String(255), primary_key=True)
    paused_at: Mapped[datetime] = mapped_column(UTCDateTime)
    paused_by: Mapped[str] = mapped_column(String(255))
    reason: Mapped[str | None] = mapped_column(Text)


class AuditEntry(Base):
    """One operator action (mailer.store.operator.audit): who (ACTOR, through VIA: cli or
    console), what (ACTION on TARGET, the reason typed in, DETAIL), when (AT). Written in
    the transaction of the change it records; never updated or deleted by mailer."""

    __tablename__ = "operator_audit"
    __table_args__ = (Index("ix_operator_audit_target_at", "target", "at"),
                      Index("ix_operator_audit_at", "at"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    actor: Mapped[str] = mapped_column(String(255))
    via: Mapped[str] = mapped_column(String(16))
    action: Mapped[str] = mapped_column(String(32))
    target: Mapped[str] = mapped_column(String(320))  # a campaign id, a customer's store id
    reason: Mapped[str | None] = mapped_column(Text)
    detail: Mapped[dict[str, Any] | None] = mapped_column(Json)


class ConsoleFigure(Base):
    """A figure that costs more than a query (mailer.store.insight.figures): the console's segment
    sizes and funnels, its 30-day forecast. One row a kind, replaced by each refresh
    (`mailer console refresh`, the daemon). AS_OF is the clock it describes, COMPUTED_AT
    the wall time it was computed, WORKSPACE the hash of the workspace files it was
    computed from: another hash on disk means the figure is stale."""

    __tablename__ = "console_figures"

    kind: Mapped[str] = mapped_column(String(32), primary_key=True)
    as_of: Mapped[datetime] = mapped_column(UTCDateTime)
    computed_at: Mapped[datetime] = mapped_column(UTCDateTime)
    seconds: Mapped[float] = mapped_column(Float)
    workspace: Mapped[str] = mapped_column(String(64))
    computed_by: Mapped[str] = mapped_column(String(32))  # cli, daemon or console
    document: Mapped[dict[str, Any]] = mapped_column(Json)
