"""`mailer console [--host 127.0.0.1] [--port 8090] [--outbox DIR]`,
`mailer console hash-password` and `mailer console refresh` (docs/console.md)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from mailer.cli.common import (
    emit_json,
    now_option,
    run_server,
    session,
    workspace_json_now,
    workspace_option,
)


@click.group(invoke_without_command=True)
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Loopback by default: put a TLS proxy in front to reach it from elsewhere.")
@click.option("--port", default=8090, show_default=True, type=click.IntRange(0, 65535),
              help="0 picks a free port (printed as `listening on HOST:PORT`).")
@click.option("--outbox", type=click.Path(file_okay=False, exists=True, path_type=Path),
              help="A `mailer sink` Maildir whose caught mails the console shows.")
@workspace_option
@now_option
@click.pass_context
def console(ctx: click.Context, host: str, port: int, outbox: Path | None,
            workspace: str | None, now: str | None) -> None:
    """The marketer's console: campaigns and their reports, customers and their cards,
    segments, the forecast, surveys and today's previews, each page also as JSON.
    A process of its own, never on the host of `mailer serve`; stops on SIGTERM or SIGINT.

    Users come from MAILER_CONSOLE_USERS (name:hash pairs, hashes from
    `mailer console hash-password`); sessions are signed with MAILER_SECRET_KEY."""
    if ctx.invoked_subcommand is not None:
        return
    from mailer.core.errors import UserError
    from mailer.core.logs import configure
    from mailer.delivery.sending import secret_key
    from mailer.web.console.auth import Keys, parse_users
    from mailer.web.console.data import Store
    from mailer.web.console.pages import Console
    from mailer.web.console.server import serve

    run = session(ctx, workspace, now)
    users = parse_users(run.env.console_users)
    if not users:
        raise UserError("no console user: set MAILER_CONSOLE_USERS to name:hash pairs, "
                        "each hash from `mailer console hash-password` (docs/console.md)")
    keys = Keys((secret_key(run.env), *run.env.old_secret_keys))
    store = Store(run.root, run.workspace.settings, run.engine, run.clock)
    configure(run.env.log_format)
    app = Console(store, users, keys, outbox=outbox, env=run.env)
    run_server(lambda say, stop: serve(app, host, port, say, stop), host, port)


@console.command("hash-password")
def hash_password() -> None:
    """Print the hash of a password for MAILER_CONSOLE_USERS. The password is asked for
    (twice) on a terminal, else read as the first line of standard input; never an
    argument, which other users of the machine could see in the process list."""
    from mailer.core.errors import UserError
    from mailer.web.console.auth import hash_password as hashed

    if sys.stdin.isatty():
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    if len(password) < 8:
        raise UserError("a console password has at least 8 characters")
    click.echo(hashed(password))


@console.command("refresh")
@click.option("--only", type=click.Choice(["segments", "counts", "forecast"]), multiple=True,
              help="Compute only this figure (repeatable; default: every figure).")
@workspace_json_now
def refresh(ctx: click.Context, only: tuple[str, ...], workspace: str | None, as_json: bool,
            now: str | None) -> None:
    """Compute the figures that cost more than a query (every segment's size and funnel,
    the campaigns' sent, opened, clicked and unsubscribed counts, the next 30 days'
    forecast) as of --now and store them for the console, which shows
    them with their time; the daemon does the same hourly and after each reload. Every
    figure is stored, or (on a failure) none."""
    import time

    from mailer.app.console.figures import read_workspace, summary
    from mailer.app.console.figures import refresh as compute
    from mailer.store.insight.figures import KINDS

    parent = ctx.parent.params if ctx.parent is not None else {}
    run = session(ctx, workspace or parent.get("workspace"), now or parent.get("now"))
    began = time.monotonic()
    kinds = [kind for kind in KINDS if not only or kind in only]
    figures = compute(run.engine, read_workspace(run.root, run.workspace.settings),
                      run.clock.now().replace(microsecond=0), kinds=kinds, by="cli")
    seconds = round(time.monotonic() - began, 2)
    said = [summary(figure) for figure in figures]
    if as_json:
        emit_json({"figures": said, "seconds": seconds})
        return
    for figure in said:
        what = (f"{figure['segments']} segments" if figure["kind"] == "segments"
                else f"{figure['campaigns']} campaigns" if figure["kind"] == "counts"
                else f"{figure['days']} days, {figure['mails']} mails")
        click.echo(f"{figure['kind']}: {what} as of {figure['as_of']}, computed in "
                   f"{figure['seconds']:.2f} s")
    click.echo(f"stored {len(said)} figures in {seconds:.2f} s")
