"""`mailer responses SURVEY`: a survey's scores, month by month, and its latest comments
(docs/surveys.md).

The survey's questions are read from its file in the workspace (answers to a question
it no longer has are left out); the answers are aggregated in the database
(mailer.store.insight.responses) and scored by mailer.insight.scores. `--since` is
inclusive and `--until` exclusive, on the time each answer was recorded; months are
the workspace zone's.
"""

from __future__ import annotations

import csv
import os
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from mailer.config.settings import Settings
from mailer.config.survey import SCALES, Survey
from mailer.config.workspace import load_surveys
from mailer.core.clock import iso_z, localize, zone
from mailer.core.errors import ConfigError, NotFoundError, UserError
from mailer.core.suggest import did_you_mean
from mailer.insight.scores import rounded, score_question, survey_csi, survey_nps
from mailer.store.db import Engine, serial_plans
from mailer.store.insight.responses import (
    Row,
    Window,
    answer_counts,
    answer_span,
    answers,
    latest_comments,
    response_counts,
    scored_counts,
    text_counts,
)

COMMENTS = 20  # the latest comments the JSON carries (the CSV has every one)
CSV_COLUMNS = ("at", "customer", "campaign", "occurrence", "version_hash", "question", "kind",
               "value")


def find_survey(root: Path, name: str) -> Survey:
    """The workspace's survey NAME; unknown is NotFoundError with "did you mean", a file
    with problems is their ConfigError."""
    surveys, problems = load_surveys(root)
    if name in surveys:
        return surveys[name]
    own = [p for p in problems if p.path in (f"surveys/{name}.yaml", f"surveys/{name}.yml")]
    if any(not p.warning for p in own):
        raise ConfigError(own)
    known = sorted({*surveys, *(Path(p.path).stem for p in problems)})
    raise NotFoundError(f"unknown survey {name!r}" + did_you_mean(name, known,
                        otherwise=f" (surveys: {', '.join(known) or 'none in surveys/'})"))


def window(name: str, settings: Settings, *, since: str | None,
           until: str | None) -> Window:
    """The answers --since and --until select (no offset: the workspace zone)."""
    from mailer.core.clock import parse_local

    tz = zone(settings.timezone)
    start = parse_local(since, tz) if since is not None else None
    end = parse_local(until, tz) if until is not None else None
    if start is not None and end is not None and end <= start:
        raise UserError(f"--until {iso_z(end)} is not after --since {iso_z(start)}")
    return Window(name, start, end)


def month_starts(first: datetime, last: datetime, tz: ZoneInfo) -> list[datetime]:
    """The first instants of the local months from FIRST's to LAST's, in UTC."""
    month = first.astimezone(tz).date().replace(day=1)
    end = last.astimezone(tz).date().replace(day=1)
    starts = []
    while month <= end:
        starts.append(localize(datetime.combine(month, datetime.min.time()), tz))
        month = date(month.year + month.month // 12, month.month % 12 + 1, 1)
    return starts


@dataclass(frozen=True)
class _Counts:
    """What the database said, by month index: numbers[month][question] = counts."""

    numbers: dict[int, dict[str, dict[int, int]]]
    texts: dict[str, dict[str, int]]
    answered: dict[str, int]
    responses: dict[int, int]


def _read(engine: Engine, survey: Survey, found: Window, starts: list[datetime]) -> _Counts:
    numbers: dict[int, dict[str, dict[int, int]]] = defaultdict(lambda: defaultdict(dict))
    texts: dict[str, dict[str, int]] = defaultdict(dict)
    choices = [q.id for q in survey.questions if q.kind == "choice"]
    with engine.begin() as conn:  # one transaction: one snapshot on PostgreSQL
        serial_plans(conn)
        scales = {q.id: SCALES[q.kind] for q in survey.questions if q.kind in SCALES}
        for (month, question, value), n in scored_counts(conn, found, starts, scales).items():
            numbers[month][question][value] = n
        for (question, text), n in text_counts(conn, found, choices).items():
            texts[question][text] = n
        answered = answer_counts(conn, found, [q.id for q in survey.questions
                                               if q.kind == "text"])
        responses = response_counts(conn, found, starts)
    return _Counts(numbers, texts, answered, responses)


def _overall(numbers: dict[int, dict[str, dict[int, int]]]) -> dict[str, dict[int, int]]:
    total: dict[str, dict[int, int]] = defaultdict(dict)
    for by_question in numbers.values():
        for question, counts in by_question.items():
            for value, n in counts.items():
                total[question][value] = total[question].get(value, 0) + n
    return total


def survey_responses(engine: Engine, root: Path, settings: Settings, name: str, *,
                     since: str | None = None, until: str | None = None,
                     comments: int = COMMENTS) -> dict[str, Any]:
    """{survey, responses, questions, csi, nps, by_month, comments} of the survey NAME."""
    survey = find_survey(root, name)
    found = window(name, settings, since=since, until=until)
    tz = zone(settings.timezone)
    with engine.connect() as conn:
        span = answer_span(conn, found)
    starts = month_starts(*span, tz) if span is not None else []
    counts = _read(engine, survey, found, starts) if span is not None else \
        _Counts({}, {}, {}, {})
    overall = _overall(counts.numbers)
    questions = survey.questions
    with engine.connect() as conn:
        latest = latest_comments(conn, found, [q.id for q in questions if q.kind == "text"],
                                 limit=comments)
    return {
        "survey": name,
        "responses": sum(counts.responses.values()),
        "questions": [score_question(q, numbers=overall.get(q.id, {}),
                                     texts=counts.texts.get(q.id, {}),
                                     answered=counts.answered.get(q.id, 0)).as_json()
                      for q in questions],
        "csi": rounded(survey_csi(questions, overall)),
        "nps": rounded(survey_nps(questions, overall)),
        "by_month": [{"month": start.astimezone(tz).strftime("%Y-%m"),
                      "responses": counts.responses.get(index, 0),
                      "csi": rounded(survey_csi(questions, counts.numbers.get(index, {}))),
                      "nps": rounded(survey_nps(questions, counts.numbers.get(index, {})))}
                     for index, start in enumerate(starts)],
        "comments": [{"at": iso_z(c.at), "customer": c.customer, "question": c.question,
                      "text": c.text} for c in latest],
    }


def _cell(text: str) -> str:
    """A customer's text as a spreadsheet shows it, never runs it: a cell starting with
    = + - @ or a control character is a formula to Excel and LibreOffice (OWASP's CSV
    injection), so it gets a leading apostrophe."""
    return f"'{text}" if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def _csv_rows(rows: Iterator[Row], survey: Survey) -> Iterator[list[str]]:
    kinds = {q.id: q.kind for q in survey.questions}
    for row in rows:
        value = str(row.number) if row.number is not None else _cell(row.text or "")
        yield [iso_z(row.at), row.customer, row.campaign, row.occurrence, row.version_hash,
               row.question, kinds.get(row.question, ""), value]


def export_csv(engine: Engine, root: Path, settings: Settings, name: str, path: Path, *,
               since: str | None = None, until: str | None = None) -> int:
    """Write every answer in the window to PATH, one row per answer (CSV_COLUMNS), by time;
    the file appears whole or not at all. Returns the rows written."""
    survey = find_survey(root, name)
    found = window(name, settings, since=since, until=until)
    partial = path.with_name(f".{path.name}.partial")
    written = 0
    try:
        with partial.open("w", encoding="utf-8", newline="") as handle, \
                engine.connect() as conn:
            writer = csv.writer(handle)
            writer.writerow(CSV_COLUMNS)
            for line in _csv_rows(answers(conn, found), survey):
                writer.writerow(line)
                written += 1
        os.replace(partial, path)
    except OSError as err:
        partial.unlink(missing_ok=True)
        raise UserError(f"cannot write {path}: {err.strerror}") from None
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return written
