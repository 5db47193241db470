"""When a campaign can next become due: the instants the daemon wakes up for. Pure.

The daemon's minute sweep alone is correct (it plans whatever is due whenever
it runs); these instants only make it punctual: a cron fire, a `once` time, a
promotion's start and its reminder, and for the triggers that run on each
customer's local day the next moment `send_at` is reached in a zone of the store.
A stage_change campaign has no instant of its own: its changes appear when
`stages update` records them, and the daemon sweeps right after each of its
updates (hourly, mailer.daemon.scheduler), so it needs no wake-up here. Nor do the
triggers the store's data makes due (sunset, signup, abandoned_checkout and its
reminder, back_in_stock): a webhook may bring a sign-up, a checkout or a restock at any
moment, the instants are the data's, not the campaign file's, and the interval sweep
(at least every minute) plans them.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from zoneinfo import ZoneInfo

from mailer.config.campaign import Campaign
from mailer.core.clock import as_local
from mailer.planning.triggers import next_fire, next_local_time, parse_cron


def next_wakeup(campaign: Campaign, after: datetime, tz: ZoneInfo,
                zones: Iterable[str]) -> datetime | None:
    """The first instant strictly after AFTER at which CAMPAIGN may have something new
    to plan, or None when it never will again (a past `once`, an ended promotion) or
    when only a `stages update` can make it due (stage_change: the daemon sweeps after
    each)."""
    moments: list[datetime | None] = []
    if campaign.trigger == "schedule" and campaign.schedule is not None:
        moments.append(next_fire(parse_cron(campaign.schedule), after, tz))
    elif campaign.trigger == "once" and campaign.at is not None:
        moments.append(as_local(campaign.at, tz))
    elif campaign.trigger == "promotion" and campaign.starts and campaign.ends:
        moments.append(as_local(campaign.starts, tz))
        if campaign.reminder is not None and campaign.reminder.before_end is not None:
            moments.append(as_local(campaign.ends, tz) - campaign.reminder.before_end)
    elif campaign.trigger in ("birthday", "after_order", "holiday", "date"):
        moments += [next_local_time(name, campaign.send_time, after) for name in set(zones)]
    future = [moment for moment in moments if moment is not None and moment > after]
    return min(future, default=None)
