"""Figures that cost more than a query (issue 23 part 3; docs/console.md, "Computed
figures"): every segment's size and funnel, the campaigns' sent, opened, clicked and
unsubscribed counts (whole-ledger aggregates), and the next 30 days simulated. Computed by
`mailer console refresh`, by the daemon (hourly and after each workspace reload) or, when
none is stored, by the console itself; stored in `console_figures` with the hash of the
workspace files they came from, so the console shows them with their time and marks
them stale once the files differ."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from mailer.config.campaign import Campaign
from mailer.config.conditions import SegmentSpec
from mailer.config.files import content_hash
from mailer.config.settings import Settings
from mailer.core.clock import iso_z
from mailer.store.db import Engine
from mailer.store.insight.figures import KINDS, Figure, save, stamp

FORECAST_DAYS = 30
CHART_LABEL = "Mails per day by campaign and topic"


@dataclass(frozen=True)
class Workspace:
    """What the figures are computed from: the segments (with the problems of their
    files), the campaigns and their compiled versions, and the files' hash."""

    settings: Settings
    specs: dict[str, SegmentSpec]
    problems: list[str]  # the segment files' errors (the Segments page lists them)
    errors: list[str]  # every error of the workspace: none, or no forecast
    campaigns: dict[str, Campaign] | None  # None: the workspace has problems
    versions: dict[str, dict[str, Any]] | None
    hash: str


def read_workspace(root: Path, settings: Settings) -> Workspace:
    """The workspace at ROOT; its hash is taken first, so a change made while it is
    read leaves the figures stale rather than wrongly fresh."""
    from mailer.app.send import compile_versions
    from mailer.config.workspace import load_campaigns, load_segments

    hashed = content_hash(root)
    specs, problems = load_segments(root)
    campaigns, campaign_problems = load_campaigns(root, set(specs))
    errors = [str(p) for p in problems + campaign_problems if not p.warning]
    valid = not errors
    return Workspace(settings, specs, [str(p) for p in problems if not p.warning], errors,
                     campaigns if valid else None,
                     compile_versions(root, campaigns) if valid else None, hashed)


def segments_document(engine: Engine, workspace: Workspace, now: datetime) -> dict[str, Any]:
    """Every segment's description, size and funnel (customers left after each
    condition) as of NOW, as the console's Segments page shows them, and the store's
    customers' time zones (the campaigns page's next due times: a scan it saves)."""
    from mailer.segments.runner import count, funnel, scope_for

    specs = workspace.specs
    scope = scope_for(workspace.settings, now, engine)
    rows = []
    for name, spec in specs.items():
        steps = funnel(engine, specs, name, scope)
        rows.append({"segment": name, "description": spec.description,
                     "count": count(engine, specs, name, scope),
                     "funnel": [{"condition": s.condition, "line": s.line,
                                 "remaining": s.remaining} for s in steps]})
    from mailer.store.customers import time_zones

    return {"as_of": iso_z(now), "segments": rows, "problems": workspace.problems,
            "zones": sorted(time_zones(engine))}


def counts_document(engine: Engine, workspace: Workspace, now: datetime) -> dict[str, Any]:
    """Each campaign's mails sent, mails opened and clicked (at least once) and
    unsubscribes through its links, as `mailer campaigns` counts them: four aggregates
    over the whole ledger and its events, read in one transaction (one state of the
    store). Campaigns with none are left out. The workspace plays no part."""
    from mailer.app.campaigns import campaign_counts

    with engine.connect() as conn, conn.begin():
        found = campaign_counts(conn)
    return {"as_of": iso_z(now), "campaigns": {
        slug: {"sent": c.sent, "opened": c.opened, "clicked": c.clicked,
               "unsubscribed": c.unsubscribed} for slug, c in sorted(found.items())}}


def forecast_document(engine: Engine, workspace: Workspace, now: datetime) -> dict[str, Any]:
    """The next FORECAST_DAYS days simulated from NOW's hour (as `mailer forecast --days 30
    --json`), with the campaigns' topics and the chart as an inline `<svg>` (`chart_svg`:
    drawn here, so a page that shows it draws nothing)."""
    from mailer.app.charts import forecast_chart, inline_svg
    from mailer.app.forecast import run_forecast
    from mailer.core.errors import UserError

    if workspace.campaigns is None or workspace.versions is None:
        raise UserError("the forecast needs a valid workspace: " + "; ".join(workspace.errors))
    start = now.replace(minute=0, second=0, microsecond=0)
    began = time.monotonic()
    result = run_forecast(engine, workspace.specs, workspace.campaigns,
                          settings=workspace.settings, start=start, days=FORECAST_DAYS,
                          versions=workspace.versions)
    document = {"from": iso_z(start), **result.as_json(sorted(workspace.campaigns)),
                "seconds": round(time.monotonic() - began, 2),
                "campaign_topics": dict(sorted(result.topics.items()))}
    document["chart_svg"] = inline_svg(lambda path: forecast_chart(result, path), CHART_LABEL)
    return document


def forecast_days(document: dict[str, Any]) -> list[dict[str, Any]]:
    """The By day table of a forecast document: each day's mails, by campaign and by
    topic, the zeros left out."""
    return [{"day": day["date"], "mails": sum(day["campaigns"].values()),
             "by_campaign": {s: n for s, n in sorted(day["campaigns"].items()) if n},
             "by_topic": {t: n for t, n in day["topics"].items() if n}}
            for day in document.get("days", [])]


COMPUTERS: dict[str, Callable[[Engine, Workspace, datetime], dict[str, Any]]] = {
    "segments": segments_document, "counts": counts_document, "forecast": forecast_document}


def compute(engine: Engine, workspace: Workspace, now: datetime, kind: str, *,
            by: str) -> Figure:
    """The figure KIND as of NOW (not stored)."""
    began = time.monotonic()
    document = COMPUTERS[kind](engine, workspace, now)
    return Figure(kind, now, stamp(),
                  round(time.monotonic() - began, 2), workspace.hash, by, document)


def refresh(engine: Engine, workspace: Workspace, now: datetime, *,
            kinds: Iterable[str] = KINDS, by: str) -> list[Figure]:
    """Compute every figure of KINDS as of NOW, then store them in one transaction: a
    failure stores none."""
    from mailer.core.errors import UserError

    kinds = list(kinds)
    if "forecast" in kinds and workspace.campaigns is None:
        raise UserError("the forecast needs a valid workspace; its problems: "
                        + "; ".join(workspace.errors) + " (mailer validate)")
    figures = [compute(engine, workspace, now, kind, by=by) for kind in kinds]
    with engine.begin() as conn:
        for figure in figures:
            save(conn, figure)
    return figures


def summary(figure: Figure) -> dict[str, Any]:
    """What `mailer console refresh` says of a stored figure."""
    said: dict[str, Any] = {"kind": figure.kind, "as_of": iso_z(figure.as_of),
                            "computed_at": iso_z(figure.computed_at),
                            "seconds": figure.seconds, "workspace": figure.workspace}
    if figure.kind == "segments":
        said["segments"] = len(figure.document["segments"])
    elif figure.kind == "counts":
        said["campaigns"] = len(figure.document["campaigns"])
    else:
        said["days"] = len(figure.document["days"])
        said["mails"] = sum(sum(Counter(d["campaigns"]).values())
                            for d in figure.document["days"])
    return said
