"""Planning benchmark: a campaign for N customers, next to a bare INSERT ... SELECT.

    python bench/plan.py [--customers N] [--database-url URL]
    python bench/plan.py --before-first-mail [--rounds R] [--customers N] [--database-url URL]

Writes N customers (default 100,000; --customers 1000000 for the full size)
straight into a fresh database (SQLite under bench/.data/, or the PostgreSQL
database given, which is emptied), then, each in a fresh process: mailer's
planner (segment query, policy with caps and suppressions, ledger insert,
plan run), and a bare `INSERT INTO deliveries ... SELECT` of the same audience.
Prints seconds and peak memory of each and checks the ledger counts agree.

--before-first-mail: where a `mailer send` of bench/deliver.py's demo promotion (its
workspace, N subscribers, smtp-sink) spends its time until the first mail goes out,
phase by phase, wall clock and the process's CPU, the median of R fresh sends.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time

from harness import ROOT, arguments, python

DATA = ROOT / "bench" / ".data" / "plan"
SETTINGS = ('store: {name: Bench, address: "1 Road", currency: EUR}\n'
            "sender: {from: bench@shop.example}\ntimezone: Europe/Berlin\n"
            "tracking: {base_url: https://mail.shop.example}\n")
CAMPAIGN = ("name: Bench\ntrigger: once\nat: 2026-12-01T10:00\nsegment: subscribers\n"
            "template: mail.html\nsubject: Hello\n")
NOW = "2026-12-01T10:30"

SETUP = """
import sys
from datetime import datetime
from pathlib import Path
from harness import fresh_store, stamp, write_rows
root, url, count = Path(sys.argv[1]), sys.argv[2] or None, int(sys.argv[3])
engine = fresh_store(url, root)
created = stamp(engine, datetime(2026, 1, 1))
write_rows(engine,
           ("customers", "id, store_id, email, email_key, consent, created_at, updated_at",
            [(i, f"C{i:07d}", f"c{i}@example.com", f"c{i}@example.com",
              "not_subscribed" if i % 10 == 0 else "subscribed", created, created)
             for i in range(1, count + 1)]),
           ("suppressions", "email_key, reason, source, created_at",
            [("c7@example.com", "bounced", "bench", created)]))
"""

OURS = """
import json, resource, sys
from pathlib import Path
from harness import plan_due_at
result = plan_due_at(Path(sys.argv[1]), sys.argv[2], sys.argv[3], compiled=False)[0]
print(json.dumps({"planned": result.planned_count, "excluded": result.counts(),
                  "maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"""

BASELINE = """
import json, resource, sys
from pathlib import Path
from sqlalchemy import text
from mailer.store.db import create, database_url
root, url = Path(sys.argv[1]), sys.argv[2] or None
engine = create(database_url(env_url=url, configured=None, root=root))
with engine.begin() as conn:
    conn.execute(text("DELETE FROM deliveries")); conn.execute(text("DELETE FROM plan_runs"))
    version = conn.execute(text("SELECT id FROM campaign_versions")).scalar()
    planned = conn.execute(text(
        "INSERT INTO deliveries (campaign, campaign_version_id, occurrence, customer_id, email, "
        "subject_variant, status, attempts, planned_at, send_after, expires_at) "
        "SELECT 'bench', :version, 'once', c.id, c.email, 0, 'queued', 0, :now, :now, :expires "
        "FROM customers c WHERE c.consent = 'subscribed' AND c.email_key NOT IN "
        "(SELECT email_key FROM suppressions)"),
        {"version": version, "now": "2026-12-01 09:30:00",
         "expires": "2026-12-01 15:00:00"}).rowcount
print(json.dumps({"planned": planned,
                  "maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"""


def run(code: str, *args: str) -> tuple[float, dict[str, object]]:
    """Seconds and the JSON document CODE printed last, in a fresh interpreter."""
    elapsed, done = python(code, *args)
    lines = done.stdout.strip().splitlines()
    return elapsed, json.loads(lines[-1]) if lines else {}


# Run as `python -c PHASES STARTED mailer-arguments...`: the moments a `mailer send`
# passes, its own functions wrapped; prints [phase, wall s, CPU s] from STARTED (the
# parent's clock just before the interpreter was started).
PHASES = """
import contextlib, io, json, sys, time
marks = [("interpreter start", time.time(), time.process_time())]
def mark(name):
    marks.append((name, time.time(), time.process_time()))
import mailer.cli, mailer.cli.send_cmd, mailer.delivery.sending, mailer.config.workspace
import mailer.app.send as app
import mailer.delivery.transport as transport
mark("imports (what `send` imports)")
def wrap(name, before, after):
    real = getattr(app, name)
    def wrapped(*args, **kwargs):
        if before:
            mark(before)
        found = real(*args, **kwargs)
        mark(after)
        return found
    setattr(app, name, wrapped)
wrap("compile_versions", "workspace load and validation, the checks",
     "compile (templates, premailer)")
wrap("RenderPool", "sending lock, recovery, rate limit", "fork the render processes")
wrap("plan_now", "", "plan (segment, policy, inserts, expiry)")
real_send, first = transport.SmtpTransport.send, []
async def send(self, *args, **kwargs):
    if not first:
        first.append(1)
        mark("to the first mail (confirmations, probe, lease, render)")
    return await real_send(self, *args, **kwargs)
transport.SmtpTransport.send = send
with contextlib.redirect_stdout(io.StringIO()):
    code = mailer.cli.main(sys.argv[2:])
assert code == 0, code
mark("after the first mail")
before, cpu, phases = float(sys.argv[1]), 0.0, []
for name, moment, used in marks:
    phases.append((name, moment - before, used - cpu))
    before, cpu = moment, used
print(json.dumps(phases))
"""


def before_first_mail(customers: int, url: str, rounds: int) -> None:
    """The phases of `mailer send` up to its first mail, median of ROUNDS sends."""
    import deliver

    folder = ROOT / "bench" / ".data" / "plan-send"
    deliver.workspace(folder, "promotion", 20)
    try:
        run(deliver.SETUP, str(folder), url, str(customers))
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = int(probe.getsockname()[1])
        sink = subprocess.Popen([deliver.SINK, "-u", "nobody", f"127.0.0.1:{port}", "1024"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        env = deliver.environment(url, port)
        env.pop("PYTHONDONTWRITEBYTECODE", None)  # an installed mailer has its bytecode
        found: dict[str, list[tuple[float, float]]] = {}
        try:
            for _ in range(rounds):
                python(deliver.RESET, str(folder), url)
                started = time.time()
                done = subprocess.run(
                    [sys.executable, "-c", PHASES, str(started), "--workspace", str(folder),
                     "send", "bench", "--now", deliver.NOW, "--json"],
                    capture_output=True, text=True, env=env, cwd=ROOT, check=False)
                if done.returncode != 0:
                    sys.exit(done.stderr[-3000:])
                for name, wall, cpu in json.loads(done.stdout.strip().splitlines()[-1]):
                    found.setdefault(name, []).append((wall, cpu))
        finally:
            sink.terminate()
            sink.wait()
        kind = "postgresql" if url else "sqlite"
        print(f"{kind}: `mailer send` of the demo promotion to {customers:,} customers, "
              f"median of {rounds}; load average {os.getloadavg()[0]:.1f}")
        print(f"{'phase':<58}{'wall s':>8}{'CPU s':>8}")
        total = [0.0, 0.0]
        for name, samples in found.items():
            wall = statistics.median(w for w, _ in samples)
            cpu = statistics.median(c for _, c in samples)
            if name != "after the first mail":
                total[0] += wall
                total[1] += cpu
            print(f"{name:<58}{wall:>8.2f}{cpu:>8.2f}")
        print(f"{'until the first mail (sum of the medians)':<58}{total[0]:>8.2f}{total[1]:>8.2f}")
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def main() -> None:
    parser = arguments(__doc__, {"--customers": 100_000}, "bench/.data/plan")
    parser.add_argument("--before-first-mail", action="store_true",
                        help="the phases of a `mailer send` until its first mail")
    parser.add_argument("--rounds", type=int, default=3)
    options = parser.parse_args()
    if options.before_first_mail:
        before_first_mail(options.customers, options.database_url or "", options.rounds)
        return
    shutil.rmtree(DATA, ignore_errors=True)
    (DATA / "segments").mkdir(parents=True)
    (DATA / "campaigns").mkdir()
    (DATA / "templates").mkdir()
    (DATA / "mailer.yaml").write_text(SETTINGS)
    (DATA / "segments" / "subscribers.yaml").write_text(
        "description: subscribers\nall: [{subscribed: true}]\n")
    (DATA / "campaigns" / "bench.yaml").write_text(CAMPAIGN)
    (DATA / "templates" / "mail.html").write_text(
        "<p>{{ store.address }} <a href='{{ links.unsubscribe }}'>unsubscribe</a></p>")
    url = options.database_url or ""
    try:
        run(SETUP, str(DATA), url, str(options.customers))
        ours_s, ours = run(OURS, str(DATA), url, NOW)
        base_s, base = run(BASELINE, str(DATA), url)
        if ours["planned"] != base["planned"]:
            sys.exit(f"planner planned {ours['planned']}, the bare insert {base['planned']}")
        kind = "postgresql" if url else "sqlite"
        print(f"{kind}: {options.customers:,} customers, {ours['planned']:,} planned, "
              f"excluded {ours['excluded']}")
        print(f"{'path':<32}{'seconds':>10}{'peak MB':>10}")
        print(f"{'mailer planner':<32}{ours_s:>10.1f}"
              f"{int(str(ours['maxrss_kb'])) / 1024:>10.0f}")
        print(f"{'bare INSERT ... SELECT':<32}{base_s:>10.1f}"
              f"{int(str(base['maxrss_kb'])) / 1024:>10.0f}")
        print(f"the planner takes {ours_s / base_s:.1f}x the bare insert "
              "(target: under 60 s and 500 MB at 1M customers)")
    finally:
        if not options.keep:
            shutil.rmtree(DATA, ignore_errors=True)


if __name__ == "__main__":
    main()
