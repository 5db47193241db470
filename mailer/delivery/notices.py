"""Delivering notices, mail that is not marketing (issue 19): alerts, the monthly review.

The one sending path, minus marketing's rules: a notice goes over the sender's own
transport and rate limit, its attempt settled by mailer.delivery.outcomes (the same
classification, back-off and `delivery.retry_for`), DKIM-signed like campaign mail, but
with no frequency cap, no consent or suppression check and no unsubscribe header or
footer: the store's own people asked for it. A 5.1.x refusal suppresses nobody (the
address is not a customer's). The SendingLoop of `send`, `worker` and `run` calls
`deliver_due` between its own batches (mailer.delivery.worker).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from mailer.config.settings import Settings
from mailer.core.clock import Clock
from mailer.delivery.outcomes import Outcome, settle
from mailer.delivery.ratelimit import RateLimit
from mailer.delivery.transport import Transport
from mailer.mail.dkim import Sign
from mailer.mail.message import Mail, build, new_message_id
from mailer.store.db import Connection, Engine
from mailer.store.ledger import durable
from mailer.store.notices import (
    DUE,
    NoticeRow,
    any_due,
    claim,
    finish,
    queue,
    recover,
    start,
    unlease,
)

log = logging.getLogger("mailer.notices")
NEVER = datetime(9999, 1, 1, tzinfo=UTC)  # notices have no expiry: retry_for bounds them
KEY_LENGTH = 255  # the column's width
# Notices to customers (double opt-in's): their key names the customer, and a customer's
# address never goes into a log; the store's own people's addresses may.
CUSTOMER_KINDS = ("confirm", "confirm_reminder")


def _to(kind: str, to: str) -> str:
    """The recipient as the log names it."""
    return "the customer" if kind in CUSTOMER_KINDS else to


def queue_notice(conn: Connection, settings: Settings, *, kind: str, key: str, to: str,
                 subject: str, html: str, text: str, now: datetime) -> bool:
    """Queue a notice once per KEY (a second call with it writes nothing), in the caller's
    transaction; whether this call queued it. The Message-ID is made now, so every
    attempt sends the same one."""
    if len(key) > KEY_LENGTH:
        raise ValueError(f"a notice key is at most {KEY_LENGTH} characters: {key[:40]}…")
    domain = settings.sender.from_address.rsplit("@", 1)[1]
    queued = queue(conn, kind=kind, key=key, to=to, subject=subject, html=html, text=text,
                   message_id=new_message_id(domain), now=now)
    log.info("notice %s %s to %s", key, "queued" if queued else "already queued",
             _to(kind, to))
    return queued


def notice_message(row: NoticeRow, settings: Settings, now: datetime,
                   sign: Sign | None) -> bytes:
    """The notice's MIME message: From and Reply-To of mailer.yaml, no List-Unsubscribe."""
    message = build(Mail(
        sender=settings.sender.from_, recipient_name="", recipient_email=row.to,
        subject=row.subject, html=row.html, text=row.text, date=now,
        message_id=row.message_id, unsubscribe_url="", unsubscribe_mailto="",
        reply_to=settings.sender.reply_to))
    return sign(message) if sign is not None else message


@dataclass
class NoticeSender:
    """Delivers due notices for one sending process (its owner, transport and limit)."""

    engine: Engine
    transport: Transport
    settings: Settings
    owner: str
    clock: Clock
    limit: RateLimit
    sign: Sign | None = None
    batch: int = 10
    recover_every: float = 2.0
    rng: random.Random = random.Random()  # noqa: RUF009 - jitter needs no secrecy
    tally: Counter[str] = field(default_factory=Counter)  # by new status

    def __post_init__(self) -> None:
        self._recovered_at: float | None = None

    def has_due(self) -> bool:
        return any_due(self.engine, self.clock.now())

    async def deliver_due(self) -> int:
        """Send the notices due now (a batch at a time, until none is left or the rate
        limit says wait); returns how many attempts were made."""
        if self._recovered_at is None or time.monotonic() - self._recovered_at > \
                self.recover_every:
            await asyncio.to_thread(recover, self.engine, self.owner, self.clock.now())
            self._recovered_at = time.monotonic()
        attempted = 0
        while True:
            rows = await asyncio.to_thread(claim, self.engine, self.owner, self.clock.now(),
                                           self.batch)
            if not rows:
                return attempted
            started, built = await asyncio.to_thread(self._start, rows)
            if started:
                results = await asyncio.gather(*(self._send(row, message, permit)
                                                  for row, message, permit in started))
                await asyncio.to_thread(self._record, results)
                attempted += len(started)
            if len(started) < built or len(rows) < self.batch:
                return attempted  # no rate permit for the rest, or nothing more due

    def _messages(self, rows: list[NoticeRow], now: datetime
                  ) -> tuple[dict[int, bytes], list[tuple[int, dict[str, Any]]]]:
        """Each row's message, built and signed on its own: a row whose message cannot be
        made (an address or header the builder refuses) is to be `failed` with the reason,
        and the others go on."""
        messages: dict[int, bytes] = {}
        failed: list[tuple[int, dict[str, Any]]] = []
        for row in rows:
            try:
                messages[row.id] = notice_message(row, self.settings, now, self.sign)
            except Exception as err:  # whatever it is, it will not build next time either
                log.exception("notice %s to %s cannot be built: failed", row.key,
                              _to(row.kind, row.to))
                failed.append((row.id, {
                    "status": "failed", "reason": f"cannot build the message: "
                    f"{type(err).__name__}: {err}"[:500], "next_attempt_at": None,
                    "lease_owner": None, "lease_until": None}))
                self.tally["failed"] += 1
        return messages, failed

    def _start(self, rows: list[NoticeRow]) -> tuple[list[tuple[NoticeRow, bytes, int]], int]:
        """Rate permits, then `sending`, in one durable transaction (before the wire);
        the rows without a permit lose their lease at once, and those whose message
        cannot be built are finished `failed`. Also returns how many were built."""
        now = self.clock.now()
        messages, failed = self._messages(rows, now)
        rows = [row for row in rows if row.id in messages]
        with self.engine.begin() as conn:
            durable(conn)
            finish(conn, self.owner, failed, from_states=DUE)
            permits = self.limit.take(conn, len(rows))
            chosen = rows[:len(permits)]
            started = start(conn, self.owner, [row.id for row in chosen], now)
            unlease(conn, self.owner, [row.id for row in rows if row.id not in started])
            going, unused = [], []
            for row, permit in zip(chosen, permits, strict=True):
                if row.id in started:
                    going.append((row, messages[row.id], permit))
                else:
                    unused.append(permit)
            self.limit.give_back(conn, unused)
        return going, len(rows)

    async def _send(self, row: NoticeRow, message: bytes, permit: int
                    ) -> tuple[NoticeRow, Outcome, int, datetime]:
        began = self.clock.now()
        try:
            outcome = await self.transport.send(self.settings.sender.from_address, row.to,
                                                message)
        except Exception as err:  # an unforeseen failure must not lose the notice
            log.exception("unexpected failure while sending notice %s", row.key)
            outcome = Outcome("unknown", f"unexpected failure: {type(err).__name__}")
        return row, outcome, permit, began

    def _record(self, results: list[tuple[NoticeRow, Outcome, int, datetime]]) -> None:
        now = self.clock.now()
        changes: list[tuple[int, dict[str, Any]]] = []
        retry_for: timedelta = self.settings.delivery.retry_for
        for row, outcome, _, began in results:
            values = settle(outcome, attempts=row.attempts + 1, now=now,
                            send_after=row.send_after, expires_at=NEVER, retry_for=retry_for,
                            rng=self.rng, began=began)
            changes.append((row.id, values))
            self.tally[values["status"]] += 1
            log.info("notice %s to %s: %s (%s)", row.key, _to(row.kind, row.to), values["status"],
                     outcome.reply)
        with self.engine.begin() as conn:
            finish(conn, self.owner, changes)
            self.limit.give_back(conn, [permit for _, _, permit, _ in results])
