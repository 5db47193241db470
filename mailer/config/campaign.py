"""Campaign files (docs/reference.md#campaign-files): the typed, frozen spec and its
cross-checks.

A campaign's id is its file stem (campaigns/black-friday.yaml is `black-friday`),
the name the command line and the ledger use; `name:` is its required display
name. Every problem is reported as `campaigns/ID.yaml:LINE: FIELD: MESSAGE`.
What each trigger needs and reads is the table TRIGGER_RULES, which the
validator enforces and `mailer schema` prints.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BeforeValidator, Field, WithJsonSchema, field_validator, model_validator

from mailer.config.settings import CLOCK_SCHEMA, Duration, JsonSchema, parse_clock_time
from mailer.config.specs import Spec, check
from mailer.config.yamlsrc import line_of
from mailer.core.errors import InvalidValue, Problem
from mailer.core.suggest import did_you_mean

if TYPE_CHECKING:
    from mailer.config.survey import Survey

TRIGGERS = ("birthday", "schedule", "promotion", "once", "after_order", "stage_change",
            "holiday", "sunset")
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
    "schedule": TriggerRule(("schedule",), ("grace",), (
        "At the latest fire time of the cron line, while now is before fire time + "
        "`grace`; earlier fire times are skipped.")),
    "promotion": TriggerRule(("starts", "ends"), ("reminder",), (
        "Throughout [starts, ends): each run plans the members not planned yet, so "
        "someone a cap held back today can get it tomorrow.")),
    "once": TriggerRule(("at",), ("grace",), "While at ≤ now < at + `grace`."),
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
    "sunset": TriggerRule((), (), (
        "When a member first meets mailer.yaml's `policy.sunset` (long silent, at least "
        "`min_mails` mails since their last sign of life) and this campaign has not mailed "
        "them since that sign of life; occurrence `sunset:<local date of the plan>` (the "
        "workspace zone), expiring 7 days after it is planned. The one campaign a sunset "
        "customer still gets: its template must carry `{{ links.keep_subscribed }}`.")),
}
# Keys refused on the other triggers (any other trigger-specific key is read by its
# own triggers only, and ignored elsewhere).
ONLY_FOR = {"reminder": ("promotion",), "to": ("stage_change",), "from": ("stage_change",),
            "country": ("holiday",), "dates": ("holiday",), "only": ("holiday",),
            "except": ("holiday",), "days_before": ("holiday",)}
# keys that are Python keywords, and the field holding each
ATTRIBUTE = {"from": "from_", "except": "except_"}


def _clock(value: object) -> time:
    return value if isinstance(value, time) else parse_clock_time(value)


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
Moment = Annotated[datetime, BeforeValidator(_moment), WithJsonSchema(MOMENT_SCHEMA)]
Cron = Annotated[str, BeforeValidator(_cron), WithJsonSchema(CRON_SCHEMA)]
MonthDay = Annotated[str, BeforeValidator(_month_day), WithJsonSchema({
    "type": "string", "title": "month-day", "examples": ["12-24"],
    "pattern": r"^\s*(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])\s*$"})]
Share = Annotated[float, BeforeValidator(_share), WithJsonSchema(SHARE_SCHEMA)]
Subjects = Annotated[tuple[str, ...], BeforeValidator(lambda v: (v,) if isinstance(v, str) else v),
                     WithJsonSchema(SUBJECT_SCHEMA)]


class CouponSpec(Spec):
    prefix: str = Field(pattern=r"^[A-Za-z0-9-]{1,12}$", description=(
        "Each planned mail gets its own code: PREFIX-, then 8 random characters."))
    value: str = Field(min_length=1, description=(
        "What the coupon is worth, shown as written: `30%`, `10 EUR`, `free shipping`."))
    valid_for: Duration = Field(description="The coupon expires this long after planning.")


class Reminder(Spec):
    before_end: Duration = Field(description=(
        "Sent from `ends` minus this, to those whose main mail went out."))
    subject: Subjects = Field(description="The reminder's own subject line (a list: variants).")
    unless: Literal["ordered_since_start"] | None = Field(None, description=(
        "`ordered_since_start`: leave out who paid for an order since `starts`."))


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
                     "stage_change", "holiday", "sunset"] = Field(
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
    send_at: ClockTime | None = Field(None, description=(
        "The local time of day in each customer's zone when mails start; unset: 09:00."))
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
        "How long after a paid order the mail is due."))
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
    coupon: CouponSpec | None = Field(None, description=(
        "A unique coupon per mail (`coupon.code`, `coupon.value`, `coupon.expires_at`)."))
    reminder: Reminder | None = Field(None, description=(
        "A second mail near the end of a promotion."))
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
        return self.send_at or time(9, 0)


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
