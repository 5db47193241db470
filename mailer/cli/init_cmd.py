"""`mailer init DIR [--force]`."""

from __future__ import annotations

from pathlib import Path

import click

from mailer.cli.common import emit_json, json_option


@click.command()
@click.argument("directory", metavar="DIR", type=click.Path(file_okay=False, path_type=Path))
@click.option("--force", is_flag=True, help="Copy into DIR even when it is not empty.")
@json_option
def init(directory: Path, force: bool, as_json: bool) -> None:
    """Copy the demo workspace (mailer.yaml, campaigns, segments, surveys, templates) into
    DIR."""
    from mailer.config.workspace import init_workspace

    copied = init_workspace(directory, force=force)
    if as_json:
        emit_json({"workspace": str(directory.resolve()), "copied": copied})
    else:
        click.echo(f"created the workspace {directory}: {', '.join(copied)}")
        click.echo(f"next: cd {directory} && mailer demo-data --customers 500 --seed 1")
