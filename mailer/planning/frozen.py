"""The store as a forecast holds it still: what its hourly sweeps may read once.

A forecast (mailer.app.forecast) plans hour after hour into a scratch copy whose
store data stays as it was at the start: only the ledger changes (and the codes its
mails get). The per-zone triggers (birthday, after_order, stage_change, holiday, date)
build one query per zone of the store and sweep, most of which find nobody: no customer
of that zone has a birthday today, placed an order in the window, changed stage, lives
in a country with a public holiday that day, or has the date a date campaign marks
today (or a value that is no date).
`FrozenStore` answers that from the store data read once, so the planner neither
builds nor runs those queries. Each answer is about a superset of the query's rows
(everyone in the zone, whatever the segment), so a "no" is certain and a "maybe"
runs the real query: the forecast's result is the same with or without it. The
store's distribution of engagement hours (`send_at: best`) is read here too: once per
forecast, and once per planning run outside one.
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from mailer.config.campaign import Campaign, written_date
from mailer.config.settings import Settings
from mailer.planning.send_hour import LOOKBACK, store_engagement, store_prior
from mailer.planning.triggers import birthday_keys
from mailer.store.customers import (
    birthdays_by_zone,
    countries_by_zone,
    date_values,
    paid_order_times,
    time_zones,
)
from mailer.store.db import Engine
from mailer.store.events import store_human_hours
from mailer.store.insight.stages import stage_change_times

# The per-zone trigger windows reach this far around an hour of the forecast (a local day
# in any zone, its yesterday for stage changes, plus daylight-saving shifts); a window
# outside what was read is answered "maybe".
REACH = timedelta(days=3)


@dataclass
class ZoneDates:
    """The dates a date campaign's field holds for the customers of one zone."""

    days: set[str] = field(default_factory=set)  # local "YYYY-MM-DD"
    earliest: dict[str, int] = field(default_factory=dict)  # "MM-DD" -> the earliest year
    undated: bool = False  # someone's value is no date

    def add(self, day: date) -> None:
        self.days.add(day.isoformat())
        key = f"{day:%m-%d}"
        self.earliest[key] = min(self.earliest.get(key, day.year), day.year)


@dataclass(frozen=True)
class FrozenStore:
    """Fixed facts of a store over [SINCE, UNTIL), for the forecast's sweeps."""

    zones: list[str]  # every zone customers live in and the workspace's, sorted
    since: datetime
    until: datetime
    birthdays: frozenset[tuple[str, str]]  # (zone, "MM-DD")
    orders: dict[str, list[datetime]]  # zone -> placed_at of its paid orders, sorted
    changes: dict[tuple[str, str], list[tuple[datetime, str]]]  # (zone, to) -> sorted
    # (detected_at, from)
    # zone -> the folded countries of its customers (None: no country)
    countries: dict[str, frozenset[str | None]] = field(default_factory=dict)
    dates: dict[tuple[str, str], ZoneDates] = field(default_factory=dict)  # (zone, field)
    # ZoneInfo keeps only 8 zones strongly cached and a store has dozens: holding them
    # all makes each sweep's ZoneInfo(name) a lookup, not a file read.
    held: tuple[ZoneInfo, ...] = ()
    # the store's distribution of engagement hours (`send_at: best`), read once
    send_prior: tuple[float, ...] | None = None
    date_fields: frozenset[str] = frozenset()  # the date campaigns' fields read
    unreadable: frozenset[str] = frozenset()  # zones ZoneInfo does not know: always maybe

    def may_have_birthdays(self, zone_name: str, keys: Iterable[str]) -> bool:
        """Whether anyone living in ZONE_NAME has one of these "MM-DD" birthdays."""
        return any((zone_name, key) in self.birthdays for key in keys)

    def may_have_orders(self, zone_name: str, start: datetime, end: datetime) -> bool:
        """Whether anyone living in ZONE_NAME placed a paid order in [START, END)."""
        if start < self.since or end > self.until:
            return True
        times = self.orders.get(zone_name, [])
        first = bisect.bisect_left(times, start)
        return first < len(times) and times[first] < end

    def may_have_dates(self, zone_name: str, date_field: str, marked: date,
                       yearly: bool) -> bool:
        """Whether anyone living in ZONE_NAME has MARKED as DATE_FIELD's date (YEARLY: an
        earlier date whose anniversary MARKED is)."""
        found = self.dates.get((zone_name, date_field))
        if date_field not in self.date_fields or zone_name in self.unreadable:
            return True
        if found is None:
            return False
        if not yearly:
            return marked.isoformat() in found.days
        return any(found.earliest.get(key, marked.year) < marked.year
                   for key in birthday_keys(marked))

    def may_have_undated(self, zone_name: str, date_field: str) -> bool:
        """Whether anyone living in ZONE_NAME has a value for DATE_FIELD that is no date."""
        found = self.dates.get((zone_name, date_field))
        if date_field not in self.date_fields or zone_name in self.unreadable:
            return True
        return found is not None and found.undated

    def may_have_changes(self, zone_name: str, to: str, from_: str | None, start: datetime,
                         end: datetime, now: datetime) -> bool:
        """Whether anyone living in ZONE_NAME changed into TO (out of FROM_, when given)
        with the change detected in [START, END) and by NOW."""
        if start < self.since or end > self.until:
            return True
        return any(start <= detected < end and detected <= now
                   and (from_ is None or found == from_)
                   for detected, found in self.changes.get((zone_name, to), []))

    def may_have_holidays(self, zone_names: Iterable[str], countries: Iterable[str],
                          known: frozenset[str], others: bool) -> bool:
        """Whether anyone living in ZONE_NAMES has a country among COUNTRIES (folded
        codes) or, with OTHERS, none or one outside KNOWN (the holiday trigger's query)."""
        wanted = frozenset(countries)
        for name in zone_names:
            for country in self.countries.get(name, ()):
                if country in wanted or (others and (country is None or
                                                     country not in known)):
                    return True
        return False


def freeze(engine: Engine, settings: Settings, campaigns: dict[str, Campaign], *,
           start: datetime, end: datetime) -> FrozenStore:
    """Read the facts the sweeps from START to END need, once (ENGINE: the scratch copy)."""
    default = settings.timezone
    zones = sorted(time_zones(engine) | {default})
    longest = max((c.after for c in campaigns.values()
                   if c.trigger == "after_order" and c.after is not None), default=timedelta(0))
    since, until = start - longest - REACH, end + REACH
    orders: dict[str, list[datetime]] = defaultdict(list)
    changes: dict[tuple[str, str], list[tuple[datetime, str]]] = defaultdict(list)
    with engine.connect() as conn:
        birthdays = frozenset(birthdays_by_zone(conn, default))
        countries: dict[str, set[str | None]] = defaultdict(set)
        for zone_name, country in countries_by_zone(conn, default):
            countries[zone_name].add(country)
        for zone_name, placed in paid_order_times(conn, default, since, until):
            orders[zone_name].append(placed)
        for zone_name, to, from_, detected in stage_change_times(conn, default, since,
                                                                        until):
            changes[(zone_name, to)].append((detected, from_))
        date_fields = frozenset(c.field for c in campaigns.values()
                                if c.trigger == "date" and c.field is not None)
        dates: dict[tuple[str, str], ZoneDates] = defaultdict(ZoneDates)
        for date_field in sorted(date_fields):
            for zone_name, value in date_values(conn, default, date_field):
                facts = dates[(zone_name, date_field)]
                if isinstance(value, datetime):
                    if _known_zone(zone_name):
                        facts.add(value.astimezone(ZoneInfo(zone_name)).date())
                    continue
                day = written_date(value)
                if day is None:
                    facts.undated = True
                else:
                    facts.add(day)
    prior = None
    if any(campaign.best_hour for campaign in campaigns.values()):
        prior = send_prior(engine, default, start)
    return FrozenStore(zones=zones, since=since, until=until, birthdays=birthdays,
                       send_prior=prior,
                       orders={z: sorted(times) for z, times in orders.items()},
                       changes={k: sorted(found) for k, found in changes.items()},
                       countries={z: frozenset(found) for z, found in countries.items()},
                       held=tuple(ZoneInfo(z) for z in zones if _known_zone(z)),
                       dates=dict(dates), date_fields=date_fields,
                       unreadable=frozenset(z for z in zones if not _known_zone(z)))


def send_prior(engine: Engine, default_zone: str, now: datetime) -> tuple[float, ...]:
    """The store's share of each local hour of its human clicks (else opens) in the
    LOOKBACK before NOW, each in its customer's zone (DEFAULT_ZONE without one): the
    prior of every customer's best hour (mailer.planning.send_hour), read once per
    planning run, and once per forecast."""
    with engine.connect() as conn:
        rows = store_human_hours(conn, now - LOOKBACK, now)
    return store_prior(store_engagement(rows, default_zone))


def _known_zone(name: str) -> bool:
    try:
        ZoneInfo(name)
    except (KeyError, ValueError, OSError):  # ZoneInfoNotFoundError is a KeyError
        return False
    return True
