"""Typed, frozen descriptions of the workspace YAML and their validation.

`check()` validates a loaded YAML document against a pydantic model and turns
every error into a `Problem` with the file, the line of the offending key and
the dotted field path, with "did you mean" for misspelt keys. `json_schema()`
describes a model as users write it, for `mailer schema`.
"""

from __future__ import annotations

import types
import typing
from datetime import time, timedelta
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic.json_schema import GenerateJsonSchema

from mailer.config.yamlsrc import line_of
from mailer.core.errors import Problem
from mailer.core.suggest import did_you_mean

M = TypeVar("M", bound=BaseModel)


class Spec(BaseModel):
    """Base of every workspace schema: immutable, and unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


def _unwrap(annotation: Any) -> Any:
    """The model class inside Optional[...], list[...], Annotated[...], if any."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _unwrap(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType, list, tuple):
        for arg in typing.get_args(annotation):
            found = _unwrap(arg)
            if isinstance(found, type) and issubclass(found, BaseModel):
                return found
    return annotation


def _keys_of(model: type[BaseModel], loc: tuple[str | int, ...]) -> list[str]:
    """The keys allowed in the mapping at `loc` (for "did you mean")."""
    current: Any = model
    for part in loc:
        if isinstance(part, int):
            continue
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return []
        field = next((f for name, f in current.model_fields.items()
                      if (f.alias or name) == part), None)
        if field is None:
            return []
        current = _unwrap(field.annotation)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return [f.alias or name for name, f in current.model_fields.items()]
    return []


def _message(error: Any, model: type[BaseModel]) -> str:
    kind = error["type"]
    loc = tuple(error["loc"])
    if kind == "extra_forbidden":
        return "unknown key" + did_you_mean(str(loc[-1]), _keys_of(model, loc[:-1]))
    if kind == "missing":
        return "required key is missing"
    message = str(error["msg"])
    for prefix in ("Value error, ", "Assertion failed, "):
        message = message.removeprefix(prefix)
    if kind.endswith("_type") or kind.endswith("_parsing") or kind in ("literal_error", "enum"):
        message = f"{message[0].lower()}{message[1:]}, got {error.get('input')!r}"
    return message


def problems_from(err: ValidationError, data: Any, path: str,
                  model: type[BaseModel]) -> list[Problem]:
    """Each validation error as a Problem at the line of its key."""
    problems = []
    for error in err.errors():
        # Pydantic adds the name of a tagged or function validator to loc; keep real keys only.
        loc = tuple(part for part in error["loc"] if not (isinstance(part, str) and "[" in part))
        field = ".".join(str(part) for part in loc) or None
        problems.append(Problem(path, line_of(data, loc), field, _message(error, model)))
    return problems


def check(model: type[M], data: Any, path: str) -> tuple[M | None, list[Problem]]:
    """Validate `data` (from load_yaml) against `model`: the spec, or every problem."""
    if not isinstance(data, dict):
        return None, [Problem(path, getattr(data, "line", 1), None,
                              "expected a mapping of keys to values at the top level")]
    try:
        return model.model_validate(data), []
    except ValidationError as err:
        return None, problems_from(err, data, path, model)


def _as_written(value: Any) -> Any:
    """A default as a user would write it in YAML: `6h`, not ISO 8601's `PT6H`."""
    if isinstance(value, timedelta):
        seconds = int(value.total_seconds())
        for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
            if seconds and seconds % size == 0:
                return f"{seconds // size}{unit}"
        return f"{seconds}s"
    if isinstance(value, time):
        return f"{value:%H:%M}"
    if isinstance(value, BaseModel):
        return {field.alias or name: _as_written(getattr(value, name))
                for name, field in type(value).model_fields.items()
                if getattr(value, name) is not None}
    if isinstance(value, (list, tuple)):
        return [_as_written(item) for item in value]
    if isinstance(value, dict):
        return {str(key): _as_written(item) for key, item in value.items()}
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


class _AsWritten(GenerateJsonSchema):
    """JSON Schema of the YAML: defaults as written, no titles made from field names."""

    def field_title_should_be_set(self, schema: Any) -> bool:
        return False

    def encode_default(self, dft: Any) -> Any:
        return _as_written(dft)


def json_schema(model: type[BaseModel]) -> dict[str, Any]:
    """MODEL's JSON Schema (draft 2020-12) with its keys as users write them (`from`)."""
    return model.model_json_schema(by_alias=True, schema_generator=_AsWritten)
