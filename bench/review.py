"""Monthly review benchmark: `mailer review` on 1M survey answers beside what it is made of.

    python bench/review.py [--answers N] [--database-url URL] [--keep]

Fills the store with bench/responses.py's filler (default 1,000,000 answers: the demo
survey's five questions to 200,000 mails over 12 months), then times in the same run:

- `mailer review --json` for the month before the filler's now, one process end to end,
  beside `mailer status --json` (what every command's start costs);
- monthly_review in-process, best of 3, beside its largest part, survey_responses over
  the two months it reads (the baseline: what `mailer responses --since --until` costs).

The target (issue 19) is under 5 s for the command on 1M answers.
"""

from __future__ import annotations

import json
import os
import shutil
import sys

from harness import ROOT, arguments, python
from responses import best_of, survey_store

from segments import NOW, SETTINGS

sys.path.insert(0, str(ROOT))

from mailer.app.review.monthly import month_of, monthly_review, previous_month
from mailer.app.stages import month_bounds
from mailer.app.surveys.responses import survey_responses
from mailer.config.settings import parse_settings
from mailer.core.clock import iso_z

DATA = ROOT / "bench" / ".data" / "review"


def main() -> None:
    parser = arguments(__doc__, {"--answers": 1_000_000}, "bench/.data/review/")
    options = parser.parse_args()
    engine = survey_store(options.database_url, DATA, options.answers)
    try:
        settings, _ = parse_settings(SETTINGS)
        month = previous_month(month_of(NOW, settings))
        seconds, result = best_of(3, lambda: monthly_review(engine, DATA, settings, month, NOW))
        print(f"monthly_review in-process:        {seconds:6.2f} s  ({month:%Y-%m}: "
              f"{result['surveys'][0]['responses']:,} responses)")
        before, _ = month_bounds(previous_month(month), settings)
        _, end = month_bounds(month, settings)
        baseline, _ = best_of(3, lambda: survey_responses(
            engine, DATA, settings, "feedback", since=iso_z(before), until=iso_z(end)))
        print(f"baseline survey_responses, 2 mo:  {baseline:6.2f} s")
        env = dict(os.environ)
        env.pop("MAILER_WORKSPACE", None)
        if options.database_url:
            env["MAILER_DATABASE_URL"] = options.database_url
        cli = "from mailer.cli import main; import sys; sys.exit(main(sys.argv[1:]))"
        start_up, _ = python(cli, "--workspace", str(DATA), "status", "--json", env=env)
        command, done = python(cli, "--workspace", str(DATA), "review", "--month",
                               f"{month:%Y-%m}", "--now", iso_z(NOW), "--json", env=env)
        if json.loads(done.stdout) != result:
            sys.exit("the command and the in-process call disagree")
        print(f"mailer review --json process:     {command:6.2f} s  (target < 5 s; "
              f"mailer status --json: {start_up:.2f} s)")
    finally:
        engine.dispose()
        if not options.keep:
            shutil.rmtree(DATA, ignore_errors=True)


if __name__ == "__main__":
    main()
