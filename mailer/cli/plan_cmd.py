"""`mailer plan CAMPAIGN`: the dry run of planning at --now."""

from __future__ import annotations

import click

from mailer.cli.common import emit_json, print_table, session, workspace_json_now


@click.command()
@click.argument("campaign")
@workspace_json_now
def plan(ctx: click.Context, campaign: str, workspace: str | None, as_json: bool,
         now: str | None) -> None:
    """What `send` would plan for CAMPAIGN at --now; writes nothing."""
    from collections import Counter

    from mailer.app.preview import subjects
    from mailer.config.workspace import load_valid_workspace
    from mailer.core.clock import iso_z
    from mailer.mail.version import compile_version
    from mailer.planning.planner import plan as dry_run
    from mailer.segments.runner import scope_for

    run = session(ctx, workspace, now)
    settings = run.workspace.settings
    specs, campaigns = load_valid_workspace(run.root, campaign)
    moment = run.clock.now().replace(microsecond=0)
    scope = scope_for(settings, moment, run.engine)
    result = dry_run(run.engine, specs, campaign, campaigns[campaign], scope=scope,
                     settings=settings)
    version = compile_version(campaign, campaigns[campaign], run.root / "templates")
    rendered = subjects(run.engine, version, settings=settings, now=moment,
                        recipients=[(p.customer_id, p.variant, p.occurrence)
                                    for p in result.planned])
    if as_json:
        emit_json({
            "campaign": campaign, "now": iso_z(moment),
            "recipients": [{"id": p.id, "email": p.email, "occurrence": p.occurrence,
                            "subject": rendered[(p.customer_id, p.occurrence)],
                            "variant": p.variant + 1,
                            "send_after": iso_z(p.send_after)} for p in result.planned],
            # `cap` names the full cap beside reason frequency_cap ("1 per 7d (promotions)")
            "excluded": [{"id": e.id, "email": e.email, "occurrence": e.occurrence,
                          "reason": e.reason, **({"cap": e.cap} if e.cap else {})}
                         for e in result.excluded]})
        return
    counts = Counter(e.reason for e in result.excluded)
    print_table(("", "customers"), [("planned", len(result.planned)),
                                   *((f"excluded: {r}", n) for r, n in sorted(counts.items()))],
                title=f"plan of {campaign} at {iso_z(moment)} (dry run)")
