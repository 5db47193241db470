"""Every opt-out write: a customer's consent moving to unsubscribed, bounced or
complained, and the suppression list (DESIGN §3, §4.3).

One guard for all of them: consent only moves up `RANK` (subscribed or
not_subscribed < unsubscribed < bounced < complained), so a replayed unsubscribe
changes nothing, a bounce never hides a complaint, and nothing automatic ever
re-subscribes anyone (imports move only between the two lowest ranks, and never
from an opt-out). The one way back down is `resubscribe`: a person's new opt-in,
recorded by hand with where it came from; a bounce or a complaint needs `force`,
because the address itself was the problem. Suppressions are one upsert
(`INSERT … ON CONFLICT DO NOTHING`): two processes suppressing one address at
once both succeed, where a select-then-insert let the second fail on the unique key.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import cast

from sqlalchemy import ColumnElement, Connection, Engine, Table, delete, select, update

from mailer.core.addresses import parse_address
from mailer.core.errors import InvalidValue
from mailer.core.states import Consent
from mailer.store.db import upsert
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
    statement = (upsert(conn, cast(Table, Suppression.__table__)).values(rows)
                 .on_conflict_do_nothing(index_elements=[Suppression.email_key])
                 .returning(Suppression.email_key))
    return set(conn.execute(statement).scalars())


@dataclass(frozen=True)
class OptIn:
    """What `resubscribe` did with one address."""

    email: str
    outcome: str  # resubscribed | already | refused | unknown | invalid
    consent: str | None = None  # the consent it had
    reason: str | None = None


NEEDS_FORCE = {Consent.BOUNCED, Consent.COMPLAINED}


def resubscribe(engine: Engine, emails: list[str], *, now: datetime, source: str,
                force: bool = False) -> list[OptIn]:
    """Record a new opt-in for each address: consent `subscribed` with SOURCE and NOW, and
    the address off the suppression list. A bounced or complained customer only with
    FORCE; an address no customer has is `unknown` (its suppression stays)."""
    results = []
    with engine.begin() as conn:
        for raw in emails:
            try:
                address = parse_address(raw)
            except InvalidValue as err:
                results.append(OptIn(raw, "invalid", reason=err.message))
                continue
            row = conn.execute(select(Customer.id, Customer.consent)
                               .where(Customer.email_key == address.key)).first()
            if row is None:
                results.append(OptIn(address.email, "unknown",
                                     reason="no customer has this address: import it first"))
                continue
            consent = Consent(row.consent)
            if consent == Consent.SUBSCRIBED:
                results.append(OptIn(address.email, "already", consent))
                continue
            if consent in NEEDS_FORCE and not force:
                results.append(OptIn(address.email, "refused", consent,
                                     f"the address {consent}: mail to it failed or was "
                                     "reported as spam; use --force if the person asked again"))
                continue
            conn.execute(update(Customer).where(Customer.id == row.id).values(
                consent=Consent.SUBSCRIBED, consent_at=now, consent_source=source,
                consent_reason="opt_in", updated_at=now))
            conn.execute(delete(Suppression).where(Suppression.email_key == address.key))
            results.append(OptIn(address.email, "resubscribed", consent))
    return results
