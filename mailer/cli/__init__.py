"""The `mailer` command line: a lazy click group, one module per command.

Commands raise MailerError; `main` is the one place that turns errors into
messages and exit codes (DESIGN §5): 1 the user's files, data or values, 2
misuse of the command line, 3 the environment. With `--json`, standard output
is exactly one JSON document, also on failure.
"""

from __future__ import annotations

import importlib
import json
import sys
from collections.abc import Sequence
from typing import Any

import click

# name -> "module:attribute"; modules are imported only when their command runs,
# so `mailer --help` stays instant.
COMMANDS = {
    "init": ("mailer.cli.init_cmd:init", "Copy the demo workspace into DIR."),
    "db": ("mailer.cli.db_cmd:db", "Create or migrate the database schema."),
    "import": ("mailer.cli.import_cmd:import_group", "Import customers or orders from a file."),
    "unsubscribe": ("mailer.cli.unsubscribe_cmd:unsubscribe", "Record opt-outs for addresses."),
    "resubscribe": ("mailer.cli.resubscribe_cmd:resubscribe", "Record a new opt-in for addresses."),
    "demo-data": ("mailer.cli.demo_data_cmd:demo_data", "Fill the store with synthetic data."),
    "validate": ("mailer.cli.validate_cmd:validate", "Check every workspace file."),
    "schema": ("mailer.cli.schema_cmd:schema", "Print the JSON Schema of the workspace files."),
    "segments": ("mailer.cli.segments_cmd:segments", "Segments: sizes, members, SQL, funnel."),
    "stages": ("mailer.cli.stages_cmd:stages", "Record stage changes; a month's stage flow."),
    "predict": ("mailer.cli.predict_cmd:predict", "Fit the purchase models; store predictions."),
    "customer": ("mailer.cli.customer_cmd:customer", "One customer's card (id or email)."),
    "recommend": ("mailer.cli.recommend_cmd:recommend", "Store every customer's recommendations."),
    "preview": ("mailer.cli.preview_cmd:preview", "Render real sample mails without sending."),
    "plan": ("mailer.cli.plan_cmd:plan", "Who a campaign would mail now (a dry run)."),
    "forecast": ("mailer.cli.forecast_cmd:forecast", "Simulate the next days on a scratch ledger."),
    "status": ("mailer.cli.status_cmd:status", "Counts of customers, orders and deliveries."),
    "send": ("mailer.cli.send_cmd:send", "Plan campaigns now and deliver what is due."),
    "worker": ("mailer.cli.worker_cmd:worker", "Deliver due mails until stopped."),
    "run": ("mailer.cli.run_cmd:run", "The scheduler daemon (--once: one sweep, then exit)."),
    "campaigns": ("mailer.cli.campaigns_cmd:campaigns", "Every campaign: state, next due, counts."),
    "pause": ("mailer.cli.pause_cmd:pause", "Pause a campaign: nothing planned or sent."),
    "resume": ("mailer.cli.pause_cmd:resume", "Resume a paused campaign."),
    "retry": ("mailer.cli.retry_cmd:retry", "Queue a campaign's failed mails once more."),
    "report": ("mailer.cli.report_cmd:report", "Where every mail of a campaign stands."),
    "responses": ("mailer.cli.responses_cmd:responses", "A survey's scores, months, comments."),
    "review": ("mailer.cli.review_cmd:review", "A month's review: HTML page, JSON, notice."),
    "sink": ("mailer.cli.sink_cmd:sink", "A local SMTP server catching mail into a Maildir."),
    "bounces": ("mailer.cli.bounces_cmd:bounces", "Suppress addresses from bounce reports."),
    "serve": ("mailer.cli.serve_cmd:serve", "Unsubscribe, preferences, tracking and ratings."),
    "hooks": ("mailer.cli.hooks_cmd:hooks", "Replay saved webhook requests from the shop."),
    "console": ("mailer.cli.console_cmd:console", "The marketer's console: pages and JSON."),
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in COMMANDS:
            return None
        module, attribute = COMMANDS[cmd_name][0].split(":")
        command: click.Command = getattr(importlib.import_module(module), attribute)
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        with formatter.section("Commands"):
            formatter.write_dl([(name, COMMANDS[name][1]) for name in sorted(COMMANDS)])


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"],
                                              "max_content_width": 100})
@click.option("--workspace", metavar="DIR", help="Workspace folder (default: $MAILER_WORKSPACE, "
              "else the current directory).")
@click.version_option(package_name="mailer", prog_name="mailer")
@click.pass_context
def cli(ctx: click.Context, workspace: str | None) -> None:
    """mailer: email marketing and newsletter automation for online stores."""
    ctx.ensure_object(dict)
    ctx.obj["workspace"] = workspace


def _wants_json(argv: Sequence[str]) -> bool:
    """Whether --json was given (before a `--`, after which words are arguments)."""
    args = list(argv)
    return "--json" in (args[:args.index("--")] if "--" in args else args)


def _fail(message: str, *, path: str | None, line: int | None, code: int, as_json: bool,
          extra: dict[str, Any] | None = None) -> int:
    if as_json:
        document: dict[str, Any] = {"error": {"message": message, "path": path, "line": line}}
        document.update(extra or {})
        click.echo(json.dumps(document, ensure_ascii=False))
    return code


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (the console script exits with it)."""
    from mailer.core.errors import ConfigError, MailerError

    args = list(sys.argv[1:] if argv is None else argv)
    as_json = _wants_json(args)
    try:
        result = cli.main(args=args, prog_name="mailer", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        return _fail("aborted", path=None, line=None, code=1, as_json=as_json)
    except click.ClickException as err:
        if not as_json:
            err.show()
        return _fail(err.format_message(), path=None, line=None, code=err.exit_code,
                     as_json=as_json)
    except ConfigError as err:
        for problem in err.problems:
            click.echo(str(problem), err=True)
        problems = [{"path": p.path, "line": p.line, "field": p.field, "message": p.message}
                    for p in err.problems]
        return _fail(err.message, path=err.path, line=err.line, code=err.exit_code,
                     as_json=as_json, extra={"problems": problems})
    except MailerError as err:
        click.echo(f"error: {err}", err=True)
        return _fail(err.message, path=err.path, line=err.line, code=err.exit_code,
                     as_json=as_json)
    return result if isinstance(result, int) else 0


def run() -> None:
    sys.exit(main())
