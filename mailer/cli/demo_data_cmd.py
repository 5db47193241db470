"""`mailer demo-data --customers N --seed S [--now T] [--replace] [--out DIR]`."""

from __future__ import annotations

from pathlib import Path

import click

from mailer.cli.common import emit_json, session, workspace_json_now
from mailer.cli.import_cmd import stages_line, update_stages_after_import


@click.command("demo-data")
@click.option("--customers", "count", type=click.IntRange(1, 10_000_000), default=500,
              show_default=True, help="How many customers.")
@click.option("--seed", type=int, default=1, show_default=True,
              help="Same size, seed and --now give the same store.")
@click.option("--replace", is_flag=True, help="Delete the store's data first.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Write customers.csv and orders.csv into DIR instead of the database.")
@workspace_json_now
def demo_data(ctx: click.Context, count: int, seed: int, replace: bool, out_dir: Path | None,
              workspace: str | None, as_json: bool, now: str | None) -> None:
    """Fill the store with a realistic synthetic shop, through the import path."""
    from mailer.app.demodata import fill_store, write_files

    run = session(ctx, workspace, now)
    settings = run.workspace.settings
    moment = run.clock.now().replace(microsecond=0)
    if out_dir is not None:
        people, sales, lines = write_files(out_dir, customers=count, seed=seed, now=moment,
                                           currency=settings.store.currency)
        if as_json:
            emit_json({"customers": count, "order_lines": lines,
                       "files": [str(people), str(sales)]})
        else:
            click.echo(f"wrote {count} customers to {people} and {lines} order lines to {sales}")
        return
    customers, lines = fill_store(run.engine, settings=settings, customers=count, seed=seed,
                                  now=moment, replace=replace)
    # as after an orders import: the store's first stages are recorded (no change)
    stages = update_stages_after_import(run.engine, settings, moment)
    if as_json:
        emit_json({"customers": customers, "order_lines": lines, "stages": stages})
    else:
        click.echo(f"created a demo store: {customers} customers, {lines} order lines "
                   f"(seed {seed})")
        if stages is not None:
            click.echo(stages_line(stages))
