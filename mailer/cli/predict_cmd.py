"""`mailer predict`: fit the purchase models and store every buyer's predictions
(docs/customers.md, "Predicting with mailer predict")."""

from __future__ import annotations

from typing import Any

import click

from mailer.cli.common import emit_json, print_table, session, workspace_json_now


@click.command()
@workspace_json_now
def predict(ctx: click.Context, workspace: str | None, as_json: bool, now: str | None) -> None:
    """Fit BG/NBD and Gamma-Gamma on the paid orders before --now and store each buyer's
    p_alive, expected orders, predicted CLV, next order and churn risk; when the data
    cannot support the models, say why and store none (exit 0 either way)."""
    from mailer.app.predict import predict as fit

    run = session(ctx, workspace, now)
    result = fit(run.engine, run.workspace.settings, run.clock.now())
    if as_json:
        emit_json(result)
        return
    _print(result)


def _print(result: dict[str, Any]) -> None:
    data = (f"{result['customers']} buyers, {result['repeat_buyers']} repeat buyers, "
            f"{result['days_of_history']} days of history")
    if not result["fitted"]:
        click.echo(f"not fitted as of {result['now']}: {result['reason']}")
        click.echo(f"({data}; no predictions are stored)")
        return
    click.echo(f"fitted as of {result['now']} on {data}; predictions stored for every buyer")
    print_table(("parameter", "value"),
                ((name, f"{value:.4g}") for name, value in result["parameters"].items()),
                title="parameters")
    holdout = result["holdout"]
    if holdout["predicted_orders"] is None:
        click.echo(f"holdout: the refit without the last {holdout['days']} days is not "
                   "possible (too little data before them)")
    else:
        click.echo(f"holdout: the last {holdout['days']} days, predicted "
                   f"{holdout['predicted_orders']:.1f} repeat purchase days, actual "
                   f"{holdout['actual_orders']}")
