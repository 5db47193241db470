"""`mailer preview CAMPAIGN [--customer EMAIL] [--sample 5] [--out DIR]`."""

from __future__ import annotations

from pathlib import Path

import click

from mailer.cli.common import emit_json, print_table, session, workspace_json_now


@click.command()
@click.argument("campaign")
@click.option("--customer", "email", metavar="EMAIL", help="Preview the mail of this customer.")
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
    """Render real mails of CAMPAIGN for real customers, without sending anything."""
    from mailer.app.preview import Sample, choose, render_samples, write_samples
    from mailer.config.workspace import load_valid_workspace
    from mailer.core.clock import iso_z
    from mailer.mail.version import compile_version
    from mailer.segments.runner import scope_for

    run = session(ctx, workspace, now)
    settings = run.workspace.settings
    specs, campaigns = load_valid_workspace(run.root, campaign)
    moment = run.clock.now().replace(microsecond=0)
    scope = scope_for(settings, moment, run.engine)

    def samples_of(slug: str) -> list[Sample]:
        version = compile_version(slug, campaigns[slug], run.root / "templates")
        ids = choose(run.engine, specs, version.spec, scope, count=sample, email=email)
        return render_samples(run.engine, version, specs, settings=settings, scope=scope,
                              now=moment, ids=ids)

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
                                "variant": s.variant + 1, "subject": s.subject}
                               for s in samples]})
        return
    print_table(("id", "email", "intro", "variant", "subject"),
                ((s.customer, s.email, s.intro or "", s.variant + 1, s.subject)
                 for s in samples), title=f"preview of {campaign}")
    if index is not None:
        click.echo(f"wrote {len(samples)} samples: {index}")
    elif samples:
        click.echo("")
        click.echo(samples[0].text)
