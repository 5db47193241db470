"""The workspace: a folder with mailer.yaml, campaigns/, segments/, surveys/ and templates/.

`mailer init` copies the demo workspace the package bundles. A wheel carries it
as `mailer/_demo`; a source checkout (an editable install) uses the repository
root, which *is* the demo workspace: one source, never two copies.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from mailer.config.campaign import Campaign
from mailer.config.conditions import Parsed, SegmentSpec, parse_segment
from mailer.config.settings import SETTINGS_FILE, Environment, Settings, load_settings
from mailer.config.survey import Survey, parse_survey
from mailer.config.yamlsrc import load_yaml
from mailer.core.errors import ConfigError, Problem, UserError
from mailer.core.suggest import did_you_mean

WORKSPACE_PARTS = (SETTINGS_FILE, "campaigns", "segments", "surveys", "templates")

# A workspace is meant for git; what mailer writes into it holds customer data (the
# database, caught and dry-run mails, previews, exports) or is scratch (locks, charts).
GITIGNORE = """\
# Written by `mailer init`: what mailer writes here holds customer data or is scratch.
mailer.db
mailer.db-wal
mailer.db-shm
mailer.db.*
*.db-journal
outbox/
previews/
export/
exports/
charts/
*.png
*.svg
*.eml
"""


@dataclass(frozen=True)
class Workspace:
    root: Path
    settings: Settings
    warnings: tuple[Problem, ...] = ()


def workspace_root(option: str | None, env: Environment) -> Path:
    """--workspace, else MAILER_WORKSPACE, else the current directory."""
    chosen = Path(option or env.workspace or ".").expanduser()
    if not chosen.is_dir():
        raise UserError(f"workspace {chosen} is not a directory")
    return chosen.resolve()


def open_workspace(root: Path) -> Workspace:
    """Load the workspace's settings; every problem raises one ConfigError."""
    settings, warnings = load_settings(root)
    return Workspace(root=root, settings=settings, warnings=tuple(warnings))


def bundled_workspace() -> Path:
    """Where the demo workspace this package bundles lives."""
    package = Path(__file__).resolve().parent.parent  # mailer/, this file is in mailer/config/
    for candidate in (package / "_demo", package.parent):
        if all((candidate / part).exists() for part in WORKSPACE_PARTS):
            return candidate
    raise UserError("this installation of mailer carries no demo workspace")


def init_workspace(dest: Path, *, force: bool) -> list[str]:
    """Copy the demo workspace into DEST; refuses a non-empty DEST unless forced."""
    if dest.exists() and not dest.is_dir():
        raise UserError(f"{dest} exists and is not a directory")
    if dest.exists() and any(dest.iterdir()) and not force:
        raise UserError(f"{dest} is not empty: use --force to copy the demo workspace into it")
    source = bundled_workspace()
    dest.mkdir(parents=True, exist_ok=True)
    copied = []
    for part in WORKSPACE_PARTS:
        origin = source / part
        if origin.is_dir():
            shutil.copytree(origin, dest / part, dirs_exist_ok=True,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(origin, dest / part)
        copied.append(part)
    if _write_gitignore(dest / ".gitignore"):
        copied.append(".gitignore")
    return copied


def _write_gitignore(path: Path) -> bool:
    """Write the workspace's .gitignore, or add the lines a forced init's existing one
    lacks (the user's own lines stay). Whether anything was written."""
    wanted = GITIGNORE.splitlines()
    if not path.exists():
        path.write_text(GITIGNORE, encoding="utf-8")
        return True
    present = set(path.read_text(encoding="utf-8").splitlines())
    missing = [line for line in wanted if line not in present and not line.startswith("#")]
    if not missing:
        return False
    with path.open("a", encoding="utf-8") as handle:
        handle.write("\n" + "\n".join([wanted[0], *missing]) + "\n")
    return True


YamlFile = tuple[str, str, object | None, list[Problem]]


def _yaml_files(root: Path, folder: str) -> list[YamlFile]:
    """(stem, relative path, loaded YAML or None, problems) for FOLDER/*.yaml, by name."""
    found: list[YamlFile] = []
    for file in sorted((root / folder).glob("*.y*ml")):
        if file.suffix not in (".yaml", ".yml"):
            continue
        relative = f"{folder}/{file.name}"
        try:
            data = load_yaml(file.read_text(encoding="utf-8"), relative)
            found.append((file.stem, relative, data, []))
        except ConfigError as err:
            found.append((file.stem, relative, None, list(err.problems)))
        except (OSError, UnicodeDecodeError) as err:
            reason = err.strerror if isinstance(err, OSError) else "not UTF-8 text"
            found.append((file.stem, relative, None,
                          [Problem(relative, None, None, f"cannot read: {reason}")]))
    return found


def load_campaigns(root: Path, segments: set[str]) -> tuple[dict[str, Campaign], list[Problem]]:
    """Every campaign of the workspace by file stem, and every problem in them and in the
    survey files (errors only: validate adds the surveys' warnings, load_surveys)."""
    from mailer.config.campaign import cross_check, parse_campaign

    campaigns: dict[str, Campaign] = {}
    surveys, found_in_surveys = _surveys(root)
    problems: list[Problem] = [p for p in found_in_surveys if not p.warning]
    for slug, relative, data, found in _yaml_files(root, "campaigns"):
        problems.extend(found)
        if data is None:
            continue
        spec, found = parse_campaign(data, relative)
        problems.extend(found)
        if spec is None:
            continue
        found = cross_check(slug, spec, data, relative, segments=segments,
                            templates=root / "templates", surveys=surveys)
        problems.extend(found)
        if not found:
            campaigns[slug] = spec
    return campaigns, problems


def load_valid_workspace(root: Path, campaign: str | None = None
                         ) -> tuple[dict[str, SegmentSpec], dict[str, Campaign]]:
    """Segments and campaigns; every problem raises one ConfigError, an unknown CAMPAIGN
    a NotFoundError with "did you mean"."""
    from mailer.core.errors import NotFoundError

    specs, problems = load_segments(root)
    campaigns, campaign_problems = load_campaigns(root, set(specs))
    if problems or campaign_problems:
        raise ConfigError(problems + campaign_problems)
    if campaign is not None and campaign not in campaigns:
        raise NotFoundError(f"unknown campaign {campaign!r}{did_you_mean(campaign, campaigns)}")
    return specs, campaigns


def load_segments(root: Path) -> tuple[dict[str, SegmentSpec], list[Problem]]:
    """Every segment of the workspace by name, and every problem in them."""
    from mailer.segments.compiler import check_references

    parsed: list[Parsed] = []
    problems: list[Problem] = []
    for name, relative, data, found in _yaml_files(root, "segments"):
        problems.extend(found)
        segment = (parse_segment(name, relative, data) if data is not None
                   else Parsed(name, relative, None, [], []))
        problems.extend(segment.problems)
        parsed.append(segment)
    problems.extend(check_references(parsed))
    return {p.name: p.spec for p in parsed if p.spec is not None}, problems


def _surveys(root: Path) -> tuple[dict[str, Survey | None], list[Problem]]:
    """Every survey file by name (None for one with problems), and the problems."""
    surveys: dict[str, Survey | None] = {}
    problems: list[Problem] = []
    for name, relative, data, found in _yaml_files(root, "surveys"):
        spec = None
        if data is not None:
            spec, found = parse_survey(data, relative)
        problems.extend(found)
        surveys[name] = spec
    return surveys, problems


def load_surveys(root: Path) -> tuple[dict[str, Survey], list[Problem]]:
    """Every valid survey of the workspace by name, and every problem (and warning)."""
    surveys, problems = _surveys(root)
    return {name: spec for name, spec in surveys.items() if spec is not None}, problems


def read_survey(root: Path, name: str) -> tuple[Survey, str]:
    """One survey and its file as written (what a campaign version freezes); a missing or
    invalid file raises ConfigError."""
    relative = next((f"surveys/{name}{suffix}" for suffix in (".yaml", ".yml")
                     if (root / "surveys" / f"{name}{suffix}").is_file()), f"surveys/{name}.yaml")
    try:
        source = (root / relative).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        raise ConfigError([Problem(relative, None, None, "cannot read the survey")]) from None
    return parse_survey_source(source, relative), source


def parse_survey_source(source: str, relative: str) -> Survey:
    """The survey a file's text describes; its problems raise ConfigError."""
    spec, problems = parse_survey(load_yaml(source, relative), relative)
    if spec is None:
        raise ConfigError(problems)
    return spec
