"""The console's guards, as aiohttp middlewares: who is logged in, the CSRF token of every
form posted, and the security headers with the console's CSP on every response.

A request without a valid session gets no data: an HTML page a redirect (303) to the
login page, JSON (`?format=json` or `Accept: application/json`) a 401 document, a POST a
403. Every POST carries the form field `csrf`: a `console_form` token bound to the
session's nonce (the login form's: to the nonce of its own cookie), else 403 and nothing
is done. Operator actions (forms that change the store) go through the same check.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import quote

from aiohttp import web

from mailer.web.console.auth import COOKIE, LOGIN_COOKIE, Keys, Session
from mailer.web.listener import HEADERS, SERVER, Connection

log = logging.getLogger("mailer.console")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
KEYS = web.AppKey("console_keys", Keys)
# The configured users' names: a session of a user taken out of MAILER_CONSOLE_USERS ends
# at the console's restart, not when its cookie expires.
USERS = web.AppKey("console_users", frozenset)
PUBLIC = frozenset({"/login", "/favicon.ico"})  # the only paths answered without a session
# No script at all; inline styles (the pages' one <style>), inline SVG charts, the
# preview's mail in a frame of our own (which gets FRAME_HEADERS).
CSP = ("default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; "
       "frame-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'")
# A mail shown in the preview's frame: its own styles, no remote image (a tracking pixel
# or a remote font would tell the world the marketer looked), no script, no form; framed
# by console pages only.
FRAME_HEADERS = {"Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
                                            "img-src data:; form-action 'none'; "
                                            "base-uri 'none'; sandbox; frame-ancestors 'self'",
                 "X-Frame-Options": "SAMEORIGIN"}


def wants_json(request: web.Request) -> bool:
    """`?format=json`, or an Accept header that prefers JSON to HTML."""
    if request.query.get("format") == "json":
        return True
    accept = request.headers.get("Accept", "")
    return "application/json" in accept and "text/html" not in accept


def session_of(request: web.Request) -> Session | None:
    found: Session | None = request.get("session")
    return found


@web.middleware
async def logged_in(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The session, then the CSRF token of a POST; the connection is busy meanwhile (its
    deadline for headers stops while the answer is worked out)."""
    connection = request.protocol if isinstance(request.protocol, Connection) else None
    if connection is not None:
        connection.request_started()
    try:
        return await _logged_in(request, handler)
    finally:
        if connection is not None:
            connection.request_finished()


async def _logged_in(request: web.Request, handler: Handler) -> web.StreamResponse:
    keys = request.app[KEYS]
    found = keys.session(request.cookies.get(COOKIE))
    if found is not None and found.user not in request.app.get(USERS, frozenset()):
        found = None
    request["session"] = found
    if found is None and request.path not in PUBLIC:
        if wants_json(request):
            return web.json_response({"error": {"message": "log in first", "login": "/login"}},
                                     status=401)
        if request.method in ("GET", "HEAD"):
            raise web.HTTPSeeOther("/login?next=" + quote(request.path_qs, safe="/?=&"))
        return web.Response(status=403, text="Log in first.\n")
    if request.method == "POST":
        form = await request.post()
        token = form.get("csrf")
        nonce = found.nonce if found is not None else request.cookies.get(LOGIN_COOKIE)
        if not isinstance(token, str) or not keys.form_ok(token, nonce):
            log.warning("console: %s %s refused: no valid CSRF token", request.method,
                        request.path[:60])
            return web.Response(status=403, text="This form has expired: reload the page "
                                                 "and send it again. Nothing was changed.\n")
    return await handler(request)


def csrf_token(request: web.Request) -> str:
    """The token the forms of this page carry."""
    found = session_of(request)
    assert found is not None, "a page with forms is shown to a session"
    return request.app[KEYS].form_token(found.nonce)


async def secured(request: web.Request, response: web.StreamResponse) -> None:
    """Every response: the headers of `mailer serve` with the console's own CSP (unless
    the handler chose its own, as the preview frame does), our Server."""
    for name, value in HEADERS.items():
        response.headers.setdefault(name, CSP if name == "Content-Security-Policy" else value)
    response.headers["Server"] = SERVER


def cookie_options(request: web.Request, max_age: int | None) -> dict[str, Any]:
    """HttpOnly, SameSite=Strict, the whole console's path; Secure behind https."""
    return {"httponly": True, "samesite": "Strict", "path": "/", "max_age": max_age,
            "secure": request.secure or request.headers.get("X-Forwarded-Proto") == "https"}
