"""The reference where users look: `mailer schema`, docs/reference.md and docs/examples/.

The examples validate in a fresh demo workspace, the page is the generated one, the
JSON Schema accepts the demo workspace (checked by a small validator of the keywords
the schemas use, since jsonschema is not a dependency) and every key has a meaning.
"""

from __future__ import annotations

import inspect
import json
import re
import shutil
import typing
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from pydantic import BaseModel

from mailer.app.schema import FILES, REGENERATE, all_schemas, file_schema, reference_markdown
from mailer.app.validation import validate_workspace
from mailer.cli import COMMANDS, main
from mailer.cli.schema_cmd import schema
from mailer.config import conditions as lang
from mailer.config.campaign import ONLY_FOR, TRIGGER_RULES, TRIGGERS, Campaign
from mailer.config.settings import ENVIRONMENT_DOCS, Environment, Settings
from mailer.config.workspace import init_workspace
from mailer.config.yamlsrc import load_yaml

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "docs" / "examples"


def _examples() -> list[Path]:
    return sorted(EXAMPLES.glob("*.yaml"))


def _is_segment(path: Path) -> bool:
    return path.name.startswith("segment-")


def _load(path: Path) -> Any:
    return load_yaml(path.read_text(encoding="utf-8"), path.name)


# --- (1) the examples --------------------------------------------------------------------


def test_every_example_validates_in_a_fresh_demo_workspace(tmp_path: Path) -> None:
    root = tmp_path / "shop"
    init_workspace(root, force=False)
    for example in _examples():
        shutil.copy(example, root / ("segments" if _is_segment(example) else "campaigns"))
    problems = validate_workspace(root, now=datetime(2026, 4, 1, 12, tzinfo=UTC))
    assert [str(p) for p in problems if not p.warning] == []


def test_there_is_an_example_per_trigger_and_per_family_of_conditions() -> None:
    campaigns = {str(_load(p)["trigger"]): p.stem for p in _examples() if not _is_segment(p)}
    assert campaigns == {trigger: trigger for trigger in TRIGGERS}
    for family, kinds in lang.FAMILIES.items():
        path = EXAMPLES / f"segment-{family.replace('_', '-')}.yaml"
        used = set(re.findall(r"^\s*(?:- )?(\w+):", path.read_text(encoding="utf-8"), re.M))
        assert used & set(kinds), f"{path.name} uses none of {kinds}"
    assert len(_examples()) == len(TRIGGERS) + len(lang.FAMILIES)


def test_each_example_says_what_it_shows_on_its_first_line() -> None:
    for example in _examples():
        assert example.read_text(encoding="utf-8").startswith("# "), example.name


def test_the_promotion_example_uses_a_template_of_the_demo_workspace() -> None:
    template = _load(EXAMPLES / "promotion.yaml")["template"]
    assert (ROOT / "templates" / template).is_file()


# --- (2) docs/reference.md -----------------------------------------------------------------


def test_reference_md_is_the_generated_page() -> None:
    current = (ROOT / "docs" / "reference.md").read_text(encoding="utf-8")
    assert current == reference_markdown(), (
        f"docs/reference.md is stale: regenerate it with `{REGENERATE}`")


def test_every_link_of_the_reference_leads_to_a_file() -> None:
    links = re.findall(r"\]\(([^)#]+)", reference_markdown())
    assert links
    assert [link for link in links if not (ROOT / "docs" / link).exists()] == []


def _anchor(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_the_guides_link_to_sections_the_reference_has() -> None:
    anchors = {_anchor(line.lstrip("#")) for line in reference_markdown().splitlines()
               if line.startswith("#")}
    linked = {anchor for page in (ROOT / "docs").glob("*.md")
              for anchor in re.findall(r"\(reference\.md#([\w-]+)\)", page.read_text())}
    assert linked and linked <= anchors


# --- (3) the JSON Schema -------------------------------------------------------------------

ANNOTATIONS = {"$schema", "$id", "$defs", "title", "description", "default", "examples",
               "format"}
CHECKED = {"$ref", "type", "enum", "const", "pattern", "minLength", "minimum", "maximum",
           "exclusiveMinimum", "items", "minItems", "maxItems", "properties",
           "additionalProperties", "required", "minProperties", "maxProperties", "anyOf",
           "allOf", "not", "if", "then", "else"}


def _keywords(schema: Any) -> set[str]:
    """Every keyword a schema uses (names under properties and $defs are not keywords)."""
    if not isinstance(schema, dict):
        return set()
    found = set(schema)
    for key, value in schema.items():
        if key in ("properties", "$defs"):
            for inner in value.values():
                found |= _keywords(inner)
        elif key in ("anyOf", "allOf"):
            for inner in value:
                found |= _keywords(inner)
        elif key in ("items", "additionalProperties", "not", "if", "then", "else"):
            found |= _keywords(value)
    return found


def _is(value: Any, kind: str) -> bool:
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    return {"null": value is None, "boolean": isinstance(value, bool),
            "integer": number and float(value).is_integer(), "number": number,
            "string": isinstance(value, str), "array": isinstance(value, list),
            "object": isinstance(value, dict)}[kind]


def _errors(schema: Any, value: Any, root: dict[str, Any], at: str = "$") -> list[str]:
    """Where VALUE breaks SCHEMA (the CHECKED keywords of JSON Schema 2020-12)."""
    if schema is True:
        return []
    if schema is False:
        return [f"{at}: not allowed"]
    errors: list[str] = []
    if "$ref" in schema:
        target: Any = root
        for part in schema["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        errors += _errors(target, value, root, at)
    kinds = schema.get("type")
    if kinds is not None and not any(_is(value, k) for k in
                                     (kinds if isinstance(kinds, list) else [kinds])):
        return [*errors, f"{at}: {value!r} is not {kinds}"]
    if "enum" in schema and value not in schema["enum"]:
        errors.append(f"{at}: {value!r} not in {schema['enum']}")
    if "const" in schema and value != schema["const"]:
        errors.append(f"{at}: {value!r} is not {schema['const']!r}")
    if isinstance(value, str):
        if "pattern" in schema and not re.search(schema["pattern"], value):
            errors.append(f"{at}: {value!r} does not match {schema['pattern']}")
        if len(value) < schema.get("minLength", 0):
            errors.append(f"{at}: too short")
    if _is(value, "number"):
        if "minimum" in schema and value < schema["minimum"]:
            errors.append(f"{at}: below {schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            errors.append(f"{at}: above {schema['maximum']}")
        if "exclusiveMinimum" in schema and value <= schema["exclusiveMinimum"]:
            errors.append(f"{at}: not above {schema['exclusiveMinimum']}")
    if isinstance(value, list):
        if not schema.get("minItems", 0) <= len(value) <= schema.get("maxItems", len(value)):
            errors.append(f"{at}: {len(value)} items")
        for index, item in enumerate(value):
            errors += _errors(schema.get("items", True), item, root, f"{at}[{index}]")
    if isinstance(value, dict):
        properties = schema.get("properties", {})
        for key, item in value.items():
            errors += _errors(properties.get(key, schema.get("additionalProperties", True)),
                              item, root, f"{at}.{key}")
        errors += [f"{at}.{key}: missing" for key in schema.get("required", ())
                   if key not in value]
        if not schema.get("minProperties", 0) <= len(value) <= \
                schema.get("maxProperties", len(value)):
            errors.append(f"{at}: {len(value)} keys")
    if "anyOf" in schema and all(_errors(s, value, root, at) for s in schema["anyOf"]):
        errors.append(f"{at}: matches none of anyOf")
    for inner in schema.get("allOf", ()):
        errors += _errors(inner, value, root, at)
    if "not" in schema and not _errors(schema["not"], value, root, at):
        errors.append(f"{at}: matches what is refused")
    if "if" in schema:
        branch = "then" if not _errors(schema["if"], value, root, at) else "else"
        errors += _errors(schema.get(branch, True), value, root, at)
    return errors


def _as_json(value: Any) -> Any:
    """A loaded YAML value as an editor's JSON Schema check sees it: dates are text."""
    if isinstance(value, dict):
        return {str(key): _as_json(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_as_json(item) for item in value]
    if isinstance(value, (date, datetime)):
        return value.isoformat()
    return value


def _schema_errors(kind: str, path: Path) -> list[str]:
    document = file_schema(kind)
    return _errors(document, _as_json(_load(path)), document)


def test_the_schemas_use_only_keywords_the_check_knows() -> None:
    for document in all_schemas().values():
        assert _keywords(document) - ANNOTATIONS - CHECKED == set()


def test_each_schema_names_its_dialect_and_refuses_unknown_keys() -> None:
    for kind, document in all_schemas().items():
        assert document["$schema"] == "https://json-schema.org/draft/2020-12/schema"
        assert document["$id"] == f"https://mailer.invalid/schema/{kind}.json"
        assert document["title"] and document["description"]
        assert document["additionalProperties"] is False
    defs = {**file_schema("mailer")["$defs"], **file_schema("campaign")["$defs"]}
    assert all(model["additionalProperties"] is False for model in defs.values())


def test_the_json_schema_accepts_the_demo_workspace_and_the_examples() -> None:
    files = [("mailer", ROOT / "mailer.yaml"),
             *(("campaign", p) for p in sorted((ROOT / "campaigns").glob("*.yaml"))),
             *(("segment", p) for p in sorted((ROOT / "segments").glob("*.yaml"))),
             *(("segment" if _is_segment(p) else "campaign", p) for p in _examples())]
    assert len(files) > 20
    assert {str(p.name): _schema_errors(kind, p) for kind, p in files} == \
        {str(p.name): [] for _, p in files}


@pytest.mark.parametrize(("kind", "text", "where"), [
    ("mailer", 'store: {name: S, address: A}\nsender: {from: a@b.example}\nstor: {}\n',
     "$.stor"),
    ("mailer", 'store: {name: S, address: A}\nsender: {from: a@b.example}\n'
               'delivery: {retry_for: P2D}\n', "$.delivery.retry_for"),
    ("campaign", "name: N\ntrigger: schedule\nsegment: s\ntemplate: t.html\nsubject: hi\n",
     "$.schedule"),
    ("campaign", "name: N\ntrigger: once\nat: 2026-01-01T10:00\nsegment: s\n"
                 "template: t.html\nsubject: hi\nreminder: {before_end: 1h, subject: x}\n",
     "$.reminder"),
    ("segment", "all:\n  - orders: {within: 30d}\n", "$.all[0]"),
    ("segment", "all: [{orders: 1}]\nany: [{orders: 1}]\n", "$"),
])
def test_the_json_schema_refuses_what_validate_refuses(kind: str, text: str, where: str,
                                                        tmp_path: Path) -> None:
    path = tmp_path / "file.yaml"
    path.write_text(text, encoding="utf-8")
    errors = _schema_errors(kind, path)
    assert errors and any(error.startswith(where) for error in errors), errors


# --- (4) every key has a meaning ----------------------------------------------------------


def _models(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [model for arg in typing.get_args(annotation) for model in _models(arg)]


def _undescribed(model: type[BaseModel], prefix: str = "") -> list[str]:
    missing = []
    for name, field in model.model_fields.items():
        key = prefix + (field.alias or name)
        if not (field.description or "").strip():
            missing.append(key)
        for inner in _models(field.annotation):
            missing += _undescribed(inner, key + ".")
    return missing


def test_every_key_of_mailer_yaml_and_of_campaigns_has_a_meaning() -> None:
    assert _undescribed(Settings) == []
    assert _undescribed(Campaign) == []
    assert len(Settings.model_fields) >= 8 and len(Campaign.model_fields) >= 20


def test_every_condition_key_and_variable_has_a_meaning() -> None:
    assert set(lang.CONDITION_DOCS) == set(lang.CONDITIONS)
    assert set(lang.KEY_DOCS) == {key for keys in lang.ALLOWED_KEYS.values() for key in keys}
    read = set(re.findall(r'"(MAILER_\w+)"', inspect.getsource(Environment.from_mapping)))
    assert set(ENVIRONMENT_DOCS) == read


def test_each_condition_example_of_the_reference_parses() -> None:
    for kind, (_, example) in lang.CONDITION_DOCS.items():
        parsed = lang.parse_segment("x", "x.yaml", load_yaml(example, "x.yaml"))
        assert parsed.problems == [], example
        assert example.startswith(f"{kind}:")


def test_families_cover_the_conditions_and_share_their_rules() -> None:
    assert [kind for kinds in lang.FAMILIES.values() for kind in kinds] == \
        list(lang.CONDITIONS)
    for kinds in lang.FAMILIES.values():
        for table in (lang.ALLOWED_KEYS, lang.REQUIRED_KEYS, lang.BARE):
            assert len({repr(table.get(kind)) for kind in kinds}) == 1, kinds


def test_the_trigger_table_names_every_trigger_and_real_keys() -> None:
    literal = typing.get_args(Campaign.model_fields["trigger"].annotation)
    assert set(TRIGGER_RULES) == set(TRIGGERS) == set(literal)
    keys = {field.alias or name for name, field in Campaign.model_fields.items()}
    for rule in TRIGGER_RULES.values():
        assert set(rule.needs) | set(rule.reads) <= keys
    assert set(ONLY_FOR) <= keys


# --- the command -----------------------------------------------------------------------------


def test_schema_prints_every_schema_one_schema_or_the_page() -> None:
    runner = CliRunner()
    everything = runner.invoke(schema, [])
    assert everything.exit_code == 0
    assert json.loads(everything.output) == all_schemas()
    assert list(json.loads(everything.output)) == list(FILES)
    one = runner.invoke(schema, ["--file", "campaign"])
    assert json.loads(one.output)["$id"] == "https://mailer.invalid/schema/campaign.json"
    page = runner.invoke(schema, ["--markdown"])
    assert page.output == reference_markdown()
    both = runner.invoke(schema, ["--markdown", "--file", "segment"])
    assert both.exit_code == 2


def test_mailer_schema_runs_from_the_command_line(monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    if "schema" not in COMMANDS:  # until the command is registered in mailer/cli/__init__.py
        monkeypatch.setitem(COMMANDS, "schema", ("mailer.cli.schema_cmd:schema", "Schema."))
    assert main(["schema", "--file", "mailer"]) == 0
    assert json.loads(capsys.readouterr().out)["title"] == "mailer.yaml"
