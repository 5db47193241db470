"""The plan-time policy (DESIGN §4.3) as pure decisions: explicit ZoneInfo times, no database.

Times handed to the policy are UTC, as the planner hands them (every stored time is UTC);
quiet hours are read in the customer's zone, passed in as `tz`.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from mailer.config.settings import Cap, QuietHours
from mailer.planning.policy import (
    Decision,
    Facts,
    decide,
    full_cap,
    in_test_group,
    quiet_release,
    winning_variant,
)

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")
DAY = Cap(max=1, per=timedelta(hours=24))
WEEK = Cap(max=3, per=timedelta(days=7))
CAPS = (DAY, WEEK)
NIGHT = QuietHours(time(21, 0), time(8, 0))  # across midnight
NOW = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)  # 10:00 in Berlin: outside the night
EXPIRES = NOW + timedelta(days=3)

WELCOME = Facts(consent="subscribed", suppressed=False, valid_address=True,
                already_planned=False, in_cooldown=False, recent=())


def decision(facts: Facts = WELCOME, *, now: datetime = NOW, caps: tuple[Cap, ...] = CAPS,
             tz: ZoneInfo = BERLIN, quiet: QuietHours | None = NIGHT,
             expires: datetime = EXPIRES, reminder: bool = False) -> Decision:
    return decide(facts, now=now, caps=caps, tz=tz, quiet=quiet, expires=expires,
                  reminder=reminder)


def local(tz: ZoneInfo, year: int, month: int, day: int, hour: int, minute: int) -> datetime:
    """A wall time in TZ (never one in a gap or a repeat), as the UTC instant the planner
    would hold."""
    return datetime(year, month, day, hour, minute, tzinfo=tz).astimezone(UTC)


# --- who may be mailed at all ----------------------------------------------------------


def test_a_subscribed_member_with_room_is_planned_now() -> None:
    assert decision() == Decision(None, NOW)


@pytest.mark.parametrize("consent", ["not_subscribed", "unsubscribed", "bounced", "complained"])
def test_every_consent_but_subscribed_is_its_own_reason(consent: str) -> None:
    assert decision(replace(WELCOME, consent=consent)) == Decision(consent)


def test_a_suppressed_address_is_not_planned() -> None:
    assert decision(replace(WELCOME, suppressed=True)) == Decision("suppressed")


def test_an_invalid_address_is_not_planned() -> None:
    assert decision(replace(WELCOME, valid_address=False)) == Decision("invalid_address")


def test_a_row_for_this_occurrence_whatever_its_status_means_already_sent() -> None:
    assert decision(replace(WELCOME, already_planned=True)) == Decision("already_sent")


def test_a_paused_customer_is_not_planned() -> None:
    assert decision(replace(WELCOME, paused=True)) == Decision("paused")


def test_a_customer_who_chose_other_topics_is_not_planned() -> None:
    assert decision(replace(WELCOME, topic_unwanted=True)) == Decision("topic")


def test_a_customer_in_the_cooldown_is_not_planned() -> None:
    assert decision(replace(WELCOME, in_cooldown=True)) == Decision("cooldown")


def test_ordering_since_the_start_excludes_only_from_the_reminder() -> None:
    ordered = replace(WELCOME, ordered_since_start=True)
    assert decision(ordered, reminder=True) == Decision("ordered_since_start")
    assert decision(ordered) == Decision(None, NOW)


def test_the_first_reason_wins_in_the_order_of_the_design() -> None:
    """Everything wrong at once; fixing each fact in turn reveals the next reason."""
    facts = Facts(consent="unsubscribed", suppressed=True, valid_address=False,
                  already_planned=True, in_cooldown=True, recent=(NOW,),
                  ordered_since_start=True, paused=True, topic_unwanted=True)
    fixes = [("unsubscribed", {"consent": "subscribed"}),
             ("suppressed", {"suppressed": False}),
             ("invalid_address", {"valid_address": True}),
             ("already_sent", {"already_planned": False}),
             ("paused", {"paused": False}),
             ("topic", {"topic_unwanted": False}),
             ("ordered_since_start", {"ordered_since_start": False}),
             ("cooldown", {"in_cooldown": False}),
             ("frequency_cap", {"recent": ()})]
    seen = []
    for _, fix in fixes:
        seen.append(decision(facts, reminder=True).reason)
        facts = replace(facts, **fix)  # type: ignore[arg-type]
    assert seen == [reason for reason, _ in fixes]
    assert decision(facts, reminder=True) == Decision(None, NOW)


# --- frequency caps: the half-open window (now - D, now] -------------------------------


def test_a_mail_planned_exactly_one_period_ago_no_longer_counts() -> None:
    """A daily 09:00 campaign under 1 per 24h goes out every day."""
    yesterday = replace(WELCOME, recent=(NOW - timedelta(hours=24),))
    assert decision(yesterday) == Decision(None, NOW)


def test_a_mail_planned_a_second_less_than_one_period_ago_fills_the_cap() -> None:
    almost = replace(WELCOME, recent=(NOW - timedelta(hours=24) + timedelta(seconds=1),))
    assert decision(almost) == Decision("frequency_cap", cap=DAY)


def test_a_mail_planned_earlier_in_the_same_run_counts() -> None:
    """The planner adds mails planned earlier in this run at `now` itself."""
    assert decision(replace(WELCOME, recent=(NOW,))) == Decision("frequency_cap", cap=DAY)


def test_rows_planned_after_now_are_ignored() -> None:
    later = replace(WELCOME, recent=(NOW + timedelta(seconds=1), NOW + timedelta(hours=1)))
    assert decision(later) == Decision(None, NOW)


def test_a_cap_of_m_has_room_for_m_minus_one_and_is_full_at_m() -> None:
    days = [NOW - timedelta(days=d) for d in (1, 2, 3)]  # one a day: the daily cap has room
    assert decision(replace(WELCOME, recent=tuple(days[:2]))) == Decision(None, NOW)
    assert decision(replace(WELCOME, recent=tuple(days))) == Decision("frequency_cap", cap=WEEK)


def test_the_weekly_window_is_half_open_too() -> None:
    edge = (NOW - timedelta(days=7), NOW - timedelta(days=2), NOW - timedelta(days=3))
    assert decision(replace(WELCOME, recent=edge)) == Decision(None, NOW)
    inside = (NOW - timedelta(days=7) + timedelta(seconds=1), *edge[1:])
    assert decision(replace(WELCOME, recent=inside)) == Decision("frequency_cap", cap=WEEK)


def test_the_first_full_cap_is_the_one_reported() -> None:
    full = (NOW - timedelta(hours=1), NOW - timedelta(days=2), NOW - timedelta(days=3))
    assert full_cap(full, CAPS, NOW) is DAY
    assert full_cap(full, (WEEK, DAY), NOW) is WEEK
    assert full_cap(full, (), NOW) is None  # `frequency: []`: no caps


def test_a_window_is_elapsed_time_across_a_daylight_saving_change() -> None:
    """1d = 24 h: on the night Berlin's clocks go forward, 23 wall hours are not a day."""
    morning = local(BERLIN, 2026, 3, 29, 9, 0)
    before = local(BERLIN, 2026, 3, 28, 9, 0)  # same wall time, 23 hours earlier
    assert morning - before == timedelta(hours=23)
    assert full_cap((before,), CAPS, morning) is DAY
    assert full_cap((before,), CAPS, morning + timedelta(hours=1)) is None


def test_a_personal_cap_counts_like_the_stores_caps() -> None:
    fewer = Cap(max=1, per=timedelta(days=7))  # "fewer mails" from the preference centre
    facts = replace(WELCOME, recent=(NOW - timedelta(days=3),), personal_caps=(fewer,))
    assert decision(facts) == Decision("frequency_cap", cap=fewer)
    assert decision(facts, caps=()) == Decision("frequency_cap", cap=fewer)
    assert decision(replace(facts, personal_caps=())) == Decision(None, NOW)


# --- quiet hours in the customer's zone ------------------------------------------------


def test_outside_quiet_hours_the_mail_leaves_now() -> None:
    assert quiet_release(NOW, BERLIN, NIGHT) == NOW
    assert quiet_release(NOW, BERLIN, None) == NOW


def test_the_evening_waits_for_the_next_morning() -> None:
    evening = local(BERLIN, 2026, 11, 23, 22, 30)
    assert decision(now=evening) == Decision(None, local(BERLIN, 2026, 11, 24, 8, 0))


def test_after_midnight_waits_for_the_same_morning() -> None:
    night = local(BERLIN, 2026, 11, 24, 3, 0)
    assert decision(now=night) == Decision(None, local(BERLIN, 2026, 11, 24, 8, 0))


def test_quiet_hours_start_inclusive_and_end_exclusive() -> None:
    start = local(BERLIN, 2026, 11, 23, 21, 0)
    assert quiet_release(start, BERLIN, NIGHT) == local(BERLIN, 2026, 11, 24, 8, 0)
    end = local(BERLIN, 2026, 11, 24, 8, 0)
    assert quiet_release(end, BERLIN, NIGHT) == end
    just_before = end - timedelta(seconds=1)
    assert quiet_release(just_before, BERLIN, NIGHT) == end


def test_quiet_hours_within_one_day() -> None:
    lunch = QuietHours(time(12, 0), time(14, 0))
    assert quiet_release(local(BERLIN, 2026, 11, 23, 13, 0), BERLIN, lunch) == \
        local(BERLIN, 2026, 11, 23, 14, 0)
    late = local(BERLIN, 2026, 11, 23, 23, 0)
    assert quiet_release(late, BERLIN, lunch) == late


def test_quiet_hours_are_read_in_the_customers_zone() -> None:
    """One instant: 23:00 in Berlin (quiet), 17:00 in New York (not)."""
    instant = local(BERLIN, 2026, 11, 23, 23, 0)
    assert decision(now=instant, tz=BERLIN) == Decision(None, local(BERLIN, 2026, 11, 24, 8, 0))
    assert decision(now=instant, tz=NEW_YORK) == Decision(None, instant)


def test_a_night_across_the_spring_change_ends_at_local_eight() -> None:
    """Berlin skips 02:00-03:00 on 29 March 2026: 23:00 to 08:00 lasts 8 hours, not 9."""
    evening = local(BERLIN, 2026, 3, 28, 23, 0)
    release = quiet_release(evening, BERLIN, NIGHT)
    assert release == datetime(2026, 3, 29, 6, 0, tzinfo=UTC)  # 08:00 CEST
    assert release - evening == timedelta(hours=8)


def test_a_night_across_the_autumn_change_ends_at_local_eight() -> None:
    """New York repeats 01:00-02:00 on 1 November 2026: 23:00 to 08:00 lasts 10 hours."""
    evening = local(NEW_YORK, 2026, 10, 31, 23, 0)
    release = quiet_release(evening, NEW_YORK, NIGHT)
    assert release == datetime(2026, 11, 1, 13, 0, tzinfo=UTC)  # 08:00 EST
    assert release - evening == timedelta(hours=10)


def test_quiet_hours_ending_in_the_gap_end_at_the_first_instant_after_it() -> None:
    early = QuietHours(time(0, 0), time(2, 30))  # 02:30 does not exist on 29 March in Berlin
    night = local(BERLIN, 2026, 3, 29, 1, 0)
    assert quiet_release(night, BERLIN, early) == datetime(2026, 3, 29, 1, 0, tzinfo=UTC)


def test_quiet_hours_ending_in_the_repeated_hour_end_at_its_first_instance() -> None:
    early = QuietHours(time(0, 0), time(2, 30))  # 02:30 happens twice on 25 October in Berlin
    night = local(BERLIN, 2026, 10, 25, 1, 0)
    assert quiet_release(night, BERLIN, early) == datetime(2026, 10, 25, 0, 30, tzinfo=UTC)


def test_the_second_pass_of_a_repeated_hour_is_not_held_back_again() -> None:
    """After the first 02:30 the quiet hours are over, though the wall clock reads 02:00."""
    early = QuietHours(time(0, 0), time(2, 30))
    second = datetime(2026, 10, 25, 1, 15, tzinfo=UTC)  # 02:15 CET, the repeat
    assert quiet_release(second, BERLIN, early) == second


# --- expiry after quiet hours ----------------------------------------------------------


def test_a_mail_that_could_leave_only_at_or_after_its_expiry_is_not_planned() -> None:
    evening = local(BERLIN, 2026, 11, 23, 22, 0)
    morning = local(BERLIN, 2026, 11, 24, 8, 0)
    assert decision(now=evening, expires=morning) == Decision("quiet_hours")
    assert decision(now=evening, expires=morning - timedelta(hours=1)) == \
        Decision("quiet_hours")
    assert decision(now=evening, expires=morning + timedelta(seconds=1)) == \
        Decision(None, morning)


def test_without_quiet_hours_the_expiry_does_not_exclude_a_due_mail() -> None:
    evening = local(BERLIN, 2026, 11, 23, 22, 0)
    assert decision(now=evening, quiet=None, expires=evening + timedelta(seconds=1)) == \
        Decision(None, evening)


def test_the_caps_decide_before_the_quiet_hours() -> None:
    evening = local(BERLIN, 2026, 11, 23, 22, 0)
    capped = replace(WELCOME, recent=(evening - timedelta(hours=2),))
    assert decision(capped, now=evening, expires=evening + timedelta(hours=1)) == \
        Decision("frequency_cap", cap=DAY)


# --- A/B tests -------------------------------------------------------------------------


def test_the_test_group_is_a_stable_share_of_customers() -> None:
    customers = range(1, 2001)
    group = {c for c in customers if in_test_group("black-friday", c, 0.2)}
    assert 340 <= len(group) <= 460  # about 20 % of 2,000
    again = {c for c in customers if in_test_group("black-friday", c, 0.2)}
    assert again == group  # a customer held back today is held back tomorrow


def test_a_larger_share_keeps_everyone_the_smaller_one_held() -> None:
    customers = range(1, 2001)
    small = {c for c in customers if in_test_group("black-friday", c, 0.1)}
    large = {c for c in customers if in_test_group("black-friday", c, 0.3)}
    assert small < large
    assert not any(in_test_group("black-friday", c, 0.0) for c in customers)
    assert all(in_test_group("black-friday", c, 1.0) for c in customers)


def test_each_campaign_draws_its_own_test_group() -> None:
    customers = range(1, 2001)
    one = {c for c in customers if in_test_group("black-friday", c, 0.2)}
    other = {c for c in customers if in_test_group("newsletter", c, 0.2)}
    assert one != other


def test_the_winner_has_the_best_rate_not_the_most_clicks() -> None:
    assert winning_variant({0: 100, 1: 10}, {0: 10, 1: 2}) == 1


def test_a_tie_or_no_data_goes_to_the_lowest_variant() -> None:
    assert winning_variant({0: 10, 1: 10, 2: 10}, {1: 3, 2: 3}) == 1
    assert winning_variant({}, {}) == 0
    assert winning_variant({0: 0, 1: 0}, {0: 5}) == 0


def test_a_variant_with_no_sent_mail_cannot_win() -> None:
    assert winning_variant({0: 0, 1: 20}, {0: 5, 1: 1}) == 1
