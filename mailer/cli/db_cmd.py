"""`mailer db upgrade`."""

from __future__ import annotations

import click

from mailer.cli.common import emit_json, session, workspace_json


@click.group()
def db() -> None:
    """The database schema."""


@db.command()
@workspace_json
def upgrade(ctx: click.Context, workspace: str | None, as_json: bool) -> None:
    """Create or migrate the schema (on PostgreSQL under an advisory lock)."""
    from mailer.store.db import create
    from mailer.store.db import upgrade as migrate

    url = session(ctx, workspace).database_url
    before, after = migrate(create(url))
    if as_json:
        emit_json({"database": url.render_as_string(hide_password=True),
                   "before": before, "after": after})
    elif before == after:
        click.echo(f"the schema is up to date ({after})")
    else:
        click.echo(f"upgraded the schema from {before or 'nothing'} to {after}")
