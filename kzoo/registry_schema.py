"""Validation of registry files against ``weights_registry.schema.json``.

kzoo carries its own validator for the JSON Schema subset the registry schema uses (no jsonschema
dependency); a keyword outside that subset is an error, so the schema cannot say more than is checked.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from kzoo.errors import RegistryError

SCHEMA_PATH = Path(__file__).with_name("weights_registry.schema.json")


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
