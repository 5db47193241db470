"""When campaigns are due (DESIGN §4.2): cron lines and the trigger table. Pure.

Cron lines follow crontab(5): five fields (minute hour day-of-month month
day-of-week); day-of-week 0 and 7 are Sunday; month and weekday names are
allowed; when both day fields are restricted (neither starts with `*`), a day
matches if either does (Vixie cron's rule). Fire times are wall times in the
workspace zone. On daylight-saving days they follow cron(8): a line with `*`
in the minute or hour field runs whenever the new local time matches (nothing
in the skipped hour, both instances of the repeated one), so an hourly line
fires every real hour; a fixed-time line in a gap fires at the first instant
after it, one that occurs twice fires once, at its first instance (DESIGN
§4.0's rule). A line that can never run (30 February) is refused.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from mailer.core.clock import as_local, iso_z, localize
from mailer.core.errors import InvalidValue

if TYPE_CHECKING:  # config/campaign imports this module's cron parser
    from mailer.config.campaign import Campaign

_MONTHS = {name.lower(): number for number, name in enumerate(calendar.month_abbr) if name}
_DAYS = {"sun": 0, "mon": 1, "tue": 2, "wed": 3, "thu": 4, "fri": 5, "sat": 6}
_NONE: dict[str, int] = {}
_FIELDS: tuple[tuple[str, int, int, dict[str, int]], ...] = (
    ("minute", 0, 59, _NONE), ("hour", 0, 23, _NONE), ("day of month", 1, 31, _NONE),
           ("month", 1, 12, _MONTHS), ("day of week", 0, 7, _DAYS))
_LONGEST = {month: calendar.monthrange(2024, month)[1] for month in range(1, 13)}  # leap year
_SEARCH_DAYS = 366 * 9  # "29 February that is a Monday" recurs within 28 years; 9 covers leap days


@dataclass(frozen=True)
class Cron:
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday
    days_restricted: bool
    weekdays_restricted: bool
    # `*` in the minute or hour field: cron(8) runs such a line on the new local time at
    # once on daylight-saving days instead of making up or dropping fires.
    wildcard_time: bool = False

    def day_matches(self, day: date) -> bool:
        if day.month not in self.months:
            return False
        in_month = day.day in self.days
        in_week = (day.isoweekday() % 7) in self.weekdays
        if self.days_restricted and self.weekdays_restricted:
            return in_month or in_week
        return in_month and in_week


def _value(text: str, name: str, low: int, high: int, names: dict[str, int]) -> int:
    key = text.lower()
    if key in names:
        return names[key]
    if not text.isdigit():
        raise InvalidValue(f"{name}: {text!r} is not a number" + (
            f" or a name like {next(iter(names))}" if names else ""))
    number = int(text)
    if not low <= number <= high:
        raise InvalidValue(f"{name}: {number} is out of range {low}-{high}")
    return number


def _field(text: str, name: str, low: int, high: int, names: dict[str, int]) -> set[int]:
    found: set[int] = set()
    for part in text.split(","):
        spec, _, step_text = part.partition("/")
        step = 1
        if step_text:
            if not step_text.isdigit() or int(step_text) == 0:
                raise InvalidValue(f"{name}: step {step_text!r} must be a positive number")
            step = int(step_text)
        if spec == "*":
            first, last = low, high
        elif "-" in spec:
            start, _, end = spec.partition("-")
            first, last = (_value(start, name, low, high, names),
                           _value(end, name, low, high, names))
            if first > last:
                raise InvalidValue(f"{name}: range {spec!r} runs backwards")
        else:
            first = last = _value(spec, name, low, high, names)
            if step_text:
                # Some crons read `0/2` as `0-59/2`, others refuse it: say which is meant.
                raise InvalidValue(f"{name}: {part!r} steps from a single value; write a "
                                   f"range such as {spec}-{high}/{step}, or */{step}")
        found.update(range(first, last + 1, step))
    return found


def parse_cron(line: str) -> Cron:
    """A five-field cron line; every mistake raises InvalidValue naming the field."""
    fields = line.split()
    if len(fields) != 5:
        raise InvalidValue(f"a cron line has five fields (minute hour day month weekday), "
                           f"got {len(fields)}: {line!r}")
    values = [_field(text, *spec) for text, spec in zip(fields, _FIELDS, strict=True)]
    weekdays = {0 if d == 7 else d for d in values[4]}
    cron = Cron(frozenset(values[0]), frozenset(values[1]), frozenset(values[2]),
                frozenset(values[3]), frozenset(weekdays),
                days_restricted=not fields[2].startswith("*"),
                weekdays_restricted=not fields[4].startswith("*"),
                wildcard_time=fields[0].startswith("*") or fields[1].startswith("*"))
    if not cron.weekdays_restricted and not any(
            day <= _LONGEST[month] for month in cron.months for day in cron.days):
        # Only the day of month decides, and no month listed has that day: never runs.
        names = [calendar.month_name[month] for month in sorted(cron.months)]
        listed = names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"
        raise InvalidValue(f"day of month: {fields[2]} never comes in {listed}, "
                           "so this line would never run")
    return cron


def _fires_on(cron: Cron, day: date, tz: ZoneInfo) -> list[datetime]:
    """The fire instants of one local day, in UTC, earliest first."""
    walls = [datetime.combine(day, time(h, m)) for h in cron.hours for m in cron.minutes]
    if not cron.wildcard_time:
        return sorted({localize(wall, tz) for wall in walls})
    return sorted({moment for wall in walls for moment in _instants(wall, tz)})


def _instants(wall: datetime, tz: ZoneInfo) -> list[datetime]:
    """Every instant at which the clock of TZ reads WALL: none in a daylight-saving gap,
    two when the hour repeats (PEP 495's fold picks each offset)."""
    found = []
    for fold in (0, 1):
        moment = wall.replace(tzinfo=tz, fold=fold).astimezone(UTC)
        if moment.astimezone(tz).replace(tzinfo=None) == wall:
            found.append(moment)
    return found


def latest_fire(cron: Cron, now: datetime, tz: ZoneInfo) -> datetime | None:
    """The latest fire time at or before NOW (UTC), or None within the search horizon."""
    today = now.astimezone(tz).date()
    for back in range(_SEARCH_DAYS):
        day = today - timedelta(days=back)
        if not cron.day_matches(day):
            continue
        for fire in reversed(_fires_on(cron, day, tz)):
            if fire <= now:
                return fire
    return None


def next_fire(cron: Cron, after: datetime, tz: ZoneInfo) -> datetime | None:
    """The first fire time strictly after AFTER (UTC), or None within the search horizon."""
    today = after.astimezone(tz).date()
    for ahead in range(_SEARCH_DAYS):
        day = today + timedelta(days=ahead)
        if not cron.day_matches(day):
            continue
        for fire in _fires_on(cron, day, tz):
            if fire > after:
                return fire
    return None


def next_local_time(zone_name: str, at: time, after: datetime) -> datetime:
    """The first instant strictly after AFTER at which the wall clock of ZONE reads AT."""
    tz = ZoneInfo(zone_name)
    day = after.astimezone(tz).date()
    while True:
        moment = localize(datetime.combine(day, at), tz)
        if moment > after:
            return moment
        day += timedelta(days=1)

# --- the trigger table --------------------------------------------------------------------


@dataclass(frozen=True)
class Due:
    """An occurrence that may be planned now, and until when its mails may go out."""

    occurrence: str
    expires: datetime


def schedule_due(cron: Cron, grace: timedelta, now: datetime, tz: ZoneInfo) -> Due | None:
    """`schedule`: the latest fire time <= now, while now < fire + grace."""
    fire = latest_fire(cron, now, tz)
    if fire is None or now >= fire + grace:
        return None
    return Due(f"cron:{iso_z(fire)}", fire + grace)


def promotion_due(starts: datetime, ends: datetime, now: datetime) -> Due | None:
    """`promotion`: throughout [starts, ends)."""
    return Due("main", ends) if starts <= now < ends else None


def reminder_due(ends: datetime, before_end: timedelta, now: datetime) -> Due | None:
    """The promotion's reminder: from ends - before_end until ends."""
    return Due("reminder", ends) if ends - before_end <= now < ends else None


def once_due(at: datetime, grace: timedelta, now: datetime) -> Due | None:
    """`once`: while at <= now < at + grace."""
    return Due("once", at + grace) if at <= now < at + grace else None


@dataclass(frozen=True)
class LocalDay:
    """Today in one time zone, for the triggers that run on a customer's local day."""

    zone: str
    day: date
    start: datetime  # 00:00 local, as UTC
    end: datetime  # the next 00:00 local, as UTC
    send_from: datetime  # send_at local, as UTC


def local_day(zone_name: str, send_at: time, now: datetime) -> LocalDay | None:
    """Today in ZONE if send_at has passed there, else None (not due yet)."""
    tz = ZoneInfo(zone_name)
    day = now.astimezone(tz).date()
    start = localize(datetime.combine(day, time()), tz)
    end = localize(datetime.combine(day + timedelta(days=1), time()), tz)
    send_from = localize(datetime.combine(day, send_at), tz)
    if now < send_from:
        return None
    return LocalDay(zone_name, day, start, end, send_from)


def birthday_keys(day: date) -> list[str]:
    """The birth month-days celebrated on DAY: 29 February counts on 28 February in
    years without one."""
    keys = [f"{day:%m-%d}"]
    if (day.month, day.day) == (2, 28) and not calendar.isleap(day.year):
        keys.append("02-29")
    return keys


def birthday_occurrence(day: LocalDay) -> Due:
    """`birthday`: due on the local birthday from send_at; `birthday:YYYY` (local year);
    expires at the end of that local day."""
    return Due(f"birthday:{day.day.year}", day.end)


def holiday_date(today: date, days_before: int) -> date:
    """`holiday`: the holiday a mail due on the local day TODAY greets (DAYS_BEFORE
    ahead)."""
    return today + timedelta(days=days_before)


def holiday_occurrence(country: str, holiday: date) -> str:
    """`holiday:<CC>:<YYYY-MM-DD>`: the country and the holiday's date, never its name
    (names change between releases of the holidays package); expires with day.end.
    mailer.segments.compiler.holiday_members writes the same key in SQL."""
    return f"holiday:{country}:{holiday.isoformat()}"


def is_fixed_occasion(holiday: date, dates: tuple[str, ...] | None) -> bool:
    """Whether HOLIDAY is one of a holiday campaign's `dates` ("MM-DD"; 02-29 counts on
    28 February in other years, as birthdays do)."""
    return bool(dates) and any(key in (dates or ()) for key in birthday_keys(holiday))


# Timestamps (signed_up_at, first_order_at) earlier than this are not anniversaries: the
# yearly windows reach back to it (an online store's records start after the epoch).
EARLIEST_YEAR = 1970


def date_marked(today: date, offset_days: int) -> date:
    """`date`: the date (or anniversary) a mail due on the local day TODAY marks: TODAY −
    offset (`offset: -60d` on 2026-12-01 marks 2027-01-30)."""
    return today - timedelta(days=offset_days)


def date_occurrence(field: str, marked: date) -> str:
    """`date:<field>:<year>`: the year of the marked date, before the offset (a renewal
    on 2027-01-30 mailed on 2026-12-01 is `date:attributes.renewal_date:2027`)."""
    return f"date:{field}:{marked.year}"


def anniversary_dates(marked: date, earliest_year: int = EARLIEST_YEAR) -> list[date]:
    """`yearly`: the earlier dates whose anniversary is MARKED, from EARLIEST_YEAR to the
    year before (year 0, the date itself, is no anniversary): the same month-day each
    year, and on 28 February of a year without 29 February the leap years' 29 February."""
    found = []
    for key in birthday_keys(marked):
        month, day = int(key[:2]), int(key[3:])
        for year in range(earliest_year, marked.year):
            if day <= calendar.monthrange(year, month)[1]:
                found.append(date(year, month, day))
    return sorted(found)


def day_windows(days: list[date], tz: ZoneInfo) -> list[tuple[datetime, datetime]]:
    """[00:00, next 00:00) of each local day of DAYS in TZ, as UTC: the instants whose
    local date is one of DAYS (a timestamp's local date, for the date trigger)."""
    return [(localize(datetime.combine(day, time()), tz),
             localize(datetime.combine(day + timedelta(days=1), time()), tz)) for day in days]


def after_order_window(day: LocalDay, after: timedelta) -> tuple[datetime, datetime]:
    """`after_order`: orders whose placed_at + after falls on this local day."""
    return day.start - after, day.end - after


SUNSET_EXPIRY = timedelta(days=7)


def sunset_due(now: datetime, tz: ZoneInfo) -> Due:
    """`sunset`: due whenever its candidates meet the rule (the planner's query finds
    them); `sunset:<local date of NOW>` in TZ (the workspace zone), expiring 7 days
    after NOW. A second plan that day finds the row (`already_sent`); the next day the
    customer is no candidate, having had this campaign's mail since their last sign of
    life."""
    return Due(f"sunset:{now.astimezone(tz).date().isoformat()}", now + SUNSET_EXPIRY)


SIGNUP_EXPIRY = timedelta(hours=24)
SIGNUP = "signup"


def signup_window(now: datetime, after: timedelta) -> tuple[datetime, datetime]:
    """`signup`: the sign-ups whose mail is due at NOW and not expired, signed_up_at in
    (NOW − AFTER − 24 h, NOW − AFTER]; each mail expires at signed_up_at + AFTER + 24 h
    (SIGNUP_EXPIRY after it is due), so customers who signed up long before a new
    welcome campaign are never candidates."""
    due_by = now - after
    return due_by - SIGNUP_EXPIRY, due_by


CHECKOUT_EXPIRY = timedelta(days=7)


def checkout_window(now: datetime, after: timedelta) -> tuple[datetime, datetime]:
    """`abandoned_checkout`: the checkouts whose mail is due at NOW and not expired,
    created in (NOW − 7 d, NOW − AFTER]; each mail expires 7 days after its checkout
    was created."""
    return now - CHECKOUT_EXPIRY, now - after


def checkout_reminder_window(now: datetime, after: timedelta
                             ) -> tuple[datetime, datetime]:
    """The abandoned checkout's `reminder`: the checkouts created in (NOW − 7 d, NOW]
    whose first mail was sent at or before NOW − AFTER (the first mail's send, not the
    checkout, starts its clock, so a reminder never comes without a first mail or right
    on its heels); it expires with the first mail, 7 days after the checkout."""
    return now - CHECKOUT_EXPIRY, now - after


STOCK_EXPIRY = timedelta(days=3)


def restock_window(now: datetime) -> tuple[datetime, datetime]:
    """`back_in_stock`: the products restocked in (NOW − 3 d, NOW]; each restock's mails
    expire 3 days after it."""
    return now - STOCK_EXPIRY, now


# --- a campaign as a whole: due now, or never again (the campaigns overview) ----------


def due_now(campaign: Campaign, now: datetime, tz: ZoneInfo, zones: list[str]) -> bool:
    """Whether CAMPAIGN's trigger is due at NOW (the planner's rules, without the
    audience): a cron fire or `once` within its grace, a promotion or its reminder
    window, `send_at` passed today in a zone of the store (birthday, after_order,
    holiday, date), or
    a stage_change campaign (its changes come with each `stages update`)."""
    if campaign.trigger == "schedule" and campaign.schedule is not None:
        return schedule_due(parse_cron(campaign.schedule), campaign.grace, now, tz) is not None
    if campaign.trigger == "once" and campaign.at is not None:
        return once_due(as_local(campaign.at, tz), campaign.grace, now) is not None
    if campaign.trigger == "promotion" and campaign.starts and campaign.ends:
        ends = as_local(campaign.ends, tz)
        if promotion_due(as_local(campaign.starts, tz), ends, now) is not None:
            return True
        return campaign.reminder is not None and campaign.reminder.before_end is not None \
            and reminder_due(ends, campaign.reminder.before_end, now) is not None
    if campaign.trigger in ("birthday", "after_order", "holiday", "date"):
        return any(local_day(name, campaign.send_time, now) is not None for name in zones)
    # A recorded change may come with any `stages update`, silence with any minute, a
    # sign-up, a checkout or a restock with any webhook: always live.
    return campaign.trigger in ("stage_change", "sunset", "signup", "abandoned_checkout",
                                "back_in_stock")


def never_due_again(campaign: Campaign, now: datetime, tz: ZoneInfo) -> bool:
    """A `once` past at + grace, a promotion past its end (its reminder ends with it);
    a cron line always fires again, birthdays and orders always come."""
    if campaign.trigger == "once" and campaign.at is not None:
        return now >= as_local(campaign.at, tz) + campaign.grace
    if campaign.trigger == "promotion" and campaign.ends is not None:
        return now >= as_local(campaign.ends, tz)
    return False


@dataclass(frozen=True)
class ChangeDay:
    """One local day whose recorded stage changes a stage_change campaign may mail now."""

    occurrence: str  # stage:<to>:<the local date>
    start: datetime  # 00:00 local, as UTC
    end: datetime  # the next 00:00 local, as UTC
    expires: datetime  # the end of the next local day


def stage_change_days(zone_name: str, to: str, now: datetime) -> list[ChangeDay]:
    """`stage_change`: the changes detected yesterday and today in ZONE are due (the
    planner leaves out those recorded after NOW); each day's mails expire at the end of
    the day after it, so a change recorded late in the evening has a whole day to go."""
    tz = ZoneInfo(zone_name)
    today = now.astimezone(tz).date()
    days = []
    for day in (today - timedelta(days=1), today):
        start = localize(datetime.combine(day, time()), tz)
        end = localize(datetime.combine(day + timedelta(days=1), time()), tz)
        expires = localize(datetime.combine(day + timedelta(days=2), time()), tz)
        days.append(ChangeDay(f"stage:{to}:{day.isoformat()}", start, end, expires))
    return days
