"""Console benchmark: the campaigns page, a campaign's report, the segments page, the
customer search and the card of `mailer console`, beside a static aiohttp page, same
run, p50 and p99.

    python bench/console.py [--customers N] [--orders M] [--requests R] [--database-url URL]
                            [--keep] [--reuse] [--forecast]

The store is the card benchmark's (bench/card.py: bench/segments.py's customers and
orders plus ledger rows, events, consent and stage history; default 100,000 customers,
`--customers 1000000 --orders 10000000` is the issue's 1M store); the workspace is the
repository's (the demo's campaigns and segments). `mailer console` runs in its own
process, logged in with a session cookie signed as the login form would; R requests per
page, one at a time (a page's own latency, not a queue's), on loopback.

Before the console starts, `mailer console refresh` stores the figures the pages show
(the segment sizes and the campaigns' counts; with --forecast the 30-day forecast too,
which takes long on a big store) and says how long that took: the pages read them, as
they do beside the daemon. A run longer than a minute sees the console count the
campaigns' counts again in the background (docs/console.md), as a marketer's would.
--reuse measures the store a previous --keep run left, without building it again, and
with the segment sizes that run stored (only the counts are refreshed).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import time

from card import extras
from harness import ROOT, arguments, fresh_store, latency_row

from segments import generate

sys.path.insert(0, str(ROOT))

from serve import HELLO, _start

from mailer.mail.links import Claims, sign
from mailer.web.console.auth import hash_password

DATA = ROOT / "bench" / ".data" / "console"
KEY = "bench-console-key"


async def _get(port: int, paths: list[str], cookie: str) -> tuple[int, float, list[float]]:
    import aiohttp

    latencies: list[float] = []
    started = time.perf_counter()
    async with aiohttp.ClientSession(headers={"Cookie": cookie}) as session:
        for path in paths:
            began = time.perf_counter()
            async with session.get(f"http://127.0.0.1:{port}{path}",
                                   allow_redirects=False) as response:
                await response.read()
                if response.status != 200:
                    raise SystemExit(f"{path}: {response.status}")
            latencies.append((time.perf_counter() - began) * 1000)
    return len(paths), time.perf_counter() - started, latencies


def main() -> None:
    parser = arguments(__doc__, {"--customers": 100_000, "--orders": 1_000_000,
                                 "--requests": 50}, "bench/.data/console/")
    parser.add_argument("--reuse", action="store_true",
                        help="measure the store a --keep run left (built again if none)")
    parser.add_argument("--forecast", action="store_true",
                        help="refresh the 30-day forecast too (long on a big store)")
    options = parser.parse_args()
    url = options.database_url or f"sqlite:///{DATA / 'mailer.db'}"
    reused = bool(options.reuse and (options.database_url or (DATA / "mailer.db").exists()))
    if not reused:
        shutil.rmtree(DATA, ignore_errors=True)
        DATA.mkdir(parents=True, exist_ok=True)
        engine = fresh_store(options.database_url, DATA)
        started = time.perf_counter()
        generate(engine, options.customers, options.orders)
        extras(engine, options.customers)
        engine.dispose()
        print(f"store: {options.customers:,} customers, {options.orders:,} orders "
              f"({time.perf_counter() - started:.0f} s)")
    else:
        fresh_store(options.database_url, DATA, empty=False).dispose()  # the schema moved
        print(f"store: reused ({options.customers:,} customers as given)")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILER_")}
    env.update({"MAILER_DATABASE_URL": url, "MAILER_SECRET_KEY": KEY,
                "MAILER_CONSOLE_USERS": f"bench:{hash_password('bench-password', n=2**14)}"})
    only = ([] if options.forecast else ["--only", "counts"] if reused
            else ["--only", "segments", "--only", "counts"])
    began = time.perf_counter()
    refreshed = subprocess.run(
        [sys.executable, "-m", "mailer.cli", "--workspace", str(ROOT), "console", "refresh",
         "--now", "2026-11-23T10:00", *only], env=env, capture_output=True, text=True)
    if refreshed.returncode != 0:
        raise SystemExit(f"mailer console refresh: {refreshed.stderr}")
    print(refreshed.stdout.rstrip())
    print(f"mailer console refresh {' '.join(only)}: {time.perf_counter() - began:.1f} s")
    console, port = _start([sys.executable, "-m", "mailer.cli", "--workspace", str(ROOT),
                            "console", "--port", "0", "--now", "2026-11-23T10:00"], env)
    hello, hello_port = _start([sys.executable, "-c", HELLO], env)
    cookie = "mailer_console=" + sign(Claims("console_session", "bench",
                                             str(int(time.time()) + 3600), "n"), KEY)
    step = max(1, options.customers // options.requests)
    pages = {
        "static aiohttp page": (hello_port, ["/hello"] * options.requests),
        "campaigns page": (port, ["/campaigns"] * options.requests),
        # every ledger row of the store is the newsletter's (bench/card.py)
        "campaign report (newsletter)": (port, ["/campaigns/newsletter"] * options.requests),
        "segments page": (port, ["/segments"] * options.requests),
        "customer search (email prefix)": (port, [f"/customers?q=c{n}%40"
                                                   for n in range(1, options.customers, step)]),
        # by id: one address in 200 is on the staff domain (bench/segments.py)
        "customer card": (port, [f"/customers/C{n:07d}"
                                 for n in range(1, options.customers, step)]),
    }
    try:
        print(f"{'page':<36} {'requests':>8} {'req/s':>10} {'p50 ms':>9} {'p99 ms':>9}")
        for name, (at, paths) in pages.items():
            asyncio.run(_get(at, paths[:1], cookie))  # warm: imports, first queries
            print(latency_row(name, *asyncio.run(_get(at, paths, cookie))))
    finally:
        for process in (console, hello):
            process.terminate()
            process.wait(timeout=30)
        if not options.keep:
            shutil.rmtree(DATA, ignore_errors=True)


if __name__ == "__main__":
    main()
