"""`mailer report CAMPAIGN`: where every mail of a campaign stands."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import click

from mailer.cli.common import (
    chart_option,
    check_chart,
    emit_json,
    print_table,
    session,
    workspace_json,
)

if TYPE_CHECKING:
    from mailer.app.report import CampaignReport
    from mailer.cli.common import Session


@click.command()
@click.argument("campaign")
@chart_option
@workspace_json
def report(ctx: click.Context, campaign: str, chart: Path | None, workspace: str | None,
           as_json: bool) -> None:
    """Planned mails by state, exclusions by reason (summed per planning run), subject
    variants and the winner, opens, clicks, unsubscribes, ratings and their comments."""
    from mailer.app.report import report_of

    check_chart(chart)
    run = session(ctx, workspace)
    known = sorted(path.stem for path in (run.root / "campaigns").glob("*.yaml"))
    found = report_of(run.engine, campaign, known, _segments_of(run))
    if chart is not None:
        from mailer.app.charts import report_chart

        report_chart(found, _subjects(run, campaign), chart)
    if as_json:
        emit_json(found.as_json())
        return
    rows: list[tuple[str, object]] = [("planned", found.planned)]
    rows += list(found.states.items())
    rows += [(f"excluded: {reason}", n) for reason, n in found.excluded.items()]
    rows += [(f"variant {v.variant}: sent", f"{v.sent} of {v.planned} "
              f"({v.opened} opened, {v.clicked} clicked)") for v in found.variants]
    if found.winner is not None:
        best = found.winner
        rows.append(("winner by click rate", f"variant {best.variant} "
                     f"({100 * best.click_rate:.1f} %, confidence "
                     f"{100 * best.confidence:.0f} % over variant {best.runner_up})"))
    rows += [("opened mails", f"{found.opens.mails} ({found.opens.total} opens)"),
             ("clicked mails", f"{found.clicks.mails} ({found.clicks.total} clicks)"),
             ("machine opens", f"{found.machine_opens.mails} mails "
                               f"({found.machine_opens.total} opens)"),
             ("machine clicks", f"{found.machine_clicks.mails} mails "
                                f"({found.machine_clicks.total} clicks)"),
             ("unsubscribes", found.unsubscribes)]
    rated = found.ratings
    if rated.count:
        rows.append(("ratings", f"{rated.count}, mean {rated.mean}, CSAT {rated.csat} %"))
    print_table(("", campaign), rows, title=f"report of {campaign}")
    if found.excluded:
        click.echo("excluded: summed per planning run (a customer held back by 3 runs "
                   "counts 3 times)")
    if found.comments:
        _print_comments(campaign, found)
    if chart is not None:
        click.echo(f"chart: {chart}")


COMMENTS_SHOWN = 10  # the newest comments the text shows; --json has up to app.report.COMMENTS


def _print_comments(campaign: str, found: CampaignReport) -> None:
    from mailer.app.report import COMMENTS
    from mailer.core.clock import iso_z

    print_table(("rated at", "customer", "score", "comment"),
                ((iso_z(c.at), c.customer or "-", c.score, c.text)
                 for c in found.comments[:COMMENTS_SHOWN]),
                title="latest comments, newest first")
    if len(found.comments) > COMMENTS_SHOWN:
        click.echo(f"the {COMMENTS_SHOWN} newest comments shown; `mailer report {campaign} "
                   f"--json` lists the {COMMENTS} newest")


def _segments_of(run: Session) -> Callable[[list[int]], dict[int, set[str]]]:
    """Which of the workspace's segments customers are in now (ratings by segment)."""
    from mailer.config.workspace import load_segments
    from mailer.segments.runner import memberships, scope_for

    def segments_of(ids: list[int]) -> dict[int, set[str]]:
        specs, _ = load_segments(run.root)
        scope = scope_for(run.workspace.settings, run.clock.now(), run.engine)
        return memberships(run.engine, specs, sorted(specs), scope, ids)
    return segments_of


def _subjects(run: Session, campaign: str) -> dict[int, str]:
    """Each subject variant's text (numbered from 1) as the campaign file has it; none for
    a campaign whose file is gone or does not load."""
    from mailer.config.workspace import load_campaigns, load_segments

    specs, _ = load_segments(run.root)
    campaigns, _ = load_campaigns(run.root, set(specs))
    spec = campaigns.get(campaign)
    return dict(enumerate(spec.subject, start=1)) if spec is not None else {}
