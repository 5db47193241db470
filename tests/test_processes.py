"""Delivery processes (docs/delivery.md "Delivery processes"): render processes forked by
the sender make the very mails the sender would, fail the same rows, are replaced by the
sender when one dies, and end with it. The crash suites with several processes are in
tests/test_crash.py."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import SETTINGS, Workspace
from tests.smtp_server import FaultServer
from tests.test_crash import _plan_only, _processes_of
from tests.test_delivery import KEY, send, shop, states
from tests.test_send_edges import NOW_UTC


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state != "Z"


def _rename(engine: Any, table: str, to: str) -> None:
    from sqlalchemy import text

    with engine.begin() as conn:
        conn.execute(text(f"ALTER TABLE {table} RENAME TO {to}"))


def test_render_processes_make_the_senders_mails_and_one_that_dies_is_replaced(
        db: Workspace) -> None:
    from mailer.delivery.processes import RenderPool
    from mailer.delivery.worker import Renderer
    from mailer.store.db import DatabaseError
    from mailer.store.ledger import claim, new_owner

    addresses = [f"r{n:02d}@example.com" for n in range(9)] + ["zero@example.com"]
    shop(db, addresses)
    assert _plan_only(db) == len(addresses)
    engine = db.engine()
    try:
        rows = claim(engine, new_owner(), NOW_UTC, 100)
        here = Renderer(engine, KEY).render_batch(rows, NOW_UTC)
        pool = RenderPool(Renderer(engine, KEY), 3)
        try:
            children = [child.pid for child in pool._children]
            assert pool.size == 3 and all(_alive(pid) for pid in children)
            there = pool.render_batch(rows, NOW_UTC)
            # a sender that ran out of mails renders a share itself (the batch's last
            # rows) while the children render the rest, up to half; less when it did not
            for _ in range(20):
                pool.adjust(True)
            assert pool.here == 0.5
            shared = pool.render_batch(rows, NOW_UTC)
            # a stop asked: every child stops between rows, all rows are left
            stopped = pool.render_batch(rows, NOW_UTC, stop=lambda: True)
            assert stopped.left == list(rows) and not stopped.ready and not stopped.failed
            for _ in range(20):
                pool.adjust(False)
            assert pool.here == 0.0
            # a database error in a child goes up as the sender's own would (it backs off)
            _rename(engine, "customers", "customers_away")
            with pytest.raises(DatabaseError, match="a render process"):
                pool.render_batch(rows, NOW_UTC)
            _rename(engine, "customers_away", "customers")
            os.kill(children[0], signal.SIGKILL)  # its next slice is rendered here
            again = pool.render_batch(rows, NOW_UTC)
            assert pool.size == 2
        finally:
            pool.close()
        assert not any(_alive(pid) for pid in children)  # closed: ended and reaped
    finally:
        engine.dispose()
    for rendering in (there, shared, again):
        assert [r.row.id for r in rendering.ready] == [r.row.id for r in here.ready]
        assert [r.message for r in rendering.ready] == [r.message for r in here.ready]
        assert rendering.failed == here.failed and not rendering.left
    [(_, failed)] = here.failed
    assert failed["status"] == "failed" and failed["reason"].startswith(
        "render_error: ") and "division" in failed["reason"]


@pytest.mark.parametrize("processes", [1, 3])
def test_a_send_with_render_processes_delivers_each_mail_once_and_leaves_none_behind(
        db: Workspace, processes: int) -> None:
    addresses = [f"p{n:03d}@example.com" for n in range(60)] + ["zero@example.com"]
    shop(db, addresses, settings=SETTINGS + "delivery: {concurrency: 4, rate_per_second: 1000, "
                                            f"processes: {processes}}}\n")
    with FaultServer() as server:
        result = send(db, server, "note")
    assert result["sent"] == 60 and result["failed"] == 1 and result["waiting"] == 0
    assert sorted(c.recipient for c in server.caught) == addresses[:-1]
    assert states(db)["zero@example.com"] == "failed"
    assert db.query("SELECT count(*) FROM deliveries WHERE lease_owner IS NOT NULL")[0][0] == 0
    assert not _processes_of(db.root)


def test_processes_must_be_a_positive_number_or_auto(ws: Workspace) -> None:
    for value in ("0", "many", "1.5"):
        ws.write("mailer.yaml", SETTINGS + f"delivery: {{processes: {value}}}\n")
        result = ws.run("validate")
        assert result.code == 1
        assert "mailer.yaml:5: delivery.processes: should be a whole number from 1 to 64, " \
               "or auto" in result.stdout + result.stderr


@pytest.mark.parametrize(("rate", "concurrency", "processes", "leased"), [
    (10_000, 20, True, 320),  # eight batches of twice the concurrency
    (10_000, 100, True, 500),  # at most FILL_MOST
    (2, 10, True, 20),  # ten seconds of mail at 2 a second, at least one batch
    (10_000, 20, False, 40),  # one process: twice the concurrency
])
def test_a_fill_leases_at_most_ten_seconds_of_mail_at_the_rate_limit(
        tmp_path: Path, rate: int, concurrency: int, processes: bool, leased: int) -> None:
    """The rows of a fill wait leased in memory until sent: at a slow rate limit a large
    fill would outlast its lease (5 minutes) and be leased again by others."""
    from mailer.core.clock import Clock
    from mailer.delivery.ratelimit import LocalRateLimit
    from mailer.delivery.transport import MemoryTransport
    from mailer.delivery.worker import SendingLoop
    from mailer.store.db import create, database_url

    engine = create(database_url(env_url=None, configured=None, root=tmp_path))
    try:
        loop = SendingLoop(engine, MemoryTransport(), None, "o", Clock(),  # type: ignore[arg-type]
                           concurrency=concurrency, limit=LocalRateLimit(rate),
                           pool=object() if processes else None)  # type: ignore[arg-type]
        assert loop.default_batch() == leased
    finally:
        engine.dispose()
