"""Delivery benchmark: a whole campaign (plan, render, MIME, SMTP, ledger) into Postfix's
smtp-sink, next to baselines measured in the same run.

    python bench/deliver.py [--recipients N] [--database-url URL] [--concurrency C]

Builds N subscribed customers in a fresh database (SQLite under bench/.data/, or
the PostgreSQL database given, which is emptied), a `once` campaign on the demo's
promotion template (personal subject, intro, coupon per mail), and starts
smtp-sink (install Postfix without starting it, DESIGN §7). Then, each on a
fresh ledger:

- `mailer send` (plans, then delivers) with the default `delivery.processes` and with
  `processes: 1`, DKIM off, then DKIM on;
- on PostgreSQL, the plan followed by 1 and 2 `mailer worker` processes (each with
  `processes: auto`);
- a bare aiosmtplib loop, C connections, sending prebuilt bytes of a mail's size;
- Postfix's `smtp-source` with the same size and concurrency;
- the `mailmerge` tool (pip), on min(N, 2000) rows: it sends one mail at a time.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from harness import ROOT, arguments, python

DATA = ROOT / "bench" / ".data" / "deliver"
SINK = "/usr/sbin/smtp-sink"
SOURCE = "/usr/sbin/smtp-source"
NOW = "2026-12-01T10:30"
KEY = "bench-secret-key"
CAMPAIGN = """\
name: Bench promotion
trigger: once
at: 2026-12-01T10:00
grace: 2d
segment: subscribers
template: promotion.html
subject:
  - "{{ customer.first_name | default('Friends') }}, 48 hours only: 30% off"
  - "Black Friday: your 30% ends Sunday"
intros:
  default: "Here is something for you, {{ customer.first_name | default('friend') }}."
coupon: {prefix: BF, value: 30%, valid_for: 3d}
"""

SETUP = """
import sys
from datetime import datetime
from pathlib import Path
from harness import fresh_store, stamp, write_rows
root, url, count = Path(sys.argv[1]), sys.argv[2] or None, int(sys.argv[3])
engine = fresh_store(url, root)
created = stamp(engine, datetime(2026, 1, 1))
names = ["Anna", "Bob", "Chloé", "Dmitry", "Emi", "Zoë", "Łukasz", "Giorgos"]
zones = ["Europe/Berlin", "America/New_York", "Asia/Tokyo", None]
write_rows(engine, ("customers", "id, store_id, email, email_key, first_name, timezone, consent, "
                                 "created_at, updated_at",
                    [(i, f"C{i:07d}", f"c{i}@example.com", f"c{i}@example.com", names[i % 8],
                      zones[i % 4], "subscribed", created, created) for i in range(1, count + 1)]))
"""

RESET = """
import sys
from pathlib import Path
from sqlalchemy import text
from mailer.store.db import create, database_url, is_server
engine = create(database_url(env_url=sys.argv[2] or None, configured=None, root=Path(sys.argv[1])))
tables = ("coupons", "deliveries", "plan_runs", "campaign_versions", "rate_slots")
with engine.begin() as conn:
    if is_server(engine):  # no dead rows left for the next run to skip
        conn.execute(text(f"TRUNCATE {', '.join(tables)}"))
    else:
        for table in tables:
            conn.execute(text(f"DELETE FROM {table}"))
"""

PLAN = """
import sys
from pathlib import Path
from harness import plan_due_at
plan_due_at(Path(sys.argv[1]), sys.argv[2], sys.argv[3], compiled=True)
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def settings(concurrency: int, dkim: bool, processes: int | str = "auto") -> str:
    text = ('store: {name: Pine & Co, address: "1 Market St, Springfield", currency: EUR}\n'
            "sender: {from: \"Pine & Co <hello@shop.example>\"}\ntimezone: Europe/Berlin\n"
            "tracking: {base_url: https://mail.shop.example}\npolicy: {frequency: []}\n"
            f"delivery: {{concurrency: {concurrency}, rate_per_second: 10000, "
            f"processes: {processes}}}\n")
    return text + ("dkim: {domain: shop.example, selector: mail}\n" if dkim else "")


def environment(url: str, port: int, dkim_key: str | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILER_")}
    env.update({"MAILER_SMTP_URL": f"smtp://127.0.0.1:{port}", "MAILER_SECRET_KEY": KEY})
    if url:
        env["MAILER_DATABASE_URL"] = url
    if dkim_key:
        env["MAILER_DKIM_KEY"] = dkim_key
    return env


def mailer(*args: str) -> list[str]:
    return [sys.executable, "-m", "mailer.cli", "--workspace", str(DATA), *args]


def count_left(url: str) -> int:
    """Rows still to go, asked in this process: a poller that started an interpreter per
    look took a third of the machine from the workers it was timing."""
    from sqlalchemy import create_engine, text

    from mailer.store.db import database_url

    global _ENGINE
    if _ENGINE is None:
        _ENGINE = create_engine(database_url(env_url=url or None, configured=None, root=DATA))
    with _ENGINE.connect() as conn:
        return int(conn.execute(text("SELECT count(*) FROM deliveries WHERE status IN "
                                     "('queued', 'deferred', 'sending')")).scalar_one())


_ENGINE: Any = None


def run_send(url: str, port: int, dkim_key: str | None = None
             ) -> tuple[float, dict[str, int], float]:
    """Seconds, the JSON summary and the peak RSS (MB) of one `mailer send`."""
    python(RESET, str(DATA), url)
    started = time.perf_counter()
    with tempfile.TemporaryFile(mode="w+") as errors:
        proc = subprocess.Popen(mailer("send", "bench", "--now", NOW, "--json"),
                                stdout=subprocess.PIPE, stderr=errors, text=True,
                                env=environment(url, port, dkim_key))
        assert proc.stdout is not None
        out = proc.stdout.read()
        _, status, usage = os.wait4(proc.pid, 0)  # this child's own peak memory
        proc.returncode = os.waitstatus_to_exitcode(status)
        elapsed = time.perf_counter() - started
        if proc.returncode != 0:
            errors.seek(0)
            sys.exit(errors.read()[-3000:])
    return elapsed, json.loads(out), usage.ru_maxrss / 1024


def run_workers(url: str, port: int, workers: int) -> tuple[float, float]:
    """(plan seconds, plan + delivery seconds) with WORKERS worker processes."""
    python(RESET, str(DATA), url)
    started = time.perf_counter()
    python(PLAN, str(DATA), url, NOW)
    planned = time.perf_counter() - started
    procs = [subprocess.Popen(mailer("worker", "--now", NOW), env=environment(url, port),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
             for _ in range(workers)]
    try:
        while count_left(url):
            time.sleep(0.2)
        elapsed = time.perf_counter() - started
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            proc.wait(timeout=60)
    return planned, elapsed


def mail_size(url: str) -> int:
    out = DATA / "preview"
    subprocess.run(mailer("preview", "bench", "--sample", "1", "--now", NOW, "--out", str(out)),
                   capture_output=True, env=environment(url, 0), check=True)
    return next(out.glob("*.eml")).stat().st_size


async def bare_loop(port: int, count: int, concurrency: int, payload: bytes) -> float:
    import aiosmtplib

    async def one_connection(share: int) -> None:
        client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False)
        await client.connect()
        for n in range(share):
            await client.sendmail("hello@shop.example", [f"c{n}@example.com"], payload)
        await client.quit()

    started = time.perf_counter()
    shares = [count // concurrency + (1 if i < count % concurrency else 0)
              for i in range(concurrency)]
    await asyncio.gather(*(one_connection(share) for share in shares))
    return time.perf_counter() - started


def smtp_source(port: int, count: int, concurrency: int, size: int) -> float:
    started = time.perf_counter()
    subprocess.run([SOURCE, "-c", "-l", str(size), "-m", str(count), "-s", str(concurrency),
                    "-f", "hello@shop.example", "-t", "c1@example.com", f"127.0.0.1:{port}"],
                   check=True, capture_output=True)
    return time.perf_counter() - started


def mailmerge(port: int, count: int) -> float | None:
    tool = shutil.which("mailmerge") or str(Path(sys.executable).parent / "mailmerge")
    if not Path(tool).exists():
        return None
    folder = DATA / "mailmerge"
    folder.mkdir(exist_ok=True)
    (folder / "server.conf").write_text(f"[smtp_server]\nhost = 127.0.0.1\nport = {port}\n"
                                        "security = Never\nusername = None\n")
    (folder / "template.txt").write_text(
        "TO: {{email}}\nSUBJECT: {{name}}, 48 hours only: 30% off\nFROM: hello@shop.example\n"
        "CONTENT-TYPE: text/html\n\n<p>Hello {{name}}, here is something for you.</p>\n")
    (folder / "database.csv").write_text(
        "email,name\n" + "".join(f"c{n}@example.com,Name{n}\n" for n in range(count)))
    started = time.perf_counter()
    subprocess.run([tool, "--no-dry-run", "--no-limit", "--template", "template.txt",
                    "--database", "database.csv", "--config", "server.conf"],
                   cwd=folder, check=True, capture_output=True)
    return time.perf_counter() - started


def dkim_key() -> str:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def baselines(rows: list[tuple[str, int, float]], url: str, port: int, n: int, c: int,
              size: int) -> None:
    """DKIM on, then the tools we compare with, into the same sink."""
    (DATA / "mailer.yaml").write_text(settings(c, dkim=True))
    seconds, summary, _ = run_send(url, port, dkim_key())
    rows.append(("mailer send, DKIM on", summary["sent"], seconds))
    rows.append((f"bare aiosmtplib loop, prebuilt {size} B", n,
                 asyncio.run(bare_loop(port, n, c, b"x" * size))))
    rows.append((f"smtp-source, {size} B", n, smtp_source(port, n, c, size)))
    merged = min(n, 2000)
    took = mailmerge(port, merged)
    if took is not None:
        rows.append(("mailmerge (one mail at a time)", merged, took))


def main() -> None:
    from mailer.delivery.processes import process_count

    parser = arguments(__doc__, {"--recipients": 20_000, "--concurrency": 20},
                       "bench/.data/deliver")
    parser.add_argument("--mailer-only", action="store_true",
                        help="only `mailer send`, DKIM off (the 1M-recipient memory run)")
    options = parser.parse_args()
    if not Path(SINK).exists():
        sys.exit("smtp-sink not found: install Postfix without starting it (DESIGN §7)")
    url, n, c = options.database_url or "", options.recipients, options.concurrency
    shutil.rmtree(DATA, ignore_errors=True)
    for folder in ("segments", "campaigns"):
        (DATA / folder).mkdir(parents=True)
    shutil.copytree(ROOT / "templates", DATA / "templates")
    (DATA / "mailer.yaml").write_text(settings(c, dkim=False))
    (DATA / "segments" / "subscribers.yaml").write_text(
        "description: subscribers\nall: [{subscribed: true}]\n")
    (DATA / "campaigns" / "bench.yaml").write_text(CAMPAIGN)
    port = free_port()
    sink = subprocess.Popen([SINK, "-u", "nobody", f"127.0.0.1:{port}", "1024"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    rows: list[tuple[str, int, float]] = []
    try:
        time.sleep(0.3)
        python(SETUP, str(DATA), url, str(n))
        size = mail_size(url)
        seconds, summary, peak = run_send(url, port)
        if summary["sent"] != n:
            sys.exit(f"mailer sent {summary['sent']} of {n}: {summary}")
        auto = process_count("auto")
        rows.append((f"mailer send (plan + deliver), processes: auto = {auto}", n, seconds))
        if options.mailer_only:
            pass
        elif auto > 1:  # the same send delivering in one process
            (DATA / "mailer.yaml").write_text(settings(c, dkim=False, processes=1))
            seconds, summary, _ = run_send(url, port)
            rows.append(("mailer send, processes: 1", summary["sent"], seconds))
            (DATA / "mailer.yaml").write_text(settings(c, dkim=False))
        if options.mailer_only:
            pass
        elif url:
            planned, elapsed = run_workers(url, port, 1)
            rows.append((f"mailer plan ({planned:.1f} s) + 1 worker", n, elapsed))
            planned, elapsed = run_workers(url, port, 2)
            rows.append((f"mailer plan ({planned:.1f} s) + 2 workers", n, elapsed))
        if not options.mailer_only:
            baselines(rows, url, port, n, c, size)
        kind = "postgresql" if url else "sqlite"
        print(f"{kind}: {n:,} recipients, concurrency {c}, mail size {size} bytes, "
              f"peak RSS of a send {peak:.0f} MB")
        print(f"{'path':<48}{'mails':>9}{'seconds':>9}{'mails/s':>9}")
        for name, mails, took_s in rows:
            print(f"{name:<48}{mails:>9,}{took_s:>9.1f}{mails / took_s:>9,.0f}")
        print("floor: 1,500 complete personal mails/s end to end with 2 workers, target 2,500")
    finally:
        sink.terminate()
        sink.wait()
        if not options.keep:
            shutil.rmtree(DATA, ignore_errors=True)


if __name__ == "__main__":
    main()
