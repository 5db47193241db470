"""The scheduler daemon (`mailer run`, DESIGN §6): sweeps that catch up what fell due while
it was down, hot reload, signals, leadership; `run --once` as one sweep."""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime
from datetime import time as clock_time
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from mailer.config.campaign import Campaign
from mailer.core.errors import LockHeld
from mailer.planning.wakeups import next_wakeup
from mailer.store.locks import Leadership
from tests.conftest import SETTINGS, Workspace
from tests.smtp_server import Behaviour, FaultServer
from tests.test_crash import _environment as _env
from tests.test_crash import _wait_for
from tests.test_delivery import KEY, TEMPLATE

ROOMY = SETTINGS + "policy: {frequency: [{max: 10, per: 1d}]}\n" \
                   "delivery: {concurrency: 4, rate_per_second: 1000}\n"
BIRTHDAY = """\
name: Birthday
trigger: birthday
send_at: "09:00"
segment: everyone
template: note.html
subject: "Happy birthday, {{ customer.first_name }}"
"""


def store(db: Workspace, customers: list[tuple[str, str, str, str]], *,
          campaigns: dict[str, str], settings: str = ROOMY) -> None:
    """CUSTOMERS as (id, email, birth_date, timezone); CAMPAIGNS by file stem."""
    db.write("mailer.yaml", settings)
    db.write("segments/everyone.yaml", "description: all\nall: [{orders: {at_least: 0}}]\n")
    db.write("templates/note.html", TEMPLATE)
    for stem, text in campaigns.items():
        db.write(f"campaigns/{stem}.yaml", text)
    rows = ["id,email,first_name,birth_date,timezone"]
    rows += [f"{cid},{email},Name{cid},{born},{tz}" for cid, email, born, tz in customers]
    db.write("customers.csv", "\n".join(rows) + "\n")
    assert db.run("import", "customers", "customers.csv", "--now", "2026-01-01").code == 0


def once(db: Workspace, server: FaultServer, now: str, *args: str) -> dict[str, Any]:
    db.env.update({"MAILER_SMTP_URL": server.url + "?timeout=10", "MAILER_SECRET_KEY": KEY})
    result = db.run("run", "--once", "--now", now, "--json", *args)
    assert result.code == 0, result.stdout + result.stderr
    campaigns: dict[str, Any] = result.json()["campaigns"]
    return campaigns


def occurrences(db: Workspace) -> Counter[tuple[str, str, str]]:
    return Counter((row[0], row[1], row[2]) for row in db.query(
        "SELECT c.store_id, d.campaign, d.occurrence FROM deliveries d "
        "JOIN customers c ON c.id = d.customer_id"))


# --- run --once: one sweep -------------------------------------------------------------


def test_birthdays_across_the_date_line_are_caught_up_after_the_daemon_was_down(
        db: Workspace) -> None:
    store(db, [("BER", "ber@example.com", "1990-11-23", "Europe/Berlin"),
               ("KIR", "kir@example.com", "1985-11-24", "Pacific/Kiritimati"),
               ("PAG", "pag@example.com", "1979-11-23", "Pacific/Pago_Pago"),
               ("OLD", "old@example.com", "1970-11-22", "Europe/Berlin")],
          campaigns={"birthday": BIRTHDAY})
    with FaultServer() as server:
        # 09:00 in Berlin: Kiritimati (UTC+14) is at 22:00 of the 23rd, Pago Pago
        # (UTC-11) at 21:00 of the 22nd; OLD's birthday ended yesterday.
        first = once(db, server, "2026-11-23T08:00Z")
        assert first["birthday"]["planned"] == 1 and first["birthday"]["sent"] == 1
        assert [c.recipient for c in server.caught] == ["ber@example.com"]
        # Down from then until 09:30 UTC on the 24th: Kiritimati's 24th is almost over
        # (23:30) and Pago Pago is at 22:30 on the 23rd; both are still due.
        later = once(db, server, "2026-11-24T09:30Z")
        assert later["birthday"]["planned"] == 2 and later["birthday"]["sent"] == 2
        # Down over a whole local birthday: never sent late.
        once(db, server, "2026-11-25T12:00Z")
    assert sorted(c.recipient for c in server.caught) == [
        "ber@example.com", "kir@example.com", "pag@example.com"]
    assert occurrences(db) == Counter({("BER", "birthday", "birthday:2026"): 1,
                                       ("KIR", "birthday", "birthday:2026"): 1,
                                       ("PAG", "birthday", "birthday:2026"): 1})


def test_birthdays_on_daylight_saving_days_go_out_once_at_the_right_instant(
        db: Workspace) -> None:
    early = BIRTHDAY.replace('send_at: "09:00"', 'send_at: "02:30"')
    store(db, [("NYC", "nyc@example.com", "1990-03-08", "America/New_York"),
               ("BER", "ber@example.com", "1990-10-25", "Europe/Berlin")],
          campaigns={"birthday": early})
    with FaultServer() as server:
        # 02:30 does not exist in New York on 8 March 2026: due at 03:00 EDT (07:00 UTC)
        assert once(db, server, "2026-03-08T06:59Z")["birthday"]["planned"] == 0
        assert once(db, server, "2026-03-08T07:00Z")["birthday"]["sent"] == 1
        # 02:30 happens twice in Berlin on 25 October 2026: the first one (00:30 UTC)
        assert once(db, server, "2026-10-25T00:29Z")["birthday"]["planned"] == 0
        assert once(db, server, "2026-10-25T00:30Z")["birthday"]["sent"] == 1
        again = once(db, server, "2026-10-25T01:30Z")  # the second 02:30
        assert again["birthday"]["planned"] == 0
        assert again["birthday"]["excluded"] == {"already_sent": 1}
    assert sorted(c.recipient for c in server.caught) == ["ber@example.com", "nyc@example.com"]


def test_three_days_down_plans_only_what_has_not_expired(db: Workspace) -> None:
    daily = ("name: Daily\ntrigger: schedule\nschedule: \"0 10 * * *\"\ngrace: 6h\n"
             "segment: everyone\ntemplate: note.html\nsubject: Daily news\n")
    sale = ("name: Sale\ntrigger: promotion\nstarts: 2026-11-20T08:00\nends: 2026-11-30T08:00\n"
            "segment: everyone\ntemplate: note.html\nsubject: Sale\n"
            "reminder: {before_end: 1d, subject: Last day, unless: ordered_since_start}\n")
    store(db, [("A", "a@example.com", "", ""), ("B", "b@example.com", "", "")],
          campaigns={"daily": daily, "sale": sale})
    with FaultServer() as server:
        # The daemon was down from the 20th to 11:00 on the 23rd (Berlin): the sale is
        # still on, and of the four daily fire times only today's is within its grace.
        result = once(db, server, "2026-11-23T11:00")
        assert result["sale"]["sent"] == 2 and result["daily"]["sent"] == 2
        assert sorted(occurrences(db)) == [
            ("A", "daily", "cron:2026-11-23T09:00:00Z"), ("A", "sale", "main"),
            ("B", "daily", "cron:2026-11-23T09:00:00Z"), ("B", "sale", "main")]
        # B orders during the sale; the reminder goes from ends - 1d to A only.
        db.write("orders.csv", "order_id,customer_id,placed_at,total\nO1,B,2026-11-24T12:00,20\n")
        assert db.run("import", "orders", "orders.csv", "--now", "2026-11-25").code == 0
        early = once(db, server, "2026-11-29T07:59")
        assert early["sale"]["planned"] == 0
        dry = db.run("plan", "sale", "--now", "2026-11-29T16:30", "--json").json()
        assert [(r["id"], r["occurrence"], r["subject"]) for r in dry["recipients"]] == [
            ("A", "reminder", "Last day")]
        reminder = once(db, server, "2026-11-29T16:30")  # daily fired at 10:00: too late
        assert reminder["sale"]["planned"] == 1 and reminder["daily"]["planned"] == 0
        assert reminder["sale"]["excluded"]["ordered_since_start"] == 1
    subjects = Counter((c.recipient, c.message()["Subject"]) for c in server.caught)
    assert subjects == Counter({("a@example.com", "Sale"): 1, ("b@example.com", "Sale"): 1,
                                ("a@example.com", "Daily news"): 1,
                                ("b@example.com", "Daily news"): 1,
                                ("a@example.com", "Last day"): 1})


def test_rows_of_a_removed_campaign_still_finish_from_their_version(db: Workspace) -> None:
    store(db, [("A", "a@example.com", "1990-11-23", "Europe/Berlin")],
          campaigns={"birthday": BIRTHDAY})
    with FaultServer() as server:
        planned = once(db, server, "2026-11-23T10:00", "--no-deliver")
        assert planned["birthday"]["planned"] == 1 and planned["birthday"]["sent"] == 0
        assert server.caught == []
        (db.root / "campaigns" / "birthday.yaml").unlink()
        (db.root / "templates" / "note.html").unlink()  # rendered from the stored version
        result = once(db, server, "2026-11-23T10:05")
    assert result == {"birthday": {"planned": 0, "sent": 1, "deferred": 0, "failed": 0,
                                   "unknown": 0, "skipped": 0, "expired": 0, "waiting": 0,
                                   "excluded": {}}}
    assert [c.message()["Subject"] for c in server.caught] == ["Happy birthday, NameA"]


def test_run_once_on_an_invalid_workspace_prints_every_problem_and_plans_nothing(
        ws: Workspace) -> None:
    store(ws, [("A", "a@example.com", "1990-11-23", "Europe/Berlin")],
          campaigns={"birthday": BIRTHDAY,
                     "broken": BIRTHDAY.replace("everyone", "evryone"),
                     "cron": BIRTHDAY.replace("trigger: birthday",
                                              "trigger: schedule\nschedule: '0 9 * * * *'")})
    ws.env.update({"MAILER_SMTP_URL": "smtp://127.0.0.1:9", "MAILER_SECRET_KEY": KEY})
    result = ws.run("run", "--once", "--now", "2026-11-23T10:00")
    assert result.code == 1
    assert "campaigns/broken.yaml:4: segment: unknown segment 'evryone' (did you mean " \
           "everyone?)" in result.stderr
    assert "campaigns/cron.yaml:" in result.stderr and "five fields" in result.stderr
    assert ws.query("SELECT count(*) FROM deliveries")[0][0] == 0


# --- the daemon in a subprocess, on the real clock ---------------------------------------


def _daemon(db: Workspace, server: FaultServer, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "mailer.cli", "--workspace", str(db.root),
                             "run", "--interval", "1", *args], env=_env(db, server), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _stop(process: subprocess.Popen[str]) -> tuple[float, str]:
    """SIGTERM; how long the exit took and what the process logged."""
    started = time.monotonic()
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=40)
    assert process.returncode == 0, err
    return time.monotonic() - started, err


def _once_campaign(at: datetime, subject: str) -> str:
    return (f"name: {subject}\ntrigger: once\nat: {at:%Y-%m-%dT%H:%M:%S}Z\ngrace: 1h\n"
            f"segment: everyone\ntemplate: note.html\nsubject: {subject}\n")


def test_the_daemon_plans_a_campaign_added_while_it_runs_and_ignores_a_broken_file(
        db: Workspace) -> None:
    store(db, [("A", "a@example.com", "", ""), ("B", "b@example.com", "", "")],
          campaigns={"birthday": BIRTHDAY})
    with FaultServer() as server:
        daemon = _daemon(db, server)
        try:
            assert _wait_for(lambda: db.query(
                "SELECT count(*) FROM daemon_state WHERE last_sweep_at IS NOT NULL")[0][0], 30)
            status = db.run("status", "--json").json()["daemon"]
            assert status["running"] is True and status["last_sweep"] is not None
            # A broken file: logged, ignored, the daemon goes on.
            db.write("campaigns/typo.yaml", BIRTHDAY.replace("segment:", "segmnt:"))
            assert _wait_for(lambda: db.run("status", "--json").json()["daemon"]
                             ["workspace_problems"] > 0, 30)
            (db.root / "campaigns" / "typo.yaml").unlink()
            # A `once` campaign due a minute ago, added while running: sent within seconds.
            now = datetime.now(UTC)
            db.write("campaigns/flash.yaml", _once_campaign(now.replace(microsecond=0), "Flash"))
            assert _wait_for(lambda: len(server.caught) == 2, 30)
            # Its time comes later: the wake-up job plans it on time.
            at = datetime.fromtimestamp(int(time.time()) + 4, UTC)
            db.write("campaigns/later.yaml", _once_campaign(at, "Later"))
            assert _wait_for(lambda: len(server.caught) == 4, 30)
            arrived = datetime.now(UTC)
            assert arrived >= at
        finally:
            took, log = _stop(daemon)
    assert took < 30
    assert Counter(c.message()["Subject"] for c in server.caught) == {"Flash": 2, "Later": 2}
    assert "workspace change ignored: 2 problems; the last good workspace keeps running" in log
    assert "campaigns/typo.yaml:4: segmnt: unknown key (did you mean segment?)" in log
    assert "workspace reloaded" in log and "added=flash" in log
    assert "a@example.com" not in log and KEY not in log
    assert db.run("status", "--json").json()["daemon"]["running"] is False


def test_sigterm_in_the_middle_of_a_send_finishes_what_is_in_flight(ws: Workspace) -> None:
    addresses = [(f"C{n:03d}", f"t{n:03d}@example.com", "", "") for n in range(150)]
    store(ws, addresses, campaigns={"flash": _once_campaign(
        datetime.now(UTC).replace(microsecond=0), "Flash")})
    with FaultServer(Behaviour(delay=0.02)) as server:
        daemon = _daemon(ws, server)
        assert _wait_for(lambda: len(server.caught) >= 20, 30)
        took, log = _stop(daemon)
        assert took < 30
        rows = Counter(s for (s,) in ws.query("SELECT status FROM deliveries"))
        assert rows["sending"] == 0 and rows["unknown"] == 0
        assert rows["sent"] == len(server.caught) and rows["queued"] > 0
        assert "mailer run stopped" in log
        # Started again, it finishes the job without sending anyone twice.
        daemon = _daemon(ws, server)
        assert _wait_for(lambda: len(server.caught) == 150, 60)
        _stop(daemon)
    assert max(Counter(c.recipient for c in server.caught).values()) == 1


# A bomb only the customer named NameB sets off: the synthetic customer of validate
# passes, so the daemon plans it and meets the bomb at send time.
BOMB_TEMPLATE = TEMPLATE + (
    '{% if customer.first_name == "NameB" %}{% for x in range(10000) %}'
    '{% for y in range(10000) %}{% endfor %}{% endfor %}{{ lipsum(n=10**6) }}{% endif %}\n')
ALIAS_BOMB = "description: laughs\nlol: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"l{n}: &{chr(98 + n)} [{', '.join([f'*{chr(97 + n)}'] * 9)}]\n" for n in range(9)) + \
    "all: [{orders: {at_least: 0}}]\n"


def test_bombs_in_a_template_and_a_yaml_file_stop_neither_sweeps_nor_sigterm(
        ws: Workspace) -> None:
    store(ws, [("A", "a@example.com", "", ""), ("B", "b@example.com", "", ""),
               ("C", "c@example.com", "", "")], campaigns={})
    ws.write("templates/note.html", BOMB_TEMPLATE)
    ws.write("campaigns/flash.yaml", _once_campaign(
        datetime.now(UTC).replace(microsecond=0), "Flash"))
    with FaultServer() as server:
        daemon = _daemon(ws, server)
        try:
            assert _wait_for(lambda: ws.query(
                "SELECT count(*) FROM deliveries WHERE status IN ('sent', 'failed')")[0][0]
                == 3, 60)
            # An alias bomb written while it runs is refused at once; sweeps go on.
            ws.write("segments/laughs.yaml", ALIAS_BOMB)
            assert _wait_for(lambda: ws.run("status", "--json").json()["daemon"]
                             ["workspace_problems"] > 0, 30)
            at = datetime.now(UTC).replace(microsecond=0)
            ws.write("templates/plain.html", TEMPLATE)
            ws.write("campaigns/later.yaml", _once_campaign(at, "Later").replace(
                "note.html", "plain.html"))
            (ws.root / "segments" / "laughs.yaml").unlink()
            assert _wait_for(lambda: len(server.caught) == 5, 30)
        finally:
            took, log = _stop(daemon)
    assert took < 30
    assert sorted((c.recipient, c.message()["Subject"]) for c in server.caught) == [
        ("a@example.com", "Flash"), ("a@example.com", "Later"), ("b@example.com", "Later"),
        ("c@example.com", "Flash"), ("c@example.com", "Later")]
    [(status, reason)] = ws.query(
        "SELECT d.status, d.reason FROM deliveries d JOIN customers c ON c.id = d.customer_id"
        " WHERE c.store_id = 'B' AND d.campaign = 'flash'")
    assert status == "failed"
    assert reason.startswith("render_error: templates/note.html:") and "render stopped" in reason
    assert "segments/laughs.yaml:" in log


def test_a_second_daemon_on_sqlite_exits_3_at_once(ws: Workspace) -> None:
    store(ws, [("A", "a@example.com", "", "")], campaigns={"birthday": BIRTHDAY})
    with FaultServer() as server:
        first = _daemon(ws, server)
        try:
            assert _wait_for(lambda: "leading planning" in _peek(ws), 30)
            second = _daemon(ws, server)
            # "at once": it never stands by; the bound is only a loaded machine's start-up
            _, err = second.communicate(timeout=120)
            assert second.returncode == 3
            assert f"another mailer run (pid {first.pid}) is planning from mailer.db" in err
            worker = subprocess.run([sys.executable, "-m", "mailer.cli", "--workspace",
                                     str(ws.root), "worker"], env=_env(ws, server),
                                    capture_output=True, text=True, timeout=30)
            assert worker.returncode == 3
            assert f"another mailer process (pid {first.pid}) is sending from mailer.db" \
                in worker.stderr
        finally:
            _stop(first)


def _peek(ws: Workspace) -> str:
    rows = ws.query("SELECT owner FROM daemon_state")
    return "leading planning" if rows else ""


def test_two_daemons_on_postgresql_one_plans_the_other_takes_over(pg: Workspace,
                                                                  tmp_path: Path) -> None:
    store(pg, [("A", "a@example.com", "", ""), ("B", "b@example.com", "", "")],
          campaigns={"birthday": BIRTHDAY})
    with FaultServer() as server:
        first = _daemon(pg, server)
        second = None
        try:
            assert _wait_for(lambda: _leader(pg) == first.pid, 30)
            # the second logs to a file, so the test can wait for it to stand by (a fixed
            # sleep passed under load before the second daemon had even started)
            second_log = tmp_path / "second.log"
            with second_log.open("w") as sink:
                second = subprocess.Popen(
                    [sys.executable, "-m", "mailer.cli", "--workspace", str(pg.root),
                     "run", "--interval", "1"], env=_env(pg, server), text=True,
                    stdout=subprocess.DEVNULL, stderr=sink)
            assert _wait_for(lambda: "standing by: another mailer run leads planning"
                             in second_log.read_text(), 30)
            assert _leader(pg) == first.pid  # the second stands by
            first.kill()
            first.wait()
            assert _wait_for(lambda: _leader(pg) == second.pid, 30)
            # the new leader plans: a campaign due now is sent once to each
            pg.write("campaigns/flash.yaml", _once_campaign(
                datetime.now(UTC).replace(microsecond=0), "Flash"))
            assert _wait_for(lambda: len(server.caught) == 2, 30)
            _stop(second)
            assert "leading planning" in second_log.read_text()
        finally:
            for process in (first, second):
                if process is not None and process.poll() is None:
                    process.kill()
                    process.wait()
    assert sorted(c.recipient for c in server.caught) == ["a@example.com", "b@example.com"]


def _leader(db: Workspace) -> int | None:
    rows = db.query("SELECT owner, stopped_at FROM daemon_state")
    if not rows or rows[0][1] is not None:
        return None
    return int(rows[0][0].split(":")[1])


def test_run_once_waits_for_the_leader_then_gives_up(pg: Workspace) -> None:
    engine = pg.engine()
    leader = Leadership(engine)
    assert leader.try_take()
    try:
        other = Leadership(engine)
        assert other.try_take() is False
        started = time.monotonic()
        with pytest.raises(LockHeld, match="another mailer run has led planning"):
            other.take(timeout=1.0)
        assert time.monotonic() - started >= 1.0
    finally:
        leader.release()
    assert Leadership(engine).try_take()
    engine.dispose()


# --- wake-ups: when a sweep is due (pure) -------------------------------------------------


def _campaign(**fields: Any) -> Campaign:
    base = {"name": "x", "segment": "everyone", "template": "note.html", "subject": "s"}
    return Campaign.model_validate({**base, **fields})


BERLIN = ZoneInfo("Europe/Berlin")


def test_birthday_wakeups_follow_each_zone_across_the_date_line_and_dst() -> None:
    birthday = _campaign(trigger="birthday", send_at=clock_time(9, 0))
    after = datetime(2026, 11, 23, 8, 0, tzinfo=UTC)  # 09:00 in Berlin, exactly
    zones = ["Europe/Berlin", "Pacific/Kiritimati", "Pacific/Pago_Pago"]
    # next: Kiritimati's 09:00 of the 24th (19:00 UTC), before Pago Pago's (20:00 UTC)
    assert next_wakeup(birthday, after, BERLIN, zones) == datetime(2026, 11, 23, 19, 0,
                                                                    tzinfo=UTC)
    assert next_wakeup(birthday, after, BERLIN, ["Pacific/Pago_Pago"]) == datetime(
        2026, 11, 23, 20, 0, tzinfo=UTC)
    # 02:30 does not exist in New York on 8 March 2026: the first instant after the gap
    early = _campaign(trigger="birthday", send_at=clock_time(2, 30))
    assert next_wakeup(early, datetime(2026, 3, 8, 5, 0, tzinfo=UTC), BERLIN,
                       ["America/New_York"]) == datetime(2026, 3, 8, 7, 0, tzinfo=UTC)
    # 02:30 occurs twice in Berlin on 25 October 2026: the first one (00:30 UTC)
    assert next_wakeup(early, datetime(2026, 10, 25, 0, 0, tzinfo=UTC), BERLIN,
                       ["Europe/Berlin"]) == datetime(2026, 10, 25, 0, 30, tzinfo=UTC)


def test_cron_promotion_and_once_wakeups() -> None:
    cron = _campaign(trigger="schedule", schedule="0 10 1 * *")
    assert next_wakeup(cron, datetime(2026, 11, 23, tzinfo=UTC), BERLIN, []) == datetime(
        2026, 12, 1, 9, 0, tzinfo=UTC)
    # crontab(5): both day fields restricted means either (the 13th or any Friday)
    either = _campaign(trigger="schedule", schedule="0 9 13 * 5")
    assert next_wakeup(either, datetime(2026, 11, 23, tzinfo=UTC), BERLIN, []) == datetime(
        2026, 11, 27, 8, 0, tzinfo=UTC)
    sale = _campaign(trigger="promotion", starts=datetime(2026, 11, 27, 8, 0),
                     ends=datetime(2026, 11, 30, 8, 0),
                     reminder={"before_end": "12h", "subject": "Last hours"})
    assert next_wakeup(sale, datetime(2026, 11, 23, tzinfo=UTC), BERLIN, []) == datetime(
        2026, 11, 27, 7, 0, tzinfo=UTC)
    assert next_wakeup(sale, datetime(2026, 11, 28, tzinfo=UTC), BERLIN, []) == datetime(
        2026, 11, 29, 19, 0, tzinfo=UTC)
    assert next_wakeup(sale, datetime(2026, 12, 1, tzinfo=UTC), BERLIN, []) is None
    one = _campaign(trigger="once", at=datetime(2026, 12, 24, 18, 0))
    assert next_wakeup(one, datetime(2026, 11, 23, tzinfo=UTC), BERLIN, []) == datetime(
        2026, 12, 24, 17, 0, tzinfo=UTC)
    assert next_wakeup(one, datetime(2026, 12, 25, tzinfo=UTC), BERLIN, []) is None


def test_status_before_any_daemon(ws: Workspace, tmp_path: Path) -> None:
    store(ws, [("A", "a@example.com", "", "")], campaigns={"birthday": BIRTHDAY})
    assert ws.run("status", "--json").json()["daemon"] == {
        "running": False, "leader": None, "last_sweep": None, "next_due": None}
    assert "never run on this database" in ws.run("status").stdout


def test_a_stop_while_a_job_runs_lets_it_finish_and_logs_no_traceback(
        ws: Workspace, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """SIGTERM while the stages job is in its thread: the job finishes and logs its line
    (shutting the scheduler down under it cancelled it, and APScheduler logged
    'Job ... raised an exception' with a CancelledError traceback); the daily refits are
    left to the next start."""
    import asyncio
    import threading

    from apscheduler.schedulers.base import STATE_RUNNING

    from mailer.core.clock import Clock
    from mailer.daemon import scheduler
    from mailer.daemon.scheduler import Daemon, load

    store(ws, [("A", "a@example.com", "", "")], campaigns={"birthday": BIRTHDAY})
    engine = ws.engine()
    entered = threading.Event()
    daemon = Daemon(engine, ws.root, Clock(), load(ws.root), owner="t", delivery=None,
                    interval=0.5)

    def stages(*_: Any) -> dict[str, Any]:
        entered.set()
        # still in flight until the daemon has stopped its scheduler for the stop
        assert _wait_for(lambda: daemon._scheduler is not None
                         and daemon._scheduler.state != STATE_RUNNING, 30)
        return {"now": "2026-11-23T10:00:00Z", "recorded": 1, "changed": 0, "moves": []}

    def no_refits(*_: Any) -> None:
        raise AssertionError("the daily refits ran during a stop")

    monkeypatch.setattr(scheduler, "update_stages", stages)
    monkeypatch.setattr(scheduler, "_recommend", no_refits)

    async def main() -> None:
        stop, reload = asyncio.Event(), asyncio.Event()
        running = asyncio.create_task(daemon.run(stop, reload))
        assert await asyncio.to_thread(entered.wait, 30)
        stop.set()
        await asyncio.wait_for(running, 40)

    try:
        with caplog.at_level(logging.INFO):
            asyncio.run(main())
    finally:
        engine.dispose()
    logged = caplog.text
    assert "raised an exception" not in logged and "Traceback" not in logged, logged
    assert "stages update now=2026-11-23T10:00:00Z recorded=1 changed=0" in logged
