"""`mailer serve`: the HTTP side (DESIGN §6) on aiohttp.

Paths under `tracking.base_url`, each ending in a signed token (mailer.links):

    GET  /u/TOKEN   a confirmation page with a button; changes nothing (scanners GET)
    POST /u/TOKEN   one-click unsubscribe (RFC 8058), idempotent, no cookies
    GET  /p/TOKEN   the preference centre; POST saves it
    GET  /r/TOKEN   a rating (the score is in the token) and a thank-you page;
                    POST adds the optional comment
    GET  /c/TOKEN   a click: recorded, then a redirect to the URL signed into the token
    GET  /o/TOKEN   an open: a 1×1 GIF
    GET  /healthz   "ok"

A token for one purpose never works for another, a tampered one gets a plain
"this link does not work" page (400), and the redirect goes nowhere but to the
URL the mail carried. The database work runs in threads; unsubscribes, preferences
and ratings are committed before the answer, opens and clicks are written in
batches (`Hits`). Pages carry no-store and no-referrer headers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from sqlalchemy import Engine

from mailer import engagement
from mailer.clock import Clock
from mailer.links import Claims, InvalidLink, link, verify

log = logging.getLogger("mailer.serve")

PIXEL = (b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff!\xf9\x04\x01\x00\x00"
         b"\x00\x00,\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;")
HEADERS = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer",
           "X-Robots-Tag": "noindex", "X-Content-Type-Options": "nosniff",
           "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
                                      "form-action 'self'; frame-ancestors 'none'"}
MAX_BODY = 16 * 1024  # a comment and a few fields; more is not a person


class Hits:
    """Opens and clicks waiting to be written: the answer (a redirect, a pixel) does not
    wait for the database; a writer task stores them every FLUSH_EVERY seconds in one
    transaction. What is pending when the process is killed is lost (at most that
    long's worth of opens and clicks); a clean stop writes it."""

    FLUSH_EVERY = 0.2

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._pending: list[engagement.Hit] = []
        self._ready = asyncio.Event()

    def add(self, hit: engagement.Hit) -> None:
        self._pending.append(hit)
        if len(self._pending) >= 1000:
            self._ready.set()

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._ready.wait(), self.FLUSH_EVERY)
            self._ready.clear()
            await self.flush()
        await self.flush()

    async def flush(self) -> None:
        hits, self._pending = self._pending, []
        if hits:
            try:
                await asyncio.to_thread(engagement.record_many, self.engine, hits)
            except Exception:  # the database away: keep them for the next try
                log.exception("could not record %d opens and clicks; retrying", len(hits))
                self._pending[:0] = hits


@dataclass(frozen=True)
class Service:
    engine: Engine
    keys: Sequence[str]  # MAILER_SECRET_KEY, then the old ones
    store: str
    base_url: str
    topics: Sequence[str]  # of the workspace's campaigns, for the preference centre
    clock: Clock
    hits: Hits


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def make_app(service: Service) -> web.Application:
    app = web.Application(client_max_size=MAX_BODY)
    routes = [
        web.get("/u/{token}", _signed(service, "unsubscribe", _unsubscribe_page)),
        web.post("/u/{token}", _signed(service, "unsubscribe", _unsubscribe)),
        web.get("/p/{token}", _signed(service, "preferences", _preferences_page)),
        web.post("/p/{token}", _signed(service, "preferences", _save_preferences)),
        web.get("/r/{token}", _signed(service, "rating", _rating)),
        web.post("/r/{token}", _signed(service, "rating", _comment)),
        web.get("/c/{token}", _signed(service, "click", _click)),
        web.get("/o/{token}", _open(service)),
        web.get("/healthz", _health),
    ]
    app.add_routes(routes)
    return app


def _html(body: str, status: int = 200) -> web.Response:
    return web.Response(text=body, status=status, content_type="text/html", charset="utf-8",
                        headers=HEADERS)


def _page(service: Service, name: str, status: int = 200, **values: Any) -> web.Response:
    from mailer.pages import page

    return _html(page(name, store=service.store, **values), status)


def _signed(service: Service, purpose: str,
            handler: Callable[[Service, web.Request, Claims], Awaitable[web.StreamResponse]]
            ) -> Handler:
    """HANDLER with the token's claims, or the "does not work" page (400)."""
    async def checked(request: web.Request) -> web.StreamResponse:
        try:
            claims = verify(request.match_info["token"], purpose, service.keys)
        except InvalidLink:
            return _page(service, "invalid.html", 400, title="Link not valid")
        return await handler(service, request, claims)
    return checked


def _here(service: Service, purpose: str, claims: Claims) -> str:
    """The path of another of the mail's links on this service (relative, so forms and
    links work on whatever host and port the service answers)."""
    from urllib.parse import urlsplit

    other = Claims(purpose, claims.customer, claims.campaign, claims.message)
    return urlsplit(link(service.base_url, other, service.keys[0])).path


def _masked(email: str) -> str:
    """Enough of the address for its owner to recognise it: a forwarded mail's reader
    does not learn it whole."""
    local, _, domain = email.partition("@")
    return f"{local[:2]}{'•' * max(1, len(local) - 2)}@{domain}"


async def _unsubscribe_page(service: Service, request: web.Request,
                            claims: Claims) -> web.StreamResponse:
    found = await asyncio.to_thread(engagement.person, service.engine, claims)
    if found is None:
        return _page(service, "invalid.html", 404, title="Link not valid")
    preferences = _here(service, "preferences", claims)
    if found.consent in engagement.OPTED_OUT:
        return _page(service, "unsubscribed.html", title="Unsubscribed",
                     email=_masked(found.email))
    return _page(service, "unsubscribe.html", title="Unsubscribe", email=_masked(found.email),
                 preferences=preferences)


async def _unsubscribe(service: Service, request: web.Request,
                       claims: Claims) -> web.StreamResponse:
    await request.read()  # RFC 8058 sends "List-Unsubscribe=One-Click"; any body will do
    found = await asyncio.to_thread(engagement.person, service.engine, claims)
    if found is None:
        return _page(service, "invalid.html", 404, title="Link not valid")
    await asyncio.to_thread(engagement.unsubscribe, service.engine, claims, service.clock.now())
    return _page(service, "unsubscribed.html", title="Unsubscribed", email=_masked(found.email))


async def _preferences_page(service: Service, request: web.Request, claims: Claims,
                            saved: bool = False) -> web.StreamResponse:
    found = await asyncio.to_thread(engagement.person, service.engine, claims)
    if found is None:
        return _page(service, "invalid.html", 404, title="Link not valid")
    now = service.clock.now()
    paused = found.paused_until.strftime("%d %B %Y") \
        if found.paused_until and found.paused_until > now else None
    unsubscribe = _here(service, "unsubscribe", claims)
    return _page(service, "preferences.html", title="Your preferences",
                 email=_masked(found.email), opted_out=found.consent in engagement.OPTED_OUT,
                 paused=paused, cap=found.weekly_cap, topics=found.topics,
                 all_topics=sorted(set(service.topics) | set(found.topics or [])),
                 unsubscribe=unsubscribe, saved=saved)


async def _save_preferences(service: Service, request: web.Request,
                            claims: Claims) -> web.StreamResponse:
    form = await request.post()
    cap_text = str(form.get("weekly_cap") or "")
    cap = int(cap_text) if cap_text.isdigit() and 1 <= int(cap_text) <= 50 else None
    chosen = sorted({str(t) for t in form.getall("topic", [])} & set(service.topics))
    topics = None if set(chosen) == set(service.topics) else chosen
    await asyncio.to_thread(engagement.set_preferences, service.engine, claims,
                            service.clock.now(), pause=bool(form.get("pause")),
                            weekly_cap=cap, topics=topics)
    return await _preferences_page(service, request, claims, saved=True)


async def _rating(service: Service, request: web.Request,
                  claims: Claims) -> web.StreamResponse:
    if not claims.extra.isdigit() or not 1 <= int(claims.extra) <= 5:
        return _page(service, "invalid.html", 400, title="Link not valid")
    score = int(claims.extra)
    await asyncio.to_thread(engagement.rate, service.engine, claims, score, service.clock.now())
    return _page(service, "rated.html", title="Thank you", score=score, commented=False)


async def _comment(service: Service, request: web.Request,
                   claims: Claims) -> web.StreamResponse:
    form = await request.post()
    text = str(form.get("comment") or "").strip()
    if text:
        await asyncio.to_thread(engagement.comment, service.engine, claims, text,
                                service.clock.now())
    score = int(claims.extra) if claims.extra.isdigit() else 0
    return _page(service, "rated.html", title="Thank you", score=score, commented=True)


async def _click(service: Service, request: web.Request, claims: Claims) -> web.StreamResponse:
    target = claims.extra
    if not target.startswith(("https://", "http://")):
        return _page(service, "invalid.html", 400, title="Link not valid")
    service.hits.add(("click", claims, service.clock.now(), target))
    raise web.HTTPFound(target, headers={"Cache-Control": "no-store",
                                         "Referrer-Policy": "no-referrer"})


def _open(service: Service) -> Handler:
    async def pixel(request: web.Request) -> web.StreamResponse:
        token = request.match_info["token"]
        try:
            claims = verify(token, "open", service.keys)
        except InvalidLink:
            claims = None  # a pixel never shows an error page
        if claims is not None:
            service.hits.add(("open", claims, service.clock.now(), None))
        return web.Response(body=PIXEL, content_type="image/gif",
                            headers={"Cache-Control": "no-store"})
    return pixel


async def _health(request: web.Request) -> web.StreamResponse:
    return web.Response(text="ok")


async def serve(service: Service, host: str, port: int,
                say: Callable[[str], None], stop: asyncio.Event) -> None:
    """Run the service until STOP; the first line said is `listening on HOST:PORT`."""
    runner = web.AppRunner(make_app(service), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = runner.addresses[0]
    say(f"listening on {bound[0]}:{bound[1]}")
    writer = asyncio.create_task(service.hits.run(stop))
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
        await writer  # what is pending is written before the process ends
