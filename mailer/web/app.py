"""`mailer serve`: the HTTP side (DESIGN §6) on aiohttp.

Paths under `tracking.base_url`, each ending in a signed token (mailer.mail.links):

    GET  /u/TOKEN   a confirmation page with a button; changes nothing (scanners GET)
    POST /u/TOKEN   one-click unsubscribe (RFC 8058), idempotent, no cookies
    GET  /p/TOKEN   the preference centre; POST saves it
    GET  /k/TOKEN   "keep me subscribed" (a sunset mail): a page with a button; changes
                    nothing (scanners GET)
    POST /k/TOKEN   records a sign of life (event keep_subscribed) and says thank you
    GET  /confirm/TOKEN
                    a double opt-in's confirmation (mailer.delivery.confirmations): a page with a
                    button; changes nothing (scanners GET)
    POST /confirm/TOKEN
                    confirms a pending customer (subscribed, time and IP kept as proof),
                    idempotent; an expired link or one of a withdrawn request: 410
    GET  /r/TOKEN   a rating link of an older mail (the score is in the token): a page
                    with that score, a comment box and a button; changes nothing
    POST /r/TOKEN   records the rating and the optional comment
    GET  /s/TOKEN   the survey page of a mail's campaign version, the first answer (in
                    the token) chosen; changes nothing (mail scanners follow links)
    POST /s/TOKEN   records every answered question (mailer.app.surveys.answers); a
                    later POST replaces answers question by question
    GET  /c/TOKEN   a click: recorded, then a redirect to the URL signed into the token
    GET  /c/TOKEN/N a click on link N of those the mail's campaign version holds
    GET  /o/TOKEN   an open: a 1×1 GIF
    GET  /b/TOKEN   "view in your browser": the sent mail's HTML part, re-rendered as its
                    reader got it (mailer.app.browser_view); one open; HEAD records none
    GET  /healthz   {"database": "ok"} (200) or {"database": "unavailable"} (503)
    POST /hooks/shopify, /hooks/woocommerce, /hooks/custom
                    the shop's webhooks (mailer.web.hooks, docs/events.md): signed, at
                    most 5 MB, exactly once by delivery id, 200 once committed

A token for one purpose never works for another, a tampered one gets a plain
"this link does not work" page (400), and the redirect goes nowhere but to the
URL the mail carried (the browser view answers 404 instead: the page a reader
looks for is not there). The database work runs in a few threads of its own (`Database`);
unsubscribes, preferences and ratings are committed before the answer, opens and
clicks are written in batches (`Hits`). Rendering a mail again runs in threads of its
own (`Renders`), so a slow template holds neither the loop nor the database threads.

Under abuse (`Limits`, in mailer.web.listener): a request's headers must arrive within
10 s of its first byte (or of the connection), its body and answer within 30 s of the
headers, else 408 and the connection is closed; aiohttp alone has only an idle timer. At most 1,000
connections are open; the next is answered 503 and closed. A locked or unreachable
database holds a request at most 5 s, then 503 with Retry-After; nothing answered 2xx
is lost. Every response, aiohttp's own errors included, carries the security headers
and `Server: mailer`.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import parse_qsl

from aiohttp import web
from multidict import MultiDict

from mailer.app.browser_view import BrowserView, NotRenderable, Reading
from mailer.app.surveys import answers as surveys
from mailer.config.settings import Settings
from mailer.core import machines
from mailer.core.clock import Clock
from mailer.core.errors import DatabaseUnavailable
from mailer.core.states import OPTED_OUT, Consent
from mailer.mail.links import Claims, InvalidLink, link, verify
from mailer.store import events as engagement
from mailer.store.db import UNREACHABLE, Engine
from mailer.web.listener import HEADERS, SERVER, Connection, Limits, listen

log = logging.getLogger("mailer.serve")

PIXEL = (b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff!\xf9\x04\x01\x00\x00"
         b"\x00\x00,\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;")
# A survey's 2,000-character comment and a few fields: each character of an emoji
# comment is 12 bytes once form-encoded (4 UTF-8 bytes, %XX each); more is not a person.
MAX_BODY = 32 * 1024
MAX_FIELDS = 100  # a preference form has a handful
RETRY_AFTER = "5"  # seconds, when the database is locked or away
# A mail shown in the browser: its own styles and images (and web fonts and stylesheets
# over https, as a mail program loads them), never a script, a form or a frame.
BROWSER_VIEW_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; img-src * data:; "
                               "style-src 'unsafe-inline' https:; font-src https: data:; "
                               "form-action 'none'; base-uri 'none'; frame-ancestors 'none'",
    "Cache-Control": "private, no-store"}
T = TypeVar("T")


@dataclass
class _Budget:
    """The time a request may spend waiting for the database, from its first call."""

    deadline: float | None = None


_BUDGET: contextvars.ContextVar[_Budget | None] = contextvars.ContextVar(
    "mailer_request_budget", default=None)  # set per request: aiohttp runs each in a task


class Database:
    """The service's way to the database: a few threads of its own, and a deadline
    shared by a request's calls, so a locked or unreachable database holds a request at
    most WAIT seconds and never starves the other requests of threads."""

    THREADS = 8  # fewer than the engine's pool (5 + 10 overflow): no wait for a connection

    def __init__(self, engine: Engine, *, wait: float = Limits.database) -> None:
        self.engine = engagement.bound(engine)
        self.wait = wait
        self._threads = ThreadPoolExecutor(self.THREADS, thread_name_prefix="mailer-db")

    async def run(self, work: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """WORK(engine, *ARGS, **KWARGS) in a thread; DatabaseUnavailable when the database
        stays locked or unreachable for `wait` seconds (temporary failures are retried)."""
        loop = asyncio.get_running_loop()
        budget = _BUDGET.get()
        if budget is None:  # not a request (the hits writer): each call waits its own
            deadline = time.monotonic() + self.wait
        elif budget.deadline is None:  # a request's first call starts its wait
            deadline = budget.deadline = time.monotonic() + self.wait
        else:
            deadline = budget.deadline
        context = contextvars.copy_context()
        context.run(engagement.DEADLINE.set, deadline)  # the thread's connections obey it
        pause = 0.05
        while True:
            left = deadline - time.monotonic()
            try:
                # a call still queued for a thread at the deadline is dropped with the wait
                return await asyncio.wait_for(loop.run_in_executor(
                    self._threads, lambda: context.run(work, self.engine, *args, **kwargs)),
                    max(left, 0.001))
            except TimeoutError:
                raise DatabaseUnavailable("the database did not answer in time") from None
            except UNREACHABLE as err:  # locked, refused, timed out
                left = deadline - time.monotonic()
                if left < 0.01:
                    reason = str(getattr(err, "orig", err)).strip().splitlines()[:1]
                    raise DatabaseUnavailable(f"the database is unavailable: "
                                              f"{''.join(reason)}") from None
                await asyncio.sleep(min(pause, left))  # a restart or a failover may be brief
                pause = min(pause * 2, 1.0)

    def close(self) -> None:
        self._threads.shutdown(wait=False, cancel_futures=True)


LinkCounter = Callable[[Claims], Awaitable[int | None]]  # a mail's distinct links, if known


class Hits:
    """Opens and clicks waiting to be written: the answer (a redirect, a pixel) does not
    wait for the database; a writer task stores them every FLUSH_EVERY seconds in one
    transaction, and keeps them through a database outage. What is pending when the
    process is killed is lost (at most that long's worth of opens and clicks); a clean
    stop writes it. Past MAX_PENDING (a long outage under a flood) new hits are counted
    in the log only, so memory stays bounded.

    After a write, the mails whose clicks may be a link scanner's burst (two URLs within
    2 s) get their link count from LINKS (make_app renders the mail again, once per
    mail) and their bursts stored as machine clicks (mailer.core.machines)."""

    FLUSH_EVERY = 0.2
    MAX_PENDING = 1_000_000

    def __init__(self, db: Database) -> None:
        self.db = db
        self._pending: list[engagement.Hit] = []
        self._ready = asyncio.Event()
        self._dropped = 0
        self.links: LinkCounter | None = None

    def add(self, hit: engagement.Hit) -> None:
        if len(self._pending) >= self.MAX_PENDING:
            self._dropped += 1
            return
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
        if self._dropped:
            log.warning("%d opens and clicks not recorded: %d waiting for the database",
                        self._dropped, self.MAX_PENDING)
            self._dropped = 0
        if hits:
            try:
                bursting = await self.db.run(engagement.record_many, hits)
            except Exception as err:  # the database away: keep them for the next try
                log.warning("could not record %d opens and clicks (%s); retrying",
                            len(hits), err)
                self._pending[:0] = hits
                return
            if bursting and self.links is not None:
                await self._bursts(bursting, hits)

    async def _bursts(self, mails: list[int], hits: list[engagement.Hit]) -> None:
        """Store the scanners' bursts among MAILS' clicks as machine clicks; a mail whose
        link count cannot be found keeps its clicks as they are."""
        assert self.links is not None
        claims = {hit.claims.message: hit.claims for hit in hits}
        counts: dict[int, int] = {}
        for mail in mails:
            try:
                count = await self.links(claims[str(mail)])
            except Exception as err:  # never lose the loop over one mail
                log.warning("links of row %s: %s", mail, err)
                continue
            if count is not None:
                counts[mail] = count
        if counts:
            try:
                await self.db.run(engagement.mark_bursts, counts)
            except Exception as err:  # the next click of the mail looks again
                log.warning("could not mark the bursts of %d mails (%s)", len(counts), err)


class RendersBusy(Exception):
    """No render thread came free in time: the answer is 503, try again."""


class Renders:
    """CPU work off the event loop, in THREADS of its own: a template that takes its
    whole render budget holds one of them, never the loop or the database threads.
    A render still queued after WAIT seconds is dropped (RendersBusy)."""

    THREADS = 4
    WAIT = 10.0

    def __init__(self) -> None:
        self._threads = ThreadPoolExecutor(self.THREADS, thread_name_prefix="mailer-render")

    async def run(self, work: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        try:
            return await asyncio.wait_for(loop.run_in_executor(self._threads, work, *args),
                                          self.WAIT)
        except TimeoutError:
            raise RendersBusy(f"no render done within {self.WAIT:g} s") from None

    def close(self) -> None:
        self._threads.shutdown(wait=False, cancel_futures=True)


@dataclass(frozen=True)
class Service:
    db: Database
    keys: Sequence[str]  # MAILER_SECRET_KEY, then the old ones
    store: str
    base_url: str
    topics: Sequence[str]  # of the workspace's campaigns, for the preference centre
    clock: Clock
    hits: Hits
    limits: Limits = field(default_factory=Limits)
    # mailer.yaml: what a survey answer's low-score alert is sent from (None: no alerts)
    settings: Settings | None = None
    # the webhooks' signing secrets by source (MAILER_SHOPIFY_SECRET, …)
    hook_secrets: Mapping[str, str] = field(default_factory=dict)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


_SERVICE = web.AppKey("service", Service)


@web.middleware
async def _guarded(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The body deadline, and a page for what went wrong: 408, 503, 500."""
    service = request.app[_SERVICE]
    connection = request.protocol if isinstance(request.protocol, Connection) else None
    if connection is not None:
        connection.request_started()
    _BUDGET.set(_Budget())
    try:
        async with asyncio.timeout(service.limits.body):
            return await handler(request)
    except TimeoutError:
        response = _page(service, "timeout.html", 408, title="Too slow")
        response.force_close()  # the rest of the body is not read
        return response
    except DatabaseUnavailable as err:
        log.warning("%s %s: %s", request.method, request.path[:3], err)
        response = _page(service, "unavailable.html", 503, title="Try again in a moment")
        response.headers["Retry-After"] = RETRY_AFTER
        return response
    except web.HTTPException:
        raise  # 302, 404, 405, 413…: aiohttp's own answers, our headers added on prepare
    except Exception:
        log.exception("%s %s failed", request.method, request.path[:3])
        return _page(service, "error.html", 500, title="Something went wrong")
    finally:
        if connection is not None:
            connection.request_finished()


async def _secured(request: web.Request, response: web.StreamResponse) -> None:
    """Every response the application prepares: our headers (unless the handler chose
    its own value: the browser view's policy lets a mail's images in), our Server."""
    for name, value in HEADERS.items():
        response.headers.setdefault(name, value)
    response.headers["Server"] = SERVER


def make_app(service: Service) -> web.Application:
    app = web.Application(client_max_size=MAX_BODY, middlewares=[_guarded])
    app[_SERVICE] = service
    app.on_response_prepare.append(_secured)
    renders = Renders()
    asking = surveys.SurveyMails()
    views = BrowserView(service.keys[0])
    service.hits.links = _link_counter(service, views, renders)
    routes = [
        web.get("/u/{token}", _signed(service, "unsubscribe", _unsubscribe_page)),
        web.post("/u/{token}", _signed(service, "unsubscribe", _unsubscribe)),
        web.get("/p/{token}", _signed(service, "preferences", _preferences_page)),
        web.post("/p/{token}", _signed(service, "preferences", _save_preferences)),
        web.get("/k/{token}", _signed(service, "keep_subscribed", _keep_page)),
        web.post("/k/{token}", _signed(service, "keep_subscribed", _keep_subscribed)),
        web.get("/confirm/{token}", _signed(service, "confirm", _confirm_page)),
        web.post("/confirm/{token}", _signed(service, "confirm", _confirm)),
        web.get("/r/{token}", _signed(service, "rating", _rating)),
        web.post("/r/{token}", _signed(service, "rating", _comment)),
        web.get("/s/{token}", _signed(service, "survey", _survey_page(asking))),
        web.post("/s/{token}", _signed(service, "survey", _answer(asking))),
        web.get("/c/{token}", _signed(service, "click", _click)),
        web.get("/c/{token}/{n}", _signed(service, "clicks", _held_click(views))),
        web.get("/o/{token}", _open(service)),
        web.get("/b/{token}", _browser_view(service, views, renders)),
        web.get("/healthz", _health(service)),
        web.post("/hooks/{source}", _hook(service)),
    ]
    app.add_routes(routes)

    async def close(app: web.Application) -> None:
        renders.close()

    app.on_cleanup.append(close)
    return app


def _html(body: str, status: int = 200) -> web.Response:
    return web.Response(text=body, status=status, content_type="text/html", charset="utf-8")


def _page(service: Service, name: str, status: int = 200, **values: Any) -> web.Response:
    from mailer.web.pages import page

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
    found = await service.db.run(engagement.person, claims)
    if found is None:
        return _page(service, "invalid.html", 404, title="Link not valid")
    preferences = _here(service, "preferences", claims)
    if found.consent in OPTED_OUT:
        return _page(service, "unsubscribed.html", title="Unsubscribed",
                     email=_masked(found.email))
    return _page(service, "unsubscribe.html", title="Unsubscribe", email=_masked(found.email),
                 preferences=preferences)


async def _unsubscribe(service: Service, request: web.Request,
                       claims: Claims) -> web.StreamResponse:
    await request.read()  # RFC 8058 sends "List-Unsubscribe=One-Click"; any body will do
    found = await service.db.run(engagement.person, claims)
    if found is None:
        return _page(service, "invalid.html", 404, title="Link not valid")
    await service.db.run(engagement.unsubscribe, claims, service.clock.now())
    return _page(service, "unsubscribed.html", title="Unsubscribed", email=_masked(found.email))


async def _keep_page(service: Service, request: web.Request,
                     claims: Claims) -> web.StreamResponse:
    found = await service.db.run(engagement.person, claims)
    if found is None:
        return _page(service, "invalid.html", 404, title="Link not valid")
    if found.consent != Consent.SUBSCRIBED:  # nothing to keep: no mail goes to them
        return _page(service, "unsubscribed.html", title="Unsubscribed",
                     email=_masked(found.email))
    return _page(service, "keep_subscribed.html", title="Keep me subscribed",
                 email=_masked(found.email), preferences=_here(service, "preferences", claims))


async def _keep_subscribed(service: Service, request: web.Request,
                           claims: Claims) -> web.StreamResponse:
    await request.read()  # the button's form has no field; any body will do
    found = await service.db.run(engagement.keep_subscribed, claims, service.clock.now())
    if found is None:
        return _page(service, "invalid.html", 404, title="Link not valid")
    if found.consent != Consent.SUBSCRIBED:  # staying needs an opt-in, not this button
        return _page(service, "unsubscribed.html", title="Unsubscribed",
                     email=_masked(found.email))
    return _page(service, "kept_subscribed.html", title="Thank you", email=_masked(found.email))


async def _confirm_page(service: Service, request: web.Request,
                        claims: Claims) -> web.StreamResponse:
    """A double opt-in's link: a page with the button; changes nothing (scanners GET)."""
    return await _confirming(service, request, claims, press=False)


async def _confirm(service: Service, request: web.Request,
                   claims: Claims) -> web.StreamResponse:
    await request.read()  # the button's form has no field; any body will do
    return await _confirming(service, request, claims, press=True)


async def _confirming(service: Service, request: web.Request, claims: Claims, *,
                      press: bool) -> web.StreamResponse:
    """The confirm link's answer: confirmed (200, also for a replay or an already
    subscribed customer), the button (GET of a pending customer), expired (410, nothing
    changed) or no longer waiting (410: withdrawn or opted out since)."""
    from mailer.delivery.confirmations import LINK_VALID, address_tag, link_expired
    from mailer.store.customers import confirm_opt_in

    found = await service.db.run(engagement.person, claims)
    if found is None:
        return _page(service, "invalid.html", 404, title="Link not valid")
    email = _masked(found.email)
    if found.consent == Consent.SUBSCRIBED:
        return _page(service, "confirmed.html", title="Subscribed", email=email)
    now = service.clock.now()
    if link_expired(claims, now):
        return _page(service, "confirm_expired.html", 410, title="Link expired",
                     days=LINK_VALID.days)
    if found.consent != Consent.PENDING or claims.campaign != address_tag(found.email):
        # withdrawn or opted out since, or a link sent to the address the customer had
        return _page(service, "confirm_closed.html", 410, title="Nothing to confirm",
                     email=email)
    if not press:
        return _page(service, "confirm.html", title="Confirm your subscription", email=email)
    before = await service.db.run(confirm_opt_in, claims.customer, now, request.remote)
    if before in (Consent.PENDING, Consent.SUBSCRIBED):
        return _page(service, "confirmed.html", title="Subscribed", email=email)
    return _page(service, "confirm_closed.html", 410, title="Nothing to confirm", email=email)


async def _preferences_page(service: Service, request: web.Request, claims: Claims,
                            saved: bool = False) -> web.StreamResponse:
    found = await service.db.run(engagement.person, claims)
    if found is None:
        return _page(service, "invalid.html", 404, title="Link not valid")
    now = service.clock.now()
    paused = found.paused_until.strftime("%d %B %Y") \
        if found.paused_until and found.paused_until > now else None
    unsubscribe = _here(service, "unsubscribe", claims)
    return _page(service, "preferences.html", title="Your preferences",
                 email=_masked(found.email), opted_out=found.consent in OPTED_OUT,
                 paused=paused, cap=found.weekly_cap, topics=found.topics,
                 all_topics=sorted(set(service.topics) | set(found.topics or [])),
                 unsubscribe=unsubscribe, saved=saved)


async def _save_preferences(service: Service, request: web.Request,
                            claims: Claims) -> web.StreamResponse:
    try:
        form = await _form(request)
    except BadForm as err:
        return _bad_form(service, str(err))
    found = await service.db.run(engagement.person, claims)
    if found is None:
        return _page(service, "invalid.html", 404, title="Link not valid")
    try:
        pause, cap, chosen = _preferences(form, offered=set(service.topics) |
                                          set(found.topics or []))
    except BadForm as err:
        return _bad_form(service, str(err))
    wanted = sorted(chosen & set(service.topics))  # a topic no campaign has any more goes
    topics = None if set(wanted) == set(service.topics) else wanted
    await service.db.run(engagement.set_preferences, claims, service.clock.now(),
                         pause=pause, weekly_cap=cap, topics=topics)
    return await _preferences_page(service, request, claims, saved=True)


class BadForm(ValueError):
    """A posted form that our pages would not have sent; the message says what."""


async def _form(request: web.Request) -> MultiDict[str]:
    """The fields of a form our pages post (application/x-www-form-urlencoded, UTF-8)."""
    if request.content_type not in ("", "application/x-www-form-urlencoded"):
        raise BadForm(f"a form sent as {request.content_type}")
    if (request.charset or "utf-8").lower() not in ("utf-8", "utf8"):
        raise BadForm(f"a form in {request.charset}")
    try:
        return MultiDict(parse_qsl((await request.read()).decode(), keep_blank_values=True,
                                   errors="strict", max_num_fields=MAX_FIELDS))
    except UnicodeDecodeError:
        raise BadForm("a form that is not UTF-8") from None
    except ValueError:
        raise BadForm(f"a form of more than {MAX_FIELDS} fields") from None


def _preferences(form: MultiDict[str], *, offered: set[str]
                 ) -> tuple[bool, int | None, set[str]]:
    """(pause, weekly cap, topics chosen) of the preference form, or BadForm."""
    pause = form.get("pause", "")
    if pause not in ("", "30d"):
        raise BadForm(f"pause: {pause[:20]!r} is not 30d")
    cap_text = form.get("weekly_cap", "").strip()
    cap = None
    if cap_text:
        # isdigit() says yes to "²" and int() takes any length: ASCII, two digits at most
        if not (cap_text.isascii() and cap_text.isdigit() and len(cap_text) <= 2
                and 1 <= int(cap_text) <= 50):
            raise BadForm(f"weekly_cap: {cap_text[:20]!r} is not a number from 1 to 50")
        cap = int(cap_text)
    chosen = set(form.getall("topic", []))
    if unknown := sorted(chosen - offered):
        raise BadForm(f"topic: {unknown[0][:40]!r} is not a topic of this store")
    return bool(pause), cap, chosen


def _bad_form(service: Service, problem: str) -> web.Response:
    return _page(service, "bad_form.html", 400, title="Form not valid", problem=problem)


def _score(claims: Claims) -> int | None:
    """The score a rating link carries, or None for one outside 1–5."""
    if not claims.extra.isdigit() or not 1 <= int(claims.extra) <= 5:
        return None
    return int(claims.extra)


async def _rating(service: Service, request: web.Request,
                  claims: Claims) -> web.StreamResponse:
    """The rating links of mails sent before surveys: the page records nothing (a mail
    scanner follows every link of a mail); its button does."""
    score = _score(claims)
    if score is None:
        return _page(service, "invalid.html", 400, title="Link not valid")
    return _page(service, "rate.html", title="Your rating", score=score)


async def _comment(service: Service, request: web.Request,
                   claims: Claims) -> web.StreamResponse:
    score = _score(claims)
    if score is None:
        return _page(service, "invalid.html", 400, title="Link not valid")
    try:
        form = await _form(request)
    except BadForm as err:
        return _bad_form(service, str(err))
    now = service.clock.now()
    await service.db.run(engagement.rate, claims, score, now)
    text = form.get("comment", "").strip()
    if text:
        await service.db.run(engagement.comment, claims, text, now)
    return _page(service, "rated.html", title="Thank you", score=score, commented=bool(text))


def _survey_page(asking: surveys.SurveyMails
                 ) -> Callable[[Service, web.Request, Claims], Awaitable[web.StreamResponse]]:
    async def shown(service: Service, request: web.Request,
                    claims: Claims) -> web.StreamResponse:
        asked = await service.db.run(asking.find, claims)
        if asked is None:
            return _page(service, "invalid.html", 404, title="Link not valid")
        try:
            first = surveys.first_answer(asked, claims.extra)
        except surveys.BadAnswer:
            return _page(service, "invalid.html", 400, title="Link not valid")
        return _survey(service, asked, {asked.first.id: str(first)})
    return shown


def _survey(service: Service, asked: surveys.Asked, chosen: dict[str, str],
            problem: str | None = None, status: int = 200) -> web.Response:
    from mailer.config.survey import SCALES, TEXT_LIMIT

    return _page(service, "survey.html", status, title=asked.survey.title,
                 questions=asked.survey.questions, scales=SCALES, chosen=chosen,
                 limit=TEXT_LIMIT, problem=problem)


def _answer(asking: surveys.SurveyMails
            ) -> Callable[[Service, web.Request, Claims], Awaitable[web.StreamResponse]]:
    async def answered(service: Service, request: web.Request,
                       claims: Claims) -> web.StreamResponse:
        # The token in the path is the form's CSRF guard: only the mail's reader has it.
        try:
            form = await _form(request)
        except BadForm as err:
            return _bad_form(service, str(err))
        asked = await service.db.run(asking.find, claims)
        if asked is None:
            return _page(service, "invalid.html", 404, title="Link not valid")
        try:
            surveys.first_answer(asked, claims.extra)  # a link the mail could have carried
        except surveys.BadAnswer:
            return _page(service, "invalid.html", 400, title="Link not valid")
        fields = {name: form.getall(name) for name in form}
        try:
            given = surveys.parse_answers(asked.survey, fields)
        except surveys.BadAnswer as err:
            return _survey(service, asked, {k: v[0] for k, v in fields.items() if v},
                           problem=str(err), status=400)
        await service.db.run(surveys.record, asked, given, service.clock.now(),
                             service.settings)
        return _page(service, "answered.html", title="Thank you", answered=len(given),
                     asked=len(asked.survey.questions))
    return answered


async def _click(service: Service, request: web.Request, claims: Claims) -> web.StreamResponse:
    target = claims.extra
    if not target.startswith(("https://", "http://")):
        return _page(service, "invalid.html", 400, title="Link not valid")
    service.hits.add(_hit(service, request, "click", claims, target))
    raise web.HTTPFound(target, headers={"Cache-Control": "no-store",
                                         "Referrer-Policy": "no-referrer"})


def _held_click(views: BrowserView
                ) -> Callable[[Service, web.Request, Claims], Awaitable[web.StreamResponse]]:
    """`/c/<click token>/<n>`: link N of those the token's campaign version holds, then
    recorded as a click on it as `/c/<token>` records one (a bad N: 400, nothing kept)."""
    async def click(service: Service, request: web.Request,
                    claims: Claims) -> web.StreamResponse:
        number, version = request.match_info["n"], claims.extra
        links = None
        if number.isdigit() and len(number) < 7 and number == str(int(number)) and \
                version.isdigit() and len(version) < 19:
            links = await service.db.run(views.held_links, int(version))
        if not links or int(number) >= len(links):
            return _page(service, "invalid.html", 400, title="Link not valid")
        clicked = Claims("click", claims.customer, claims.campaign, claims.message,
                         links[int(number)])
        return await _click(service, request, clicked)
    return click


def _open(service: Service) -> Handler:
    async def pixel(request: web.Request) -> web.StreamResponse:
        token = request.match_info["token"]
        try:
            claims = verify(token, "open", service.keys)
        except InvalidLink:
            claims = None  # a pixel never shows an error page
        if claims is not None:
            service.hits.add(_hit(service, request, "open", claims))
        return web.Response(body=PIXEL, content_type="image/gif",
                            headers={"Cache-Control": "no-store"})
    return pixel


def _hit(service: Service, request: web.Request, kind: str, claims: Claims,
         url: str | None = None) -> engagement.Hit:
    """An open or a click of this request: its user agent, its address hashed under the
    secret key (the address is never kept), and whether a privacy proxy made it."""
    agent = request.headers.get("User-Agent")
    ip = request.remote
    return engagement.Hit(kind, claims, service.clock.now(), url, machines.user_agent(agent),
                          machines.ip_hash(ip, service.keys[0]),
                          machine=kind == machines.OPEN and
                          machines.proxy_of(agent, ip) is not None)


def _link_counter(service: Service, views: BrowserView, renders: Renders) -> LinkCounter:
    """How many distinct tracked links a sent mail has: its HTML rendered again as the
    browser view does, click links counted by target (tokens are deterministic: one per
    target). Kept for the last 10,000 mails; None for a mail not renderable."""
    counts: OrderedDict[str, int] = OrderedDict()
    prefix = f'href="{service.base_url.rstrip("/")}/c/'

    async def count(claims: Claims) -> int | None:
        if claims.message in counts:
            counts.move_to_end(claims.message)
            return counts[claims.message]
        browser = Claims("browser", claims.customer, claims.campaign, claims.message)
        reading: Reading | None = await service.db.run(views.find, browser)
        if reading is None:
            return None
        try:
            body = await renders.run(views.render, reading)
        except (NotRenderable, RendersBusy):
            return None
        found = len({part.split('"', 1)[0] for part in body.split(prefix)[1:]})
        counts[claims.message] = found
        if len(counts) > 10_000:
            counts.popitem(last=False)
        return found
    return count


class RecentViews:
    """The browser views rendered last, by ledger row: a sent mail renders the same each
    time (now = its sent_at), so a link opened again, or by many at once, costs a
    lookup instead of a render. Used on the event loop only."""

    def __init__(self, size: int = 256) -> None:
        self._bodies: OrderedDict[tuple[int, int], str] = OrderedDict()
        self._size = size

    def get(self, key: tuple[int, int]) -> str | None:
        body = self._bodies.get(key)
        if body is not None:
            self._bodies.move_to_end(key)
        return body

    def put(self, key: tuple[int, int], body: str) -> None:
        self._bodies[key] = body
        if len(self._bodies) > self._size:
            self._bodies.popitem(last=False)


def _browser_view(service: Service, views: BrowserView, renders: Renders) -> Handler:
    """The sent mail a `/b/` link names, as its reader got it; one open per GET (as the
    pixel counts them: every view, batched), none for HEAD. 404 for any link that does
    not name a sent mail, 500 (and a log line) for one that no longer renders."""
    recent = RecentViews()

    async def view(request: web.Request) -> web.StreamResponse:
        try:
            claims = verify(request.match_info["token"], "browser", service.keys)
        except InvalidLink:
            return _page(service, "invalid.html", 404, title="Link not valid")
        try:
            reading: Reading | None = await service.db.run(views.find, claims)
            if reading is None:
                return _page(service, "invalid.html", 404, title="Link not valid")
            key = (reading.row.id, reading.row.campaign_version_id)
            body = recent.get(key)
            if body is None:
                body = await renders.run(views.render, reading)
                recent.put(key, body)
        except NotRenderable as err:
            log.warning("browser view of row %s: %s", claims.message, err)
            return _page(service, "view_failed.html", 500, title="Mail not available")
        except RendersBusy as err:
            log.warning("browser view of row %s: %s", claims.message, err)
            response = _page(service, "busy.html", 503, title="Try again in a moment")
            response.headers["Retry-After"] = RETRY_AFTER
            return response
        if request.method == "GET" and reading.tracks_opens:
            opened = Claims("open", claims.customer, claims.campaign, claims.message)
            service.hits.add(_hit(service, request, "open", opened))
        return web.Response(text=body, content_type="text/html", charset="utf-8",
                            headers=BROWSER_VIEW_HEADERS)
    return view


def _hook(service: Service) -> Handler:
    """A webhook (mailer.web.hooks): the body read to its own limit (5 MB, where every
    other path has MAX_BODY), checked, then written within HOOK_WAIT seconds."""
    from mailer.store.records import Context
    from mailer.web import hooks

    async def received(request: web.Request) -> web.StreamResponse:
        if (request.content_length or 0) > hooks.HOOK_BODY:
            return _plain(413, f"the body is larger than {hooks.HOOK_BODY // 2**20} MB", True)
        chunks: list[bytes] = []
        size = 0
        while chunk := await request.content.read(2**16):  # a chunked body counted too
            size += len(chunk)
            if size > hooks.HOOK_BODY:
                return _plain(413, f"the body is larger than {hooks.HOOK_BODY // 2**20} MB",
                              True)
            chunks.append(chunk)
        body = b"".join(chunks)
        source = request.match_info["source"]
        verdict = hooks.check(source, request.headers, body, service.hook_secrets)
        if isinstance(verdict, hooks.Answer):
            return _plain(verdict.status, verdict.reason)
        if service.settings is None:
            return _plain(503, "the service has no workspace settings")
        budget = _BUDGET.get()
        if budget is not None:  # 4 s, not 5: Shopify gives up on an answer after 5 s
            budget.deadline = time.monotonic() + hooks.HOOK_WAIT
        now = service.clock.now()
        try:
            answer = await service.db.run(hooks.write, source, verdict,
                                          Context.of(service.settings, now), now)
        except DatabaseUnavailable as err:
            log.warning("webhook from %s: %s", source, err)
            response = _plain(503, "the database did not answer in time; retry")
            response.headers["Retry-After"] = RETRY_AFTER
            return response
        return _plain(answer.status, answer.reason)
    return received


def _plain(status: int, reason: str, close: bool = False) -> web.Response:
    response = web.Response(text=reason + "\n", status=status)
    if close:
        response.force_close()  # the rest of the body is not read
    return response


def _health(service: Service) -> Handler:
    async def health(request: web.Request) -> web.StreamResponse:
        try:
            await service.db.run(engagement.ping)
        except DatabaseUnavailable as err:
            log.warning("health check: %s", err)
            return web.json_response({"database": "unavailable"}, status=503,
                                     headers={"Retry-After": RETRY_AFTER})
        return web.json_response({"database": "ok"})
    return health


async def serve(service: Service, host: str, port: int, say: Callable[[str], None],
                stop: asyncio.Event, *, app: web.Application | None = None) -> None:
    """Run the service (APP, else make_app's) until STOP; the first line said is
    `listening on HOST:PORT`."""
    runner = web.AppRunner(app or make_app(service), access_log=None)
    await runner.setup()
    assert runner.server is not None  # set up above
    listener = await listen(runner.server, service.limits, host, port)
    bound = listener.sockets[0].getsockname()
    say(f"listening on {bound[0]}:{bound[1]}")
    writer = asyncio.create_task(service.hits.run(stop))
    try:
        await stop.wait()
    finally:
        listener.close()
        await runner.cleanup()
        await writer  # what is pending is written before the process ends
        service.db.close()
