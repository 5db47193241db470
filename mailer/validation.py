"""`mailer validate`: every problem in every workspace file, never just the first."""

from __future__ import annotations

from pathlib import Path

from mailer.errors import ConfigError, Problem
from mailer.settings import load_settings
from mailer.workspace import load_segments


def validate_workspace(root: Path) -> list[Problem]:
    """Problems and warnings of the workspace at ROOT: settings, then segments."""
    try:
        _, problems = load_settings(root)
    except ConfigError as err:
        problems = list(err.problems)
    _, segment_problems = load_segments(root)
    return problems + segment_problems
