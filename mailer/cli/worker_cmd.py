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
    import asyncio
    import logging
    import signal

    from mailer.cli.deliver import secret_key, signer, smtp_transport
    from mailer.ledger import new_owner, recover, relax_commits, sending_lock
    from mailer.logs import configure
    from mailer.ratelimit import rate_limit
    from mailer.sender import Delivery, Renderer

    run = session(ctx, workspace, now)
    configure(run.env.log_format)
    log = logging.getLogger("mailer.worker")
    settings = run.workspace.settings
    key = secret_key(run.env)
    transport = smtp_transport(run.env, settings)
    owner = new_owner()
    engine = run.engine
    with sending_lock(engine, owner):
        relax_commits(engine)
        lost = recover(engine, owner, run.clock.now())
        log.info("worker started owner=%s concurrency=%d rate_per_second=%s "
                 "recovered_unknown=%d", owner, settings.delivery.concurrency,
                 settings.delivery.rate_per_second, lost)
        delivery = Delivery(engine, transport, Renderer(engine, key, signer(
            settings, run.env, run.root)), owner, run.clock,
            concurrency=settings.delivery.concurrency,
            limit=rate_limit(engine, settings.delivery.rate_per_second))

        async def main() -> None:
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(signum, stop.set)
            try:
                await delivery.run(stop, until_idle=False)
            finally:
                await transport.close()

        asyncio.run(main())
    done = {f"{campaign}.{state}": n for (campaign, state), n in sorted(delivery.tally.items())}
    log.info("worker stopped owner=%s %s", owner,
             " ".join(f"{k}={v}" for k, v in done.items()) or "nothing sent")
