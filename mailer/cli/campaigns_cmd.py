"""`mailer campaigns`: every campaign with its state, next due time and counts."""

from __future__ import annotations

from datetime import datetime

import click

from mailer.cli.common import emit_json, print_table, session, workspace_json_now


@click.command()
@workspace_json_now
def campaigns(ctx: click.Context, workspace: str | None, as_json: bool,
              now: str | None) -> None:
    """Every campaign of the workspace at --now: draft, scheduled, running or ended,
    when it is next due, when it was last planned, its audience and what its mails did."""
    from mailer.app.campaigns import overview
    from mailer.core.clock import iso_z

    run = session(ctx, workspace, now)
    moment = run.clock.now().replace(microsecond=0)
    found = overview(run.root, run.workspace.settings, run.engine, moment)
    if as_json:
        emit_json({"campaigns": [line.as_json() for line in found]})
        return

    def when(at: datetime | None) -> str:
        return "-" if at is None else at.strftime("%Y-%m-%d %H:%MZ")

    print_table(("campaign", "name", "trigger", "state", "next due", "last planned",
                 "audience", "sent", "opened", "clicked", "unsubscribed"),
                ((line.campaign, line.name or "?", line.trigger or "?", line.state,
                  "now" if line.next_due == moment else when(line.next_due),
                  when(line.last_planned),
                  "-" if line.audience is None else line.audience, line.sent, line.opened,
                  line.clicked, line.unsubscribed) for line in found),
                title=f"campaigns at {iso_z(moment)}")
    if not found:
        click.echo("no campaigns yet: add a file to campaigns/ (docs/campaigns.md)")
    for line in found:
        if line.problem is not None:
            click.echo(f"draft {line.campaign}: {line.problem} "
                       "(`mailer validate` lists every problem)")
