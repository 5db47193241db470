"""Every opt-out write: a customer's consent moving to unsubscribed, bounced or
complained, and the suppression list (DESIGN §3, §4.3).

One guard for all of them: consent only moves up `RANK` (subscribed or
not_subscribed < unsubscribed < bounced < complained), so a replayed unsubscribe
changes nothing, a bounce never hides a complaint, and nothing here ever
re-subscribes anyone (imports move only between the two lowest ranks, and never
from an opt-out). Suppressions are one upsert (`INSERT … ON CONFLICT DO NOTHING`):
two processes suppressing one address at once both succeed, where a
select-then-insert let the second fail on the unique key.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import ColumnElement, Connection, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from mailer.core.states import Consent
from mailer.store.models import Customer, Suppression

RANK = {Consent.SUBSCRIBED: 0, Consent.NOT_SUBSCRIBED: 0, Consent.UNSUBSCRIBED: 1,
        Consent.BOUNCED: 2, Consent.COMPLAINED: 3}


def opt_out(conn: Connection, which: ColumnElement[bool], consent: Consent, *, now: datetime,
            source: str, reason: str) -> int:
    """Set CONSENT on the customers WHICH selects, where it ranks above theirs; how many
    changed."""
    below = [state for state, rank in RANK.items() if rank < RANK[consent]]
    return conn.execute(update(Customer).where(which, Customer.consent.in_(below)).values(
        consent=consent, consent_at=now, consent_source=source, consent_reason=reason,
        updated_at=now)).rowcount


def suppress(conn: Connection, keys: Iterable[str], *, now: datetime, source: str,
             reason: str) -> set[str]:
    """Put the address keys on the suppression list; the keys that were not on it yet."""
    rows = [{"email_key": key, "reason": reason, "source": source, "created_at": now}
            for key in sorted(set(keys))]
    if not rows:
        return set()
    insert = postgresql_insert if conn.dialect.name == "postgresql" else sqlite_insert
    statement = insert(Suppression).values(rows).on_conflict_do_nothing(
        index_elements=[Suppression.email_key]).returning(Suppression.email_key)
    return set(conn.execute(statement).scalars())
