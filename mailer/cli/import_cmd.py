"""`mailer import customers FILE` and `mailer import orders FILE`.

An orders import that wrote rows ends with `stages update` as of the same now
(mailer.app.stages), so a stage_change campaign sees the moves new orders made without
waiting for the daemon's hourly update; the text output says what it recorded. A
customers import does not: in a first load (customers, then their orders) it would
record everyone as `awareness` and the orders import would then "move" every buyer,
mailing each stage_change campaign to the whole store.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import TYPE_CHECKING, Any, BinaryIO

import click

from mailer.cli.common import emit_json, now_json_workspace, session, stderr_is_terminal

if TYPE_CHECKING:
    from mailer.config.settings import Settings
    from mailer.store.db import Engine


@click.group("import")
def import_group() -> None:
    """Import customers or orders (CSV or JSON Lines; upsert by the store's id)."""


def _options(f: Callable[..., Any]) -> Callable[..., Any]:
    f = click.argument("file", metavar="FILE")(f)
    f = click.option("--format", "fmt", type=click.Choice(["csv", "jsonl", "ndjson"]),
                     help="Override the format the extension implies (needed for - as stdin "
                          "with JSON Lines).")(f)
    f = click.option("--strict", is_flag=True,
                     help="One transaction: nothing is written if any row is bad.")(f)
    return now_json_workspace(f)


@import_group.command()
@_options
def customers(ctx: click.Context, /, **options: Any) -> None:
    """Upsert customers by `id` from FILE (- for standard input)."""
    _import(ctx, "customers", **options)


@import_group.command()
@_options
def orders(ctx: click.Context, /, **options: Any) -> None:
    """Upsert orders, one row per order line, from FILE (- for standard input)."""
    _import(ctx, "orders", **options)


@contextmanager
def _open(path: str) -> Iterator[tuple[BinaryIO, int | None]]:
    from mailer.core.errors import NotFoundError

    if path == "-":
        yield sys.stdin.buffer, None
        return
    try:
        handle = open(path, "rb")  # noqa: SIM115 - closed below
    except FileNotFoundError:
        raise NotFoundError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise NotFoundError(f"{path}: is a directory, not a file") from None
    except OSError as err:
        raise NotFoundError(f"{path}: cannot read: {err.strerror}") from None
    with handle:
        import os

        yield handle, os.fstat(handle.fileno()).st_size


def _import(ctx: click.Context, kind: str, *, file: str, fmt: str | None, strict: bool,
            workspace: str | None, as_json: bool, now: str | None) -> None:
    from mailer.core.logs import configure
    from mailer.core.wording import counted
    from mailer.store.importer import RowError, import_file
    from mailer.store.records import Context
    from mailer.store.sources import format_for

    run = session(ctx, workspace, now)
    configure(run.env.log_format)  # what the writes log (a pending customer asked again)
    chosen = format_for(file, fmt)
    moment = run.clock.now()
    checks = Context.of(run.workspace.settings, moment)
    name = "<stdin>" if file == "-" else file

    def on_error(error: RowError) -> None:
        click.echo(f"{name}:{error.line}: {error.reason}", err=True)

    with _open(file) as (stream, size), _progress(size, enabled=not as_json) as progress:
        report = import_file(run.engine, stream, kind=kind, name=name, fmt=chosen, ctx=checks,
                             now=moment, strict=strict, on_error=on_error, on_progress=progress)
    for warning in report.warnings:
        click.echo(str(warning), err=True)
    stages = update_stages_after_import(run.engine, run.workspace.settings, moment) \
        if report.written and kind == "orders" else None
    if as_json:
        emit_json(report.as_json())
    else:
        written = counted(report.written, "row" if kind == "customers" else "order line")
        note = " (--strict: nothing written)" if strict and report.skipped else ""
        click.echo(f"{name}: {written} written, {report.skipped:,} skipped{note}")
        if stages is not None:
            click.echo(stages_line(stages))
    if report.skipped:
        ctx.exit(1)


def stages_line(stages: dict[str, Any]) -> str:
    """What an import (or demo-data) says of the stages it recorded."""
    from mailer.core.wording import counted

    return (f"stages: {counted(stages['recorded'], 'customer')} recorded first, "
            f"{counted(stages['changed'], 'change')} of stage")


def update_stages_after_import(engine: Engine, settings: Settings,
                               now: datetime) -> dict[str, Any] | None:
    """`stages update` after an import; an import dated before the latest recording (the
    history only moves forward) says so on stderr and leaves the history as it is."""
    from mailer.app.stages import update_forward

    found = update_forward(engine, settings, now)
    if isinstance(found, Exception):
        click.echo(f"stages not updated: {found}", err=True)
        return None
    return found


@contextmanager
def _progress(size: int | None, *, enabled: bool) -> Iterator[Callable[[int], None] | None]:
    """A progress bar on a terminal, by bytes read; nothing otherwise."""
    if not enabled or size is None or not stderr_is_terminal():
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn

    with Progress("importing", BarColumn(), DownloadColumn(), TimeRemainingColumn(),
                  console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("import", total=size)
        yield lambda done: bar.update(task, completed=done)
