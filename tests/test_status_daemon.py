"""`mailer status` in words and the daemon's own lines (issue 17, item 12): where the
daemon runs (host and pid), its last sweep, the campaign due next; a line of delivery
counts each interval. The daemon runs as `mailer run` in a subprocess, on the real
clock, sending to the test SMTP server; tests wait for its lines, never sleep."""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from mailer.core.clock import iso_z
from mailer.store.daemon_state import write_state
from tests.conftest import SETTINGS, Workspace
from tests.smtp_server import FaultServer
from tests.test_crash import _environment as _env
from tests.test_crash import _wait_for
from tests.test_daemon import store

# Quiet hours hold the night zone's mails in the queue: a known "queued" in the counts.
QUIET = SETTINGS + ('policy: {frequency: [{max: 10, per: 1d}], quiet_hours: "01:00-05:00"}\n'
                    "delivery: {concurrency: 4, rate_per_second: 1000}\n")
COUNTS = re.compile(r"deliveries in the last (second|\d+ seconds|minute|\d+ minutes): "
                    r"(\d+) sent, (\d+) deferred, (\d+) failed, (\d+) unknown"
                    r"((?:, \d+ \w+)*); (\d+) queued")
HOST = socket.gethostname()[:30]  # as the ledger names a sender: host:pid:id


def _zone_at(hour: int, now: datetime) -> str:
    """A fixed-offset zone whose local hour is HOUR at NOW."""
    offset = (hour - now.hour + 12) % 24 - 12
    return "Etc/GMT" if offset == 0 else f"Etc/GMT{-offset:+d}"


def _once(at: datetime, subject: str) -> str:
    return (f"name: {subject}\ntrigger: once\nat: {at:%Y-%m-%dT%H:%M:%S}Z\ngrace: 1d\n"
            f"segment: everyone\ntemplate: note.html\nsubject: {subject}\n")


def _scene(db: Workspace) -> datetime:
    """Flash due now for seven customers: three are sent, one fails (550), one is
    deferred (451 once), two wait in the queue for the end of their quiet hours.
    Black Friday comes in two to three minutes: the next due instant. Returns its time."""
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    day, night = _zone_at(12, now), _zone_at(3, now)
    black_friday = now + timedelta(minutes=3)
    store(db, [("A", "a@example.com", "", day), ("B", "b@example.com", "", day),
               ("C", "c@example.com", "", day), ("F", "bad550@example.com", "", day),
               ("D", "temp451@example.com", "", day), ("Q1", "q1@example.com", "", night),
               ("Q2", "q2@example.com", "", night)],
          campaigns={"flash": _once(now, "Flash"),
                     "black-friday": _once(black_friday, "Black Friday")}, settings=QUIET)
    return black_friday


def _start(db: Workspace, server: FaultServer, log: Path, **env: str) -> subprocess.Popen[str]:
    """`mailer run --interval 1` (sweeps and counts each second), logging to LOG."""
    with log.open("w") as sink:
        return subprocess.Popen([sys.executable, "-m", "mailer.cli", "--workspace",
                                 str(db.root), "run", "--interval", "1"],
                                env={**_env(db, server), **env}, text=True,
                                stdout=subprocess.DEVNULL, stderr=sink)


def _stop(daemon: subprocess.Popen[str]) -> None:
    daemon.send_signal(signal.SIGTERM)
    assert daemon.wait(timeout=40) == 0


def _text_counts(log: Path) -> list[dict[str, Any]]:
    """Every counts line of a text log, as numbers."""
    found = []
    for match in COUNTS.finditer(log.read_text()):
        span, sent, deferred, failed, unknown, more, queued = match.groups()
        found.append({"span": span, "sent": int(sent), "deferred": int(deferred),
                      "failed": int(failed), "unknown": int(unknown), "more": more,
                      "queued": int(queued)})
    return found


def _json_lines(log: Path, event: str) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in log.read_text().splitlines()
             if line.startswith("{")]
    return [line for line in lines if line.get("event") == event]


def _totals(lines: list[dict[str, Any]]) -> dict[str, int]:
    total: Counter[str] = Counter()
    for line in lines:
        total.update({state: line[state] for state in ("sent", "deferred", "failed",
                                                       "unknown")})
    return dict(total)


DONE = {"sent": 3, "deferred": 1, "failed": 1, "unknown": 0}


def test_the_daemon_counts_its_deliveries_and_status_says_where_it_runs(
        db: Workspace, tmp_path: Path) -> None:
    black_friday = _scene(db)
    log = tmp_path / "run.log"
    with FaultServer() as server:
        before = datetime.now(UTC).replace(second=0, microsecond=0)
        daemon = _start(db, server, log)
        try:
            # The counts of every line add up to what the server saw; the last says
            # what still waits: the two night owls' mails.
            assert _wait_for(lambda: _totals(_text_counts(log)) == DONE
                             and _text_counts(log)[-1]["queued"] == 2, 60), log.read_text()
            assert len(server.caught) == 3
            running = db.run("status")
            assert running.code == 0
            said = running.stdout
            assert f"daemon: running on host {HOST} as pid {daemon.pid} since " in said
            match = re.search(r"since (\d{4}-\d\d-\d\d \d\d:\d\d) UTC, last sweep "
                              r"(just now|\d+ seconds? ago) \(planned \d+\)\n", said)
            assert match is not None, said
            started = datetime.strptime(match.group(1), "%Y-%m-%d %H:%M").replace(tzinfo=UTC)
            assert before <= started <= datetime.now(UTC)
            document = db.run("status", "--json").json()["daemon"]
            assert document["running"] is True and document["stopped"] is None
            assert (document["host"], document["pid"]) == (HOST, daemon.pid)
            assert document["leader"].startswith(f"{HOST}:{daemon.pid}:")
            assert document["next_due"] == iso_z(black_friday)
            assert {"last_sweep", "started", "heartbeat", "last_planned",
                    "workspace_problems"} <= set(document)
        finally:
            _stop(daemon)
    text = log.read_text()
    lines = _text_counts(log)
    # --interval 1: a line a second (a loaded machine may run the job a second late)
    assert all(re.fullmatch(r"second|[2-9] seconds", line["span"]) for line in lines), lines
    assert all(line["more"] == "" for line in lines)  # nothing skipped or expired
    assert _totals(lines) == DONE
    # Each sweep names the campaign of the next due instant.
    assert f"next_due={iso_z(black_friday)} next_due_campaign=black-friday" in text
    assert "a@example.com" not in text and "temp451" not in text
    assert re.search(rf"daemon: not running \(last seen \d{{4}}-\d\d-\d\d \d\d:\d\d UTC "
                     rf"on host {re.escape(HOST)} as pid {daemon.pid}, when it stopped\); "
                     r"its last sweep planned 0\n", db.run("status").stdout)
    document = db.run("status", "--json").json()["daemon"]
    assert document["running"] is False and document["stopped"] is not None
    assert (document["host"], document["pid"]) == (HOST, daemon.pid)


def test_json_logs_carry_the_counts_and_status_names_the_campaign_due_next(
        db: Workspace, tmp_path: Path) -> None:
    black_friday = _scene(db)
    log = tmp_path / "run.log"
    with FaultServer() as server:
        daemon = _start(db, server, log, MAILER_LOG_FORMAT="json")
        try:
            assert _wait_for(lambda: _totals(_json_lines(log, "delivery_counts")) == DONE
                             and _json_lines(log, "delivery_counts")[-1]["queued"] == 2,
                             60), log.read_text()
            document = db.run("status", "--json").json()["daemon"]
            assert (document["next_due"], document["next_due_campaign"]) == (
                iso_z(black_friday), "black-friday")
            assert f"next due: black-friday at {black_friday:%Y-%m-%d %H:%M} UTC\n" in \
                db.run("status").stdout
            # Without Black Friday the next instant is the deferred mail's retry: Flash.
            (db.root / "campaigns" / "black-friday.yaml").unlink()
            assert _wait_for(lambda: db.run("status", "--json").json()["daemon"]
                             ["next_due_campaign"] == "flash", 30)
            assert re.search(r"next due: flash at \d{4}-\d\d-\d\d \d\d:\d\d(:\d\d)? UTC\n",
                             db.run("status").stdout)
        finally:
            _stop(daemon)
    counts = _json_lines(log, "delivery_counts")
    # --interval 1: a line a second (a loaded machine may run the job a second late)
    assert all(1 <= line["seconds"] < 10 and line["message"].startswith(
        "deliveries in the last second: " if line["seconds"] == 1 else
        f"deliveries in the last {line['seconds']} seconds: ") for line in counts), counts
    assert all(line["skipped"] == line["expired"] == 0 for line in counts)
    sweeps = _json_lines(log, "sweep")
    assert {"next_due": iso_z(black_friday), "next_due_campaign": "black-friday"}.items() \
        <= sweeps[0].items()
    assert sweeps[-1]["next_due_campaign"] == "flash"


def _row(db: Workspace, *, heartbeat: datetime, stopped: datetime | None = None) -> None:
    """The daemon's row as web-1's pid 4242 leaves it after a sweep that planned 12."""
    write_state(db.engine(), {
        "owner": "web-1:4242:0123456789ab", "started_at": datetime(2026, 11, 23, 10, 0,
                                                                    tzinfo=UTC),
        "heartbeat_at": heartbeat, "last_sweep_at": heartbeat, "last_planned": 12,
        "next_due_at": datetime(2026, 11, 27, 8, 0, tzinfo=UTC),
        "next_due_campaign": "black-friday", "workspace_problems": 1, "stopped_at": stopped},
        started=datetime(2026, 11, 23, 10, 0, tzinfo=UTC))


def test_status_says_in_words_where_the_daemon_runs_and_when_it_was_last_seen(
        db: Workspace) -> None:
    db.write("mailer.yaml", SETTINGS)
    assert "daemon: never run on this database\n" in db.run("status").stdout
    _row(db, heartbeat=datetime.now(UTC) - timedelta(minutes=2, seconds=5))
    lines = db.run("status").stdout.splitlines()
    daemon = lines.index("daemon: running on host web-1 as pid 4242 since 2026-11-23 10:00 "
                         "UTC, last sweep 2 minutes ago (planned 12)")
    assert lines[daemon + 1].startswith("next due: ")
    assert lines[daemon + 1].endswith(" 2026-11-27 08:00 UTC")
    assert lines[daemon + 2] == "workspace: 1 problem ignored (the last good workspace runs)"
    document = db.run("status", "--json").json()
    assert list(document) == ["customers", "subscribed", "pending", "orders", "deliveries",
                              "daemon", "hooks", "paused"]
    assert {key: document["daemon"][key] for key in ("running", "leader", "host", "pid",
                                                     "started", "last_planned")} == {
        "running": True, "leader": "web-1:4242:0123456789ab", "host": "web-1", "pid": 4242,
        "started": "2026-11-23T10:00:00Z", "last_planned": 12}
    # Silent for ten minutes and never said it stopped: killed, or its host is down.
    seen = datetime.now(UTC) - timedelta(minutes=10)
    _row(db, heartbeat=seen)
    assert (f"daemon: not running (last seen {seen:%Y-%m-%d %H:%M} UTC on host web-1 as pid "
            "4242, and it never said it stopped: killed, or its host is down); its last "
            "sweep planned 12\n") in db.run("status").stdout
    _row(db, heartbeat=seen, stopped=seen)
    assert (f"daemon: not running (last seen {seen:%Y-%m-%d %H:%M} UTC on host web-1 as pid "
            "4242, when it stopped); its last sweep planned 12\n") in db.run("status").stdout
    assert db.run("status", "--json").json()["daemon"]["stopped"] == iso_z(seen)


def test_status_names_the_campaign_due_next(db: Workspace) -> None:
    db.write("mailer.yaml", SETTINGS)
    db.run("status")  # creates the database
    _row(db, heartbeat=datetime.now(UTC))
    assert "\nnext due: black-friday at 2026-11-27 08:00 UTC\n" in db.run("status").stdout
    assert db.run("status", "--json").json()["daemon"]["next_due_campaign"] == "black-friday"


def test_run_once_leaves_the_campaign_due_next_for_status(db: Workspace) -> None:
    store(db, [("A", "a@example.com", "", "")], campaigns={
        "flash": _once(datetime(2026, 11, 23, 9, 0, tzinfo=UTC), "Flash"),
        "black-friday": _once(datetime(2026, 11, 27, 7, 0, tzinfo=UTC), "Black Friday")},
        settings=QUIET)
    assert db.run("run", "--once", "--no-deliver", "--now", "2026-11-23T10:00Z").code == 0
    document = db.run("status", "--json").json()["daemon"]
    assert (document["next_due"], document["next_due_campaign"]) == (
        "2026-11-27T07:00:00Z", "black-friday")
    assert "\nnext due: black-friday at 2026-11-27 07:00 UTC\n" in db.run("status").stdout


def test_a_template_typo_stops_run_before_anything_is_planned(ws: Workspace) -> None:
    """The daemon loads a workspace as validate checks it: an unknown variable is an error
    (a reload keeps the last good workspace), a missing optional field only a warning."""
    from mailer.config.workspace import init_workspace

    init_workspace(ws.root, force=True)
    template = ws.root / "templates" / "thank-you.html"
    template.write_text(template.read_text().replace("customer.first_name",
                                                     "customer.frist_name", 1))
    ws.env.update({"MAILER_SMTP_URL": "smtp://127.0.0.1:9",
                   "MAILER_SECRET_KEY": "a-test-key-of-enough-length-0123456789"})
    result = ws.run("run", "--once", "--now", "2026-11-23T10:00")
    assert result.code == 1
    assert ("templates/thank-you.html:3: unknown variable customer.frist_name "
            "(did you mean first_name?)") in result.stderr
    # refused before the store was even opened: nothing planned
    assert not (ws.root / "mailer.db").exists()
