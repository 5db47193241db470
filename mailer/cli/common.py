"""What every command shares: options, the session (workspace, clock, database), output."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

if TYPE_CHECKING:
    import asyncio

    from mailer.config.settings import Environment
    from mailer.config.workspace import Workspace
    from mailer.core.clock import Clock
    from mailer.store.db import URL, Engine

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")

# A --now this close before the latest planning run is a rerun at the same --now, not
# the past: a run records its --now plus the seconds it took to start.
PAST_TOLERANCE = timedelta(minutes=1)


def check_time(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """Reject an unparsable --now as misuse (exit 2); the zone is applied later."""
    if value is None:
        return None
    text = value.strip().replace("z", "Z").replace("Z", "+00:00")
    try:
        if len(text) == 10:
            date.fromisoformat(text)
        else:
            datetime.fromisoformat(text)
    except ValueError:
        raise click.BadParameter(
            f"expected an ISO 8601 date-time like 2026-11-27T08:00 or a date, got {value!r}"
        ) from None
    return value


def workspace_option(f: F) -> F:
    return click.option("--workspace", "workspace", metavar="DIR", default=None,
                        help="Workspace folder (default: $MAILER_WORKSPACE, else .).")(f)


def json_option(f: F) -> F:
    return click.option("--json", "as_json", is_flag=True,
                        help="Print exactly one JSON document on standard output.")(f)


def now_option(f: F) -> F:
    return click.option("--now", metavar="TIME", callback=check_time,
                        help="Act as if it were TIME (ISO 8601; no offset = workspace zone).")(f)


def allow_past_option(f: F) -> F:
    """`--allow-past`, for the commands that write plans (see refuse_past)."""
    return click.option("--allow-past", is_flag=True,
                        help="Plan at a --now before the store's latest planning run.")(f)


def chart_option(f: F) -> F:
    """`--chart FILE`, checked by check_chart when the command runs."""
    return click.option("--chart", type=click.Path(dir_okay=False, path_type=Path),
                        help="Write a chart: FILE.png, FILE.html (with labels) or FILE.svg.")(f)


def check_chart(chart: Path | None) -> None:
    """Refuse a --chart of a kind no chart is written as, before any work is done."""
    from mailer.core.errors import UserError

    if chart is not None and chart.suffix.lower() not in (".png", ".html", ".svg"):
        raise UserError(f"{chart}: charts are written as .png, .html or .svg")


Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]


def command_options(*options: Decorator) -> Decorator:
    """OPTIONS as if written one above the other in this order (the order --help lists
    them), on a command that takes the click context first."""
    def stack(f: Callable[..., Any]) -> Callable[..., Any]:
        f = click.pass_context(f)
        for option in reversed(options):
            f = option(f)
        return f
    return stack


# The option sets the commands share.
workspace_json = command_options(workspace_option, json_option)
workspace_json_now = command_options(workspace_option, json_option, now_option)
planning_options = command_options(workspace_option, json_option, now_option, allow_past_option)
now_json_workspace = command_options(now_option, json_option, workspace_option)


@dataclass
class Session:
    """The workspace, environment, clock and database of one command run."""

    option_root: str | None
    now_text: str | None = None
    environ: dict[str, str] = field(default_factory=lambda: dict(os.environ))

    @cached_property
    def env(self) -> Environment:
        from mailer.config.settings import Environment

        return Environment.from_mapping(self.environ)

    @cached_property
    def root(self) -> Path:
        from mailer.config.workspace import workspace_root

        return workspace_root(self.option_root, self.env)

    @cached_property
    def workspace(self) -> Workspace:
        from mailer.config.workspace import open_workspace

        return open_workspace(self.root)

    @cached_property
    def clock(self) -> Clock:
        from mailer.core.clock import Clock, parse_local, zone

        if self.now_text is None:
            return Clock()
        return Clock(parse_local(self.now_text, zone(self.workspace.settings.timezone)))

    @cached_property
    def database_url(self) -> URL:
        from mailer.store.db import database_url

        return database_url(env_url=self.env.database_url,
                            configured=self.workspace.settings.database, root=self.root)

    @cached_property
    def engine(self) -> Engine:
        """The database on a current schema (see mailer.store.db.open_database)."""
        from mailer.store.db import open_database

        return open_database(self.database_url)


def session(ctx: click.Context, workspace: str | None, now: str | None = None) -> Session:
    """The session for a command; --workspace after the subcommand wins over before it."""
    root = workspace
    parent: click.Context | None = ctx
    while root is None and parent is not None:
        if isinstance(parent.obj, dict):
            root = parent.obj.get("workspace")
        parent = parent.parent
    return Session(option_root=root, now_text=now)


def refuse_past(run: Session, *, allow_past: bool) -> None:
    """Refuse a --now before the store's latest planning run unless ALLOW_PAST: caps,
    cooldowns and due occurrences would be judged as if the later mails had not been
    planned (a typo in the year re-plans a season). Without --now the clock decides."""
    if run.now_text is None or allow_past:
        return
    from mailer.core.clock import iso_z
    from mailer.core.errors import UserError
    from mailer.store.versions import latest_plan_run

    latest, now = latest_plan_run(run.engine), run.clock.now()
    if latest is not None and now < latest - PAST_TOLERANCE:
        raise UserError(f"--now {iso_z(now)} is before the latest planning run on this store "
                        f"({iso_z(latest)}): caps and cooldowns would not see the mails "
                        "planned since; add --allow-past to plan in the past anyway")


def emit_json(document: Any) -> None:
    click.echo(json.dumps(document, ensure_ascii=False, indent=None))


def print_table(columns: Sequence[str], rows: Iterable[Sequence[object]], *,
                title: str | None = None, show_header: bool = True) -> None:
    """A table for a person on a terminal; values are shown as text, never as markup."""
    from rich.console import Console
    from rich.table import Table

    table = Table(*columns, title=title, show_header=show_header)
    for row in rows:
        table.add_row(*("" if value is None else str(value) for value in row))
    # Piped output (make, CI logs) gets room for every column rather than 80 characters.
    width = None if sys.stdout.isatty() else 160
    Console(markup=False, highlight=False, width=width).print(table)


def stderr_is_terminal() -> bool:
    return sys.stderr.isatty()


@dataclass(frozen=True)
class Signals:
    """What the signals asked of a command running an event loop."""

    stop: asyncio.Event  # SIGTERM or SIGINT: finish what is in flight, then return
    reload: asyncio.Event  # SIGHUP, when the command reloads (else SIGHUP's default)


def run_signalled(main: Callable[[Signals], Awaitable[T]], *, reload: bool = False) -> T:
    """Run MAIN(signals) in a new event loop and return its result; SIGTERM and SIGINT
    set signals.stop, SIGHUP sets signals.reload when RELOAD (else it ends the process,
    as it always has for the commands that do not reload)."""
    import asyncio
    import signal

    async def start() -> T:
        signals = Signals(stop=asyncio.Event(), reload=asyncio.Event())
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, signals.stop.set)
        if reload:
            loop.add_signal_handler(signal.SIGHUP, signals.reload.set)
        return await main(signals)

    return asyncio.run(start())


def run_server(serve: Callable[[Callable[[str], None], asyncio.Event], Awaitable[Any]],
               host: str, port: int) -> None:
    """Run an asyncio server until SIGTERM or SIGINT. SERVE(say, stop) is a coroutine
    function; `say` prints a line at once (servers' output is read live); a port that
    cannot be bound is the environment's failure (exit 3)."""
    from mailer.core.errors import EnvironmentFailure

    def say(line: str) -> None:
        click.echo(line)
        sys.stdout.flush()

    try:
        run_signalled(lambda signals: serve(say, signals.stop))
    except OSError as err:
        raise EnvironmentFailure(f"cannot listen on {host}:{port}: {err.strerror}") from None


def os_user() -> str:
    """Who runs this command, for the audit of operator actions: the OS user's name (from
    the password database or LOGNAME/USER), else `uid N`."""
    import getpass

    try:
        return getpass.getuser()
    except (KeyError, OSError):  # a container's uid without a name
        return f"uid {os.getuid()}"


def yes_option(f: F) -> F:
    """`--yes`, for the operator actions that otherwise ask before acting."""
    return click.option("--yes", "-y", "yes", is_flag=True,
                        help="Do it without asking (scripts; standard input is not read).")(f)


def confirm(question: str, *, yes: bool) -> None:
    """Ask QUESTION on standard error and read the answer from standard input, unless
    YES: anything but y or yes (an empty line, end of input) aborts (exit 1, nothing
    changed)."""
    if not yes:
        click.confirm(question, default=False, abort=True, err=True)
