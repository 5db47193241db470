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

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import (
    ColumnElement,
    Integer,
    Table,
    and_,
    bindparam,
    case,
    func,
    literal,
    select,
    text,
)

from mailer.store.db import Connection, is_server, upsert
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


def mail_answers(conn: Connection, *, customer_id: int, campaign: str, occurrence: str,
                 survey: str) -> list[Answer]:
    """Every answer one mail has to SURVEY as stored now (the low-score alert lists
    them all, not only the latest press's), by question id."""
    rows = conn.execute(
        select(Response.question, Response.value_number, Response.value_text)
        .where(Response.customer_id == customer_id, Response.campaign == campaign,
               Response.occurrence == occurrence, Response.survey == survey)
        .order_by(Response.question))
    return [Answer(str(question), number, words) for question, number, words in rows]


def _where(window: Window) -> ColumnElement[bool]:
    conditions = [Response.survey == window.survey]
    if window.since is not None:
        conditions.append(Response.at >= window.since)
    if window.until is not None:
        conditions.append(Response.at < window.until)
    return and_(*conditions)


def _month(at: Any, starts: Sequence[datetime]) -> ColumnElement[int]:
    """The index of the month AT falls in: STARTS are the months' first instants, in
    order (before the first counts as month 0: the caller's first start is at or before
    every answer). A binary search, so each row is compared about log2(months) times;
    grouping by it costs SQLite a sort, still several times cheaper than a sum per month
    beside the index's own order (measured by bench/responses.py)."""
    def within(low: int, high: int) -> ColumnElement[int]:
        if high - low <= 1:
            return literal(low, Integer)
        middle = (low + high) // 2
        return case((at < starts[middle], within(low, middle)), else_=within(middle, high))
    return within(0, len(starts))


def answer_span(conn: Connection, window: Window) -> tuple[datetime, datetime] | None:
    """The first and the latest time an answer in WINDOW was recorded; None: no answers.
    Two queries: each is one step down ix_responses_survey_at, where min and max in one
    statement would read every answer."""
    first = conn.execute(select(func.min(Response.at)).where(_where(window))).scalar()
    last = conn.execute(select(func.max(Response.at)).where(_where(window))).scalar()
    if first is None or last is None:
        return None
    return first, last


def scored_counts(conn: Connection, window: Window, starts: Sequence[datetime],
                  scales: Mapping[str, Sequence[int]]) -> dict[tuple[int, str, int], int]:
    """(month index, question, number) -> answers, for the numeric answers of the
    questions in SCALES (rating, nps: question -> the answers it takes). One count per
    question, answer and month, each a range of the covering ix_responses_survey_question
    (survey, question, value_number, at) on SQLite: no sort and no per-row arithmetic,
    which made a single GROUP BY by month several times slower there; PostgreSQL, where
    each statement is a round trip, groups once (bench/responses.py)."""
    if is_server(conn):  # PostgreSQL hashes the groups: one pass, no sort, no seeks
        index = _month(Response.at, starts).label("month")
        grouped = (select(index, Response.question, Response.value_number, func.count())
                   .where(_where(window), Response.question.in_(list(scales)),
                          Response.value_number.is_not(None))
                   .group_by(index, Response.question, Response.value_number))
        return {(int(m), str(q), int(v)): int(n) for m, q, v, n in conn.execute(grouped)
                if v is not None and v in scales[str(q)]}
    ends = [*starts[1:], None]
    query = (select(func.count()).where(
        _where(window), Response.question == bindparam("question"),
        Response.value_number == bindparam("value"), Response.at >= bindparam("low"),
        Response.at < bindparam("high")))
    found = {}
    for question, values in scales.items():
        for month, (start, end) in enumerate(zip(starts, ends, strict=True)):
            # the window's own bounds already apply; a month's bounds only narrow them
            low = start if month else datetime.min.replace(tzinfo=UTC)
            high = end or datetime.max.replace(tzinfo=UTC)
            for value in values:
                n = conn.execute(query, {"question": question, "value": value, "low": low,
                                         "high": high}).scalar_one()
                if n:
                    found[(month, question, value)] = int(n)
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
    first answer there: one pass over ix_responses_survey_mail, in its order."""
    first = (select(func.min(Response.at).label("first")).where(_where(window))
             .group_by(Response.customer_id, Response.campaign, Response.occurrence)
             .subquery("responses"))
    month = _month(first.c.first, starts).label("month")
    query = select(month, func.count()).select_from(first).group_by(month)
    return {int(m): int(n) for m, n in conn.execute(query)}


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


def comment_scores(conn: Connection, survey: str, comments: Sequence[tuple[str, str]]
                   ) -> dict[tuple[str, str], dict[str, float]]:
    """For comments (customer store id, ISO time), the numbers their reader answered in
    the same mail's answers: question -> value (the console shows who was unhappy)."""
    from sqlalchemy.orm import aliased

    from mailer.core.clock import iso_z

    if not comments:
        return {}
    said, scored = aliased(Response), aliased(Response)
    query = (select(Customer.store_id, said.at, scored.question, scored.value_number)
             .join(said, said.customer_id == Customer.id)
             .join(scored, (scored.customer_id == said.customer_id)
                   & (scored.campaign == said.campaign)
                   & (scored.occurrence == said.occurrence) & (scored.survey == survey))
             .where(said.survey == survey, said.value_text.is_not(None),
                    scored.value_number.is_not(None),
                    Customer.store_id.in_(sorted({who for who, _ in comments}))))
    wanted = set(comments)
    found: dict[tuple[str, str], dict[str, float]] = {}
    for who, at, question, value in conn.execute(query):
        key = (str(who), iso_z(at))
        if key in wanted and value is not None:
            found.setdefault(key, {})[str(question)] = float(value)
    return found
