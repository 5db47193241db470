"""`mailer sink`: catch mail locally into a Maildir."""

from __future__ import annotations

import sys
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
    import asyncio
    import signal

    from mailer.errors import EnvironmentFailure
    from mailer.sink import serve

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await serve(host, port, maildir.resolve(), _say, stop)

    try:
        asyncio.run(main())
    except OSError as err:
        raise EnvironmentFailure(f"cannot listen on {host}:{port}: {err.strerror}") from None


def _say(line: str) -> None:
    """One line on standard output, flushed at once (the sink's output is read live)."""
    click.echo(line)
    sys.stdout.flush()
