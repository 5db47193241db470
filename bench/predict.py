"""Prediction benchmark: `mailer predict`'s fit and scoring on a large store, time and peak
memory, beside two baselines measured in the same run on the same store.

    python bench/predict.py [--customers N] [--database-url URL] [--keep]

Generates a store of N customers (default 100,000) whose paid orders follow the BG/NBD
lifecycle the models assume (about 10 orders per customer: 1,000,000 at the default,
10,000,000 with `--customers 1000000`; 5 % more that are refunded, which the read skips),
straight into a fresh database: SQLite under bench/.data/predict/, or on PostgreSQL a
scratch database created on the server of URL and dropped afterwards. Then, each in a
fresh interpreter so its time and peak memory (its own high-water RSS,
VmHWM) are its own:

- ours: mailer.app.predict.predict, what `mailer predict` runs: read the paid orders,
  summarise, fit BG/NBD and Gamma-Gamma, the holdout refit, score every buyer and
  replace the stored predictions; then, in a second run, its steps timed one by one
  (read, summarise, fit, holdout refit, score; what remains is writing predictions);
- baseline "read floor": the driver's cursor fetching the same three columns of the same
  rows (no conversion), the least any model over these orders must pay;
- baseline "per-customer fit": the same likelihood and optimiser (mailer.insight.bgnbd)
  on one row per customer, as lifetimes' BetaGeoFitter fits by default, where ours fits
  each distinct (x, t_x, T) once with its count as weight. Both fits must agree.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
from harness import ROOT, arguments, fresh_store, python, stamp, write_rows

sys.path.insert(0, str(ROOT))

DATA = ROOT / "bench" / ".data" / "predict"
NOW = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)  # 10:00 in Berlin
SETTINGS = ('store: {name: Bench, address: "1 Road", currency: EUR}\n'
            "sender: {from: bench@shop.example}\ntimezone: Europe/Berlin\n"
            "tracking: {base_url: https://mail.shop.example}\n")
# The store's lifecycle, in days (see mailer/app/demodata.py for the story): rate
# λ ~ Gamma(R, ALPHA), drop-out p ~ Beta(A, B) after each repeat order, three years of
# signups; spend per order Gamma(P, ν), ν ~ Gamma(Q, GAMMA) in cents.
R, ALPHA, A, B = 1.0, 11.0, 1.3, 8.0
P, Q, GAMMA = 5.0, 4.0, 4500.0
YEARS = 3.0
REFUNDED = 0.05
CHUNK = 100_000  # customers written per transaction (bounds the generator's memory)

PREAMBLE = """
import json, resource, sys, time
from datetime import datetime
from harness import ROOT
from mailer.config.settings import parse_settings
from mailer.store.db import create, database_url
url, now = sys.argv[1] or None, datetime.fromisoformat(sys.argv[2])
settings, _ = parse_settings(sys.argv[3])
engine = create(database_url(env_url=url, configured=None, root=ROOT / "bench/.data/predict"))
def rss_mb():
    # VmHWM, this process's own peak: Linux carries ru_maxrss over from the parent at
    # fork and exec, so a big parent would show through
    try:
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) for line in status
                        if line.startswith("VmHWM:")) / 1024
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
"""

OURS = PREAMBLE + """
from mailer.app.predict import predict
before = rss_mb()
started = time.perf_counter()
result = predict(engine, settings, now)
print(json.dumps({"seconds": time.perf_counter() - started, "rss_before_mb": before,
                  "rss_mb": rss_mb(), "result": result}))
"""

# predict()'s steps one by one (its private helpers: update this when predict changes).
PHASES = PREAMBLE + """
from mailer.app.predict import _holdout, _indexed, _scores, local_days
from mailer.core.clock import zone
from mailer.insight.purchases import Thresholds, fit_or_reason, summarise
from mailer.store.insight.predictions import paid_orders
times = {}
started = time.perf_counter()
orders = paid_orders(engine, now=now, currency="EUR")
times["read"] = time.perf_counter() - started
started = time.perf_counter()
tz = zone(settings.timezone)
who, ids = _indexed(orders.customer_id)
at, now_days = local_days(orders.placed_at, tz), local_days([now.timestamp()], tz)[0]
summary = summarise(who, at, now_days, value=orders.total_minor, customers=len(ids))
times["summarise"] = time.perf_counter() - started
started = time.perf_counter()
fitted = fit_or_reason(summary)
times["fit"] = time.perf_counter() - started
started = time.perf_counter()
_holdout(who, at, orders.total_minor, now_days, summary, Thresholds())
times["holdout refit"] = time.perf_counter() - started
started = time.perf_counter()
_scores(fitted, summary, ids, now)
times["score every buyer"] = time.perf_counter() - started
print(json.dumps({"seconds": times, "orders": len(orders.customer_id), "rss_mb": rss_mb()}))
"""

READ_FLOOR = PREAMBLE + """
from sqlalchemy import text
from mailer.store.db import is_server
mark = "%s" if is_server(engine) else "?"
before = rss_mb()
started = time.perf_counter()
with engine.connect() as conn:
    raw = conn.connection.driver_connection
    cursor = raw.cursor()
    cursor.execute("SELECT customer_id, placed_at, total_minor FROM orders WHERE status = "
                   f"'paid' AND currency = 'EUR' AND placed_at < {mark}",
                   (now.replace(tzinfo=None) if is_server(engine)
                    else now.replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds"),))
    rows = 0
    while batch := cursor.fetchmany(50_000):
        rows += len(batch)
print(json.dumps({"seconds": time.perf_counter() - started, "rows": rows,
                  "rss_before_mb": before, "rss_mb": rss_mb()}))
"""

# Both fits on the same summary; ours is fit_bgnbd, the baseline the same objective and
# optimiser (same start, same time scale) over every customer's own row.
FITS = PREAMBLE + """
import numpy as np
from scipy.optimize import minimize
from mailer.app.predict import _indexed, local_days
from mailer.core.clock import zone
from mailer.insight.bgnbd import LOG_BOUND, BgNbd, fit_bgnbd, log_likelihood
from mailer.insight.purchases import summarise
from mailer.store.insight.predictions import paid_orders
orders = paid_orders(engine, now=now, currency="EUR")
tz = zone(settings.timezone)
who, ids = _indexed(orders.customer_id)
s = summarise(who, local_days(orders.placed_at, tz), local_days([now.timestamp()], tz)[0],
              value=orders.total_minor, customers=len(ids))
x, t_x, T = s.x[s.buyer], s.t_x[s.buyer], s.T[s.buyer]
started = time.perf_counter()
ours = fit_bgnbd(x, t_x, T)
ours_s = time.perf_counter() - started
started = time.perf_counter()
scale = float(T.max()) / 10.0
calls = 0
def negative(theta):
    global calls
    calls += 1
    r, alpha, a, b = np.exp(theta)
    value = -float(np.mean(log_likelihood(BgNbd(r, alpha, a, b), x, t_x / scale, T / scale)))
    return value if np.isfinite(value) else 1e300
found = minimize(negative, np.zeros(4), method="L-BFGS-B", bounds=[(-LOG_BOUND, LOG_BOUND)] * 4,
                 options={"maxiter": 500})
naive_s = time.perf_counter() - started
r, alpha, a, b = np.exp(found.x)
rows = np.unique(np.column_stack([x, t_x, T]), axis=0).shape[0]
print(json.dumps({"customers": int(x.size), "distinct_rows": rows,
                  "ours_s": ours_s, "naive_s": naive_s, "naive_calls": calls,
                  "ours": [ours.params.r, ours.params.alpha, ours.params.a, ours.params.b],
                  "naive": [float(r), float(alpha) * scale, float(a), float(b)]}))
"""


def lifecycle(rng: np.random.Generator, n: int) -> tuple[Any, Any, Any, Any]:
    """N customers' signup ages in days, and their paid orders as arrays: customer index,
    days after signup, cents. The first order at signup, then exponential gaps while
    alive, drop-out after each repeat order."""
    age = YEARS * 365 * rng.random(n) ** 1.5  # a growing shop: more recent signups
    rate = rng.gamma(R, 1 / ALPHA, n)
    dropout = rng.beta(A, B, n)
    nu = rng.gamma(Q, 1 / GAMMA, n)
    t = np.zeros(n)
    who, when = [np.arange(n)], [t.copy()]
    alive = np.arange(n)
    while alive.size:
        t[alive] += rng.exponential(1 / rate[alive])
        alive = alive[t[alive] < age[alive]]
        who.append(alive)
        when.append(t[alive].copy())
        alive = alive[rng.random(alive.size) >= dropout[alive]]
    ids, days = np.concatenate(who), np.concatenate(when)
    cents = np.maximum(np.rint(rng.gamma(P, 1 / nu[ids])), 100).astype(np.int64)
    return age, ids, days, cents


def generate(engine: Any, customers: int) -> int:
    """Write the store in chunks of CHUNK customers; returns the orders written."""
    rng = np.random.default_rng(7)
    created = stamp(engine, NOW)
    order_id = 0
    for first in range(1, customers + 1, CHUNK):
        n = min(CHUNK, customers + 1 - first)
        age, ids, days, cents = lifecycle(rng, n)
        signed = [NOW - timedelta(days=float(d)) for d in age]
        people = [(first + k, f"C{first + k:08d}", f"c{first + k}@example.com",
                   f"c{first + k}@example.com", "subscribed", stamp(engine, signed[k]),
                   created, created) for k in range(n)]
        refunded = rng.random(ids.size) < REFUNDED
        sales = []
        for owner, day, total, extra in zip(ids.tolist(), days.tolist(), cents.tolist(),
                                            refunded.tolist(), strict=True):
            placed = stamp(engine, signed[owner] + timedelta(days=day))
            order_id += 1
            sales.append((order_id, f"O{order_id:09d}", first + owner, placed, "paid", "EUR",
                          total))
            if extra:  # a refunded try beside it: not a purchase, the read must skip it
                order_id += 1
                sales.append((order_id, f"O{order_id:09d}", first + owner, placed, "refunded",
                              "EUR", total))
        write_rows(engine,
                   ("customers", "id, store_id, email, email_key, consent, signed_up_at, "
                                 "created_at, updated_at", people),
                   ("orders", "id, store_id, customer_id, placed_at, status, currency, "
                              "total_minor", sales))
    return order_id


@contextmanager
def scratch_database(admin: str) -> Iterator[str]:
    """A new database on ADMIN's PostgreSQL server, dropped afterwards (as tests do)."""
    from sqlalchemy import create_engine, make_url, text

    from mailer.store.db import database_url

    name = f"mailer_bench_{uuid.uuid4().hex[:10]}"
    server = create_engine(database_url(env_url=admin, configured=None, root=ROOT),
                           isolation_level="AUTOCOMMIT")
    with server.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(admin).set(database=name).render_as_string(hide_password=False)
    finally:
        with server.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        server.dispose()


def measure(url: str | None) -> None:
    args = (url or "", NOW.isoformat(), SETTINGS)
    rows = []

    def run(code: str) -> dict[str, Any]:
        _, done = python(code, *args)
        found: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
        return found

    ours = run(OURS)
    phases = run(PHASES)
    floor = run(READ_FLOOR)
    fits = run(FITS)
    result = ours["result"]
    if not result["fitted"]:
        sys.exit(f"the models did not fit: {result['reason']}")
    rows.append(("predict: read, fit, holdout, score, write", ours["seconds"], ours["rss_mb"]))
    # the steps come from a second run (the rest of predict's time: writing predictions)
    for phase, seconds in phases["seconds"].items():
        rows.append((f"  step: {phase}", seconds, None))
    rows.append(("baseline: driver fetch of the same rows", floor["seconds"], floor["rss_mb"]))
    rows.append(("BG/NBD fit, distinct rows weighted (ours)", fits["ours_s"], None))
    rows.append(("baseline: the same fit, a row per customer", fits["naive_s"], None))
    print(f"{'':<46}{'seconds':>9}{'peak MB':>9}")
    for label, seconds, rss in rows:
        print(f"{label:<46}{seconds:>9.2f}{'' if rss is None else f'{rss:.0f}':>9}")
    print(f"interpreter with mailer imported, before the work: {ours['rss_before_mb']:.0f} MB")
    print(f"{phases['orders']:,} paid orders read (the floor fetched {floor['rows']:,}); "
          f"{fits['customers']:,} buyers in {fits['distinct_rows']:,} distinct (x, t_x, T) "
          f"rows; the per-customer fit took {fits['naive_calls']} likelihood evaluations")
    params = result["parameters"]
    print("fit: " + ", ".join(f"{k} {v:.4g}" for k, v in params.items())
          + f" (generated with r {R}, alpha {ALPHA}, a {A}, b {B}, p {P}, q {Q}, "
            f"gamma {GAMMA})")
    holdout = result["holdout"]
    print(f"holdout, last {holdout['days']} days: predicted {holdout['predicted_orders']:.0f} "
          f"repeat purchase days, actual {holdout['actual_orders']}")
    drift = max(abs(o - n) / abs(o) for o, n in zip(fits["ours"], fits["naive"], strict=True))
    if drift > 1e-3:
        sys.exit(f"the two fits disagree: ours {fits['ours']}, per customer {fits['naive']}")
    print(f"both fits agree within {drift:.1e}")


def main() -> None:
    parser = arguments(__doc__, {"--customers": 100_000}, "bench/.data/predict/ (SQLite)")
    options = parser.parse_args()
    shutil.rmtree(DATA, ignore_errors=True)
    DATA.mkdir(parents=True, exist_ok=True)
    where: AbstractContextManager[str | None] = (
        scratch_database(options.database_url) if options.database_url else nullcontext(None))
    with where as url:
        engine = fresh_store(url, DATA)
        try:
            started = time.perf_counter()
            orders = generate(engine, options.customers)
            print(f"{engine.dialect.name}: {options.customers:,} customers, {orders:,} orders, "
                  f"written in {time.perf_counter() - started:.0f} s")
        finally:
            engine.dispose()
        measure(url)
    if not options.keep:
        shutil.rmtree(DATA, ignore_errors=True)


if __name__ == "__main__":
    main()
