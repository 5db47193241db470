"""The HTTP listener's limits (issue 15): what one client may take of `mailer serve`.

aiohttp alone has only an idle timer, which every byte resets, so a client trickling
its headers could hold a connection for ever. Here a request's headers must arrive
within `Limits.headers` of its first byte (or of the connection); `web._guarded` holds
the body and the answer to `Limits.body`; at most `Limits.connections` are open, the
next is answered 503 and closed. Every answer written here carries the security
headers and `Server: mailer`.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from aiohttp import web

_NO_ACCESS_LOG = logging.getLogger("mailer.serve.access")
_NO_ACCESS_LOG.disabled = True  # an access log would hold readers' addresses

SERVER = "mailer"  # never the framework and its version
HEADERS = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer",
           "X-Robots-Tag": "noindex", "X-Content-Type-Options": "nosniff",
           "X-Frame-Options": "DENY",
           "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
                                      "form-action 'self'; frame-ancestors 'none'"}

@dataclass(frozen=True)
class Limits:
    """What one client may take of the service. Tests shorten the times."""

    headers: float = 10.0  # s from a request's first byte (or the connection) to its headers
    body: float = 30.0  # s from the headers to the answer: the body read and the work done
    connections: int = 1000  # open at once
    database: float = 5.0  # s a request waits for a locked or unreachable database
    keepalive: float = 75.0  # idle s between requests (longer than a proxy's usual 60 s)


def _canned(status: int, reason: str, text: str, **extra: str) -> bytes:
    """A whole response, written straight to a connection aiohttp is not handling."""
    body = text.encode()
    head = {"Server": SERVER, "Content-Type": "text/plain; charset=utf-8",
            "Content-Length": str(len(body)), "Connection": "close", **extra, **HEADERS}
    lines = "".join(f"{name}: {value}\r\n" for name, value in head.items())
    return f"HTTP/1.1 {status} {reason}\r\n{lines}\r\n".encode() + body


_TOO_SLOW = _canned(408, "Request Timeout", "The request took too long to arrive.\n")
_FULL = _canned(503, "Service Unavailable", "Too many connections; try again.\n",
                **{"Retry-After": "1"})


class Connection(web.RequestHandler):
    """One client connection: aiohttp's handler plus the deadline for a request's headers
    (aiohttp has only an idle timer), the connection cap, and our headers on the errors
    aiohttp answers itself (a malformed request)."""

    def __init__(self, gate: Gate) -> None:
        assert gate.server is not None
        super().__init__(gate.server, loop=asyncio.get_running_loop(),
                         access_log=_NO_ACCESS_LOG,
                         keepalive_timeout=gate.limits.keepalive,
                         lingering_time=1.0)  # a body left unread is not waited for long
        self._gate = gate
        self._refused = False
        self._lingering = False
        self._busy = False
        self._timer: asyncio.TimerHandle | None = None
        self._deadline: float | None = None  # loop time by which the headers must be in

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if not self._gate.admit(self):
            self._refused = True
            assert isinstance(transport, asyncio.Transport)
            transport.write(_FULL)
            if self._gate.refusing >= Gate.LINGERING:  # a flood: no fd held for any of it
                transport.close()
                return
            # FIN after the answer, and the close a moment later: closing at once with the
            # client's request unread would reset the connection and lose the answer
            self._gate.refusing += 1
            self._lingering = True
            transport.write_eof()
            asyncio.get_running_loop().call_later(1.0, transport.close)
            return
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        if not self._busy and self._deadline is None:  # the first byte of the next request
            self._arm()
        super().data_received(data)

    def eof_received(self) -> None:
        if not self._refused:
            super().eof_received()

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._refused:
            if self._lingering:
                self._gate.refusing -= 1
            return
        self._disarm()
        if self._timer is not None:
            self._timer.cancel()
        self._gate.release(self)
        super().connection_lost(exc)

    def request_started(self) -> None:
        self._busy = True
        self._disarm()

    def request_finished(self) -> None:
        self._busy = False  # idle until the next byte: keep-alive's timer runs

    def handle_error(self, request: web.BaseRequest, status: int = 500,
                     exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        response = super().handle_error(request, status, exc, message)
        response.headers.update(HEADERS)
        response.headers["Server"] = SERVER
        return response

    # One timer per connection, moved lazily (as aiohttp's keep-alive timer is): arming
    # and disarming per request only set the deadline, no timer handle is made or cancelled.
    def _arm(self) -> None:
        self._deadline = self._loop.time() + self._gate.limits.headers
        if self._timer is None:
            self._timer = self._loop.call_at(self._deadline, self._check)

    def _disarm(self) -> None:
        self._deadline = None

    def _check(self) -> None:
        self._timer = None
        if self._deadline is None or self.transport is None:
            return
        if self._loop.time() < self._deadline:  # armed again since: wait for that deadline
            self._timer = self._loop.call_at(self._deadline, self._check)
        elif not self._busy:
            self.transport.write(_TOO_SLOW)
            self.force_close()  # asyncio still flushes the answer before the close


class Gate:
    """Makes the connections and counts them, up to `limits.connections`."""

    LINGERING = 64  # refused connections given a moment to read their 503

    def __init__(self, limits: Limits, server: web.Server | None) -> None:
        self.limits = limits
        self.server = server
        self.refusing = 0
        self._open: set[Connection] = set()

    def __call__(self) -> Connection:
        return Connection(self)

    def admit(self, connection: Connection) -> bool:
        if len(self._open) >= self.limits.connections:
            return False
        self._open.add(connection)
        return True

    def release(self, connection: Connection) -> None:
        self._open.discard(connection)


async def listen(server: web.Server, limits: Limits, host: str, port: int) -> asyncio.Server:
    """Our own listener instead of aiohttp's TCPSite: its connections are `Connection`s."""
    gate = Gate(limits, server)
    return await asyncio.get_running_loop().create_server(gate, host, port, backlog=1024)
