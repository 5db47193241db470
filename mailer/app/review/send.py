"""The review as a notice: `mailer review --send-to` and the daemon's monthly job."""

from __future__ import annotations

import hashlib
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

from mailer.app.review.monthly import (
    attributed_by_campaign,
    month_of,
    monthly_review,
    previous_month,
)
from mailer.app.review.page import review_html, review_text, title
from mailer.config.settings import Settings
from mailer.core.clock import zone
from mailer.delivery.notices import KEY_LENGTH, queue_notice
from mailer.planning.triggers import latest_fire, parse_cron
from mailer.store.db import Engine


def render(engine: Engine, root: Path, settings: Settings, month: date, now: datetime
           ) -> tuple[dict[str, Any], str, str]:
    """MONTH's review: its JSON document, HTML page and plain text."""
    review = monthly_review(engine, root, settings, month, now)
    store, currency = settings.store.name, settings.store.currency
    page = review_html(review, store=store, currency=currency,
                       by_campaign=attributed_by_campaign(engine, settings, month))
    return review, page, review_text(review, store=store, currency=currency)


REVIEW_GRACE = timedelta(days=7)  # a review missed at its fire time is caught up this long


def due_review(schedule: str, now: datetime, settings: Settings) -> date | None:
    """The month whose review the daemon owes at NOW: the one before the latest fire time
    of SCHEDULE (a crontab line in the workspace zone), if that fire time is at most
    REVIEW_GRACE ago; None otherwise (none yet, or a first start mid-month)."""
    fired = latest_fire(parse_cron(schedule), now, zone(settings.timezone))
    if fired is None or now - fired > REVIEW_GRACE:
        return None
    return previous_month(month_of(fired, settings))


def scheduled_key(month: date) -> str:
    """The daemon's review of MONTH: once, whatever the restarts."""
    return f"review:{month:%Y-%m}"


def send_to_key(month: date, to: str) -> str:
    """`mailer review --send-to`'s notice: `review:YYYY-MM:to:ADDRESS`, the month and a
    digest of the address when that is longer than a key (an address may be 254
    characters)."""
    key = f"review:{month:%Y-%m}:to:{to}"
    if len(key) <= KEY_LENGTH:
        return key
    return f"review:{month:%Y-%m}:to:" + hashlib.sha256(to.encode()).hexdigest()


def queue_review(engine: Engine, root: Path, settings: Settings, month: date, now: datetime,
                 *, to: str, key: str,
                 rendered: tuple[dict[str, Any], str, str] | None = None) -> bool:
    """Queue MONTH's review (RENDERED already, else rendered here) for TO as the notice
    KEY; whether it was queued now (False: a notice with that key was queued before, and
    nothing is written)."""
    from mailer.store.notices import exists

    with engine.connect() as conn:
        if exists(conn, key):  # the review is not computed again for nothing
            return False
    review, page, text = rendered or render(engine, root, settings, month, now)
    with engine.begin() as conn:
        return queue_notice(conn, settings, kind="review", key=key, to=to,
                            subject=title(review, settings.store.name), html=page, text=text,
                            now=now)
