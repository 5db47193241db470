"""HTTP benchmark: the click redirect, the one-click unsubscribe and the survey POST of
`mailer serve`, next to a minimal aiohttp "hello" endpoint on the same server software,
same run.

    python bench/serve.py [--requests 5000] [--seconds 20] [--concurrency 32]
                          [--database-url URL]

A store of 5,000 demo customers (SQLite under bench/.data/, or the PostgreSQL
database given, which is emptied); `mailer serve` in its own process; the load
generator (aiohttp, keep-alive, CONCURRENCY requests in flight) in this one, on
loopback. Each endpoint gets --requests requests or --seconds, whichever ends
first. Clicks are real signed links (recorded as events, then 302); each
unsubscribe is a different customer's one-click POST (a real consent write); each survey
POST answers the demo's 5-question feedback survey for one of the feedback mails the
daemon planned (a sweep with --no-deliver: the rows are real, nothing is sent), five
answers upserted in one transaction, the mails taken in turn (so most POSTs replace
earlier answers, as a reader pressing the button again does).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from harness import latency_row

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "bench" / ".data" / "serve"
KEY = "bench-secret-key"
HELLO = """
import sys
from aiohttp import web
async def hello(request):
    return web.Response(text="hello")
app = web.Application()
app.add_routes([web.get("/hello", hello)])
async def main():
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    print(f"listening on 127.0.0.1:{runner.addresses[0][1]}", flush=True)
    import asyncio
    await asyncio.Event().wait()
import asyncio
asyncio.run(main())
"""


def _start(args: list[str], env: dict[str, str]) -> tuple[subprocess.Popen[str], int]:
    process = subprocess.Popen(args, env=env, text=True, stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL)
    assert process.stdout is not None
    line = process.stdout.readline().strip()
    if not line.startswith("listening on"):
        raise SystemExit(f"server did not start: {line!r}")
    return process, int(line.rsplit(":", 1)[1])


async def _load(port: int, requests: list[tuple[str, str, str]], seconds: float,
                concurrency: int) -> tuple[int, float, list[float]]:
    """Send REQUESTS (method, path, body) with CONCURRENCY in flight; (done, elapsed,
    latencies in ms)."""
    import aiohttp

    latencies: list[float] = []
    queue = iter(requests)
    deadline = time.perf_counter() + seconds
    errors = 0

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal errors
        for method, path, body in queue:
            if time.perf_counter() > deadline:
                return
            started = time.perf_counter()
            async with session.request(
                    method, f"http://127.0.0.1:{port}{path}", data=body or None,
                    allow_redirects=False,
                    headers={"Content-Type": "application/x-www-form-urlencoded"}
                    if body else None) as response:
                await response.read()
                if response.status not in (200, 302):
                    errors += 1
            latencies.append((time.perf_counter() - started) * 1000)

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        started = time.perf_counter()
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    if errors:
        raise SystemExit(f"{errors} requests failed")
    return len(latencies), elapsed, latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--database-url")
    options = parser.parse_args()

    from sqlalchemy import create_engine, text

    from mailer.mail.links import Claims, sign

    shutil.rmtree(DATA, ignore_errors=True)
    DATA.mkdir(parents=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILER_")}
    env["MAILER_SECRET_KEY"] = KEY
    if options.database_url:
        env["MAILER_DATABASE_URL"] = options.database_url
    mailer = [sys.executable, "-m", "mailer.cli", "--workspace", str(DATA / "shop")]
    subprocess.run([sys.executable, "-m", "mailer.cli", "init", str(DATA / "shop")], env=env,
                   check=True, stdout=subprocess.DEVNULL)
    subprocess.run([*mailer, "db", "upgrade"], env=env, check=True, stdout=subprocess.DEVNULL)
    subprocess.run([*mailer, "demo-data", "--customers", "5000", "--seed", "3", "--replace",
                    "--now", "2026-11-23T10:00"], env=env, check=True, stdout=subprocess.DEVNULL)
    # the feedback mails ten days after an order (the demo's Tuesday-evening sweep)
    subprocess.run([*mailer, "run", "--once", "--no-deliver", "--now", "2026-11-24T18:05"],
                   env=env, check=True, stdout=subprocess.DEVNULL)
    url = options.database_url or f"sqlite:///{DATA / 'shop' / 'mailer.db'}"
    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    with engine.connect() as conn:
        ids = [row[0] for row in conn.execute(text(
            "SELECT store_id FROM customers WHERE consent = 'subscribed' ORDER BY id"))]
        asked = [(str(store_id), str(row)) for store_id, row in conn.execute(text(
            "SELECT c.store_id, d.id FROM deliveries d JOIN customers c ON c.id = "
            "d.customer_id WHERE d.campaign = 'feedback' ORDER BY d.id"))]
    engine.dispose()
    if not asked:
        raise SystemExit("the sweep planned no feedback mail to answer")
    clicks = [("GET", "/c/" + sign(Claims("click", ids[n % len(ids)], "black-friday",
                                          str(n + 1), "https://shop.example/p/boots"), KEY), "")
              for n in range(options.requests)]
    unsubscribes = [("POST", "/u/" + sign(Claims("unsubscribe", ids[n], "black-friday",
                                                 str(n + 1)), KEY),
                     "List-Unsubscribe=One-Click") for n in range(min(options.requests,
                                                                      len(ids)))]
    answers = "overall={}&delivery=4&recommend=9&found_us=friend&comment=Quick+and+kind"
    surveys = [("POST", "/s/" + sign(Claims("survey", asked[n % len(asked)][0], "feedback",
                                            asked[n % len(asked)][1], str(n % 5 + 1)), KEY),
                answers.format(n % 5 + 1)) for n in range(options.requests)]
    hello = [("GET", "/hello", "")] * options.requests

    counted: dict[str, int] = {}
    service, port = _start([*mailer, "serve", "--port", "0"], env)
    baseline, hello_port = _start([sys.executable, "-c", HELLO], env)
    try:
        print(f"{options.concurrency} requests in flight, keep-alive, loopback; "
              f"{'PostgreSQL' if options.database_url else 'SQLite'}")
        print(f"{'endpoint':<34} {'requests':>8} {'req/s':>10} {'p50 ms':>9} {'p99 ms':>9}")
        for name, target, batch in (
                ("aiohttp hello (baseline)", hello_port, hello),
                ("click redirect (event + 302)", port, clicks),
                ("one-click unsubscribe (POST)", port, unsubscribes),
                ("survey answers (POST, 5 upserts)", port, surveys)):
            done, elapsed, latencies = asyncio.run(
                _load(target, batch, options.seconds, options.concurrency))
            print(latency_row(name, done, elapsed, latencies, 34))
            counted[name] = done
    finally:
        for process in (service, baseline):
            process.terminate()
            process.wait(timeout=10)
    # Clicks are written in batches after the redirect: all of them, once stopped cleanly.
    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
    with engine.connect() as conn:
        stored = conn.execute(text("SELECT count(*) FROM events WHERE kind = 'click'")).scalar()
        left = conn.execute(text("SELECT count(*) FROM customers WHERE consent = "
                                 "'unsubscribed'")).scalar()
        answered = conn.execute(text("SELECT count(*) FROM responses")).scalar()
    engine.dispose()
    print(f"written: {stored} click events for {counted.get('click redirect (event + 302)')} "
          f"redirects; {left} customers unsubscribed; {answered} answers "
          f"({len(asked)} mails x 5 questions) from "
          f"{counted.get('survey answers (POST, 5 upserts)')} survey POSTs")
    shutil.rmtree(DATA, ignore_errors=True)


if __name__ == "__main__":
    main()
