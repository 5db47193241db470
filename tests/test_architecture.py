"""The house's rules, read from the code (docs/architecture.md): imports point one way
down the pipeline, each outside library has its owners, and no folder but cli/ holds
more than 15 modules."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "mailer"

# Lowest first: a subpackage may import itself and those before it, never one after.
ORDER = ["core", "config", "store", "segments", "insight", "mail", "delivery", "planning", "app",
         "web", "daemon", "cli"]

# Imports that still point up, each lazy (inside a function) and each with its reason;
# the list may only shrink.
UPWARD = {
    # validate checks a campaign's cron line with the parser the planner runs
    ("mailer/config/campaign.py", "mailer.planning.triggers"),
    # validate checks segment references and sizes with the compiler's own walk
    ("mailer/config/workspace.py", "mailer.segments.compiler"),
}

# Who may import each outside library: a subpackage, or one module of it. SQL belongs in
# store/ and the segment compiler; everyone else holds the store's Engine and Connection.
OWNERS = {
    "sqlalchemy": {"store", "segments/compiler"},
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
    "babel": {"mail"},
    "holidays": {"core/holidays"},  # the owner of holiday data
    "scipy": {"insight"},  # fitting the purchase models
    "numpy": {"insight"},
    "yaml": {"config"},
    "pydantic": {"config"},
    "click": {"cli"},
    "rich": {"cli"},
    "email_validator": {"core"},
    "idna": {"core"},
    "matplotlib": {"app/charts"},  # the charts, imported inside the functions that draw
}


def _imports() -> list[tuple[str, str, str, bool]]:
    """(file, its subpackage, the module it imports, whether inside a function) for every
    import under mailer/: relative ones resolved, `from mailer import x` as mailer.x."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE).parts
        name = f"mailer/{'/'.join(parts)}"
        package = parts[0] if len(parts) > 1 else ""
        here = ["mailer", *parts[:-1]]  # the package this file is in
        tree = ast.parse(path.read_text())
        lazy = {id(node) for function in ast.walk(tree)
                if isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef)
                for node in ast.walk(function)}
        for node in ast.walk(tree):
            modules: list[str] = []
            if isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join([*here[:len(here) - node.level + 1], *filter(None, [base])])
                modules = [base]
                if base == "mailer":
                    modules = [f"mailer.{alias.name}" for alias in node.names]
            elif isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            found += [(name, package, module, id(node) in lazy) for module in modules]
    return found


def test_every_module_lives_in_a_subpackage() -> None:
    assert sorted(p.name for p in PACKAGE.glob("*.py")) == ["__init__.py"]


def test_imports_point_down_the_pipeline() -> None:
    rank = {package: n for n, package in enumerate(ORDER)}
    upward = {(file, module, lazy) for file, package, module, lazy in _imports()
              if module.startswith("mailer.") and module.split(".")[1] in rank
              and rank[module.split(".")[1]] > rank.get(package, -1)}
    assert upward == {(file, module, True) for file, module in UPWARD}
    assert sorted(p.name for p in PACKAGE.iterdir() if p.is_dir()
                  and (p / "__init__.py").exists()) == sorted(ORDER)


def test_each_outside_library_is_imported_only_by_its_owners() -> None:
    stray = set()
    for file, package, module, _ in _imports():
        top = module.split(".")[0]
        if top == "mailer" or top in sys.stdlib_module_names or top == "__future__":
            continue
        owners = OWNERS.get(top, set())
        module_name = file.removeprefix("mailer/").removesuffix(".py")
        if package not in owners and module_name not in owners:
            stray.add((file, top))
    assert stray == set()


def test_no_folder_but_cli_holds_more_than_15_modules() -> None:
    crowded = {folder.name: count for folder in PACKAGE.iterdir() if folder.is_dir()
               and folder.name != "cli"
               and (count := len([p for p in folder.glob("*.py") if p.name != "__init__.py"]))
               > 15}
    assert crowded == {}
