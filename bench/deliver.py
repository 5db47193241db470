"""Delivery benchmark: whole campaigns (plan, render, MIME, SMTP, ledger) into Postfix's
smtp-sink, next to baselines measured in the same run.

    python bench/deliver.py [--recipients N] [--database-url URL] [--concurrency C]
                            [--processes P]

Two campaigns, each in a workspace of its own with N subscribed customers: the demo
promotion (personal subject, intro, coupon per mail) and the heavy newsletter of
bench/render.py (three stories, a grid of 12 product cards, 31 links). Each runs on
SQLite under bench/.data/ and, with --database-url, on that PostgreSQL database too
(emptied). smtp-sink must be installed (Postfix, not started: DESIGN §7). Each mailer
path on a fresh ledger:

- `mailer send` with the defaults (plans, then delivers; DKIM off);
- the same, DKIM on;
- the plan followed by 1 and by P `mailer worker` processes, each with
  `processes: 1` (P only on PostgreSQL: SQLite has one sender);

and, once a campaign, the baselines at its mail's size and the same C connections:

- a bare aiosmtplib loop sending prebuilt bytes, in 1 process and in P processes;
- Postfix's `smtp-source` (said so when it is not installed);
- the `mailmerge` tool (pip; a throwaway venv under /tmp when it is not on PATH) on
  the same mail: the campaign's HTML as mailer rendered it (inlined, tracked), its
  subject, the name filled in per row; min(N, 2000) rows: it sends one at a time.

Each mailer row says its ratio to the bare loop in as many processes as that path uses
(`mailer send` with the defaults: `delivery.processes: auto`), and the CPU
time its processes took per mail (more stable than the wall clock on a busy machine).
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
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
plans = plan_due_at(Path(sys.argv[1]), sys.argv[2], sys.argv[3], compiled=True)
print(sum(plan.planned_count for plan in plans))
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


def compiled_sources() -> None:
    """mailer's modules compiled in place (their __pycache__) before any timing. mailer is
    installed editable here and PYTHONDONTWRITEBYTECODE may be set, so without this every
    timed `mailer send` compiled ~200 modules first (0.9 s of a 10 s send); an installed
    mailer has its .pyc files, as its dependencies have theirs (pip compiles them). The
    variable stops writing, not reading: every later start reads these."""
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "mailer")],
                   check=True, stdout=subprocess.DEVNULL)


def environment(url: str, port: int, dkim_key: str | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILER_")}
    env.update({"MAILER_SMTP_URL": f"smtp://127.0.0.1:{port}", "MAILER_SECRET_KEY": KEY})
    if url:
        env["MAILER_DATABASE_URL"] = url
    if dkim_key:
        env["MAILER_DKIM_KEY"] = dkim_key
    return env


@dataclass
class Bench:
    """One campaign's workspace on one database, and the sink it sends into."""

    folder: Path
    url: str  # "" for SQLite under FOLDER
    port: int
    concurrency: int
    engine: Any = None  # the poller's own, made on first use

    def mailer(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "mailer.cli", "--workspace", str(self.folder), *args]

    def count_left(self) -> int:
        """Rows still to go, asked in this process: a poller that started an interpreter
        per look took a third of the machine from the workers it was timing."""
        from sqlalchemy import create_engine, text

        from mailer.store.db import database_url

        if self.engine is None:
            self.engine = create_engine(database_url(env_url=self.url or None,
                                                     configured=None, root=self.folder))
        with self.engine.connect() as conn:
            return int(conn.execute(text("SELECT count(*) FROM deliveries WHERE status IN "
                                         "('queued', 'deferred', 'sending')")).scalar_one())

    def close(self) -> None:
        if self.engine is not None:
            self.engine.dispose()


@dataclass(frozen=True)
class Timing:
    mails: int
    seconds: float
    cpu: float | None = None  # seconds of CPU of the processes timed (user + system)
    peak_mb: float | None = None


def cpu_of(usage: Any) -> float:
    return float(usage.ru_utime + usage.ru_stime)


def run_send(bench: Bench, dkim_key: str | None = None) -> Timing:
    """One `mailer send bench` on a fresh ledger."""
    python(RESET, str(bench.folder), bench.url)
    started = time.perf_counter()
    with tempfile.TemporaryFile(mode="w+") as errors:
        proc = subprocess.Popen(bench.mailer("send", "bench", "--now", NOW, "--json"),
                                stdout=subprocess.PIPE, stderr=errors, text=True,
                                env=environment(bench.url, bench.port, dkim_key))
        assert proc.stdout is not None
        out = proc.stdout.read()
        _, status, usage = os.wait4(proc.pid, 0)  # this child's own CPU and peak memory
        proc.returncode = os.waitstatus_to_exitcode(status)
        elapsed = time.perf_counter() - started
        if proc.returncode != 0:
            errors.seek(0)
            sys.exit(errors.read()[-3000:])
    summary = json.loads(out)
    return Timing(int(summary["sent"]), elapsed, cpu_of(usage), usage.ru_maxrss / 1024)


def run_workers(bench: Bench, workers: int) -> tuple[float, Timing]:
    """Plan seconds, and the plan + delivery with WORKERS worker processes."""
    python(RESET, str(bench.folder), bench.url)
    started = time.perf_counter()
    _, done = python(PLAN, str(bench.folder), bench.url, NOW)
    planned = time.perf_counter() - started
    env = environment(bench.url, bench.port)
    procs = [subprocess.Popen(bench.mailer("worker", "--now", NOW), env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
             for _ in range(workers)]
    cpu = 0.0
    try:
        while bench.count_left():
            time.sleep(0.2)
        elapsed = time.perf_counter() - started
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            _, _, usage = os.wait4(proc.pid, 0)
            proc.returncode = 0
            cpu += cpu_of(usage)
    return planned, Timing(int(done.stdout.strip() or 0), elapsed, cpu)


@dataclass(frozen=True)
class Sample:
    """A mail of the campaign as mailer renders it, for the baselines."""

    size: int
    subject: str
    html: str
    first_name: str


def sample(bench: Bench) -> Sample:
    out = bench.folder / "preview"
    subprocess.run(bench.mailer("preview", "bench", "--sample", "1", "--now", NOW,
                                "--out", str(out)),
                   capture_output=True, env=environment(bench.url, 0), check=True)
    path = next(out.glob("*.eml"))
    message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
    assert isinstance(message, email.message.EmailMessage)
    body = message.get_body(("html",))
    assert body is not None
    name = str(message["To"]).split(" <")[0].strip('"') or "friend"
    return Sample(path.stat().st_size, str(message["Subject"]), body.get_content(), name)


async def bare_loop(port: int, count: int, concurrency: int, payload: bytes) -> float:
    import aiosmtplib

    async def one_connection(share: int) -> None:
        client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False)
        await client.connect()
        for n in range(share):
            await client.sendmail("hello@shop.example", [f"c{n}@example.com"], payload)
        await client.quit()

    started = time.perf_counter()
    await asyncio.gather(*(one_connection(share) for share in split(count, concurrency)))
    return time.perf_counter() - started


BARE = """
import asyncio, sys
from deliver import bare_loop
port, count, concurrency, size = map(int, sys.argv[1:5])
print(asyncio.run(bare_loop(port, count, concurrency, b"x" * size)))
"""


def split(total: int, parts: int) -> list[int]:
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def bare_processes(port: int, count: int, concurrency: int, size: int,
                   processes: int) -> Timing:
    """The bare loop in PROCESSES processes at once, the mails and connections shared."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, (str(ROOT / "bench"),
                                                      env.get("PYTHONPATH"))))
    started = time.perf_counter()
    procs = [subprocess.Popen([sys.executable, "-c", BARE, str(port), str(mails),
                               str(max(connections, 1)), str(size)], env=env,
                              stdout=subprocess.DEVNULL)
             for mails, connections in zip(split(count, processes),
                                           split(concurrency, processes), strict=True)]
    cpu = 0.0
    for proc in procs:
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode:
            sys.exit("the bare loop failed")
        cpu += cpu_of(usage)
    return Timing(count, time.perf_counter() - started, cpu)


def smtp_source(port: int, count: int, concurrency: int, size: int) -> Timing:
    started = time.perf_counter()
    subprocess.run([SOURCE, "-c", "-l", str(size), "-m", str(count), "-s", str(concurrency),
                    "-f", "hello@shop.example", "-t", "c1@example.com", f"127.0.0.1:{port}"],
                   check=True, capture_output=True)
    return Timing(count, time.perf_counter() - started)


MAILMERGE_VENV = Path(tempfile.gettempdir()) / "mailer-bench-mailmerge"


def mailmerge_tool() -> str | None:
    """The mailmerge command: on PATH, else in a throwaway venv under /tmp (made and
    filled by pip on first use); None when it cannot be had."""
    found = shutil.which("mailmerge")
    if found:
        return found
    tool = MAILMERGE_VENV / "bin" / "mailmerge"
    if not tool.exists():
        made = subprocess.run([sys.executable, "-m", "venv", str(MAILMERGE_VENV)],
                              capture_output=True).returncode == 0 and subprocess.run(
            [str(MAILMERGE_VENV / "bin" / "pip"), "install", "--quiet", "mailmerge"],
            capture_output=True).returncode == 0
        if not made:
            return None
    return str(tool)


def mailmerge(tool: str, folder: Path, port: int, count: int, mail: Sample) -> Timing:
    """mailmerge sending MAIL (its subject and HTML, the reader's name a field)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "server.conf").write_text(f"[smtp_server]\nhost = 127.0.0.1\nport = {port}\n"
                                        "security = Never\nusername = None\n")

    def field(text: str) -> str:  # the Jinja mailmerge renders sees the name as a field
        return "{% raw %}" + text.replace(mail.first_name,
                                          "{% endraw %}{{name}}{% raw %}") + "{% endraw %}"

    (folder / "template.txt").write_text(
        f"TO: {{{{email}}}}\nSUBJECT: {field(mail.subject)}\nFROM: hello@shop.example\n"
        f"CONTENT-TYPE: text/html\n\n{field(mail.html)}\n")
    (folder / "database.csv").write_text(
        "email,name\n" + "".join(f"c{n}@example.com,{mail.first_name}\n" for n in range(count)))
    started = time.perf_counter()
    done = subprocess.run([tool, "--no-dry-run", "--no-limit", "--template", "template.txt",
                           "--database", "database.csv", "--config", "server.conf"],
                          cwd=folder, capture_output=True, check=False)
    if done.returncode != 0:
        sys.exit(f"mailmerge failed: {done.stderr.decode()[-2000:]}")
    return Timing(count, time.perf_counter() - started)


def dkim_key() -> str:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


CAMPAIGNS = {"promotion": "demo promotion", "newsletter": "heavy newsletter"}


def workspace(folder: Path, campaign: str, concurrency: int) -> None:
    """The demo's templates, the bench settings and the one campaign `bench`."""
    from render import NEWSLETTER, heavy_template  # render.py imports this module

    shutil.rmtree(folder, ignore_errors=True)
    for sub in ("segments", "campaigns"):
        (folder / sub).mkdir(parents=True)
    shutil.copytree(ROOT / "templates", folder / "templates")
    (folder / "templates" / "newsletter-heavy.html").write_text(heavy_template())
    (folder / "mailer.yaml").write_text(settings(concurrency, dkim=False))
    (folder / "segments" / "subscribers.yaml").write_text(
        "description: subscribers\nall: [{subscribed: true}]\n")
    (folder / "campaigns" / "bench.yaml").write_text(
        CAMPAIGN if campaign == "promotion" else NEWSLETTER.replace(
            "at: 2026-12-01T10:00\n", "at: 2026-12-01T10:00\ngrace: 2d\n"))


Row = tuple[str, Timing, Timing | None]  # path, its timing, the bare loop it is set against


def mailer_paths(bench: Bench, n: int, processes: int, bare: dict[int, Timing]
                 ) -> list[Row]:
    from mailer.delivery.processes import process_count

    rows: list[Row] = []
    auto = process_count("auto")
    timing = run_send(bench)
    if timing.mails != n:
        sys.exit(f"mailer sent {timing.mails} of {n}")
    # each row against the bare loop in as many processes as the mailer path uses
    rows.append((f"mailer send (defaults: processes {auto}; peak RSS "
                 f"{timing.peak_mb:.0f} MB)", timing, bare[auto]))
    if auto > 1:  # the same send in one process
        (bench.folder / "mailer.yaml").write_text(settings(bench.concurrency, dkim=False,
                                                           processes=1))
        rows.append(("mailer send, processes: 1", run_send(bench), bare[1]))
    (bench.folder / "mailer.yaml").write_text(settings(bench.concurrency, dkim=True))
    rows.append(("mailer send, DKIM on", run_send(bench, dkim_key()), bare[auto]))
    # one process a worker, so that P workers are P processes
    (bench.folder / "mailer.yaml").write_text(settings(bench.concurrency, dkim=False,
                                                       processes=1))
    for workers in sorted({1, processes} if bench.url else {1}):
        planned, timing = run_workers(bench, workers)
        rows.append((f"mailer plan ({planned:.1f} s) + {workers} worker"
                     f"{'s' if workers > 1 else ''} (processes: 1)", timing, bare[workers]))
    (bench.folder / "mailer.yaml").write_text(settings(bench.concurrency, dkim=False))
    return rows


def baselines(port: int, n: int, c: int, processes: int, mail: Sample, folder: Path
              ) -> tuple[list[Row], dict[int, Timing], Timing | None]:
    from mailer.delivery.processes import process_count

    bare = {count: bare_processes(port, n, c, mail.size, count)
            for count in sorted({1, processes, process_count("auto")})}
    rows: list[Row] = [(f"bare aiosmtplib loop, {count} process{'es' if count > 1 else ''}, "
                        f"{mail.size} B", timing, None) for count, timing in bare.items()]
    if Path(SOURCE).exists():
        rows.append((f"smtp-source, {mail.size} B", smtp_source(port, n, c, mail.size), None))
    else:
        print(f"smtp-source: not installed ({SOURCE}; apt-get install postfix)")
    tool = mailmerge_tool()
    merged = None
    if tool is None:
        print("mailmerge: not installed and pip could not install it")
    else:
        merged = mailmerge(tool, folder / "mailmerge", port, min(n, 2000), mail)
        rows.append(("mailmerge, the same mail (one at a time)", merged, None))
    return rows, bare, merged


def table(title: str, rows: list[Row], merged: Timing | None) -> None:
    print(f"\n{title}")
    print(f"{'path':<50}{'mails':>7}{'seconds':>9}{'mails/s':>9}{'× bare':>8}"
          f"{'× mm':>7}{'CPU ms/mail':>12}")
    for name, timing, bare in rows:
        rate = timing.mails / timing.seconds
        versus = f"{rate / (bare.mails / bare.seconds):.2f}" if bare else ""
        mm = f"{rate / (merged.mails / merged.seconds):.1f}" if merged and bare else ""
        cpu = f"{1000 * timing.cpu / timing.mails:.2f}" if timing.cpu is not None else ""
        print(f"{name:<50}{timing.mails:>7,}{timing.seconds:>9.1f}{rate:>9,.0f}{versus:>8}"
              f"{mm:>7}{cpu:>12}")


def main() -> None:
    parser = arguments(__doc__, {"--recipients": 20_000, "--concurrency": 20,
                                 "--processes": min(os.cpu_count() or 1, 4)},
                       "bench/.data/deliver")
    parser.add_argument("--mailer-only", action="store_true",
                        help="only `mailer send` of the promotion on one database, DKIM off "
                             "(the 1M-recipient memory run)")
    options = parser.parse_args()
    if not Path(SINK).exists():
        sys.exit("smtp-sink not found: install Postfix without starting it (DESIGN §7)")
    n, c, p = options.recipients, options.concurrency, max(options.processes, 1)
    databases = [options.database_url] if options.mailer_only and options.database_url \
        else [""] + ([options.database_url] if options.database_url else [])
    shutil.rmtree(DATA, ignore_errors=True)
    compiled_sources()
    port = free_port()
    sink = subprocess.Popen([SINK, "-u", "nobody", f"127.0.0.1:{port}", "1024"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    print(f"{n:,} recipients a campaign, {c} connections, {p} processes where several, "
          f"{os.cpu_count()} cores; ratios: to the bare loop with as many processes "
          f"(× bare) and to mailmerge (× mm)")
    try:
        time.sleep(0.3)
        found: dict[str, tuple[list[Row], dict[int, Timing], Timing | None]] = {}
        for campaign, title in CAMPAIGNS.items():
            for url in databases:
                bench = Bench(DATA / f"{campaign}-{'postgresql' if url else 'sqlite'}",
                              url, port, c)
                workspace(bench.folder, campaign, c)
                python(SETUP, str(bench.folder), url, str(n))
                try:
                    if options.mailer_only:
                        timing = run_send(bench)
                        table(f"{title}, {'postgresql' if url else 'sqlite'}",
                              [("mailer send (defaults; peak RSS "
                                f"{timing.peak_mb:.0f} MB)", timing, None)], None)
                        continue
                    if campaign not in found:  # the baselines once a campaign
                        found[campaign] = baselines(port, n, c, p, sample(bench), bench.folder)
                    rows, bare, merged = found[campaign]
                    size = sample(bench).size
                    table(f"{title} ({size:,} B a mail), {'postgresql' if url else 'sqlite'}",
                          mailer_paths(bench, n, p, bare) + rows, merged)
                finally:
                    bench.close()
            if options.mailer_only:
                break
        print("\ngoals (issue 22): send ≥ 0.5× the bare loop with as many processes "
              "(floor 0.35×), ≥ 3× mailmerge, DKIM on costs ≤ 25 %")
    finally:
        sink.terminate()
        sink.wait()
        if not options.keep:
            shutil.rmtree(DATA, ignore_errors=True)


if __name__ == "__main__":
    main()
