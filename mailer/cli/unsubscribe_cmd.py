"""`mailer unsubscribe EMAIL...`."""

from __future__ import annotations

import click

from mailer.cli.common import emit_json, session, workspace_json_now


@click.command()
@click.argument("emails", metavar="EMAIL...", nargs=-1, required=True)
@workspace_json_now
def unsubscribe(ctx: click.Context, emails: tuple[str, ...], workspace: str | None,
                as_json: bool, now: str | None) -> None:
    """Record opt-outs (reason `manual`); unknown valid addresses are suppressed anyway."""
    from mailer.store.customers import unsubscribe as record

    run = session(ctx, workspace, now)
    results = record(run.engine, list(emails), now=run.clock.now())
    invalid = [r for r in results if r.outcome == "invalid"]
    if as_json:
        emit_json({
            "unsubscribed": [r.email for r in results if r.outcome == "unsubscribed"],
            "already": [r.email for r in results if r.outcome == "already"],
            "suppressed": [r.email for r in results if r.outcome == "suppressed"],
            "invalid": [{"email": r.email, "reason": r.reason} for r in invalid],
        })
    else:
        words = {"unsubscribed": "unsubscribed", "suppressed": "suppressed (no such customer)",
                 "already": "already opted out"}
        for result in results:
            if result.outcome == "invalid":
                click.echo(f"error: {result.reason}", err=True)
            else:
                click.echo(f"{result.email}: {words[result.outcome]}")
    if invalid:
        ctx.exit(1)
