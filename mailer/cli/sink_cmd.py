"""`mailer sink`: catch mail locally into a Maildir."""

from __future__ import annotations

from pathlib import Path

import click


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=1025, show_default=True, type=click.IntRange(0, 65535),
              help="0 picks a free port (printed as `listening on HOST:PORT`).")
@click.option("--maildir", type=click.Path(file_okay=False, path_type=Path),
              default=Path("outbox"), show_default=True, help="Where caught mails go.")
def sink(host: str, port: int, maildir: Path) -> None:
    """A local SMTP server that catches every mail into a Maildir, one line per mail."""
    from mailer.cli.common import run_server
    from mailer.delivery.sink import serve

    run_server(lambda say, stop: serve(host, port, maildir.resolve(), say, stop), host, port)
