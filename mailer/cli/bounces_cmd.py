"""`mailer bounces PATH`: read bounce reports and complaints about mail we sent, suppress
those recipients."""

from __future__ import annotations

from pathlib import Path

import click

from mailer.cli.common import emit_json, session, workspace_json_now


@click.command()
@click.argument("path", type=click.Path(exists=True, path_type=Path))
@workspace_json_now
def bounces(ctx: click.Context, path: Path, workspace: str | None, as_json: bool,
            now: str | None) -> None:
    """Read RFC 3464 bounce reports and ARF complaints from a Maildir, a folder of .eml
    files or one file, and suppress the recipients of the mails they are about.

    A report counts only when it names a mail that was sent (or probably was): by the
    Message-ID it quotes, else by the VERP return path it was sent back to
    (sender.return_path, checked with MAILER_SECRET_KEY or MAILER_SECRET_KEY_OLD). A
    Maildir's read reports move from new/ to cur/; a folder's to PATH/done/. A file that
    is no such report, or is about no mail we sent, is moved to PATH/set-aside/ and named
    on stderr; the others are still read. Exit 1 when a file was not a readable report
    (a report about mail we never sent is backscatter, not a mistake: exit 0)."""
    from mailer.app.bounces import MAX_REPORT_BYTES, Malformed, NotOurs, SetAside, apply, parse

    run = session(ctx, workspace, now)
    keys = tuple(k for k in (run.env.secret_key, *run.env.old_secret_keys) if k)
    maildir = path.is_dir() and (path / "new").is_dir()
    if path.is_file():
        files, done = [path], None
    elif maildir:
        files, done = sorted((path / "new").iterdir()), path / "cur"
    else:
        files, done = sorted(path.glob("*.eml")), path / "done"
    aside_dir = (path.parent if path.is_file() else path) / "set-aside"
    totals = {"files": 0, "bounces": 0, "complaints": 0, "suppressed": 0}
    aside: list[dict[str, str]] = []
    malformed = 0
    for file in files:
        if not file.is_file():
            continue
        totals["files"] += 1
        try:
            if file.stat().st_size > MAX_REPORT_BYTES:  # never read a huge file whole
                raise Malformed(f"larger than {MAX_REPORT_BYTES // 2**20} MB: not a report")
            applied = apply(run.engine, parse(file.read_bytes()), run.clock.now(),
                            source="bounces", keys=keys)
        except (SetAside, OSError) as err:
            reason = err.message if isinstance(err, SetAside) else str(err)
            malformed += not isinstance(err, NotOurs)
            aside.append({"file": str(file), "reason": reason})
            click.echo(f"{file}: set aside: {reason}", err=True)
            if not path.is_file():
                aside_dir.mkdir(exist_ok=True)
                file.rename(aside_dir / file.name)
            continue
        for finding in applied.findings:
            totals["bounces" if finding.kind == "bounce" else "complaints"] += 1
            if not as_json:
                what = "suppressed" if applied.suppressed and finding.permanent else \
                    "already suppressed" if finding.permanent else "temporary, nothing done"
                click.echo(f"{file.name}: {finding.kind} {finding.status} "
                           f"{applied.address}: {what}")
        totals["suppressed"] += int(applied.suppressed)
        if done is not None:
            done.mkdir(exist_ok=True)
            file.rename(done / (f"{file.name}:2,S" if maildir and ":2," not in file.name
                                else file.name))
    if as_json:
        emit_json({**totals, "set_aside": aside})
    else:
        click.echo(f"{totals['files']} files: {totals['bounces']} bounces, "
                   f"{totals['complaints']} complaints, {totals['suppressed']} addresses "
                   f"suppressed, {len(aside)} set aside")
    if aside and not as_json and not path.is_file():
        click.echo(f"{len(aside)} files are not bounce reports or complaints about mail we "
                   f"sent: moved to {aside_dir}", err=True)
    if malformed:  # the others were read; like bad import rows, this is exit 1
        ctx.exit(1)
