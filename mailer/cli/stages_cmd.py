"""`mailer stages update | show` (docs/customers.md)."""

from __future__ import annotations

import re
from datetime import date
from typing import Any

import click

from mailer.cli.common import emit_json, print_table, session, workspace_json_now


@click.group()
def stages() -> None:
    """Relationship stages: record their changes, show a month's flow."""


@stages.command("update")
@workspace_json_now
def update(ctx: click.Context, workspace: str | None, as_json: bool, now: str | None) -> None:
    """Record every customer whose stage as of --now differs from their latest one."""
    from mailer.app.stages import update as record

    run = session(ctx, workspace, now)
    result = record(run.engine, run.workspace.settings, run.clock.now())
    if as_json:
        emit_json(result)
        return
    click.echo(f"stages as of {result['now']}: {result['recorded']} recorded for the first "
               f"time, {result['changed']} changed")
    _print_moves(result["moves"])


def _month(ctx: click.Context, param: click.Parameter, value: str | None) -> date | None:
    """YYYY-MM as the month's first day; anything else is misuse (exit 2)."""
    if value is None:
        return None
    match = re.fullmatch(r"\s*(\d{4})-(\d{2})\s*", value)
    if match is None or not 1 <= int(match.group(2)) <= 12:
        raise click.BadParameter(f"expected a month like 2026-11, got {value!r}")
    return date(int(match.group(1)), int(match.group(2)), 1)


@stages.command("show")
@click.option("--month", metavar="YYYY-MM", callback=_month,
              help="The month (default: the month of --now, in the workspace zone).")
@workspace_json_now
def show(ctx: click.Context, month: date | None, workspace: str | None, as_json: bool,
         now: str | None) -> None:
    """Customers per stage at the month's end and the moves in it, from orders."""
    from mailer.app.stages import show as flow

    run = session(ctx, workspace, now)
    result = flow(run.engine, run.workspace.settings, run.clock.now(), month)
    if as_json:
        emit_json(result)
        return
    print_table(("stage", "customers"), result["counts"].items(),
                title=f"stages at the end of {result['month']}")
    _print_moves(result["moves"])


def _print_moves(moves: list[dict[str, Any]]) -> None:
    if not moves:
        click.echo("no moves")
        return
    print_table(("from", "to", "customers"),
                ((move["from"], move["to"], move["customers"]) for move in moves))
