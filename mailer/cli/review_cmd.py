"""`mailer review [--month YYYY-MM] [--out FILE.html] [--send-to EMAIL] [--json]`
(docs/surveys.md, "The monthly review")."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import click

from mailer.cli.common import emit_json, session, workspace_json_now
from mailer.cli.stages_cmd import _month


@click.command()
@click.option("--month", metavar="YYYY-MM", callback=_month,
              help="The month to review (workspace zone); default: the month before --now.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the review as one HTML page (charts and tables) to FILE.")
@click.option("--send-to", metavar="EMAIL",
              help="Queue the review as a notice to EMAIL, once per month and address; the "
              "next `mailer worker`, `run` or `send` delivers it.")
@workspace_json_now
def review(ctx: click.Context, month: date | None, out: Path | None, send_to: str | None,
           workspace: str | None, as_json: bool, now: str | None) -> None:
    """A month for the store owner: campaigns' open, click and unsubscribe rates, orders
    attributed to clicks, survey scores beside the month before, the stage flow, comments,
    alerts, bounces and complaints."""
    from mailer.app.review.monthly import month_of, previous_month
    from mailer.app.review.send import queue_review, render, send_to_key
    from mailer.core.addresses import parse_address

    run = session(ctx, workspace, now)
    settings = run.workspace.settings
    moment = run.clock.now()
    month = month or previous_month(month_of(moment, settings))
    to = parse_address(send_to).email if send_to is not None else None  # exit 1 if bad
    rendered = render(run.engine, run.root, settings, month, moment)
    result, page, text = rendered
    if out is not None:
        out.write_text(page, encoding="utf-8")
    queued = None
    if to is not None:
        queued = queue_review(run.engine, run.root, settings, month, moment, to=to,
                              key=send_to_key(month, to), rendered=rendered)
    if as_json:
        emit_json(result)
        return
    click.echo(text, nl=False)
    if out is not None:
        click.echo(f"wrote {out}")
    if to is not None:
        click.echo(f"queued the review of {result['month']} for {to}: the next delivery "
                   "sends it" if queued else
                   f"the review of {result['month']} was already queued for {to}")

