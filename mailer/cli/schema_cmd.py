"""`mailer schema`."""

from __future__ import annotations

import json

import click

from mailer.app.schema import FILES


@click.command()
@click.option("--file", "kind", type=click.Choice(FILES), default=None,
              help="Print only this file's schema (default: all three, by kind).")
@click.option("--markdown", is_flag=True,
              help="Print the reference page instead (docs/reference.md is its output).")
def schema(kind: str | None, markdown: bool) -> None:
    """Print the JSON Schema of mailer.yaml, campaign and segment files."""
    from mailer.app.schema import all_schemas, file_schema, reference_markdown

    if markdown and kind is not None:
        raise click.UsageError("--markdown prints every file's reference; leave out --file")
    if markdown:
        click.echo(reference_markdown(), nl=False)
        return
    document = file_schema(kind) if kind is not None else all_schemas()
    click.echo(json.dumps(document, indent=2, ensure_ascii=False))
