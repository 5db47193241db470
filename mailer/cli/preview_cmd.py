"""`mailer preview CAMPAIGN [--customer ID|EMAIL] [--sample 5] [--out DIR]`."""

from __future__ import annotations

from pathlib import Path

import click

from mailer.cli.common import emit_json, print_table, session, workspace_json_now


@click.command()
@click.argument("campaign")
@click.option("--customer", "email", metavar="ID|EMAIL",
              help="Preview the mail of this customer (by store id or address).")
@click.option("--sample", type=click.IntRange(1, 100), default=5, show_default=True,
              help="How many customers, spread over intro segments and subject variants.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Write one .eml, .html and .txt per sample and an index.html into DIR.")
@click.option("--serve", is_flag=True,
              help="Serve a local page with every campaign's samples (until Ctrl-C).")
@click.option("--host", default="127.0.0.1", show_default=True, help="With --serve.")
@click.option("--port", type=click.IntRange(0, 65535), default=8025, show_default=True,
              help="With --serve; 0 picks a free port.")
@workspace_json_now
def preview(ctx: click.Context, campaign: str, email: str | None, sample: int,
            out_dir: Path | None, serve: bool, host: str, port: int, workspace: str | None,
            as_json: bool, now: str | None) -> None:
    """Render real mails of CAMPAIGN for real customers, without sending anything.

    Samples are customers the plan at --now would mail; each says whether it would."""
    from mailer.app.preview import Sample, choose_mailable, render_samples, write_samples
    from mailer.config.workspace import load_valid_workspace
    from mailer.core.clock import iso_z
    from mailer.mail.version import compile_version
    from mailer.segments.runner import scope_for

    run = session(ctx, workspace, now)
    settings = run.workspace.settings
    specs, campaigns = load_valid_workspace(run.root, campaign)
    moment = run.clock.now().replace(microsecond=0)
    scope = scope_for(settings, moment, run.engine)

    stand_ins: set[str] = set()  # campaigns the plan would mail nobody of at --now

    def samples_of(slug: str) -> list[Sample]:
        version = compile_version(slug, campaigns[slug], run.root / "templates")
        chosen = choose_mailable(run.engine, specs, slug, version.spec, scope, settings,
                                 count=sample, customer=email)
        if chosen.stand_ins:
            stand_ins.add(slug)
        return render_samples(run.engine, version, specs, settings=settings, scope=scope,
                              now=moment, ids=chosen.ids, judged=chosen.verdicts)

    if serve:
        from mailer.web.preview_server import serve as serve_samples

        rendered = {slug: samples_of(slug) for slug in sorted(campaigns)}
        serve_samples(rendered, campaign, host=host, port=port,
                      ready=lambda h, p: click.echo(f"listening on {h}:{p}"))
        return
    samples = samples_of(campaign)
    index = write_samples(samples, out_dir, campaign) if out_dir is not None else None
    if as_json:
        emit_json({"campaign": campaign, "now": iso_z(moment),
                   "out": str(index) if index else None,
                   "samples": [{"id": s.customer, "email": s.email, "intro": s.intro,
                                "variant": s.variant + 1, "subject": s.subject,
                                "mailable": s.mailable, "reason": s.reason,
                                "send_after": iso_z(s.send_after) if s.send_after else None}
                               for s in samples]})
        return
    if campaign in stand_ins:
        click.echo(f"the plan at {iso_z(moment)} would mail nobody of {campaign}: these "
                   "members of its segment stand in, with the reason each would not get it")
    print_table(("id", "email", "intro", "variant", "subject", "mailable"),
                ((s.customer, s.email, s.intro or "", s.variant + 1, s.subject,
                  (f"yes, from {iso_z(s.send_after)}" if s.send_after and
                   s.send_after > moment else "yes") if s.mailable else f"no: {s.reason}")
                 for s in samples),
                title=f"preview of {campaign}")
    if email is not None and samples and not samples[0].mailable:
        click.echo(f"{samples[0].customer} would not get this mail at {iso_z(moment)}: "
                   f"{samples[0].reason}")
    if index is not None:
        click.echo(f"wrote {len(samples)} samples: {index}")
    elif samples:
        click.echo("")
        click.echo(samples[0].text)
