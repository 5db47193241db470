"""`mailer hooks replay FILE.jsonl`: saved webhook requests through the same checks and
writes as `/hooks/SOURCE` (mailer.web.hooks)."""

from __future__ import annotations

import click

from mailer.cli.common import emit_json, now_json_workspace, session


@click.group("hooks")
def hooks() -> None:
    """Webhooks from the shop (docs/events.md)."""


@hooks.command()
@click.argument("file", metavar="FILE.jsonl", type=click.Path(dir_okay=False))
@now_json_workspace
def replay(ctx: click.Context, file: str, workspace: str | None, now: str | None,
           as_json: bool) -> None:
    """Feed saved requests, one JSON line each ({"source", "headers", "body_base64"}),
    through the webhook path: signatures checked, each delivery id written once. Exits 1
    if any line was refused (401, 400)."""
    from pathlib import Path

    from mailer.core.errors import NotFoundError
    from mailer.core.logs import configure
    from mailer.store.records import Context
    from mailer.web.hooks import replay as replay_lines

    run = session(ctx, workspace, now)
    configure(run.env.log_format)  # what the writes log, as `mailer serve` does
    path = Path(file) if Path(file).is_absolute() else Path.cwd() / file
    if not path.is_file():
        raise NotFoundError(f"{file}: no such file")
    answers = []
    with path.open("rb") as lines:
        context = Context.of(run.workspace.settings, run.clock.now())
        for done in replay_lines(run.engine, iter(lines), dict(run.env.hook_secrets),
                                 context, run.clock.now):
            answers.append(done)
            if not as_json:
                click.echo(f"{file}:{done.line}: {done.source} {done.answer.status} "
                           f"{done.answer.reason}")
    if as_json:
        emit_json([{"line": a.line, "source": a.source, "status": a.answer.status,
                    "reason": a.answer.reason} for a in answers])
    if any(a.answer.status >= 400 for a in answers):
        ctx.exit(1)
