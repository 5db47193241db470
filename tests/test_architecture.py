"""The house's rules, read from the code (docs/architecture.md): imports point one way
down the pipeline, each outside library has its owners, and no folder but cli/ holds
more than 15 modules."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "mailer"

# Lowest first: a subpackage may import itself and those before it, never one after.
ORDER = ["core", "config", "store", "segments", "mail", "delivery", "planning", "app", "web",
         "daemon", "cli"]

# Imports that still point up, each lazy (inside a function) and each with its reason;
# the list may only shrink.
UPWARD = {
    # validate checks a campaign's cron line with the parser the planner runs
    ("mailer/config/campaign.py", "mailer.planning.triggers"),
    # validate checks segment references and sizes with the compiler's own walk
    ("mailer/config/workspace.py", "mailer.segments.compiler"),
}

# Who may import each outside library. SQL belongs in store/ and the segment compiler;
# the other owners of sqlalchemy are today's, and may only shrink (issue 16, item 3).
OWNERS = {
    "sqlalchemy": {"store", "segments", "app", "cli", "daemon", "delivery", "mail", "planning",
                   "web"},
    "alembic": {"store"},
    "aiosmtplib": {"delivery"},
    "aiosmtpd": {"delivery"},
    "aiohttp": {"web"},
    "multidict": {"web"},
    "apscheduler": {"daemon"},
    "jinja2": {"mail", "web"},  # marketers' templates; the service's own pages
    "markupsafe": {"mail"},
    "premailer": {"mail"},
    "cryptography": {"mail"},
    "yaml": {"config"},
    "pydantic": {"config"},
    "click": {"cli"},
    "rich": {"cli"},
    "email_validator": {"core"},
    "idna": {"core"},
}


def _imports() -> list[tuple[str, str, str]]:
    """(file, its subpackage, the module it imports) for every import under mailer/."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE).parts
        if len(parts) < 2:
            continue
        name = f"mailer/{'/'.join(parts)}"
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.append((name, parts[0], node.module))
            elif isinstance(node, ast.Import):
                found += [(name, parts[0], alias.name) for alias in node.names]
    return found


def test_imports_point_down_the_pipeline() -> None:
    rank = {package: n for n, package in enumerate(ORDER)}
    upward = {(file, module) for file, package, module in _imports()
              if module.startswith("mailer.") and module.split(".")[1] in rank
              and rank[module.split(".")[1]] > rank[package]}
    assert upward == UPWARD
    assert sorted(p.name for p in PACKAGE.iterdir() if p.is_dir()
                  and (p / "__init__.py").exists()) == sorted(ORDER)


def test_each_outside_library_is_imported_only_by_its_owners() -> None:
    stray = set()
    for file, package, module in _imports():
        top = module.split(".")[0]
        if top == "mailer" or top in sys.stdlib_module_names or top == "__future__":
            continue
        if package not in OWNERS.get(top, set()):
            stray.add((file, top))
    assert stray == set()


def test_no_folder_but_cli_holds_more_than_15_modules() -> None:
    crowded = {folder.name: count for folder in PACKAGE.iterdir() if folder.is_dir()
               and folder.name != "cli"
               and (count := len([p for p in folder.glob("*.py") if p.name != "__init__.py"]))
               > 15}
    assert crowded == {}
