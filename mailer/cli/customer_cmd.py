"""`mailer customer ID|EMAIL`: one customer's card (docs/customers.md, "The customer card")."""

from __future__ import annotations

from typing import Any

import click

from mailer.cli.common import emit_json, session, workspace_json_now


@click.command()
@click.argument("who", metavar="ID|EMAIL")
@workspace_json_now
def customer(ctx: click.Context, who: str, workspace: str | None, as_json: bool,
             now: str | None) -> None:
    """Show one customer's card: profile, consent and its history, stats, stage,
    predictions, recommendations, segments, mails, what is coming and what they did.
    An argument with @ is an email address, anything else the store's id."""
    from mailer.app.card import card

    run = session(ctx, workspace, now)
    found = card(run.engine, run.root, run.workspace.settings, run.clock.now(), who)
    if as_json:
        emit_json(found.as_json())
        return
    _print(found.as_json())


# Amounts in major units of the store currency: shown with two places (705.10, not 705.1).
MONEY = frozenset({"spent", "average_order", "predicted_clv_365d"})


def _shown(value: Any, key: str = "") -> str:
    if key in MONEY and isinstance(value, int | float):
        return f"{value:,.2f}"
    if isinstance(value, float):
        return f"{value:.3f}".rstrip("0").rstrip(".")  # 0.502, 0.839, 31.9
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return ", ".join(map(str, value)) or "-"
    if isinstance(value, dict):
        return ", ".join(f"{k}={v}" for k, v in value.items()) or "-"
    return str(value)


def _print(data: dict[str, Any]) -> None:
    """The card for a person: a heading, key-value panels and one table per list."""
    import sys

    from rich.console import Console
    from rich.table import Table

    width = None if sys.stdout.isatty() else 160  # as print_table: room for every column
    console = Console(markup=False, highlight=False, width=width)
    profile = data["profile"]
    name = " ".join(filter(None, (profile["first_name"], profile["last_name"]))) or data["email"]
    console.print(f"{name} <{data['email']}>  id {data['id']}  stage {data['stage']}  "
                  f"(as of {data['now']})")

    def pairs(title: str, values: dict[str, Any]) -> None:
        table = Table(title=title, show_header=False, title_justify="left")
        table.add_column(style="bold")
        table.add_column()
        for key, value in values.items():
            table.add_row(key, _shown(value, key))
        console.print(table)

    def rows(title: str, columns: tuple[str, ...], items: list[dict[str, Any]],
             empty: str) -> None:
        if not items:
            console.print(f"{title}: {empty}")
            return
        table = Table(*columns, title=title, title_justify="left")
        for item in items:
            table.add_row(*(_shown(item.get(column)) for column in columns))
        console.print(table)

    pairs("profile", profile)
    consent = dict(data["consent"], suppressed=data["suppressed"])
    pairs("consent", consent)
    rows("consent history", ("state", "since", "source", "reason"), data["consent_history"],
         "none recorded")
    if data["opt_in"] is not None:
        pairs("double opt-in", data["opt_in"])
    pairs("stats", data["stats"])
    rows("stage history", ("from", "to", "detected_at"), data["stage_history"],
         "none recorded (`mailer stages update` records it)")
    if data["predictions"] is None:
        console.print(f"predictions: none ({data['predictions_reason']})")
    else:
        pairs("predictions", data["predictions"])
    rows("you may like", ("sku", "product", "category"), data["recommendations"], "nothing yet")
    console.print("segments: " + (", ".join(data["segments"]) or "none"))
    rows("mails", ("campaign", "occurrence", "subject", "status", "planned_at", "sent_at",
                   "opened", "clicked"), data["mails"], "none")
    rows("upcoming", ("at", "campaign", "trigger", "occurrence", "status"), data["upcoming"],
         "nothing")
    rows("events", ("at", "kind", "campaign", "detail"), data["events"], "none")
