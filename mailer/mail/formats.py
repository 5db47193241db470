"""Money, dates and numbers in the reader's language (Babel, CLDR data).

Templates write `{{ stats.spent | money }}`, `{{ coupon.expires_at | datetime }}`,
`{{ referral.deadline | date }}`, `{{ n | number }}`. The locale is the customer's
`locale` when Babel knows it, else the store's (`store.locale`, default `en`); times are
shown in the customer's zone with the zone's own abbreviation from zoneinfo (a Berlin
reader sees `08:00 CET`, a New York reader `02:00 EST`). Babel owns the CLDR rules
(separators, symbol placement, month names); we only pick the locale and the zone.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, datetime
from decimal import Decimal
from functools import lru_cache
from typing import Any

from babel import Locale as Locale  # re-exported: the console's pages name the type
from babel import UnknownLocaleError
from babel.dates import format_date, format_time
from babel.numbers import format_currency, format_decimal, format_percent
from jinja2 import pass_context
from jinja2.runtime import Context

from mailer.core.clock import zone

DEFAULT_LOCALE = "en"
DATE_STYLES = ("short", "medium", "long", "full")
MAX_DIGITS = 24  # before the decimal point: no price or count of a store comes near
MAX_PATTERN = 64  # a CLDR pattern from a template is parsed per mail: keep it short


@lru_cache(maxsize=256)
def known_locale(tag: str | None) -> Locale | None:
    """The Babel locale of a tag like de-DE or pt_BR, or None when CLDR has no such one."""
    if not tag:
        return None
    try:
        return Locale.parse(tag.replace("-", "_"))
    except (UnknownLocaleError, ValueError, TypeError):
        return None


def reader_locale(customer_locale: str | None, store_locale: str | None) -> Locale:
    """The customer's locale when known, else the store's, else English."""
    return (known_locale(customer_locale) or known_locale(store_locale)
            or Locale.parse(DEFAULT_LOCALE))


def _finite(value: object) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, Decimal | int | float):
        raise TypeError(f"expected a number, got {type(value).__name__}")
    amount = Decimal(str(value))
    if not amount.is_finite():
        raise ValueError(f"{value} is not a number to show")
    if amount and amount.adjusted() >= MAX_DIGITS:  # Babel's own context fails past ~28
        raise ValueError(f"a number of more than {MAX_DIGITS} digits is too large to show")
    return amount


def _style(style: str) -> str:
    if not isinstance(style, str) or not 0 < len(style) <= MAX_PATTERN:
        raise ValueError(f"a date format is short, medium, long, full or a CLDR pattern of "
                         f"at most {MAX_PATTERN} characters")
    return style


def money(value: Decimal | int | float, currency: str, locale: Locale) -> str:
    """An amount in major units with the currency's symbol where the locale puts it."""
    return str(format_currency(_finite(value), currency, locale=locale))


def number(value: Decimal | int | float, locale: Locale) -> str:
    return str(format_decimal(_finite(value), locale=locale))


def fixed(value: Decimal | int | float, places: int, locale: Locale) -> str:
    """A number with PLACES decimals, grouped as the locale groups them (the console)."""
    pattern = "#,##0." + "0" * places if places > 0 else "#,##0"
    return str(format_decimal(_finite(value), format=pattern, locale=locale))


def share(value: Decimal | int | float, places: int, locale: Locale) -> str:
    """A share of 1 as a percentage with PLACES decimals: 0.125 -> `12.5%` (en)."""
    pattern = "#,##0." + "0" * places + "%" if places > 0 else "#,##0%"
    return str(format_percent(_finite(value), format=pattern, locale=locale))


def local_date(value: date | datetime, style: str, locale: Locale, tz_name: str) -> str:
    """A date (a date-time is first moved into the reader's zone); STYLE is short, medium,
    long, full or a CLDR pattern like `EEEE d MMMM`."""
    if isinstance(value, datetime):
        value = _in_zone(value, tz_name).date()
    return str(format_date(value, _style(style), locale=locale))


def local_datetime(value: datetime, style: str, locale: Locale, tz_name: str) -> str:
    """The moment in the reader's zone: `Sunday, November 29, 2026, 8:00 AM CET` (full)."""
    moment = _in_zone(value, tz_name)
    day = format_date(moment.date(), _style(style), locale=locale)
    hour = format_time(moment.time(), "short", locale=locale)
    return f"{day}, {hour} {moment.tzname()}"


def _in_zone(value: datetime, tz_name: str) -> datetime:
    tz = zone(tz_name)
    return value.replace(tzinfo=tz) if value.tzinfo is None else value.astimezone(tz)


# --- the Jinja filters: the locale, zone and currency come from the render's context --


def _reader(ctx: Context) -> tuple[Locale, str, Mapping[str, Any]]:
    customer = ctx.get("customer") or {}
    store = ctx.get("store") or {}
    locale = reader_locale(customer.get("locale"), store.get("locale"))
    return locale, str(customer.get("timezone") or store.get("timezone") or "UTC"), store


@pass_context
def money_filter(ctx: Context, value: Decimal | int | float, currency: str | None = None) -> str:
    locale, _, store = _reader(ctx)
    return money(value, currency or str(store.get("currency") or "EUR"), locale)


@pass_context
def number_filter(ctx: Context, value: Decimal | int | float) -> str:
    return number(value, _reader(ctx)[0])


@pass_context
def date_filter(ctx: Context, value: date | datetime, style: str = "long") -> str:
    locale, tz_name, _ = _reader(ctx)
    return local_date(value, style, locale, tz_name)


@pass_context
def datetime_filter(ctx: Context, value: datetime, style: str = "full") -> str:
    locale, tz_name, _ = _reader(ctx)
    return local_datetime(value, style, locale, tz_name)


FILTERS = {"money": money_filter, "number": number_filter, "date": date_filter,
           "datetime": datetime_filter}
