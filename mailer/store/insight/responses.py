"""Survey responses (the responses table): recording answers, and the aggregates the
scores are made from (mailer.insight.scores).

A response is one mail's answers: the rows of one (customer, campaign, occurrence).
`record_answers` writes one row per question with an upsert, so a later answer to
the same mail replaces that question's answer and leaves the others. Every read
here aggregates in the database (counts per question and value, per month): none
loads the responses themselves, except `answers`, which streams them for a CSV.
Months are given as the UTC instants their local first days begin at (the caller
knows the workspace zone), and each answer is counted in the month it was recorded;
a response in the month of its first answer.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import ColumnElement, Table, and_, case, func, literal, select, text

from mailer.store.db import Connection, upsert
from mailer.store.models import SHORT_TEXT, Customer, Response


@dataclass(frozen=True)
class Answer:
    """One question's answer: NUMBER for rating and nps, TEXT for choice and text."""

    question: str
    number: int | None = None
    text: str | None = None


@dataclass(frozen=True)
class Window:
    """Whose answers a read counts: one survey, recorded in [since, until)."""

    survey: str
    since: datetime | None = None
    until: datetime | None = None


@dataclass(frozen=True)
class Comment:
    at: datetime
    customer: str  # the store's id of the customer
    question: str
    text: str


@dataclass(frozen=True)
class Row:
    """One answer as the CSV export writes it."""

    at: datetime
    customer: str
    campaign: str
    occurrence: str
    version_hash: str
    question: str
    number: int | None
    text: str | None


def record_answers(conn: Connection, *, customer_id: int, campaign: str, occurrence: str,
                   survey: str, version_hash: str, answers: Sequence[Answer],
                   at: datetime) -> None:
    """Record one mail's ANSWERS (one statement): each replaces that question's earlier
    answer to the same mail, if any; questions not answered now keep theirs."""
    if not answers:
        return
    table = cast(Table, Response.__table__)
    statement = upsert(conn, table).values([
        {"customer_id": customer_id, "campaign": campaign, "occurrence": occurrence,
         "survey": survey, "version_hash": version_hash, "question": answer.question,
         "value_number": answer.number, "value_text": answer.text, "at": at}
        for answer in answers])
    conn.execute(statement.on_conflict_do_update(
        index_elements=["customer_id", "campaign", "occurrence", "question"],
        set_={column: statement.excluded[column]
              for column in ("survey", "version_hash", "value_number", "value_text", "at")}))


def _where(window: Window) -> ColumnElement[bool]:
    conditions = [Response.survey == window.survey]
    if window.since is not None:
        conditions.append(Response.at >= window.since)
    if window.until is not None:
        conditions.append(Response.at < window.until)
    return and_(*conditions)


def _months(at: Any, starts: Sequence[datetime]) -> list[ColumnElement[Any]]:
    """One count per month: how many rows have AT in [starts[i], starts[i + 1]) (before
    the first start counts in month 0: the caller's first start is at or before every
    answer). Sums beside a GROUP BY the index is ordered by, not a GROUP BY the month:
    SQLite would sort every answer for that (it has no hash aggregate)."""
    sums: list[ColumnElement[Any]] = []
    for index in range(len(starts)):
        bounds = []
        if index > 0:
            bounds.append(at >= starts[index])
        if index + 1 < len(starts):
            bounds.append(at < starts[index + 1])
        inside = and_(*bounds) if bounds else literal(True)
        sums.append(func.coalesce(func.sum(case((inside, 1), else_=0)), 0))
    return sums


def answer_span(conn: Connection, window: Window) -> tuple[datetime, datetime] | None:
    """The first and the latest time an answer in WINDOW was recorded; None: no answers.
    Two queries: each is one step down ix_responses_survey_at, where min and max in one
    statement would read every answer."""
    first = conn.execute(select(func.min(Response.at)).where(_where(window))).scalar()
    last = conn.execute(select(func.max(Response.at)).where(_where(window))).scalar()
    if first is None or last is None:
        return None
    return first, last


def scored_counts(conn: Connection, window: Window, starts: Sequence[datetime]
                  ) -> dict[tuple[int, str, int], int]:
    """(month index, question, number) -> answers, for the numeric answers (rating, nps):
    one pass over ix_responses_survey_question, in its order."""
    query = (select(Response.question, Response.value_number, *_months(Response.at, starts))
             .where(_where(window), Response.value_number.is_not(None))
             .group_by(Response.question, Response.value_number))
    found = {}
    for question, value, *months in conn.execute(query):
        for month, n in enumerate(months):
            if n:
                found[(month, str(question), int(value))] = int(n)
    return found


def text_counts(conn: Connection, window: Window, questions: Sequence[str]
                ) -> dict[tuple[str, str], int]:
    """(question, text) -> answers, for the QUESTIONS whose answers are counted by value
    (the choice questions; a comment is not)."""
    if not questions:
        return {}
    query = (select(Response.question, Response.value_text, func.count())
             .where(_where(window), Response.question.in_(list(questions)),
                    text(SHORT_TEXT))  # as ix_responses_survey_choice says it: the planner
             .group_by(Response.question, Response.value_text))  # then reads that index
    return {(str(q), str(t)): int(n) for q, t, n in conn.execute(query)}


def answer_counts(conn: Connection, window: Window, questions: Sequence[str]
                  ) -> dict[str, int]:
    """Question -> how many answers it has in WINDOW, for QUESTIONS (the text ones: the
    others are counted by value)."""
    if not questions:
        return {}
    query = (select(Response.question, func.count())
             .where(_where(window), Response.question.in_(list(questions)))
             .group_by(Response.question))
    return {str(q): int(n) for q, n in conn.execute(query)}


def response_counts(conn: Connection, window: Window, starts: Sequence[datetime]
                    ) -> dict[int, int]:
    """Month index -> responses (mails with any answer in WINDOW), each in the month of its
    first answer there: one ordered pass over ix_responses_survey_mail."""
    first = (select(func.min(Response.at).label("first")).where(_where(window))
             .group_by(Response.customer_id, Response.campaign, Response.occurrence)
             .subquery("responses"))
    if not starts:
        return {}
    months = conn.execute(select(*_months(first.c.first, starts)).select_from(first)).one()
    return {month: int(n) for month, n in enumerate(months) if n}


def latest_comments(conn: Connection, window: Window, questions: Sequence[str], *,
                    limit: int) -> list[Comment]:
    """The LIMIT latest non-empty answers to QUESTIONS (the text ones), latest first."""
    if not questions or limit <= 0:
        return []
    query = (select(Response.at, Customer.store_id, Response.question, Response.value_text)
             .join(Customer, Customer.id == Response.customer_id)
             .where(_where(window), Response.question.in_(list(questions)),
                    func.length(func.trim(Response.value_text)) > 0)
             .order_by(Response.at.desc(), Response.id.desc()).limit(limit))
    return [Comment(at, str(customer), str(question), str(value))
            for at, customer, question, value in conn.execute(query)]


def answers(conn: Connection, window: Window, *, batch: int = 10_000) -> Iterator[Row]:
    """Every answer in WINDOW, by time, streamed (the CSV export; never all in memory)."""
    query = (select(Response.at, Customer.store_id, Response.campaign, Response.occurrence,
                    Response.version_hash, Response.question, Response.value_number,
                    Response.value_text)
             .join(Customer, Customer.id == Response.customer_id)
             .where(_where(window)).order_by(Response.at, Response.id))
    result = conn.execution_options(stream_results=True, yield_per=batch).execute(query)
    for at, customer, campaign, occurrence, version, question, number, words in result:
        yield Row(at, str(customer), str(campaign), str(occurrence), str(version),
                  str(question), number, words)
