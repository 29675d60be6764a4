"""Validation of registry files against ``weights_registry.schema.json``, and the strict JSON reading of
users' files (registry overlays, the pin file).

kzoo carries its own validator for the JSON Schema subset the registry schema uses (no jsonschema
dependency); a keyword outside that subset is an error, so the schema cannot say more than is checked.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from kzoo.errors import RegistryError

SCHEMA_PATH = Path(__file__).with_name("weights_registry.schema.json")


MAX_DEPTH = 32  # registry files nest 6 levels deep; pin files 3


class _JsonProblem(ValueError):
    pass


def _no_duplicate_keys(pairs):
    # json keeps the last of two equal keys silently; in a damaged file that can hide an entry or a pin
    keys = [key for key, _ in pairs]
    if len(set(keys)) != len(keys):
        twice = sorted({key for key in keys if keys.count(key) > 1})
        raise _JsonProblem(f"the key(s) {twice} appear twice in one object")
    return dict(pairs)


def _finite(text):
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise _JsonProblem(f"the number {text[:20]} is too large")
    return value


def _not_a_number(name):
    raise _JsonProblem(f"{name} is not a JSON number")


def _depth(doc) -> int:
    """How deeply ``doc`` nests (iteratively: the recursive validators must not meet a deep document)."""
    deepest, stack = 0, [(doc, 1)]
    while stack:
        value, depth = stack.pop()
        deepest = max(deepest, depth)
        if depth > MAX_DEPTH:
            break
        children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
        stack.extend((child, depth + 1) for child in children)
    return deepest


def read_json(path: Path, what: str, fix: str):
    """The JSON document in a user's file, read strictly: not UTF-8, not JSON, a key twice in one object,
    a non-finite or over-long number, or nesting deeper than MAX_DEPTH is a RegistryError that names the file
    (``what`` describes it, ``fix`` says what to do). FileNotFoundError passes through."""
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise RegistryError(f"{what} {path} cannot be read ({exc}). {fix}") from exc
    try:
        doc = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicate_keys, parse_float=_finite,
                         parse_constant=_not_a_number)
    except UnicodeDecodeError as exc:
        raise RegistryError(f"{what} {path} is not UTF-8 text (byte {exc.start}). {fix}") from exc
    except RecursionError as exc:
        raise RegistryError(f"{what} {path} nests too deeply to be a {what.lower()}. {fix}") from exc
    except ValueError as exc:  # JSONDecodeError, _JsonProblem, an integer of more than 4300 digits
        raise RegistryError(f"{what} {path} is not valid JSON: {exc}. {fix}") from exc
    if _depth(doc) > MAX_DEPTH:
        raise RegistryError(f"{what} {path} nests more than {MAX_DEPTH} levels deep. {fix}")
    return doc


def load_schema() -> dict:
    return json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))


_TYPES = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "boolean": lambda v: isinstance(v, bool),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "null": lambda v: v is None,
}


def schema_errors(instance, schema: dict | None = None, root: dict | None = None, path: str = "$") -> list[str]:
    """Errors of ``instance`` against the JSON Schema subset used by the registry schema.

    Supported keywords: type, enum, const, pattern, minimum, minLength, minItems, uniqueItems, items,
    properties, required, additionalProperties and local ``$ref``. Anything else in the schema is an
    error, so the schema cannot silently say more than this validator checks.
    """
    if schema is None:
        schema = load_schema()
    root = schema if root is None else root
    errors: list[str] = []
    known = {"type", "enum", "const", "pattern", "minimum", "minLength", "minItems", "uniqueItems", "items",
             "properties", "required", "additionalProperties", "$ref", "$defs", "$schema", "$id", "title",
             "description"}
    unknown = set(schema) - known
    if unknown:
        raise RegistryError(f"schema keyword(s) {sorted(unknown)} at {path} are not supported by kzoo's validator")
    if "$ref" in schema:
        ref = schema["$ref"]
        if not ref.startswith("#/"):
            raise RegistryError(f"only local $ref is supported, got {ref!r}")
        target = root
        for part in ref[2:].split("/"):
            target = target[part]
        return schema_errors(instance, target, root, path)
    if "type" in schema:
        types = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        if not any(_TYPES[t](instance) for t in types):
            return [f"{path}: expected {' or '.join(types)}, got {json.dumps(instance)[:60]}"]
    if "const" in schema and instance != schema["const"]:
        errors.append(f"{path}: must be {schema['const']!r}, got {instance!r}")
    if "enum" in schema and not any(_TYPES["null"](instance) if e is None else
                                    (instance == e and type(instance) is type(e)) for e in schema["enum"]):
        errors.append(f"{path}: {instance!r} is not one of {schema['enum']}")
    if isinstance(instance, str):
        if "pattern" in schema and not re.search(schema["pattern"], instance):
            errors.append(f"{path}: {instance!r} does not match {schema['pattern']}")
        if len(instance) < schema.get("minLength", 0):
            errors.append(f"{path}: shorter than {schema['minLength']}")
    if _TYPES["number"](instance) and "minimum" in schema and instance < schema["minimum"]:
        errors.append(f"{path}: {instance} < {schema['minimum']}")
    if isinstance(instance, list):
        if len(instance) < schema.get("minItems", 0):
            errors.append(f"{path}: fewer than {schema['minItems']} items")
        if schema.get("uniqueItems") and len({json.dumps(i, sort_keys=True) for i in instance}) != len(instance):
            errors.append(f"{path}: items are not unique")
        if "items" in schema:
            for i, item in enumerate(instance):
                errors += schema_errors(item, schema["items"], root, f"{path}[{i}]")
    if isinstance(instance, dict):
        for key in schema.get("required", ()):
            if key not in instance:
                errors.append(f"{path}: missing required field {key!r}")
        props = schema.get("properties", {})
        extra = schema.get("additionalProperties", True)
        for key, value in instance.items():
            if key in props:
                errors += schema_errors(value, props[key], root, f"{path}.{key}")
            elif extra is False:
                errors.append(f"{path}: unknown field {key!r}")
            elif isinstance(extra, dict):
                errors += schema_errors(value, extra, root, f"{path}.{key}")
    return errors
