"""`mailer status`."""

from __future__ import annotations

import click

from mailer.cli.common import emit_json, json_option, print_table, session, workspace_option


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
    rows = [("customers", counts["customers"]), ("subscribed", counts["subscribed"]),
            ("orders", counts["orders"])]
    rows += [(f"deliveries {state}", n) for state, n in counts["deliveries"].items()]
    rows.append(("daemon", "not running"))
    print_table(("", ""), rows, title="mailer status", show_header=False)
