"""`mailer console`: the application and its listener (mailer.web.listener's limits, as
`mailer serve` has them), on a host and port of its own: the public link host of
`mailer serve` never answers a console path."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

from aiohttp import web

from mailer.web.console.data import segments, warm_reports
from mailer.web.console.guard import logged_in, secured
from mailer.web.console.pages import CONSOLE, Console, add_routes, problems
from mailer.web.listener import Limits, listen

MAX_BODY = 64 * 1024  # a login form, an action's form: small


def make_app(console: Console) -> web.Application:
    # problems inside the guard: a session is known when an error page is rendered
    app = web.Application(client_max_size=MAX_BODY, middlewares=[logged_in, problems])
    app[CONSOLE] = console
    add_routes(app)
    app.on_response_prepare.append(secured)
    return app


async def serve(console: Console, host: str, port: int, say: Callable[[str], None],
                stop: asyncio.Event, *, limits: Limits | None = None) -> None:
    """Serve until STOP; the first line said is `listening on HOST:PORT`."""
    runner = web.AppRunner(make_app(console), access_log=None)
    await runner.setup()
    assert runner.server is not None
    listener = await listen(runner.server, limits or Limits(), host, port)
    bound = listener.sockets[0].getsockname()
    say(f"listening on {bound[0]}:{bound[1]}")
    # the segment sizes, when none are stored, are counted now in the background
    # (mailer.web.console.data.COMPUTED_UNASKED): the pages show them when ready
    await asyncio.to_thread(segments, console.store)
    # each campaign's report (seconds on a big store) before its first view
    threading.Thread(target=warm_reports, args=(console.store,), name="mailer-console-reports",
                     daemon=True).start()
    try:
        await stop.wait()
    finally:
        listener.close()
        await runner.cleanup()
        console.threads.shutdown(wait=False, cancel_futures=True)
