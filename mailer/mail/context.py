"""Template contexts (DESIGN §4.4), built for a batch of recipients at once.

`stats` come from one aggregation over the batch's orders and one over its order
lines (for the favourite category): never a query per recipient. Missing data is
left out of the context, so templates see it as undefined (`| default(...)`
works) and never as None.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from mailer.config.campaign import Campaign
from mailer.config.settings import Settings
from mailer.core.clock import as_local, zone
from mailer.core.money import exponent
from mailer.mail.links import recipient_links
from mailer.store.customers import Profile, favourite_categories, order_stats, people_by_id
from mailer.store.db import Connection

CUSTOMER_FIELDS = ("first_name", "last_name", "birth_date", "country", "city", "locale",
                   "timezone", "tags", "attributes", "signed_up_at", "referral_code")


def load_customers(conn: Connection, ids: Sequence[int]) -> dict[int, Profile]:
    """The customers' profiles by id."""
    return people_by_id(conn, ids)


def load_stats(conn: Connection, ids: Sequence[int], *, now: datetime,
               currency: str) -> dict[int, dict[str, Any]]:
    """orders, spent, average_order, first/last order time and favourite category."""
    places = exponent(currency)
    stats: dict[int, dict[str, Any]] = {}
    for paid in order_stats(conn, ids, now=now, currency=currency):
        spent_major = Decimal(paid.spent_minor).scaleb(-places)
        stats[paid.customer_id] = {
            "orders": paid.orders, "spent": spent_major,
            "first_order_at": paid.first_at, "last_order_at": paid.last_at}
        if paid.counted:
            stats[paid.customer_id]["average_order"] = (spent_major / paid.counted).quantize(
                Decimal(1).scaleb(-places))
    for customer_id, category in favourite_categories(conn, ids, now=now).items():
        entry = stats.setdefault(customer_id, {"orders": 0, "spent": Decimal(0)})
        entry.setdefault("favourite_category", category)
    return stats


def age(born: date, today: date) -> int:
    """Whole years; a 29 February birthday counts on 28 February in other years."""
    from mailer.segments.compiler import age_cutoff

    years = today.year - born.year
    return years if born <= age_cutoff(today, years) else years - 1


def _moment(value: datetime, tz: ZoneInfo) -> datetime:
    """A campaign file's date-time (naive: the workspace's zone) as an aware one there."""
    return as_local(value, tz).astimezone(tz)


def build_context(customer: Profile, stats: dict[str, Any] | None, *, settings: Settings,
                  slug: str, campaign: Campaign, now: datetime, key: str,
                  message: str, coupon_code: str | None = None,
                  coupon_expires_at: datetime | None = None) -> dict[str, Any]:
    """The context of §4.4 for one recipient (pure)."""
    tz = zone(customer.timezone or settings.timezone)
    workspace_tz = zone(settings.timezone)
    person: dict[str, Any] = {"id": customer.store_id, "email": customer.email,
                              "now": now.astimezone(tz)}
    for name in CUSTOMER_FIELDS:
        value = getattr(customer, name)
        if value not in (None, "", [], {}):
            person[name] = value
    person.setdefault("timezone", tz.key)
    if customer.birth_date is not None:
        person["age"] = age(customer.birth_date, now.astimezone(tz).date())
    context: dict[str, Any] = {
        "customer": person,
        "stats": stats or {"orders": 0, "spent": Decimal(0)},
        "campaign": {"name": campaign.name, "slug": slug,
                     # aware, on the workspace's wall clock (what the file says)
                     **({"starts": _moment(campaign.starts, workspace_tz)}
                        if campaign.starts else {}),
                     **({"ends": _moment(campaign.ends, workspace_tz)} if campaign.ends else {})},
        "store": {"name": settings.store.name, "address": settings.store.address,
                  "currency": settings.store.currency, "locale": settings.store.locale,
                  **({"url": settings.store.url} if settings.store.url else {})},
        "links": recipient_links(settings.tracking.base_url, customer=customer.store_id,
                                 campaign=slug, message=message, key=key),
        "now": now,
        "coupon": {},
        "referral": {},
    }
    if campaign.coupon is not None:
        context["coupon"] = {"code": coupon_code or f"{campaign.coupon.prefix}-PREVIEW",
                             "value": campaign.coupon.value,
                             "expires_at": coupon_expires_at or now + campaign.coupon.valid_for}
    if campaign.referral is not None:
        code = customer.referral_code or "PREVIEW"
        referral: dict[str, Any] = {"code": code, "deadline": campaign.referral.deadline,
                                    "reward": campaign.referral.reward}
        if settings.store.referral_url:
            referral["url"] = settings.store.referral_url.replace("{code}", code)
        context["referral"] = referral
    return context


