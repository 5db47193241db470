"""The workspace as the console reads it, parsed once per change of its files: a page
asks for it on every request, and re-reading the YAML cost most of the campaigns page.

A change is noticed by the files' fingerprint (names, modification times and sizes,
mailer.config.files): one stat a file per request, no parsing. An edit that keeps both
the size and the modification time (to the nanosecond the file system keeps) goes
unnoticed until the next change; editors and git always change one of them."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

from mailer.config.campaign import Campaign
from mailer.config.conditions import SegmentSpec
from mailer.config.files import Fingerprint, content_hash, fingerprint
from mailer.core.errors import Problem


@dataclass(frozen=True)
class Parsed:
    """The segments and campaigns of one state of the files, with their problems (of the
    segment files, then of the campaign and survey files) and the files' content hash."""

    fingerprint: Fingerprint
    hash: str
    specs: dict[str, SegmentSpec]
    segment_problems: list[Problem]
    campaigns: dict[str, Campaign]
    campaign_problems: list[Problem]

    @property
    def problems(self) -> list[Problem]:
        return self.segment_problems + self.campaign_problems


class WorkspaceCache:
    """The parsed workspace at ROOT, parsed again when its fingerprint changes."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.parses = 0  # how many times the files were parsed (the tests read it)
        self._parsed: Parsed | None = None
        self._lock = threading.Lock()  # one parse at a time; readers of the last wait

    def current(self) -> Parsed:
        from mailer.config.workspace import load_campaigns, load_segments

        seen = fingerprint(self.root)
        with self._lock:
            if self._parsed is not None and self._parsed.fingerprint == seen:
                return self._parsed
            hashed = content_hash(self.root)
            specs, segment_problems = load_segments(self.root)
            campaigns, campaign_problems = load_campaigns(self.root, set(specs))
            self._parsed = Parsed(seen, hashed, specs, segment_problems, campaigns,
                                  campaign_problems)
            self.parses += 1
            return self._parsed
