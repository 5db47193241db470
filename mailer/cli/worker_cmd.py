"""`mailer worker`: deliver whatever is due, until SIGTERM or SIGINT."""

from __future__ import annotations

import click

from mailer.cli.common import now_option, session, workspace_option


@click.command()
@workspace_option
@now_option
@click.pass_context
def worker(ctx: click.Context, workspace: str | None, now: str | None) -> None:
    """Deliver due ledger rows (retries included) until stopped; what is in flight when
    SIGTERM arrives is finished and recorded before the worker exits 0."""
    import logging

    from mailer.app.send import open_worker
    from mailer.cli.common import Signals, run_signalled
    from mailer.core.logs import configure
    from mailer.delivery.sending import secret_key, signer, smtp_transport
    from mailer.store.ledger import new_owner

    run = session(ctx, workspace, now)
    configure(run.env.log_format)
    log = logging.getLogger("mailer.worker")
    settings = run.workspace.settings
    key = secret_key(run.env)
    transport = smtp_transport(run.env, settings)
    owner = new_owner()
    with open_worker(run.engine, transport, settings, owner=owner, clock=run.clock, key=key,
                     sign=signer(settings, run.env, run.root)) as opened:
        pool = opened.delivery.pool
        log.info("worker started owner=%s concurrency=%d rate_per_second=%s processes=%d "
                 "recovered_unknown=%d", owner, settings.delivery.concurrency,
                 settings.delivery.rate_per_second, 1 + (pool.size if pool else 0),
                 opened.recovered)

        async def main(signals: Signals) -> None:
            try:
                await opened.delivery.run(signals.stop, until_idle=False)
            finally:
                await transport.close()

        run_signalled(main)
    done = {f"{campaign}.{state}": n
            for (campaign, state), n in sorted(opened.delivery.tally.items())}
    log.info("worker stopped owner=%s %s", owner,
             " ".join(f"{k}={v}" for k, v in done.items()) or "nothing sent")
