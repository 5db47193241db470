"""Crashes and concurrency (RELIABILITY.md): SIGKILL of a real sending process at seeded
points and a restart, several workers on PostgreSQL, a sender and opt-outs on SQLite."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import SETTINGS, Workspace
from tests.smtp_server import Behaviour, FaultServer
from tests.test_delivery import KEY, NOW, send, shop

CONCURRENCY = 4
FAST = SETTINGS + f"delivery: {{concurrency: {CONCURRENCY}, rate_per_second: 1000}}\n"


def fast(processes: int) -> str:
    """FAST with PROCESSES delivery processes (the sender and its render processes)."""
    return SETTINGS + (f"delivery: {{concurrency: {CONCURRENCY}, rate_per_second: 1000, "
                       f"processes: {processes}}}\n")


def _processes_of(root: Path) -> list[int]:
    """Pids of live mailer processes working on the workspace ROOT (a sender and the
    render processes it forked: they share its command line)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
            state = (entry / "stat").read_text().rpartition(")")[2].split()[0]
        except OSError:
            continue  # gone meanwhile
        if str(root).encode() in cmdline and b"mailer.cli" in cmdline and state != "Z":
            found.append(int(entry.name))
    return found


def _environment(db: Workspace, server: FaultServer) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILER_")}
    env.update(db.env)
    env.update({"MAILER_SMTP_URL": server.url + "?timeout=5", "MAILER_SECRET_KEY": KEY})
    return env


def _mailer(db: Workspace, server: FaultServer, *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "mailer.cli", "--workspace", str(db.root),
                             *args], env=_environment(db, server), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)


def _wait_for(condition: Any, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return False


def _check_ledger(db: Workspace, server: FaultServer, recipients: int) -> Counter[str]:
    """Every row terminal, nobody twice, `unknown` only for what was in flight."""
    rows = db.query("SELECT email, status FROM deliveries")
    status = {email: state for email, state in rows}
    assert len(status) == recipients
    found = Counter(status.values())
    assert set(found) <= {"sent", "unknown"}, found
    assert found["unknown"] <= CONCURRENCY
    caught = Counter(c.recipient for c in server.caught)
    assert max(caught.values()) == 1, "a recipient got two copies"
    sent = {email for email, state in status.items() if state == "sent"}
    assert sent <= set(caught)  # every `sent` row arrived
    assert set(caught) - sent <= {e for e, s in status.items() if s == "unknown"}
    return found


POINTS = 10
RESTART = "2026-11-23T10:05"  # five minutes after NOW


@pytest.mark.parametrize("point", range(POINTS))
def test_sigkill_at_any_point_then_a_restart_leaves_every_recipient_terminal(
        db: Workspace, point: int) -> None:
    """Even points: one delivery process; odd ones: the sender and two render processes,
    which die with it (none is left to send or to hold the lock)."""
    processes = 1 if point % 2 == 0 else 3
    addresses = [f"k{n:03d}@example.com" for n in range(120)]
    shop(db, addresses, settings=fast(processes))
    rng = random.Random(1000 + point)
    with FaultServer(Behaviour(delay=0.004)) as server:
        process = _mailer(db, server, "send", "note", "--now", NOW)
        if point < 2:  # while it starts, plans or opens its first connection
            time.sleep(rng.uniform(0.3, 1.2))
        else:  # after a seeded number of mails went out
            mark = rng.randrange(1, len(addresses) - 10)
            assert _wait_for(lambda: len(server.caught) >= mark, 30), process.stderr
        process.kill()
        process.wait()
        # its render processes end with it, before anything else happens
        assert _wait_for(lambda: not _processes_of(db.root), 10), _processes_of(db.root)
        # The restart comes later, as a real one does: with the same --now its simulated
        # clock could read earlier than the killed send's when it planned (a process
        # starting slower under load), and rows planned "later" are not due to it yet.
        restart = _mailer(db, server, "send", "note", "--now", RESTART, "--json")
        _out, err = restart.communicate(timeout=60)
        assert restart.returncode == 0, err.decode()
        _check_ledger(db, server, len(addresses))


def _plan_only(db: Workspace) -> int:
    """Write the plan (queued rows) without sending, as the daemon's planner would."""
    from mailer.config.settings import parse_settings
    from mailer.config.workspace import load_valid_workspace
    from mailer.core.clock import parse_local, zone
    from mailer.mail.version import compile_version, definition
    from mailer.planning.planner import plan_due
    from mailer.segments.runner import scope_for

    settings, _ = parse_settings((db.root / "mailer.yaml").read_text())
    specs, campaigns = load_valid_workspace(db.root)
    engine = db.engine()
    try:
        version = definition(compile_version("note", campaigns["note"], db.root / "templates"),
                             db.root)
        scope = scope_for(settings, parse_local(NOW, zone(settings.timezone)), engine)
        [result] = plan_due(engine, specs, campaigns, scope=scope, settings=settings,
                            versions={"note": version})
        return result.planned_count
    finally:
        engine.dispose()


def test_four_workers_on_postgresql_send_each_row_once_and_take_over_a_killed_one(
        pg: Workspace) -> None:
    db = pg
    addresses = [f"w{n:03d}@example.com" for n in range(400)]
    shop(db, addresses, settings=fast(2))  # each worker with a render process
    assert _plan_only(db) == 400
    with FaultServer(Behaviour(delay=0.005)) as server:
        workers = [_mailer(db, server, "worker", "--now", NOW) for _ in range(4)]
        assert _wait_for(lambda: len(server.caught) >= 60, 60)
        workers[0].kill()
        workers[0].wait()
        remaining = "SELECT count(*) FROM deliveries WHERE status IN ('queued', 'deferred', " \
                    "'sending')"
        assert _wait_for(lambda: db.query(remaining)[0][0] == 0, 90)
        started = time.monotonic()
        for worker in workers[1:]:
            worker.send_signal(signal.SIGTERM)
        for worker in workers[1:]:
            worker.wait(timeout=30)
            assert worker.returncode == 0, worker.stderr.read().decode() \
                if worker.stderr else ""
        assert time.monotonic() - started < 30
    found = _check_ledger(db, server, len(addresses))
    assert found["sent"] >= 400 - CONCURRENCY
    owners = db.query("SELECT count(*) FROM deliveries WHERE lease_owner IS NOT NULL")
    assert owners[0][0] == 0


def test_sqlite_sender_and_opt_outs_at_once_never_lock(ws: Workspace) -> None:
    addresses = [f"u{n:03d}@example.com" for n in range(150)]
    shop(ws, addresses, settings=fast(2))
    results: list[Any] = []
    with FaultServer(Behaviour(delay=0.003)) as server:
        sender = _mailer(ws, server, "send", "note", "--now", NOW, "--json")
        assert _wait_for(lambda: len(server.caught) >= 5, 30)
        for address in addresses[::-3]:  # opt-outs while the campaign is going out
            results.append(ws.run("unsubscribe", address))
        _out, err = sender.communicate(timeout=60)
    assert sender.returncode == 0, err.decode()
    assert all(r.code == 0 for r in results)
    assert not any("locked" in r.stderr for r in results) and b"locked" not in err
    status = dict(ws.query("SELECT email, status FROM deliveries"))
    consent = dict(ws.query("SELECT email, consent FROM customers"))
    caught = {c.recipient for c in server.caught}
    for address in addresses:
        assert status[address] in ("sent", "skipped")
        if status[address] == "skipped":
            assert consent[address] == "unsubscribed" and address not in caught


def test_a_worker_stops_on_sigterm_in_the_middle_of_a_send_within_30_seconds(
        ws: Workspace) -> None:
    addresses = [f"t{n:03d}@example.com" for n in range(200)]
    shop(ws, addresses, settings=fast(2))  # the worker and a render process
    _plan_only(ws)
    with FaultServer(Behaviour(delay=0.01)) as server:
        worker = _mailer(ws, server, "worker", "--now", NOW)
        assert _wait_for(lambda: len(server.caught) >= 20, 30)
        assert len(_processes_of(ws.root)) == 2
        started = time.monotonic()
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=30)
        assert time.monotonic() - started < 30 and worker.returncode == 0
        assert not _processes_of(ws.root)  # it waited for its render process
        # what was in flight was recorded; the rest went back to the queue, unleased
        rows = Counter(s for (s,) in ws.query("SELECT status FROM deliveries"))
        assert rows["sending"] == 0 and rows["unknown"] == 0
        assert rows["sent"] == len(server.caught) and rows["queued"] > 0
        assert ws.query("SELECT count(*) FROM deliveries WHERE lease_owner IS NOT NULL")[0][0] \
            == 0
        # a new worker finishes the job
        worker = _mailer(ws, server, "worker", "--now", NOW)
        assert _wait_for(lambda: len(server.caught) == len(addresses), 60)
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=30)
    assert Counter(c.recipient for c in server.caught) == Counter(addresses)


def test_worker_log_lines_carry_no_addresses(ws: Workspace, tmp_path: Path) -> None:
    shop(ws, ["secret.person@example.com"], settings=FAST)
    _plan_only(ws)
    with FaultServer() as server:
        env_worker = _mailer(ws, server, "worker", "--now", NOW)
        assert _wait_for(lambda: len(server.caught) == 1, 30)
        env_worker.send_signal(signal.SIGTERM)
        _, err = env_worker.communicate(timeout=30)
    text = err.decode()
    assert "worker started" in text and "worker stopped" in text
    assert "secret.person" not in text and KEY not in text


def test_the_rate_limit_is_shared_by_two_workers_on_postgresql(pg: Workspace) -> None:
    addresses = [f"s{n:03d}@example.com" for n in range(50)]
    shop(pg, addresses, settings=SETTINGS + "delivery: {concurrency: 6, rate_per_second: 12}\n")
    _plan_only(pg)
    with FaultServer() as server:
        workers = [_mailer(pg, server, "worker", "--now", NOW) for _ in range(2)]
        assert _wait_for(lambda: len(server.caught) == len(addresses), 60)
        for worker in workers:
            worker.send_signal(signal.SIGTERM)
        for worker in workers:
            worker.wait(timeout=30)
    times = sorted(c.at for c in server.caught)
    # no 13 mails within one second at the server, from both workers together
    assert all(times[i + 12] - times[i] > 1.0 for i in range(len(times) - 12))


def test_rows_turned_sending_wait_for_the_disk_in_a_relaxed_session(pg: Workspace) -> None:
    """A sender's session commits without waiting for the disk (relax_commits), except the
    transaction that turns rows `sending`: `start` says so in its own statement."""
    from datetime import UTC, datetime

    from sqlalchemy import text

    from mailer.store.ledger import claim, relax_commits, start

    shop(pg, ["a@example.com", "b@example.com"])
    _plan_only(pg)
    engine = pg.engine()
    relax_commits(engine)
    now = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)  # NOW in Berlin
    try:
        rows = claim(engine, "sender-1", now, 10)
        assert len(rows) == 2
        with engine.begin() as conn:
            assert conn.execute(text("SHOW synchronous_commit")).scalar() == "off"
            assert start(conn, "sender-1", [r.id for r in rows], now) == {r.id for r in rows}
            assert conn.execute(text("SHOW synchronous_commit")).scalar() == "on"
        with engine.begin() as conn:  # SET LOCAL: the next transaction is relaxed again
            assert conn.execute(text("SHOW synchronous_commit")).scalar() == "off"
    finally:
        engine.dispose()


def test_a_worker_goes_on_after_its_database_connections_were_closed_while_idle(
        pg: Workspace) -> None:
    """The server (a proxy's idle timeout, an operator) closes the connections of a worker
    that has nothing to do; the next mails go out all the same: the turns' kept
    connection is not reused after an idle spell."""
    from mailer.delivery.worker import TURNS_IDLE

    first = [f"f{n}@example.com" for n in range(5)]
    shop(pg, first)
    _plan_only(pg)
    with FaultServer() as server:
        worker = _mailer(pg, server, "worker", "--now", NOW)
        try:
            assert _wait_for(lambda: len(server.caught) == len(first), 30)
            assert _wait_for(lambda: pg.query(
                "SELECT count(*) FROM deliveries WHERE status = 'sent'")[0][0] == 5, 30)
            # every connection but the one holding the worker's sending lock (its loss is
            # a lost lock, another matter)
            closed = pg.query(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid() AND pid NOT IN "
                "(SELECT pid FROM pg_locks WHERE locktype = 'advisory')")
            assert closed[0][0] >= 1
            time.sleep(TURNS_IDLE + 0.5)  # the worker idles longer than the kept connection
            later = [f"l{n}@example.com" for n in range(5)]
            shop(pg, first + later)
            _plan_only(pg)
            assert _wait_for(lambda: len(server.caught) == 10, 60)
            assert _wait_for(lambda: pg.query(
                "SELECT count(*) FROM deliveries WHERE status = 'sent'")[0][0] == 10, 30)
        finally:
            worker.send_signal(signal.SIGTERM)
            _out, err = worker.communicate(timeout=30)
    assert worker.returncode == 0, err.decode()
    assert b"Traceback" not in err


def test_a_turns_outcomes_are_written_with_its_next_start(db: Workspace) -> None:
    """`start` records the outcomes of the last group in its transaction (on PostgreSQL in
    its statement): the replied row is `sent` with its reply, id and time, the next rows
    are `sending`; with nothing to start the outcomes are written all the same. Their
    times to the microsecond whatever the zone, their text however odd."""
    from datetime import UTC, datetime, timedelta
    from zoneinfo import ZoneInfo

    from sqlalchemy import select

    from mailer.delivery.outcomes import Outcome, from_reply, settle
    from mailer.store.ledger import claim, start
    from mailer.store.models import Delivery

    shop(db, ["a@example.com", "b@example.com", "c@example.com", "d@example.com"])
    _plan_only(db)
    engine = db.engine()
    now = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)  # NOW in Berlin
    # the reply's moment in another zone, with microseconds: 09:00:01.123456 UTC
    replied = datetime(2026, 11, 23, 10, 0, 1, 123456, tzinfo=ZoneInfo("Europe/Berlin"))
    odd = '250 2.0.0 "queued" as Q\\1 \'für\' 😀'
    try:
        first, second, third, fourth = claim(engine, "sender-1", now, 10)
        with engine.begin() as conn:
            assert start(conn, "sender-1", [first.id, second.id], now) == {first.id, second.id}

        def settled(row: Any, outcome: Outcome) -> tuple[int, dict[str, Any]]:
            values = settle(outcome, attempts=1, now=replied, send_after=row.send_after,
                            expires_at=row.expires_at, retry_for=timedelta(days=1),
                            rng=random.Random(1), began=replied)
            return row.id, {**values, "message_id": f"<m{row.id}@shop.example>"}

        sent = settled(first, Outcome("sent", odd))
        # a server's reply that is not UTF-8 (aiosmtplib's surrogates) and holds a NUL
        later = settled(second, from_reply(451, "4.3.0 Mailbox gel\udce4hmt\x00 try later"))
        with engine.begin() as conn:
            assert start(conn, "sender-1", [third.id], now, [sent]) == {third.id}
        with engine.begin() as conn:  # nothing started: the outcome is written anyway
            assert start(conn, "sender-1", [], now, [later]) == set()
        with engine.connect() as conn:
            rows = {row.id: row for row in conn.execute(select(
                Delivery.id, Delivery.status, Delivery.last_reply, Delivery.message_id,
                Delivery.lease_owner, Delivery.sent_at, Delivery.next_attempt_at))}
        assert tuple(rows[first.id])[1:5] == ("sent", odd, f"<m{first.id}@shop.example>",
                                              None)
        assert rows[first.id].sent_at == replied
        assert rows[second.id].status == "deferred"
        assert rows[second.id].last_reply == "451 4.3.0 Mailbox gel?hmt try later"
        assert rows[second.id].next_attempt_at == later[1]["next_attempt_at"]
        assert rows[third.id].status == "sending" and rows[third.id].lease_owner == "sender-1"
        assert rows[fourth.id].status == "queued"
    finally:
        engine.dispose()


def test_a_start_on_sqlite_reaches_its_rows_by_id_or_lease_never_by_the_queue(
        ws: Workspace) -> None:
    """SQLite's planner, given a group of 20 ids and the owner compared through an
    expression (as PostgreSQL's statement has it), read the whole queue through the
    (status, send_after) index: a start on a queue of a million rows took 100 ms, not
    0.1. The plan of the statement as the sender runs it names no such index."""
    from datetime import UTC, datetime

    from sqlalchemy import event

    from mailer.store.ledger import claim, start

    shop(ws, [f"q{n:02d}@example.com" for n in range(30)])
    _plan_only(ws)
    engine = ws.engine()
    plans: list[str] = []

    def explain(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any,
                executemany: bool) -> None:
        if statement.startswith("UPDATE deliveries SET status"):
            plans.extend(row[3] for row in cursor.connection.execute(
                "EXPLAIN QUERY PLAN " + statement, parameters))

    now = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
    try:
        rows = claim(engine, "sender-1", now, 20)
        assert len(rows) == 20
        event.listen(engine, "before_cursor_execute", explain)
        with engine.begin() as conn:
            assert start(conn, "sender-1", [r.id for r in rows], now) == {r.id for r in rows}
        assert plans and not any("status_send_after" in plan for plan in plans), plans
    finally:
        engine.dispose()


def test_permits_given_back_rest_and_are_kept_by_their_sender_for_its_term(
        pg: Workspace) -> None:
    """A sender reuses the shared permits it took (resting each after its reply) without
    asking the table, until their term ends; then they go back with its next statement,
    and what it keeps when it stops goes back at once (`release`)."""
    from mailer.delivery.ratelimit import TERM, SharedRateLimit

    clock = [1000.0]
    engine = pg.engine()

    def held() -> dict[int, bool]:  # permit -> held for a minute in the table
        return dict(pg.query("SELECT slot, free_at > now() AT TIME ZONE 'UTC' "
                             "+ interval '30 seconds' FROM rate_slots"))

    try:
        limit = SharedRateLimit(engine, 3, clock=lambda: clock[0])
        other = SharedRateLimit(engine, 3, clock=lambda: clock[0])
        with engine.begin() as conn:
            first = limit.take(conn, 2)
        assert len(first) == 2 and all(held()[p] for p in first)
        with engine.begin() as conn:  # the two rest here: only the third is free
            second = limit.take(conn, 3, given_back=first)
        assert len(second) == 1 and second[0] not in first
        with engine.begin() as conn:
            assert limit.take(conn, 3, given_back=second) == []
        assert 0.5 < limit.retry_in() <= 1.0  # the first two are free a second after
        clock[0] += 1.1
        with engine.begin() as conn:  # rested: reused, still held for this sender
            assert sorted(limit.take(conn, 2)) == sorted(first)
            assert other.take(conn, 3) == []  # the other sender finds none free
        assert all(held().values())
        clock[0] += TERM
        with engine.begin() as conn:  # their term is over: all three back to the table,
            # then asked of it again (none is free there yet: they rest first)
            assert limit.take(conn, 3, given_back=first) == []
        assert not any(held().values())
        got: list[int] = []

        def take_two() -> bool:  # once they rested in the table (a second)
            with engine.begin() as conn:
                got.extend(limit.take(conn, 2 - len(got)))
            return len(got) == 2

        assert _wait_for(take_two, 10) and all(held()[p] for p in got)
        with engine.begin() as conn:  # kept for reuse, then the sender stops
            limit.give_back(conn, got)
            limit.release(conn)
        assert not any(held().values())
    finally:
        engine.dispose()


def test_a_send_on_postgresql_leaves_no_rate_permit_held(pg: Workspace) -> None:
    """The permits a sender kept for reuse go back when it ends: the next sender (the next
    `mailer send`, another worker) does not wait a minute for them."""
    shop(pg, [f"p{n}@example.com" for n in range(8)],
         settings=SETTINGS + "delivery: {concurrency: 4, rate_per_second: 50}\n")
    with FaultServer() as server:
        assert send(pg, server, "note")["sent"] == 8
    assert pg.query("SELECT count(*) FROM rate_slots WHERE free_at > "
                    "now() AT TIME ZONE 'UTC' + interval '5 seconds'")[0][0] == 0
    assert pg.query("SELECT count(*) FROM rate_slots")[0][0] == 50
