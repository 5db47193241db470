"""Answering a survey from the mail (docs/surveys.md, "The survey page"): which survey a
`/s/TOKEN` link asks, the answers a posted form gives, and recording them.

A survey link names its mail (the ledger row, in the signed token); the page shows the
survey that mail's campaign version froze, never the workspace's file as it is now, and
each answer is stored with that version's content hash. `record` is the one way the
service writes answers: what should follow an answer (a low-score alert) hangs on it.
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from mailer.app.surveys.alerts import alert_on_answers
from mailer.config.settings import Settings
from mailer.config.survey import SCALES, TEXT_LIMIT, Question, Survey
from mailer.config.workspace import parse_survey_source
from mailer.core.claims import Claims
from mailer.core.clock import iso_z
from mailer.core.errors import MailerError
from mailer.store.customers import people_by_id
from mailer.store.db import Engine
from mailer.store.insight.responses import Answer, record_answers
from mailer.store.ledger import row_by_id
from mailer.store.versions import stored_version


class BadAnswer(MailerError):
    """A posted answer the page would not have sent; the message names the question."""


@dataclass(frozen=True)
class Asked:
    """One mail's survey, as its campaign version froze it."""

    row_id: int  # the ledger row (deliveries.id)
    customer_id: int
    customer: str  # the store's id
    campaign: str
    occurrence: str  # `order:<id>` for an after_order campaign: the order asked about
    name: str  # the survey's file stem
    survey: Survey
    version_hash: str  # campaign_versions.content_hash

    @property
    def first(self) -> Question:
        """The question the mail's links answer."""
        return self.survey.questions[0]


@dataclass(frozen=True)
class Recorded:
    """What one press of the page's button recorded."""

    asked: Asked
    answers: tuple[Answer, ...]
    at: datetime
    alerted: bool = False  # a low-score alert was queued by this press

    def as_json(self) -> dict[str, Any]:
        return {"survey": self.asked.name, "customer": self.asked.customer,
                "campaign": self.asked.campaign, "occurrence": self.asked.occurrence,
                "version_hash": self.asked.version_hash, "at": iso_z(self.at),
                "answers": {a.question: a.number if a.number is not None else a.text
                            for a in self.answers}, "alerted": self.alerted}


class SurveyMails:
    """The surveys behind survey links. One per service: a campaign version never
    changes once stored, so its survey is parsed once (the last VERSIONS kept)."""

    VERSIONS = 64

    def __init__(self) -> None:
        self._surveys: OrderedDict[int, tuple[str, str, Survey] | None] = OrderedDict()
        self._lock = threading.Lock()  # find() runs in several threads at once

    def find(self, engine: Engine, claims: Claims) -> Asked | None:
        """The survey a link's CLAIMS ask, or None: no such mail (a preview's link, a row
        gone), not that customer's mail of that campaign, or a version without a survey."""
        if not claims.message.isdigit() or len(claims.message) > 18:
            return None
        with engine.connect() as conn:
            found = row_by_id(conn, int(claims.message))
            if found is None or found[0].campaign != claims.campaign:
                return None
            row = found[0]
            person = people_by_id(conn, [row.customer_id]).get(row.customer_id)
            if person is None or person.store_id != claims.customer:
                return None
            frozen = self._survey(conn, row.campaign_version_id)
        if frozen is None:
            return None
        name, version_hash, survey = frozen
        return Asked(row.id, row.customer_id, claims.customer, row.campaign, row.occurrence,
                     name, survey, version_hash)

    def _survey(self, conn: Any, version_id: int) -> tuple[str, str, Survey] | None:
        with self._lock:
            if version_id in self._surveys:
                self._surveys.move_to_end(version_id)
                return self._surveys[version_id]
        stored = stored_version(conn, version_id)
        frozen = None
        if stored is not None and "survey" in stored[1]:
            version_hash, definition = stored
            name = str(definition["survey"]["name"])
            # as mailer.mail.version.from_definition reads it, without compiling templates
            survey = parse_survey_source(str(definition["survey"]["source"]),
                                         f"surveys/{name}.yaml")
            frozen = (name, version_hash, survey)
        with self._lock:
            self._surveys[version_id] = frozen
            while len(self._surveys) > self.VERSIONS:
                self._surveys.popitem(last=False)
        return frozen


def first_answer(asked: Asked, value: str) -> int:
    """The first question's answer a link carries (the token's extra); BadAnswer when it
    is not on the question's scale."""
    return _number(asked.first, value)


def parse_answers(survey: Survey, form: Mapping[str, Sequence[str]]) -> list[Answer]:
    """The answers of a posted survey form (field name = question id; an empty field is a
    question not answered), in the survey's order; BadAnswer for a field the page would
    not have sent."""
    for name, values in form.items():
        if survey.question(name) is None:
            raise BadAnswer(f"{name[:40]!r} is not a question of this survey")
        if len(values) > 1:
            raise BadAnswer(f"{name}: answered {len(values)} times; one answer a question")
    answers = []
    for question in survey.questions:
        given = form.get(question.id)
        value = given[0] if given else ""
        if question.kind == "text":
            text = _printable(value.replace("\r\n", "\n")).strip()
            if len(text) > TEXT_LIMIT:
                raise BadAnswer(f"{question.id}: {len(text):,} characters; a comment is at "
                                f"most {TEXT_LIMIT:,}")
            if text:
                answers.append(Answer(question.id, text=text))
        elif not value:
            continue
        elif question.kind == "choice":
            assert question.options is not None  # a choice question has them
            if value not in question.options:
                raise BadAnswer(f"{question.id}: {value[:40]!r} is not one of "
                                f"{', '.join(question.options)}")
            answers.append(Answer(question.id, text=value))
        else:
            answers.append(Answer(question.id, number=_number(question, value)))
    if not answers:
        raise BadAnswer("no question answered")
    return answers


def _number(question: Question, value: str) -> int:
    scale = SCALES[question.kind]
    # isdigit() says yes to "²" and int() takes any length: ASCII, two digits at most
    if not (value.isascii() and value.isdigit() and len(value) <= 2
            and int(value) in scale):
        raise BadAnswer(f"{question.id}: {value[:20]!r} is not an answer from {scale[0]} to "
                        f"{scale[-1]}")
    return int(value)


_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def _printable(text: str) -> str:
    """TEXT without control characters but tab and line breaks (PostgreSQL refuses NUL in
    text; escape sequences have no place in a report)."""
    return _CONTROL.sub("", text)


def record(engine: Engine, asked: Asked, answers: Sequence[Answer], at: datetime,
           settings: Settings | None) -> Recorded:
    """Record one press of the survey page's button: each answer replaces that question's
    earlier answer to the same mail; a low score queues the survey's alert (once per
    mail) in the same transaction, so an answer is never kept without its alert."""
    with engine.begin() as conn:
        record_answers(conn, customer_id=asked.customer_id, campaign=asked.campaign,
                       occurrence=asked.occurrence, survey=asked.name,
                       version_hash=asked.version_hash, answers=answers, at=at)
        alerted = settings is not None and alert_on_answers(
            conn, settings, asked.name, asked.survey, customer_id=asked.customer_id,
            campaign=asked.campaign, occurrence=asked.occurrence, answers=answers, now=at)
    return Recorded(asked, tuple(answers), at, alerted)
