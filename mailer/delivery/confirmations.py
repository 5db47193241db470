"""Double opt-in (`consent: {double_opt_in: true}`, docs/events.md#double-opt-in): the
confirmation notice, its one reminder, and the signed link that confirms.

A customer who asks (a webhook's opt-in, an import's `subscribed=pending`) is `pending`
and gets no marketing mail (plan reason `pending`). `queue_confirmations` — run by the
daemon's sweep, `run --once` and `mailer send`, like the other notices' producers —
queues each pending customer's confirmation as a notice (not marketing: no caps, no
unsubscribe footer), once per request (key `confirm:<customer id>:<request time>`),
and REMIND_AFTER after it one reminder (`confirm-reminder:…`), only when the first one
went out; after that nothing more, whatever happens. Each notice carries a signed
`/confirm/TOKEN` link (purpose `confirm`, the customer's store id and the moment it was
signed), good for LINK_VALID: its GET shows a button and changes nothing, its POST
confirms (mailer.store.customers.confirm_opt_in keeps the time and IP as proof).
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from html import escape

from mailer.config.settings import Settings
from mailer.core.claims import Claims
from mailer.delivery.notices import queue_notice
from mailer.mail.links import signed_url
from mailer.store.customers import Asking, mark_asked, pending_to_remind, pending_unasked
from mailer.store.db import Connection, Engine
from mailer.store.notices import GAVE_UP, confirmation_key, sent_to

log = logging.getLogger("mailer.confirm")

REMIND_AFTER = timedelta(days=3)  # the one reminder, this long after the confirmation
LINK_VALID = timedelta(days=7)  # a confirm link works this long after it was signed
BATCH = 200  # customers per transaction
WENT_OUT = ("sent", "unknown")  # a reminder follows only a confirmation that left


def notice_key(customer: Asking, *, reminder: bool) -> str:
    """`confirm:<id>:<request time>` (or `confirm-reminder:…`): one per request, so a
    customer who asks again after withdrawing gets a new one."""
    return confirmation_key(customer.id, customer.requested_at, reminder=reminder)


def address_tag(email: str) -> str:
    """What a confirm link carries of the address it was sent to: a link confirms that
    address only (a customer whose address changed since must not be confirmed by the
    old mailbox)."""
    return hashlib.sha256(email.strip().lower().encode()).hexdigest()[:16]


def confirm_url(base_url: str, store_id: str, email: str, signed_at: datetime,
                key: str) -> str:
    """The signed `/confirm/TOKEN` link of a customer at EMAIL, made at SIGNED_AT."""
    return signed_url(base_url, "confirm", store_id, address_tag(email),
                      str(int(signed_at.timestamp())), key)


def link_expired(claims: Claims, now: datetime) -> bool:
    """Whether a confirm link is older than LINK_VALID at NOW (or carries no time). One
    signed later than NOW (a clock behind the sweep's) is good: only we sign them."""
    if not claims.message.isdigit() or len(claims.message) > 12:
        return True
    return now - datetime.fromtimestamp(int(claims.message), UTC) > LINK_VALID


def notice_body(settings: Settings, customer: Asking, url: str, *,
                reminder: bool) -> tuple[str, str, str]:
    """(subject, HTML, text) of the confirmation notice or its reminder."""
    store = settings.store.name
    subject = (f"Reminder: please confirm your subscription to {store}" if reminder
               else f"Please confirm your subscription to {store}")
    hello = f"Hello {customer.first_name}," if customer.first_name else "Hello,"
    days = LINK_VALID.days
    ask = (f"you asked to hear from {store}. Please confirm that this address is yours "
           "and that you want our mail: open the link and press the button.")
    ignore = ("Did not ask? Then ignore this mail: without your confirmation we send you "
              "nothing more.")
    text = "\n".join([hello, "", ask, "", url, "", f"The link works for {days} days. {ignore}",
                      "", f"{store}, {settings.store.address}"]) + "\n"
    html = (f"<!doctype html><html><body style=\"font-family:sans-serif;max-width:34rem\">"
            f"<p>{escape(hello)}</p><p>{escape(ask)}</p>"
            f"<p><a href=\"{escape(url)}\" id=\"confirm\" style=\"background:#24553d;"
            f"color:#fff;padding:10px 18px;border-radius:4px;text-decoration:none;"
            f"display:inline-block\">Confirm my subscription</a></p>"
            f"<p style=\"color:#666;font-size:13px\">The link works for {days} days. "
            f"{escape(ignore)}</p>"
            f"<p style=\"color:#666;font-size:13px\">{escape(store)}, "
            f"{escape(settings.store.address)}</p></body></html>")
    return subject, html, text


@dataclass(frozen=True)
class Queued:
    """What one look queued: confirmations and reminders."""

    confirmations: int = 0
    reminders: int = 0


def queue_confirmations(engine: Engine, settings: Settings, key: str, now: datetime) -> Queued:
    """Queue the confirmation of every pending customer who has none yet, and the one
    reminder of those asked REMIND_AFTER ago or earlier whose confirmation went out;
    nothing without consent.double_opt_in. Idempotent: a notice's key and the customer's
    opt_in_sent_at / opt_in_reminded_at make each at most once."""
    if not settings.consent.double_opt_in:
        return Queued()
    confirmations = reminders = 0
    while batch := _first(engine, settings, key, now):
        confirmations += batch
    after = 0
    while True:
        done, after = _reminders(engine, settings, key, now, after)
        reminders += done
        if after == 0:
            break
    if confirmations or reminders:
        log.info("double opt-in: %d confirmations and %d reminders queued", confirmations,
                 reminders, extra={"fields": {"event": "confirmations", "confirmations":
                                              confirmations, "reminders": reminders}})
    return Queued(confirmations, reminders)


def _queue(conn: Connection, settings: Settings, key: str, now: datetime, customer: Asking, *,
           reminder: bool) -> bool:
    url = confirm_url(settings.tracking.base_url, customer.store_id, customer.email, now, key)
    subject, html, text = notice_body(settings, customer, url, reminder=reminder)
    return queue_notice(conn, settings,
                        kind="confirm_reminder" if reminder else "confirm",
                        key=notice_key(customer, reminder=reminder), to=customer.email,
                        subject=subject, html=html, text=text, now=now)


def _first(engine: Engine, settings: Settings, key: str, now: datetime) -> int:
    """One batch of confirmations; how many customers it covered (0: none left)."""
    with engine.begin() as conn:
        batch = pending_unasked(conn, BATCH)
        chosen = mark_asked(conn, [c.id for c in batch], now, reminder=False)
        for customer in batch:
            if customer.id in chosen:
                _queue(conn, settings, key, now, customer, reminder=False)
    return len(batch)


def _reminders(engine: Engine, settings: Settings, key: str, now: datetime,
               after: int) -> tuple[int, int]:
    """One batch of reminders from customer id AFTER on: (queued, the id to go on from,
    0 when none is left). A confirmation still on its way waits for a later look."""
    queued = 0
    with engine.begin() as conn:
        batch = pending_to_remind(conn, now - REMIND_AFTER, BATCH, after)
        found = sent_to(conn, [notice_key(c, reminder=False) for c in batch])
        remind, settled = [], []
        for customer in batch:
            status, to = found.get(notice_key(customer, reminder=False), (None, None))
            if status in GAVE_UP and to == customer.email:
                settled.append(customer.id)  # this address refused the confirmation
            elif status is None or status in WENT_OUT or status in GAVE_UP:
                # a refused confirmation of an address the customer has left (a typo
                # fixed): the reminder goes to the new one, with a link it can use
                remind.append(customer)
                settled.append(customer.id)
        chosen = mark_asked(conn, settled, now, reminder=True)
        for customer in remind:
            if customer.id in chosen:
                queued += _queue(conn, settings, key, now, customer, reminder=True)
    return queued, (batch[-1].id if len(batch) == BATCH else 0)
