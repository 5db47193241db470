"""Cron lines per crontab(5) and the trigger table (DESIGN §4.2), with explicit zones."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from mailer.core.clock import zone
from mailer.core.errors import InvalidValue
from mailer.planning.triggers import (
    after_order_window,
    birthday_keys,
    birthday_occurrence,
    latest_fire,
    local_day,
    next_fire,
    once_due,
    parse_cron,
    promotion_due,
    reminder_due,
    schedule_due,
)
from tests.conftest import Workspace

BERLIN = zone("Europe/Berlin")
NEW_YORK = zone("America/New_York")


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def test_sunday_is_0_and_7_and_names_work() -> None:
    for line in ("0 9 * * 0", "0 9 * * 7", "0 9 * * sun", "0 9 * * SUN"):
        # 2026-11-29 is a Sunday; 09:00 Berlin is 08:00Z
        assert latest_fire(parse_cron(line), at("2026-12-01T12:00:00"), BERLIN) == at(
            "2026-11-29T08:00:00")
    assert latest_fire(parse_cron("30 8 * jan-mar mon-fri"), at("2026-11-23T12:00:00"),
                       BERLIN) == at("2026-03-31T06:30:00")


def test_both_day_fields_restricted_means_either() -> None:
    # "the 1st, or any Monday": on Tuesday 2026-11-03 the latest is Monday 2 November
    cron = parse_cron("0 10 1 * mon")
    assert latest_fire(cron, at("2026-11-03T20:00:00"), BERLIN) == at("2026-11-02T09:00:00")
    assert latest_fire(cron, at("2026-11-01T20:00:00"), BERLIN) == at("2026-11-01T09:00:00")
    # a star in one of them makes it AND: "*/2" days that are Mondays
    assert parse_cron("0 10 */2 * mon").day_matches(date(2026, 11, 2)) is False
    assert parse_cron("0 10 */2 * mon").day_matches(date(2026, 11, 9)) is True


def test_steps_ranges_and_lists() -> None:
    cron = parse_cron("*/15 9-17/4 1,15 * *")
    assert sorted(cron.minutes) == [0, 15, 30, 45]
    assert sorted(cron.hours) == [9, 13, 17]
    assert sorted(cron.days) == [1, 15]


@pytest.mark.parametrize(("line", "message"), [
    ("0 9 * * * *", "a cron line has five fields (minute hour day month weekday), got 6"),
    ("61 9 * * *", "minute: 61 is out of range 0-59"),
    ("0 24 * * *", "hour: 24 is out of range 0-23"),
    ("0 9 0 * *", "day of month: 0 is out of range 1-31"),
    ("0 9 * foo *", "month: 'foo' is not a number or a name like jan"),
    ("0 9 * * 1-8", "day of week: 8 is out of range 0-7"),
    ("0 9 * * 5-1", "day of week: range '5-1' runs backwards"),
    ("*/0 9 * * *", "minute: step '0' must be a positive number"),
])
def test_bad_cron_lines(line: str, message: str) -> None:
    with pytest.raises(InvalidValue) as caught:
        parse_cron(line)
    assert str(caught.value).startswith(message)


def test_daylight_saving_gap_and_repeat() -> None:
    # 02:30 does not exist in Berlin on 2026-03-29: it fires at 03:00 CEST (01:00Z)
    cron = parse_cron("30 2 * * *")
    assert latest_fire(cron, at("2026-03-29T05:00:00"), BERLIN) == at("2026-03-29T01:00:00")
    # 01:30 happens twice in New York on 2026-11-01: once, at the first (05:30Z)
    cron = parse_cron("30 1 * * *")
    assert latest_fire(cron, at("2026-11-01T07:00:00"), NEW_YORK) == at("2026-11-01T05:30:00")


def test_leap_day_cron_looks_back_years() -> None:
    assert latest_fire(parse_cron("0 0 29 2 *"), at("2026-11-23T00:00:00"), UTC) == at(
        "2024-02-29T00:00:00")


def test_schedule_occurrence_and_grace() -> None:
    cron = parse_cron("0 10 1 * *")  # 10:00 Berlin on the 1st = 09:00Z in December
    due = schedule_due(cron, timedelta(hours=6), at("2026-12-01T14:59:59"), BERLIN)
    assert due is not None
    assert (due.occurrence, due.expires) == ("cron:2026-12-01T09:00:00Z", at("2026-12-01T15:00:00"))
    assert schedule_due(cron, timedelta(hours=6), at("2026-12-01T15:00:00"), BERLIN) is None
    assert schedule_due(cron, timedelta(hours=6), at("2026-12-01T08:59:59"), BERLIN) is None


def test_promotion_reminder_and_once() -> None:
    starts, ends = at("2026-11-27T07:00:00"), at("2026-11-29T07:00:00")
    assert promotion_due(starts, ends, starts) is not None
    assert promotion_due(starts, ends, ends) is None
    assert reminder_due(ends, timedelta(hours=12), at("2026-11-28T18:59:59")) is None
    reminder = reminder_due(ends, timedelta(hours=12), at("2026-11-28T19:00:00"))
    assert reminder is not None and (reminder.occurrence, reminder.expires) == ("reminder", ends)
    once = once_due(at("2026-12-01T09:00:00"), timedelta(hours=6), at("2026-12-01T12:00:00"))
    assert once is not None and once.expires == at("2026-12-01T15:00:00")


def test_birthdays_on_both_sides_of_the_date_line() -> None:
    now = at("2026-11-23T10:00:00")  # already 24 Nov 00:00 in Kiritimati (UTC+14)
    kiritimati = local_day("Pacific/Kiritimati", time(0, 0), now)
    pago = local_day("Pacific/Pago_Pago", time(9, 0), now)  # 22 Nov 23:00 there (UTC-11)
    assert kiritimati is not None and kiritimati.day == date(2026, 11, 24)
    assert birthday_occurrence(kiritimati).occurrence == "birthday:2026"
    assert pago is not None and pago.day == date(2026, 11, 22)
    assert pago.end == at("2026-11-23T11:00:00")
    assert local_day("Europe/Berlin", time(12, 0), now) is None  # 11:00 in Berlin: not yet


def test_leap_day_birthdays() -> None:
    assert birthday_keys(date(2027, 2, 28)) == ["02-28", "02-29"]
    assert birthday_keys(date(2028, 2, 28)) == ["02-28"]
    assert birthday_keys(date(2028, 2, 29)) == ["02-29"]


def test_birthday_on_the_day_clocks_change() -> None:
    # 2026-03-29 in Berlin has 23 hours; 09:00 local is 07:00Z
    day = local_day("Europe/Berlin", time(9, 0), at("2026-03-29T07:00:00"))
    assert day is not None
    assert (day.send_from, day.end - day.start) == (at("2026-03-29T07:00:00"), timedelta(hours=23))


def test_after_order_window() -> None:
    day = local_day("Europe/Berlin", time(18, 0), at("2026-11-23T17:00:00"))
    assert day is not None
    assert after_order_window(day, timedelta(days=10)) == (at("2026-11-12T23:00:00"),
                                                            at("2026-11-13T23:00:00"))


# --- daylight-saving days as cron(8) runs them (issue 15, item 10) -------------------------


def fires(line: str, tz: ZoneInfo, start: str, end: str) -> list[datetime]:
    """Every fire time in [start, end) as next_fire walks them, in UTC."""
    cron, found = parse_cron(line), []
    moment: datetime | None = at(start) - timedelta(seconds=1)
    while moment is not None:
        moment = next_fire(cron, moment, tz)
        if moment is None or moment >= at(end):
            break
        found.append(moment)
    return found


def test_wildcard_hours_keep_firing_through_the_repeated_hour() -> None:
    # Berlin 2026-10-25: 03:00 CEST (01:00Z) turns back to 02:00 CET. An hourly line fires
    # every real hour: 02:00 CEST and 02:00 CET both run, none is lost.
    assert fires("0 * * * *", BERLIN, "2026-10-24T23:00:00", "2026-10-25T03:00:00") == [
        at("2026-10-24T23:00:00"), at("2026-10-25T00:00:00"), at("2026-10-25T01:00:00"),
        at("2026-10-25T02:00:00")]
    # New York 2026-11-01: 02:00 EDT (06:00Z) turns back to 01:00 EST.
    assert fires("*/30 * * * *", NEW_YORK, "2026-11-01T05:00:00", "2026-11-01T07:01:00") == [
        at("2026-11-01T05:00:00"), at("2026-11-01T05:30:00"), at("2026-11-01T06:00:00"),
        at("2026-11-01T06:30:00"), at("2026-11-01T07:00:00")]
    # the schedule trigger: the second 02:00 in Berlin is its own occurrence
    due = schedule_due(parse_cron("0 * * * *"), timedelta(minutes=30),
                       at("2026-10-25T01:10:00"), BERLIN)
    assert due is not None and due.occurrence == "cron:2026-10-25T01:00:00Z"


def test_wildcard_lines_add_nothing_in_the_skipped_hour() -> None:
    # Berlin 2026-03-29: 02:00 CET (01:00Z) jumps to 03:00 CEST. "30 * * * *" runs at
    # 01:30 CET and then 03:30 CEST; 02:30 never happens, so nothing fires at 03:00.
    assert fires("30 * * * *", BERLIN, "2026-03-29T00:00:00", "2026-03-29T02:00:00") == [
        at("2026-03-29T00:30:00"), at("2026-03-29T01:30:00")]
    # every minute of 02:xx: no such minute that day; the next is 02:00 CEST the day after
    assert next_fire(parse_cron("* 2 * * *"), at("2026-03-28T23:59:00"), BERLIN) == at(
        "2026-03-30T00:00:00")
    # New York 2026-03-08: 02:00 EST (07:00Z) jumps to 03:00 EDT.
    assert fires("15 */1 * * *", NEW_YORK, "2026-03-08T05:00:00", "2026-03-08T08:00:00") == [
        at("2026-03-08T05:15:00"), at("2026-03-08T06:15:00"), at("2026-03-08T07:15:00")]
    assert latest_fire(parse_cron("15 * * * *"), at("2026-03-08T07:10:00"), NEW_YORK) == at(
        "2026-03-08T06:15:00")


def test_fixed_time_lines_keep_the_gap_and_repeat_rule() -> None:
    # fall-back: 02:30 happens twice in Berlin; a fixed line fires once, at the first
    assert fires("30 2 * * *", BERLIN, "2026-10-24T12:00:00", "2026-10-25T12:00:00") == [
        at("2026-10-25T00:30:00")]
    # spring-forward: 02:30 does not exist in New York; it fires at 03:00 EDT (07:00Z)
    assert fires("30 2 * * *", NEW_YORK, "2026-03-07T12:00:00", "2026-03-08T12:00:00") == [
        at("2026-03-08T07:00:00")]


@pytest.mark.parametrize(("line", "message"), [
    ("0 0 30 2 *", "day of month: 30 never comes in February, so this line would never run"),
    ("0 9 31 4 *", "day of month: 31 never comes in April, so this line would never run"),
    ("0 9 31 2,4,6 *",
     "day of month: 31 never comes in February, April or June, so this line would never run"),
    ("0 9 30,31 feb */2",
     "day of month: 30,31 never comes in February, so this line would never run"),
    ("0/2 9 * * *", "minute: '0/2' steps from a single value; write a range such as 0-59/2, "
                    "or */2"),
    ("0 9 * * mon/2", "day of week: 'mon/2' steps from a single value; write a range such as "
                      "mon-7/2, or */2"),
])
def test_lines_that_never_run_or_step_a_single_value_are_refused(line: str,
                                                                  message: str) -> None:
    with pytest.raises(InvalidValue) as caught:
        parse_cron(line)
    assert str(caught.value) == message


@pytest.mark.parametrize("line", [
    "0 0 29 2 *",  # leap years
    "0 9 31 4 mon",  # both day fields restricted: every Monday in April
    "0 9 31 1-4 *",  # 31 January and 31 March
    "0 9 * jan-mar,dec mon-fri,sun",  # names in ranges and lists
    "0 9 1 JAN,Jul *",
    "0 8-18/2 * * *",
])
def test_lines_that_run_somewhere_stay_accepted(line: str) -> None:
    cron = parse_cron(line)
    assert latest_fire(cron, at("2026-12-01T12:00:00"), BERLIN) is not None


def test_validate_names_the_cron_line_that_never_runs(ws: Workspace) -> None:
    ws.write("segments/all.yaml", "description: everyone\nall:\n  - orders: {at_least: 0}\n")
    ws.write("templates/t.html", "<p>{{ store.address }} {{ links.unsubscribe }}</p>\n")
    ws.write("campaigns/feb.yaml", "name: Feb\ntrigger: schedule\nschedule: '0 0 30 2 *'\n"
                                   "segment: all\ntemplate: t.html\nsubject: Hi\n")
    result = ws.run("validate")
    assert result.code == 1
    assert ("campaigns/feb.yaml:3: schedule: day of month: 30 never comes in February, "
            "so this line would never run") in result.stderr.splitlines()
