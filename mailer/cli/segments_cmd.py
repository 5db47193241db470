"""`mailer segments list | count | show | sql | funnel`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import click

from mailer.cli.common import (
    Session,
    emit_json,
    json_option,
    now_option,
    print_table,
    session,
    workspace_option,
)

if TYPE_CHECKING:
    from mailer.config.conditions import SegmentSpec
    from mailer.segments.compiler import Scope


@click.group()
def segments() -> None:
    """Segments: who they pick, as of --now."""


def _load(ctx: click.Context, workspace: str | None,
          now: str | None) -> tuple[Session, dict[str, SegmentSpec], Scope]:
    from mailer.config.workspace import load_segments
    from mailer.core.errors import ConfigError
    from mailer.segments.runner import scope_for

    run = session(ctx, workspace, now)
    specs, problems = load_segments(run.root)
    if problems:
        raise ConfigError(problems)
    return run, specs, scope_for(run.workspace.settings, run.clock.now(), run.engine)


def _common(f: Any) -> Any:
    return click.pass_context(now_option(json_option(workspace_option(f))))


@segments.command("list")
@_common
def list_segments(ctx: click.Context, workspace: str | None, as_json: bool,
                  now: str | None) -> None:
    """Every segment with its description and size."""
    from mailer.segments.runner import count

    run, specs, scope = _load(ctx, workspace, now)
    rows = [{"segment": name, "description": spec.description,
             "count": count(run.engine, specs, name, scope)} for name, spec in specs.items()]
    if as_json:
        emit_json({"segments": rows})
        return
    print_table(("segment", "customers", "description"),
                ((r["segment"], r["count"], r["description"]) for r in rows))


@segments.command("count")
@click.argument("name")
@_common
def count_segment(ctx: click.Context, name: str, workspace: str | None, as_json: bool,
                  now: str | None) -> None:
    """How many customers the segment picks."""
    from mailer.segments.runner import count

    run, specs, scope = _load(ctx, workspace, now)
    size = count(run.engine, specs, name, scope)
    if as_json:
        emit_json({"segment": name, "count": size})
    else:
        click.echo(f"{name}: {size}")


@segments.command("show")
@click.argument("name")
@click.option("--limit", type=click.IntRange(0), default=20, show_default=True,
              help="How many members to list.")
@_common
def show_segment(ctx: click.Context, name: str, limit: int, workspace: str | None,
                 as_json: bool, now: str | None) -> None:
    """The segment's members, ordered by store id."""
    from mailer.segments.runner import members

    run, specs, scope = _load(ctx, workspace, now)
    size, found = members(run.engine, specs, name, scope, limit)
    if as_json:
        emit_json({"segment": name, "count": size, "members": found})
        return
    shown = f", first {len(found)}" if len(found) < size else ""
    print_table(tuple(found[0]) if found else ("id", "email"),
                (tuple(member.values()) for member in found),
                title=f"{name}: {size} customers{shown}")


@segments.command("sql")
@click.argument("name")
@_common
def sql_segment(ctx: click.Context, name: str, workspace: str | None, as_json: bool,
                now: str | None) -> None:
    """The SQL the database runs for the segment."""
    from mailer.segments.runner import sql

    run, specs, scope = _load(ctx, workspace, now)
    text = sql(run.engine, specs, name, scope)
    if as_json:
        emit_json({"segment": name, "dialect": run.engine.dialect.name, "sql": text})
    else:
        click.echo(text)


@segments.command("funnel")
@click.argument("name")
@_common
def funnel_segment(ctx: click.Context, name: str, workspace: str | None, as_json: bool,
                   now: str | None) -> None:
    """How many customers remain after each condition of the segment."""
    from mailer.segments.runner import funnel

    run, specs, scope = _load(ctx, workspace, now)
    steps = funnel(run.engine, specs, name, scope)
    if as_json:
        emit_json({"segment": name, "steps": [
            {"condition": s.condition, "line": s.line, "remaining": s.remaining}
            for s in steps]})
        return
    print_table(("line", "condition", "remaining"),
                ((s.line, s.condition, s.remaining) for s in steps), title=f"funnel of {name}")
