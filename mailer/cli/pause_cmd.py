"""`mailer pause CAMPAIGN [--reason TEXT] [--yes]` and `mailer resume CAMPAIGN [--yes]`."""

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
@click.option("--reason", metavar="TEXT", help="Why, kept with the pause and its audit row.")
@yes_option
@workspace_json_now
def pause(ctx: click.Context, campaign: str, reason: str | None, yes: bool,
          workspace: str | None, as_json: bool, now: str | None) -> None:
    """Pause CAMPAIGN: nothing of it is planned (reason paused_campaign) or sent until
    `mailer resume`; its queued mails keep their place and their expiry."""
    from mailer.app.operator import check_campaign, clean_reason, pause_campaign
    from mailer.core.clock import iso_z

    run = session(ctx, workspace, now)
    clean_reason(reason, required=False)
    with run.engine.connect() as conn:  # an unknown campaign fails before the question
        check_campaign(conn, run.root, campaign)
    confirm(f"Pause {campaign}? No mail of it is planned or sent until `mailer resume "
            f"{campaign}`.", yes=yes)
    done = pause_campaign(run.engine, actor=os_user(), campaign=campaign, root=run.root,
                          now=run.clock.now(), reason=reason, via="cli")
    if as_json:
        emit_json(done.as_json())
    elif done.already:
        click.echo(f"{campaign} was already paused, since {iso_z(done.pause.at)} by "
                   f"{done.pause.by}")
    else:
        click.echo(f"paused {campaign}: nothing of it is planned or sent until "
                   f"`mailer resume {campaign}`")


@click.command()
@click.argument("campaign")
@yes_option
@workspace_json_now
def resume(ctx: click.Context, campaign: str, yes: bool, workspace: str | None,
           as_json: bool, now: str | None) -> None:
    """Resume a paused CAMPAIGN: it is planned again, and its queued mails go out at the
    next send (those whose expiry passed meanwhile do not)."""
    from mailer.app.operator import check_campaign, resume_campaign
    from mailer.core.clock import iso_z

    run = session(ctx, workspace, now)
    with run.engine.connect() as conn:
        check_campaign(conn, run.root, campaign)
    confirm(f"Resume {campaign}? Its waiting mails go out at the next send.", yes=yes)
    done = resume_campaign(run.engine, actor=os_user(), campaign=campaign, root=run.root,
                           now=run.clock.now(), via="cli")
    if as_json:
        emit_json(done.as_json())
    elif done.pause is None:
        click.echo(f"{campaign} was not paused")
    else:
        click.echo(f"resumed {campaign} (paused since {iso_z(done.pause.at)} by "
                   f"{done.pause.by}): {done.waiting} mails waiting to go out")
