"""Where one `mailer send`'s CPU goes, with 1 and with N delivery processes, in one run.

    python bench/send_cpu.py [--recipients N] [--database-url URL] [--processes P]
                             [--rounds R]

bench/deliver.py's workspace, campaign and smtp-sink. Each round runs `mailer send`
with `delivery.processes: 1`, then with P (default 2), in a wrapper that adds
`time.thread_time()` around the render, the leases and the ledger turns, and reads
`getrusage` for the sender and for its render processes (its children). CPU seconds
hold on a busy machine where the wall clock does not (docs/performance.md).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time

import deliver
from harness import arguments, python

WRAP = r'''
import json, resource, sys, time
from mailer.app import send as app
from mailer.delivery import worker

cpu = {"render": 0.0, "claim": 0.0, "turns": 0.0}

def timed(function, key):
    def run(*args, **kwargs):
        began = time.thread_time()
        try:
            return function(*args, **kwargs)
        finally:
            cpu[key] += time.thread_time() - began
    return run

worker.Renderer.render_batch = timed(worker.Renderer.render_batch, "render")
worker.claim = timed(worker.claim, "claim")
worker.SendingLoop._turn_in_database = timed(worker.SendingLoop._turn_in_database, "turns")
deliver_phase = app._deliver

async def measured(*args, **kwargs):
    began, wall = time.process_time(), time.perf_counter()
    try:
        return await deliver_phase(*args, **kwargs)
    finally:
        cpu["delivery"] = time.process_time() - began
        cpu["delivery_wall"] = time.perf_counter() - wall

app._deliver = measured
import atexit

def report():
    children = resource.getrusage(resource.RUSAGE_CHILDREN)  # reaped when the sender closed
    cpu["render_processes"] = children.ru_utime + children.ru_stime
    sys.stderr.write("CPU " + json.dumps(cpu) + "\n")

atexit.register(report)
sys.argv = ["mailer", *sys.argv[1:]]
from mailer.cli import run
run()
'''


def one_send(url: str, port: int, concurrency: int, processes: int) -> dict[str, float]:
    (deliver.DATA / "mailer.yaml").write_text(
        deliver.settings(concurrency, dkim=False, processes=processes))
    python(deliver.RESET, str(deliver.DATA), url)
    done = subprocess.run([sys.executable, "-c", WRAP, "--workspace", str(deliver.DATA), "send",
                           "bench", "--now", deliver.NOW, "--json"], capture_output=True,
                          text=True, env=deliver.environment(url, port), check=False)
    lines = [line for line in done.stderr.splitlines() if line.startswith("CPU ")]
    if done.returncode or not lines:
        sys.exit(done.stderr[-3000:])
    return {"sent": json.loads(done.stdout)["sent"], **json.loads(lines[-1][4:])}


def main() -> None:
    parser = arguments(__doc__, {"--recipients": 3000, "--concurrency": 20, "--processes": 2,
                                 "--rounds": 3}, "bench/.data/deliver")
    options = parser.parse_args()
    url = options.database_url or ""
    data = deliver.DATA
    shutil.rmtree(data, ignore_errors=True)
    deliver.compiled_sources()
    for folder in ("segments", "campaigns"):
        (data / folder).mkdir(parents=True)
    shutil.copytree(deliver.ROOT / "templates", data / "templates")
    (data / "mailer.yaml").write_text(deliver.settings(options.concurrency, dkim=False))
    (data / "segments" / "subscribers.yaml").write_text(
        "description: subscribers\nall: [{subscribed: true}]\n")
    (data / "campaigns" / "bench.yaml").write_text(deliver.CAMPAIGN)
    port = deliver.free_port()
    sink = subprocess.Popen([deliver.SINK, "-u", "nobody", f"127.0.0.1:{port}", "1024"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.3)
        python(deliver.SETUP, str(data), url, str(options.recipients))
        print(f"{'sqlite' if not url else 'postgresql'}: {options.recipients:,} recipients, "
              f"concurrency {options.concurrency}; CPU seconds of the delivery phase")
        print(f"{'processes':>9}{'sender':>8}{'render':>8}{'claim':>7}{'turns':>7}"
              f"{'children':>9}{'wall':>7}")
        for _ in range(options.rounds):
            for processes in (1, options.processes):
                got = one_send(url, port, options.concurrency, processes)
                assert got["sent"] == options.recipients, got
                print(f"{processes:>9}{got['delivery']:>8.2f}{got['render']:>8.2f}"
                      f"{got['claim']:>7.2f}{got['turns']:>7.2f}"
                      f"{got['render_processes']:>9.2f}{got['delivery_wall']:>7.2f}")
    finally:
        sink.terminate()
        sink.wait()
        if not options.keep:
            shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    main()
