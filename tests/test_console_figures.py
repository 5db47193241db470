"""The console's computed figures (issue 23 part 3): `mailer console refresh` and the
daemon store them with the workspace's hash; a change of the files marks them stale; the
console's parsed workspace follows an edited file. The console's own pages showing them
are tests/test_console.py's."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

from mailer.core.clock import Clock
from mailer.store.insight.figures import load
from tests.conftest import Workspace

CUSTOMERS = ("id,email,first_name,country,consent\nA,a@example.com,Ann,DE,subscribed\n"
             "B,b@example.com,Bob,FR,subscribed\nC,c@example.com,Cy,DE,subscribed\n")
NOW = "2026-11-23T10:00"


def _shop(db: Workspace) -> Workspace:
    db.write("customers.csv", CUSTOMERS)
    assert db.run("import", "customers", "customers.csv", "--now", NOW).code == 0
    db.write("segments/germans.yaml", "description: Germans\nall: [{country: DE}]\n")
    db.write("segments/everyone.yaml", "description: everyone\nall: [{orders: {at_least: 0}}]\n")
    return db


def test_refresh_stores_the_figures_with_their_time_and_workspace(db: Workspace) -> None:
    from mailer.config.files import content_hash

    _shop(db)
    result = db.run("console", "refresh", "--now", NOW, "--json")
    assert result.code == 0, result.stderr
    said = result.json()
    assert [f["kind"] for f in said["figures"]] == ["segments", "counts", "forecast"]
    assert said["figures"][0]["segments"] == 2 and said["figures"][2]["days"] == 30
    assert said["figures"][1]["campaigns"] == 0  # nothing sent yet
    assert said["figures"][0]["as_of"] == "2026-11-23T09:00:00Z"  # Berlin's 10:00
    engine = db.engine()
    try:
        with engine.connect() as conn:
            segments, forecast = load(conn, "segments"), load(conn, "forecast")
    finally:
        engine.dispose()
    assert segments is not None and forecast is not None
    assert segments.computed_by == "cli" and segments.workspace == content_hash(db.root)
    assert {s["segment"]: s["count"] for s in segments.document["segments"]} == {
        "germans": 2, "everyone": 3}
    germans = next(s for s in segments.document["segments"] if s["segment"] == "germans")
    assert germans["funnel"][-1]["remaining"] == 2
    assert isinstance(segments.document["zones"], list)  # the campaigns page reads them
    assert forecast.document["chart_svg"].startswith("<svg")
    assert len(forecast.document["days"]) == 30
    # said for a person: what was computed and how long it took
    again = db.run("console", "refresh", "--only", "segments", "--now", NOW)
    assert again.code == 0, again.stderr
    assert "segments: 2 segments as of 2026-11-23T09:00:00Z, computed in" in again.stdout
    assert "stored 1 figures in" in again.stdout


def test_a_broken_workspace_stores_no_forecast_and_says_why(db: Workspace) -> None:
    _shop(db)
    db.write("campaigns/bad.yaml", "name: Bad\ntrigger: once\n")
    result = db.run("console", "refresh", "--now", NOW)
    assert result.code == 1 and "campaigns/bad.yaml" in result.stderr
    assert db.query("SELECT count(*) FROM console_figures") == [(0,)]


def test_the_daemon_refreshes_the_figures_off_the_loop(db: Workspace) -> None:
    from mailer.daemon.scheduler import Daemon
    from mailer.daemon.scheduler import load as load_workspace

    _shop(db)
    engine = db.engine()
    try:
        daemon = Daemon(engine, db.root, Clock(datetime(2026, 11, 23, 9, tzinfo=UTC)),
                        load_workspace(db.root), owner="t", delivery=None)
        asyncio.run(daemon._refresh_figures())
        with engine.connect() as conn:
            segments, forecast = load(conn, "segments"), load(conn, "forecast")
            counts = load(conn, "counts")
        # not the forecast: it would hold up the daemon's own sweeps
        assert segments is not None and counts is not None and forecast is None
        assert counts.computed_by == "daemon" and counts.document["campaigns"] == {}
        assert segments.computed_by == "daemon"
        assert segments.as_of == datetime(2026, 11, 23, 9, tzinfo=UTC)
        assert segments.workspace == daemon.loaded.workspace_hash
        # after a reload, from the new workspace
        db.write("segments/french.yaml", "description: French\nall: [{country: FR}]\n")
        asyncio.run(daemon.reload())
        asyncio.run(daemon._refresh_figures())
        with engine.connect() as conn:
            segments = load(conn, "segments")
        assert segments is not None and segments.workspace == daemon.loaded.workspace_hash
        assert {s["segment"] for s in segments.document["segments"]} == {
            "germans", "everyone", "french"}
    finally:
        engine.dispose()


def test_the_daemon_schedules_the_refresh_at_once_and_hourly(db: Workspace) -> None:
    from mailer.daemon.scheduler import FIGURES_EVERY, FIGURES_FIRST_AFTER, FIGURES_JOB, Daemon
    from mailer.daemon.scheduler import load as load_workspace

    engine = db.engine()
    try:
        daemon = Daemon(engine, db.root, Clock(datetime(2026, 11, 23, 9, tzinfo=UTC)),
                        load_workspace(db.root), owner="t", delivery=None)

        async def scheduled() -> object:
            daemon._sweep_wanted = asyncio.Event()
            daemon._schedule()
            job = daemon._jobs().get_job(FIGURES_JOB)
            daemon._jobs().shutdown(wait=False)
            return job

        before = datetime.now(UTC)
        job: Any = asyncio.run(scheduled())
        assert job is not None and job.trigger.interval.total_seconds() == FIGURES_EVERY
        assert before + FIGURES_FIRST_AFTER <= job.next_run_time  # the first sweeps first
        assert job.next_run_time <= datetime.now(UTC) + FIGURES_FIRST_AFTER
    finally:
        engine.dispose()


def test_the_console_cache_parses_once_and_notices_an_edited_file(ws: Workspace) -> None:
    from mailer.web.console.workspace import WorkspaceCache

    ws.write("segments/germans.yaml", "description: Germans\nall: [{country: DE}]\n")
    cache = WorkspaceCache(ws.root)
    first = cache.current()
    assert cache.current() is first and cache.parses == 1
    path = ws.root / "segments" / "germans.yaml"
    stat = path.stat()
    ws.write("segments/germans.yaml", "description: Frenchs\nall: [{country: FR}]\n")
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))  # a coarse clock
    edited = cache.current()
    assert cache.parses == 2 and edited.hash != first.hash
    assert edited.specs["germans"].description == "Frenchs"
    ws.write("segments/germans.yaml", "description: Germans\nall: [{country: DE}]\n")
    assert cache.current().hash == first.hash  # the same files, the same hash


def test_a_kept_figure_is_computed_once_then_again_in_the_background_when_old(
        tmp_path: Path) -> None:
    """What the console keeps in its process (a campaign's report): computed the first
    time it is asked for, then returned as it was while a thread computes it again once
    older than its age."""
    import threading

    from mailer.web.console.data import Store

    store = Store(tmp_path, cast(Any, None), cast(Any, None),
                  Clock(datetime(2026, 11, 23, 9, tzinfo=UTC)))
    computed: list[int] = []

    def compute() -> int:
        computed.append(len(computed) + 1)
        return computed[-1]

    assert store.kept_fresh("report:x", compute, max_age=60)[1] == 1
    assert store.kept_fresh("report:x", compute, max_age=60)[1] == 1 and computed == [1]
    assert store.kept_fresh("report:x", compute, max_age=0)[1] == 1  # old: the last one
    for thread in threading.enumerate():
        if thread.name == "mailer-console-report:x":
            thread.join(timeout=30)
    assert computed == [1, 2] and store.kept_fresh("report:x", compute, max_age=60)[1] == 2


def _store(root: Path) -> Any:
    from mailer.web.console.data import Store

    return Store(root, cast(Any, None), cast(Any, None),
                 Clock(datetime(2026, 11, 23, 9, tzinfo=UTC)))


def _join(name: str) -> None:
    """Wait for the background computation of NAME the store started, if any."""
    import threading

    for thread in threading.enumerate():
        if thread.name == f"mailer-console-{name}":
            thread.join(timeout=30)


def test_two_requests_for_one_report_meanwhile_compute_it_once(tmp_path: Path) -> None:
    """warm_reports (a thread at the console's start) and a first page view ask for the
    same report at once: the second waits for the first's computation, it does not
    start its own (a report reads every row and event of its campaign)."""
    import threading

    store = _store(tmp_path)
    computed: list[str] = []
    started = threading.Event()

    def compute() -> str:
        computed.append(threading.current_thread().name)
        started.set()
        deadline = time.monotonic() + 30
        # held until the other request waits for it (or, were it not waiting, computes)
        while store.waiting("report:x") == 0 and len(computed) == 1 \
                and time.monotonic() < deadline:
            time.sleep(0.01)  # polling a state the store reports, up to the deadline
        return "the report"

    answers: list[Any] = []

    def ask() -> None:
        answers.append(store.kept_fresh("report:x", compute, max_age=60))

    first = threading.Thread(target=ask, name="warm")
    first.start()
    assert started.wait(30)
    second = threading.Thread(target=ask, name="page")
    second.start()
    first.join(30)
    second.join(30)
    assert computed == ["warm"]  # once, by whoever asked first
    assert len(answers) == 2 and answers[0] == answers[1]
    assert answers[0][1] == "the report" and store.waiting("report:x") == 0


def test_a_failing_first_computation_fails_every_waiting_request_and_is_tried_again(
        tmp_path: Path) -> None:
    import pytest

    store = _store(tmp_path)

    def broken() -> str:
        raise RuntimeError("the database went away")

    with pytest.raises(RuntimeError, match="went away"):
        store.kept_fresh("report:x", broken, max_age=60)
    assert store.kept_fresh("report:x", lambda: "the report", max_age=60)[1] == "the report"


class _Lines(logging.Handler):
    """The log lines of one logger, as an operator reads them."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_a_failing_recompute_is_logged_once_and_the_last_report_still_shown(
        tmp_path: Path) -> None:
    """A report older than its age is computed again in the background; when that
    fails (the database away), the console logs it once, goes on showing the last one,
    and does not try again on every view: RETRY_AFTER later at the earliest."""
    from mailer.web.console.data import RETRY_AFTER

    store = _store(tmp_path)
    assert store.kept_fresh("report:x", lambda: "monday's", max_age=60)[1] == "monday's"
    attempts: list[int] = []

    def broken() -> str:
        attempts.append(1)
        raise RuntimeError("the database went away")

    lines = _Lines()
    logger = logging.getLogger("mailer.console")
    logger.addHandler(lines)
    try:
        for _ in range(3):  # three views, each finding the report old (max_age 0)
            assert store.kept_fresh("report:x", broken, max_age=0)[1] == "monday's"
            _join("report:x")
    finally:
        logger.removeHandler(lines)
    assert attempts == [1]
    assert [r.getMessage() for r in lines.records] == [
        f"report:x not computed; tried again in {RETRY_AFTER:.0f} s at the earliest"]
    assert lines.records[0].levelno == logging.WARNING
    assert lines.records[0].exc_info is not None
    assert "went away" in str(lines.records[0].exc_info[1])
    # RETRY_AFTER later: computed again, and shown
    store.failed["report:x"] -= RETRY_AFTER
    store.kept_fresh("report:x", lambda: "tuesday's", max_age=0)
    _join("report:x")
    assert store.kept_fresh("report:x", broken, max_age=60)[1] == "tuesday's"
