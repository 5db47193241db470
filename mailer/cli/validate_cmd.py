"""`mailer validate`."""

from __future__ import annotations

import click

from mailer.cli.common import emit_json, json_option, session, workspace_option


@click.command()
@workspace_option
@json_option
@click.pass_context
def validate(ctx: click.Context, workspace: str | None, as_json: bool) -> None:
    """Check every workspace file; print each problem as PATH:LINE: FIELD: MESSAGE."""
    from mailer.validation import validate_workspace

    problems = validate_workspace(session(ctx, workspace).root)
    errors = [p for p in problems if not p.warning]
    warnings = [p for p in problems if p.warning]
    for problem in problems:
        click.echo(str(problem), err=True)
    files = len({p.path for p in errors})
    click.echo(f"{len(errors)} problems in {files} files", err=True)
    if as_json:
        emit_json({
            "problems": [{"path": p.path, "line": p.line, "field": p.field, "message": p.message}
                         for p in errors],
            "warnings": [{"path": p.path, "line": p.line, "field": p.field, "message": p.message}
                         for p in warnings],
        })
    if errors:
        ctx.exit(1)
