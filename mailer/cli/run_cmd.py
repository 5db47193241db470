"""`mailer run`: the scheduler daemon; `mailer run --once`: one sweep, then exit."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from mailer.cli.common import emit_json, planning_options, refuse_past, session

if TYPE_CHECKING:
    from mailer.cli.common import Session
    from mailer.daemon.scheduler import Loaded


@click.command()
@click.option("--once", is_flag=True, help="Plan and deliver everything due at --now "
              "(retries included), then exit: one sweep of the daemon.")
@click.option("--no-deliver", is_flag=True, help="Plan only; `mailer worker`s deliver.")
@click.option("--interval", type=click.FloatRange(0.1, 60.0), default=60.0, show_default=True,
              help="Seconds between sweeps and between the delivery counts lines "
              "(at most a minute).")
@planning_options
def run(ctx: click.Context, once: bool, no_deliver: bool, interval: float,
        workspace: str | None, as_json: bool, now: str | None, allow_past: bool) -> None:
    """Plan every campaign on its trigger and deliver what is due, until SIGTERM.

    The workspace is re-read when its files change (or on SIGHUP): a valid one is
    swapped in, a broken one is logged and ignored. On PostgreSQL a second `run`
    stands by and takes over when the first dies."""
    from mailer.daemon.scheduler import load

    run_ = session(ctx, workspace, now)
    loaded = load(run_.root)  # an invalid workspace: every problem, exit 1, nothing sent
    refuse_past(run_, allow_past=allow_past)  # both write plans
    if once:
        _once(run_, loaded, deliver=not no_deliver, as_json=as_json)
    else:
        _daemon(run_, loaded, deliver=not no_deliver, interval=interval)


def _once(run_: Session, loaded: Loaded, *, deliver: bool, as_json: bool) -> None:
    from collections import Counter
    from datetime import UTC, datetime

    from mailer.app.send import SendResult, Summary, plan_now, send
    from mailer.app.stages import update_forward
    from mailer.cli.send_cmd import print_summaries
    from mailer.core.clock import iso_z
    from mailer.daemon.scheduler import find_next_due
    from mailer.delivery.sending import secret_key, signer, smtp_transport
    from mailer.store.daemon_state import write_state
    from mailer.store.ledger import new_owner, waiting
    from mailer.store.locks import Leadership

    engine, settings = run_.engine, loaded.settings
    moment = run_.clock.now()
    leadership = Leadership(engine)
    leadership.take(timeout=30.0)  # a daemon leading planning: wait, then exit 3
    started = datetime.now(UTC)
    try:
        # one sweep of the daemon: its stages update first, so stage_change is due now
        stages = update_forward(engine, settings, moment)
        if isinstance(stages, Exception):
            click.echo(f"stages not updated: {stages}", err=True)
        if deliver:
            transport = smtp_transport(run_.env, settings)
            summaries = send(engine, run_.root, loaded.specs, loaded.campaigns,
                             settings=settings, clock=run_.clock, transport=transport,
                             key=secret_key(run_.env), sign=signer(settings, run_.env, run_.root),
                             probe=transport.probe, every_campaign=True,
                             versions=loaded.versions)
        else:
            expired: Counter[str] = Counter()
            plans = plan_now(engine, loaded.specs, loaded.campaigns, settings=settings,
                             versions=loaded.versions, now=run_.clock.now(), expired=expired)
            if run_.env.secret_key:  # the double opt-in's notices, for the workers to send
                from mailer.delivery.confirmations import queue_confirmations

                queue_confirmations(engine, settings, run_.env.secret_key, run_.clock.now())
            summaries = [Summary(p.campaign, p.planned_count, {"expired": expired[p.campaign]},
                                 waiting(engine, p.campaign), p.counts())
                         for p in sorted(plans, key=lambda p: p.campaign)]
        finished = datetime.now(UTC)
        upcoming = find_next_due(engine, loaded, moment)
        write_state(engine, {"owner": new_owner(), "heartbeat_at": finished,
                             "last_sweep_at": moment, "stopped_at": finished,
                             "last_planned": sum(s.planned for s in summaries),
                             "next_due_at": upcoming.at if upcoming else None,
                             "next_due_campaign": upcoming.campaign if upcoming else None},
                    started=started)
    finally:
        leadership.release()
    if as_json:
        emit_json(SendResult(tuple(summaries)).as_json())
        return
    title = f"run --once at {iso_z(moment)}" + ("" if deliver else " --no-deliver")
    print_summaries(summaries, title=title, skip_idle=True)


def _daemon(run_: Session, loaded: Loaded, *, deliver: bool, interval: float) -> None:
    import logging
    from contextlib import ExitStack

    from mailer.app.send import open_worker
    from mailer.cli.common import Signals, run_signalled
    from mailer.core.logs import configure
    from mailer.daemon.scheduler import Daemon
    from mailer.delivery.sending import secret_key, signer, smtp_transport
    from mailer.store.db import is_server
    from mailer.store.ledger import new_owner
    from mailer.store.locks import Leadership

    configure(run_.env.log_format)
    log = logging.getLogger("mailer.run")
    engine, settings = run_.engine, loaded.settings
    owner = new_owner()
    # --no-deliver needs no key; given one, it still signs the double opt-in's links
    key = secret_key(run_.env) if deliver else (run_.env.secret_key or "")
    transport = smtp_transport(run_.env, settings) if deliver else None
    leadership = Leadership(engine)
    if not is_server(engine):
        leadership.try_take()  # SQLite: a second daemon exits 3 at once, never stands by
    log.info("mailer run started owner=%s deliver=%s campaigns=%d", owner,
             "yes" if deliver else "no", len(loaded.campaigns))
    with ExitStack() as sending:
        delivery = None
        if transport is not None:  # SQLite: a second sender exits 3 at once
            delivery = sending.enter_context(open_worker(
                engine, transport, settings, owner=owner, clock=run_.clock, key=key,
                sign=signer(settings, run_.env, run_.root))).delivery

        async def main(signals: Signals) -> Daemon:
            daemon = Daemon(engine, run_.root, run_.clock, loaded, owner=owner,
                            delivery=delivery, interval=interval, leadership=leadership,
                            key=key or None)
            try:
                await daemon.run(signals.stop, signals.reload)
            finally:
                if transport is not None:
                    await transport.close()
            return daemon

        daemon = run_signalled(main, reload=True)
    tally = daemon.delivery.tally if daemon.delivery else {}
    done = " ".join(f"{campaign}.{state}={n}" for (campaign, state), n in sorted(tally.items()))
    log.info("mailer run stopped owner=%s sweeps=%d planned=%d %s", owner, daemon.sweeps,
             sum(daemon.planned.values()), done or "nothing sent")
