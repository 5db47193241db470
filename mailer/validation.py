"""`mailer validate`: every problem in every workspace file, never just the first."""

from __future__ import annotations

from pathlib import Path

from mailer.errors import ConfigError, Problem
from mailer.settings import load_settings


def validate_workspace(root: Path) -> list[Problem]:
    """Problems and warnings of the workspace at ROOT (segments and campaigns join later)."""
    try:
        _, warnings = load_settings(root)
    except ConfigError as err:
        return list(err.problems)
    return warnings
