"""`mailer schema`: the JSON Schema of the workspace files, and the reference page.

mailer.yaml and campaign files are described by their specs (mailer.config.settings,
mailer.config.campaign, with the trigger table TRIGGER_RULES), segment files by the
condition tables of mailer.config.conditions. The reference page (docs/reference.md)
is made from the same schemas and tables, so neither can drift from what `mailer
validate` accepts.
"""

from __future__ import annotations

from itertools import combinations
from typing import Any

from mailer.config import conditions as lang
from mailer.config.campaign import (
    BEST,
    BEST_TRIGGERS,
    CRON_SCHEMA,
    MOMENT_SCHEMA,
    ONLY_FOR,
    SHARE_SCHEMA,
    TRIGGER_RULES,
    TRIGGERS,
    Campaign,
)
from mailer.config.settings import (
    CLOCK_SCHEMA,
    DURATION_SCHEMA,
    ENVIRONMENT_DOCS,
    HTTP_URL_SCHEMA,
    QUIET_HOURS_SCHEMA,
    STAGE_NAMES,
    Settings,
)
from mailer.config.specs import json_schema
from mailer.config.yamlsrc import flow

Schema = dict[str, Any]

DIALECT = "https://json-schema.org/draft/2020-12/schema"
BASE_ID = "https://mailer.invalid/schema/"
FILES = ("mailer", "campaign", "segment")  # the kinds of file, for `--file`
REGENERATE = "mailer schema --markdown > docs/reference.md"

# --- JSON Schema ---------------------------------------------------------------------------


def _envelope(kind: str, title: str, description: str, body: Schema) -> Schema:
    rest = {key: value for key, value in body.items() if key not in ("title", "description")}
    return {"$schema": DIALECT, "$id": f"{BASE_ID}{kind}.json", "title": title,
            "description": description, **rest}


def settings_schema() -> Schema:
    return _envelope("mailer", "mailer.yaml", (
        "The workspace settings. Secrets never live here: keys named password, secret, "
        "secret_key, api_key or smtp_url and database URLs with a password are refused."),
        json_schema(Settings))


def _trigger_is(triggers: tuple[str, ...], *, among: bool = True) -> Schema:
    test: Schema = {"enum": list(triggers)}
    return {"properties": {"trigger": test if among else {"not": test}}, "required": ["trigger"]}


def campaign_schema() -> Schema:
    rules: list[Schema] = []
    for trigger, rule in TRIGGER_RULES.items():
        if rule.needs:
            rules.append({"if": _trigger_is((trigger,)), "then": {
                "required": list(rule.needs),
                "properties": {key: {"not": {"type": "null"}} for key in rule.needs}}})
    for key, triggers in ONLY_FOR.items():
        rules.append({"if": _trigger_is(triggers, among=False),
                      "then": {"properties": {key: {"type": "null"}}}})
    # send_at: best for the campaigns mailing an audience at once, a time of day elsewhere
    rules.append({"if": _trigger_is(BEST_TRIGGERS), "then": {"properties": {
        "send_at": {"enum": [BEST, None]}}}})
    rules.append({"if": _trigger_is(BEST_TRIGGERS, among=False), "then": {"properties": {
        "send_at": {"not": {"enum": [BEST]}}}}})
    rules.append({"if": {"properties": {"winner": {"type": "object"}}, "required": ["winner"]},
                  "then": {"properties": {"subject": {"type": "array", "minItems": 2}}}})
    return _envelope("campaign", "campaign file", (
        "campaigns/ID.yaml: the file stem is the campaign's id on the command line and in "
        "the ledger; `name` is its display name. Only `mailer validate` checks that ends "
        "is after starts, that winner.after is shorter than grace where grace applies, "
        "and that the segments and the template exist."),
        {**json_schema(Campaign), "allOf": rules})


_BIG = int(lang.MAX_NUMBER)
_COUNT = {"type": "integer", "title": "whole number", "minimum": 0, "maximum": _BIG}
_AMOUNT = {"type": "number", "title": "amount", "minimum": 0, "maximum": _BIG,
           "examples": [49.9]}
_AGE = {"type": "integer", "title": "whole number", "minimum": 0, "maximum": lang.MAX_AGE}
_TEXT = {"type": ["string", "number"], "title": "text", "pattern": r"\S"}
_ANY_VALUE = {"type": ["string", "number", "boolean"], "title": "text, number or true/false",
              "pattern": r"\S"}
_PLURAL = {"stage": "stages", "churn risk": "churn risks", "probability": "probabilities",
           "whole number": "whole numbers", "amount": "amounts", "text": "text",
           _ANY_VALUE["title"]: "values (text, numbers or true/false)"}
DATE_SCHEMA = {"type": "string", "title": "date", "examples": ["2026-01-31"],
               "pattern": r"^(19|2[0-9])[0-9]{2}-[0-9]{2}-[0-9]{2}([Tt ][0-9:.]+.*)?$"}


def _compared(kind: str) -> Schema:
    """What `eq` of KIND compares with (mailer.config.conditions._comparison_value)."""
    if kind == "age":
        return _AGE
    if kind == "stage":
        return {"title": "stage", "enum": list(STAGE_NAMES)}
    if kind == "churn_risk":
        return {"title": "churn risk", "enum": list(lang.CHURN_RISKS)}
    if kind == "p_alive":
        return {"type": "number", "title": "probability", "minimum": 0, "maximum": 1}
    if kind == "predicted_clv":
        return _AMOUNT
    if kind in ("orders", "bought", *lang.COUNTS):
        return _COUNT
    if kind in ("spent", "average_order"):
        return _AMOUNT
    if kind in lang.TEXTS:
        return _TEXT
    return _ANY_VALUE  # attribute


def _key_schema(kind: str, key: str) -> Schema:
    """The value of KEY inside a KIND condition."""
    if key == "in":
        items = _compared(kind)
        listed: Schema = {"type": "array", "title": f"list of {_PLURAL[items['title']]}",
                          "minItems": 1, "items": items}
        return {**listed, "maxItems": lang.MAX_EACH} if kind == "average_order" else listed
    if key in ("at_least", "at_most") and kind == "attribute":
        return {"type": "number", "title": "number"}
    if key in lang.COMPARISONS:
        return _compared(kind)
    if key in ("within", "more_than_ago", "less_than_ago", "within_next"):
        return DURATION_SCHEMA
    if key in ("since", "before", "after"):
        return DATE_SCHEMA
    if key == "during":
        return {"enum": list(lang.DURING)}
    if key == "contains":
        return {"title": "text or list of text", "anyOf": [
            _TEXT, {"type": "array", "minItems": 1, "items": _TEXT}]}
    return _TEXT  # category, sku, product, name


def _condition_schema(kind: str) -> Schema:
    meaning = lang.CONDITION_DOCS[kind][0]
    if kind == "subscribed":
        return {"type": "boolean", "description": meaning}
    if kind == "in_segment":
        return {"type": "string", "title": "segment name", "minLength": 1,
                "description": meaning}
    keys = lang.ALLOWED_KEYS[kind]
    mapping: Schema = {"type": "object", "additionalProperties": False, "properties": {
        key: {**_key_schema(kind, key), "description": lang.KEY_DOCS[key]} for key in keys}}
    rules: list[Schema] = [{"anyOf": [{"required": [key]} for key in group]}
                           for group, _ in lang.REQUIRED_KEYS.get(kind, ())]
    for group in lang.ONE_OF:
        present = [key for key in group if key in keys]
        if len(present) > 1:
            rules.append({"not": {"anyOf": [{"required": list(pair)}
                                            for pair in combinations(present, 2)]}})
    if rules:
        mapping["allOf"] = rules
    bare = lang.BARE.get(kind)
    if bare == "eq/in":
        forms = [mapping, _key_schema(kind, "eq"), _key_schema(kind, "in")]
    elif bare == "contains":
        forms = [mapping, *_key_schema(kind, "contains")["anyOf"]]
    else:
        return {**mapping, "description": meaning}
    return {"description": meaning, "anyOf": forms}


def _tree_properties() -> Schema:
    return {"all": {"$ref": "#/$defs/list", "description": "Every item holds."},
            "any": {"$ref": "#/$defs/list", "description": "At least one item holds."},
            "not": {"anyOf": [{"$ref": "#/$defs/item"}, {"$ref": "#/$defs/list"}],
                    "description": "The item does not hold; a list: not all of them hold."},
            **{kind: {"$ref": f"#/$defs/{kind}"} for kind in lang.CONDITIONS}}


def segment_schema() -> Schema:
    one_tree = {"if": {"required": ["description"]},
                "then": {"minProperties": 2, "maxProperties": 2},
                "else": {"minProperties": 1, "maxProperties": 1}}
    return _envelope("segment", "segment file", (
        "segments/NAME.yaml: an optional description and one tree of all/any/not over "
        "conditions (or one condition). Only `mailer validate` checks what JSON Schema "
        f"cannot say: at most {lang.MAX_NESTING} levels of all/any/not and "
        f"{lang.MAX_CONDITIONS} conditions with in_segment inlined, that in_segment names "
        f"an existing segment without a cycle, durations up to {lang.MAX_SPAN.days}d, "
        "dates from 1900 to 2999; it also reads numbers written as text."), {
        "type": "object",
        "properties": {"description": {"type": "string", "description": (
            "What the segment is for (`mailer segments list` shows it).")},
            **_tree_properties()},
        "additionalProperties": False,
        **one_tree,
        "$defs": {
            "item": {"type": "object", "minProperties": 1, "maxProperties": 1,
                     "additionalProperties": False, "properties": _tree_properties()},
            "list": {"type": "array", "minItems": 1, "maxItems": lang.MAX_ITEMS,
                     "items": {"$ref": "#/$defs/item"}},
            **{kind: _condition_schema(kind) for kind in lang.CONDITIONS},
        }})


def file_schema(kind: str) -> Schema:
    """The JSON Schema of one kind of file: mailer, campaign or segment."""
    return {"mailer": settings_schema, "campaign": campaign_schema,
            "segment": segment_schema}[kind]()


def all_schemas() -> dict[str, Schema]:
    """Every kind of file's JSON Schema, by kind (what `mailer schema` prints)."""
    return {kind: file_schema(kind) for kind in FILES}


# --- the reference page ----------------------------------------------------------------------


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _target(prop: Schema) -> tuple[str | None, bool]:
    """The $defs model a property holds (one, or a list of them), and whether a list."""
    for option in [prop, *prop.get("anyOf", ())]:
        if "$ref" in option:
            return option["$ref"].rsplit("/", 1)[1], False
        if option.get("type") == "array" and "$ref" in option.get("items", {}):
            return option["items"]["$ref"].rsplit("/", 1)[1], True
    return None, False


def _bounds(schema: Schema) -> str:
    low, high = schema.get("minimum"), schema.get("maximum")
    if "exclusiveMinimum" in schema:
        return f" > {schema['exclusiveMinimum']}"
    if low is not None and high is not None:
        return f", {low} to {high}" if high < _BIG else ""
    return f" ≥ {low}" if low is not None else ""


def _label(schema: Schema) -> str:
    """A schema's type in words."""
    if "$ref" in schema:
        return "mapping"
    if "title" in schema:
        return str(schema["title"]) + _bounds(schema)
    if "anyOf" in schema:
        return " or ".join(_label(option) for option in schema["anyOf"]
                           if option.get("type") != "null")
    if "const" in schema:
        return f"`{schema['const']}`"
    if "enum" in schema:
        return "one of " + ", ".join(f"`{value}`" for value in schema["enum"])
    kind = schema.get("type")
    if kind == "array":
        items = schema.get("items", {})
        return "list of mappings" if "$ref" in items else f"list of {_label(items)}"
    if kind == "string":
        return "date" if schema.get("format") == "date" else "text"
    words = {"integer": "whole number", "number": "number", "boolean": "true or false",
             "object": "mapping"}
    return words.get(str(kind), str(kind)) + _bounds(schema)


def _default(prop: Schema, required: bool) -> str:
    if required:
        return "required"
    value = prop.get("default")
    if isinstance(value, dict):
        return ""  # a mapping's defaults are its keys'
    return "—" if value is None else f"`{flow(value)}`"


def _rows(schema: Schema, defs: Schema, prefix: str = "") -> list[tuple[str, Schema, bool]]:
    """(dotted key, its schema, required) for every key, nested keys after their parent."""
    rows = []
    required = set(schema.get("required", ()))
    for key, prop in schema["properties"].items():
        name = prefix + key
        rows.append((name, prop, key in required))
        model, listed = _target(prop)
        if model is not None:
            rows += _rows(defs[model], defs, name + ("[]." if listed else "."))
    return rows


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *("| " + " | ".join(_cell(cell) for cell in row) + " |" for row in rows)]


def _code(keys: tuple[str, ...] | list[str]) -> str:
    return ", ".join(f"`{key}`" for key in keys) or "—"


def _and(keys: tuple[str, ...] | list[str]) -> str:
    quoted = [f"`{key}`" for key in keys]
    return quoted[0] if len(quoted) == 1 else f"{', '.join(quoted[:-1])} and {quoted[-1]}"


INTRO = f"""\
# Reference: the workspace files

Every key of `mailer.yaml`, of campaign files (per trigger) and of segment files (per
condition), with its type, default and meaning. This page is generated from the
definitions `mailer validate` uses (a test fails when it is stale); regenerate it with

```sh
{REGENERATE}
```

The guides explain the ideas: [campaigns](campaigns.md),
[segments](segments.md), [templates](templates.md), [delivery](delivery.md),
[engagement](engagement.md), [the daemon](daemon.md). [examples/](examples/) holds a
small file per trigger and per family of conditions, each of which validates in a
workspace made by `mailer init`.

`mailer schema` prints the same definitions as JSON Schema (draft 2020-12): one JSON
object holding a schema per kind of file,

```json
{{"mailer": {{...}}, "campaign": {{...}}, "segment": {{...}}}}
```

or one schema alone with `--file mailer` (mailer.yaml), `--file campaign` or
`--file segment`. Each has an `$id` like `{BASE_ID}campaign.json`
(a name, not a download) and refuses unknown keys, as `validate` does. Save one
(`mailer schema --file campaign > campaign.schema.json`) and point an editor at it,
for instance with a first line `# yaml-language-server: $schema=../campaign.schema.json`
in a campaign file.
Values that YAML gives as text (durations, times of day, date-times) are described as
the text you write, with a pattern; what JSON Schema cannot say is left to `validate`
and named in each schema's description.

In the tables, "required" inside a nested mapping means required when the mapping is
given; "—" means unset.
"""

_VALUES: list[tuple[Schema, str]] = [
    (DURATION_SCHEMA, "Exact elapsed time: `s`, `m` (minutes), `h`, `d` (24 hours), `w`."),
    (CLOCK_SCHEMA, "A local time of day, 00:00 to 23:59."),
    (QUIET_HOURS_SCHEMA, "From a time of day to another, across midnight if the end is "
                         "earlier; start and end differ."),
    (MOMENT_SCHEMA, "ISO 8601; without an offset, in the workspace zone. A local time in a "
                    "daylight-saving gap means the first instant after the gap; one that "
                    "occurs twice means its first instance."),
    (DATE_SCHEMA, "A calendar day; in segments, years 1900 to 2999."),
    (CRON_SCHEMA, "crontab(5): minute hour day month weekday, in the workspace zone; see "
                  "[campaigns](campaigns.md) for daylight-saving days."),
    (SHARE_SCHEMA, "A whole percentage from 1% to 99%."),
    (_AMOUNT, "Money in major units of `store.currency`, up to 10^15; compared exactly."),
    (HTTP_URL_SCHEMA, "An `http://` or `https://` address with a host."),
]


def _values_section() -> list[str]:
    rows = [[f"{schema['title']}", f"`{schema['examples'][0]}`", meaning]
            for schema, meaning in _VALUES]
    return ["## Values", "",
            "The value types the tables below name, as they are written in YAML.", "",
            *_table(["value", "written like", "meaning"], rows), ""]


def _settings_section() -> list[str]:
    schema = settings_schema()
    rows = [[f"`{name}`", _label(prop), _default(prop, required), prop["description"]]
            for name, prop, required in _rows(schema, schema["$defs"])]
    return ["## mailer.yaml", "",
            "The workspace's settings, in the workspace folder. Only `store.name`, "
            "`store.address` and `sender.from` are required.", "",
            *_table(["key", "type", "default", "meaning"], rows), "",
            "## Environment", "",
            "Secrets and the machine's own settings come from the environment, never from "
            "`mailer.yaml`.", "",
            *_table(["variable", "meaning"],
                    [[f"`{name}`", meaning] for name, meaning in ENVIRONMENT_DOCS.items()]),
            ""]


def _triggers_of(key: str) -> str:
    """Which triggers read a campaign key: `all`, or the ones TRIGGER_RULES names."""
    top = key.split(".", 1)[0]
    needing = [t for t, rule in TRIGGER_RULES.items() if top in rule.needs]
    reading = [t for t, rule in TRIGGER_RULES.items() if top in rule.reads]
    words = [f"{t} (required)" for t in needing] + reading
    return ", ".join(words) or "all"


def _campaign_section() -> list[str]:
    schema = campaign_schema()
    rows = [[f"`{name}`", _label(prop), _default(prop, required), _triggers_of(name),
             prop["description"]]
            for name, prop, required in _rows(schema, schema["$defs"])]
    required = list(schema["required"])
    special = {key for rule in TRIGGER_RULES.values() for key in (*rule.needs, *rule.reads)}
    common = [key for key in schema["properties"] if key not in required and key not in special]
    lines = ["## Campaign files", "",
             "`campaigns/ID.yaml`, one campaign per file. The file stem is the campaign's "
             "id: `mailer plan black-friday` and the ledger name campaigns/black-friday.yaml "
             "by it. `name:` is the required display name. `subject` and `intros` are "
             "templates with the context of [templates](templates.md).", "",
             *_table(["key", "type", "default", "triggers", "meaning"], rows), "",
             "Keys that only other triggers read are accepted and ignored, except "
             + "; ".join(f"`{key}` (refused unless the trigger is {_code(list(triggers))})"
                         for key, triggers in ONLY_FOR.items()) + ".", ""]
    for trigger in TRIGGERS:
        rule = TRIGGER_RULES[trigger]
        lines += [f"### trigger: {trigger}", "", rule.due, "",
                  f"- required: {_code([*required, *rule.needs])}",
                  f"- optional: {_code([*rule.reads, *common])}",
                  f"- example: [examples/{trigger}.yaml](examples/{trigger}.yaml)", ""]
    grace = [t for t, rule in TRIGGER_RULES.items() if "grace" in rule.reads]
    lines += ["### Rules across keys", "",
              "- `ends` must be after `starts`.",
              "- `winner` needs at least two subjects (a list).",
              f"- On {_and(grace)} campaigns `winner.after` must be shorter than `grace`, or "
              "the rest of the audience would never get the winning subject.",
              "- `segment` and the segments `intros` names (all but `default`) must exist in "
              "segments/; `template` must exist in templates/.", ""]
    return lines


def _segment_section() -> list[str]:
    tree = _tree_properties()
    lines = ["## Segment files", "",
             "`segments/NAME.yaml`, one segment per file; the file stem is its name, which "
             "campaigns (`segment:`, `intros`) and `in_segment` use. The file holds an "
             "optional `description` and one tree: `all`, `any` or `not` (or a single "
             "condition), nested as deep as "
             f"{lang.MAX_NESTING} levels, at most {lang.MAX_ITEMS} items per list and "
             f"{lang.MAX_CONDITIONS} conditions in all (`in_segment` inlined). Each item of a "
             "list is one condition or another `all`/`any`/`not`. See "
             "[segments](segments.md) for the exact meaning.", "",
             *_table(["key", "value", "meaning"], [
                 ["`description`", "text", "What the segment is for (`mailer segments "
                                           "list` shows it); optional."],
                 ["`all`", "list of items", tree["all"]["description"]],
                 ["`any`", "list of items", tree["any"]["description"]],
                 ["`not`", "item or list of items", tree["not"]["description"]]]), ""]
    for family, kinds in lang.FAMILIES.items():
        lines += [f"### {', '.join(kinds)}", "",
                  *_table(["condition", "meaning", "example"],
                          [[f"`{kind}`", lang.CONDITION_DOCS[kind][0],
                            f"`{lang.CONDITION_DOCS[kind][1]}`"] for kind in kinds]), ""]
        lines += _condition_keys(kinds)
        name = family.replace("_", "-")
        lines += [f"Example: [examples/segment-{name}.yaml](examples/segment-{name}.yaml)", ""]
    return lines


def _key_label(kinds: tuple[str, ...], key: str) -> str:
    """KEY's value in words, per condition of the family where they differ."""
    labels: dict[str, list[str]] = {}
    for kind in kinds:
        labels.setdefault(_label(_key_schema(kind, key)), []).append(kind)
    if len(labels) == 1:
        return next(iter(labels))
    return "; ".join(f"{label} ({_and(named)})" for label, named in labels.items())


def _condition_keys(kinds: tuple[str, ...]) -> list[str]:
    """The keys a family of conditions takes (they share them), and its rules."""
    kind = kinds[0]
    if kind not in lang.ALLOWED_KEYS:
        return [f"The value: {_label(_condition_schema(kind))}.", ""]
    keys = [[f"`{key}`", _key_label(kinds, key), lang.KEY_DOCS[key]]
            for key in lang.ALLOWED_KEYS[kind]]
    lines = [*_table(["key", "value", "meaning"], keys), ""]
    rules = [f"needs {'one of ' if len(group) > 1 else ''}{_code(group)}"
             for group, _ in lang.REQUIRED_KEYS.get(kind, ())]
    rules += [f"at most one of {_code([k for k in group if k in lang.ALLOWED_KEYS[kind]])}"
              for group in lang.ONE_OF
              if len([k for k in group if k in lang.ALLOWED_KEYS[kind]]) > 1]
    bare = lang.BARE.get(kind)
    if bare == "eq/in":
        rules.append("a bare value means `eq`, a bare list `in`")
    elif bare == "contains":
        rules.append("a bare value or list means `contains`")
    return [*lines, f"Rules: {'; '.join(rules)}.", ""]


def reference_markdown() -> str:
    """docs/reference.md: every key of every workspace file, with its type, default and
    meaning."""
    lines = [INTRO, *_values_section(), *_settings_section(), *_campaign_section(),
             *_segment_section()]
    return "\n".join(lines).rstrip("\n") + "\n"
