"""`mailer responses SURVEY [--since T] [--until T] [--json] [--csv FILE]` (docs/surveys.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from mailer.cli.common import check_time, emit_json, print_table, session, workspace_json

SHOWN_COMMENTS = 5  # the latest comments the text output prints


def _score(value: float | None) -> str:
    return "—" if value is None else f"{value:g}"


@click.command()
@click.argument("survey")
@click.option("--since", metavar="TIME", callback=check_time,
              help="Answers recorded at or after TIME (ISO 8601; no offset = workspace zone).")
@click.option("--until", metavar="TIME", callback=check_time,
              help="Answers recorded before TIME.")
@click.option("--csv", "csv_file", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write every answer to FILE, one row per answer.")
@workspace_json
def responses(ctx: click.Context, survey: str, since: str | None, until: str | None,
              csv_file: Path | None, workspace: str | None, as_json: bool) -> None:
    """A survey's responses: per question count, mean, CSAT and answers; the CSI and NPS,
    month by month (workspace zone); the latest comments."""
    from mailer.app.surveys.responses import export_csv, survey_responses

    run = session(ctx, workspace)
    settings = run.workspace.settings
    result = survey_responses(run.engine, run.root, settings, survey, since=since, until=until)
    written = None
    if csv_file is not None:
        written = export_csv(run.engine, run.root, settings, survey, csv_file, since=since,
                             until=until)
    if as_json:
        emit_json(result)
        return
    _print(result)
    if written is not None:
        click.echo(f"wrote {written} answers to {csv_file}")


def _print(result: dict[str, Any]) -> None:
    click.echo(f"{result['survey']}: {result['responses']} responses, "
               f"CSI {_score(result['csi'])}, NPS {_score(result['nps'])}")
    print_table(("question", "kind", "answers", "mean", "CSAT %", "distribution"), (
        (q["id"], q["kind"], q["count"], _score(q["mean"]), _score(q["csat"]),
         "  ".join(f"{value}: {n}" for value, n in q["distribution"].items()))
        for q in result["questions"]))
    if result["by_month"]:
        print_table(("month", "responses", "CSI", "NPS"), (
            (m["month"], m["responses"], _score(m["csi"]), _score(m["nps"]))
            for m in result["by_month"]))
    comments = result["comments"][:SHOWN_COMMENTS]
    if not comments:
        click.echo("no comments")
        return
    click.echo("latest comments:")
    for comment in comments:
        click.echo(f"  {comment['at']} {comment['customer']} ({comment['question']}): "
                   f"{' '.join(comment['text'].split())}")
