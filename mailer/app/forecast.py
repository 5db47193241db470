"""`mailer forecast`: the daemon's hourly sweep over a simulated clock (DESIGN §5).

Every hour from the start, every campaign is planned in priority order, exactly
as a daemon sweep would, on a scratch ledger: a backup copy of the SQLite file,
or on PostgreSQL one transaction that is rolled back at the end. Store data
stays as it was at the start; planned mails count as sent. Nothing the forecast
plans reaches the real ledger.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from mailer.config.campaign import Campaign
from mailer.config.conditions import SegmentSpec
from mailer.config.settings import Settings
from mailer.core.clock import zone
from mailer.planning.frozen import freeze
from mailer.planning.planner import plan_due
from mailer.segments.runner import scope_for
from mailer.store.db import Engine
from mailer.store.ledger import count_queued_as_sent, planned_times, scratch_ledger


@dataclass
class Forecast:
    start: datetime
    days: list[date]
    mails: dict[date, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))
    caps_hit: dict[str, set[int]] = field(default_factory=lambda: defaultdict(set))
    max_per_customer_7d: int = 0
    topics: dict[str, str] = field(default_factory=dict)  # campaign -> its topic
    # mails by the hour of the workspace zone they may leave in (their send_after): where
    # `send_at: best` and quiet hours spread a day's mails
    hours: Counter[int] = field(default_factory=Counter)

    def by_topic(self, day: date) -> dict[str, int]:
        """DAY's mails per topic, every topic of the campaigns (zeros included)."""
        counted: Counter[str] = Counter({topic: 0 for topic in self.topics.values()})
        for slug, mails in self.mails[day].items():
            counted[self.topics.get(slug, "general")] += mails
        return dict(sorted(counted.items()))

    def as_json(self, campaigns: list[str]) -> dict[str, Any]:
        return {"days": [{"date": day.isoformat(),
                          "campaigns": {slug: self.mails[day][slug] for slug in campaigns},
                          "topics": self.by_topic(day)}
                         for day in self.days],
                "caps_hit": {label: len(ids) for label, ids in sorted(self.caps_hit.items())},
                "max_per_customer_7d": self.max_per_customer_7d,
                "hours": self.hour_labels()}

    def hour_labels(self) -> dict[str, int]:
        """{"09:00": mails, ...} for the hours that have mails, in order."""
        return {f"{hour:02d}:00": n for hour, n in sorted(self.hours.items()) if n}


def run_forecast(engine: Engine, specs: dict[str, SegmentSpec], campaigns: dict[str, Campaign],
                 *, settings: Settings, start: datetime, days: int,
                 versions: dict[str, dict[str, Any]], steady: bool = True) -> Forecast:
    """Sweep every hour of DAYS days from START and count what would be sent. STEADY
    reads the store data once (mailer.planning.frozen), so most sweeps skip the per-zone
    queries that cannot find anyone; without it every sweep runs every query, the
    same result slower (the benchmark's baseline)."""
    tz = zone(settings.timezone)
    first = start.astimezone(tz).date()
    result = Forecast(start=start, days=[first + timedelta(days=n) for n in range(days)],
                      topics={slug: campaign.topic for slug, campaign in campaigns.items()})
    with scratch_ledger(engine) as ledger:
        frozen = freeze(ledger, settings, campaigns, start=start,
                        end=start + timedelta(days=days)) if steady else None
        for hour in range(days * 24):
            now = start + timedelta(hours=hour)
            scope = scope_for(settings, now, ledger)
            day = now.astimezone(tz).date()
            for plan in plan_due(ledger, specs, campaigns, scope=scope, settings=settings,
                                 versions=versions, choose_intros=False, frozen=frozen,
                                 record_runs=not steady):
                result.mails[day][plan.campaign] += plan.planned_count
                result.hours.update(mail.send_after.astimezone(tz).hour
                                    for mail in plan.planned)
                for excluded in plan.excluded:
                    if excluded.reason == "frequency_cap":
                        result.caps_hit[excluded.cap].add(excluded.customer_id)
            with ledger.begin() as conn:  # planned mails count as sent
                count_queued_as_sent(conn)
        with ledger.connect() as conn:
            result.max_per_customer_7d = _busiest_week(planned_times(conn, start))
    return result


def _busiest_week(rows: Iterable[tuple[int, datetime]]) -> int:
    """The most mails any one customer gets in any 7-day window."""
    best, current = 0, None
    window: list[datetime] = []
    for customer_id, planned in rows:
        if customer_id != current:
            current, window = customer_id, []
        window.append(planned)
        while window[0] <= planned - timedelta(days=7):
            window.pop(0)
        best = max(best, len(window))
    return best
