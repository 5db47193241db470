"""The docs name real tests: docs/reliability.md maps each promise to the tests that prove it."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _tests_by_file() -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for path in (ROOT / "tests").glob("test_*.py"):
        tree = ast.parse(path.read_text())
        found[path.name] = {node.name for node in tree.body
                            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
                            and node.name.startswith("test_")}
    return found


def test_every_test_named_in_reliability_md_exists_in_its_file() -> None:
    text = (ROOT / "docs" / "reliability.md").read_text()
    tests = _tests_by_file()
    missing = []
    for line in text.splitlines():
        current: str | None = None
        # `file.py::test_x` sets the file; a following `::test_y` on the line is in it too
        for file, name in re.findall(r"`(?:(test_\w+\.py))?(?:::(test_\w+))?", line):
            if file:
                current = file
                if file not in tests:
                    missing.append(file)
            if name and (current is None or name not in tests.get(current, set())):
                missing.append(f"{current}::{name}")
    assert missing == []
    assert len(re.findall(r"::test_\w+", text)) > 60  # the mapping is really there
