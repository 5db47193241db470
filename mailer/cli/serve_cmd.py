"""`mailer serve`: the HTTP side (unsubscribe, preferences, tracking, ratings)."""

from __future__ import annotations

import click

from mailer.cli.common import session, workspace_option


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8080, show_default=True, type=click.IntRange(0, 65535),
              help="0 picks a free port (printed as `listening on HOST:PORT`).")
@workspace_option
@click.pass_context
def serve(ctx: click.Context, host: str, port: int, workspace: str | None) -> None:
    """Serve the signed links of sent mails: one-click unsubscribe, the preference
    centre, open and click tracking, feedback ratings. Stops on SIGTERM or SIGINT."""
    from mailer.cli.common import run_server
    from mailer.cli.deliver import secret_key
    from mailer.logs import configure
    from mailer.web import Hits, Service
    from mailer.web import serve as serve_http
    from mailer.workspace import load_campaigns, load_segments

    run = session(ctx, workspace)
    settings = run.workspace.settings
    specs, _ = load_segments(run.root)
    campaigns, _ = load_campaigns(run.root, set(specs))
    service = Service(engine=run.engine, keys=(secret_key(run.env), *run.env.old_secret_keys),
                      store=settings.store.name, base_url=settings.tracking.base_url,
                      topics=sorted({spec.topic for spec in campaigns.values()}),
                      clock=run.clock, hits=Hits(run.engine))
    configure(run.env.log_format)

    run_server(lambda say, stop: serve_http(service, host, port, say, stop), host, port)
