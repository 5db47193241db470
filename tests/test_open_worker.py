"""The pieces `send`, `run` and `worker` share: open_worker (the sending lock, recovery
and the send loop as mailer.yaml configures it) and run_signalled (an event loop that
SIGTERM, SIGINT and SIGHUP talk to)."""

from __future__ import annotations

import asyncio
import os
import signal

import pytest

from tests.conftest import Workspace
from tests.smtp_server import Behaviour, FaultServer
from tests.test_crash import FAST
from tests.test_crash import _plan_only as plan_only
from tests.test_delivery import KEY, NOW, shop


def test_run_signalled_turns_sighup_into_reload_and_sigterm_into_stop() -> None:
    from mailer.cli.common import Signals, run_signalled

    async def main(signals: Signals) -> str:
        os.kill(os.getpid(), signal.SIGHUP)
        await asyncio.wait_for(signals.reload.wait(), 10)
        assert not signals.stop.is_set()
        os.kill(os.getpid(), signal.SIGTERM)
        await asyncio.wait_for(signals.stop.wait(), 10)
        return "stopped"

    assert run_signalled(main, reload=True) == "stopped"
    # The loop's handlers are gone with it: SIGINT is Python's own again.
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_open_worker_recovers_dead_senders_rows_then_delivers_the_rest(db: Workspace) -> None:
    from mailer.app.send import open_worker
    from mailer.config.settings import parse_settings
    from mailer.core.clock import Clock, parse_local, zone
    from mailer.core.errors import LockHeld
    from mailer.delivery.transport import SmtpTransport, parse_smtp_url
    from mailer.store.ledger import new_owner

    addresses = [f"o{n:02d}@example.com" for n in range(10)]
    shop(db, addresses, settings=FAST)
    assert plan_only(db) == 10
    # Three rows a sender that died mid-send left `sending`.
    dead = db.query("SELECT id FROM deliveries ORDER BY id LIMIT 3")
    engine = db.engine()
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql(
                "UPDATE deliveries SET status = 'sending', lease_owner = 'gone:1:dead', "
                f"lease_until = send_after WHERE id IN ({', '.join(str(r[0]) for r in dead)})")
        settings, _ = parse_settings((db.root / "mailer.yaml").read_text())
        clock = Clock(parse_local(NOW, zone(settings.timezone)))
        with FaultServer(Behaviour()) as server:
            transport = SmtpTransport(parse_smtp_url(server.url + "?timeout=5"), 4)
            with open_worker(engine, transport, settings, owner=new_owner(), clock=clock,
                             key=KEY, sign=None) as opened:
                assert opened.recovered == 3
                assert opened.delivery.concurrency == 4  # delivery.concurrency in mailer.yaml
                if db.database is None:  # SQLite: one sender per database file
                    with pytest.raises(LockHeld), open_worker(
                            engine, transport, settings, owner=new_owner(), clock=clock,
                            key=KEY, sign=None):
                        pass

                async def deliver() -> None:
                    try:
                        await opened.delivery.run(asyncio.Event(), until_idle=True)
                    finally:
                        await transport.close()

                asyncio.run(deliver())
            caught = sorted(c.recipient for c in server.caught)
    finally:
        engine.dispose()
    states = dict(db.query("SELECT status, count(*) FROM deliveries GROUP BY status"))
    assert states == {"unknown": 3, "sent": 7}
    assert len(caught) == 7 and set(caught) <= set(addresses)
    assert all(b"unsubscribe" in c.data for c in server.caught)  # rendered with the key
