"""Public holidays by country (the `holiday` trigger, `holiday.name` in templates). Pure.

The one module that imports the `holidays` package, the owner of holiday data. Countries
are ISO 3166 alpha-2 codes the package knows. `only:` / `except:` match the package's
English names case-insensitively; a template gets the name in the customer's language
where the package has one (else the country's own). Occurrence keys never hold a name:
names change between package releases.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date
from functools import cache

import holidays as _package

COUNTRIES: frozenset[str] = frozenset(
    code for code in _package.list_supported_countries() if len(code) == 2)
UNKNOWN = "ZZ"  # CLDR's "unknown region": a fixed occasion of a customer without a country


def country_code(text: str | None) -> str | None:
    """TEXT as a supported alpha-2 code (`de ` reads DE), or None."""
    code = (text or "").strip().upper()
    return code if code in COUNTRIES else None


@cache
def _calendar(code: str, year: int, language: str | None) -> dict[date, tuple[str, ...]]:
    """Every holiday of CODE in YEAR: day -> names (a day may hold two)."""
    found = _package.country_holidays(code, years=year, language=language)
    return {day: tuple(found.get_list(day)) for day in sorted(found)}


@cache
def _english(code: str) -> str | None:
    """The package's English language for CODE, or None when its default is the one."""
    languages = _package.country_holidays(code).supported_languages
    return next((tag for tag in ("en_US", "en_GB", "en") if tag in languages), None)


def _passes(name: str, only: frozenset[str], except_: frozenset[str]) -> bool:
    folded = name.casefold()
    return (not only or folded in only) and folded not in except_


def _folded(names: Iterable[str]) -> frozenset[str]:
    return frozenset(name.strip().casefold() for name in names)


def holidays_on(day: date, *, only: Iterable[str] = (), except_: Iterable[str] = (),
                countries: Iterable[str] | None = None) -> dict[str, str]:
    """Country code -> the English name(s) of its public holidays on DAY that pass
    ONLY (when given) and EXCEPT, joined by "; ", among COUNTRIES (default: all)."""
    return dict(_on(day, _folded(only), _folded(except_),
                    None if countries is None else frozenset(countries)))


@cache
def _on(day: date, wanted: frozenset[str], unwanted: frozenset[str],
        countries: frozenset[str] | None) -> tuple[tuple[str, str], ...]:
    """holidays_on, remembered: the planner asks the same day in every sweep."""
    found = []
    for code in sorted(COUNTRIES if countries is None else countries):
        names = [name for name in _calendar(code, day.year, _english(code)).get(day, ())
                 if _passes(name, wanted, unwanted)]
        if names:
            found.append((code, "; ".join(names)))
    return tuple(found)


def _language(code: str, locale: str | None) -> str | None:
    """The package's language for LOCALE (`de_DE`, `de-DE`, `de`) in CODE's calendar:
    the exact tag, else its language, else a regional form of it; None: the default."""
    if not locale:
        return None
    tag = locale.strip().replace("-", "_")
    language = tag.split("_")[0].lower()
    supported = _package.country_holidays(code).supported_languages
    lowered = {s.lower(): s for s in supported}
    for wanted in (tag.lower(), language):
        if wanted in lowered:
            return lowered[wanted]
    return next((s for s in supported if s.lower().startswith(language + "_")), None)


def holiday_name(code: str, day: date, locale: str | None) -> str:
    """The name(s) of CODE's holidays on DAY in LOCALE's language where the package has
    it, else in the country's default; "" when DAY is none (a fixed occasion)."""
    if code not in COUNTRIES:
        return ""
    return "; ".join(_calendar(code, day.year, _language(code, locale)).get(day, ()))
