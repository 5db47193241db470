"""The daemon on the demo workspace: each campaign sent when due, edits and broken files
survived, clean stops. Prints what it saw; exits 1 when a promise was broken.

    python bench/daemon_soak.py [--minutes 10]

Part 1, simulated days: for each due moment of the demo's campaigns a `mailer run`
starts a minute before it (`--now`), runs until a minute after, and is stopped with
SIGTERM. The ledger then says when each campaign's first mail went out (the
daemon's clock) against the moment it was due.
Part 2, the real clock for --minutes: one `mailer run`; a `once` campaign added
for a minute later, a broken file written and fixed, a campaign edited, SIGHUP;
SIGTERM at the end.
"""

from __future__ import annotations

import argparse
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

BERLIN = ZoneInfo("Europe/Berlin")
# (campaign, the local moment it is due) on the demo store.
MOMENTS = [("big-spender-thanks", "2026-11-23T11:00"), ("win-back", "2026-11-25T10:00"),
           ("black-friday", "2026-11-27T08:00"), ("newsletter", "2026-12-01T10:00")]
KEY = "soak-secret"


def mailer(root: Path, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mailer.cli", "--workspace", str(root), *args],
                          env=env, capture_output=True, text=True, check=True)


def daemon(root: Path, env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "mailer.cli", "--workspace", str(root),
                             "run", *args], env=env, text=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def stop(process: subprocess.Popen[str]) -> tuple[float, int, str]:
    started = time.monotonic()
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=60)
    return time.monotonic() - started, process.returncode, err


def first_sent(root: Path, campaign: str) -> datetime | None:
    with sqlite3.connect(root / "mailer.db") as db:
        value = db.execute("SELECT min(sent_at) FROM deliveries WHERE campaign = ? AND "
                           "status = 'sent'", (campaign,)).fetchone()[0]
    return datetime.fromisoformat(value).replace(tzinfo=UTC) if value else None


def count(root: Path, sql: str) -> int:
    with sqlite3.connect(root / "mailer.db") as db:
        return int(db.execute(sql).fetchone()[0])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--minutes", type=float, default=10.0)
    options = parser.parse_args()
    broken = []
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch) / "shop"
        env = {k: v for k, v in os.environ.items() if not k.startswith("MAILER_")}
        mailer(Path(scratch), "init", str(root), env=env)
        mailer(root, "demo-data", "--customers", "500", "--seed", "7", "--now",
               "2026-11-23T10:00", env=env)
        # The sink's lines go to a file: a pipe nobody reads fills up and stalls the sink.
        sink_log = Path(scratch) / "sink.log"
        with sink_log.open("w") as out:
            sink = subprocess.Popen([sys.executable, "-m", "mailer.cli", "sink", "--port", "0",
                                     "--maildir", str(root / "outbox")], env=env, text=True,
                                    stdout=out, stderr=subprocess.STDOUT)
        while not sink_log.read_text().startswith("listening on"):
            time.sleep(0.1)
        port = sink_log.read_text().splitlines()[0].strip().rsplit(":", 1)[1]
        env.update({"MAILER_SMTP_URL": f"smtp://127.0.0.1:{port}", "MAILER_SECRET_KEY": KEY})
        started = time.monotonic()
        try:
            print("part 1: a daemon a minute either side of each due moment (simulated clock)")
            print(f"{'campaign':<20} {'due (UTC)':<22} {'first sent':<22} {'lag':>7} "
                  f"{'stop':>6}")
            for campaign, local in MOMENTS:
                due = datetime.fromisoformat(local).replace(tzinfo=BERLIN).astimezone(UTC)
                process = daemon(root, env, "--now", (due - timedelta(seconds=60)).isoformat())
                time.sleep(120)
                took, code, err = stop(process)
                sent = first_sent(root, campaign)
                lag = (sent - due).total_seconds() if sent else float("nan")
                print(f"{campaign:<20} {due:%Y-%m-%dT%H:%M:%SZ}   "
                      f"{f'{sent:%Y-%m-%dT%H:%M:%S}Z' if sent else '-':<22} {lag:>6.1f}s "
                      f"{took:>5.1f}s")
                if sent is None or lag < 0 or lag > 60 or code != 0 or took > 30:
                    broken.append(f"{campaign}: sent {sent}, due {due}, exit {code}")
                    print(err[-2000:])
            print(f"\npart 2: the real clock for {options.minutes:g} minutes")
            process = daemon(root, env)
            time.sleep(5)
            now = datetime.now(UTC).replace(microsecond=0)
            flash_at = now + timedelta(seconds=60)
            (root / "campaigns" / "flash.yaml").write_text(
                f"name: Flash sale\ntrigger: once\nat: {flash_at:%Y-%m-%dT%H:%M:%S}Z\n"
                "grace: 1h\nsegment: subscribers\ntemplate: promotion.html\n"
                "subject: A flash sale, just for you\n", encoding="utf-8")
            time.sleep(10)
            newsletter = root / "campaigns" / "newsletter.yaml"
            good = newsletter.read_text(encoding="utf-8")
            newsletter.write_text(good.replace("segment:", "segmnt:"), encoding="utf-8")
            time.sleep(10)
            newsletter.write_text(good.replace("what is new for you", "news for you"),
                                  encoding="utf-8")
            os.kill(process.pid, signal.SIGHUP)
            time.sleep(max(0.0, options.minutes * 60 - 25))
            took, code, err = stop(process)
            sent = first_sent(root, "flash")
            lag = (sent - flash_at).total_seconds() if sent else float("nan")
            flash = count(root, "SELECT count(*) FROM deliveries WHERE campaign = 'flash' "
                                "AND status = 'sent'")
            sweeps = err.count(" sweep now=")
            print(f"flash sale due {flash_at:%H:%M:%S}Z: first sent after {lag:.1f} s, "
                  f"{flash} mails; sweeps logged: {sweeps}; broken file ignored: "
                  f"{'workspace change ignored' in err}; edit picked up: "
                  f"{'changed=newsletter' in err}; stop took {took:.1f} s, exit {code}")
            if not (sent and 0 <= lag <= 60 and flash > 0 and code == 0 and took <= 30
                    and "workspace change ignored" in err and "changed=newsletter" in err):
                broken.append("part 2")
                print(err[-3000:])
            sending = count(root, "SELECT count(*) FROM deliveries WHERE status = 'sending'")
            duplicates = count(root, "SELECT count(*) FROM (SELECT message_id FROM deliveries "
                                     "WHERE message_id IS NOT NULL GROUP BY message_id "
                                     "HAVING count(*) > 1)")
            caught = len(list((root / "outbox" / "new").iterdir()))
            total = count(root, "SELECT count(*) FROM deliveries WHERE status = 'sent'")
            unknown = count(root, "SELECT count(*) FROM deliveries WHERE status = 'unknown'")
            print(f"\nin all: {total} sent, {unknown} unknown, {caught} caught by the sink, "
                  f"{sending} left `sending`, {duplicates} duplicate message ids; "
                  f"{(time.monotonic() - started) / 60:.1f} minutes")
            if caught != total or unknown or sending or duplicates:
                broken.append("ledger and sink disagree")
        finally:
            sink.terminate()
            sink.wait()
    for problem in broken:
        print(f"BROKEN: {problem}")
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
