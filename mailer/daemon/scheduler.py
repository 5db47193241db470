"""The scheduler daemon, `mailer run` (DESIGN §6): plan every campaign on its trigger,
deliver what is due, for months.

One asyncio loop runs three tasks:

- leading: take the planning leadership (a second daemon on PostgreSQL stands by
  until the leader's session ends), then sweep whenever APScheduler wakes it — an
  interval job (at least every minute) and one job per campaign at the instants
  it can next become due. A sweep plans whatever is due at that moment,
  idempotently against the ledger, so a late, missed or doubled wake-up changes
  when mail goes out, never what: misfires are coalesced and always run, and a
  restart catches up whatever fell due while the daemon was down, within each
  occurrence's expiry.
- watching: the workspace's files (every few seconds, or at once on SIGHUP). A
  change is validated and compiled off the loop; a valid workspace is swapped in
  and its jobs rebuilt, a broken one is logged problem by problem and ignored.
- stages: `stages update` at the start of leading and then hourly (an APScheduler
  job on the daemon's clock), one log line with its counts, then a sweep, so a
  stage_change campaign mails a recorded change at once. The same job refits the
  purchase models (`mailer predict`) and computes the recommendations
  (`mailer recommend`) when the latest fit is a day old on the daemon's clock (or
  from another day than it), one log line each.
- the review: with `review:` in mailer.yaml, a job at its cron line's fire times (on the
  daemon's clock, in the workspace zone) and at the start of leading queues the previous
  month's review as the notice `review:YYYY-MM` (mailer.app.review): the key makes it
  once per month whatever the restarts, and a daemon started after a fire time catches
  that month's review up within 7 days. The hourly stages job looks again (one exists()
  query on the key), so a fire time whose queueing failed — the database away — is
  caught up within the same 7 days. The sending loop delivers it with the other notices.
- double opt-in: with `consent: {double_opt_in: true}`, each sweep also queues the
  pending customers' confirmation notices and their one reminder (mailer.delivery.confirmations),
  signed with MAILER_SECRET_KEY (a `--no-deliver` daemon without it queues none).
- the console's figures (mailer.app.console.figures): segment sizes and funnels and the
  campaigns' counts (not the forecast: DAEMON_FIGURES), computed off the loop a minute
  after leading starts and after each reload that swaps a new workspace in, then hourly
  (FIGURES_EVERY), stored
  with the workspace's hash for `mailer console` to show with their time
  (docs/console.md, "Computed figures").
- delivering: the same sending loop (`SendingLoop`) as `mailer worker`, over every campaign's
  rows, so rows of a campaign whose file is gone finish from their version. An
  APScheduler job logs what it sent each interval (a minute by default).

Stopping (SIGTERM, SIGINT) ends planning between batches, lets the mails in
flight finish and be recorded, and returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar, cast

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.interval import IntervalTrigger

from mailer.app.console.figures import Workspace
from mailer.app.console.figures import refresh as refresh_figures
from mailer.app.review.send import due_review, queue_review, scheduled_key
from mailer.app.send import compile_versions, plan_now
from mailer.app.stages import update as update_stages
from mailer.app.validation import template_errors
from mailer.config.campaign import Campaign
from mailer.config.conditions import SegmentSpec
from mailer.config.files import Fingerprint, content_hash, fingerprint
from mailer.config.settings import Settings
from mailer.config.workspace import load_valid_workspace, open_workspace
from mailer.core.clock import Clock, iso_z, zone
from mailer.core.errors import ConfigError, MailerError
from mailer.core.states import DeliveryState
from mailer.delivery.confirmations import queue_confirmations
from mailer.delivery.worker import SendingLoop
from mailer.planning.triggers import next_fire, parse_cron
from mailer.planning.wakeups import next_wakeup
from mailer.store.customers import time_zones
from mailer.store.daemon_state import write_state
from mailer.store.db import Engine
from mailer.store.insight.predictions import latest_fit
from mailer.store.ledger import next_release_of, queued_rows
from mailer.store.locks import Leadership

log = logging.getLogger("mailer.run")
T = TypeVar("T")

COUNTS_JOB = "delivery-counts"  # the one job that outlives leadership and reloads
STAGES_JOB = "stages-update"  # outlives reloads (a reload must not rerun it), not leadership
REVIEW_JOB = "monthly-review"
FIGURES_JOB = "console-figures"
FIGURES_EVERY = 3600.0  # seconds between refreshes of the console's figures
# Not the forecast: on PostgreSQL it simulates in the live database (a
# transaction rolled back), so a sweep planning the same mail would wait for it, every
# hour; the forecast is `mailer console refresh`'s (cron) or the console's button.
DAEMON_FIGURES = ("segments", "counts")
# The first refresh waits this long after leading starts or a reload: the first sweeps
# (a restart's catching up) go first, and a daemon stopped at once computes nothing.
FIGURES_FIRST_AFTER = timedelta(minutes=1)
STAGES_EVERY = 3600.0  # seconds between `stages update` runs
JOBS_WAIT = 20.0  # s a stop waits for the jobs running then to finish
REFIT_AFTER = timedelta(days=1)  # the daemon refits the purchase models daily
# The outcomes every counts line names; skipped and expired join them when there were any.
COUNTED = (DeliveryState.SENT, DeliveryState.DEFERRED, DeliveryState.FAILED,
           DeliveryState.UNKNOWN)
ALSO_COUNTED = (DeliveryState.SKIPPED, DeliveryState.EXPIRED)


@dataclass(frozen=True)
class Loaded:
    """A valid workspace, compiled: what the daemon plans from until the next change."""

    settings: Settings
    specs: dict[str, SegmentSpec]
    campaigns: dict[str, Campaign]
    versions: dict[str, dict[str, Any]]
    fingerprint: Fingerprint
    workspace_hash: str = ""  # of the files as read (mailer.config.files.content_hash)


def load(root: Path) -> Loaded:
    """Read, validate and compile the workspace; any problem raises (ConfigError with
    every problem, or the template's MailerError)."""
    seen = fingerprint(root)  # before reading: a change made meanwhile is seen next time
    hashed = content_hash(root)
    settings = open_workspace(root).settings
    specs, campaigns = load_valid_workspace(root)
    # A template typo (an unknown variable) stops a load like a broken file; warnings never.
    errors = template_errors(root, settings, campaigns, now=datetime.now(UTC))
    if errors:
        raise ConfigError(errors)
    return Loaded(settings, specs, campaigns, compile_versions(root, campaigns), seen, hashed)


@dataclass(frozen=True, order=True)
class NextDue:
    """The next instant something may go out, and the campaign it is for (ordered by
    time, then name: the earliest, the first by name among those due at once)."""

    at: datetime
    campaign: str


def problems_of(err: MailerError) -> list[str]:
    if isinstance(err, ConfigError):
        return [str(problem) for problem in err.problems]
    return [str(err)]


class _Wakeup(BaseTrigger):  # type: ignore[misc]
    """An APScheduler trigger firing when a campaign can next become due. Computed on
    the daemon's logical clock (`--now` plus elapsed time) and shifted to wall time."""

    def __init__(self, campaign: Campaign, tz: Any, zones: list[str], offset: timedelta):
        self.campaign, self.tz, self.zones, self.offset = campaign, tz, zones, offset

    def get_next_fire_time(self, previous_fire_time: datetime | None,
                           now: datetime) -> datetime | None:
        after = max(now, previous_fire_time or now).astimezone(UTC) + self.offset
        moment = next_wakeup(self.campaign, after, self.tz, self.zones)
        return None if moment is None else moment - self.offset


class _ReviewFire(BaseTrigger):  # type: ignore[misc]
    """An APScheduler trigger at the review's cron fire times, computed on the daemon's
    logical clock in the workspace zone and shifted to wall time (as _Wakeup)."""

    def __init__(self, schedule: str, tz: Any, offset: timedelta):
        self.cron, self.tz, self.offset = parse_cron(schedule), tz, offset

    def get_next_fire_time(self, previous_fire_time: datetime | None,
                           now: datetime) -> datetime | None:
        after = max(now, previous_fire_time or now).astimezone(UTC) + self.offset
        moment = next_fire(self.cron, after, self.tz)
        return None if moment is None else moment - self.offset


class Daemon:
    """`mailer run`: leadership, sweeps, hot reload and delivery in one loop."""

    def __init__(self, engine: Engine, root: Path, clock: Clock, loaded: Loaded, *,
                 owner: str, delivery: SendingLoop | None, interval: float = 60.0,
                 watch_every: float = 2.0, leadership: Leadership | None = None,
                 counts_every: float | None = None, stages_every: float = STAGES_EVERY,
                 key: str | None = None, figures_every: float = FIGURES_EVERY,
                 figures: tuple[str, ...] = DAEMON_FIGURES) -> None:
        self.engine = engine
        self.key = key  # signs the double opt-in's confirm links (None: none are queued)
        self.root = root
        self.clock = clock
        self.loaded = loaded
        self.owner = owner
        self.delivery = delivery
        self.interval = interval
        # The delivery counts come at the sweep interval unless told: each minute by
        # default, every second in tests that run with --interval 1.
        self.counts_every = counts_every or interval
        self.watch_every = watch_every
        self.stages_every = stages_every
        self.figures_every = figures_every
        self.figures = figures  # the console's figures it refreshes (mailer.app.console.figures)
        self.leadership = leadership or Leadership(engine)
        self.planned: Counter[str] = Counter()  # by campaign, over the daemon's life
        self.sweeps = 0
        self._stopping = threading.Event()  # read by the planner between batches
        self._started = datetime.now(UTC)
        self._scheduler: AsyncIOScheduler | None = None
        self._counted: Counter[str] = Counter()  # the sender's outcomes at the last line
        self._counted_at = time.monotonic()
        self._queued_said: int | None = None  # the queue the last line named
        self._running: set[asyncio.Task[Any]] = set()  # the jobs running now (see _job)
        # The logical clock's lead over the wall clock (zero unless --now was given).
        self._offset = clock.now() - datetime.now(UTC) if clock.simulated else timedelta(0)

    async def run(self, stop: asyncio.Event, reload: asyncio.Event) -> None:
        """Until STOP: lead (or stand by), watch the workspace (RELOAD forces a look),
        deliver. Returns once what was in flight is recorded."""
        self._sweep_wanted = asyncio.Event()
        tasks: list[Awaitable[Any]] = [self._lead(stop), self._watch(stop, reload),
                                       self._mark_stopping(stop)]
        if self.delivery is not None:
            tasks.append(self._deliver(self.delivery, stop))
            self._counted_at = time.monotonic()
            self._jobs().add_job(self._job(self._count_deliveries), IntervalTrigger(
                seconds=self.counts_every), id=COUNTS_JOB)
        try:
            await asyncio.gather(*tasks)
        finally:
            if self._scheduler is not None:
                # No job starts now; those running finish and say so: shut down under
                # them, a job is cancelled and APScheduler logs a traceback for it.
                self._scheduler.pause()
                running = {task for task in self._running if not task.done()}
                if running:
                    await asyncio.wait(running, timeout=JOBS_WAIT)
                self._scheduler.shutdown(wait=False)
            if self.delivery is not None:  # what went out since the last line, recorded
                await self._count_deliveries()
            if self.leadership.held:
                await asyncio.to_thread(self._write_state, stopped_at=datetime.now(UTC))
                await asyncio.to_thread(self.leadership.release)

    async def _mark_stopping(self, stop: asyncio.Event) -> None:
        await stop.wait()
        self._stopping.set()
        self._sweep_wanted.set()

    # --- leading and sweeping ---------------------------------------------------------

    async def _lead(self, stop: asyncio.Event) -> None:
        standing_by = leading = False
        while not stop.is_set():
            if not leading:
                if not await asyncio.to_thread(self.leadership.try_take):
                    if not standing_by:
                        log.info("standing by: another mailer run leads planning owner=%s",
                                 self.owner)
                        standing_by = True
                    await _wait(stop, 1.0)
                    continue
                log.info("leading planning owner=%s campaigns=%d interval=%ss", self.owner,
                         len(self.loaded.campaigns), f"{self.interval:g}")
                standing_by, leading = False, True
                await asyncio.to_thread(self._write_state, started=True)
                self._schedule()
                await self._send_review()  # a fire time missed while down, before sweeping
                self._sweep_wanted.set()
            # APScheduler sets the event; the timeout is a net should it ever not.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._sweep_wanted.wait(), self.interval * 2)
            self._sweep_wanted.clear()
            if stop.is_set():
                break
            if not await asyncio.to_thread(self.leadership.still_held):
                log.warning("lost the planning lock (database session ended): standing by")
                self._unschedule(keep_stages=False)
                leading = False
                continue
            try:
                await asyncio.to_thread(self.sweep)
            except Exception:  # the database may be away for a while: the next sweep retries
                log.exception("sweep failed; the next one retries")

    def sweep(self) -> None:
        """Plan whatever is due now and say what happened (one log line)."""
        loaded = self.loaded
        now = self.clock.now()
        plans = plan_now(self.engine, loaded.specs, loaded.campaigns,
                         settings=loaded.settings, versions=loaded.versions, now=now,
                         stop=self._stopping.is_set)
        self.sweeps += 1
        excluded: Counter[str] = Counter()
        planned = 0
        for plan in plans:
            self.planned[plan.campaign] += plan.planned_count
            planned += plan.planned_count
            excluded.update(plan.counts())
        if self.key and loaded.settings.consent.double_opt_in:
            try:
                queue_confirmations(self.engine, loaded.settings, self.key, now)
            except Exception:  # the database away: the next sweep queues them
                log.exception("double opt-in confirmations not queued; the next sweep retries")
        upcoming = self.next_due(now)
        self._write_state(last_sweep=now, planned=planned, next_due=upcoming)
        per_campaign = " ".join(f"{p.campaign}={p.planned_count}" for p in plans
                                if p.planned_count)
        why_not = " ".join(f"{reason}={n}" for reason, n in sorted(excluded.items()) if n)
        fields = {"event": "sweep", "now": iso_z(now), "planned": planned,
                  "by_campaign": {p.campaign: p.planned_count for p in plans
                                  if p.planned_count},
                  "excluded": {reason: n for reason, n in sorted(excluded.items()) if n},
                  "next_due": iso_z(upcoming.at) if upcoming else None,
                  "next_due_campaign": upcoming.campaign if upcoming else None}
        log.info("sweep now=%s planned=%d%s excluded=%d%s next_due=%s%s", iso_z(now), planned,
                 f" {per_campaign}" if per_campaign else "", sum(excluded.values()),
                 f" {why_not}" if why_not else "",
                 iso_z(upcoming.at) if upcoming else "none",
                 f" next_due_campaign={upcoming.campaign}" if upcoming else "",
                 extra={"fields": fields})

    def next_due(self, now: datetime) -> NextDue | None:
        return find_next_due(self.engine, self.loaded, now)

    def _zones(self) -> list[str]:
        return store_zones(self.engine, self.loaded.settings)

    def _schedule(self) -> None:
        """Jobs from the current workspace: the sweep interval and a wake-up per campaign.
        Coalesced, never skipped for lateness, one at a time: all they do is ask for a
        sweep, and a sweep is right whenever it runs."""
        jobs = self._jobs()
        self._unschedule()
        jobs.add_job(self._job(self._wake), IntervalTrigger(seconds=self.interval),
                     id="sweep", args=["interval"])
        if jobs.get_job(STAGES_JOB) is None:  # at once, then every stages_every
            jobs.add_job(self._job(self._update_stages),
                         IntervalTrigger(seconds=self.stages_every),
                         id=STAGES_JOB, next_run_time=datetime.now(UTC))
        tz = zone(self.loaded.settings.timezone)
        # the console's figures: soon after a start or a reload's new workspace, then hourly
        jobs.add_job(self._refresh_figures, IntervalTrigger(seconds=self.figures_every),
                     id=FIGURES_JOB, next_run_time=datetime.now(UTC) + FIGURES_FIRST_AFTER)
        review = self.loaded.settings.review
        if review is not None:  # at each fire time (_lead catches up before its first sweep)
            jobs.add_job(self._job(self._send_review),
                         _ReviewFire(review.schedule, tz, self._offset), id=REVIEW_JOB)
        zones = self._zones()
        for slug, spec in sorted(self.loaded.campaigns.items()):
            jobs.add_job(self._job(self._wake), _Wakeup(spec, tz, zones, self._offset),
                         id=f"campaign:{slug}", args=[slug])

    def _job(self, work: Callable[..., Awaitable[None]]) -> Callable[..., Awaitable[None]]:
        """WORK as an APScheduler job that a stop waits for (run's finally)."""
        @functools.wraps(work)  # APScheduler names the job after it
        async def job(*args: Any) -> None:
            task = asyncio.current_task()
            if task is not None:
                self._running.add(task)
            try:
                await work(*args)
            finally:
                self._running.discard(task)

        return job

    def _jobs(self) -> AsyncIOScheduler:
        """The one APScheduler of this daemon, started on first use (inside the loop)."""
        if self._scheduler is None:
            self._scheduler = AsyncIOScheduler(timezone=UTC, job_defaults={
                "coalesce": True, "max_instances": 1, "misfire_grace_time": None})
            self._scheduler.start()
        return self._scheduler

    def _unschedule(self, *, keep_stages: bool = True) -> None:
        """Drop the planning jobs; the delivery counts go on (a standby delivers too), and
        the stages update too unless leadership is lost (KEEP_STAGES)."""
        kept = {COUNTS_JOB, STAGES_JOB} if keep_stages else {COUNTS_JOB}
        if self._scheduler is not None:
            for job in self._scheduler.get_jobs():
                if job.id not in kept:
                    job.remove()

    async def _update_stages(self) -> None:
        """The hourly job: the stages and the daily refits, then a look for a review the
        fire time failed to queue (docs/surveys.md, "The monthly review")."""
        await self._stages_and_daily()
        await self._send_review(quiet=True)

    async def _stages_and_daily(self) -> None:
        """`stages update` as of the daemon's clock, one line with its counts, then a
        sweep for the stage_change campaigns. A failure waits for the next run."""
        try:
            found = await asyncio.to_thread(update_stages, self.engine, self.loaded.settings,
                                            self.clock.now())
        except MailerError as err:  # e.g. --now before the latest recording
            log.warning("stages update skipped: %s", err)
            return
        except Exception:  # the database away: the next run records what this one missed
            log.exception("stages update failed; the next one retries")
            return
        moves = " ".join(f"{m['from']}->{m['to']}={m['customers']}" for m in found["moves"])
        log.info("stages update now=%s recorded=%d changed=%d%s", found["now"],
                 found["recorded"], found["changed"], f" {moves}" if moves else "",
                 extra={"fields": {"event": "stages_update", **found}})
        if found["changed"]:
            self._sweep_wanted.set()
        if self._stopping.is_set():  # the refits can take a while: the next start runs them
            return
        await self._refresh_daily()

    async def _refresh_daily(self) -> None:
        """`mailer recommend` and `mailer predict` as of the daemon's clock when the latest
        fit is REFIT_AFTER old (or newer than the clock: it described another moment),
        one line each with what came of it. The fit is recorded last, so a failed one
        has both run again at the next hourly look."""
        now = self.clock.now()
        try:
            fit = await asyncio.to_thread(latest_fit, self.engine)
            if fit is not None and timedelta(0) <= now - fit.now < REFIT_AFTER:
                return
        except Exception:  # the database away: the next hourly look retries
            log.exception("daily recommend and predict skipped; the next hourly look retries")
            return
        try:
            done = await asyncio.to_thread(_recommend, self.engine, now)
            log.info("recommend now=%s customers=%d recommendations=%d", done["now"],
                     done["customers"], done["recommendations"],
                     extra={"fields": {"event": "recommend", **done}})
        except Exception:
            log.exception("recommend failed; it runs again with tomorrow's fit")
        try:
            found = await asyncio.to_thread(_predict, self.engine, self.loaded.settings, now)
            outcome = (f"fitted customers={found['customers']} "
                       f"repeat_buyers={found['repeat_buyers']}"
                       if found["fitted"] else f"not fitted: {found['reason']}")
            log.info("predict now=%s %s", found["now"], outcome,
                     extra={"fields": {"event": "predict", **found}})
        except Exception:  # no fit recorded: the next hourly look runs both again
            log.exception("predict failed; the next hourly look retries")

    async def _refresh_figures(self) -> None:
        """The console's figures (DAEMON_FIGURES: segment sizes and funnels, counts) as of the
        daemon's clock from the loaded workspace, stored with its hash, off the loop; one
        line with what was computed and how long it took. A failure waits for the next
        run (an hour, or the next reload)."""
        if not self.figures:
            return
        loaded = self.loaded
        workspace = Workspace(loaded.settings, loaded.specs, [], [], loaded.campaigns,
                              loaded.versions, loaded.workspace_hash)
        began = time.monotonic()
        try:
            found = await _in_daemon_thread(lambda: refresh_figures(
                self.engine, workspace, self.clock.now().replace(microsecond=0),
                kinds=self.figures, by="daemon"))
        except Exception:  # the database away: the next run stores them
            log.exception("console figures not refreshed; the next run retries")
            return
        seconds = round(time.monotonic() - began, 2)
        said = " ".join(f"{f.kind}={f.seconds:.2f}s" for f in found)
        log.info("console figures refreshed now=%s %s seconds=%.2f", iso_z(found[0].as_of),
                 said, seconds, extra={"fields": {
                     "event": "console_figures", "now": iso_z(found[0].as_of),
                     "figures": {f.kind: f.seconds for f in found}, "seconds": seconds,
                     "workspace": workspace.hash}})

    async def _send_review(self, *, quiet: bool = False) -> None:
        """Queue the previous month's review as of the latest fire time of its schedule
        if that is at most REVIEW_GRACE ago (none yet: nothing), once per month by its
        key. A failure waits for the next hourly look, fire time or start. QUIET (the
        hourly look) says nothing when the review was queued before."""
        loaded = self.loaded
        review = loaded.settings.review
        if review is None:
            return
        now = self.clock.now()
        month = due_review(review.schedule, now, loaded.settings)
        if month is None:  # a first start mid-month: no old review
            return
        try:
            queued = await asyncio.to_thread(
                queue_review, self.engine, self.root, loaded.settings, month, now,
                to=review.send_to, key=scheduled_key(month))
        except Exception:  # the database away: the next fire time or start retries
            log.exception("review of %s not queued; the next hourly look retries",
                          f"{month:%Y-%m}")
            return
        if quiet and not queued:
            return
        said = "queued for" if queued else "already queued, not again, for"
        log.info("review of %s %s %s", f"{month:%Y-%m}", said, review.send_to,
                 extra={"fields": {"event": "review", "month": f"{month:%Y-%m}",
                                   "queued": queued}})

    async def _wake(self, reason: str) -> None:
        log.debug("wake-up: %s", reason)
        self._sweep_wanted.set()

    # --- watching the workspace ----------------------------------------------------------

    async def _watch(self, stop: asyncio.Event, reload: asyncio.Event) -> None:
        seen = self.loaded.fingerprint
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(_either(stop, reload), self.watch_every)
            if stop.is_set():
                break
            asked = reload.is_set()
            reload.clear()
            current = await asyncio.to_thread(fingerprint, self.root)
            if current == seen and not asked:
                continue
            seen = current
            await self.reload()

    async def reload(self) -> bool:
        """Validate and compile the workspace; swap it in if it is valid."""
        try:
            loaded = await asyncio.to_thread(load, self.root)
        except MailerError as err:
            found = problems_of(err)
            for problem in found:
                log.error("workspace problem: %s", problem)
            log.error("workspace change ignored: %d problems; the last good workspace keeps "
                      "running", len(found))
            if self.leadership.held:
                await asyncio.to_thread(self._write_state, problems=len(found))
            return False
        except Exception:  # a fault of ours in loading must not end the running daemon
            log.exception("workspace change ignored: it could not be loaded; the last good "
                          "workspace keeps running")
            if self.leadership.held:
                await asyncio.to_thread(self._write_state, problems=1)
            return False
        before, after = set(self.loaded.campaigns), set(loaded.campaigns)
        changed = sorted(s for s in before & after
                         if self.loaded.versions[s] != loaded.versions[s]
                         or self.loaded.campaigns[s] != loaded.campaigns[s])
        if loaded.settings.delivery != self.loaded.settings.delivery:
            log.warning("delivery settings changed: they take effect at the next start")
        self.loaded = loaded
        log.info("workspace reloaded campaigns=%d added=%s removed=%s changed=%s",
                 len(after), ",".join(sorted(after - before)) or "-",
                 ",".join(sorted(before - after)) or "-", ",".join(changed) or "-")
        if self.leadership.held:
            await asyncio.to_thread(self._write_state, problems=0)
            self._schedule()
            self._sweep_wanted.set()
        return True

    # --- delivering -------------------------------------------------------------------------

    async def _deliver(self, delivery: SendingLoop, stop: asyncio.Event) -> None:
        """The delivery loop; a failure (the database away) restarts it after a pause."""
        while not stop.is_set():
            try:
                await delivery.run(stop, until_idle=False)
            except Exception:
                log.exception("delivery failed; starting again in 5 s")
                await _wait(stop, 5.0)

    async def _count_deliveries(self) -> None:
        """One line with what this daemon's sender recorded since the last such line and
        how many rows are queued now; only when either changed, so an idle daemon stays
        quiet (its sweeps say it is alive)."""
        if self.delivery is None:
            return
        try:
            queued = await asyncio.to_thread(queued_rows, self.engine)
        except Exception:  # the database away: the next line covers this interval too
            log.warning("delivery counts skipped: the database did not answer")
            return
        outcomes: Counter[str] = Counter()
        for (_, status), n in self.delivery.tally.items():
            outcomes[status] += n
        since = outcomes - self._counted
        # At least a second: the last line at a stop may follow the one before closely.
        seconds = max(1, round(time.monotonic() - self._counted_at))
        if not since and queued == (self._queued_said or 0):
            return
        self._counted, self._counted_at, self._queued_said = outcomes, time.monotonic(), queued
        said = [f"{since[state]} {state}" for state in COUNTED]
        said += [f"{since[state]} {state}" for state in ALSO_COUNTED if since[state]]
        fields: dict[str, Any] = {"event": "delivery_counts", "seconds": seconds}
        fields.update({str(state): since[state] for state in (*COUNTED, *ALSO_COUNTED)})
        fields["queued"] = queued
        log.info("deliveries in the last %s: %s; %d queued", _span(seconds), ", ".join(said),
                 queued, extra={"fields": fields})

    # --- the operator's view -----------------------------------------------------------------

    def _write_state(self, *, started: bool = False, last_sweep: datetime | None = None,
                     planned: int | None = None, next_due: NextDue | None = None,
                     problems: int | None = None, stopped_at: datetime | None = None) -> None:
        # The heartbeat is the wall time of the last sweep, start or stop (not of a
        # reload), so `status` can say how long ago the last sweep was.
        values: dict[str, Any] = {"owner": self.owner}
        if started or last_sweep is not None or stopped_at is not None:
            values["heartbeat_at"] = datetime.now(UTC)
        if started:
            values.update(started_at=self._started, stopped_at=None, last_planned=0,
                          workspace_problems=0, last_sweep_at=None, next_due_at=None,
                          next_due_campaign=None)
        if last_sweep is not None:
            values.update(last_sweep_at=last_sweep, last_planned=planned or 0,
                          next_due_at=next_due.at if next_due else None,
                          next_due_campaign=next_due.campaign if next_due else None)
        if problems is not None:
            values["workspace_problems"] = problems
        if stopped_at is not None:
            values["stopped_at"] = stopped_at
        write_state(self.engine, values, started=self._started)


# The purchase models pull in scipy (~0.8 s of imports), which `run --once` and a daemon's
# start never need: imported on first use, in the worker thread, never on the event loop
# (where it held up the other jobs).
def _predict(engine: Engine, settings: Settings, now: datetime) -> dict[str, Any]:
    from mailer.app.predict import predict

    return predict(engine, settings, now)


def _recommend(engine: Engine, now: datetime) -> dict[str, Any]:
    from mailer.app.recommend import recommend

    return recommend(engine, now)


def find_next_due(engine: Engine, loaded: Loaded, now: datetime) -> NextDue | None:
    """The next instant something may go out and its campaign: a campaign's next
    wake-up, or a queued or deferred row's release (quiet hours, retries)."""
    tz = zone(loaded.settings.timezone)
    zones = store_zones(engine, loaded.settings)
    found = [NextDue(moment, slug) for slug, spec in loaded.campaigns.items()
             if (moment := next_wakeup(spec, now, tz, zones)) is not None]
    release = next_release_of(engine, now)
    if release is not None:
        found.append(NextDue(*release))
    return min(found, default=None)


def next_due(engine: Engine, loaded: Loaded, now: datetime) -> datetime | None:
    """The time of find_next_due alone (what `run --once` writes today)."""
    found = find_next_due(engine, loaded, now)
    return None if found is None else found.at


def store_zones(engine: Engine, settings: Settings) -> list[str]:
    """The time zones of the store's customers and the workspace's own."""
    return sorted(time_zones(engine) | {settings.timezone})


def _span(seconds: int) -> str:
    """'minute', '5 seconds', '2 minutes': how long a counts line covers."""
    if seconds == 60:
        return "minute"
    if seconds < 120:
        return "second" if seconds == 1 else f"{seconds} seconds"
    return f"{round(seconds / 60)} minutes"


async def _in_daemon_thread(work: Callable[[], T]) -> T:
    """WORK's result, computed in a daemon thread of its own: unlike asyncio.to_thread's
    executor, which a loop's end waits for, a stop never waits for minutes of forecast
    (its figures are stored in one transaction at the end, or not at all)."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[T] = loop.create_future()

    def settle(result: T | None, error: BaseException | None) -> None:
        if done.done():  # cancelled: the daemon stopped meanwhile
            return
        if error is not None:
            done.set_exception(error)
        else:
            done.set_result(cast(T, result))

    def run() -> None:
        try:
            result, error = work(), None
        except Exception as err:
            result, error = None, err
        with contextlib.suppress(RuntimeError):  # the loop closed: nobody waits
            loop.call_soon_threadsafe(settle, result, error)

    threading.Thread(target=run, name="mailer-figures", daemon=True).start()
    return await done


async def _wait(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)


async def _either(first: asyncio.Event, second: asyncio.Event) -> None:
    waiters = [asyncio.ensure_future(first.wait()), asyncio.ensure_future(second.wait())]
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()

