"""`mailer forecast --days N [--from T] [--chart FILE]`."""

from __future__ import annotations

from pathlib import Path

import click

from mailer.cli.common import (
    chart_option,
    check_chart,
    check_time,
    emit_json,
    print_table,
    session,
    workspace_json,
)


@click.command()
@click.option("--days", type=click.IntRange(1, 366), default=30, show_default=True,
              help="How many days to simulate.")
@click.option("--from", "start_text", metavar="TIME", default=None, callback=check_time,
              help="Start of the simulation (ISO 8601; no offset = workspace zone; "
                   "default: now).")
@chart_option
@workspace_json
def forecast(ctx: click.Context, days: int, start_text: str | None, chart: Path | None,
             workspace: str | None, as_json: bool) -> None:
    """Simulate the daemon hour by hour on a scratch ledger: mails per day and campaign."""
    from mailer.app.forecast import run_forecast
    from mailer.config.workspace import load_valid_workspace
    from mailer.core.clock import iso_z
    from mailer.mail.version import compile_version, definition

    check_chart(chart)
    run = session(ctx, workspace, start_text)
    settings = run.workspace.settings
    specs, campaigns = load_valid_workspace(run.root)
    start = run.clock.now().replace(minute=0, second=0, microsecond=0)
    versions = {}
    for slug, spec in campaigns.items():
        compiled = compile_version(slug, spec, run.root / "templates")
        versions[slug] = definition(compiled, run.root)
    result = run_forecast(run.engine, specs, campaigns, settings=settings, start=start,
                          days=days, versions=versions)
    order = sorted(campaigns)
    if chart is not None:
        from mailer.app.charts import forecast_chart

        forecast_chart(result, chart)
    if as_json:
        emit_json({"from": iso_z(start), **result.as_json(order)})
        return
    print_table(("date", "mails", "by campaign", "by topic"),
                ((f"{day:%a %d %b}", sum(result.mails[day].values()),
                  ", ".join(f"{slug} {n}" for slug, n in sorted(result.mails[day].items()) if n),
                  ", ".join(f"{topic} {n}" for topic, n in result.by_topic(day).items() if n))
                 for day in result.days),
                title=f"forecast from {iso_z(start)}, {days} days")
    caps = ", ".join(f"{label}: {len(ids)}" for label, ids in sorted(result.caps_hit.items()))
    click.echo(f"customers held back by a cap: {caps or 'none'}")
    click.echo(f"the most mails one customer gets in 7 days: {result.max_per_customer_7d}")
    hours = ", ".join(f"{label} {n}" for label, n in result.hour_labels().items())
    click.echo(f"mails by the hour they leave ({settings.timezone}): {hours or 'none'}")
    if chart is not None:
        click.echo(f"chart: {chart}")
