"""`mailer send CAMPAIGN...`: plan what is due at --now, deliver what is due now."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from mailer.cli.common import (
    emit_json,
    planning_options,
    print_table,
    refuse_past,
    session,
    stderr_is_terminal,
)

if TYPE_CHECKING:
    from mailer.app.send import Summary


@click.command()
@click.argument("campaigns", nargs=-1, required=True)
@click.option("--dry-run", is_flag=True, help="Write .eml files instead of sending; the "
              "ledger is not touched.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where --dry-run writes (default: outbox/dry-run in the workspace).")
@planning_options
def send(ctx: click.Context, campaigns: tuple[str, ...], dry_run: bool, out: Path | None,
         workspace: str | None, as_json: bool, now: str | None, allow_past: bool) -> None:
    """Plan CAMPAIGNS at --now and deliver their mails that are due now.

    Several campaigns are planned in one run in priority order, sharing the caps."""
    from mailer.app.send import SendResult
    from mailer.app.send import dry_run as plan_and_render
    from mailer.app.send import send as plan_and_send
    from mailer.cli.deliver import secret_key, signer, smtp_transport
    from mailer.config.workspace import load_valid_workspace
    from mailer.mail.links import PREVIEW_KEY

    if out is not None and not dry_run:
        raise click.UsageError("--out goes with --dry-run")
    run = session(ctx, workspace, now)
    settings = run.workspace.settings
    for slug in campaigns:  # every campaign named must exist ("did you mean")
        specs, every = load_valid_workspace(run.root, slug)
    known = {slug: every[slug] for slug in campaigns}
    if not dry_run:  # a dry run writes no plan, so any --now is fine
        refuse_past(run, allow_past=allow_past)
    sign = signer(settings, run.env, run.root)
    if dry_run:
        folder = out or run.root / "outbox" / "dry-run"
        summaries = plan_and_render(run.engine, run.root, specs, known, settings=settings,
                                    now=run.clock.now(), key=run.env.secret_key or PREVIEW_KEY,
                                    out=folder, sign=sign)
    else:
        key = secret_key(run.env)
        transport = smtp_transport(run.env, settings)
        progress = _progress() if stderr_is_terminal() and not as_json else None
        try:
            summaries = plan_and_send(
                run.engine, run.root, specs, known, settings=settings, clock=run.clock,
                transport=transport, key=key, sign=sign, probe=transport.probe,
                on_planned=progress.total if progress else None,
                on_outcome=progress.advance if progress else None)
        finally:
            if progress is not None:
                progress.stop()
    if as_json:
        emit_json(SendResult(tuple(summaries), tuple(campaigns)).as_json())
        return
    print_summaries(summaries, title="dry run: nothing sent" if dry_run else "send")
    if dry_run:
        click.echo(f"mails written to {out or run.root / 'outbox' / 'dry-run'}")


def print_summaries(summaries: list[Summary], *, title: str, skip_idle: bool = False) -> None:
    """One row per campaign: what was planned, what became of it, who was held back.
    SKIP_IDLE leaves out campaigns with nothing to report (a sweep over every campaign)."""
    if skip_idle:
        idle = [s for s in summaries if not (s.planned or s.waiting or any(s.outcomes.values())
                                             or s.excluded)]
        summaries = [s for s in summaries if s not in idle]
        if idle:
            title += f" ({len(idle)} campaigns had nothing due)"
    columns = ("campaign", "planned", "sent", "deferred", "failed", "unknown", "skipped",
               "expired", "waiting", "capped", "suppressed", "other exclusions")
    rows = []
    for s in summaries:
        capped = s.excluded.get("frequency_cap", 0)
        suppressed = sum(s.excluded.get(r, 0) for r in ("suppressed", "unsubscribed",
                                                         "bounced", "complained"))
        rows.append((s.campaign, s.planned, *(s.as_json()[k] for k in columns[2:9]),
                     capped, suppressed, sum(s.excluded.values()) - capped - suppressed))
    print_table(columns, rows, title=title)


class _Progress:
    """A progress bar on stderr for a person at a terminal."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import Progress

        self._bar = Progress(console=Console(stderr=True), transient=True)
        self._task = self._bar.add_task("sending", total=None)
        self._bar.start()

    def total(self, count: int) -> None:
        self._bar.update(self._task, total=count)

    def advance(self, campaign: str, status: str) -> None:
        self._bar.advance(self._task)

    def stop(self) -> None:
        self._bar.stop()


def _progress() -> _Progress:
    return _Progress()
