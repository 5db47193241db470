"""Notices, mail that is not marketing (issue 19): every statement on `notices`.

A notice is queued once per key (`review:2026-11`, an alert's key per mail): a second
queueing of the same key writes nothing, so a daemon restarted mid-month or a survey
answered twice never mails it twice. Senders deliver notices the way they deliver the
ledger's rows (mailer.store.ledger): `claim` leases due ones without changing their
status (FOR UPDATE SKIP LOCKED on PostgreSQL), `start` turns the leased ones `sending`
right before the wire, `finish` records each outcome, and `recover` resolves what a
dead sender left (leases dropped, `sending` becomes `unknown`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

from sqlalchemy import Table, and_, func, literal_column, or_, select, text, update

from mailer.store.db import Connection, Engine, is_server, upsert
from mailer.store.ledger import IN_FLIGHT, LEASE, _gone_from_this_host, _owner_key
from mailer.store.models import Notice

NOTICES = cast(Table, Notice.__table__)
DUE = ("queued", "deferred")


@dataclass(frozen=True)
class NoticeRow:
    """A notice as a sender needs it."""

    id: int
    kind: str
    key: str
    to: str
    subject: str
    html: str
    text: str
    message_id: str
    attempts: int
    send_after: datetime


_COLUMNS = [NOTICES.c[name] for name in NoticeRow.__dataclass_fields__]


def queue(conn: Connection, *, kind: str, key: str, to: str, subject: str, html: str,
          text: str, message_id: str, now: datetime) -> bool:
    """Queue a notice unless one with KEY exists; whether this call queued it."""
    statement = upsert(conn, NOTICES).values(
        kind=kind, key=key, to=to, subject=subject, html=html, text=text,
        message_id=message_id, status="queued", attempts=0, created_at=now, send_after=now,
    ).on_conflict_do_nothing(index_elements=["key"]).returning(NOTICES.c.id)
    return conn.execute(statement).first() is not None


def exists(conn: Connection, key: str) -> bool:
    """Whether a notice with KEY was ever queued (whatever became of it)."""
    return conn.execute(select(NOTICES.c.id).where(NOTICES.c.key == key)).first() is not None


def _due(now: datetime) -> Any:
    return and_(NOTICES.c.status.in_(DUE), NOTICES.c.send_after <= now,
                or_(NOTICES.c.next_attempt_at.is_(None), NOTICES.c.next_attempt_at <= now),
                or_(NOTICES.c.lease_until.is_(None), NOTICES.c.lease_until <= now))


def any_due(engine: Engine, now: datetime) -> bool:
    """Whether a notice is due now (nothing is leased by asking)."""
    with engine.connect() as conn:
        return conn.execute(select(NOTICES.c.id).where(_due(now)).limit(1)).first() is not None


def claim(engine: Engine, owner: str, now: datetime, limit: int) -> list[NoticeRow]:
    """Lease up to LIMIT due notices, oldest first, without changing their status."""
    picked = select(NOTICES.c.id).where(_due(now)).order_by(
        NOTICES.c.send_after, NOTICES.c.id).limit(limit)
    with engine.begin() as conn:
        if is_server(conn):  # other senders may claim at once
            picked = picked.with_for_update(skip_locked=True)
        rows = [NoticeRow(**row._mapping) for row in conn.execute(
            update(NOTICES).where(NOTICES.c.id.in_(picked.scalar_subquery()))
            .values(lease_owner=owner, lease_until=now + LEASE).returning(*_COLUMNS))]
    return sorted(rows, key=lambda r: (r.send_after, r.id))


def start(conn: Connection, owner: str, ids: Sequence[int], now: datetime) -> set[int]:
    """Turn this sender's leased notices `sending` (an attempt counted); the ids started.
    Before the wire: the caller's transaction waits for the disk (ledger.durable)."""
    if not ids:
        return set()
    return set(conn.execute(
        update(NOTICES).where(NOTICES.c.id.in_(list(ids)), NOTICES.c.lease_owner == owner,
                              NOTICES.c.status.in_(DUE))
        .values(status="sending", attempts=NOTICES.c.attempts + 1,
                lease_until=now + IN_FLIGHT).returning(NOTICES.c.id)).scalars())


def finish(conn: Connection, owner: str, changes: Sequence[tuple[int, dict[str, Any]]],
           *, from_states: Sequence[str] = ("sending",)) -> None:
    """Write the new values (mailer.delivery.outcomes.settle's) of notices this sender holds."""
    states: list[Any] = [literal_column(f"'{state}'") for state in from_states
                         if state in ("sending", *DUE)]
    for row_id, values in changes:
        conn.execute(update(NOTICES).where(
            NOTICES.c.id == row_id, NOTICES.c.lease_owner == owner,
            NOTICES.c.status.in_(states)).values(**values))


def unlease(conn: Connection, owner: str, ids: Sequence[int]) -> None:
    """Give up the lease of notices not started: others may claim them at once."""
    if ids:
        conn.execute(update(NOTICES).where(
            NOTICES.c.id.in_(list(ids)), NOTICES.c.lease_owner == owner,
            NOTICES.c.status.in_(DUE)).values(lease_owner=None, lease_until=None))


def _abandon(conn: Connection, mine: Any) -> int:
    lost = conn.execute(update(NOTICES).where(mine, NOTICES.c.status == "sending").values(
        status="unknown", lease_owner=None, lease_until=None,
        reason="its sender died while it was in flight: probably delivered, not resent"
    )).rowcount
    conn.execute(update(NOTICES).where(mine).values(lease_owner=None, lease_until=None))
    return int(lost)


def recover(engine: Engine, owner: str, now: datetime) -> int:
    """Resolve the notices of senders that are gone, as ledger.recover does for rows;
    returns how many became `unknown`."""
    others = and_(NOTICES.c.lease_owner.is_not(None), NOTICES.c.lease_owner != owner)
    with engine.begin() as conn:
        if not is_server(conn):  # under the sending lock: every other owner is dead
            return _abandon(conn, others)
        dead = [other for other in conn.execute(
                    select(NOTICES.c.lease_owner).where(others).distinct()).scalars()
                if _gone_from_this_host(other) or conn.execute(
                    text("SELECT pg_try_advisory_xact_lock(:k)"), {"k": _owner_key(other)}
                ).scalar()]
        lost = _abandon(conn, NOTICES.c.lease_owner.in_(dead)) if dead else 0
        lost += conn.execute(update(NOTICES).where(
            NOTICES.c.status == "sending", NOTICES.c.lease_until < now - IN_FLIGHT
        ).values(status="unknown", lease_owner=None, lease_until=None,
                 reason="in flight for too long: probably delivered, not resent")).rowcount
        return int(lost)


def created_between(conn: Connection, kind: str, start: datetime, end: datetime) -> int:
    """How many notices of KIND were queued in [START, END) (the review's alerts)."""
    return int(conn.execute(select(func.count()).where(
        NOTICES.c.kind == kind, NOTICES.c.created_at >= start,
        NOTICES.c.created_at < end)).scalar_one())


GAVE_UP = ("failed", "expired")  # the address refused a notice (or it never left)


def confirmation_key(customer_id: int, requested_at: datetime, *, reminder: bool) -> str:
    """`confirm:<id>:<request time>` (or `confirm-reminder:…`): a double opt-in request's
    notices (mailer.delivery.confirmations), one per request."""
    kind = "confirm-reminder" if reminder else "confirm"
    return f"{kind}:{customer_id}:{requested_at.astimezone(UTC):%Y%m%dT%H%M%SZ}"


def sent_to(conn: Connection, keys: Sequence[str]) -> dict[str, tuple[str, str]]:
    """The status of each notice with one of KEYS and the address it is for."""
    if not keys:
        return {}
    return {key: (status, to) for key, status, to in conn.execute(
        select(NOTICES.c.key, NOTICES.c.status, NOTICES.c.to)
        .where(NOTICES.c.key.in_(list(keys))))}
