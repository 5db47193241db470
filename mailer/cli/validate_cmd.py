"""`mailer validate`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from mailer.cli.common import emit_json, session, workspace_json

if TYPE_CHECKING:
    from mailer.store.db import Engine


@click.command()
@click.option("--explain", is_flag=True,
              help="Also state the store's caps, quiet hours and sunset rule in words.")
@workspace_json
def validate(ctx: click.Context, explain: bool, workspace: str | None, as_json: bool) -> None:
    """Check every workspace file; print each problem as PATH:LINE: FIELD: MESSAGE, then how
    many files were read and how many problems they have."""
    from mailer.app.validation import check_workspace
    from mailer.config.settings import policy_in_words
    from mailer.core.wording import counted

    run = session(ctx, workspace)

    def store() -> Engine | None:
        """The store, when there is one; validate never creates a database."""
        from mailer.core.errors import MailerError
        from mailer.store.customers import customer_count

        url = run.database_url
        if url.get_backend_name() == "sqlite" and not Path(url.database or "").exists():
            return None
        try:
            engine = run.engine
            return engine if customer_count(engine) else None
        except MailerError as err:
            click.echo(f"note: not checked against real customers: {err}", err=True)
            return None

    checked = check_workspace(run.root, store=store)
    errors = [p for p in checked.problems if not p.warning]
    warnings = [p for p in checked.problems if p.warning]
    for problem in checked.problems:
        click.echo(str(problem), err=True)
    click.echo(f"checked {counted(checked.files, 'file')}", err=True)
    with_errors = len({p.path for p in errors})
    click.echo(f"{counted(len(errors), 'problem')} in {counted(with_errors, 'file')}", err=True)
    explained = policy_in_words(checked.settings.policy) \
        if explain and checked.settings is not None else []
    if explain and not as_json:
        for line in explained:
            click.echo(line)
    if as_json:
        emit_json({
            **({"explain": explained} if explain else {}),
            "problems": [{"path": p.path, "line": p.line, "field": p.field, "message": p.message}
                         for p in errors],
            "warnings": [{"path": p.path, "line": p.line, "field": p.field, "message": p.message}
                         for p in warnings],
            "files": checked.files,
        })
    if errors:
        ctx.exit(1)
