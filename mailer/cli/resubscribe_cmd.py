"""`mailer resubscribe EMAIL... --source TEXT [--force]`."""

from __future__ import annotations

import click

from mailer.cli.common import emit_json, session, workspace_json_now

# consent_source is a 64-character column; the source says where the new opt-in came from.
MAX_SOURCE = 64


@click.command()
@click.argument("emails", metavar="EMAIL...", nargs=-1, required=True)
@click.option("--source", required=True, metavar="TEXT",
              help="Where the new opt-in came from (a form, a phone call); kept with it.")
@click.option("--force", is_flag=True,
              help="Also resubscribe a bounced or complained address.")
@workspace_json_now
def resubscribe(ctx: click.Context, emails: tuple[str, ...], source: str, force: bool,
                workspace: str | None, as_json: bool, now: str | None) -> None:
    """Record a new opt-in for each address (consent `subscribed`, with --source and the
    time), and take it off the suppression list; bounced or complained needs --force."""
    from mailer.core.addresses import has_control_character
    from mailer.store.customers import resubscribe as record

    cleaned = source.strip()
    if not cleaned or len(cleaned) > MAX_SOURCE or has_control_character(cleaned):
        raise click.BadParameter(f"give 1 to {MAX_SOURCE} printable characters",
                                 param_hint="--source")
    run = session(ctx, workspace, now)
    results = record(run.engine, list(emails), now=run.clock.now(), source=cleaned,
                     force=force)
    failed = [r for r in results if r.outcome in ("refused", "unknown", "invalid")]
    if as_json:
        emit_json({
            "resubscribed": [r.email for r in results if r.outcome == "resubscribed"],
            "already": [r.email for r in results if r.outcome == "already"],
            "refused": [{"email": r.email, "consent": r.consent, "reason": r.reason}
                        for r in results if r.outcome == "refused"],
            "unknown": [r.email for r in results if r.outcome == "unknown"],
            "invalid": [{"email": r.email, "reason": r.reason}
                        for r in results if r.outcome == "invalid"],
        })
    else:
        for result in results:
            if result in failed:
                click.echo(f"error: {result.email}: {result.reason}", err=True)
            elif result.outcome == "already":
                click.echo(f"{result.email}: already subscribed")
            else:
                click.echo(f"{result.email}: subscribed again (was {result.consent}), "
                           f"source {cleaned!r}")
    if failed:
        ctx.exit(1)
