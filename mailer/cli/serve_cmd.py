"""`mailer serve`: the HTTP side (unsubscribe, preferences, tracking, ratings)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from mailer.cli.common import Session, now_option, session, workspace_option

if TYPE_CHECKING:
    from mailer.web.app import Service


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8080, show_default=True, type=click.IntRange(0, 65535),
              help="0 picks a free port (printed as `listening on HOST:PORT`).")
@workspace_option
@now_option
@click.pass_context
def serve(ctx: click.Context, host: str, port: int, workspace: str | None,
          now: str | None) -> None:
    """Serve the signed links of sent mails: one-click unsubscribe, the preference
    centre, open and click tracking, the survey page. Stops on SIGTERM or SIGINT.

    With --now, what readers do is recorded as if the clock had started at TIME (a demo,
    or a replay of a day's links)."""
    from mailer.cli.common import run_server
    from mailer.core.logs import configure
    from mailer.web.app import serve as serve_http

    run = session(ctx, workspace, now)
    service = build_service(run)
    configure(run.env.log_format)
    _enough_files(service.limits.connections)

    run_server(lambda say, stop: serve_http(service, host, port, say, stop), host, port)


def build_service(run: Session) -> Service:
    """The service `mailer serve` runs on RUN's workspace, database and clock (the tests
    run it in their own process, on a real socket)."""
    from mailer.config.workspace import load_campaigns, load_segments
    from mailer.delivery.sending import secret_key
    from mailer.web.app import Database, Hits, Service
    from mailer.web.listener import Limits

    settings = run.workspace.settings
    specs, _ = load_segments(run.root)
    campaigns, _ = load_campaigns(run.root, set(specs))
    limits = Limits()
    database = Database(run.engine, wait=limits.database)
    return Service(db=database, keys=(secret_key(run.env), *run.env.old_secret_keys),
                   store=settings.store.name, base_url=settings.tracking.base_url,
                   topics=sorted({spec.topic for spec in campaigns.values()}),
                   clock=run.clock, hits=Hits(database), limits=limits,
                   settings=settings, hook_secrets=dict(run.env.hook_secrets))


def _enough_files(connections: int) -> None:
    """Raise the soft limit on open files to hold CONNECTIONS sockets and the rest (a
    common default of 1,024 would fail accepts before the connection cap is reached)."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = connections + 256
    if soft != resource.RLIM_INFINITY and soft < wanted:
        raised = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (raised, hard))
