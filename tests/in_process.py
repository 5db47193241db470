"""`mailer serve` in the test's own process: the service the command builds
(mailer.cli.serve_cmd.build_service), run by mailer.web.app.serve on its own event loop in
a thread, listening on a real socket of 127.0.0.1 (port 0), so requests still go over
HTTP. A subprocess costs a Python start and mailer's imports (0.5-1 s of CPU a test on
this suite's machine); the tests about the process itself (signals, exit, its stderr
beside a daemon's) still start one.

Stopping sets the event SIGTERM sets in the command, so the service ends the same way:
the listener closed, pending opens and clicks written, the database closed.
"""

from __future__ import annotations

import asyncio
import io
import logging
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from queue import Queue

from aiohttp import web

from mailer.cli.common import Session
from mailer.cli.serve_cmd import build_service
from mailer.web.app import Service, serve


@contextmanager
def running(service: Service, app: web.Application | None = None) -> Iterator[int]:
    """SERVICE on a free port of 127.0.0.1, in a thread with its own event loop, until the
    block ends; a failure in the thread fails the block."""
    lines: Queue[str] = Queue()
    started: Queue[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = Queue()
    failed: list[BaseException] = []

    async def main() -> None:
        stop = asyncio.Event()
        started.put((asyncio.get_running_loop(), stop))
        await serve(service, "127.0.0.1", 0, lines.put, stop, app=app)

    def thread_main() -> None:
        try:
            asyncio.run(main())
        except BaseException as err:  # reported by the test, not lost in the thread
            failed.append(err)
            lines.put("failed")

    thread = threading.Thread(target=thread_main, daemon=True)
    thread.start()
    loop, stop = started.get(timeout=30)
    first = lines.get(timeout=30)
    assert first.startswith("listening on 127.0.0.1:"), failed
    try:
        yield int(first.rsplit(":", 1)[1])
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(30)
        assert not thread.is_alive() and not failed, failed


class Log:
    """The service's log lines (logger `mailer.serve`) while it runs, in the format
    `mailer serve` writes to stderr."""

    def __init__(self) -> None:
        self._text = io.StringIO()
        self.handler = logging.StreamHandler(self._text)
        self.handler.setFormatter(logging.Formatter(
            "time=%(asctime)s level=%(levelname)s logger=%(name)s %(message)s"))

    def text(self) -> str:
        return self._text.getvalue()


@contextmanager
def serving(root: Path, environ: Mapping[str, str], now: str | None = None
            ) -> Iterator[tuple[int, Log]]:
    """What `mailer --workspace ROOT serve --port 0 [--now NOW]` serves with ENVIRON as
    its environment: the port and the log."""
    run = Session(option_root=str(root), now_text=now, environ=dict(environ))
    service = build_service(run)
    log = Log()
    logger = logging.getLogger("mailer.serve")
    level, propagate = logger.level, logger.propagate
    logger.addHandler(log.handler)
    logger.setLevel(logging.INFO)  # as configure() sets it in the command
    logger.propagate = False  # the lines are the service's log, not the test process's
    try:
        with running(service) as port:
            yield port, log
    finally:
        logger.removeHandler(log.handler)
        logger.setLevel(level)
        logger.propagate = propagate
        run.engine.dispose()
