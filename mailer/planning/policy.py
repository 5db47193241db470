"""Who may be mailed now (DESIGN §4.3): pure decisions over facts gathered in batches.

A member is planned only when its consent is `subscribed`, it is not suppressed,
the address is valid, it has no row for this occurrence, it is not in a
cooldown, and every frequency cap has room (the store's and the customer's own
"fewer mails" cap); a customer who paused mail or chose other topics is not
planned either (reasons `paused`, `topic`), nor a long-silent one (`sunset`,
policy.sunset: only a `trigger: sunset` campaign mails them). A cap {max: M, per: D} has room
when fewer than M of the customer's live rows (queued, sending, deferred, sent,
unknown) have a planned time in (now - D, now]; mails planned earlier in the
same planning run count too. A cap with a topic ({max: 1, per: 7d, topic: promotions})
holds back only mails of that topic and counts only that topic's rows; one without
holds back and counts every mail. Quiet
hours delay a mail to their end in the customer's zone; a mail that could
only leave after its expiry is not planned. A `send_at: best` mail waits for the
first of the customer's best hours (mailer.planning.send_hour) it can reach before
its expiry, never one in quiet hours.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

from mailer.config.settings import Cap, QuietHours
from mailer.core.clock import localize


@dataclass(frozen=True)
class Facts:
    """What the ledger and the store say about one candidate mail."""

    consent: str
    suppressed: bool
    valid_address: bool
    already_planned: bool  # a row exists for this occurrence, whatever its status
    in_cooldown: bool
    recent: tuple[datetime, ...]  # planned times of the customer's live rows
    ordered_since_start: bool = False
    paused: bool = False  # the preference centre's 30-day pause is on
    topic_unwanted: bool = False  # the customer chose topics, and not this campaign's
    personal_caps: tuple[Cap, ...] = ()  # "fewer mails" from the preference centre
    # planned times of the live rows per topic, for the caps that name one
    by_topic: Mapping[str, tuple[datetime, ...]] = field(default_factory=dict)
    topic: str | None = None  # the candidate mail's topic (its campaign's)
    sunset: bool = False  # long silent (policy.sunset), and the campaign is no sunset one


@dataclass(frozen=True)
class Decision:
    reason: str | None  # None: planned
    send_after: datetime | None = None
    cap: Cap | None = None  # the cap that was full, for frequency_cap


def is_quiet(clock: time, quiet: QuietHours | None) -> bool:
    """Whether a local wall time falls in the quiet hours [start, end)."""
    if quiet is None:
        return False
    start, end = quiet.start, quiet.end
    return start <= clock < end if start < end else (clock >= start or clock < end)


def quiet_release(now: datetime, tz: ZoneInfo, quiet: QuietHours | None) -> datetime:
    """NOW, or the end of the quiet hours in TZ when NOW falls inside them."""
    if quiet is None:
        return now
    local = now.astimezone(tz)
    clock = local.time().replace(tzinfo=None)
    start, end = quiet.start, quiet.end
    if not is_quiet(clock, quiet):
        return now
    day = local.date() if (start < end or clock < end) else local.date() + timedelta(days=1)
    return max(now, localize(datetime.combine(day, end), tz))


def allowed_hours(window: tuple[int, ...], quiet: QuietHours | None) -> tuple[int, ...]:
    """The hours of WINDOW (in its order) whose start is outside the quiet hours."""
    return tuple(hour for hour in window if not is_quiet(time(hour), quiet))


def at_hour(now: datetime, tz: ZoneInfo, hour: int, quiet: QuietHours | None) -> datetime:
    """The first instant at or after NOW at local HOUR of TZ outside the quiet hours: NOW
    itself within that hour, else the next HOUR:00. A HOUR:00 that does not exist that
    day (a daylight-saving gap) is the first instant after the gap (core.clock.localize)."""
    local = now.astimezone(tz)
    if local.hour == hour and quiet_release(now, tz, quiet) == now:
        return now
    # Today's HOUR:00 may have passed, and a gap may move one into the quiet hours.
    for offset in range(3):
        moment = localize(datetime.combine(local.date() + timedelta(days=offset),
                                           time(hour)), tz)
        if moment > now and quiet_release(moment, tz, quiet) == moment:
            return moment
    return quiet_release(moment, tz, quiet)


Ranked = tuple[tuple[int, ...], ...]  # local hours, best first, those that tie together


def at_best_hour(now: datetime, tz: ZoneInfo, ranked: Ranked, quiet: QuietHours | None,
                 expires: datetime) -> datetime | None:
    """When a `send_at: best` mail leaves: at the best of RANKED it can reach before
    EXPIRES, the soonest of hours that tie; None when it reaches none of them."""
    for tied in ranked:
        reachable = [moment for moment in (at_hour(now, tz, hour, quiet) for hour in tied)
                     if moment < expires]
        if reachable:
            return min(reachable)
    return None


def full_cap(recent: tuple[datetime, ...], caps: tuple[Cap, ...], now: datetime,
             by_topic: Mapping[str, tuple[datetime, ...]] | None = None,
             topic: str | None = None) -> Cap | None:
    """The first cap without room for a mail of TOPIC; each counts the live rows planned
    in (now - per, now]: every row (RECENT), or for a cap with a topic that topic's rows
    (BY_TOPIC). A cap of another topic than the mail's does not apply to it."""
    for cap in caps:
        if cap.topic is not None and cap.topic != topic:
            continue
        start = now - cap.per
        rows = recent if cap.topic is None else (by_topic or {}).get(cap.topic, ())
        if sum(1 for planned in rows if start < planned <= now) >= cap.max:
            return cap
    return None


def decide(facts: Facts, *, now: datetime, caps: tuple[Cap, ...], tz: ZoneInfo,
           quiet: QuietHours | None, expires: datetime, reminder: bool = False,
           hours: Ranked | None = None) -> Decision:
    """Plan the mail, or the first reason (in the order of DESIGN §4.3) not to. HOURS:
    the customer's allowed local hours, best first in groups that tie (`send_at: best`);
    a mail that can reach none of them before its expiry leaves as soon as quiet hours
    allow."""
    if facts.consent != "subscribed":
        return Decision(facts.consent)
    if facts.suppressed:
        return Decision("suppressed")
    if not facts.valid_address:
        return Decision("invalid_address")
    if facts.already_planned:
        return Decision("already_sent")
    if facts.paused:
        return Decision("paused")
    if facts.topic_unwanted:
        return Decision("topic")
    if facts.sunset:
        return Decision("sunset")
    if reminder and facts.ordered_since_start:
        return Decision("ordered_since_start")
    if facts.in_cooldown:
        return Decision("cooldown")
    cap = full_cap(facts.recent, caps + facts.personal_caps, now, facts.by_topic,
                   facts.topic)
    if cap is not None:
        return Decision("frequency_cap", cap=cap)
    if hours:
        # `send_at: best` mails only within its window: no window hour outside quiet
        # hours before the expiry is no mail (the "within window")
        best = at_best_hour(now, tz, hours, quiet, expires)
        return Decision(None, best) if best is not None else Decision(OUTSIDE_WINDOW)
    release = quiet_release(now, tz, quiet)
    if release >= expires:
        return Decision("quiet_hours")
    return Decision(None, release)




OUTSIDE_WINDOW = "outside_window"


def in_test_group(campaign: str, customer_id: int, share: float) -> bool:
    """Whether a customer is in the A/B test share of a campaign (`winner:`): a stable
    draw from a hash, so a customer held back today is held back tomorrow too."""
    digest = hashlib.sha256(f"{campaign}:{customer_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < share


def winning_variant(sent: dict[int, int], engaged: dict[int, int]) -> int:
    """The variant with the best rate (engaged / sent mails); ties and no data: the
    lowest variant."""
    rates = {v: engaged.get(v, 0) / n for v, n in sent.items() if n}
    return min(rates, key=lambda v: (-rates[v], v)) if rates else 0
