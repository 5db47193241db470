"""`mailer status`."""

from __future__ import annotations

import click

from mailer.cli.common import emit_json, json_option, session, workspace_option


@click.command()
@workspace_option
@json_option
@click.pass_context
def status(ctx: click.Context, workspace: str | None, as_json: bool) -> None:
    """Counts of customers, subscribers, orders and deliveries by state."""
    from mailer.store import status_counts

    counts = status_counts(session(ctx, workspace).engine)
    # The daemon reports here once it exists (leader, last sweep, next due).
    counts["daemon"] = {"running": False, "leader": None, "last_sweep": None, "next_due": None}
    if as_json:
        emit_json(counts)
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title="mailer status", show_header=False)
    table.add_row("customers", str(counts["customers"]))
    table.add_row("subscribed", str(counts["subscribed"]))
    table.add_row("orders", str(counts["orders"]))
    for state, count in counts["deliveries"].items():
        table.add_row(f"deliveries {state}", str(count))
    table.add_row("daemon", "not running")
    Console(markup=False, highlight=False).print(table)
