"""`mailer retry CAMPAIGN [--yes]`: send a campaign's failed mails once more."""

from __future__ import annotations

import click

from mailer.cli.common import (
    confirm,
    emit_json,
    os_user,
    session,
    workspace_json_now,
    yes_option,
)


@click.command()
@click.argument("campaign")
@yes_option
@workspace_json_now
def retry(ctx: click.Context, campaign: str, yes: bool, workspace: str | None,
          as_json: bool, now: str | None) -> None:
    """Queue CAMPAIGN's failed mails again, before their expiry: those a server refused
    with a 5xx reply other than a 5.1.x address error, or whose temporary failures
    outlasted delivery.retry_for. The next send delivers them."""
    from mailer.app.operator import retry_failed, retry_plan
    from mailer.core.wording import counted

    run = session(ctx, workspace, now)
    moment = run.clock.now()
    plan = retry_plan(run.engine, campaign=campaign, root=run.root, now=moment)
    if plan.retried:
        confirm(f"Retry {counted(plan.retried, 'failed mail')} of {campaign}?", yes=yes)
        done = retry_failed(run.engine, actor=os_user(), campaign=campaign, root=run.root,
                            now=moment, via="cli")
    else:
        done = plan
    if as_json:
        emit_json(done.as_json())
        return
    kept = ", ".join(f"{n} {why.replace('_', ' ')}" for why, n in sorted(done.kept.items())
                     if n)
    click.echo(f"{campaign}: {counted(done.retried, 'failed mail')} queued again"
               + (f"; not retried: {kept}" if kept else "")
               + ("; the next `mailer send` delivers them" if done.retried else ""))
