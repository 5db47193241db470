"""The store's tables as typed SQLAlchemy models (DESIGN §3).

Every time is stored as UTC. Money is integer minor units with its currency.
Later features add their tables here, each with a migration.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

CONSENT_STATES = ("subscribed", "not_subscribed", "unsubscribed", "bounced", "complained")
ORDER_STATUSES = ("paid", "refunded", "cancelled")
DELIVERY_STATES = ("queued", "sending", "sent", "deferred", "failed", "unknown", "skipped",
                   "expired")

# None is stored as SQL NULL, not the JSON null, so "IS NULL" means missing on both databases.
Json = JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")


class UTCDateTime(TypeDecorator[datetime]):
    """An aware datetime stored as naive UTC; read back as aware UTC on both databases."""

    impl = DateTime(timezone=False)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC).replace(tzinfo=None)

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
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


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


class Suppression(Base):
    __tablename__ = "suppressions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    email_key: Mapped[str] = mapped_column(String(320), unique=True)
    reason: Mapped[str] = mapped_column(String(64))
    source: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
