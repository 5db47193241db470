"""Template contexts (DESIGN §4.4), built for a batch of recipients at once, and their
schema (CONTEXT_SCHEMA: every name and field, and when a mail has it), which validate
checks templates against.

`stats` come from one aggregation over the batch's orders, one over its order
lines (for the favourite category) and one reading each recipient's latest paid
orders (for `customer.stage`); `customer.predictions` and `recommendations` are one
read each of what `mailer predict` and `mailer recommend` stored: never a query per
recipient. Missing data is
left out of the context, so templates see it as undefined (`| default(...)`
works) and never as None.
"""

from __future__ import annotations

import calendar
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from mailer.config.campaign import Campaign, anniversary_in, written_date
from mailer.config.settings import MAX_COMMITTED_ORDERS, Settings
from mailer.config.survey import SCALES, Survey
from mailer.core.clock import as_local, zone
from mailer.core.money import exponent, format_minor
from mailer.core.occurrences import CHECKOUT, CHECKOUT_REMINDER, stock_sku
from mailer.insight.stages import stage_of_latest
from mailer.mail.links import recipient_links
from mailer.store.customers import Profile, favourite_categories, order_stats, people_by_id
from mailer.store.db import Connection
from mailer.store.feeds.apply import CheckoutView, checkouts_by_key
from mailer.store.feeds.stock import ProductView, products_by_sku
from mailer.store.insight.predictions import Scored, predictions_of
from mailer.store.insight.recommendations import recommendations_of
from mailer.store.insight.stages import latest_paid_times

CUSTOMER_FIELDS = ("first_name", "last_name", "birth_date", "country", "city", "locale",
                   "timezone", "tags", "attributes", "signed_up_at", "referral_code")

# --- the context's schema: every name a template may read, and when a mail has it ---------

ALWAYS = "always"  # in every mail
READER = "reader"  # missing for a reader without the data (no first name, no orders)
CAMPAIGN = "campaign"  # there when the campaign file (or mailer.yaml) gives it


@dataclass(frozen=True)
class ContextName:
    """A top-level name of the context: when a mail has it, and its fields with theirs
    (None: a value such as `now`, whose attributes are Python's, not checked)."""

    presence: str
    fields: Mapping[str, str] | None = None
    open: frozenset[str] = frozenset()  # fields whose own keys are the store's data


CONTEXT_SCHEMA: Mapping[str, ContextName] = {
    "customer": ContextName(ALWAYS, {
        **dict.fromkeys(CUSTOMER_FIELDS, READER),
        "id": ALWAYS, "email": ALWAYS, "now": ALWAYS,
        "timezone": ALWAYS,  # the workspace's zone when the customer has none
        "age": READER,
        "stage": ALWAYS,  # the relationship stage as of the mail's now
        "predictions": READER},  # missing until `mailer predict` fitted the store
                            open=frozenset({"attributes"})),
    "stats": ContextName(ALWAYS, {
        "orders": ALWAYS, "spent": ALWAYS, "average_order": READER, "first_order_at": READER,
        "last_order_at": READER, "favourite_category": READER}),
    "campaign": ContextName(ALWAYS, {
        "name": ALWAYS, "slug": ALWAYS, "starts": CAMPAIGN, "ends": CAMPAIGN}),
    "intro": ContextName(READER),  # the first intro whose segment the reader is in, or default
    "coupon": ContextName(ALWAYS, dict.fromkeys(("code", "value", "expires_at"), CAMPAIGN)),
    "referral": ContextName(ALWAYS, dict.fromkeys(("code", "url", "deadline", "reward"),
                                                  CAMPAIGN)),
    "links": ContextName(ALWAYS, {
        **dict.fromkeys(("unsubscribe", "preferences", "browser", "rating",
                         "keep_subscribed"), ALWAYS),
        "survey": CAMPAIGN}),  # links.survey[value]: only in campaigns naming a survey
    "store": ContextName(ALWAYS, {
        "name": ALWAYS, "address": ALWAYS, "currency": ALWAYS, "locale": ALWAYS,
        "url": CAMPAIGN}),
    "holiday": ContextName(ALWAYS, {"name": CAMPAIGN}),  # a holiday campaign's occasion
    # a date campaign's: the date it marks and the years since (missing without a date)
    "occasion": ContextName(ALWAYS, {"date": READER, "years": READER}),
    # an abandoned_checkout campaign's checkout: its cart's URL (missing when the shop
    # sent none), its lines ({sku, product, quantity, price}) and total, in major units
    "checkout": ContextName(ALWAYS, {"url": CAMPAIGN, "items": CAMPAIGN, "total": CAMPAIGN,
                                     "currency": CAMPAIGN}),
    # a back_in_stock campaign's product: its sku, name and price (major units; name and
    # price missing when the shop sent none) and its page (missing without one)
    "product": ContextName(ALWAYS, dict.fromkeys(("sku", "name", "price", "currency",
                                                  "url"), CAMPAIGN)),
    "now": ContextName(ALWAYS),
    # "you may like", best first: [] for a reader without any (`mailer recommend`)
    "recommendations": ContextName(ALWAYS),
}

# Fields of a field: what `customer.predictions.<name>` may read.
PREDICTION_FIELDS = ("p_alive", "expected_orders_90d", "predicted_clv_365d",
                     "next_order_expected_at", "churn_risk")
NESTED: Mapping[tuple[str, str], tuple[str, ...]] = {
    ("customer", "predictions"): PREDICTION_FIELDS}

# The stats keys holding the times of the latest paid orders, newest first (the stage
# reads them), the stored predictions and recommendations; build_context takes them
# out, so templates never see them in `stats`.
LATEST = "_latest_orders"
PREDICTIONS = "_predictions"
RECOMMENDATIONS = "_recommendations"

# What a record (a dict) answers besides its keys: the sandbox lets templates read these.
_DICT_READS = frozenset({"get", "items", "keys", "values", "copy"})


@dataclass(frozen=True)
class Known:
    """A use of the context checked against the schema: KEY is how deep the schema
    knows it (`customer.first_name`, `customer.attributes.size`, `now`), PRESENCE when
    a mail has it, OPEN whether its last part is a key of the store's own data."""

    key: tuple[str, ...]
    presence: str
    open: bool = False


def look_up(path: tuple[str, ...]) -> Known | str:
    """PATH (a name and the attributes read after it) in the schema, or why it is not
    there: `unknown variable customer.frist_name (did you mean first_name?)`."""
    from mailer.core.suggest import did_you_mean

    entry = CONTEXT_SCHEMA.get(path[0])
    if entry is None:
        return f"unknown variable {path[0]}" + did_you_mean(
            path[0], CONTEXT_SCHEMA, otherwise=f"; the context has {', '.join(CONTEXT_SCHEMA)}")
    if entry.fields is None or len(path) == 1:
        return Known(path[:1], entry.presence)
    field = path[1]
    if field not in entry.fields:
        if field in _DICT_READS:
            return Known(path[:1], entry.presence)
        return f"unknown variable {'.'.join(path[:2])}" + did_you_mean(
            field, entry.fields, otherwise=f"; {path[0]} has {', '.join(entry.fields)}")
    presence = entry.fields[field] if entry.presence == ALWAYS else entry.presence
    nested = NESTED.get((path[0], field))
    if nested is not None and len(path) > 2:
        if path[2] not in nested:
            return f"unknown variable {'.'.join(path[:3])}" + did_you_mean(
                path[2], nested, otherwise=f"; {'.'.join(path[:2])} has {', '.join(nested)}")
        return Known(path[:3], presence)
    if field in entry.open and len(path) > 2 and path[2] not in _DICT_READS:
        return Known(path[:3], READER, open=True)
    return Known(path[:2], presence)


def has(context: Mapping[str, Any], key: tuple[str, ...]) -> bool:
    """Whether CONTEXT holds the value at KEY (a Known's key)."""
    value: Any = context
    for part in key:
        if not isinstance(value, Mapping) or part not in value:
            return False
        value = value[part]
    return True


def load_customers(conn: Connection, ids: Sequence[int]) -> dict[int, Profile]:
    """The customers' profiles by id."""
    return people_by_id(conn, ids)


def load_stats(conn: Connection, ids: Sequence[int], *, now: datetime,
               currency: str) -> dict[int, dict[str, Any]]:
    """orders, spent, average_order, first/last order time and favourite category, and
    (under the keys build_context takes out) what the stage, predictions and
    recommendations read."""
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
    # As many as the strictest commitment rule reads: the stage is computed per mail
    # with the workspace's rules (mailer.insight.stages.stage_of_latest).
    for customer_id, times in latest_paid_times(conn, ids, now=now,
                                                limit=MAX_COMMITTED_ORDERS).items():
        stats.setdefault(customer_id, {"orders": 0, "spent": Decimal(0)})[LATEST] = times
    for customer_id, scored in predictions_of(conn, ids).items():
        stats.setdefault(customer_id, {"orders": 0, "spent": Decimal(0)})[PREDICTIONS] = (
            prediction_fields(scored, currency))
    for customer_id, products in recommendations_of(conn, ids, now=now).items():
        stats.setdefault(customer_id, {"orders": 0, "spent": Decimal(0)})[RECOMMENDATIONS] = [
            product.as_json() for product in products]
    return stats


def prediction_fields(scored: Scored, currency: str) -> dict[str, Any]:
    """A customer's stored predictions as templates (and the card) read them: the
    lifetime value in major units of CURRENCY, like `stats.spent`; no expected next
    order is left out, not None."""
    fields: dict[str, Any] = {
        "p_alive": scored.p_alive, "expected_orders_90d": scored.expected_orders_90d,
        "predicted_clv_365d": Decimal(scored.predicted_clv_365d).scaleb(-exponent(currency)),
        "churn_risk": scored.churn_risk}
    if scored.next_order_expected_at is not None:
        fields["next_order_expected_at"] = scored.next_order_expected_at
    return fields


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
                  coupon_expires_at: datetime | None = None,
                  survey: Survey | None = None, occurrence: str = "",
                  checkout: Mapping[str, Any] | None = None,
                  product: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The context of §4.4 for one recipient (pure). SURVEY is the one the campaign
    version froze (Version.survey): its first question's scale makes `links.survey`.
    OCCURRENCE (`holiday:DE:2026-12-25`) names a holiday campaign's occasion; without
    one, the customer's next occasion from now is the one (a preview). CHECKOUT is an
    abandoned_checkout mail's (checkout_context); without one, a sample cart (a preview).
    PRODUCT is a back_in_stock mail's (product_context); without one, a sample."""
    tz = zone(customer.timezone or settings.timezone)
    person: dict[str, Any] = {"id": customer.store_id, "email": customer.email,
                              "now": now.astimezone(tz)}
    for name in CUSTOMER_FIELDS:
        value = getattr(customer, name)
        if value not in (None, "", [], {}):
            person[name] = value
    person.setdefault("timezone", tz.key)
    if customer.birth_date is not None:
        person["age"] = age(customer.birth_date, now.astimezone(tz).date())
    stats = dict(stats or {"orders": 0, "spent": Decimal(0)})
    # Stats made elsewhere (tests, validate's samples) may lack the latest orders: their
    # last order is the one time they give.
    latest = stats.pop(LATEST, [stats["last_order_at"]] if "last_order_at" in stats else [])
    person["stage"] = str(stage_of_latest(int(stats["orders"]), latest, now=now,
                                          rules=settings.stages))
    predictions = stats.pop(PREDICTIONS, None)
    if predictions is not None:
        person["predictions"] = predictions
    recommendations = stats.pop(RECOMMENDATIONS, [])
    context: dict[str, Any] = {
        "customer": person,
        "stats": stats,
        **version_values(settings, slug, campaign),
        "links": recipient_links(settings.tracking.base_url, customer=customer.store_id,
                                 campaign=slug, message=message, key=key,
                                 survey=SCALES[survey.questions[0].kind] if survey else None),
        "now": now,
        "coupon": {},
        "referral": {},
        "holiday": {},
        "occasion": {},
        "checkout": {},
        "product": {},
        "recommendations": recommendations,
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
    if campaign.trigger == "holiday":
        context["holiday"] = {"name": holiday_of(customer, settings, campaign, now,
                                                 occurrence)}
    if campaign.trigger == "abandoned_checkout":
        context["checkout"] = dict(checkout if checkout is not None else
                                   sample_checkout(settings.store.currency))
    if campaign.trigger == "back_in_stock":
        context["product"] = dict(product if product is not None else
                                  sample_product(settings.store.currency))
    if campaign.trigger == "date":
        context["occasion"] = occasion_of(customer, stats, campaign, now.astimezone(tz),
                                          occurrence)
    return context


def checkout_context(view: CheckoutView) -> dict[str, Any]:
    """A checkout as templates read it: money in major units of its currency."""
    def major(minor: int) -> Decimal:
        return Decimal(format_minor(minor, view.currency))

    found: dict[str, Any] = {
        "items": [{"sku": item.get("sku"), "product": item.get("product"),
                   "quantity": item.get("quantity"),
                   "price": major(int(item.get("price_minor") or 0))} for item in view.items],
        "total": major(view.total_minor), "currency": view.currency}
    if view.url:
        found["url"] = view.url
    return found


def sample_checkout(currency: str) -> dict[str, Any]:
    """The cart a preview or `validate` shows for an abandoned_checkout campaign."""
    return checkout_context(CheckoutView(
        "https://shop.example/cart/restore/PREVIEW",
        [{"sku": "SAMPLE-1", "product": "Sample product", "quantity": 2,
          "price_minor": 1250}], 2500, currency))


def load_checkouts(conn: Connection, rows: Sequence[tuple[int, int, str]]
                   ) -> dict[int, dict[str, Any]]:
    """Per row id, the checkout context of the rows (row id, customer id, occurrence)
    that are an abandoned checkout's mails (`checkout:<id>`, `checkout-reminder:<id>`)."""
    keys = {row_id: (customer_id, occurrence.partition(":")[2])
            for row_id, customer_id, occurrence in rows
            if occurrence.startswith(CHECKOUT_OCCURRENCES)}
    views = checkouts_by_key(conn, keys.values())
    return {row_id: checkout_context(views[key]) for row_id, key in keys.items()
            if key in views}


# The occurrences of an abandoned checkout's mails: checkout:<id> and its reminder's.
CHECKOUT_OCCURRENCES = (CHECKOUT, CHECKOUT_REMINDER)


def product_context(view: ProductView) -> dict[str, Any]:
    """A product as templates read it: its price in major units of its currency (every
    stored product has one: the store's when the shop named none)."""
    found: dict[str, Any] = {"sku": view.sku}
    if view.name:
        found["name"] = view.name
    if view.currency:
        found["currency"] = view.currency
        if view.price_minor is not None:
            found["price"] = Decimal(format_minor(view.price_minor, view.currency))
    if view.url:
        found["url"] = view.url
    return found


def sample_product(currency: str) -> dict[str, Any]:
    """The product a preview or `validate` shows for a back_in_stock campaign."""
    return product_context(ProductView("SAMPLE-1", "Sample product", 4990, currency,
                                       "https://shop.example/products/sample"))


def load_products(conn: Connection, rows: Sequence[tuple[int, str]]
                  ) -> dict[int, dict[str, Any]]:
    """Per row id, the product context of the rows (row id, occurrence) that are a
    back_in_stock mail's (`stock:<sku>:<date>`), in one query."""
    skus = {row_id: sku for row_id, occurrence in rows
            if (sku := stock_sku(occurrence)) is not None}
    views = products_by_sku(conn, skus.values())
    return {row_id: product_context(views[sku]) for row_id, sku in skus.items()
            if sku in views}


def occasion_of(customer: Profile, stats: Mapping[str, Any], campaign: Campaign,
                local_now: datetime, occurrence: str) -> dict[str, Any]:
    """A date campaign's `occasion`: the date it marks (the renewal date itself, or this
    year's anniversary) and `years` since the customer's date (0 without `yearly`), for
    OCCURRENCE's year (`date:first_order_at:2027`); without one (a preview), the next
    occasion whose mail day has not passed. {} for a customer without a date."""
    moment = stats.get("first_order_at")
    value = date_value(campaign.field or "", attributes=customer.attributes,
                       signed_up_at=customer.signed_up_at,
                       first_order_at=moment if isinstance(moment, datetime) else None,
                       tz=local_now.tzinfo)
    if value is None:
        return {}
    kind, _, rest = occurrence.partition(":")
    year_text = rest.rpartition(":")[2]
    if not campaign.yearly:
        return {"date": value, "years": 0}
    if kind == "date" and year_text.isdigit():
        year = int(year_text)
    else:
        today, offset = local_now.date(), timedelta(days=campaign.offset_days)
        year = max(value.year + 1, (today - offset).year - 1)
        while anniversary_in(value, year) + offset < today:
            year += 1
    return {"date": anniversary_in(value, year), "years": year - value.year}


def date_value(field: str, *, attributes: Mapping[str, Any] | None,
               signed_up_at: datetime | None, first_order_at: datetime | None,
               tz: Any) -> date | None:
    """FIELD's date for a customer as a date campaign reads it (also the card's): a
    timestamp's local date in TZ, an attribute's written date; None when missing or no
    date."""
    if field.startswith("attributes."):
        return written_date((attributes or {}).get(field.removeprefix("attributes.")))
    moment = first_order_at if field == "first_order_at" else signed_up_at
    return moment.astimezone(tz).date() if moment is not None else None


def version_values(settings: Settings, slug: str, campaign: Campaign) -> dict[str, Any]:
    """`campaign` and `store`: the values every mail of a campaign version shares (the
    links made of them alone are the version's, mailer.mail.tracking.held_links)."""
    workspace_tz = zone(settings.timezone)
    return {
        "campaign": {"name": campaign.name, "slug": slug,
                     # aware, on the workspace's wall clock (what the file says)
                     **({"starts": _moment(campaign.starts, workspace_tz)}
                        if campaign.starts else {}),
                     **({"ends": _moment(campaign.ends, workspace_tz)} if campaign.ends else {})},
        "store": {"name": settings.store.name, "address": settings.store.address,
                  "currency": settings.store.currency, "locale": settings.store.locale,
                  **({"url": settings.store.url} if settings.store.url else {})}}


def holiday_of(customer: Profile, settings: Settings, campaign: Campaign, now: datetime,
               occurrence: str) -> str:
    """The name of a holiday campaign's occasion in the customer's language (where the
    holidays package has it): OCCURRENCE's country and date, else the customer's first
    occasion on or after their local today + days_before; "" for a fixed date that is no
    public holiday there."""
    from mailer.core.holidays import country_code, holiday_name, holidays_on

    language = customer.locale or settings.store.locale
    kind, _, rest = occurrence.partition(":")
    code, _, day_text = rest.partition(":")
    if kind == "holiday" and day_text:
        return holiday_name(code, date.fromisoformat(day_text), language)
    workspace = settings.holidays.country if settings.holidays is not None else None
    country = country_code(customer.country) or workspace
    tz = zone(customer.timezone or settings.timezone)
    first = now.astimezone(tz).date() + timedelta(days=campaign.days_before or 0)
    for ahead in range(367):
        day = first + timedelta(days=ahead)
        if campaign.country and country is not None and holidays_on(
                day, only=campaign.only or (), except_=campaign.except_ or (),
                countries=(country,)):
            return holiday_name(country, day, language)
        if campaign.dates and any(k in campaign.dates for k in _month_days(day)):
            return holiday_name(country, day, language) if country else ""
    return ""


def _month_days(day: date) -> tuple[str, ...]:
    """The "MM-DD" keys DAY celebrates: 02-29 on 28 February in other years."""
    leapless = (day.month, day.day) == (2, 28) and not calendar.isleap(day.year)
    return (f"{day:%m-%d}", "02-29") if leapless else (f"{day:%m-%d}",)


