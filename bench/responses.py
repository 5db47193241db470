"""Survey responses benchmark: `mailer responses` on 1M answers beside plain scans.

    python bench/responses.py [--answers N] [--database-url URL] [--keep]

Fills the responses table straight through the driver (default 1,000,000 answers: the
demo survey's five questions to 200,000 mails of 100,000 customers, spread over 12
months, every one with a comment), then times in the same run on the same
store:

- `mailer responses feedback --json`, one process end to end (interpreter start
  included), beside `mailer status --json` (what every command's start costs);
- survey_responses in-process (what the command calls: five aggregate queries), best of 3;
- the baselines: `SELECT count(*) FROM responses` and one GROUP BY question, value over
  the whole table (the least any score needs to read), best of 3.

The target (issue 19) is under 5 s for the command on 1M answers.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from harness import ROOT, arguments, fresh_store, python, stamp, write_rows
from sqlalchemy import Engine, text

from segments import NOW, SETTINGS

sys.path.insert(0, str(ROOT))

from mailer.app.surveys.responses import survey_responses
from mailer.config.settings import parse_settings
from mailer.core.addresses import email_key

DATA = ROOT / "bench" / ".data" / "responses"
QUESTIONS = 5  # the demo survey: overall, delivery, recommend, found_us, comment
WORDS = ["slow", "great", "late", "friendly", "broken", "fast", "cheap", "lovely"]


def generate(engine: Engine, answers: int) -> int:
    """Customers and ANSWERS answers (whole mails of the demo survey); the mails written."""
    rng = random.Random(19)
    mails = answers // QUESTIONS
    customers = max(1, mails // 2)
    created = stamp(engine, NOW)
    people = [(index, f"C{index:07d}", f"c{index}@example.com",
               email_key(f"c{index}@example.com"), "subscribed", created, created, created)
              for index in range(1, customers + 1)]
    rows: list[tuple[Any, ...]] = []
    row_id = 0
    for mail in range(mails):
        customer = mail % customers + 1
        at = NOW - timedelta(seconds=rng.randrange(0, 365 * 86400))
        when = stamp(engine, at)
        occurrence = f"order:{mail + 1}"
        overall = rng.choices(range(1, 6), weights=[1, 1, 2, 5, 6])[0]
        values: list[tuple[str, int | None, str | None]] = [
            ("overall", overall, None),
            ("delivery", rng.choices(range(1, 6), weights=[1, 2, 3, 5, 4])[0], None),
            ("recommend", min(10, max(0, overall * 2 + rng.randrange(-2, 2))), None),
            ("found_us", None, rng.choice(["search", "friend", "social", "ad", "other"])),
            ("comment", None, " ".join(rng.choices(WORDS, k=3)))]
        for question, number, words in values:
            row_id += 1
            rows.append((row_id, customer, "feedback", occurrence, "feedback", "f" * 64,
                         question, number, words, when))
    write_rows(
        engine,
        ("customers", "id, store_id, email, email_key, consent, signed_up_at, created_at, "
                      "updated_at", people),
        ("responses", "id, customer_id, campaign, occurrence, survey, version_hash, question, "
                      "value_number, value_text, at", rows))
    return mails


def best_of(runs: int, work: Any) -> tuple[float, Any]:
    best, result = float("inf"), None
    for _ in range(runs):
        started = time.perf_counter()
        result = work()
        best = min(best, time.perf_counter() - started)
    return best, result


def scalar(engine: Engine, sql: str) -> Any:
    with engine.connect() as conn:
        return conn.execute(text(sql)).all()


def survey_store(url: str | None, data: Path, answers: int) -> Engine:
    """A fresh store in DATA (the demo's feedback survey) with ANSWERS answers, said so."""
    shutil.rmtree(data, ignore_errors=True)
    (data / "surveys").mkdir(parents=True)
    (data / "mailer.yaml").write_text(SETTINGS, encoding="utf-8")
    shutil.copy(ROOT / "surveys" / "feedback.yaml", data / "surveys" / "feedback.yaml")
    engine = fresh_store(url, data)
    started = time.perf_counter()
    mails = generate(engine, answers)
    print(f"{engine.dialect.name}: {answers:,} answers of {mails:,} mails, ready in "
          f"{time.perf_counter() - started:.0f} s")
    return engine


def main() -> None:
    parser = arguments(__doc__, {"--answers": 1_000_000}, "bench/.data/responses/")
    options = parser.parse_args()
    engine = survey_store(options.database_url, DATA, options.answers)
    try:
        settings, _ = parse_settings(SETTINGS)
        seconds, result = best_of(3, lambda: survey_responses(engine, DATA, settings,
                                                              "feedback"))
        print(f"survey_responses in-process:      {seconds:6.2f} s  ({result['responses']:,} "
              f"responses, CSI {result['csi']}, NPS {result['nps']}, "
              f"{len(result['by_month'])} months)")
        count, _ = best_of(3, lambda: scalar(engine, "SELECT count(*) FROM responses"))
        print(f"baseline SELECT count(*):         {count:6.2f} s")
        grouped, _ = best_of(3, lambda: scalar(
            engine, "SELECT question, value_number, count(*) FROM responses "
                    "WHERE survey = 'feedback' GROUP BY question, value_number"))
        print(f"baseline one GROUP BY:            {grouped:6.2f} s")
        env = dict(os.environ)
        env.pop("MAILER_WORKSPACE", None)
        if options.database_url:
            env["MAILER_DATABASE_URL"] = options.database_url
        cli = "from mailer.cli import main; import sys; sys.exit(main(sys.argv[1:]))"
        start_up, _ = python(cli, "--workspace", str(DATA), "status", "--json", env=env)
        command, done = python(cli, "--workspace", str(DATA), "responses", "feedback", "--json",
                               env=env)
        if json.loads(done.stdout) != result:
            sys.exit("the command and the in-process call disagree")
        print(f"mailer responses --json process:  {command:6.2f} s  (target < 5 s; "
              f"mailer status --json: {start_up:.2f} s)")
    finally:
        engine.dispose()
        if not options.keep:
            shutil.rmtree(DATA, ignore_errors=True)


if __name__ == "__main__":
    main()
