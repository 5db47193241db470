"""The HTTP side under abuse (issue 15 item 8): slow clients cut off at real deadlines, a cap
on connections, a locked or unreachable database answered with 503 within a bound, bad form
values answered 400, and the security headers on every response.

The service runs in-process (its own event loop in a thread) on a real socket; slow clients
are raw sockets, the rest real HTTP. Deadlines are shortened through `Limits` so a test waits
about a second, not the production 10 s / 30 s / 5 s.
"""

from __future__ import annotations

import http.client
import json
import select
import socket
import sqlite3
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from queue import Queue
from typing import Any

import pytest
from aiohttp import web

from mailer.core.clock import Clock
from mailer.mail.links import Claims, sign
from mailer.store.db import create, database_url
from mailer.web.app import Database, Hits, Service, make_app
from mailer.web.listener import Limits
from tests.conftest import Workspace
from tests.in_process import running
from tests.test_delivery import KEY
from tests.test_serve import ADDRESSES, consent, events, shop

FAST = Limits(headers=1.0, body=2.0, database=1.0)  # body > database, as 30 s > 5 s
FORM = {"Content-Type": "application/x-www-form-urlencoded"}
SECURITY = {"content-security-policy": "default-src 'none'", "x-content-type-options": "nosniff",
            "referrer-policy": "no-referrer", "x-frame-options": "DENY",
            "cache-control": "no-store"}


def token(purpose: str, customer: str = "C0", extra: str = "") -> str:
    return sign(Claims(purpose, customer, "note", "1", extra), KEY)


def service_for(engine: Any, limits: Limits = FAST) -> Service:
    database = Database(engine, wait=limits.database)
    return Service(db=database, keys=(KEY,), store="Pine & Co", base_url="https://mail.shop.example",
                   topics=("general", "promotions"), clock=Clock(), hits=Hits(database),
                   limits=limits)


def request(port: int, method: str, path: str, body: str | bytes | None = None,
            headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def raw_answer(sock: socket.socket, *, trickle: bytes | None,
               give_up: float) -> tuple[bytes, float]:
    """What the server sends on SOCK (until it closes) while the client writes one byte of
    TRICKLE every 0.1 s, and the seconds until the server's first byte."""
    started = time.monotonic()
    answer = b""
    first_byte: float | None = None
    sock.setblocking(False)
    while time.monotonic() - started < give_up:
        readable, _, _ = select.select([sock], [], [], 0.1)
        if readable:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            first_byte = first_byte or time.monotonic() - started
            answer += chunk
        elif trickle and first_byte is None:
            try:
                sock.send(trickle[:1])
            except (BrokenPipeError, ConnectionResetError):
                break
            trickle = trickle[1:] or trickle
    return answer, first_byte if first_byte is not None else time.monotonic() - started


@contextmanager
def serving(workspace: Workspace, limits: Limits = FAST) -> Iterator[int]:
    engine = workspace.engine()
    try:
        with running(service_for(engine, limits)) as port:
            yield port
    finally:
        engine.dispose()


@pytest.fixture
def store(db: Workspace) -> Workspace:
    """The three customers of tests/test_serve.py, on SQLite and on PostgreSQL."""
    shop(db, ADDRESSES)
    return db


@pytest.fixture
def served(store: Workspace) -> Iterator[int]:
    with serving(store) as port:
        yield port


@pytest.fixture
def quick(ws: Workspace) -> Iterator[int]:
    """The service on SQLite only, for what does not depend on the database."""
    shop(ws, ADDRESSES)
    with serving(ws) as port:
        yield port


# --- slow clients ---------------------------------------------------------------------------


def test_headers_that_trickle_in_are_cut_off_at_the_header_deadline(quick: int) -> None:
    with socket.create_connection(("127.0.0.1", quick)) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        # a byte every 0.1 s: each one would reset an idle timer, none may extend the deadline
        answer, after = raw_answer(sock, trickle=b"X-Slow: " + b"a" * 200, give_up=5)
    assert answer.startswith(b"HTTP/1.1 408 "), answer
    assert 0.8 < after < 2.0
    assert b"\r\nConnection: close\r\n" in answer and b"\r\nX-Frame-Options: DENY\r\n" in answer


def test_a_connection_that_sends_nothing_is_closed_at_the_header_deadline(quick: int) -> None:
    with socket.create_connection(("127.0.0.1", quick)) as sock:
        answer, after = raw_answer(sock, trickle=None, give_up=5)
    assert answer.startswith(b"HTTP/1.1 408 ") and 0.8 < after < 2.0


def test_a_body_that_trickles_in_is_cut_off_at_the_body_deadline(
        served: int, store: Workspace) -> None:
    with socket.create_connection(("127.0.0.1", served)) as sock:
        sock.sendall(f"POST /u/{token('unsubscribe')} HTTP/1.1\r\nHost: x\r\n"
                     "Content-Type: application/x-www-form-urlencoded\r\n"
                     "Content-Length: 400\r\n\r\n".encode())
        answer, after = raw_answer(sock, trickle=b"List-Unsubscribe=One-Click&" * 20,
                                   give_up=6)
    assert answer.startswith(b"HTTP/1.1 408 "), answer
    assert 1.8 < after < 3.0
    assert consent(store, "anna@example.com")[0] == "subscribed"


def test_a_keep_alive_client_may_take_longer_than_the_deadline_over_several_requests(
        quick: int) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", quick, timeout=5)
    try:
        for _ in range(3):  # 1.8 s on one connection, each request quick
            conn.request("GET", "/healthz")
            response = conn.getresponse()
            assert response.status == 200 and json.loads(response.read()) == {"database": "ok"}
            time.sleep(0.6)  # idle between requests: the keep-alive timeout's business
    finally:
        conn.close()


def test_the_deadlines_default_to_ten_and_thirty_seconds_and_a_thousand_connections() -> None:
    assert Limits() == Limits(headers=10.0, body=30.0, connections=1000, database=5.0)


# --- too many connections -----------------------------------------------------------------


def test_beyond_a_thousand_connections_a_new_one_is_answered_503_and_closed(
        ws: Workspace) -> None:
    shop(ws, ADDRESSES)
    engine = ws.engine()
    idle: list[socket.socket] = []
    try:
        with running(service_for(engine, Limits())) as port:
            for _ in range(1000):
                idle.append(socket.create_connection(("127.0.0.1", port)))
            # the thousandth was admitted (accepts are in order): it gets an answer
            idle[-1].sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            assert idle[-1].recv(65536).startswith(b"HTTP/1.1 200 ")
            status, headers, _ = request(port, "GET", "/healthz")
            assert status == 503 and headers["retry-after"] == "1"
            assert headers["x-content-type-options"] == "nosniff"
            idle.pop(0).close()  # one leaves: a newcomer gets in
            deadline = time.monotonic() + 5
            while request(port, "GET", "/healthz")[0] != 200:
                assert time.monotonic() < deadline
    finally:
        for sock in idle:
            sock.close()
        engine.dispose()


# --- the database locked or down --------------------------------------------------------------


@contextmanager
def locked(db: Workspace) -> Iterator[None]:
    """Another connection holding the write lock (SQLite) or a lock on customers (PostgreSQL)."""
    if db.database is None:
        holder = sqlite3.connect(db.root / "mailer.db", isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
        holder.execute("UPDATE customers SET city = city")
        try:
            yield
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        return
    from sqlalchemy import text

    engine = db.engine()
    with engine.connect() as conn:
        conn.execute(text("LOCK TABLE customers IN ACCESS EXCLUSIVE MODE"))
        try:
            yield
        finally:
            conn.rollback()
    engine.dispose()


def timed(call: Callable[[], tuple[int, dict[str, str], bytes]]
          ) -> tuple[int, dict[str, str], float]:
    started = time.monotonic()
    status, headers, _ = call()
    return status, headers, time.monotonic() - started


def test_a_locked_database_gets_503_with_retry_after_within_the_bound_then_works(
        served: int, store: Workspace) -> None:
    path = f"/u/{token('unsubscribe')}"
    with locked(store):
        with ThreadPoolExecutor(20) as pool:  # more at once than the service has threads
            answers = list(pool.map(lambda _: timed(lambda: request(
                served, "POST", path, "List-Unsubscribe=One-Click", FORM)), range(20)))
        for status, headers, took in answers:
            assert status == 503 and headers["retry-after"] == "5" and took < 2.5
            assert headers["x-frame-options"] == "DENY"
    status, _, body = request(served, "POST", path, "List-Unsubscribe=One-Click", FORM)
    assert status == 200 and b"You are unsubscribed" in body
    assert consent(store, "anna@example.com")[:2] == ("unsubscribed", "link")


def test_what_was_acknowledged_while_the_database_was_locked_is_stored(store: Workspace) -> None:
    engine = store.engine()
    limits = Limits(headers=1.0, body=5.0, database=3.0)
    try:
        clicked: Queue[int] = Queue()
        with running(service_for(engine, limits)) as port:
            def reader(n: int) -> tuple[str, int, int]:
                customer = f"C{n % 3}"
                click = request(port, "GET", f"/c/{token('click', customer, 'https://shop.example/')}")
                clicked.put(click[0])
                unsubscribe = request(port, "POST", f"/u/{token('unsubscribe', customer)}",
                                      "List-Unsubscribe=One-Click", FORM)
                return customer, click[0], unsubscribe[0]

            with ThreadPoolExecutor(9) as pool:
                with locked(store):
                    futures = [pool.submit(reader, n) for n in range(9)]
                    # every click answered while the lock is held, then let go: the
                    # unsubscribes waiting behind it go on (a sleep here passed under load
                    # before the readers had even sent their clicks)
                    assert [clicked.get(timeout=30) for _ in range(9)] == [302] * 9
                results = [f.result() for f in futures]
            assert {r[1] for r in results} == {302}
            assert {r[2] for r in results} == {200}
        # the service has stopped, and a clean stop writes what was pending: all, and no more
        assert len(events(store, "click")) == 9
    finally:
        engine.dispose()
    assert [consent(store, a)[0] for a in ADDRESSES] == ["unsubscribed"] * 3


def test_healthz_reports_the_database(store: Workspace) -> None:
    engine = store.engine()
    try:
        with running(service_for(engine)) as port:
            status, headers, body = request(port, "GET", "/healthz")
            assert status == 200 and json.loads(body) == {"database": "ok"}
            assert headers["content-type"].startswith("application/json")
    finally:
        engine.dispose()


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize("url", [
    pytest.param(lambda tmp: f"postgresql://postgres@127.0.0.1:{_closed_port()}/mailer",
                 id="postgresql-closed-port"),
    pytest.param(lambda tmp: f"sqlite:///{tmp}/no/such/dir/mailer.db", id="sqlite-unopenable")])
def test_a_database_that_is_down_gets_503_within_the_bound_and_healthz_says_so(
        url: Callable[[Path], str], tmp_path: Path) -> None:
    engine = create(database_url(env_url=url(tmp_path), configured=None, root=tmp_path))
    try:
        with running(service_for(engine, Limits(headers=1.0, body=2.0, database=0.5))) as port:
            status, headers, took = timed(lambda: request(
                port, "POST", f"/u/{token('unsubscribe')}", "", FORM))
            assert status == 503 and headers["retry-after"] == "5" and 0.3 < took < 1.5
            status, headers, body = request(port, "GET", "/healthz")
            assert status == 503 and json.loads(body) == {"database": "unavailable"}
            # a click is still redirected: the reader gets their page, the hit waits
            status, headers, _ = request(port, "GET",
                                         f"/c/{token('click', extra='https://shop.example/')}")
            assert status == 302 and headers["location"] == "https://shop.example/"
    finally:
        engine.dispose()


# --- bad form values ------------------------------------------------------------------------


@pytest.mark.parametrize(("body", "headers"), [
    ("weekly_cap=%C2%B2", FORM),                    # ² is a digit to str.isdigit, not to int
    ("weekly_cap=abc", FORM),
    ("weekly_cap=" + "9" * 5000, FORM),             # past int()'s 4,300 digits
    ("weekly_cap=0", FORM),
    ("weekly_cap=-1", FORM),
    ("weekly_cap=1.5", FORM),
    ("topic=no-such-topic", FORM),
    ("pause=forever", FORM),
    ("weekly_cap=%FF", FORM),                       # not UTF-8 once decoded
    (b"topic=\xff\xfe", FORM),
    ("weekly_cap=1", {"Content-Type": "application/x-www-form-urlencoded; charset=bogus"}),
    ("&".join(f"topic=general&x{n}=1" for n in range(600)), FORM),
    ("--b\r\nContent-Disposition: form-data; name=\"weekly_cap\"\r\n\r\n1\r\n--b--\r\n",
     {"Content-Type": "multipart/form-data; boundary=b"}),
], ids=["superscript", "letters", "huge", "zero", "negative", "fraction", "unknown-topic",
        "pause-word", "percent-ff", "raw-ff", "bogus-charset", "many-fields", "multipart"])
def test_bad_preference_values_are_400_and_change_nothing(
        quick: int, ws: Workspace, body: str | bytes, headers: dict[str, str]) -> None:
    before = consent(ws, "anna@example.com")
    status, answer_headers, page = request(quick, "POST", f"/p/{token('preferences')}", body,
                                           headers)
    assert status == 400, page
    assert b"could not be read" in page and answer_headers["x-frame-options"] == "DENY"
    assert consent(ws, "anna@example.com") == before


def test_good_preference_values_still_save(served: int, store: Workspace) -> None:
    status, _, page = request(served, "POST", f"/p/{token('preferences')}",
                              "weekly_cap=&topic=general", FORM)
    assert status == 200 and b'id="saved"' in page
    status, _, _ = request(served, "POST", f"/p/{token('preferences', 'C1')}",
                           "weekly_cap=2&pause=30d", FORM)
    assert status == 200
    assert consent(store, "bob@example.com")[3] == 2 and consent(store, "bob@example.com")[2]


def test_a_rating_comment_with_control_characters_is_stored_without_them(
        served: int, store: Workspace) -> None:
    rating = f"/r/{token('rating', extra='4')}"
    assert request(served, "GET", rating)[0] == 200
    status, _, _ = request(served, "POST", rating, "comment=fine%00then%1b[31m%0Aok", FORM)
    assert status == 200
    assert [e[5] for e in events(store, "rating")] == ["finethen[31m\nok"]


# --- the security headers on every response ---------------------------------------------------


def _secure(headers: dict[str, str]) -> None:
    for name, value in SECURITY.items():
        assert headers.get(name, "").startswith(value), (name, headers)
    assert headers["server"] == "mailer"


def test_every_response_carries_the_security_headers_and_no_framework_version(
        ws: Workspace) -> None:
    shop(ws, ADDRESSES)
    engine = ws.engine()
    service = service_for(engine)
    app = make_app(service)

    async def broken(request: web.Request) -> web.StreamResponse:
        raise RuntimeError("a bug")

    app.router.add_get("/broken", broken)
    try:
        with running(service, app) as port:
            for method, path, body, status in [
                    ("GET", f"/u/{token('unsubscribe')}", None, 200),
                    ("GET", f"/c/{token('click', extra='https://shop.example/')}", None, 302),
                    ("GET", f"/o/{token('open')}", None, 200),
                    ("GET", "/healthz", None, 200),
                    ("GET", "/u/not-a-token", None, 400),
                    ("GET", "/nowhere", None, 404),
                    ("PUT", f"/u/{token('unsubscribe')}", "", 405),
                    ("POST", f"/u/{token('unsubscribe')}", "x" * 40_000, 413),
                    ("GET", "/broken", None, 500)]:
                answer, headers, page = request(port, method, path, body, FORM if body else None)
                assert answer == status, (path, answer)
                _secure(headers)
                assert b"aiohttp" not in page and b"Traceback" not in page
            with socket.create_connection(("127.0.0.1", port)) as sock:  # not even HTTP
                sock.sendall(b"GET /\x00 HTTP/1.1\r\n\r\n")
                answer_bytes, _ = raw_answer(sock, trickle=None, give_up=5)
            head = answer_bytes.split(b"\r\n\r\n", 1)[0].decode().split("\r\n")
            assert head[0].startswith("HTTP/1.") and head[0].split()[1] == "400"
            _secure({k.lower(): v.strip() for k, v in (line.split(":", 1) for line in head[1:])})
    finally:
        engine.dispose()
