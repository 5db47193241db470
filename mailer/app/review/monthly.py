"""A month's review (issue 19): campaigns' rates, attributed orders, survey scores beside
the previous month's, the stage flow, comments, alerts, bounces and complaints.

Definitions (docs/surveys.md, "The monthly review"): months are the workspace zone's; a
campaign's figures are its mails sent in the month (ledger rows `sent` with sent_at in
it), each counted once as opened, clicked or unsubscribed from whenever that came;
rates are % of the sent mails, 2 places. An order is attributed when it is paid, in the
store's currency, placed in the month and in (click, click + 7 d] of one of the
customer's clicks (the last such click names the campaign); revenue is in major units.
Surveys are the workspace's, their scores from the answers recorded in the month and in
the month before (mailer.app.surveys.responses). `alerts` counts the alert notices
queued in the month; `bounces` and `complaints` the events recorded in it.
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any

from mailer.app.stages import month_bounds, show
from mailer.app.surveys.responses import survey_responses
from mailer.config.settings import Settings
from mailer.config.workspace import load_surveys
from mailer.core.clock import iso_z, zone
from mailer.core.errors import UserError
from mailer.core.money import exponent
from mailer.insight.scores import rounded
from mailer.store.db import Engine, serial_plans
from mailer.store.notices import created_between
from mailer.store.review import attributed, campaign_months, event_counts

COMMENTS = 20  # the month's latest comments the review carries


def previous_month(month: date) -> date:
    return date(month.year - (month.month == 1), (month.month - 2) % 12 + 1, 1)


def month_of(moment: datetime, settings: Settings) -> date:
    """The first day of MOMENT's month in the workspace zone."""
    return moment.astimezone(zone(settings.timezone)).date().replace(day=1)


def _rate(n: int, sent: int) -> float | None:
    return rounded(Fraction(100 * n, sent)) if sent else None


def _money(minor: int, currency: str) -> float | int:
    amount = Decimal(minor).scaleb(-exponent(currency))
    return int(amount) if amount == amount.to_integral_value() else float(amount)


def _surveys(engine: Engine, root: Path, settings: Settings, start: datetime, end: datetime,
             before: datetime) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Each workspace survey's month beside the one before, and the month's comments."""
    tz = zone(settings.timezone)
    this, last = f"{start.astimezone(tz):%Y-%m}", f"{before.astimezone(tz):%Y-%m}"
    rows, comments = [], []
    surveys, _ = load_surveys(root)
    for name in sorted(surveys):
        found = survey_responses(engine, root, settings, name, since=iso_z(before),
                                 until=iso_z(end), comments=COMMENTS)
        months = {m["month"]: m for m in found["by_month"]}
        now_, then = months.get(this, {}), months.get(last, {})
        rows.append({"survey": name, "responses": now_.get("responses", 0),
                     "csi": now_.get("csi"), "nps": now_.get("nps"),
                     "csi_previous": then.get("csi"), "nps_previous": then.get("nps")})
        # the window's newest first: those of this month are at the top
        comments += [{"at": c["at"], "survey": name, "customer": c["customer"],
                      "question": c["question"], "text": c["text"]}
                     for c in found["comments"] if c["at"] >= iso_z(start)]
    comments.sort(key=lambda c: c["at"], reverse=True)
    return rows, comments[:COMMENTS]


def monthly_review(engine: Engine, root: Path, settings: Settings, month: date,
                   now: datetime) -> dict[str, Any]:
    """MONTH's review as of NOW (the §JSON of `mailer review --json`); a month that has not
    begun at NOW is an error."""
    start, end = month_bounds(month, settings)
    if start > now:
        raise UserError(f"{month:%Y-%m} has not begun at {iso_z(now)}")
    before, _ = month_bounds(previous_month(month), settings)
    currency = settings.store.currency
    with engine.begin() as conn:  # one snapshot on PostgreSQL
        serial_plans(conn)
        sent = campaign_months(conn, start, end)
        credited = attributed(conn, start, end, currency)
        events = event_counts(conn, start, end, ("bounce", "complaint"))
        alerts = created_between(conn, "alert", start, end)
    surveys, comments = _surveys(engine, root, settings, start, end, before)
    stages = show(engine, settings, now, month)
    return {
        "month": f"{month:%Y-%m}",
        "campaigns": [{"campaign": c.campaign, "sent": c.sent,
                       "open_rate": _rate(c.opened, c.sent),
                       "click_rate": _rate(c.clicked, c.sent),
                       "unsubscribe_rate": _rate(c.unsubscribed, c.sent)} for c in sent],
        "attributed": {"orders": sum(n for n, _ in credited.values()),
                       "revenue": _money(sum(total for _, total in credited.values()),
                                         currency)},
        "surveys": surveys,
        "stages": {"counts": stages["counts"], "moves": stages["moves"]},
        "comments": comments,
        "alerts": alerts,
        "bounces": events["bounce"],
        "complaints": events["complaint"],
        # not in the JSON: the page shows which campaigns the orders are credited to
    }


def attributed_by_campaign(engine: Engine, settings: Settings, month: date
                           ) -> dict[str, tuple[int, float | int]]:
    """Campaign -> (orders, revenue) attributed in MONTH (the page's table)."""
    start, end = month_bounds(month, settings)
    currency = settings.store.currency
    with engine.connect() as conn:
        return {campaign: (n, _money(total, currency))
                for campaign, (n, total) in sorted(attributed(conn, start, end,
                                                              currency).items())}
