"""The ledger's state machine for one attempt (DESIGN §6): pure, no I/O.

A row moves queued -> sending -> sent, deferred (retry at a time), failed
(permanent, with the server's reply), unknown, skipped (with a reason) or
expired (its expiry came before a transaction could begin). Classification is
from the client's side: a failure before the final `.` CRLF was handed to the
socket is temporary; a failure while waiting for the reply to it is `unknown`
("probably delivered", RFC 1047) and never resent by itself; 5xx is permanent,
5.1.x also suppresses the address, 5.7.x does not.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from mailer.core.states import EXPIRED_REASON

Kind = Literal["sent", "temporary", "permanent", "unknown", "expired"]

FIRST_RETRY = timedelta(minutes=5)
LONGEST_RETRY = timedelta(hours=1)
JITTER = 0.10
THROTTLE_PAUSE = timedelta(seconds=60)  # after 421 or 4.7.x, no new connection for this long

_ENHANCED = re.compile(r"^\s*([245])\.(\d{1,3})\.(\d{1,3})\b")
_REPLY = re.compile(r"^([2-5])\d\d(?:[ -]|$)(.*)")

# A failed row's reason (besides render_error: …): the server refused it with 5xx,
# 5.1.x (its address is suppressed), or its temporary failures outlasted retry_for.
REJECTED = "rejected"
BAD_MAILBOX = "bad mailbox"
FAILED_TOO_LONG = "temporary failures for longer than delivery.retry_for"


@dataclass(frozen=True)
class Outcome:
    """What one attempt came to, as the client saw it."""

    kind: Kind
    reply: str  # "250 2.0.0 Ok: queued as X", or what went wrong
    suppress: bool = False  # 5.1.x: the mailbox does not exist
    throttle: bool = False  # 421 or 4.7.x: the server asks us to slow down


def enhanced_code(message: str) -> str | None:
    """The RFC 3463 status code a reply text starts with ("5.1.1"), if any."""
    match = _ENHANCED.match(message)
    return ".".join(match.groups()) if match else None


def from_reply(code: int, message: str) -> Outcome:
    """The outcome of an SMTP reply to one step of a transaction. The reply as the
    ledger keeps it: whitespace folded, at most 500 characters, and valid text (a
    server's bytes that are not UTF-8 come decoded as lone surrogates, and a NUL no
    database column takes: either failed the turn that recorded it)."""
    text = " ".join(f"{code} {message}".split())[:500]
    text = text.encode("utf-8", "replace").decode("utf-8").replace("\0", "")
    enhanced = enhanced_code(message) or ""
    if 200 <= code < 300:
        return Outcome("sent", text)
    if 400 <= code < 500:
        return Outcome("temporary", text, throttle=code == 421 or enhanced.startswith("4.7."))
    if 500 <= code < 600:
        return Outcome("permanent", text, suppress=enhanced.startswith("5.1."))
    return Outcome("temporary", f"unexpected reply: {text}")


def retry_delay(attempts: int, rng: random.Random) -> timedelta:
    """5 minutes after the first failure, doubling, at most an hour, ±10 % jitter."""
    base: timedelta = min(FIRST_RETRY * 2 ** max(attempts - 1, 0), LONGEST_RETRY)
    return base * (1 + rng.uniform(-JITTER, JITTER))


OUTCOME_COLUMNS = ("status", "reason", "next_attempt_at", "last_reply", "sent_at",
                   "lease_owner", "lease_until")




def settle(outcome: Outcome, *, attempts: int, now: datetime, send_after: datetime,
           expires_at: datetime, retry_for: timedelta, rng: random.Random,
           began: datetime | None = None) -> dict[str, Any]:
    """The row's new column values after an attempt (ATTEMPTS counts this one); always
    the same columns: OUTCOME_COLUMNS. BEGAN is when the transaction began (MAIL FROM):
    a sent row's `sent_at`, so that `sent_at < expires_at` holds for every sent row."""
    common: dict[str, Any] = {"last_reply": outcome.reply, "lease_owner": None,
                              "lease_until": None, "sent_at": None}
    if outcome.kind == "sent":
        return {**common, "status": "sent", "sent_at": began or now, "reason": None,
                "next_attempt_at": None}
    if outcome.kind == "expired":
        return {**common, "status": "expired", "next_attempt_at": None,
                "reason": EXPIRED_REASON}
    if outcome.kind == "unknown":
        return {**common, "status": "unknown", "next_attempt_at": None,
                "reason": "no reply to the end of the message: probably delivered, not resent"}
    if outcome.kind == "permanent":
        return {**common, "status": "failed", "next_attempt_at": None,
                "reason": BAD_MAILBOX if outcome.suppress else REJECTED}
    retry_at = now + retry_delay(attempts, rng)
    if retry_at >= expires_at:
        return {**common, "status": "expired", "next_attempt_at": None,
                "reason": "temporary failures until its expiry"}
    if retry_at > send_after + retry_for:
        return {**common, "status": "failed", "next_attempt_at": None,
                "reason": FAILED_TOO_LONG}
    return {**common, "status": "deferred", "next_attempt_at": retry_at, "reason": None}


def retryable(reason: str | None, reply: str | None) -> bool:
    """Whether an operator may send a `failed` row again (`mailer retry`; docs/delivery.md,
    "Retrying failed rows"): its temporary failures (4xx replies, lost connections)
    outlasted delivery.retry_for, or the server refused it with a 5xx reply whose
    enhanced code is not 5.1.x. Not: an address error (5.1.x, the address is
    suppressed), nor a failure without a server's refusal (a render error, an envelope
    or SMTPUTF8 problem found before the wire), which would fail the same way again."""
    if reason == FAILED_TOO_LONG:
        return True
    match = _REPLY.match(reply or "")
    if reason != REJECTED or match is None or match.group(1) != "5":
        return False
    return not (enhanced_code(match.group(2)) or "").startswith("5.1.")
