"""Campaign files (DESIGN §4.2): the typed, frozen spec and its cross-checks.

A campaign is named by its file stem (campaigns/black-friday.yaml is
`black-friday`); `name:` is its display name. Every problem is reported as
`campaigns/NAME.yaml:LINE: FIELD: MESSAGE`.
"""

from __future__ import annotations

import re
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, field_validator, model_validator

from mailer.config.settings import Duration, parse_clock_time
from mailer.config.specs import Spec, check
from mailer.config.yamlsrc import line_of
from mailer.core.errors import InvalidValue, Problem
from mailer.core.suggest import did_you_mean

TRIGGERS = ("birthday", "schedule", "promotion", "once", "after_order")


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


def _share(value: object) -> float:
    match = re.fullmatch(r"\s*(\d{1,3})\s*%\s*", value) if isinstance(value, str) else None
    if match is None or not 0 < int(match.group(1)) < 100:
        raise InvalidValue(f"expected a share like 20%, got {value!r}")
    return int(match.group(1)) / 100


ClockTime = Annotated[time, BeforeValidator(_clock)]
Moment = Annotated[datetime, BeforeValidator(_moment)]
Cron = Annotated[str, BeforeValidator(_cron)]
Subjects = Annotated[tuple[str, ...], BeforeValidator(lambda v: (v,) if isinstance(v, str) else v)]


class CouponSpec(Spec):
    prefix: str = Field(pattern=r"^[A-Za-z0-9-]{1,12}$")
    value: str = Field(min_length=1)  # shown as written: "30%", "10 EUR", "free shipping"
    valid_for: Duration


class Reminder(Spec):
    before_end: Duration
    subject: Subjects
    unless: Literal["ordered_since_start"] | None = None


class Referral(Spec):
    deadline: date
    reward: str = Field(min_length=1)


class Winner(Spec):
    metric: Literal["clicks", "opens"]
    test_share: Annotated[float, BeforeValidator(_share)]
    after: Duration


class Campaign(Spec):
    name: str = Field(min_length=1)
    trigger: Literal["birthday", "schedule", "promotion", "once", "after_order"]
    segment: str = Field(min_length=1)
    template: str = Field(min_length=1)
    subject: Subjects
    intros: dict[str, str] = Field(default_factory=dict)
    send_at: ClockTime | None = None
    schedule: Cron | None = None
    grace: Duration = timedelta(hours=6)
    starts: Moment | None = None
    ends: Moment | None = None
    at: Moment | None = None
    after: Duration | None = None
    coupon: CouponSpec | None = None
    reminder: Reminder | None = None
    referral: Referral | None = None
    winner: Winner | None = None
    cooldown: Duration | None = None
    priority: int = 0
    topic: str = "general"

    @field_validator("subject")
    @classmethod
    def _subjects(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value or any(not isinstance(s, str) or not s.strip() for s in value):
            raise InvalidValue("give at least one non-empty subject")
        return value

    @model_validator(mode="after")
    def _trigger_fields(self) -> Campaign:
        needs = {"schedule": ("schedule",), "promotion": ("starts", "ends"), "once": ("at",),
                 "after_order": ("after",)}.get(self.trigger, ())
        missing = [name for name in needs if getattr(self, name) is None]
        if missing:
            raise InvalidValue(f"a {self.trigger} campaign needs {' and '.join(missing)}")
        if self.starts and self.ends and self.ends <= self.starts:
            raise InvalidValue("ends must be after starts")
        if self.reminder is not None and self.trigger != "promotion":
            raise InvalidValue("reminder works with promotion campaigns only")
        if self.winner is not None and len(self.subject) < 2:
            raise InvalidValue("winner needs at least two subjects to choose from")
        if self.winner is not None and self.trigger in ("once", "schedule") and \
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
                templates: Path) -> list[Problem]:
    """Problems that need the rest of the workspace: segments and templates it names."""
    problems = []
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
