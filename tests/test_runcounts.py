"""What a planning run counts per customer (mailer.planning.runcounts): dense ids in a
16-bit array, a far id (PostgreSQL's sequences, an import with explicit ids) in a dict,
so a planner's memory follows the customers it counted, never their largest id."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

from mailer.planning.runcounts import DENSE_FLOOR, MOST, RunCounts

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
    assert found["peak"] < 8 * 1024 * 1024  # bytes: the array's floor (2 MB) and change
    assert (found["one"], found["five"], found["next"]) == (3, 1, 0)
    assert found["far"] == MOST and found["topic"] == MOST  # saturated, as dense ids are
    assert found["other"] == 0


def test_dense_ids_are_counted_in_the_array_up_to_the_saturation() -> None:
    counts = RunCounts()
    for customer_id in range(DENSE_FLOOR + 10):  # every id: the array covers them all
        counts.add(customer_id)
    assert counts[0] == 1 and counts[DENSE_FLOOR + 9] == 1 and counts[DENSE_FLOOR + 10] == 0
    assert len(counts._counts) >= DENSE_FLOOR + 10 and not counts._sparse
    for _ in range(MOST + 5):
        counts.add(7)
    assert counts[7] == MOST


def test_an_id_counted_far_stays_counted_once_the_others_reach_it() -> None:
    counts = RunCounts()
    counts.add(3 * DENSE_FLOOR)  # far while few are counted
    for customer_id in range(DENSE_FLOOR):
        counts.add(customer_id)
    counts.add(3 * DENSE_FLOOR + 1)  # the array now reaches past it
    assert len(counts._counts) > 3 * DENSE_FLOOR and not counts._sparse  # moved in
    counts.add(3 * DENSE_FLOOR)
    assert counts[3 * DENSE_FLOOR] == 2 and counts[3 * DENSE_FLOOR + 1] == 1
    assert counts[DENSE_FLOOR - 1] == 1 and counts[-1] == 0
