"""The one exception tree of mailer.

Each error knows the exit code the command line gives it (DESIGN §5): 1 for the
user's files, data and argument values, 3 for the environment. Configuration
errors and delivery errors live on separate branches, so a retry loop that
catches delivery errors can never swallow a broken YAML file.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    """One problem in a user's file, printed as `PATH:LINE: FIELD: MESSAGE`."""

    path: str
    line: int | None
    field: str | None
    message: str
    warning: bool = False

    def __str__(self) -> str:
        where = self.path if self.line is None else f"{self.path}:{self.line}"
        what = f"{self.field}: {self.message}" if self.field else self.message
        return f"{where}: {'warning: ' if self.warning else ''}{what}"


class MailerError(Exception):
    """Root of every error mailer raises on purpose."""

    exit_code = 1

    def __init__(self, message: str, *, path: str | None = None, line: int | None = None):
        super().__init__(message)
        self.message = message
        self.path = path
        self.line = line

    def __str__(self) -> str:
        if self.path is None:
            return self.message
        where = self.path if self.line is None else f"{self.path}:{self.line}"
        return f"{where}: {self.message}"


# --- the user's files, data and argument values: exit 1 -------------------------


class UserError(MailerError):
    """A problem the user fixes in their files, data or argument values."""


class ConfigError(UserError):
    """One or more problems in workspace files; carries every problem found."""

    def __init__(self, problems: Iterable[Problem]):
        self.problems = [p for p in problems if not p.warning]
        first = self.problems[0] if self.problems else Problem("?", None, None, "invalid")
        super().__init__(first.message, path=first.path, line=first.line)

    def __str__(self) -> str:
        return "\n".join(str(p) for p in self.problems)


class NotFoundError(UserError):
    """An unknown campaign, segment, customer or input file."""


class InvalidValue(UserError, ValueError):
    """A value the user typed that does not parse (a date, a duration, a zone)."""


class MissingSecret(UserError):
    """A command needs a secret from the environment that is not set."""


# --- the environment: exit 3 ------------------------------------------------------


class EnvironmentFailure(MailerError):
    """Something outside the user's files failed: database, SMTP, locks."""

    exit_code = 3


class DatabaseUnavailable(EnvironmentFailure, ConnectionError):
    """The database cannot be reached or opened."""


class SchemaOutOfDate(EnvironmentFailure):
    """The PostgreSQL schema is older than this mailer; `mailer db upgrade` fixes it."""


class LockHeld(EnvironmentFailure):
    """Another mailer process holds the lock this command needs."""


# --- delivery (later issues extend this branch) ------------------------------------


class DeliveryError(MailerError):
    """A failure while handing mail to an SMTP server."""

    exit_code = 3
