"""Delivering due ledger rows (DESIGN §6): render at send time, send, record.

One asyncio loop per sending process. It leases a small batch of due rows,
renders each from its row's campaign version (never from workspace files),
turns at most `concurrency` rows `sending` at a time — in the same statement
that checks consent and suppressions once more — sends them over the
transport under the rate limit, and writes each outcome before the slot is
used again. So after a crash at most `concurrency` rows are `unknown`, and a
row is `sending` only while it is on the wire.

Rendering runs in a thread, one batch at a time (each render's budget is a ContextVar
of mailer.mail.render, its CPU the thread's own), so a template that costs its full
CPU budget per mail never holds the loop: replies, a stop and the daemon's sweeps go
on. A batch renders for about `render_for` seconds at most and stops between rows
once a stop is asked; the rows it did not reach go back to the queue, unleased, for
the next turn.

With render processes (`delivery.processes` > 1, mailer.delivery.processes) the batch is
rendered there instead, and the next batch is leased and rendered while this one goes out
(`_fill`); everything else (the leases, `sending`, the permits, SMTP, the outcomes) stays
in this process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from mailer.config.settings import Settings
from mailer.core.clock import Clock
from mailer.core.errors import MailerError
from mailer.core.occurrences import stock_sku
from mailer.core.states import EXPIRED_REASON, ORDERED, OUT_OF_STOCK
from mailer.delivery.notices import NoticeSender
from mailer.delivery.outcomes import Outcome, settle
from mailer.delivery.processes import RenderPool
from mailer.delivery.ratelimit import RateLimit
from mailer.delivery.transport import Transport
from mailer.mail.context import (
    CHECKOUT_OCCURRENCES,
    load_checkouts,
    load_customers,
    load_products,
    load_stats,
)
from mailer.mail.dkim import Sign
from mailer.mail.links import verp_address
from mailer.mail.message import Mail, build, message_id
from mailer.mail.tracking import tracked
from mailer.mail.version import Version, compose_row, from_definition
from mailer.store.coupons import coupons_of_rows
from mailer.store.customers import Profile
from mailer.store.db import Connection, DatabaseError, Engine, is_server
from mailer.store.feeds.apply import ordered_checkouts
from mailer.store.feeds.stock import close_alerts, out_of_stock
from mailer.store.ledger import (
    DUE_STATES,
    Row,
    any_due,
    claim,
    consent_of_rows,
    expire,
    finish,
    finish_sent,
    recover,
    start,
    suppress,
    unlease,
)
from mailer.store.versions import version_definition

log = logging.getLogger("mailer.send")
_EXPIRED = {"status": "expired", "reason": EXPIRED_REASON, "next_attempt_at": None,
            "lease_owner": None, "lease_until": None}

_ORDERED = {"status": "skipped", "reason": ORDERED, "lease_owner": None, "lease_until": None}
_OUT_OF_STOCK = {"status": "skipped", "reason": OUT_OF_STOCK, "lease_owner": None,
                 "lease_until": None}

FILL_FACTOR = 8  # a fill leases this many batches at once (with render processes)
FILL_MOST = 500  # rows, at most: what waits rendered in memory is below three times this
FILL_SECONDS = 10  # and at most this many seconds of mail at the rate limit (the leases last 5 min)
# Turns at once (PostgreSQL): a turn waits for the database, mostly not for this process,
# and one at a time they kept its thread busy most of a send (docs/performance.md). On
# SQLite one writer and a local file: one.
TURNS_AT_ONCE = 2
TURNS_IDLE = 2.0  # seconds the turns' connection is kept unused before it goes back
REASON_LENGTH = 500  # characters of an exception's text kept in a row's reason


def _close_quietly(conn: Connection) -> None:
    """Close CONN; the errors of a broken connection are no news."""
    with contextlib.suppress(Exception):
        conn.close()


def render_error(err: BaseException) -> str:
    """A row's reason when its mail could not be made: `render_error: templates/x.html:12:
    …` for template errors (they say where), the exception's type and text otherwise."""
    text = str(err) if isinstance(err, MailerError) else f"{type(err).__name__}: {err}"
    return "render_error: " + " ".join(text.split())[:REASON_LENGTH]


@dataclass(frozen=True)
class Ready:
    """A rendered mail waiting for a free connection."""

    row: Row
    sender: str  # the envelope sender
    message_id: str
    message: bytes
    retry_for: Any  # timedelta, from the version's settings


@dataclass(frozen=True)
class Rendering:
    """What one batch's rendering made of its rows."""

    ready: list[Ready]
    failed: list[tuple[int, dict[str, Any]]]  # row id, the values that fail it
    left: list[Row]  # not reached (a stop, or the batch's time was up): not rendered


class Renderer:
    """Renders ledger rows from their campaign versions, a batch at a time."""

    def __init__(self, engine: Engine, key: str, sign: Sign | None = None) -> None:
        self.engine = engine
        self.key = key
        self.sign = sign
        self._versions: dict[int, tuple[Version, Settings]] = {}

    def preload(self, version_id: int, version: Version, settings: Settings) -> None:
        """A version compiled here rather than read from the ledger (dry runs)."""
        self._versions[version_id] = (version, settings)

    def version(self, version_id: int) -> tuple[Version, Settings]:
        if version_id not in self._versions:
            self._versions[version_id] = from_definition(
                version_definition(self.engine, version_id))
        return self._versions[version_id]

    def render(self, rows: Sequence[Row], now: datetime
               ) -> tuple[list[Ready], list[tuple[int, dict[str, Any]]]]:
        """The rendered mails, and the rows that failed to render (with their values)."""
        rendering = self.render_batch(rows, now)
        return rendering.ready, rendering.failed

    def render_batch(self, rows: Sequence[Row], now: datetime, *,
                     stop: Callable[[], bool] | None = None,
                     within: float | None = None) -> Rendering:
        """Render ROWS in order until STOP() says so (asked before each row) or, once a
        row is done, WITHIN seconds have passed; the rows not reached are `left`. Safe
        to call in a thread, one call at a time.

        Any exception while rendering or building one mail fails that row with
        `render_error: …` (DESIGN §4.4): an exception let out of here would leave the
        whole leased batch queued, to be leased and fail again after every lease. Only
        the database's own errors go up (the sender backs off and resumes)."""
        began = time.monotonic()
        ids = sorted({row.customer_id for row in rows})
        broken: dict[int, str] = {}  # campaign version id -> why it cannot be read
        for version_id in sorted({row.campaign_version_id for row in rows}):
            try:
                self.version(version_id)
            except DatabaseError:
                raise
            except Exception as err:
                broken[version_id] = render_error(err)
        with self.engine.connect() as conn:
            people = load_customers(conn, ids)
            currencies = {self._versions[row.campaign_version_id][1].store.currency
                          for row in rows if row.campaign_version_id not in broken}
            stats = {currency: load_stats(conn, ids, now=now, currency=currency)
                     for currency in currencies}
            coupons = coupons_of_rows(conn, [row.id for row in rows])
            checkouts = load_checkouts(conn, [(row.id, row.customer_id, row.occurrence)
                                              for row in rows])
            products = load_products(conn, [(row.id, row.occurrence) for row in rows])
        ready: list[Ready] = []
        failed: list[tuple[int, dict[str, Any]]] = []
        for index, row in enumerate(rows):
            # Between rows only: one row's render is bounded by mailer.mail.limits' budget.
            if (stop is not None and stop()) or (
                    within is not None and index and time.monotonic() - began >= within):
                return Rendering(ready, failed, list(rows[index:]))
            reason = broken.get(row.campaign_version_id)
            if reason is None:
                try:
                    ready.append(self._one(row, people[row.customer_id], stats, coupons, now,
                                           checkouts.get(row.id), products.get(row.id)))
                    continue
                except Exception as err:  # one mail's failure, never the rest's
                    if not isinstance(err, MailerError):
                        log.warning("row %s: unexpected failure while rendering", row.id,
                                    exc_info=True)
                    reason = render_error(err)
            failed.append((row.id, {"status": "failed", "reason": reason,
                                    "lease_owner": None, "lease_until": None}))
        return Rendering(ready, failed, [])

    def _one(self, row: Row, person: Any, stats: dict[str, dict[int, Any]],
             coupons: dict[int, tuple[str, datetime]], now: datetime,
             checkout: dict[str, Any] | None = None,
             product: dict[str, Any] | None = None) -> Ready:
        version, settings = self.version(row.campaign_version_id)
        sender, mid, message = mail_of_row(
            version, settings, row, person, stats[settings.store.currency].get(row.customer_id),
            coupon=coupons.get(row.id), now=now, key=self.key, sign=self.sign,
            checkout=checkout, product=product)
        return Ready(row, sender, mid, message, settings.delivery.retry_for)


def mail_of_row(version: Version, settings: Settings, row: Row, person: Profile,
                stats: dict[str, Any] | None, *, coupon: tuple[str, datetime] | None,
                now: datetime, key: str, sign: Sign | None,
                checkout: dict[str, Any] | None = None,
                product: dict[str, Any] | None = None) -> tuple[str, str, bytes]:
    """A row's envelope sender, Message-ID and message bytes: its context, the render,
    the tracked links, the MIME and the optional DKIM signature. Pure (CPU only), the
    whole per-mail path the sender runs, and what bench/render.py times."""
    mail, context = compose_row(version, row, person, stats, settings=settings,
                                coupon=coupon, now=now, key=key, checkout=checkout,
                                product=product)
    sender = settings.sender.from_address
    name = " ".join(p for p in (person.first_name, person.last_name) if p)
    # the id made at plan time; rows planned before random ids keep the derived one
    mid = row.message_id or message_id(campaign=row.campaign, occurrence=row.occurrence,
                                       customer=person.store_id,
                                       domain=sender.rsplit("@", 1)[1])
    if settings.sender.return_path:  # VERP: a bounce sent back names its row
        sender = verp_address(settings.sender.return_path, row.id, key)
    tracking = settings.tracking
    body = tracked(mail.html, base_url=tracking.base_url, customer=person.store_id,
                   campaign=row.campaign, message=str(row.id), key=key,
                   clicks=tracking.clicks, opens=tracking.opens, held=version.held,
                   version=row.campaign_version_id)
    message = build(Mail(
        sender=settings.sender.from_, recipient_name=name, recipient_email=row.email,
        subject=mail.subject, html=body, text=mail.text, date=now, message_id=mid,
        unsubscribe_url=context["links"]["unsubscribe"],
        unsubscribe_mailto=settings.sender.unsubscribe_address,
        reply_to=settings.sender.reply_to))
    if sign is not None:
        message = sign(message)
    return sender, mid, message


def _opted_out(conn: Connection, ids: Sequence[int], now: datetime
               ) -> list[tuple[int, dict[str, Any]]]:
    """Why each of these rows may no longer be sent: its customer's consent, a pause
    from the preference centre, or a suppression (checked again right before sending)."""
    if not ids:
        return []
    changes = []
    for row_id, consent, paused_until, suppressed in consent_of_rows(conn, ids):
        paused = paused_until is not None and paused_until > now
        reason = (consent if consent != "subscribed" else "suppressed" if suppressed
                  else "paused" if paused else None)
        if reason is not None:
            changes.append((row_id, {"status": "skipped", "reason": reason,
                                     "lease_owner": None, "lease_until": None}))
    return changes


def _ordered(conn: Connection, chosen: Sequence[Ready], now: datetime) -> set[int]:
    """The abandoned-checkout rows of CHOSEN whose customer has ordered since the checkout
    (checked again right before the wire: reason `ordered`)."""
    checkouts = {r.row.id: (r.row.customer_id, r.row.occurrence.partition(":")[2])
                 for r in chosen if r.row.occurrence.startswith(CHECKOUT_OCCURRENCES)}
    if not checkouts:
        return set()
    done = ordered_checkouts(conn, checkouts.values(), now)
    return {row_id for row_id, pair in checkouts.items() if pair in done}


def _sold_out(conn: Connection, chosen: Sequence[Ready]) -> set[int]:
    """The back-in-stock rows of CHOSEN whose product is out of stock again (checked
    right before the wire: reason `out_of_stock`; the alert stays open)."""
    skus = {r.row.id: sku for r in chosen if (sku := stock_sku(r.row.occurrence)) is not None}
    if not skus:
        return set()
    out = out_of_stock(conn, skus.values())
    return {row_id for row_id, sku in skus.items() if sku in out}


@dataclass(frozen=True)
class _Result:
    """One attempt's outcome, waiting to be recorded."""

    ready: Ready
    outcome: Outcome
    permit: int  # the rate permit it used
    began: datetime | None  # when its transaction began (MAIL FROM), if it did


@dataclass
class _Turn:
    """What one turn's transaction did, for the event loop to act on."""

    started: list[tuple[Ready, int]] = field(default_factory=list)  # with their permits
    waiting: list[Ready] = field(default_factory=list)  # no rate permit yet
    counted: list[tuple[str, str]] = field(default_factory=list)  # (campaign, new status)
    starved_for: float | None = None


@dataclass
class SendingLoop:
    """One sending process's loop over due rows."""

    engine: Engine
    transport: Transport
    renderer: Renderer
    owner: str
    clock: Clock
    concurrency: int
    limit: RateLimit
    campaigns: Sequence[str] | None = None  # only these campaigns' rows
    batch: int = 0  # rows leased at once (0: default_batch)
    recover_every: float = 2.0  # seconds between looks for dead senders' rows
    # seconds a batch may render before the rest goes back to the queue: outcomes that
    # arrived meanwhile are recorded and their slots reused, not held behind a slow batch
    render_for: float = 2.0
    on_outcome: Callable[[str, str], None] | None = None  # (campaign, new status)
    rng: random.Random = random.Random()  # noqa: RUF009 - jitter needs no secrecy
    # notices (alerts, the review) go out between batches, over the same transport and limit
    notices: NoticeSender | None = None
    notices_every: float = 1.0  # seconds between looks for due notices
    # render processes (delivery.processes > 1): the next batch is leased and rendered
    # there while this process sends the last one
    pool: RenderPool | None = None

    def __post_init__(self) -> None:
        self.tally: Counter[tuple[str, str]] = Counter()  # (campaign, status)
        self._pending: deque[Ready] = deque()
        self._results: list[_Result] = []
        self._in_flight = 0
        self._wake = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        # when a rate permit may be free (time.monotonic()), after a turn found none
        self._starved_until: float | None = None
        self._filling: asyncio.Task[bool] | None = None  # the next batch, with a pool
        self._starved = False  # no mail was waiting while the next batch rendered
        # Turns under way (tasks) and what they hold: the outcomes they record (still in
        # _in_flight) and the slots they may fill (see _group).
        self._turns: set[asyncio.Task[None]] = set()
        self._turns_at_once = TURNS_AT_ONCE if is_server(self.engine) else 1
        self._recording = 0
        self._held = 0
        # the turns' connections, idle ones with the monotonic time they were last used
        self._turns_idle: list[tuple[Connection, float]] = []
        self._turns_lock = threading.Lock()
        self._turns_busy = 0
        self._close_turns_after = False
        # A fill's lease and the turns' writes may run in two threads at once: on SQLite
        # a lock taken here, not the database's busy wait (it sleeps for milliseconds).
        self._writer: contextlib.AbstractContextManager[Any] = (
            threading.Lock() if not is_server(self.engine) else contextlib.nullcontext())

    def default_batch(self) -> int:
        """Rows leased at once: twice the concurrency (at least 20), so a group of mails
        never waits for the next lease; with render processes FILL_FACTOR times that (at
        most FILL_MOST). A fill's lease, its reads and the hand-over to the children cost
        about the same for 40 rows as for 320, and fills run one after the other: with 40
        they took the whole send's time (`mailer send` of 6,000 promotion mails on
        SQLite, 2 processes: 1,802 -> 2,477 mails/s, docs/performance.md). A slow rate
        limit keeps them smaller (FILL_SECONDS)."""
        batch = max(20, self.concurrency * 2)
        if self.pool is None:
            return batch
        # the rows of a fill wait leased until sent: three fills must go out well within
        # a lease at the rate limit (permits: about mails a second)
        by_rate = self.limit.capacity * FILL_SECONDS
        return max(batch, min(FILL_MOST, batch * FILL_FACTOR, by_rate))

    def has_due(self) -> bool:
        """Whether any row is due now (nothing is leased by asking)."""
        return any_due(self.engine, self.clock.now(), self.campaigns) or (
            self.notices is not None and self.notices.has_due())

    async def run(self, stop: asyncio.Event, *, until_idle: bool,
                  poll: float = 1.0) -> Counter[tuple[str, str]]:
        """Deliver until nothing is due (UNTIL_IDLE) or until STOP is set; what is in
        flight always finishes and is recorded."""
        try:
            return await self._run(stop, until_idle=until_idle, poll=poll)
        finally:
            if self._filling is not None:  # an error left a batch rendering: keep its rows
                filling, self._filling = self._filling, None
                with contextlib.suppress(Exception):
                    await filling
            if self._turns:  # an error elsewhere: the turns under way still end
                await asyncio.wait(self._turns)
            for task in self._turns:  # their errors are this run's; the next starts clean
                if not task.cancelled():
                    task.exception()
            self._turns.clear()
            self._drop_turns_connection()

    async def _run(self, stop: asyncio.Event, *, until_idle: bool,
                   poll: float) -> Counter[tuple[str, str]]:
        batch = self.batch or self.default_batch()
        exhausted = False
        last_recovery = time.monotonic()
        notices_at: float | None = None  # when notices were last looked for
        while True:
            if self.notices is not None and not stop.is_set() and (
                    notices_at is None or time.monotonic() - notices_at >= self.notices_every):
                try:
                    await self.notices.deliver_due()
                except Exception:  # e.g. the database away: campaign mail goes on regardless
                    log.exception("delivering notices failed; the next look retries")
                    self.limit.forget()  # what its transaction took may be rolled back
                notices_at = time.monotonic()
            if time.monotonic() - last_recovery > self.recover_every:
                await asyncio.to_thread(recover, self.engine, self.owner, self.clock.now())
                last_recovery = time.monotonic()
            if self._filling is not None and self._filling.done():
                exhausted = await self._filled()
            if self.pool is not None:
                # up to two batches ahead, so the sender seldom waits for a render
                if not stop.is_set() and not exhausted and self._filling is None and \
                        len(self._pending) < 2 * batch:
                    self._filling = asyncio.create_task(self._fill(batch, stop))
            elif not stop.is_set() and not exhausted and len(self._pending) < self.concurrency:
                now = self.clock.now()
                rows = await asyncio.to_thread(self._claim, now, batch)
                exhausted = len(rows) < batch
                if rows:
                    # Event.is_set only reads a flag: fine to ask from the render thread
                    ready, counted, left = await asyncio.to_thread(
                        self._prepare, rows, now, stop.is_set)
                    self._count_all(counted)
                    self._pending.extend(ready)
                    exhausted = exhausted and not left  # those are due again at once
            turn = self._turn(stop)
            if turn is not None and self._turns_at_once == 1:
                try:  # SQLite: one writer, so the loop waits for its turn as before
                    await turn
                finally:
                    self._turns.discard(turn)
            if self._filling is not None and not self._pending and not stop.is_set():
                self._starved = True
            if self._filling is not None and self._idle() and (
                    stop.is_set() or not self._pending):
                await asyncio.wait({self._filling})  # the next batch is all there is to do
                continue
            if self._idle() and (stop.is_set() or not self._pending):
                if stop.is_set() or (until_idle and exhausted):
                    break
                if exhausted:  # a worker with nothing due: look again in a while
                    await asyncio.to_thread(self._release)  # its permits too
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), timeout=poll)
                    exhausted = False
                    self.count_expired(await asyncio.to_thread(
                        expire, self.engine, self.clock.now(), self.campaigns))
                continue
            if self._idle() and self._starved_until is None:
                continue  # the whole group was skipped (opted out): no outcome will wake us
            # Until the next outcome (or a rate permit): outcomes already here wait for
            # a group to start with them (see _turn).
            # (a permit free by now while both turns are under way: their end wakes us)
            wait = (None if self._starved_until is None
                    else self._starved_until - time.monotonic())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(),
                                       wait if wait is not None and wait > 0 else None)
            self._wake.clear()
        self._release()
        return self.tally

    async def _fill(self, batch: int, stop: asyncio.Event) -> bool:
        """Lease and render the next batch (with a pool) while mails go out; returns
        whether the due rows are exhausted."""
        now = self.clock.now()
        rows = await asyncio.to_thread(self._claim, now, batch)
        if not rows:
            return True
        ready, counted, left = await asyncio.to_thread(self._prepare, rows, now, stop.is_set)
        self._count_all(counted)
        self._pending.extend(ready)
        self._wake.set()
        return len(rows) < batch and not left

    def _claim(self, now: datetime, batch: int) -> list[Row]:
        with self._writer:
            return claim(self.engine, self.owner, now, batch, self.campaigns)

    async def _filled(self) -> bool:
        """The finished fill's answer (its error raised here, as a claim's would be)."""
        filling, self._filling = self._filling, None
        assert filling is not None
        exhausted = await filling
        if self.pool is not None and not exhausted:  # the last batch says nothing
            self.pool.adjust(self._starved)
        self._starved = False
        return exhausted

    def _prepare(self, rows: list[Row], now: datetime, stopped: Callable[[], bool]
                 ) -> tuple[list[Ready], list[tuple[str, str]], list[Row]]:
        """Render a claimed batch and record its failures (in a thread); rows not reached
        lose their lease at once. Returns the mails, what to count, and the rows left."""
        renderer = self.pool if self.pool is not None else self.renderer
        rendering = renderer.render_batch(rows, now, stop=stopped, within=self.render_for)
        with self._writer, self.engine.begin() as conn:
            counted = self._write(conn, rendering.failed, DUE_STATES, rows)
            self._unlease(conn, [row.id for row in rendering.left])
        if rendering.left:
            log.debug("%d rows not rendered this turn: back to the queue", len(rendering.left))
        return rendering.ready, counted, rendering.left

    def _idle(self) -> bool:
        """No mail in flight and no turn under way."""
        return self._in_flight == 0 and not self._turns

    def _turn(self, stop: asyncio.Event) -> asyncio.Task[None] | None:
        """Start a turn if one is due: one transaction that records the outcomes that
        arrived and starts the next group.
        Outcomes wait for the next group (or for the last mail in flight), so a group and
        its outcomes cost one turn, not one each. The turn runs in a thread, mails
        already on the wire go on meanwhile, and on PostgreSQL a second turn may start
        while one is under way (TURNS_AT_ONCE). A turn's error is raised from the loop."""
        finished = [task for task in self._turns if task.done()]
        self._turns.difference_update(finished)
        errors = [err for task in finished if (err := task.exception()) is not None]
        if errors:
            raise errors[0]
        if len(self._turns) >= self._turns_at_once:
            return None
        # no group before a permit may be free (the outcomes are still recorded)
        starved = self._starved_until is not None and time.monotonic() < self._starved_until
        if not starved:
            self._starved_until = None
        group = 0 if starved else self._group(stop)
        on_wire = self._in_flight - self._recording
        settled = bool(self._results) and (len(self._results) == on_wire or stop.is_set())
        if group == 0 and not settled:
            return None
        results, self._results = self._results, []
        chosen = [self._pending.popleft() for _ in range(group)]
        held = max(len(results), len(chosen))
        self._recording += len(results)
        self._held += held
        task = asyncio.create_task(self._take_turn(results, chosen, held))
        self._turns.add(task)
        return task

    async def _take_turn(self, results: list[_Result], chosen: list[Ready], held: int
                         ) -> None:
        try:
            turn = await asyncio.to_thread(self._turn_in_database, results, chosen)
        except BaseException:
            # Its outcomes' rows stay `sending` (recovery makes them `unknown`) and its
            # group's rows leased; this loop no longer counts them, and the permits it
            # kept may be rolled back in the table: forgotten, never used again.
            self.limit.forget()
            raise
        finally:
            self._recording -= len(results)
            self._held -= held
            self._in_flight -= len(results)
            self._wake.set()
        self._count_all(turn.counted)
        self._pending.extendleft(reversed(turn.waiting))
        if turn.starved_for is not None:
            self._starved_until = time.monotonic() + turn.starved_for
        for ready, permit in turn.started:
            self._in_flight += 1
            task = asyncio.create_task(self._send(ready, permit))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _group(self, stop: asyncio.Event) -> int:
        """How many pending mails may start now: groups of half the slots at least (unless
        few are left), so each group and its outcomes cost one transaction. A turn under
        way holds as many slots as the more of its outcomes and its group: its outcomes'
        rows stay `sending` until its statement starts its group, so in the ledger it
        counts one or the other, never both, and at most `concurrency` rows are
        `sending` whatever order the turns end in."""
        on_wire = self._in_flight - len(self._results) - self._recording
        free = self.concurrency - on_wire - self._held
        group = min(max(1, self.concurrency // 2), len(self._pending))
        if stop.is_set() or not self._pending or free < group:
            return 0
        return min(free, len(self._pending))

    def _turn_in_database(self, results: list[_Result], chosen: list[Ready]) -> _Turn:
        """Record RESULTS and start what of CHOSEN gets a rate permit (in a thread)."""
        turn = _Turn()
        with self._writer, self._turn_transaction() as conn:
            outcomes, counted = self._record(conn, results)
            turn.counted += counted
            # permits rest from now, after the replies: given back with the next take
            replied = [result.permit for result in results]
            # Rows wait in memory for a slot or a rate permit; one whose expiry came
            # meanwhile is never started (and `_send` checks again before MAIL FROM).
            now = self.clock.now()
            late = [r.row for r in chosen if r.row.expires_at <= now]
            chosen = [r for r in chosen if r.row.expires_at > now]
            turn.counted += self._write(conn, [(row.id, _EXPIRED) for row in late],
                                        DUE_STATES, late)
            # An abandoned checkout's customer who ordered meanwhile gets no reminder of it.
            gone = _ordered(conn, chosen, now)
            ordered = [r.row for r in chosen if r.row.id in gone]
            turn.counted += self._write(conn, [(row.id, _ORDERED) for row in ordered],
                                        DUE_STATES, ordered)
            chosen = [r for r in chosen if r.row.id not in gone]
            # A product sold out again since its restock: no "it's back" mail.
            gone = _sold_out(conn, chosen)
            sold_out = [r.row for r in chosen if r.row.id in gone]
            turn.counted += self._write(conn, [(row.id, _OUT_OF_STOCK) for row in sold_out],
                                        DUE_STATES, sold_out)
            chosen = [r for r in chosen if r.row.id not in gone]
            if not chosen:
                finish_sent(conn, self.owner, outcomes)
                self.limit.give_back(conn, replied)
                return turn
            permits = self.limit.take(conn, len(chosen), given_back=replied)
            if not permits:
                turn.starved_for = self.limit.retry_in()
            turn.waiting = chosen[len(permits):]
            chosen = chosen[:len(permits)]
            # rows turn `sending` here, and this commit waits for the disk: before the wire
            # the outcomes are written here too (on PostgreSQL in the start's statement)
            started = start(conn, self.owner, [r.row.id for r in chosen], self.clock.now(),
                            outcomes)
            opted_out = _opted_out(conn, [r.row.id for r in chosen if r.row.id not in started],
                                   self.clock.now())
            turn.counted += self._write(conn, opted_out, DUE_STATES, [r.row for r in chosen])
            # Neither started nor opted out: its campaign was paused since the lease (or
            # another sender holds it): back to the queue, its expiry as it was.
            skipped = started | {row_id for row_id, _ in opted_out}
            self._unlease(conn, [r.row.id for r in chosen if r.row.id not in skipped])
            unused = []
            for ready, permit in zip(chosen, permits, strict=True):
                if ready.row.id in started:
                    turn.started.append((ready, permit))
                else:
                    unused.append(permit)
            self.limit.give_back(conn, unused)
        return turn

    @contextlib.contextmanager
    def _turn_transaction(self) -> Iterator[Connection]:
        """A turn's transaction, on a connection the turns keep while they come often (one
        for each turn that may be under way): a connection taken from the pool is pinged
        first, a round trip of every turn on PostgreSQL (one in six). One idle for
        TURNS_IDLE seconds goes back to the pool (the server or a proxy may have closed
        it meanwhile: the pool's ping finds that), and after any error it is dropped;
        either way the next turn takes a fresh, pinged one. A close asked from the loop
        while turns run (a cancelled send) waits for them to end
        (`_drop_turns_connection`): a connection is never used by two threads at once."""
        with self._turns_lock:
            now = time.monotonic()
            stale = [c for c, used in self._turns_idle if now - used > TURNS_IDLE]
            self._turns_idle = [(c, used) for c, used in self._turns_idle
                                if now - used <= TURNS_IDLE]
            conn = self._turns_idle.pop()[0] if self._turns_idle else None
            self._turns_busy += 1
        for old in stale:
            _close_quietly(old)
        failed = False
        try:
            if conn is None:
                conn = self.engine.connect()
            with conn.begin():
                yield conn
        except BaseException:
            failed = True
            raise
        finally:
            with self._turns_lock:
                self._turns_busy -= 1
                keep = conn is not None and not failed and not self._close_turns_after
                if keep:
                    assert conn is not None
                    self._turns_idle.append((conn, time.monotonic()))
                if self._turns_busy == 0:
                    self._close_turns_after = False
            if conn is not None and not keep:
                _close_quietly(conn)

    def _drop_turns_connection(self) -> None:
        """Close the turns' connections: the idle ones now, those of turns running (in
        their threads) as those turns end."""
        with self._turns_lock:
            idle, self._turns_idle = self._turns_idle, []
            if self._turns_busy:
                self._close_turns_after = True
        for conn, _ in idle:
            _close_quietly(conn)

    async def _send(self, ready: Ready, permit: int) -> None:
        began: list[datetime] = []

        def begin() -> bool:
            """Right before MAIL FROM: no transaction begins at or after the expiry."""
            moment = self.clock.now()
            if moment >= ready.row.expires_at:
                return False
            began.append(moment)
            return True

        try:
            outcome = await self.transport.send(ready.sender, ready.row.email, ready.message,
                                                begin=begin)
        except Exception as err:  # an unforeseen failure must not lose the row
            log.exception("unexpected failure while sending row %s", ready.row.id)
            outcome = Outcome("unknown", f"unexpected failure: {type(err).__name__}")
        self._results.append(_Result(ready, outcome, permit, began[0] if began else None))
        self._wake.set()

    def _record(self, conn: Connection, results: list[_Result]
                ) -> tuple[list[tuple[int, dict[str, Any]]], list[tuple[str, str]]]:
        """The outcomes' new values, for the caller to write in this transaction (with
        `start`, or finish_sent when it starts nothing); their slots are free only after
        that, and their rate permits are the caller's to give back in the same
        transaction. What the outcomes close and suppress is written here, before the
        next group's start reads the suppressions. Returns the values and what to count."""
        if not results:
            return [], []
        now = self.clock.now()
        changes = []
        for result in results:
            ready, row = result.ready, result.ready.row
            values = settle(result.outcome, attempts=row.attempts + 1, now=now,
                            send_after=row.send_after, expires_at=row.expires_at,
                            retry_for=ready.retry_for, rng=self.rng, began=result.began)
            changes.append((row.id, {**values, "message_id": ready.message_id}))
        # A back-in-stock mail sent closes its customer's alert (in the same transaction).
        close_alerts(conn, [(r.ready.row.customer_id, sku) for r, (_, values)
                            in zip(results, changes, strict=True)
                            if values["status"] == "sent"
                            and (sku := stock_sku(r.ready.row.occurrence)) is not None], now)
        suppress(conn, [r.ready.row.email for r in results if r.outcome.suppress], now)
        for result, (_, values) in zip(results, changes, strict=True):
            log.debug("row %s of %s: %s (%s)", result.ready.row.id, result.ready.row.campaign,
                      values["status"], result.outcome.reply)
        return changes, [(result.ready.row.campaign, values["status"])
                         for result, (_, values) in zip(results, changes, strict=True)]

    def _write(self, conn: Connection, changes: list[tuple[int, dict[str, Any]]],
               states: Sequence[str], rows: Sequence[Row]) -> list[tuple[str, str]]:
        """Write other changes of rows (skipped, render failures); returns what to count."""
        finish(conn, self.owner, changes, from_states=states)
        campaigns = {row.id: row.campaign for row in rows}
        for row_id, values in changes:
            log.debug("row %s: %s (%s)", row_id, values["status"], values.get("reason"))
        return [(campaigns[row_id], values["status"]) for row_id, values in changes]

    def _count_all(self, counted: list[tuple[str, str]]) -> None:
        for campaign, status in counted:
            self.tally[(campaign, status)] += 1
            if self.on_outcome is not None:
                self.on_outcome(campaign, status)

    def count_expired(self, expired: Counter[str]) -> None:
        """Count rows that `ledger.expire` found past their expiry (by campaign)."""
        self._count_all([(campaign, "expired") for campaign, n in sorted(expired.items())
                         for _ in range(n)])

    def _release(self) -> None:
        """Leased rows not started go back to the queue at once, and the rate permits
        kept for reuse to the other senders."""
        pending, self._pending = list(self._pending), deque()
        if not pending and not self.limit.keeps():
            return
        with self.engine.begin() as conn:
            self._unlease(conn, [r.row.id for r in pending])
            self.limit.release(conn)

    def _unlease(self, conn: Connection, ids: Sequence[int]) -> None:
        """Give up this sender's lease of rows it has not started: others may claim them."""
        if ids:
            unlease(conn, self.owner, ids)
