"""The "did you mean" of every error about a name that does not exist (a key, a segment,
a campaign, a template, a time zone): one wording, one matcher (difflib's ratio)."""

from __future__ import annotations

from collections.abc import Iterable


def did_you_mean(word: str, choices: Iterable[str], *, cutoff: float = 0.6,
                 otherwise: str = "") -> str:
    """` (did you mean X?)` for the choice closest to WORD, else OTHERWISE."""
    from difflib import get_close_matches  # only on the error path

    close = get_close_matches(word, list(choices), n=1, cutoff=cutoff)
    return f" (did you mean {close[0]}?)" if close else otherwise
