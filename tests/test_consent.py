"""Opt-out writes (mailer/store/consent.py): consent only moves up its ranks, and suppressing
an address twice at once is not an error."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

from sqlalchemy import insert, select, text

from mailer.store.customers import opt_out, suppress
from mailer.store.db import upgrade
from mailer.store.models import Customer, Suppression
from tests.conftest import Workspace

NOW = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)


def _customers(db: Workspace, consents: dict[str, str]) -> None:
    db.write("customers.csv", "id,email\n" + "".join(
        f"{cid},{cid.lower()}@example.com\n" for cid in consents))
    assert db.run("import", "customers", "customers.csv", "--now", "2026-01-01").code == 0
    engine = db.engine()
    with engine.begin() as conn:
        for cid, consent in consents.items():
            conn.execute(text("UPDATE customers SET consent = :consent WHERE store_id = :cid"),
                         {"consent": consent, "cid": cid})
    engine.dispose()


def test_consent_only_moves_up_from_subscribed_to_complained(db: Workspace) -> None:
    _customers(db, {"S": "subscribed", "N": "not_subscribed", "U": "unsubscribed",
                    "B": "bounced", "C": "complained"})
    engine = db.engine()
    with engine.begin() as conn:
        everyone = Customer.id.isnot(None)
        assert opt_out(conn, everyone, "unsubscribed", now=NOW, source="cli",
                       reason="manual") == 2  # S and N
        assert opt_out(conn, everyone, "bounced", now=NOW, source="smtp",
                       reason="mailbox does not exist") == 3  # S, N and U
        assert opt_out(conn, everyone, "bounced", now=NOW, source="smtp",
                       reason="again") == 0  # a replay changes nothing
        found = {row.store_id: row.consent for row in conn.execute(
            select(Customer.store_id, Customer.consent))}
    engine.dispose()
    assert found == {"S": "bounced", "N": "bounced", "U": "bounced", "B": "bounced",
                     "C": "complained"}  # a bounce never hides a complaint


def test_two_suppressions_of_one_address_at_once_both_succeed(pg: Workspace) -> None:
    engine = pg.engine()
    upgrade(engine)
    outcome: list[object] = []
    first = engine.connect()
    first_tx = first.begin()
    first.execute(insert(Suppression).values(email_key="gone@example.com", reason="manual",
                                             source="cli", created_at=NOW))

    def second() -> None:
        try:
            with engine.begin() as conn:
                outcome.append(suppress(conn, ["gone@example.com"], now=NOW, source="smtp",
                                        reason="bounced"))
        except Exception as err:  # the race this module closes: a unique violation
            outcome.append(err)

    thread = threading.Thread(target=second)
    thread.start()
    with engine.connect() as watcher:  # wait until the second insert waits on the first
        for _ in range(2000):
            waiting = watcher.execute(text(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                "AND datname = current_database()")).scalar_one()
            watcher.rollback()  # pg_stat_activity is a snapshot per transaction: take anew
            if waiting or not thread.is_alive():
                break
            threading.Event().wait(0.005)
    first_tx.commit()
    first.close()
    thread.join(timeout=30)
    assert outcome == [set()]  # nothing new, and no error
    with engine.connect() as conn:
        assert conn.execute(select(Suppression.source)).scalars().all() == ["cli"]
        assert suppress(conn, ["new@example.com"], now=NOW, source="smtp",
                        reason="bounced") == {"new@example.com"}
    engine.dispose()


def test_a_dead_mailbox_marks_only_the_subscribed_bounced(db: Workspace) -> None:
    from mailer.store.ledger import suppress as smtp_suppress

    _customers(db, {"S": "subscribed", "U": "unsubscribed"})
    engine = db.engine()
    with engine.begin() as conn:  # a 5.1.1 for both (U's mail was in flight when it opted out)
        smtp_suppress(conn, ["s@example.com", "u@example.com"], NOW)
        found = {row.store_id: (row.consent, row.consent_source) for row in conn.execute(
            select(Customer.store_id, Customer.consent, Customer.consent_source))}
        keys = sorted(conn.execute(select(Suppression.email_key)).scalars())
    engine.dispose()
    assert found["S"] == ("bounced", "smtp")
    assert found["U"][0] == "unsubscribed"  # the opt-out keeps its own record
    assert keys == ["s@example.com", "u@example.com"]  # both addresses are suppressed
