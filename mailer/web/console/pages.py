"""The console's pages: each handler gets its document from mailer.web.console.data (in
a thread: the work is the application layer's, synchronous) and answers it as JSON, or
renders it with the templates beside this module (Jinja, autoescaped: customers' names,
comments and subjects are text, never markup). Numbers and dates are written in
store.locale (Babel), times in the workspace's zone.

Operator actions (pause, test send, suppress, retry) are mailer.web.console.actions':
a confirmation page, then a form posted behind the guard's session and CSRF checks.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import date, datetime
from email import message_from_bytes
from email.policy import default as default_policy
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import jinja2
from aiohttp import web

from mailer.config.settings import Environment
from mailer.core.errors import MailerError, NotFoundError, UserError
from mailer.mail import formats
from mailer.mail.formats import Locale, reader_locale
from mailer.web.console import data
from mailer.web.console.auth import COOKIE, LOGIN_COOKIE, Keys, Throttle, login
from mailer.web.console.guard import (
    FRAME_HEADERS,
    KEYS,
    USERS,
    cookie_options,
    csrf_token,
    session_of,
    wants_json,
)
from mailer.web.console.outbox import Outbox

log = logging.getLogger("mailer.console")
T = TypeVar("T")
TEMPLATES = Path(__file__).with_name("templates")


class Console:
    """What the handlers share: the store, the users, the threads, the templates."""

    def __init__(self, store: data.Store, users: dict[str, str], keys: Keys, *,
                 throttle: Throttle | None = None, outbox: Path | None = None,
                 env: Environment | None = None) -> None:
        self.store = store
        self.env = env  # MAILER_SMTP_URL and the keys a test send needs
        self.users = users
        self.keys = keys
        self.throttle = throttle or Throttle()
        self.outbox = Outbox(outbox) if outbox is not None else None
        self.threads = ThreadPoolExecutor(4, thread_name_prefix="mailer-console")
        self.logins = asyncio.Semaphore(1)  # one scrypt at a time: 128 MiB at most
        self.locale = reader_locale(None, store.settings.store.locale)
        self.tz_name = store.settings.timezone
        self.templates = jinja2.Environment(
            loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True,
            undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
        self.templates.filters.update(_filters(self.locale, self.tz_name))

    async def run(self, work: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.threads, lambda: work(*args, **kwargs))


CONSOLE = web.AppKey("console", Console)


def _filters(locale: Locale, tz_name: str) -> dict[str, Callable[..., str]]:
    def when(value: str | datetime | None) -> str:
        if value is None:
            return "—"
        moment = datetime.fromisoformat(value) if isinstance(value, str) else value
        return formats.local_datetime(moment, "medium", locale, tz_name)

    def day(value: str | None) -> str:
        if not value:
            return "—"
        return formats.local_date(date.fromisoformat(value[:10]), "medium", locale, tz_name)

    def number(value: float | int | None, places: int = 0) -> str:
        return "—" if value is None else formats.fixed(value, places, locale)

    def percent(value: float | None, places: int = 1) -> str:
        """A share 0-1 as a percentage."""
        return "—" if value is None else formats.share(value, places, locale)

    def rate(part: int, whole: int) -> str:
        return "—" if not whole else percent(part / whole)

    def shown(value: Any, key: str = "") -> str:
        """Any value of a card as a person reads it (money with two places)."""
        if value is None or value == "":
            return "—"
        if isinstance(value, bool):
            return "yes" if value else "no"
        if isinstance(value, int | float):
            return number(value, 2 if key in MONEY else (3 if isinstance(value, float)
                                                          and value % 1 else 0))
        if isinstance(value, list):
            return ", ".join(shown(v) for v in value) or "—"
        if isinstance(value, dict):
            return ", ".join(f"{k}: {shown(v, k)}" for k, v in value.items()) or "—"
        text = str(value)
        if _ISO_TIME.fullmatch(text):
            return when(text)
        if _ISO_DATE.fullmatch(text):
            return day(text)
        return text

    return {"when": when, "day": day, "number": number, "percent": percent, "rate": rate,
            "shown": shown}


MONEY = frozenset({"spent", "average_order", "predicted_clv_365d"})  # as `mailer customer`
_ISO_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d(:\d\d(\.\d+)?)?(Z|[+-]\d\d:\d\d)")
_ISO_DATE = re.compile(r"\d{4}-\d\d-\d\d")


def render(request: web.Request, name: str, status: int = 200, **values: Any) -> web.Response:
    console = request.app[CONSOLE]
    from mailer.web.console.actions import NOTICES

    found = session_of(request)
    values.setdefault("notice", NOTICES.get(request.query.get("done", "")) if found else None)
    body = console.templates.get_template(name).render(
        user=found.user if found else None, csrf=csrf_token(request) if found else "",
        path=request.path, store=console.store.settings.store.name,
        outbox=console.outbox is not None, json_url=_json_url(request), **values)
    return web.Response(text=body, status=status, content_type="text/html", charset="utf-8")


def _json_url(request: web.Request) -> str:
    query = [f"{quote(k)}={quote(v)}" for k, v in request.query.items() if k != "format"]
    return request.path + "?" + "&".join([*query, "format=json"])


def answer(request: web.Request, document: Any, name: str, **values: Any) -> web.Response:
    """DOCUMENT as JSON, or the page NAME showing it."""
    if wants_json(request):
        return web.json_response(document, dumps=_dumps)
    return render(request, name, document=document, **values)


def _dumps(value: Any) -> str:
    import json

    return json.dumps(value, ensure_ascii=False)


# --- login and logout --------------------------------------------------------------------

def _next(value: str | None) -> str:
    """Where to go after logging in: a path of this console only (no open redirect)."""
    if value and value.startswith("/") and not value.startswith(("//", "/\\")) and \
            value.isprintable() and len(value) < 2000:
        return value
    return "/campaigns"


async def login_page(request: web.Request, problem: str | None = None,
                     status: int = 200) -> web.StreamResponse:
    console = request.app[CONSOLE]
    import secrets

    # the nonce of an earlier login page stays (another tab, the browser's own requests
    # for an icon sent here): its form must keep working
    nonce = request.cookies.get(LOGIN_COOKIE, "")
    if not (16 <= len(nonce) <= 64 and nonce.replace("-", "").replace("_", "").isalnum()):
        nonce = secrets.token_urlsafe(16)
    body = console.templates.get_template("login.html").render(
        user=None, csrf=console.keys.form_token(nonce), path="/login", outbox=False,
        store=console.store.settings.store.name, next=_next(request.query.get("next")),
        problem=problem, json_url="", title="Log in")
    response = web.Response(text=body, status=status, content_type="text/html",
                            charset="utf-8")
    response.set_cookie(LOGIN_COOKIE, nonce, **cookie_options(request, 600))
    return response


async def login_post(request: web.Request) -> web.StreamResponse:
    console = request.app[CONSOLE]
    form = await request.post()
    name, password = str(form.get("user", ""))[:64], str(form.get("password", ""))[:1024]
    address = request.remote or "?"
    # Earlier failures slow the next attempt before its check, right or wrong: a wait
    # that only followed a failure would tell a guess that is right by its speed.
    await asyncio.sleep(console.throttle.delay(address, time.monotonic()))
    async with console.logins:
        ok = await console.run(login, console.users, name, password)
    if not ok:
        count = console.throttle.failed(address, time.monotonic())
        wait = console.throttle.delay(address, time.monotonic())
        log.warning("console: failed login for %r from %s (%d in a row; answered after "
                    "%.1f s)", name, address, count, wait)
        await asyncio.sleep(wait)
        return await login_page(request, "That name and password do not match.", 401)
    console.throttle.succeeded(address)
    log.info("console: %r logged in from %s", name, address)
    _, token = console.keys.new_session(name)
    response = _see_other(_next(str(form.get("next", ""))))
    response.set_cookie(COOKIE, token, **cookie_options(request, console.keys.seconds))
    response.del_cookie(LOGIN_COOKIE, path="/")
    return response


def _see_other(location: str) -> web.Response:
    return web.Response(status=303, headers={"Location": location})


async def logout(request: web.Request) -> web.StreamResponse:
    response = _see_other("/login")
    response.del_cookie(COOKIE, path="/")
    return response


# --- the pages ----------------------------------------------------------------------------

async def no_icon(request: web.Request) -> web.StreamResponse:
    return web.Response(status=404, text="No icon.\n")


async def home(request: web.Request) -> web.StreamResponse:
    raise web.HTTPSeeOther("/campaigns")


async def campaigns_page(request: web.Request) -> web.StreamResponse:
    console = request.app[CONSOLE]
    document = await console.run(data.campaigns, console.store)
    return answer(request, document, "campaigns.html", title="Campaigns")


async def report_page(request: web.Request) -> web.StreamResponse:
    console = request.app[CONSOLE]
    slug = request.match_info["campaign"]
    document, chart = await console.run(data.report, console.store, slug)
    if wants_json(request):
        return web.json_response(document, dumps=_dumps)
    return render(request, "report.html", document=document, chart=chart,
                  title=document["name"] or slug)


async def customers_page(request: web.Request) -> web.StreamResponse:
    console = request.app[CONSOLE]
    document = await console.run(data.search, console.store, request.query.get("q", ""))
    return answer(request, document, "customers.html", title="Customers")


async def card_page(request: web.Request) -> web.StreamResponse:
    console = request.app[CONSOLE]
    document = await console.run(data.customer, console.store, request.match_info["who"])
    profile = document["profile"]
    name = " ".join(filter(None, (profile["first_name"], profile["last_name"])))
    return answer(request, document, "card.html", title=name or document["email"])


async def segments_page(request: web.Request) -> web.StreamResponse:
    console = request.app[CONSOLE]
    document = await console.run(data.segments, console.store)
    return answer(request, document, "segments.html", title="Segments")


async def segments_refresh(request: web.Request) -> web.StreamResponse:
    console = request.app[CONSOLE]
    await console.run(data.segments, console.store, fresh=True)
    return _see_other("/segments")


async def forecast_page(request: web.Request) -> web.StreamResponse:
    console = request.app[CONSOLE]
    document, view = await console.run(data.forecast, console.store)
    if wants_json(request):
        return web.json_response(document, dumps=_dumps)
    if view is None:
        return render(request, "forecast.html", document=document, chart=None, days=[],
                      topics={}, title="Forecast")
    return render(request, "forecast.html", document=document, chart=view.chart,
                  days=view.days, topics=view.topics, title="Forecast")


async def forecast_refresh(request: web.Request) -> web.StreamResponse:
    console = request.app[CONSOLE]
    await console.run(data.forecast, console.store, fresh=True)
    return _see_other("/forecast")


async def surveys_page(request: web.Request) -> web.StreamResponse:
    console = request.app[CONSOLE]
    document = await console.run(data.surveys, console.store)
    kinds = {s["survey"]: {q["id"]: q["kind"] for q in s["questions"]}
             for s in document["surveys"]}
    return answer(request, document, "surveys.html", title="Surveys", kinds=kinds,
                  unhappy=data.unhappy)


async def preview_index(request: web.Request) -> web.StreamResponse:
    console = request.app[CONSOLE]
    slugs = await console.run(data.preview_campaigns, console.store)
    return answer(request, {"campaigns": slugs}, "preview_index.html", title="Preview")


async def _samples(request: web.Request) -> tuple[str, datetime, list[Any]]:
    console = request.app[CONSOLE]
    slug = request.match_info["campaign"]
    at, samples = await console.run(data.preview, console.store, slug)
    return slug, at, samples


async def preview_campaign(request: web.Request) -> web.StreamResponse:
    slug, at, samples = await _samples(request)
    return answer(request, data.preview_json(at, slug, samples), "preview_campaign.html",
                  title=f"Preview of {slug}")


def _sample(request: web.Request, samples: list[Any]) -> tuple[int, Any]:
    number = request.match_info["n"]
    if not number.isdigit() or not 1 <= int(number) <= len(samples):
        raise NotFoundError(f"no sample {number[:10]!r}")
    return int(number), samples[int(number) - 1]


async def preview_mail(request: web.Request) -> web.StreamResponse:
    slug, at, samples = await _samples(request)
    number, sample = _sample(request, samples)
    message = message_from_bytes(sample.eml, policy=default_policy)
    headers = [(name, str(value)) for name, value in message.items()
               if not name.lower().startswith(("content-", "mime-"))]
    document = {**data.preview_json(at, slug, [sample])["samples"][0],
                "headers": dict(headers), "text": sample.text}
    return answer(request, document, "preview_mail.html", title=sample.subject, slug=slug,
                  number=number, headers=headers)


async def preview_html(request: web.Request) -> web.StreamResponse:
    _, _, samples = await _samples(request)
    _, sample = _sample(request, samples)
    return web.Response(text=sample.html, content_type="text/html", charset="utf-8",
                        headers=FRAME_HEADERS)


# --- the outbox (a `mailer sink` Maildir) ------------------------------------------------

def _outbox(request: web.Request) -> Outbox:
    found = request.app[CONSOLE].outbox
    if found is None:
        raise NotFoundError("no outbox: start the console with --outbox DIR (a mailer sink "
                            "Maildir)")
    return found


async def outbox_page(request: web.Request) -> web.StreamResponse:
    console, outbox = request.app[CONSOLE], _outbox(request)
    offset = request.query.get("offset", "0")
    start = int(offset) if offset.isdigit() and len(offset) < 9 else 0
    document = await console.run(outbox.mails, request.query.get("q", ""), offset=start)
    return answer(request, document, "outbox.html", title="Outbox")


async def outbox_mail(request: web.Request) -> web.StreamResponse:
    console, outbox = request.app[CONSOLE], _outbox(request)
    document, _ = await console.run(outbox.mail, request.match_info["mail"])
    return answer(request, document, "outbox_mail.html", title=document["subject"] or "(none)")


async def outbox_html(request: web.Request) -> web.StreamResponse:
    console, outbox = request.app[CONSOLE], _outbox(request)
    _, html = await console.run(outbox.mail, request.match_info["mail"])
    if html is None:
        raise NotFoundError("this mail has no HTML part")
    return web.Response(text=html, content_type="text/html", charset="utf-8",
                        headers=FRAME_HEADERS)


async def outbox_raw(request: web.Request) -> web.StreamResponse:
    console, outbox = request.app[CONSOLE], _outbox(request)
    data = await console.run(outbox.raw, request.match_info["mail"])
    # as text, never as a page or a download the browser would open as mail
    return web.Response(body=data, content_type="text/plain", charset="utf-8")


# --- errors ------------------------------------------------------------------------------

@web.middleware
async def problems(request: web.Request, handler: Callable[[web.Request],
                                                           Awaitable[web.StreamResponse]]
                   ) -> web.StreamResponse:
    """An unknown campaign or customer: 404; a workspace problem: 409 with its message;
    anything else: 500 and a log line. As JSON for JSON, else a page."""
    try:
        return await handler(request)
    except web.HTTPException:
        raise
    except NotFoundError as err:
        return _problem(request, 404, str(err))
    except (UserError, MailerError) as err:
        return _problem(request, 409, str(err))
    except Exception:
        log.exception("console: %s %s failed", request.method, request.path[:60])
        return _problem(request, 500, "Something went wrong; the log says what.")


def _problem(request: web.Request, status: int, message: str) -> web.Response:
    if wants_json(request):
        return web.json_response({"error": {"message": message}}, status=status)
    if session_of(request) is None:
        return web.Response(status=status, text=message + "\n")
    return render(request, "problem.html", status, title="Not here", problem=message)


Route = tuple[str, str, Callable[[web.Request], Awaitable[web.StreamResponse]]]
ROUTES: list[Route] = [
    ("GET", "/login", login_page), ("POST", "/login", login_post),
    ("POST", "/logout", logout), ("GET", "/", home), ("GET", "/favicon.ico", no_icon),
    ("GET", "/campaigns", campaigns_page), ("GET", "/campaigns/{campaign}", report_page),
    ("GET", "/customers", customers_page), ("GET", "/customers/{who}", card_page),
    ("GET", "/segments", segments_page), ("POST", "/segments/refresh", segments_refresh),
    ("GET", "/forecast", forecast_page), ("POST", "/forecast/refresh", forecast_refresh),
    ("GET", "/surveys", surveys_page),
    ("GET", "/preview", preview_index), ("GET", "/preview/{campaign}", preview_campaign),
    ("GET", "/preview/{campaign}/{n}", preview_mail),
    ("GET", "/preview/{campaign}/{n}/html", preview_html),
    ("GET", "/outbox", outbox_page), ("GET", "/outbox/{mail}", outbox_mail),
    ("GET", "/outbox/{mail}/html", outbox_html), ("GET", "/outbox/{mail}/raw", outbox_raw),
]


def add_routes(app: web.Application) -> None:
    from mailer.web.console.actions import ROUTES as ACTIONS

    for method, path, handler in [*ROUTES, *ACTIONS]:
        app.router.add_route(method, path, handler)
    app[KEYS] = app[CONSOLE].keys
    app[USERS] = frozenset(app[CONSOLE].users)
