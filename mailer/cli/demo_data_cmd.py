"""`mailer demo-data --customers N --seed S [--now T] [--replace] [--out DIR]`."""

from __future__ import annotations

import tempfile
from pathlib import Path

import click

from mailer.cli.common import emit_json, json_option, now_option, session, workspace_option


@click.command("demo-data")
@click.option("--customers", "count", type=click.IntRange(1, 10_000_000), default=500,
              show_default=True, help="How many customers.")
@click.option("--seed", type=int, default=1, show_default=True,
              help="Same size, seed and --now give the same store.")
@click.option("--replace", is_flag=True, help="Delete the store's data first.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Write customers.csv and orders.csv into DIR instead of the database.")
@workspace_option
@json_option
@now_option
@click.pass_context
def demo_data(ctx: click.Context, count: int, seed: int, replace: bool, out_dir: Path | None,
              workspace: str | None, as_json: bool, now: str | None) -> None:
    """Fill the store with a realistic synthetic shop, through the import path."""
    from mailer.clock import zone
    from mailer.demodata import write_files
    from mailer.errors import UserError
    from mailer.importer import RowError, import_file
    from mailer.records import Context
    from mailer.store import clear_store, customer_count

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
    engine = run.engine
    if customer_count(engine) and not replace:
        raise UserError("the store is not empty: use --replace to delete its data first")
    if replace:
        clear_store(engine)
    tz = zone(settings.timezone)
    checks = Context(tz=tz, currency=settings.store.currency, today=moment.astimezone(tz).date())
    errors: list[RowError] = []
    written = {}
    with tempfile.TemporaryDirectory(prefix="mailer-demo-") as scratch:
        people, sales, _ = write_files(Path(scratch), customers=count, seed=seed, now=moment,
                                       currency=settings.store.currency)
        for kind, path in (("customers", people), ("orders", sales)):
            with path.open("rb") as stream:
                report = import_file(engine, stream, kind=kind, name=path.name, fmt="csv",
                                     ctx=checks, now=moment, strict=True,
                                     on_error=errors.append)
            written[kind] = report.written
    if errors:  # the generator and the importer disagree: a bug, not the user's fault
        raise UserError(f"demo data did not import: line {errors[0].line}: {errors[0].reason}")
    if as_json:
        emit_json({"customers": written["customers"], "order_lines": written["orders"]})
    else:
        click.echo(f"created a demo store: {written['customers']} customers, "
                   f"{written['orders']} order lines (seed {seed})")
