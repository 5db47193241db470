"""HTTP benchmark: signed Shopify `orders/create` webhooks against `mailer serve`, beside
the one-click unsubscribe endpoint in the same run; then every delivery again (all
replays); every event must be stored exactly once.

    python bench/hooks.py [--requests 3000] [--seconds 20] [--concurrency 16]
                          [--database-url URL]

A store of 2,000 demo customers (SQLite under bench/.data/, or the PostgreSQL database
given, which is emptied); `mailer serve` in its own process; the load generator
(aiohttp, keep-alive, CONCURRENCY requests in flight) in this one, on loopback. Each
order is the sample tests/data/hooks/shopify_orders_create.json with its own order id
and one of REQUESTS/4 customers (a quarter of the orders create their customer, the
rest update a returning one), signed with X-Shopify-Hmac-Sha256 as Shopify signs.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import copy
import hashlib
import hmac
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from harness import latency_row

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "bench" / ".data" / "hooks"
SAMPLE = ROOT / "tests" / "data" / "hooks" / "shopify_orders_create.json"
KEY = "bench-secret-key"
SHOPIFY_SECRET = "bench-shopify-secret"

Request = tuple[str, str, bytes, dict[str, str]]


def _start(args: list[str], env: dict[str, str]) -> tuple[subprocess.Popen[str], int]:
    process = subprocess.Popen(args, env=env, text=True, stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL)
    assert process.stdout is not None
    line = process.stdout.readline().strip()
    if not line.startswith("listening on"):
        raise SystemExit(f"server did not start: {line!r}")
    return process, int(line.rsplit(":", 1)[1])


async def _load(port: int, requests: list[Request], seconds: float, concurrency: int,
                expect: str | None = None) -> tuple[int, float, list[float]]:
    """Send REQUESTS with CONCURRENCY in flight; (done, elapsed, latencies in ms). Every
    answer must be 200 (and start with EXPECT when given)."""
    import aiohttp

    latencies: list[float] = []
    queue = iter(requests)
    deadline = time.perf_counter() + seconds
    failures: list[str] = []

    async def worker(session: aiohttp.ClientSession) -> None:
        for method, path, body, headers in queue:
            if time.perf_counter() > deadline:
                return
            started = time.perf_counter()
            async with session.request(method, f"http://127.0.0.1:{port}{path}",
                                       data=body, headers=headers) as response:
                text = await response.text()
                if response.status != 200 or (expect and not text.startswith(expect)):
                    failures.append(f"{response.status} {text.strip()[:80]}")
            latencies.append((time.perf_counter() - started) * 1000)

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        started = time.perf_counter()
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    if failures:
        raise SystemExit(f"{len(failures)} requests failed, e.g. {failures[0]}")
    return len(latencies), elapsed, latencies


def orders(count: int) -> list[Request]:
    """COUNT signed orders/create deliveries, each its own order and delivery id."""
    sample = json.loads(SAMPLE.read_bytes())
    customers = max(1, count // 4)
    made = []
    for n in range(count):
        order = copy.deepcopy(sample)
        order["id"] = 6_000_000_000_000 + n
        order["checkout_id"] = None
        who = n % customers
        order["customer"]["id"] = 8_000_000_000_000 + who
        order["customer"]["email"] = order["email"] = f"buyer{who}@example.com"
        body = json.dumps(order).encode()
        signature = base64.b64encode(hmac.new(SHOPIFY_SECRET.encode(), body,
                                              hashlib.sha256).digest()).decode()
        made.append(("POST", "/hooks/shopify", body, {
            "Content-Type": "application/json", "X-Shopify-Topic": "orders/create",
            "X-Shopify-Webhook-Id": f"bench-{n}", "X-Shopify-Hmac-Sha256": signature}))
    return made


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--database-url")
    options = parser.parse_args()

    from sqlalchemy import create_engine, text

    from mailer.mail.links import Claims, sign

    shutil.rmtree(DATA, ignore_errors=True)
    DATA.mkdir(parents=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILER_")}
    env.update(MAILER_SECRET_KEY=KEY, MAILER_SHOPIFY_SECRET=SHOPIFY_SECRET)
    if options.database_url:
        env["MAILER_DATABASE_URL"] = options.database_url
    mailer = [sys.executable, "-m", "mailer.cli", "--workspace", str(DATA / "shop")]
    subprocess.run([sys.executable, "-m", "mailer.cli", "init", str(DATA / "shop")], env=env,
                   check=True, stdout=subprocess.DEVNULL)
    subprocess.run([*mailer, "db", "upgrade"], env=env, check=True, stdout=subprocess.DEVNULL)
    subprocess.run([*mailer, "demo-data", "--customers", "2000", "--seed", "3", "--replace",
                    "--now", "2026-11-23T10:00"], env=env, check=True, stdout=subprocess.DEVNULL)
    url = options.database_url or f"sqlite:///{DATA / 'shop' / 'mailer.db'}"
    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    with engine.connect() as conn:
        ids = [row[0] for row in conn.execute(text(
            "SELECT store_id FROM customers WHERE consent = 'subscribed' ORDER BY id"))]
        orders_before = conn.execute(text("SELECT count(*) FROM orders")).scalar() or 0
    engine.dispose()
    hooks = orders(options.requests)
    unsubscribes: list[Request] = [
        ("POST", "/u/" + sign(Claims("unsubscribe", ids[n], "black-friday", str(n + 1)), KEY),
         b"List-Unsubscribe=One-Click",
         {"Content-Type": "application/x-www-form-urlencoded"})
        for n in range(min(options.requests, len(ids)))]

    counted: dict[str, int] = {}
    service, port = _start([*mailer, "serve", "--port", "0"], env)
    try:
        print(f"{options.concurrency} requests in flight, keep-alive, loopback; "
              f"{'PostgreSQL' if options.database_url else 'SQLite'}")
        print(f"{'endpoint':<36} {'requests':>8} {'req/s':>10} {'p50 ms':>9} {'p99 ms':>9}")
        for name, batch, expect in (
                ("one-click unsubscribe (POST)", unsubscribes, None),
                ("shopify orders/create (signed)", hooks, "stored"),
                ("the same deliveries again (replays)", None, "replay")):
            # the replays: the deliveries the run before got through
            batch = batch or hooks[:counted["shopify orders/create (signed)"]]
            done, elapsed, latencies = asyncio.run(
                _load(port, batch, options.seconds, options.concurrency, expect))
            print(latency_row(name, done, elapsed, latencies))
            counted[name] = done
    finally:
        service.terminate()
        service.wait(timeout=10)
    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    with engine.connect() as conn:
        stored = (conn.execute(text("SELECT count(*) FROM orders")).scalar() or 0) \
            - orders_before
        deliveries = conn.execute(text("SELECT count(*) FROM hook_deliveries")).scalar()
        distinct = conn.execute(text("SELECT count(DISTINCT store_id) FROM orders WHERE "
                                     "store_id LIKE '6000%'")).scalar()
    engine.dispose()
    sent = counted["shopify orders/create (signed)"]
    if counted["the same deliveries again (replays)"] != sent:
        raise SystemExit("not every delivery was replayed within --seconds")
    print(f"stored: {stored} orders ({distinct} distinct) and {deliveries} deliveries for "
          f"{sent} orders/create webhooks, each answered twice")
    if not stored == distinct == deliveries == sent:
        raise SystemExit("an event was not stored exactly once")
    shutil.rmtree(DATA, ignore_errors=True)


if __name__ == "__main__":
    main()
