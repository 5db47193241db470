"""Campaign files (docs/reference.md#campaign-files): the typed, frozen spec and its
cross-checks.

A campaign's id is its file stem (campaigns/black-friday.yaml is `black-friday`),
the name the command line and the ledger use; `name:` is its required display
name. Every problem is reported as `campaigns/ID.yaml:LINE: FIELD: MESSAGE`.
What each trigger needs and reads is the table TRIGGER_RULES, which the
validator enforces and `mailer schema` prints.
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import (
    BeforeValidator,
    Field,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from mailer.config.settings import CLOCK_SCHEMA, Duration, JsonSchema, parse_clock_time
from mailer.config.specs import Spec, check
from mailer.config.yamlsrc import line_of
from mailer.core.clock import parse_duration
from mailer.core.errors import InvalidValue, Problem
from mailer.core.suggest import did_you_mean

if TYPE_CHECKING:
    from mailer.config.survey import Survey

TRIGGERS = ("birthday", "schedule", "promotion", "once", "after_order", "stage_change",
            "holiday", "date", "sunset", "signup", "abandoned_checkout", "back_in_stock")
# The relationship stages a stage_change campaign names (mailer.config.settings.STAGE_NAMES).
StageName = Literal["awareness", "exploration", "expansion", "commitment", "termination"]


@dataclass(frozen=True)
class TriggerRule:
    """What one trigger requires and reads beyond the keys every campaign has."""

    needs: tuple[str, ...]  # keys a campaign of this trigger must give
    reads: tuple[str, ...]  # optional keys only this trigger (and those listing them) uses
    due: str  # when a mail is due, for the reference


TRIGGER_RULES = {
    "birthday": TriggerRule((), ("send_at",), (
        "On the customer's birthday in the customer's zone, from `send_at` to the end of "
        "that local day (29 February on 28 February in other years).")),
    "schedule": TriggerRule(("schedule",), ("grace", "send_at", "window"), (
        "At the latest fire time of the cron line, while now is before fire time + "
        "`grace`; earlier fire times are skipped.")),
    "promotion": TriggerRule(("starts", "ends"), ("reminder", "send_at", "window"), (
        "Throughout [starts, ends): each run plans the members not planned yet, so "
        "someone a cap held back today can get it tomorrow.")),
    "once": TriggerRule(("at",), ("grace", "send_at", "window"),
                        "While at ≤ now < at + `grace`."),
    "after_order": TriggerRule(("after",), ("send_at",), (
        "For each paid order whose placed_at + `after` falls on the customer's local day, "
        "from `send_at`.")),
    "stage_change": TriggerRule(("to",), ("from",), (
        "For each recorded change of stage to `to` (from `from`, when given) detected "
        "today or yesterday in the customer's zone, never a customer's first recording; "
        "the mail expires at the end of the day after the change's local day.")),
    "holiday": TriggerRule((), ("send_at", "country", "dates", "only", "except",
                                "days_before"), (
        "`days_before` days ahead of each public holiday of the customer's country "
        "(`country: true`; else mailer.yaml's `holidays.country`; neither: excluded as "
        "`no_holidays`) that `only` / `except` let through, and of each of `dates`, in "
        "the customer's zone from `send_at`; occurrence `holiday:<CC>:<YYYY-MM-DD>` (the "
        "holiday's date; `ZZ` for a customer without a country), expiring at the end of "
        "the local day it is due.")),
    "date": TriggerRule(("field",), ("send_at", "offset", "yearly"), (
        "On the customer's local day when `field`'s date + `offset` comes, from `send_at`; "
        "with `yearly: true` on each anniversary instead (year 1 onwards; 29 February on "
        "28 February in other years); occurrence `date:<field>:<the anniversary's year, "
        "before the offset>`, expiring at the end of that local day; a value that is not "
        "a date is excluded as `no_date`.")),
    "sunset": TriggerRule((), (), (
        "When a member first meets mailer.yaml's `policy.sunset` (long silent, at least "
        "`min_mails` mails since their last sign of life) and this campaign has not mailed "
        "them since that sign of life; occurrence `sunset:<local date of the plan>` (the "
        "workspace zone), expiring 7 days after it is planned. The one campaign a sunset "
        "customer still gets: its template must carry `{{ links.keep_subscribed }}`.")),
    "signup": TriggerRule((), ("after",), (
        "`after` (unset: 0s, at once) after the customer's `signed_up_at`; occurrence "
        "`signup`, expiring 24 h after it is due, so a new welcome campaign never mails "
        "those who signed up before (a series: several campaigns with larger `after`).")),
    "abandoned_checkout": TriggerRule((), ("after", "reminder"), (
        "When a checkout is `after` old (unset: 1h), not completed, and its customer has "
        "paid for no order since it was created; occurrence `checkout:<checkout id>`, "
        "expiring 7 days after the checkout was created. An order cancels it: checked when "
        "planned and again right before the mail goes (reason `ordered`). "
        "`reminder: {after, subject}`: a second mail `reminder.after` after the first one "
        "was sent (never without it), occurrence `checkout-reminder:<checkout id>`, with "
        "the same expiry and the same `ordered` checks.")),
    "back_in_stock": TriggerRule((), (), (
        "When a product with open stock alerts turns in stock (its `restocked_at`, within "
        "the last 3 days): each customer with an open alert for its sku; occurrence "
        "`stock:<sku>:<local date of the restock>` (the workspace zone), expiring 3 days "
        "after the restock. Stock is checked when planned and again right before each mail "
        "(out again: reason `out_of_stock`, the alert stays open for the next restock); a "
        "sent mail closes the customer's alert.")),
}
# Keys refused on the other triggers (any other trigger-specific key is read by its
# own triggers only, and ignored elsewhere).
ONLY_FOR = {"reminder": ("promotion", "abandoned_checkout"), "to": ("stage_change",),
            "from": ("stage_change",),
            "country": ("holiday",), "dates": ("holiday",), "only": ("holiday",),
            "except": ("holiday",), "days_before": ("holiday",), "field": ("date",),
            "offset": ("date",), "yearly": ("date",),
            "window": ("once", "promotion", "schedule")}
# `send_at: best` (each customer's best hour, mailer.planning.send_hour) is for the
# campaigns that mail a whole audience at once; a time of day for the per-customer days.
BEST = "best"
BEST_TRIGGERS = ("once", "promotion", "schedule")
CLOCK_TRIGGERS = ("birthday", "after_order", "holiday", "date")
DEFAULT_WINDOW = "09:00-20:00"
# keys that are Python keywords, and the field holding each
ATTRIBUTE = {"from": "from_", "except": "except_"}


def _clock(value: object) -> time:
    return value if isinstance(value, time) else parse_clock_time(value)


def _listed(names: tuple[str, ...]) -> str:
    return f"{', '.join(names[:-1])} and {names[-1]}"


def _send_at(value: object) -> time | str:
    """`best`, or a time of day."""
    if isinstance(value, str) and value.strip() == BEST:
        return BEST
    return _clock(value)


@dataclass(frozen=True)
class Window:
    """The local hours a `send_at: best` mail may leave in: each whole hour whose start
    lies in [start, end), possibly across midnight ("20:00-02:00")."""

    start: int  # hours 0-23
    end: int

    def hours(self) -> tuple[int, ...]:
        """The window's hours in its own order, from its start."""
        span = (self.end - self.start) % 24
        return tuple((self.start + n) % 24 for n in range(span))

    def __str__(self) -> str:
        return f"{self.start:02d}:00-{self.end:02d}:00"


def _window(value: object) -> Window:
    if isinstance(value, Window):
        return value
    parts = value.split("-") if isinstance(value, str) else []
    if len(parts) != 2:
        raise InvalidValue(f"expected a span of whole local hours like {DEFAULT_WINDOW}, "
                           f"got {value!r}")
    try:
        start, end = parse_clock_time(parts[0]), parse_clock_time(parts[1])
    except InvalidValue:
        raise InvalidValue(f"expected a span of whole local hours like {DEFAULT_WINDOW}, "
                           f"got {value!r}") from None
    if start.minute or end.minute:
        raise InvalidValue(f"window {value!r}: give whole hours, like {DEFAULT_WINDOW}")
    if start == end:
        raise InvalidValue(f"window {value!r} starts and ends at the same time")
    return Window(start.hour, end.hour)


def _moment(value: object) -> datetime:
    """A date-time without zone (the workspace zone applies later) or with one."""
    if isinstance(value, datetime):
        return value
    if isinstance(value, date):
        return datetime.combine(value, time())
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            pass
    raise InvalidValue(f"expected a date-time like 2026-11-27T08:00, got {value!r}")


def _cron(value: object) -> str:
    """A cron line checked field by field (mailer.planning.triggers.parse_cron)."""
    from mailer.planning.triggers import parse_cron

    if not isinstance(value, str):
        raise InvalidValue(f"expected a cron line like \"0 9 1 * *\", got {value!r}")
    parse_cron(value)
    return " ".join(value.split())


def _month_day(value: object) -> str:
    """A fixed occasion "MM-DD" (02-29 counts on 28 February in other years)."""
    text = value.strip() if isinstance(value, str) else ""
    match = re.fullmatch(r"(\d{2})-(\d{2})", text)
    if match is None or not 1 <= int(match.group(1)) <= 12 or \
            not 1 <= int(match.group(2)) <= _DAYS_IN[int(match.group(1))]:
        raise InvalidValue(f"expected a month and day like 12-24, got {value!r}")
    return text


_DAYS_IN = (0, 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
# The dates a `date` campaign reads (mailer.planning.triggers.DATE_FIELDS says how).
DATE_FIELDS = ("first_order_at", "signed_up_at")
ATTRIBUTE_FIELD = re.compile(r"attributes\.([A-Za-z0-9_-]+)")
MAX_OFFSET_DAYS = 3660


def _date_field(value: object) -> str:
    """first_order_at, signed_up_at or attributes.NAME (letters, digits, _ and -)."""
    text = value.strip() if isinstance(value, str) else ""
    if text in DATE_FIELDS or ATTRIBUTE_FIELD.fullmatch(text):
        return text
    hint = did_you_mean(text, list(DATE_FIELDS)) if text and "." not in text else ""
    raise InvalidValue(f"expected first_order_at, signed_up_at or attributes.NAME (a date "
                       f"attribute), got {value!r}{hint}")


def written_date(value: object) -> date | None:
    """An attribute's date as a date campaign reads it: text "YYYY-MM-DD", or a date-time
    text whose first ten characters are that (read as written, whatever its zone); else
    None (no_date). mailer.segments.compiler.date_text is the same rule in SQL."""
    if not isinstance(value, str) or len(value) < 10 or (len(value) > 10 and value[10] not in "T "):
        return None
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", value[:10]):
        return None
    try:
        return date.fromisoformat(value[:10])
    except ValueError:
        return None


def anniversary_in(value: date, year: int) -> date:
    """VALUE's anniversary in YEAR: 29 February on 28 February in years without one."""
    if (value.month, value.day) == (2, 29) and not calendar.isleap(year):
        return date(year, 2, 28)
    return value.replace(year=year)


def _offset(value: object) -> timedelta:
    """A signed whole number of days: `-60d` before the date, `30d` or `+30d` after (any
    unit parse_duration reads, `2w` too, as long as it comes to whole days)."""
    if isinstance(value, timedelta):
        return value
    text = value.strip() if isinstance(value, str) else value
    sign = -1 if isinstance(text, str) and text.startswith("-") else 1
    if isinstance(text, str) and text[:1] in "+-":
        text = text[1:]
    try:
        span = parse_duration(text)
    except InvalidValue:
        raise InvalidValue(f"expected an offset in days like -60d or 30d, got {value!r}"
                           ) from None
    if span % timedelta(days=1):
        raise InvalidValue(f"{value!r} is not a whole number of days: a date campaign is "
                           "due on a day (write -1d, -2d, ...)")
    if span > timedelta(days=MAX_OFFSET_DAYS):
        raise InvalidValue(f"{value!r} is more than {MAX_OFFSET_DAYS}d away from the date")
    return sign * span


def _share(value: object) -> float:
    match = re.fullmatch(r"\s*(\d{1,3})\s*%\s*", value) if isinstance(value, str) else None
    if match is None or not 0 < int(match.group(1)) < 100:
        raise InvalidValue(f"expected a share like 20%, got {value!r}")
    return int(match.group(1)) / 100


# What YAML writes. JSON Schema cannot say "a date-time Python reads": the pattern
# covers the common shapes, and `validate` is the judge.
MOMENT_SCHEMA: JsonSchema = {
    "type": "string", "title": "date-time", "examples": ["2026-11-27T08:00"],
    "pattern": r"^\s*\d{4}-\d{2}-\d{2}([T ]\d{2}(:\d{2}(:\d{2}(\.\d+)?)?)?"
               r"(Z|[+-]\d{2}(:?\d{2})?)?)?\s*$"}
CRON_SCHEMA: JsonSchema = {
    "type": "string", "title": "cron line", "examples": ["0 9 1 * *"],
    "pattern": r"^\s*\S+(\s+\S+){4}\s*$"}
SHARE_SCHEMA: JsonSchema = {  # 1% to 99%, as _share reads it
    "type": "string", "title": "share", "examples": ["20%"],
    "pattern": r"^\s*(0{0,2}[1-9]|0?[1-9][0-9])\s*%\s*$"}
SUBJECT_SCHEMA: JsonSchema = {"title": "text or list of text", "anyOf": [
    {"type": "string"}, {"type": "array", "items": {"type": "string"}}]}
# A campaign's own subject must say something (Campaign._subjects).
FILLED_SUBJECT: JsonSchema = {"anyOf": [
    {"type": "string", "pattern": r"\S"},
    {"type": "array", "items": {"type": "string", "pattern": r"\S"}, "minItems": 1}]}

ClockTime = Annotated[time, BeforeValidator(_clock), WithJsonSchema(CLOCK_SCHEMA)]
SendAt = Annotated[time | Literal["best"], BeforeValidator(_send_at), WithJsonSchema({
    "title": "time of day or best", "anyOf": [CLOCK_SCHEMA, {"enum": [BEST]}]})]
WindowSpan = Annotated[Window, BeforeValidator(_window), WithJsonSchema({
    "type": "string", "title": "span of hours", "examples": [DEFAULT_WINDOW],
    "pattern": r"^\s*\d{1,2}:00\s*-\s*\d{1,2}:00\s*$"})]
Moment = Annotated[datetime, BeforeValidator(_moment), WithJsonSchema(MOMENT_SCHEMA)]
Cron = Annotated[str, BeforeValidator(_cron), WithJsonSchema(CRON_SCHEMA)]
MonthDay = Annotated[str, BeforeValidator(_month_day), WithJsonSchema({
    "type": "string", "title": "month-day", "examples": ["12-24"],
    "pattern": r"^\s*(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])\s*$"})]
Share = Annotated[float, BeforeValidator(_share), WithJsonSchema(SHARE_SCHEMA)]
DateField = Annotated[str, BeforeValidator(_date_field), WithJsonSchema({
    "type": "string", "title": "first_order_at, signed_up_at or attributes.NAME",
    "examples": ["first_order_at", "attributes.renewal_date"],
    "pattern": r"^\s*(first_order_at|signed_up_at|attributes\.[A-Za-z0-9_-]+)\s*$"})]
Offset = Annotated[timedelta, BeforeValidator(_offset), WithJsonSchema({
    "type": "string", "title": "offset in days", "examples": ["-60d", "30d"],
    # the validator's own reading: a sign, then any duration parse_duration reads (the
    # whole-day check is the validator's)
    "pattern": r"^\s*[+-]?\s*\d+\s*[smhdw]\s*$"})]
Subjects = Annotated[tuple[str, ...], BeforeValidator(lambda v: (v,) if isinstance(v, str) else v),
                     WithJsonSchema(SUBJECT_SCHEMA)]


class CouponSpec(Spec):
    prefix: str = Field(pattern=r"^[A-Za-z0-9-]{1,12}$", description=(
        "Each planned mail gets its own code: PREFIX-, then 8 random characters."))
    value: str = Field(min_length=1, description=(
        "What the coupon is worth, shown as written: `30%`, `10 EUR`, `free shipping`."))
    valid_for: Duration = Field(description="The coupon expires this long after planning.")


class Reminder(Spec):
    before_end: Duration | None = Field(None, description=(
        "promotion (required there): sent from `ends` minus this, to those whose main "
        "mail went out."))
    after: Duration | None = Field(None, description=(
        "abandoned_checkout (required there): sent this long after the checkout's first "
        "mail was sent, while the checkout is open and not ordered."))
    subject: Subjects = Field(description="The reminder's own subject line (a list: variants).")
    unless: Literal["ordered_since_start"] | None = Field(None, description=(
        "promotion: `ordered_since_start` leaves out who paid for an order since `starts`."))


class Referral(Spec):
    deadline: date = Field(description="The last day of the offer: `referral.deadline`.")
    reward: str = Field(min_length=1, description="The reward, as written: `referral.reward`.")


class Winner(Spec):
    metric: Literal["clicks", "opens"] = Field(description=(
        "The winner has the best rate of mails clicked (or opened) per mail sent."))
    test_share: Share = Field(description=(
        "The share of the audience the variants are tested on first (1% to 99%)."))
    after: Duration = Field(description=(
        "Time after the first planned mail when the rest gets the winning subject."))


class Campaign(Spec):
    name: str = Field(min_length=1, description=(
        "The display name (`campaign.name` in templates); the file stem is the id."))
    trigger: Literal["birthday", "schedule", "promotion", "once", "after_order",
                     "stage_change", "holiday", "date", "sunset", "signup",
                     "abandoned_checkout", "back_in_stock"] = Field(
        description="When the campaign's mails are due.")
    segment: str = Field(min_length=1, description=(
        "The segment (segments/NAME.yaml) the campaign mails."))
    template: str = Field(min_length=1, description=(
        "The HTML template in templates/ (a `.txt` twin is the text part)."))
    subject: Subjects = Field(json_schema_extra=FILLED_SUBJECT, description=(
        "The subject line, a template; a list gives A/B variants, assigned round-robin."))
    intros: dict[str, str] = Field(
        default_factory=dict, json_schema_extra={"title": "segment name to text"},
        description=("A personal intro (`intro` in templates) by segment: the first segment "
                     "in file order the customer is in wins, else `default`."))
    send_at: SendAt | None = Field(None, description=(
        "birthday, after_order, holiday: the local time of day in each customer's zone "
        "when mails start; unset: 09:00. once, promotion, schedule: `best` sends each "
        "customer's mail at their best hour within `window` (docs/campaigns.md); unset: "
        "when due."))
    window: WindowSpan | None = Field(None, description=(
        "With `send_at: best`: the whole local hours the mail may leave in; unset: "
        f"{DEFAULT_WINDOW}."))
    schedule: Cron | None = Field(None, description=(
        "A cron line (crontab(5), five fields) in the workspace zone."))
    grace: Duration = Field(timedelta(hours=6), description=(
        "How long after the fire time (or `at`) mails may still be planned; they expire "
        "then."))
    starts: Moment | None = Field(None, description="When the promotion starts.")
    ends: Moment | None = Field(None, description=(
        "When the promotion ends, after `starts`; its mails expire then."))
    at: Moment | None = Field(None, description="When the one-off mail is due.")
    after: Duration | None = Field(None, description=(
        "after_order: how long after a paid order the mail is due. signup: how long after "
        "the sign-up (unset: 0s). abandoned_checkout: how old an open checkout is when the "
        "mail is due (unset: 1h)."))
    to: StageName | None = Field(None, description=(
        "The stage a customer's recorded change enters (`stages update` records changes)."))
    from_: StageName | None = Field(None, alias="from", description=(
        "Only changes out of this stage; unset: from any stage."))
    country: bool | None = Field(None, description=(
        "`true`: each public holiday of the customer's own country (ISO 3166 alpha-2 "
        "`country`; else mailer.yaml's `holidays.country`), from the holidays package."))
    dates: tuple[MonthDay, ...] | None = Field(None, description=(
        "Fixed occasions as MM-DD, for every customer (02-29 on 28 February in other "
        "years)."))
    only: tuple[str, ...] | None = Field(None, description=(
        "Only these holidays: the package's English names, matched case-insensitively."))
    except_: tuple[str, ...] | None = Field(None, alias="except", description=(
        "Not these holidays: the package's English names, matched case-insensitively."))
    days_before: int | None = Field(None, ge=0, le=60, description=(
        "Send this many days ahead of the holiday; unset: 0, on the day."))
    field: DateField | None = Field(None, description=(
        "The date the campaign marks: `first_order_at` (the first paid order's placed_at), "
        "`signed_up_at`, or `attributes.NAME` (text \"YYYY-MM-DD\", or a date-time read by "
        "its written date); timestamps count on the customer's local date."))
    offset: Offset | None = Field(None, description=(
        "Whole days before (`-60d`) or after (`30d`) the date the mail is due; unset: on "
        "the day."))
    yearly: bool | None = Field(None, description=(
        "`true`: on every anniversary of the date (year 1 onwards; 29 February on 28 "
        "February in other years); unset: once."))
    coupon: CouponSpec | None = Field(None, description=(
        "A unique coupon per mail (`coupon.code`, `coupon.value`, `coupon.expires_at`)."))
    reminder: Reminder | None = Field(None, description=(
        "A second mail: near the end of a promotion (`before_end`), or after an abandoned "
        "checkout's first mail (`after`)."))
    referral: Referral | None = Field(None, description=(
        "A referral offer: each customer gets a stable code and `referral.url`."))
    winner: Winner | None = Field(None, description=(
        "Test the subject variants on a share of the audience first, then send the best."))
    cooldown: Duration | None = Field(None, description=(
        "A customer who got this campaign within this span is not planned again."))
    priority: int = Field(0, description=(
        "Higher first when one run plans several campaigns and caps leave room for one."))
    topic: str = Field("general", description=(
        "The topic customers can turn off on the preferences page."))
    survey: str | None = Field(None, min_length=1, description=(
        "The survey (surveys/NAME.yaml) the mail asks; frozen into the campaign version "
        "with the templates."))

    @field_validator("send_at")
    @classmethod
    def _send_at_fits(cls, value: time | str | None, info: ValidationInfo
                      ) -> time | str | None:
        trigger = info.data.get("trigger")
        if value == BEST and trigger is not None and trigger not in BEST_TRIGGERS:
            raise InvalidValue(f"best works with {_listed(BEST_TRIGGERS)} campaigns only "
                               f"(a {trigger} campaign takes a time of day like 09:00)")
        if isinstance(value, time) and trigger in BEST_TRIGGERS:
            raise InvalidValue(f"a {trigger} campaign takes best (a time of day works with "
                               f"{_listed(CLOCK_TRIGGERS)} campaigns)")
        return value

    @field_validator("window")
    @classmethod
    def _window_fits(cls, value: Window | None, info: ValidationInfo) -> Window | None:
        trigger = info.data.get("trigger")
        if value is not None and trigger is not None and trigger not in BEST_TRIGGERS:
            raise InvalidValue(f"works with {_listed(BEST_TRIGGERS)} campaigns only, with "
                               "send_at: best")
        if value is not None and "send_at" in info.data and info.data["send_at"] != BEST:
            raise InvalidValue("works with send_at: best only")
        return value

    @field_validator("subject")
    @classmethod
    def _subjects(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value or any(not isinstance(s, str) or not s.strip() for s in value):
            raise InvalidValue("give at least one non-empty subject")
        return value

    @model_validator(mode="after")
    def _trigger_fields(self) -> Campaign:
        missing = [name for name in TRIGGER_RULES[self.trigger].needs
                   if getattr(self, ATTRIBUTE.get(name, name)) is None]
        if missing:
            raise InvalidValue(f"a {self.trigger} campaign needs {' and '.join(missing)}")
        if self.starts and self.ends and self.ends <= self.starts:
            raise InvalidValue("ends must be after starts")
        for key, triggers in ONLY_FOR.items():
            if getattr(self, ATTRIBUTE.get(key, key)) is not None and \
                    self.trigger not in triggers:
                raise InvalidValue(f"{key} works with {' and '.join(triggers)} campaigns only")
        if self.reminder is not None:
            _reminder_fits(self.trigger, self.reminder)
        if self.trigger == "holiday" and not self.country and not self.dates:
            raise InvalidValue("a holiday campaign needs country: true or dates")
        if (self.only is not None or self.except_ is not None) and not self.country:
            raise InvalidValue("only and except filter the country's holidays: give "
                               "country: true")
        if self.to is not None and self.to == self.from_:
            raise InvalidValue("from and to name the same stage: a change leaves its stage")
        if self.winner is not None and len(self.subject) < 2:
            raise InvalidValue("winner needs at least two subjects to choose from")
        if self.winner is not None and "grace" in TRIGGER_RULES[self.trigger].reads and \
                self.winner.after >= self.grace:
            raise InvalidValue("winner.after must be shorter than grace, or the rest of "
                               "the audience would never get the winning subject")
        return self

    @property
    def send_time(self) -> time:
        """The local time of day mails of the per-customer days start."""
        return self.send_at if isinstance(self.send_at, time) else time(9, 0)

    @property
    def best_hour(self) -> bool:
        """`send_at: best`: each customer's mail waits for their best hour."""
        return self.send_at == BEST

    @property
    def send_window(self) -> Window:
        return self.window or _window(DEFAULT_WINDOW)

    @property
    def delay(self) -> timedelta:
        """`after`; unset: 0 (a signup campaign's welcome goes at once), 1 h for an
        abandoned checkout."""
        if self.after is not None:
            return self.after
        return timedelta(hours=1) if self.trigger == "abandoned_checkout" else timedelta(0)

    @property
    def offset_days(self) -> int:
        """A date campaign's offset in whole days (negative: before the date)."""
        return (self.offset or timedelta(0)).days


def _reminder_fits(trigger: str, reminder: Reminder) -> None:
    """A promotion's reminder counts back from `ends`, an abandoned checkout's forward
    from the first mail: each takes its own key."""
    if trigger == "promotion":
        if reminder.before_end is None:
            raise InvalidValue("a promotion's reminder needs before_end")
        if reminder.after is not None:
            raise InvalidValue("a promotion's reminder takes before_end, not after")
    elif trigger == "abandoned_checkout":
        if reminder.after is None:
            raise InvalidValue("an abandoned_checkout campaign's reminder needs after (how "
                               "long after the first mail)")
        if reminder.before_end is not None or reminder.unless is not None:
            raise InvalidValue("an abandoned_checkout campaign's reminder takes after and "
                               "subject only (an order cancels it anyway)")


def parse_campaign(data: Any, path: str) -> tuple[Campaign | None, list[Problem]]:
    """The spec of one campaign file, or its problems (whole-campaign rules at the top)."""
    spec, problems = check(Campaign, data, path)
    return spec, [Problem(p.path, p.line if p.field else line_of(data, ()), p.field or None,
                          p.message) for p in problems]


def cross_check(slug: str, spec: Campaign, data: Any, path: str, *, segments: set[str],
                templates: Path, surveys: Mapping[str, Survey | None] | None = None
                ) -> list[Problem]:
    """Problems that need the rest of the workspace: segments, templates and the survey it
    names (SURVEYS by name, None for a file with problems of its own; None: not checked)."""
    problems = []
    if spec.survey is not None and surveys is not None and surveys.get(spec.survey) is None:
        message = (f"survey {spec.survey!r} has problems of its own (surveys/{spec.survey}.yaml)"
                   if spec.survey in surveys else f"unknown survey {spec.survey!r}"
                   + did_you_mean(spec.survey, sorted(surveys)))
        problems.append(Problem(path, line_of(data, ("survey",)), "survey", message))
    for field, name in [("segment", spec.segment),
                        *((f"intros.{k}", k) for k in spec.intros if k != "default")]:
        if name not in segments:
            problems.append(Problem(path, line_of(data, tuple(field.split("."))), field,
                                    f"unknown segment {name!r}"
                                    + did_you_mean(name, sorted(segments))))
    if not (templates / spec.template).is_file():
        known = sorted(p.name for p in templates.glob("*.html"))
        problems.append(Problem(path, line_of(data, ("template",)), "template",
                                f"unknown template {spec.template!r}"
                                + did_you_mean(spec.template, known)))
    return problems
