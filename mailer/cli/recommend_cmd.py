"""`mailer recommend`: compute and store every customer's recommendations
(docs/customers.md, "Recommendations")."""

from __future__ import annotations

from typing import Any

import click

from mailer.cli.common import emit_json, session, workspace_json_now


@click.command()
@workspace_json_now
def recommend(ctx: click.Context, workspace: str | None, as_json: bool, now: str | None) -> None:
    """Compute each customer's "you may like" products from the paid orders placed by
    --now (co-purchase, then their favourite category's bestsellers; never a product they
    bought; at most 6) and replace the stored ones."""
    from mailer.app.recommend import recommend as compute

    run = session(ctx, workspace, now)
    result = compute(run.engine, run.clock.now())
    if as_json:
        emit_json(result)
        return
    _print(result)


def _print(result: dict[str, Any]) -> None:
    click.echo(f"recommendations as of {result['now']}: {result['recommendations']} for "
               f"{result['customers']} customers ({result['from_co_purchase']} bought together "
               f"with what they bought, {result['from_category']} from their favourite "
               "category)")
    click.echo(f"{result['products']} products in paid orders, {result['pairs']} "
               "co-purchase pairs kept")
