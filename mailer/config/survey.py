"""Survey files (docs/surveys.md): a few short questions a campaign's mail asks.

A survey's name is its file stem (surveys/order.yaml is `order`); a campaign names it
with `survey: order`, and the survey is frozen into the campaign version with the
templates (mailer.mail.version), so editing a question never changes what a mail
already sent asks. Every problem is reported as `surveys/NAME.yaml:LINE: FIELD: MESSAGE`.
"""

from __future__ import annotations

from collections import Counter
from email.utils import parseaddr
from fractions import Fraction
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from mailer.config.specs import Spec, check
from mailer.config.yamlsrc import line_of
from mailer.core.addresses import parse_address
from mailer.core.errors import InvalidValue, Problem
from mailer.core.suggest import did_you_mean

KINDS = ("rating", "nps", "choice", "text")
SCORED = ("rating", "nps")  # the kinds whose answers are numbers
SCALES = {"rating": range(1, 6), "nps": range(0, 11)}  # the answers each scored kind takes
MAX_QUESTIONS = 6  # an error above; a warning above ADVISED_QUESTIONS
ADVISED_QUESTIONS = 5
TEXT_LIMIT = 2000  # characters of a comment the page keeps (issue 19)
# Characters of a choice option: the responses table indexes answers this short (a long
# comment does not fit a PostgreSQL index entry), which is how choices are counted.
OPTION_LIMIT = 200


class Question(Spec):
    id: str = Field(pattern=r"^[a-z][a-z0-9_]{0,39}$", description=(
        "The question's id (lower case, digits, _): how responses name it; keep it when "
        "rewording the question."))
    ask: str = Field(min_length=1, description="The question as the reader sees it.")
    kind: Literal["rating", "nps", "choice", "text"] = Field(description=(
        "`rating` 1–5, `nps` 0–10 (how likely to recommend), `choice` one of `options`, "
        "`text` a comment."))
    weight: float = Field(1, gt=0, allow_inf_nan=False, description=(
        "A rating question's weight in the satisfaction index (CSI)."))
    options: tuple[str, ...] | None = Field(None, description=(
        "A choice question's answers, as stored and counted."))

    @field_validator("ask")
    @classmethod
    def _ask(cls, value: str) -> str:
        if not value.strip():
            raise InvalidValue("the question must say something")
        return value

    @model_validator(mode="before")
    @classmethod
    def _weight_for_rating(cls, data: Any) -> Any:
        # Before validation: "weight given" must be told apart from the default.
        if isinstance(data, dict) and "weight" in data and data.get("kind") != "rating":
            raise InvalidValue("weight works with rating questions only (the CSI weighs "
                               "ratings)")
        return data

    @model_validator(mode="after")
    def _options(self) -> Question:
        if self.kind == "choice":
            if not self.options or len(self.options) < 2:
                raise InvalidValue("a choice question needs options: at least two")
            if any(not option.strip() for option in self.options):
                raise InvalidValue("options must not be empty")
            if any(len(option) > OPTION_LIMIT for option in self.options):
                raise InvalidValue(f"an option is at most {OPTION_LIMIT} characters")
            twice = [o for o, n in Counter(self.options).items() if n > 1]
            if twice:
                raise InvalidValue(f"option {twice[0]!r} is listed twice")
        elif self.options is not None:
            raise InvalidValue("options work with choice questions only")
        return self

    @property
    def exact_weight(self) -> Fraction:
        """The weight as written (0.1 is one tenth, not the nearest binary fraction)."""
        return Fraction(str(self.weight))


class Alert(Spec):
    question: str = Field(min_length=1, description=(
        "The rating or nps question whose low answers raise an alert."))
    at_most: int = Field(description=(
        "An answer at or below this raises the alert (1–4 for rating, 0–9 for nps)."))
    to: str | None = Field(None, description=(
        "Who gets the alert; unset: mailer.yaml's sender.reply_to (else sender.from)."))

    @field_validator("to")
    @classmethod
    def _address(cls, value: str | None) -> str | None:
        if value is not None:
            parse_address(parseaddr(value)[1] or value)  # `Name <addr>` as in mailer.yaml
        return value


class Survey(Spec):
    title: str = Field(min_length=1, description="The survey page's heading.")
    questions: tuple[Question, ...] = Field(min_length=1, description=(
        "At most 6 questions (validate warns above 5); the first is `rating` or `nps`: its "
        "answers are the mail's links."))
    alert: Alert | None = Field(None, description="Tell someone about low answers.")

    def question(self, question_id: str) -> Question | None:
        return next((q for q in self.questions if q.id == question_id), None)


def parse_survey(data: Any, path: str) -> tuple[Survey | None, list[Problem]]:
    """The spec of one survey file, or its problems; warnings come with a valid spec."""
    spec, problems = check(Survey, data, path)
    if spec is None:
        return None, [Problem(p.path, p.line if p.field else line_of(data, ()), p.field or None,
                              p.message) for p in problems]
    problems = _rules(spec, data, path)
    if any(not p.warning for p in problems):
        return None, problems
    return spec, problems


def _rules(spec: Survey, data: Any, path: str) -> list[Problem]:
    """The rules over several questions, each at the line of the question that breaks it."""
    def at(*loc: str | int) -> int | None:
        return line_of(data, loc)

    problems = []
    count = len(spec.questions)
    if count > MAX_QUESTIONS:
        problems.append(Problem(path, at("questions", MAX_QUESTIONS), "questions",
                                f"{count} questions: a survey asks at most {MAX_QUESTIONS}"))
    elif count > ADVISED_QUESTIONS:
        problems.append(Problem(path, at("questions"), "questions",
                                f"{count} questions: more than {ADVISED_QUESTIONS} and fewer "
                                "readers finish", warning=True))
    first = spec.questions[0]
    if first.kind not in SCORED:
        problems.append(Problem(path, at("questions", 0, "kind"), "questions.0.kind",
                                f"the first question is {first.kind}: it must be rating or nps "
                                "(its answers are the mail's links)"))
    seen: dict[str, int] = {}
    nps = 0
    for index, question in enumerate(spec.questions):
        if question.id in seen:
            problems.append(Problem(path, at("questions", index, "id"), f"questions.{index}.id",
                                    f"id {question.id!r} is used by question {seen[question.id]}"
                                    " already"))
        seen.setdefault(question.id, index)
        nps += question.kind == "nps"
        if question.kind == "nps" and nps == 2:
            problems.append(Problem(path, at("questions", index, "kind"),
                                    f"questions.{index}.kind", "a survey has at most one nps "
                                    "question"))
    if spec.alert is not None:
        problems += _alert_rules(spec, spec.alert, data, path)
    return problems


def _alert_rules(spec: Survey, alert: Alert, data: Any, path: str) -> list[Problem]:
    scored = [q.id for q in spec.questions if q.kind in SCORED]
    target = spec.question(alert.question)
    if target is None or target.kind not in SCORED:
        what = "unknown question" if target is None else f"{target.kind} question"
        return [Problem(path, line_of(data, ("alert", "question")), "alert.question",
                        f"{what} {alert.question!r}: an alert watches a rating or nps question"
                        + did_you_mean(alert.question, scored))]
    scale = SCALES[target.kind]
    if not scale[0] <= alert.at_most < scale[-1]:
        return [Problem(path, line_of(data, ("alert", "at_most")), "alert.at_most",
                        f"expected {scale[0]} to {scale[-1] - 1} for a {target.kind} question "
                        f"({scale[0]}–{scale[-1]}), got {alert.at_most}")]
    return []


def alert_recipient(alert: Alert, *, reply_to: str | None, sender: str) -> str:
    """Who gets an alert: its own `to`, else the sender's reply-to, else the sender, as
    the bare address the SMTP envelope takes (each may be written `Name <addr>`)."""
    chosen = alert.to or reply_to or sender
    return parseaddr(chosen)[1] or chosen
