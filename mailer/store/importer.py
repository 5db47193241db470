"""`mailer import customers|orders`: stream a file into the store (DESIGN §5).

Records are read, checked and written in batches, so memory stays flat however
large the file. Without `--strict` each batch commits on its own and a bad row
is skipped with its reason; with `--strict` the whole file is one transaction
and nothing is written if any row is bad. A file that stops being readable (a
byte that is not UTF-8, an unclosed quote) keeps what was written before it.

Consent on import: a new customer is `subscribed` unless the file says
`subscribed=false`; `false` moves only `subscribed` (and `pending`) to
`not_subscribed`, `true` moves only `not_subscribed` to `subscribed`; `pending`
(consent.double_opt_in) makes a new or `not_subscribed` customer `pending` until they
confirm; `unsubscribed`, `bounced` and `complained` are never changed here. Each new
customer and each consent moved gets its row in consent_history
(mailer.store.customers.record_consent), batch by batch.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, BinaryIO, cast

from sqlalchemy import (
    Connection,
    Engine,
    Table,
    bindparam,
    delete,
    insert,
    select,
    text,
    update,
)

from mailer.core.clock import iso_z
from mailer.core.errors import ConfigError, Problem
from mailer.store.customers import record_consent
from mailer.store.db import among
from mailer.store.locks import importing
from mailer.store.models import Customer, Order, OrderLine, folded
from mailer.store.notices import GAVE_UP, confirmation_key, sent_to
from mailer.store.records import (
    BadRow,
    Context,
    CustomerRow,
    OrderRow,
    check_header,
    parse_customer,
    parse_order,
)
from mailer.store.sources import SourceStopped, open_source

log = logging.getLogger("mailer.import")

BATCH = 1000
ERRORS_KEPT = 1000  # the JSON report lists this many; stderr gets every one
# Double opt-in: a pending customer is asked again (a new confirmation) at most this
# often, so whoever feeds imports or webhooks cannot mail an address a day more than once
# by rotating a customer through addresses (docs/events.md, "A new address while pending").
ASK_AGAIN_AFTER = timedelta(hours=24)
NEW_ADDRESS = "new address"
WITHDREW = "withdrew and asked again"


@dataclass(frozen=True)
class RowError:
    line: int
    reason: str


@dataclass
class ImportReport:
    file: str
    written: int = 0
    skipped: int = 0
    errors: list[RowError] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {"file": self.file, "written": self.written, "skipped": self.skipped,
                "errors": [{"line": e.line, "reason": e.reason} for e in self.errors]}


class _Tally:
    """Counts written and skipped rows and passes each bad row on as it is found."""

    def __init__(self, report: ImportReport, on_error: Callable[[RowError], None]) -> None:
        self.report = report
        self._on_error = on_error

    def bad(self, line: int, *reasons: str) -> None:
        """A skipped row, with every problem it has (one error each, in column order)."""
        self.report.skipped += 1
        for reason in reasons:
            error = RowError(line, reason)
            if len(self.report.errors) < ERRORS_KEPT:
                self.report.errors.append(error)
            self._on_error(error)

    def written(self, count: int) -> None:
        self.report.written += count


# --- customers -------------------------------------------------------------------------

_CUSTOMERS = cast(Table, Customer.__table__)
_ORDERS = cast(Table, Order.__table__)
_LINES = cast(Table, OrderLine.__table__)


class _CustomerWriter:
    def __init__(self, conn: Connection, tally: _Tally, now: datetime, own_tx: bool,
                 source: str = "import") -> None:
        self._conn, self._tally, self._now, self._own_tx = conn, tally, now, own_tx
        self._source = source  # consent_source of what this writer moves
        self._rows: list[CustomerRow] = []
        self._ids: set[str] = set()
        self._keys: set[str] = set()

    def add(self, row: CustomerRow) -> None:
        # A repeated id or address inside one batch is written after the first, in file order.
        if row.store_id in self._ids or row.email_key in self._keys or len(self._rows) >= BATCH:
            self.flush()
        self._rows.append(row)
        self._ids.add(row.store_id)
        self._keys.add(row.email_key)

    def flush(self) -> None:
        rows, self._rows = self._rows, []
        self._ids, self._keys = set(), set()
        if rows:
            with _transaction(self._conn, self._own_tx):
                self._write(rows)

    def _write(self, rows: list[CustomerRow]) -> None:
        c = _CUSTOMERS.c
        existing = {r.store_id: r for r in self._conn.execute(
            select(c.id, c.store_id, c.consent, c.attributes, c.email_key,
                   c.opt_in_requested_at, c.opt_in_sent_at)
            .where(c.store_id.in_([row.store_id for row in rows])))}
        refused = self._refused(existing.values())
        owners = _pairs(self._conn.execute(
            select(c.email_key, c.store_id).where(c.email_key.in_([row.email_key for row in rows]))
        ))
        inserts: list[dict[str, Any]] = []
        updates: dict[tuple[str, ...], list[dict[str, Any]]] = {}
        for row in rows:
            owner = owners.get(row.email_key)
            if owner is not None and owner != row.store_id:
                self._tally.bad(row.line, f"email {row.email} is already used by customer {owner}")
                continue
            stored = existing.get(row.store_id)
            if stored is None:
                inserts.append(self._new(row))
            else:
                values = self._changes(row, stored.consent, stored.attributes,
                                       moved_from=stored.email_key,
                                       asked=(stored.opt_in_requested_at,
                                              stored.opt_in_sent_at),
                                       refused=stored.id in refused)
                updates.setdefault(tuple(sorted(values)), []).append({"_id": stored.id, **values})
        if inserts:
            self._conn.execute(insert(_CUSTOMERS), inserts)
        for columns, params in updates.items():
            statement = (update(_CUSTOMERS).where(c.id == bindparam("_id"))
                         .values({name: bindparam(f"v_{name}") for name in columns}))
            self._conn.execute(statement, [
                {"_id": p["_id"], **{f"v_{name}": p[name] for name in columns}} for p in params])
        # The consent history of the batch: one INSERT … SELECT each for the new customers
        # and for those whose consent this import moved (never a query per row).
        if inserts:
            record_consent(self._conn, among(self._conn, c.store_id,
                                             [row["store_id"] for row in inserts]))
        moved = [p["_id"] for columns, params in updates.items() if "consent" in columns
                 for p in params]
        if moved:
            record_consent(self._conn, among(self._conn, c.id, moved))
        self._tally.written(len(inserts) + sum(len(p) for p in updates.values()))

    def _new(self, row: CustomerRow) -> dict[str, Any]:
        values = {name: None for name in ("first_name", "last_name", "birth_date", "timezone",
                                          "locale", "country", "city", "signed_up_at", "tags",
                                          "referred_by")}
        values.update(row.values)
        attributes = {k: v for k, v in row.attributes.items() if v is not None}
        consent = ("pending" if row.pending else
                   "not_subscribed" if row.subscribed is False else "subscribed")
        values.update(folded("customers", {**values, "attributes": attributes or None}))
        return {**values, "store_id": row.store_id, "email": row.email,
                "email_key": row.email_key, "birth_md": _month_day(values["birth_date"]),
                "attributes": attributes or None, "referral_code": None,
                "consent": consent, "consent_at": self._now, "consent_source": self._source,
                "consent_reason": None, "created_at": self._now, "updated_at": self._now,
                **self._asked(row.pending)}

    def _asked(self, pending: bool) -> dict[str, Any]:
        """The double opt-in columns of a customer who asks now (PENDING), else all empty:
        a new request starts with no notice queued and no earlier proof."""
        return {"opt_in_source": self._source if pending else None,
                "opt_in_requested_at": self._now if pending else None,
                "opt_in_sent_at": None, "opt_in_reminded_at": None,
                "opt_in_confirmed_at": None, "opt_in_ip": None}

    def _refused(self, stored: Iterable[Any]) -> set[int]:
        """The customers of STORED whose last double opt-in confirmation the address
        refused (its notice failed or expired)."""
        keys = {confirmation_key(r.id, r.opt_in_requested_at, reminder=False): r.id
                for r in stored if r.opt_in_sent_at is not None
                and r.opt_in_requested_at is not None and r.consent != "subscribed"}
        return {keys[key] for key, (status, _) in sent_to(self._conn, list(keys)).items()
                if status in GAVE_UP}

    def _ask_again(self, row: CustomerRow, asked: tuple[datetime | None, datetime | None],
                   why: str, *, refused: bool = False) -> dict[str, Any]:
        """The double opt-in columns of a customer asked again (WHY: a new address, or
        a withdrawn request made again), as of ASKED (the last request's time and when
        its confirmation was queued): a new request, unless the last one's confirmation
        was queued and the request is less than ASK_AGAIN_AFTER old; then it stays as it
        was (no new confirmation, its reminder goes to the address the customer has by
        then; an earlier confirmation's proof is dropped: the customer is pending). A
        new address before any confirmation was queued keeps the request: its one
        confirmation goes to the address the customer has when it is queued; a request
        made again after a withdrawal with none queued starts anew. A confirmation the
        old address REFUSED (a typo fixed) is no mail to throttle: asked again at once."""
        requested_at, sent_at = asked
        if sent_at is None:
            return {} if why == NEW_ADDRESS else self._asked(True)
        if refused:
            log.info("double opt-in: customer %s asked again (%s; the last confirmation "
                     "was refused)", row.store_id, why,
                     extra={"fields": {"event": "opt_in_asked_again",
                                       "customer": row.store_id, "why": why}})
            return self._asked(True)
        if requested_at is not None and self._now - requested_at < ASK_AGAIN_AFTER:
            log.warning("double opt-in: customer %s not asked again (%s): asked at %s, "
                        "next no sooner than %s", row.store_id, why, iso_z(requested_at),
                        iso_z(requested_at + ASK_AGAIN_AFTER),
                        extra={"fields": {"event": "opt_in_not_asked_again",
                                          "customer": row.store_id, "why": why}})
            return {"opt_in_confirmed_at": None, "opt_in_ip": None}
        log.info("double opt-in: customer %s asked again (%s)", row.store_id, why,
                 extra={"fields": {"event": "opt_in_asked_again", "customer": row.store_id,
                                   "why": why}})
        return self._asked(True)

    def _changes(self, row: CustomerRow, consent: str,
                 attributes: dict[str, Any] | None, *, moved_from: str | None = None,
                 asked: tuple[datetime | None, datetime | None] = (None, None),
                 refused: bool = False) -> dict[str, Any]:
        values: dict[str, Any] = {**row.values, "email": row.email, "email_key": row.email_key,
                                  "updated_at": self._now}
        if "birth_date" in values:
            values["birth_md"] = _month_day(values["birth_date"])
        if row.attributes:
            merged = dict(attributes or {})
            for key, value in row.attributes.items():
                if value is None:
                    merged.pop(key, None)
                else:
                    merged[key] = value
            values["attributes"] = merged or None
        # Double opt-in: `pending` asks a not-subscribed customer to confirm; only their
        # own click (mailer.delivery.confirmations) or `mailer resubscribe` makes them subscribed,
        # never `subscribed=true`; `false` withdraws the request.
        transitions: dict[tuple[bool | None, str], str] = {
            (True, "not_subscribed"): "pending" if row.pending else "subscribed",
            (False, "subscribed"): "not_subscribed",
            (False, "pending"): "not_subscribed"}
        moved = transitions.get((row.subscribed, consent))
        if moved is not None:
            values.update(consent=moved, consent_at=self._now, consent_source=self._source,
                          consent_reason=None)
            if moved == "pending":  # asked again after a withdrawal: at most once a day
                values.update(self._asked(True) if asked == (None, None)
                              else self._ask_again(row, asked, WITHDREW, refused=refused))
        elif consent == "pending" and moved_from is not None and moved_from != row.email_key:
            # A pending customer's new address: the notice sent to the old one proves
            # nothing of it (its link names the old address and is refused), so the new
            # address is asked from the start, at most once a day.
            values.update(self._ask_again(row, asked, NEW_ADDRESS, refused=refused))
        values.update(folded("customers", values))  # the shadows segments match
        return values

    def finish(self, stopped_at: int | None) -> None:
        self.flush()


def _month_day(born: Any) -> str | None:
    return None if born is None else born.strftime("%m-%d")


# --- orders ---------------------------------------------------------------------------


class _OrderWriter:
    """Groups a CSV's adjacent lines into orders and writes whole orders only."""

    def __init__(self, conn: Connection, tally: _Tally, now: datetime, own_tx: bool) -> None:
        self._conn, self._tally, self._own_tx = conn, tally, own_tx
        self._pending: OrderRow | None = None
        self._pending_id: str | None = None
        self._pending_lines: list[int] = []
        self._poison: tuple[int, tuple[str, ...]] | None = None  # line, reasons
        self._own: dict[int, tuple[str, ...]] = {}  # every bad line's own problems
        self._batch: list[OrderRow] = []
        with _transaction(conn, own_tx):
            # Orders written by this import, with their first line: an order whose lines
            # are not adjacent is caught exactly, in flat memory.
            conn.execute(text("CREATE TEMPORARY TABLE IF NOT EXISTS import_seen_orders "
                              "(store_id VARCHAR(255) PRIMARY KEY, line INTEGER NOT NULL)"))
            conn.execute(text("DELETE FROM import_seen_orders"))

    def add(self, row: OrderRow) -> None:
        if self._pending_id == row.store_id:
            if self._poison is None and self._pending is not None:
                reason = self._pending.same_order(row)
                if reason is None:
                    self._pending = self._pending.with_items_of(row)
                else:
                    self._poison = (row.lines[0], (reason,))
            self._pending_lines.append(row.lines[0])
            return
        self._close()
        self._pending, self._pending_id, self._pending_lines = row, row.store_id, list(row.lines)

    def bad(self, line: int, order_id: str | None, *reasons: str) -> None:
        """A line that failed its own checks poisons its whole order."""
        if order_id is None or order_id != self._pending_id:
            self._close()
            self._pending, self._pending_id, self._pending_lines = None, order_id, []
        if self._poison is None:
            self._poison = (line, reasons)
        self._own[line] = reasons
        self._pending_lines.append(line)

    def _close(self) -> None:
        if self._pending_id is None and not self._pending_lines:
            return
        if self._poison is not None or self._pending is None:
            self._reject(self._pending_id, self._pending_lines, self._poison)
        else:
            self._batch.append(self._pending)
            if len(self._batch) >= BATCH:
                self.flush()
        self._pending, self._pending_id, self._pending_lines, self._poison = None, None, [], None
        self._own = {}

    def _reject(self, order_id: str | None, lines: list[int],
                cause: tuple[int, tuple[str, ...]] | None) -> None:
        for line in sorted(lines):
            if cause is not None and line == cause[0]:
                self._tally.bad(line, *cause[1])
            elif line in self._own:  # a later bad line of the order: its own problems too
                self._tally.bad(line, *self._own[line])
            elif cause is not None:
                self._tally.bad(line, f"order {order_id} not imported: line {cause[0]} is bad")

    def flush(self) -> None:
        orders, self._batch = self._batch, []
        if orders:
            with _transaction(self._conn, self._own_tx):
                self._write(orders)

    def _write(self, orders: list[OrderRow]) -> None:
        c = _CUSTOMERS.c
        customers = _pairs(self._conn.execute(
            select(c.store_id, c.id).where(c.store_id.in_({r.customer_store_id for r in orders}))
        ))
        seen = _pairs(self._conn.execute(
            text("SELECT store_id, line FROM import_seen_orders WHERE store_id IN :ids")
            .bindparams(bindparam("ids", expanding=True)),
            {"ids": [r.store_id for r in orders]}))
        good: list[OrderRow] = []
        for order in orders:
            if order.customer_store_id not in customers:
                reason = f"unknown customer {order.customer_store_id!r}: import customers first"
            elif order.store_id in seen:
                reason = (f"order {order.store_id} already appeared at line {seen[order.store_id]}:"
                          " the lines of one order must be adjacent")
            else:
                seen[order.store_id] = order.lines[0]
                good.append(order)
                continue
            for line in order.lines:
                self._tally.bad(line, reason)
        if not good:
            return
        self._conn.execute(text("INSERT INTO import_seen_orders (store_id, line) "
                                "VALUES (:store_id, :line)"),
                           [{"store_id": r.store_id, "line": r.lines[0]} for r in good])
        _store_orders(self._conn, good, customers)
        self._tally.written(sum(len(r.lines) for r in good))

    def finish(self, stopped_at: int | None) -> None:
        if stopped_at is not None and self._pending_id is not None:
            # The file stopped inside this order: its last lines may be missing.
            for line in self._pending_lines:
                self._tally.bad(line, f"order {self._pending_id} not imported: the file stops "
                                      f"at line {stopped_at}")
            self._pending, self._pending_id, self._pending_lines = None, None, []
        self._close()
        self.flush()
        with _transaction(self._conn, self._own_tx):
            self._conn.execute(text("DROP TABLE IF EXISTS import_seen_orders"))


def _store_orders(conn: Connection, good: list[OrderRow], customers: dict[str, int]) -> None:
    """Upsert whole orders with their lines (CUSTOMERS: store id -> customers.id); an
    order stored before loses its old lines."""
    o = _ORDERS.c
    existing = _pairs(conn.execute(
        select(o.store_id, o.id).where(o.store_id.in_([r.store_id for r in good]))))

    def values(order: OrderRow) -> dict[str, Any]:
        return {"customer_id": customers[order.customer_store_id],
                "placed_at": order.placed_at, "status": order.status,
                "currency": order.currency, "total_minor": order.total_minor,
                "coupon_code": order.coupon}

    replaced = [r for r in good if r.store_id in existing]
    if replaced:
        ids = [existing[r.store_id] for r in replaced]
        conn.execute(delete(_LINES).where(_LINES.c.order_id.in_(ids)))
        conn.execute(
            update(_ORDERS).where(o.id == bindparam("_id")).values(
                {k: bindparam(f"v_{k}") for k in values(replaced[0])}),
            [{"_id": existing[r.store_id], **{f"v_{k}": v for k, v in values(r).items()}}
             for r in replaced])
    fresh = [r for r in good if r.store_id not in existing]
    if fresh:
        # A plain executemany and one look-up: RETURNING in parameter order makes
        # SQLite insert row by row.
        conn.execute(insert(_ORDERS), [{"store_id": r.store_id, **values(r)} for r in fresh])
        existing.update(_pairs(conn.execute(
            select(o.store_id, o.id).where(o.store_id.in_([r.store_id for r in fresh])))))
    lines = [{"order_id": existing[r.store_id], "position": position, "sku": item.sku,
              "product": item.product, "category": item.category,
              "quantity": item.quantity, "price_minor": item.price_minor}
             for r in good for position, item in enumerate(r.items, 1)]
    if lines:
        conn.execute(insert(_LINES), [{**ln, **folded("order_lines", ln)} for ln in lines])


def write_records(conn: Connection, customers: list[CustomerRow], orders: list[OrderRow], *,
                  now: datetime, source: str) -> list[RowError]:
    """Checked records written in the caller's transaction through the same writes as a
    file import (webhooks: mailer.store.feeds.apply); the rows refused, with why."""
    errors: list[RowError] = []
    tally = _Tally(ImportReport(file=source), errors.append)
    writer = _CustomerWriter(conn, tally, now, own_tx=False, source=source)
    for row in customers:
        writer.add(row)
    writer.flush()
    if orders and not errors:
        c = _CUSTOMERS.c
        known = _pairs(conn.execute(select(c.store_id, c.id).where(
            c.store_id.in_({r.customer_store_id for r in orders}))))
        for order in orders:
            if order.customer_store_id not in known:
                errors.append(RowError(0, f"unknown customer {order.customer_store_id!r}"))
        if not errors:
            _store_orders(conn, orders, known)
    return errors


def _pairs(result: Iterable[Any]) -> dict[Any, Any]:
    """The rows of a two-column result as a dict (dict(result) would call result.keys())."""
    return {row[0]: row[1] for row in result}


@contextmanager
def _transaction(conn: Connection, own: bool) -> Iterator[None]:
    with conn.begin() if own else nullcontext():
        yield


# --- the whole file -----------------------------------------------------------------------


def import_file(engine: Engine, stream: BinaryIO, *, kind: str, name: str, fmt: str,
                ctx: Context, now: datetime, strict: bool,
                on_error: Callable[[RowError], None],
                on_progress: Callable[[int], None] | None = None) -> ImportReport:
    """Import customers or orders from an open binary stream; returns the report."""
    source = open_source(stream, fmt)
    report = ImportReport(file=name)
    if source.header is not None:
        errors, report.warnings = check_header(source.header, kind, name)
        if errors:
            raise ConfigError(errors)
    tally = _Tally(report, on_error)
    typed = fmt == "jsonl"
    # One import at a time: a second one interleaving its upserts would overwrite rows.
    with importing(engine), engine.connect() as conn:
        outer = conn.begin() if strict else None
        writer: _CustomerWriter | _OrderWriter
        if kind == "customers":
            writer = _CustomerWriter(conn, tally, now, own_tx=not strict)
        else:
            writer = _OrderWriter(conn, tally, now, own_tx=not strict)
        stopped_at: int | None = None
        try:
            for count, record in enumerate(source):
                if on_progress is not None and count % 500 == 0:
                    on_progress(source.bytes_read)
                _feed(writer, tally, record.line, record.fields, record.error, ctx, typed)
        except SourceStopped as stop:
            stopped_at = stop.line or 0
            tally.bad(stopped_at, stop.message)
        writer.finish(stopped_at)
        if on_progress is not None:
            on_progress(source.bytes_read)
        if outer is not None:
            if report.skipped:
                outer.rollback()
                report.written = 0
            else:
                outer.commit()
    return report


def _feed(writer: _CustomerWriter | _OrderWriter, tally: _Tally, line: int,
          fields: dict[str, Any], error: str | None, ctx: Context, typed: bool) -> None:
    if isinstance(writer, _CustomerWriter):
        if error is not None:
            tally.bad(line, error)
            return
        try:
            writer.add(parse_customer(line, fields, ctx, typed=typed))
        except BadRow as bad:
            tally.bad(line, *bad.reasons)
        return
    order_id = fields.get("order_id")
    order_key = str(order_id).strip() if order_id is not None else None
    if error is not None:
        writer.bad(line, None, error)
        return
    try:
        writer.add(parse_order(line, fields, ctx, typed=typed))
    except BadRow as bad:
        writer.bad(line, None if typed else order_key, *bad.reasons)
