"""The low-score alert (issue 19, docs/surveys.md#alerts): when a mail's answers put the
survey's alert question at or below `at_most`, a notice goes to `alert.to` (else
sender.reply_to, else sender.from) naming the customer, the order the mail asked about
(an after_order mail's occurrence `order:<store order id>`; else their latest paid order)
and every answer the mail has, earlier presses' included.

At most one alert per mail and survey: its key names the survey and the mail (customer,
campaign, occurrence), so a second POST replacing the answers — lower again, or higher
then lower — never alerts twice. A first answer above `at_most` and a later one at or
below it does alert (once).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import datetime
from html import escape

from mailer.config.settings import Settings
from mailer.config.survey import SCALES, Survey, alert_recipient
from mailer.core.clock import zone
from mailer.core.money import format_minor
from mailer.delivery.notices import KEY_LENGTH, queue_notice
from mailer.store.db import Connection
from mailer.store.insight.responses import Answer, mail_answers
from mailer.store.review import AlertSubject, alert_subject


def alert_key(survey: str, customer_id: int, campaign: str, occurrence: str) -> str:
    """`alert:SURVEY:CUSTOMER:CAMPAIGN:OCCURRENCE`; a digest of it when that is too long."""
    key = f"alert:{survey}:{customer_id}:{campaign}:{occurrence}"
    if len(key) <= KEY_LENGTH:
        return key
    return "alert:" + hashlib.sha256(key.encode()).hexdigest()


def is_low(survey: Survey, answers: Sequence[Answer]) -> Answer | None:
    """The answer that raises the survey's alert, if one does."""
    rule = survey.alert
    if rule is None:
        return None
    return next((a for a in answers if a.question == rule.question and a.number is not None
                 and a.number <= rule.at_most), None)


def _lines(survey: Survey, answers: Sequence[Answer]) -> list[tuple[str, str]]:
    """(question asked, answer) in the survey's order, answered questions only."""
    given = {a.question: a for a in answers}
    lines = []
    for question in survey.questions:
        answer = given.get(question.id)
        if answer is None:
            continue
        if answer.number is not None:
            scale = SCALES.get(question.kind)
            value = f"{answer.number}" + (f" of {scale[-1]}" if scale else "")
        else:
            value = answer.text or ""
        lines.append((question.ask, value))
    return lines


def alert_body(survey_name: str, survey: Survey, who: AlertSubject, answers: Sequence[Answer],
               low: Answer, *, settings: Settings, now: datetime) -> tuple[str, str, str]:
    """(subject, HTML, text) of the alert."""
    tz = zone(settings.timezone)
    person = f"{who.name} <{who.email}>" if who.name else who.email
    subject = (f"Low score from {who.name or who.email}: {low.question} {low.number} "
               f"({survey_name})")
    order = "no paid order on file" if who.order is None else (
        f"order {who.order.store_id} of {who.order.placed_at.astimezone(tz):%Y-%m-%d %H:%M}, "
        f"{format_minor(who.order.total_minor, who.order.currency)} {who.order.currency}")
    facts = [("Customer", f"{person} (id {who.store_id})"),
             ("Order" if who.asked else "Latest order", order),
             ("Survey", f"{survey_name}: {survey.title}"),
             ("Answered", f"{now.astimezone(tz):%Y-%m-%d %H:%M} ({settings.timezone})")]
    lines = _lines(survey, answers)
    at_most = survey.alert.at_most if survey.alert is not None else low.number
    text = "\n".join([f"{survey_name}: {low.question} answered {low.number} (alert at or "
                      f"below {at_most}).", "",
                      *(f"{k}: {v}" for k, v in facts), "",
                      *(f"- {ask}\n  {value}" for ask, value in lines)]) + "\n"
    rows = "".join(f"<tr><th align=\"left\">{escape(k)}</th><td>{escape(v)}</td></tr>"
                   for k, v in facts)
    answered = "".join(f"<li><strong>{escape(ask)}</strong><br>{escape(value)}</li>"
                       for ask, value in lines)
    html = (f"<!doctype html><html><body style=\"font-family:sans-serif\">"
            f"<h1 style=\"font-size:18px\">{escape(subject)}</h1><table>{rows}</table>"
            f"<h2 style=\"font-size:16px\">Every answer</h2><ul>{answered}</ul>"
            f"</body></html>")
    return subject, html, text


ORDER_OCCURRENCE = "order:"  # an after_order campaign's occurrence: order:<store order id>


def asked_order(occurrence: str) -> str | None:
    """The store id of the order an after_order mail asked about, else None."""
    if occurrence.startswith(ORDER_OCCURRENCE) and len(occurrence) > len(ORDER_OCCURRENCE):
        return occurrence[len(ORDER_OCCURRENCE):]
    return None


def alert_on_answers(conn: Connection, settings: Settings, survey_name: str, survey: Survey, *,
                     customer_id: int, campaign: str, occurrence: str,
                     answers: Sequence[Answer], now: datetime) -> bool:
    """Queue the survey's alert about this mail when ANSWERS (what the page just recorded)
    answer its alert question at or below `at_most`; whether an alert was queued now
    (False: no alert rule, no low answer, or this mail's alert was queued before). Runs in
    the caller's transaction after record_answers, so the alert lists every answer the
    mail has by then, those of earlier presses too."""
    low = is_low(survey, answers)
    if low is None or survey.alert is None:
        return False
    who = alert_subject(conn, customer_id, now, asked_order(occurrence))
    if who is None:
        return False
    # the mail's stored answers, this press's over them (the same, once recorded)
    every = {a.question: a for a in mail_answers(conn, customer_id=customer_id,
                                                 campaign=campaign, occurrence=occurrence,
                                                 survey=survey_name)}
    every.update((a.question, a) for a in answers)
    subject, html, text = alert_body(survey_name, survey, who, list(every.values()), low,
                                     settings=settings, now=now)
    to = alert_recipient(survey.alert, reply_to=settings.sender.reply_to,
                         sender=settings.sender.from_address)
    return queue_notice(conn, settings, kind="alert",
                        key=alert_key(survey_name, customer_id, campaign, occurrence),
                        to=to, subject=subject, html=html, text=text, now=now)
