"""What a render batch reads from the store, per mail: mailer's reads against the database's own.

    python bench/batch_reads.py [--customers N] [--orders M] [--batch B] [--database-url URL]

Before a batch of mails is rendered (in the sender or a render process) its customers,
their order statistics, favourite category, latest paid orders, predictions,
recommendations and coupons are read, one query each for the whole batch
(mailer.delivery.worker.Renderer.render_batch). This times those reads through mailer
(`load_customers`, `load_stats`, `coupons_of_rows`: SQLAlchemy, the statements built once
with their values bound, rows turned into the objects a render reads) beside the same
SQL strings run straight through the driver's cursor (compiled once outside the timing:
the database's own time, and the floor). CPU seconds of this thread, best of 5 rounds.
The store is bench/segments.py's (customers with Pareto-distributed paid orders).
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness import arguments, fresh_store

from segments import NOW, generate

DATA = Path(__file__).resolve().parent / ".data" / "batch_reads"
ROUNDS = 5


def best_cpu(work: Callable[[], Any], times: int) -> float:
    """The least thread CPU seconds of ROUNDS rounds of TIMES calls of WORK, per call."""
    best = float("inf")
    for _ in range(ROUNDS):
        began = time.thread_time()
        for _ in range(times):
            work()
        best = min(best, time.thread_time() - began)
    return best / times


def main() -> None:
    parser = arguments(__doc__, {"--customers": 20_000, "--orders": 60_000, "--batch": 20,
                                 "--batches": 200}, "bench/.data/batch_reads")
    options = parser.parse_args()
    from mailer.config.settings import MAX_COMMITTED_ORDERS
    from mailer.mail.context import load_customers, load_stats
    from mailer.store.coupons import _OF_ROWS, coupons_of_rows
    from mailer.store.customers import _FAVOURITES, _ORDER_STATS, _PROFILES
    from mailer.store.insight.predictions import _PREDICTIONS
    from mailer.store.insight.recommendations import _STORED
    from mailer.store.insight.stages import _LATEST

    shutil.rmtree(DATA, ignore_errors=True)
    DATA.mkdir(parents=True)
    try:
        engine = fresh_store(options.database_url, DATA)
        generate(engine, options.customers, options.orders)
        step = max(1, options.customers // (options.batch * options.batches))
        batches = [list(range(1 + b * options.batch * step,
                              1 + (b + 1) * options.batch * step, step))[:options.batch]
                   for b in range(options.batches)]
        statements = [(_PROFILES, {}), (_ORDER_STATS, {"currency": "EUR"}),
                      (_FAVOURITES, {}), (_LATEST, {"limit": MAX_COMMITTED_ORDERS}),
                      (_PREDICTIONS, {}), (_STORED, {}), (_OF_ROWS, {})]
        with engine.connect() as conn:
            def ours() -> None:
                for ids in batches:
                    load_customers(conn, ids)
                    load_stats(conn, ids, now=NOW, currency="EUR")
                    coupons_of_rows(conn, ids)

            compiled = []  # (SQL, parameters) as the driver takes them, made untimed
            for ids in batches:
                for statement, extra in statements:
                    done = statement.compile(conn)
                    state = done.construct_expanded_state({"ids": ids, "now": NOW, **extra})
                    params = dict(state.parameters)
                    for key, process in done._bind_processors.items():
                        if key in params:
                            params[key] = process(params[key])
                    compiled.append((state.statement, params if state.positiontup is None
                                     else [params[key] for key in state.positiontup]))
            cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]

            def driver() -> None:
                for sql, params in compiled:
                    cursor.execute(sql, params)
                    cursor.fetchall()

            ours()
            driver()
            mine, floor = best_cpu(ours, 1), best_cpu(driver, 1)
        per = options.batch * options.batches
        print(f"{engine.dialect.name}: {options.customers:,} customers, {options.orders:,} "
              f"orders; {options.batches} batches of {options.batch} mails; CPU µs a mail, "
              f"best of {ROUNDS}")
        print(f"{'mailer: the batch reads of a render':<48}{1e6 * mine / per:>8.1f}")
        print(f"{'the same SQL through the driver (the floor)':<48}{1e6 * floor / per:>8.1f}")
        print(f"mailer is {mine / floor:.1f}x the driver's time")
    finally:
        if not options.keep:
            shutil.rmtree(DATA, ignore_errors=True)


if __name__ == "__main__":
    main()
