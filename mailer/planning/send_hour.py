"""The right hour (`send_at: best`; docs/campaigns.md, "The right hour"): each customer's
best local hour for a mail, from when they engaged. Pure: counts in, hours out.

A customer's hours are those of their human clicks in the past LOOKBACK, or of their
human opens when they clicked nothing (mailer.core.machines.HUMAN: a machine's open or
click says nothing about a reader), each in the customer's own zone. They are
smoothed toward the store's distribution (the same hours over every customer, each
in their own zone) with a prior worth PRIOR_CLICKS clicks: an hour's score is the
customer's count there plus PRIOR_CLICKS times the store's share of it. The best hour
is the allowed one (the campaign's window less quiet hours) with the highest score;
of hours that tie, the one that comes soonest. A customer without engagement gets
the store's best hour; in a store without any, every hour ties and the mail leaves
as soon as the window allows.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

from mailer.core.clock import zone
from mailer.core.machines import CLICK, OPEN
from mailer.store.events import BUCKET_SECONDS  # the half hours the store counts in

LOOKBACK = timedelta(days=180)
# k: the store's distribution counts as this many clicks, spread over the hours as the
# store's are. An hour's prior is k times its share (under 0.2 where the store clicks
# over the day), so the customer's own clicks decide where they differ and the prior
# where they tie or are missing. bench/send_hour.py found the same shares from k = 0.5
# to 16 and worse ones at 50 (58 % within an hour for customers of 1 to 4 clicks,
# against 77 %), where the store's favourite outvotes a customer's single clicks.
PRIOR_CLICKS = 2.0
HOURS = 24

Counts = tuple[int, ...]  # per local hour 0-23


@dataclass(frozen=True)
class Engagement:
    """Human clicks and opens per local hour (one customer's, or the whole store's)."""

    clicks: Counts = (0,) * HOURS
    opens: Counts = (0,) * HOURS

    def counted(self) -> Counts:
        """The hours that count: the clicks, else (none at all) the opens."""
        return self.clicks if any(self.clicks) else self.opens


NO_ENGAGEMENT = Engagement()


@lru_cache(maxsize=1 << 16)
def local_hour(half_hour: int, tz: ZoneInfo) -> int:
    """The local hour in TZ of a half hour since the epoch (a store's events fall in a
    few thousand of them: most lookups are repeats)."""
    return datetime.fromtimestamp(half_hour * BUCKET_SECONDS, UTC).astimezone(tz).hour


def local_engagement(rows: Iterable[tuple[str, int, int]], tz: ZoneInfo) -> Engagement:
    """ROWS (kind, the half hour since the epoch, how many) as counts per local hour of
    TZ; other kinds than open and click are left out."""
    clicks, opens = [0] * HOURS, [0] * HOURS
    for kind, half_hour, count in rows:
        hour = local_hour(half_hour, tz)
        if kind == CLICK:
            clicks[hour] += count
        elif kind == OPEN:
            opens[hour] += count
    return Engagement(tuple(clicks), tuple(opens))


def combined(parts: Iterable[Engagement]) -> Engagement:
    """The sum of PARTS, hour by hour (the store's, from each zone's)."""
    clicks, opens = [0] * HOURS, [0] * HOURS
    for part in parts:
        for hour in range(HOURS):
            clicks[hour] += part.clicks[hour]
            opens[hour] += part.opens[hour]
    return Engagement(tuple(clicks), tuple(opens))


def store_engagement(rows: Iterable[tuple[str | None, str, int, int]],
                     default_zone: str) -> Engagement:
    """The store's ROWS (customer zone or None, kind, half hour, how many) in local
    hours, each in its customers' zone (DEFAULT_ZONE for those without one)."""
    by_zone: dict[str, list[tuple[str, int, int]]] = {}
    for zone_name, kind, at, count in rows:
        by_zone.setdefault(zone_name or default_zone, []).append((kind, at, count))
    return combined(local_engagement(found, zone(name)) for name, found in by_zone.items())


def store_prior(store: Engagement) -> tuple[float, ...]:
    """The store's share of each hour (its clicks, else its opens); flat without any."""
    counts = store.counted()
    total = sum(counts)
    if not total:
        return (1 / HOURS,) * HOURS
    return tuple(n / total for n in counts)


def scores(own: Engagement, prior: Sequence[float], k: float = PRIOR_CLICKS
           ) -> tuple[float, ...]:
    """Each hour's posterior weight: the customer's count plus k times the store's share."""
    counts = own.counted()
    return tuple(counts[hour] + k * prior[hour] for hour in range(HOURS))


def ranked_hours(own: Engagement, prior: Sequence[float], allowed: Sequence[int],
                 k: float = PRIOR_CLICKS) -> tuple[tuple[int, ...], ...]:
    """ALLOWED (hours in the window's order), best first, in groups of the hours that tie
    (in the window's order): the planner sends at the soonest of a group."""
    weight = scores(own, prior, k)
    groups: dict[float, list[int]] = {}
    for hour in allowed:
        groups.setdefault(weight[hour], []).append(hour)
    return tuple(tuple(groups[score]) for score in sorted(groups, reverse=True))


def by_customer(rows: Iterable[tuple[int, str, int, int]],
                zones: Mapping[int, ZoneInfo]) -> dict[int, Engagement]:
    """ROWS (customer id, kind, half hour, how many) as each customer's Engagement in
    their zone (ZONES by customer id)."""
    grouped: dict[int, list[tuple[str, int, int]]] = {}
    for customer_id, kind, at, count in rows:
        grouped.setdefault(customer_id, []).append((kind, at, count))
    return {customer_id: local_engagement(found, zones.get(customer_id, ZoneInfo("UTC")))
            for customer_id, found in grouped.items()}
