"""`mailer status`."""

from __future__ import annotations

import click

from mailer.cli.common import emit_json, print_table, session, workspace_json


@click.command()
@workspace_json
def status(ctx: click.Context, workspace: str | None, as_json: bool) -> None:
    """Counts of customers, subscribers, orders and deliveries by state."""
    from datetime import UTC, datetime

    from mailer.store.customers import status_counts
    from mailer.store.daemon_state import read_state

    engine = session(ctx, workspace).engine
    counts = status_counts(engine)
    counts["daemon"] = daemon = read_state(engine, datetime.now(UTC))
    if as_json:
        emit_json(counts)
        return
    rows = [("customers", counts["customers"]), ("subscribed", counts["subscribed"]),
            ("orders", counts["orders"])]
    rows += [(f"deliveries {state}", n) for state, n in counts["deliveries"].items()]
    if daemon["leader"] is None:
        rows.append(("daemon", "never run on this database"))
    else:
        rows.append(("daemon", f"running, led by {daemon['leader']}" if daemon["running"]
                     else f"not running (last: {daemon['leader']})"))
        rows += [("last sweep", daemon["last_sweep"] or "-"),
                 ("planned by it", daemon["last_planned"]),
                 ("next due", daemon["next_due"] or "-")]
        if daemon["workspace_problems"]:
            rows.append(("workspace", f"{daemon['workspace_problems']} problems ignored "
                                      "(the last good workspace runs)"))
    print_table(("", ""), rows, title="mailer status", show_header=False)
