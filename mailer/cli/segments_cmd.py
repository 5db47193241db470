"""`mailer segments list | count | show | sql | funnel`."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import click

from mailer.cli.common import (
    Decorator,
    Session,
    command_options,
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

T = TypeVar("T")


@click.group()
def segments() -> None:
    """Segments: who they pick, as of --now."""


@dataclass(frozen=True)
class _Segments:
    """The workspace's segments, to be asked about the store as of --now."""

    run: Session
    specs: dict[str, SegmentSpec]
    scope: Scope

    def ask(self, query: Callable[..., T], name: str, *args: Any) -> T:
        """QUERY (count, members, sql, funnel of mailer.segments.runner) on segment NAME."""
        return query(self.run.engine, self.specs, name, self.scope, *args)


def _load(ctx: click.Context, workspace: str | None, now: str | None) -> _Segments:
    from mailer.config.workspace import load_segments
    from mailer.core.errors import ConfigError
    from mailer.segments.runner import scope_for

    run = session(ctx, workspace, now)
    specs, problems = load_segments(run.root)
    if problems:
        raise ConfigError(problems)
    return _Segments(run, specs, scope_for(run.workspace.settings, run.clock.now(), run.engine))


def _command(name: str, *params: Decorator) -> Callable[[Callable[..., None]], click.Command]:
    """`segments NAME` with PARAMS, then --now, --json and --workspace: it calls
    BODY(segments, as_json, **PARAMS) with the workspace's segments loaded."""
    def register(body: Callable[..., None]) -> click.Command:
        @functools.wraps(body)
        def command(ctx: click.Context, workspace: str | None, as_json: bool, now: str | None,
                    **values: Any) -> None:
            body(_load(ctx, workspace, now), as_json, **values)

        options = command_options(*params, now_option, json_option, workspace_option)
        return segments.command(name)(options(command))
    return register


_NAME = click.argument("name")


@_command("list")
def list_segments(picked: _Segments, as_json: bool) -> None:
    """Every segment with its description and size."""
    from mailer.segments.runner import count

    rows = [{"segment": name, "description": spec.description,
             "count": picked.ask(count, name)} for name, spec in picked.specs.items()]
    if as_json:
        emit_json({"segments": rows})
        return
    print_table(("segment", "customers", "description"),
                ((r["segment"], r["count"], r["description"]) for r in rows))


@_command("count", _NAME)
def count_segment(picked: _Segments, as_json: bool, name: str) -> None:
    """How many customers the segment picks."""
    from mailer.segments.runner import count

    size = picked.ask(count, name)
    if as_json:
        emit_json({"segment": name, "count": size})
    else:
        click.echo(f"{name}: {size}")


@_command("show", _NAME, click.option("--limit", type=click.IntRange(0), default=20,
                                      show_default=True, help="How many members to list."))
def show_segment(picked: _Segments, as_json: bool, name: str, limit: int) -> None:
    """The segment's members, ordered by store id."""
    from mailer.segments.runner import members

    size, found = picked.ask(members, name, limit)
    if as_json:
        emit_json({"segment": name, "count": size, "members": found})
        return
    shown = f", first {len(found)}" if len(found) < size else ""
    print_table(tuple(found[0]) if found else ("id", "email"),
                (tuple(member.values()) for member in found),
                title=f"{name}: {size} customers{shown}")


@_command("sql", _NAME)
def sql_segment(picked: _Segments, as_json: bool, name: str) -> None:
    """The SQL the database runs for the segment."""
    from mailer.segments.runner import sql

    text = picked.ask(sql, name)
    if as_json:
        emit_json({"segment": name, "dialect": picked.run.engine.dialect.name, "sql": text})
    else:
        click.echo(text)


@_command("funnel", _NAME)
def funnel_segment(picked: _Segments, as_json: bool, name: str) -> None:
    """How many customers remain after each condition of the segment."""
    from mailer.segments.runner import funnel

    steps = picked.ask(funnel, name)
    if as_json:
        emit_json({"segment": name, "steps": [
            {"condition": s.condition, "line": s.line, "remaining": s.remaining}
            for s in steps]})
        return
    print_table(("line", "condition", "remaining"),
                ((s.line, s.condition, s.remaining) for s in steps), title=f"funnel of {name}")
