"""What each console page shows, as the JSON document its `?format=json` answers: plain
dicts from the application layer (mailer.app), built in the console's database threads.
The HTML pages (mailer.web.console.pages) render these same documents, so a page and its
JSON never disagree. Times are ISO 8601 UTC here; the pages show them in store.locale.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from mailer.config.settings import Settings
from mailer.core.clock import Clock, iso_z
from mailer.core.errors import NotFoundError
from mailer.store.db import Engine
from mailer.web.console.workspace import Parsed, WorkspaceCache

log = logging.getLogger("mailer.console")
SEARCH_LIMIT = 50  # customers a search lists
SEARCH_LENGTH = 100  # characters of a search: an id, an address or a name


RETRY_AFTER = 60.0  # seconds: a failed background computation is tried again no sooner


@dataclass
class Store:
    """The workspace and database the console reads, and the figures it keeps."""

    root: Path
    settings: Settings
    engine: Engine
    clock: Clock
    # figures that cost more than a query: name -> (computed at, document)
    computed: dict[str, tuple[datetime, Any]] = field(default_factory=dict)
    computing: dict[str, datetime] = field(default_factory=dict)  # name -> since when
    born: dict[str, float] = field(default_factory=dict)  # name -> monotonic time computed
    failed: dict[str, float] = field(default_factory=dict)  # name -> monotonic, last failure
    # first computations in flight (name -> its result) and the requests waiting for one
    _first: dict[str, Future[tuple[datetime, Any]]] = field(default_factory=dict)
    _waiting: dict[str, int] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    workspace: WorkspaceCache = field(init=False)

    def __post_init__(self) -> None:
        self.workspace = WorkspaceCache(self.root)

    def parsed(self) -> Parsed:
        """The workspace's segments and campaigns, parsed once per change of its files."""
        return self.workspace.current()

    def now(self) -> datetime:
        return self.clock.now().replace(microsecond=0)

    def waiting(self, name: str) -> int:
        """How many requests wait for the first computation of NAME in flight."""
        with self._lock:
            return self._waiting.get(name, 0)

    def kept(self, name: str, compute: Callable[[], Any], *, fresh: bool = False
             ) -> tuple[datetime, Any]:
        """The figure NAME as last computed (COMPUTE once, or again when FRESH), with the
        time it was computed: one computation at a time."""
        with self._lock:
            if fresh or name not in self.computed:
                self.computed[name] = (self.now(), compute())
                self.born[name] = time.monotonic()
            return self.computed[name]

    def kept_fresh(self, name: str, compute: Callable[[], Any], *, max_age: float
                   ) -> tuple[datetime, Any]:
        """The figure NAME as last computed, with its time: computed now the first time
        (the caller waits, once: a request meanwhile, warm_reports' or a page's, waits
        for that same computation and gets its result or its error), and again in a
        thread of its own once older than MAX_AGE seconds (the last one returned
        meanwhile; one that failed is logged and tried again no sooner than MAX_AGE or
        RETRY_AFTER, whichever is longer)."""
        with self._lock:
            found = self.computed.get(name)
            old = time.monotonic() - self.born.get(name, 0.0) > max_age
            flight = self._first.get(name) if found is None else None
            mine = found is None and flight is None
            if mine:
                flight = self._first[name] = Future()
            elif flight is not None:
                self._waiting[name] = self._waiting.get(name, 0) + 1
        if flight is not None and not mine:
            try:
                return flight.result()
            finally:
                with self._lock:
                    self._waiting[name] -= 1
        if flight is not None:
            try:
                value = compute()
                with self._lock:
                    found = self.computed[name] = (self.now(), value)
                    self.born[name] = time.monotonic()
                flight.set_result(found)
                return found
            except BaseException as err:
                flight.set_exception(err)
                raise
            finally:
                with self._lock:
                    self._first.pop(name, None)
        assert found is not None
        if old:
            self.kept_later(name, compute, fresh=True, retry_after=max(max_age, RETRY_AFTER))
        return found

    def kept_later(self, name: str, compute: Callable[[], Any], *, fresh: bool = False,
                   retry_after: float | None = None) -> tuple[datetime, Any] | None:
        """The figure NAME as last computed, or None while it is computed for the first
        time in a thread of its own (started here when it is not yet, or when FRESH): a
        page never waits for a simulation. A computation that fails is logged; with
        RETRY_AFTER (seconds), none is started again sooner after a failure (a page
        viewed every second would otherwise fail, and log, every second)."""
        with self._lock:
            found = self.computed.get(name)
            if (found is not None and not fresh) or name in self.computing:
                return found
            failed = self.failed.get(name)
            if (retry_after is not None and failed is not None
                    and time.monotonic() - failed < retry_after):
                return found
            self.computing[name] = self.now()

        def work() -> None:
            try:
                value = compute()
            except Exception:
                with self._lock:
                    self.failed[name] = time.monotonic()
                again = f"; tried again in {retry_after:.0f} s at the earliest" \
                    if retry_after is not None else ""
                log.warning("%s not computed%s", name, again, exc_info=True,
                            extra={"fields": {"event": "console_figure_failed",
                                              "figure": name}})
            else:
                with self._lock:
                    self.computed[name] = (self.now(), value)
                    self.born[name] = time.monotonic()
                    self.failed.pop(name, None)
            finally:
                with self._lock:
                    self.computing.pop(name, None)

        threading.Thread(target=work, name=f"mailer-console-{name}", daemon=True).start()
        return found


def _campaigns_and_segments(store: Store) -> tuple[dict[str, Any], dict[str, Any]]:
    parsed = store.parsed()
    return parsed.specs, parsed.campaigns


def campaigns(store: Store) -> dict[str, Any]:
    """The `mailer campaigns --json` document at the console's now; the audiences are the
    segment sizes the console keeps (`segments`), null until they are first computed;
    sent, opened, clicked and unsubscribed are the counts it keeps (`counts`), with their
    time (and whether they are being counted again). States, next due times, last
    planned and pauses are read live."""
    from mailer.app.campaigns import Counts, overview

    now = store.now()
    sizes = segments(store)
    audiences = {s["segment"]: s["count"] for s in sizes.get("segments", [])}
    counted = counts(store)
    parsed = store.parsed()
    found = overview(store.root, store.settings, store.engine, now, audiences=audiences,
                     loaded=(parsed.specs, parsed.campaigns, parsed.problems),
                     zones=sizes.get("zones"),
                     counts={slug: Counts(**c) for slug, c in counted["campaigns"].items()})
    return {"now": iso_z(now), "audiences_at": sizes["computed_at"],
            "audiences_stale": sizes.get("stale", False),
            "counts_at": counted["computed_at"], "counts_by": counted["computed_by"],
            "counts_in": counted["computed_in"], "counts_computing": counted["computing"],
            "campaigns": [line.as_json() for line in found]}


COUNTS_EVERY = 60.0  # seconds (wall time): older stored counts are counted again


def counts(store: Store) -> dict[str, Any]:
    """The campaigns' counts (the figure `counts`) as last stored, by anyone; older than
    COUNTS_EVERY, counted again in a thread of their own (this page shows the stored
    ones meanwhile). None stored yet: counted and stored now, once (a page needs them)."""
    from mailer.app.console.figures import refresh

    found = figure(store, "counts", max_age=COUNTS_EVERY)
    if found["computed_at"] is None:
        refresh(store.engine, _workspace(store, "counts"), store.now(), kinds=["counts"],
                by="console")
        found = figure(store, "counts")
    return found


REPORT_EVERY = 60.0  # seconds (wall time): an older kept report is computed again


def report(store: Store, campaign: str) -> tuple[dict[str, Any], str | None]:
    """The `mailer report --json` document of CAMPAIGN plus its variants' subjects, the
    timeline of its sends and its pause; the rates chart (inline SVG, None without
    variants). The report reads every row and event of the campaign (seconds for a
    campaign of millions of mails) and the chart takes a tenth of a second, so both are
    kept per campaign with their time (`computed_at`) and computed again in the
    background once REPORT_EVERY old; the pause is read live."""
    at, (document, chart) = store.kept_fresh(
        f"report:{campaign}", lambda: _report(store, campaign), max_age=REPORT_EVERY)
    return ({**document, "computed_at": iso_z(at), "paused": pause(store, campaign)},
            chart)


def warm_reports(store: Store) -> None:
    """Every campaign's report computed once, one after the other (in a thread of its
    own at the console's start): a report reads every row and event of its campaign,
    seconds on a big store, and a first view should find it kept."""
    for campaign in sorted(store.parsed().campaigns):
        try:
            report(store, campaign)
        except Exception:  # the page computes it again, and shows what went wrong
            log.warning("report of %s not computed ahead", campaign, exc_info=True)


def _report(store: Store, campaign: str) -> tuple[dict[str, Any], str | None]:
    from mailer.app.charts import inline_svg, report_chart
    from mailer.app.report import report_of
    from mailer.segments.runner import memberships, scope_for
    from mailer.store.ledger import sent_by_day

    specs, loaded = _campaigns_and_segments(store)
    known = sorted(path.stem for path in (store.root / "campaigns").glob("*.y*ml"))

    def segments_of(ids: list[int]) -> dict[int, set[str]]:
        scope = scope_for(store.settings, store.now(), store.engine)
        return memberships(store.engine, specs, sorted(specs), scope, ids)

    found = report_of(store.engine, campaign, known, segments_of)
    spec = loaded.get(campaign)
    subjects = dict(enumerate(spec.subject, start=1)) if spec is not None else {}
    with store.engine.connect() as conn:
        timeline = sent_by_day(conn, campaign)
    document = found.as_json()
    document["name"] = spec.name if spec is not None else None
    for variant in document["variants"]:
        variant["subject"] = subjects.get(variant["variant"])
    document["timeline"] = [{"day": day, "sent": n} for day, n in timeline]
    chart = (inline_svg(lambda path: report_chart(found, subjects, path),
                        f"{campaign}: rates by subject variant") if found.variants else None)
    return document, chart


def pause(store: Store, campaign: str) -> dict[str, Any] | None:
    """CAMPAIGN's pause (since when, by whom, why), None while it is not paused."""
    from mailer.store.operator.pauses import pause_of

    with store.engine.connect() as conn:
        found = pause_of(conn, campaign)
    return None if found is None else {"paused_at": iso_z(found.at), "paused_by": found.by,
                                        "reason": found.reason}


AUDIT_LIMIT = 200  # audit rows the audit page lists


def audit(store: Store) -> dict[str, Any]:
    """The newest operator actions, newest first (mailer.store.operator.audit)."""
    from mailer.store.operator.audit import entries

    with store.engine.connect() as conn:
        found = entries(conn, limit=AUDIT_LIMIT)
    return {"limit": AUDIT_LIMIT, "entries": [entry.as_json() for entry in found]}


def search(store: Store, text: str) -> dict[str, Any]:
    """Customers whose id, email or name begins with TEXT (any case)."""
    from mailer.store.customers import search as find

    text = text.strip()[:SEARCH_LENGTH]
    with store.engine.connect() as conn:
        found = find(conn, text, limit=SEARCH_LIMIT) if text else []
    return {"q": text, "limit": SEARCH_LIMIT, "customers": [
        {"id": f.store_id, "email": f.email, "first_name": f.first_name,
         "last_name": f.last_name, "consent": f.consent} for f in found]}


def customer(store: Store, who: str) -> dict[str, Any]:
    """The `mailer customer --json` card of WHO (a store id, or an address with @)."""
    from mailer.app.card import card

    parsed = store.parsed()
    found: dict[str, Any] = card(store.engine, store.root, store.settings, store.now(), who,
                                 loaded=(parsed.specs, parsed.segment_problems,
                                         parsed.campaigns)).as_json()
    return found


def _workspace(store: Store, kind: str = "forecast") -> Any:
    """The console's workspace as the figure KIND is computed from it
    (mailer.app.console.figures); the campaigns' compiled versions for the forecast only."""
    from mailer.app.console.figures import Workspace
    from mailer.app.send import compile_versions

    parsed = store.parsed()
    errors = [str(p) for p in parsed.problems if not p.warning]
    valid = not errors
    return Workspace(store.settings, parsed.specs,
                     [str(p) for p in parsed.segment_problems if not p.warning], errors,
                     parsed.campaigns if valid else None,
                     compile_versions(store.root, parsed.campaigns)
                     if valid and kind == "forecast" else None,
                     parsed.hash)


# What the console computes itself when none is stored: the segment sizes (the campaigns
# page's audiences). The forecast, minutes of simulation on a big store, only when asked
# (the page's button): it would hold up every page of this process meanwhile.
COMPUTED_UNASKED = ("segments",)


def figure(store: Store, kind: str, *, fresh: bool = False, max_age: float | None = None
           ) -> dict[str, Any]:
    """The figure KIND (mailer.app.console.figures) with its time: as last stored by `mailer
    console refresh`, the daemon or this console, `stale` once the workspace files differ
    from those it was computed from. FRESH (asked for again), stored more than MAX_AGE
    seconds ago, or none stored and KIND in COMPUTED_UNASKED: the console computes it
    in a thread of its own and stores it; a page never waits for it. The age is on the
    clock the figure's time was stamped with (`computed_at`: the wall clock, whatever
    --now this console, the daemon or `mailer console refresh` run with). A computation
    not asked for that failed is tried again RETRY_AFTER later at the earliest."""
    from mailer.app.console.figures import refresh
    from mailer.store.insight.figures import Figure, age, load

    with store.engine.connect() as conn:
        stored = load(conn, kind)
    seen = stored or store.computed.get(kind, (None, None))[1]
    old = seen is not None and max_age is not None and age(seen) > max_age

    def compute() -> Figure:
        return refresh(store.engine, _workspace(store, kind), store.now(), kinds=[kind],
                       by="console")[0]

    kept = None
    if fresh or old or (stored is None and (kind in COMPUTED_UNASKED
                                            or kind in store.computed)):
        found = store.kept_later(kind, compute, fresh=fresh or old,
                                 retry_after=None if fresh else RETRY_AFTER)
        kept = found[1] if found is not None else None
    shown: Figure | None = stored or kept
    since = store.computing.get(kind)
    state = {"computing": since is not None,
             "computing_since": iso_z(since) if since is not None else None}
    if shown is None:
        return {"computed_at": None, **state}
    return {"computed_at": iso_z(shown.computed_at), **state,
            "computed_by": shown.computed_by, "computed_in": shown.seconds,
            "stale": shown.workspace != store.parsed().hash, **shown.document}


def segments(store: Store, *, fresh: bool = False) -> dict[str, Any]:
    """Every segment with its size and its funnel (customers left after each condition):
    whole-store counts, computed ahead (`figure`) and shown with their time."""
    return figure(store, "segments", fresh=fresh)


@dataclass(frozen=True)
class ForecastView:
    """What the Forecast page draws besides the JSON document: the chart drawn when the
    forecast was computed, the By day table, the campaigns' topics."""

    chart: str
    days: list[dict[str, Any]]
    topics: dict[str, str]


def forecast(store: Store, *, fresh: bool = False) -> tuple[dict[str, Any], ForecastView | None]:
    """The next 30 days simulated (as `mailer forecast --days 30 --json`), computed ahead
    (`figure`) and shown with their time; the view for the page (None while the first
    computation runs: the document says `computing`)."""
    from mailer.app.console.figures import forecast_days

    document = figure(store, "forecast", fresh=fresh)
    chart = document.pop("chart_svg", None)
    if document["computed_at"] is None:
        return document, None
    topics = document.pop("campaign_topics", {})
    return document, ForecastView(chart or "", forecast_days(document), topics)


def surveys(store: Store) -> dict[str, Any]:
    """Every survey of the workspace as `mailer responses --json` has it, each comment
    with the scores its reader gave in the same answers."""
    from mailer.app.surveys.responses import survey_responses
    from mailer.config.workspace import load_surveys
    from mailer.store.insight.responses import comment_scores

    found, _ = load_surveys(store.root)
    documents = []
    for name in sorted(found):
        document = survey_responses(store.engine, store.root, store.settings, name)
        with store.engine.connect() as conn:
            scores = comment_scores(conn, name, [(c["customer"], c["at"])
                                                 for c in document["comments"]])
        for comment in document["comments"]:
            comment["scores"] = scores.get((comment["customer"], comment["at"]), {})
        documents.append(document)
    return {"surveys": documents}


def unhappy(scores: dict[str, float], kinds: dict[str, str]) -> bool:
    """Whether a reader's scores say unhappy: a rating of 1 or 2 of 5, or an NPS answer
    of 0 to 6 (a detractor)."""
    for question, value in scores.items():
        kind = kinds.get(question)
        if (kind == "nps" and value <= 6) or (kind != "nps" and value <= 2):
            return True
    return False


def preview_campaigns(store: Store) -> list[str]:
    _, loaded = _campaigns_and_segments(store)
    return sorted(loaded)


PREVIEW_SAMPLES = 3


def preview(store: Store, campaign: str) -> tuple[datetime, list[Any]]:
    """Today's sample mails of CAMPAIGN (as `mailer preview`), rendered once a day."""
    from mailer.app.preview import choose_mailable, render_samples
    from mailer.config.workspace import load_valid_workspace
    from mailer.mail.version import compile_version
    from mailer.segments.runner import scope_for

    if campaign not in preview_campaigns(store):
        raise NotFoundError(f"no campaign {campaign!r}")
    today = store.now().date().isoformat()

    def compute() -> list[Any]:
        specs, loaded = load_valid_workspace(store.root, campaign)
        moment = store.now()
        scope = scope_for(store.settings, moment, store.engine)
        version = compile_version(campaign, loaded[campaign], store.root / "templates")
        chosen = choose_mailable(store.engine, specs, campaign, version.spec, scope,
                                 store.settings, count=PREVIEW_SAMPLES, customer=None)
        samples: list[Any] = render_samples(
            store.engine, version, specs, settings=store.settings, scope=scope,
            now=moment, ids=chosen.ids, judged=chosen.verdicts)
        return samples

    at, samples = store.kept(f"preview:{campaign}:{today}", compute)
    return at, samples


def preview_json(at: datetime, campaign: str, samples: list[Any]) -> dict[str, Any]:
    return {"campaign": campaign, "rendered_at": iso_z(at), "samples": [
        {"id": s.customer, "email": s.email, "intro": s.intro, "variant": s.variant + 1,
         "subject": s.subject, "mailable": s.mailable, "reason": s.reason,
         "send_after": iso_z(s.send_after) if s.send_after else None} for s in samples]}
