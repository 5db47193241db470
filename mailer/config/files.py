"""The workspace's files as a whole: which ones mailer reads, their fingerprint (names,
modification times and sizes: cheap, to notice a change) and their content hash (to say
whether a figure was computed from the files on disk now)."""

from __future__ import annotations

import contextlib
import hashlib
from pathlib import Path

from mailer.config.settings import SETTINGS_FILE

WATCHED = ("campaigns", "segments", "surveys", "templates")
Fingerprint = tuple[tuple[str, int, int], ...]


def workspace_files(root: Path) -> list[Path]:
    """mailer.yaml and every file under the folders mailer reads, in a stable order."""
    return [root / SETTINGS_FILE, *sorted(
        path for folder in WATCHED if (root / folder).is_dir()
        for path in (root / folder).rglob("*") if path.is_file())]


def fingerprint(root: Path) -> Fingerprint:
    """Every workspace file, with its modification time and size."""
    seen = []
    for path in workspace_files(root):
        with contextlib.suppress(FileNotFoundError):
            stat = path.stat()
            seen.append((str(path.relative_to(root)), stat.st_mtime_ns, stat.st_size))
    return tuple(seen)


def content_hash(root: Path) -> str:
    """SHA-256 over every workspace file's name and bytes: the same files, the same hash,
    whatever their modification times (a fresh clone, a checkout)."""
    digest = hashlib.sha256()
    for path in workspace_files(root):
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            continue
        name = str(path.relative_to(root)).encode()
        digest.update(len(name).to_bytes(8, "big") + name + len(data).to_bytes(8, "big"))
        digest.update(data)
    return digest.hexdigest()
