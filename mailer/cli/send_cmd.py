"""`mailer send CAMPAIGN...`: plan what is due at --now, deliver what is due now;
`mailer send CAMPAIGN --test-to ADDRESS`: one customer's mail to ADDRESS, nothing planned."""

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
    from mailer.app.send import SentTest, Summary
    from mailer.cli.common import Session


@click.command()
@click.argument("campaigns", nargs=-1, required=True)
@click.option("--dry-run", is_flag=True, help="Write .eml files instead of sending; the "
              "ledger is not touched.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where --dry-run writes (default: outbox/dry-run in the workspace).")
@click.option("--test-to", "test_to", metavar="ADDRESS",
              help="Send one customer's mail of CAMPAIGN to ADDRESS instead, subject "
              "prefixed [TEST]: nothing is planned, recorded or counted.")
@click.option("--customer", metavar="ID|EMAIL",
              help="With --test-to: whose mail (default: the first preview sample).")
@planning_options
def send(ctx: click.Context, campaigns: tuple[str, ...], dry_run: bool, out: Path | None,
         test_to: str | None, customer: str | None, workspace: str | None, as_json: bool,
         now: str | None, allow_past: bool) -> None:
    """Plan CAMPAIGNS at --now and deliver their mails that are due now.

    Several campaigns are planned in one run in priority order, sharing the caps."""
    from mailer.app.send import SendResult
    from mailer.app.send import dry_run as plan_and_render
    from mailer.app.send import send as plan_and_send
    from mailer.config.workspace import load_valid_workspace
    from mailer.delivery.sending import secret_key, signer, smtp_transport
    from mailer.mail.links import PREVIEW_KEY

    if test_to is not None and dry_run:
        raise click.UsageError("--test-to sends one real mail; it cannot go with --dry-run")
    if test_to is not None and len(campaigns) > 1:
        raise click.UsageError("--test-to sends the mail of one campaign: name only one")
    if customer is not None and test_to is None:
        raise click.UsageError("--customer goes with --test-to")
    if out is not None and not dry_run:
        raise click.UsageError("--out goes with --dry-run")
    run = session(ctx, workspace, now)
    if test_to is not None:
        _test_send(run, campaigns[0], test_to, customer, as_json=as_json)
        return
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


def _test_send(run: Session, campaign: str, to: str, customer: str | None, *,
               as_json: bool) -> None:
    from mailer.app.operator import test_send
    from mailer.cli.common import os_user
    from mailer.config.workspace import load_valid_workspace
    from mailer.delivery.sending import refuse_preview_key, signer, smtp_transport

    refuse_preview_key(run.env)  # the service would accept the test mail's links as real
    settings = run.workspace.settings
    load_valid_workspace(run.root, campaign)  # an unknown campaign: before the SMTP URL
    sent = test_send(run.engine, actor=os_user(), root=run.root, campaign=campaign, to=to,
                     now=run.clock.now().replace(microsecond=0),
                     transport=smtp_transport(run.env, settings), customer=customer,
                     sign=signer(settings, run.env, run.root), via="cli")
    if as_json:
        emit_json(sent.as_json())
        return
    print_test(sent)


def print_test(sent: SentTest) -> None:
    """What a test send sent, and whether the customer would get this mail for real."""
    whose = (f"{sent.customer}'s mail" if sent.reason is None else
             f"{sent.customer}'s mail (the plan would not mail {sent.customer} now: "
             f"{sent.reason})")
    click.echo(f"sent a test of {sent.campaign} to {sent.to}")
    click.echo(f"  subject:    {sent.subject}")
    click.echo(f"  customer:   {whose}")
    click.echo(f"  message id: {sent.message_id}")
    click.echo("  nothing was planned or recorded; its links are signed with the preview key")


SUPPRESSED = ("suppressed", "unsubscribed", "bounced", "complained")  # one column
EARLIER = "already_sent"  # planned by an earlier run: counted there, not again


def print_summaries(summaries: list[Summary], *, title: str, skip_idle: bool = False) -> None:
    """One row per campaign: what was planned, what became of it, who was held back, each
    customer once: those an earlier run planned (already_sent) are not excluded again,
    and a note says how many. The other exclusions are spelled out by reason; a note
    says why `sent` is above `planned`. SKIP_IDLE leaves out campaigns with nothing new
    to report (a sweep over every campaign). The JSON keeps the planner's counts."""
    from mailer.core.wording import counted

    def new_exclusions(s: Summary) -> dict[str, int]:
        return {reason: n for reason, n in s.excluded.items() if reason != EARLIER and n}

    if skip_idle:
        idle = [s for s in summaries if not (s.planned or s.waiting or any(s.outcomes.values())
                                             or new_exclusions(s))]
        summaries = [s for s in summaries if s not in idle]
        if idle:
            title += f" ({counted(len(idle), 'campaign')} had nothing due)"
    columns = ("campaign", "planned", "sent", "deferred", "failed", "unknown", "skipped",
               "expired", "waiting", "capped", "suppressed", "other exclusions")
    rows, notes = [], []
    for s in summaries:
        excluded = new_exclusions(s)
        capped = excluded.pop("frequency_cap", 0)
        suppressed = sum(excluded.pop(reason, 0) for reason in SUPPRESSED)
        others = ", ".join(f"{n} {reason}" for reason, n in sorted(excluded.items())) or "0"
        rows.append((s.campaign, s.planned, *(s.as_json()[k] for k in columns[2:9]),
                     capped, suppressed, others))
        sent = s.outcomes.get("sent", 0)
        if sent > s.planned:  # at least this many of them were planned by earlier runs
            notes.append(f"{s.campaign}: sent includes {sent - s.planned} planned earlier")
        if s.excluded.get(EARLIER):
            notes.append(f"{s.campaign}: {s.excluded[EARLIER]} planned by an earlier run, "
                         "not counted again")
    print_table(columns, rows, title=title)
    for note in notes:
        click.echo(note)


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
