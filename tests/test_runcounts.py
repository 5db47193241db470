"""What a planning run counts per customer (mailer.planning.runcounts): dense ids in a
16-bit array, a far id (PostgreSQL's sequences, an import with explicit ids) in a dict,
so a planner's memory follows the customers it counted, never their largest id."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

from mailer.planning.runcounts import MOST, PAGE, RunCounts

FAR = 2_000_000_000  # a customer id PostgreSQL hands out after years of inserts


def _small_process(code: str) -> dict[str, int]:
    """CODE's printed JSON, run in a process limited to 1 GB of address space: a 4 GB
    array would fail there (MemoryError) instead of taking the machine's memory."""
    limited = ("import resource\n"
               "resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))\n"
               + textwrap.dedent(code))
    done = subprocess.run([sys.executable, "-c", limited], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    found: dict[str, int] = json.loads(done.stdout)
    return found


def test_a_far_customer_id_costs_memory_of_one_customer_not_of_its_id() -> None:
    found = _small_process(f"""
        import json, tracemalloc
        tracemalloc.start()
        from mailer.planning.runcounts import RunCounts, RunTopics
        counts, topics = RunCounts(), RunTopics()
        for _ in range(3):
            counts.add(1)
        for _ in range(70_000):  # more than a 16-bit count holds
            counts.add({FAR})
            topics.add({FAR}, "news")
        counts.add(5)
        peak = tracemalloc.get_traced_memory()[1]
        print(json.dumps({{"peak": peak, "one": counts[1], "far": counts[{FAR}],
                          "five": counts[5], "next": counts[{FAR} + 1],
                          "topic": topics[{FAR}, "news"], "other": topics[{FAR}, "sale"]}}))
        """)
    assert found["peak"] < 1024 * 1024  # bytes: three pages of 8 KB and change
    assert (found["one"], found["five"], found["next"]) == (3, 1, 0)
    assert found["far"] == MOST and found["topic"] == MOST  # saturated, as dense ids are
    assert found["other"] == 0


def test_neighbouring_ids_in_any_order_share_pages_and_saturate() -> None:
    import random

    counts = RunCounts()
    ids = list(range(3_000_000, 3_000_000 + 100_000))  # a block far from zero, shuffled
    random.Random(7).shuffle(ids)
    for customer_id in ids:
        counts.add(customer_id)
    assert counts[3_000_000] == 1 and counts[3_099_999] == 1 and counts[3_100_000] == 0
    assert counts[0] == 0 and counts[-1] == 0
    # memory follows the ids counted: 100,000 neighbours fill 26 pages of 4,096
    assert len(counts._pages) <= 100_000 // PAGE + 2
    for _ in range(MOST + 5):
        counts.add(7)
    assert counts[7] == MOST
