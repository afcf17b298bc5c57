"""JSON Schema validation of every file sxpm reads or writes.

Two validators over the same schema: ``fastjsonschema`` compiles the schema to Python
and answers "valid?" some fifty times faster, which matters when an index read checks
thousands of lines; ``jsonschema`` runs only on the rare invalid input, to name the
first bad field with its path. Both follow the same keywords (the schemas use nothing
newer than draft 7 besides ``$defs``, which is a plain JSON pointer to both).
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

from sxpm.errors import ManifestError


@cache
def _schema(name: str) -> Any:
    text = resources.files("sxpm.schemas").joinpath(f"{name}.schema.json").read_text()
    return json.loads(text)


@cache
def _validator(name: str) -> Any:
    from jsonschema import Draft202012Validator, FormatChecker

    return Draft202012Validator(_schema(name), format_checker=FormatChecker())


@cache
def _fast(name: str) -> Any:
    import fastjsonschema

    schema = dict(_schema(name))
    schema["$schema"] = "http://json-schema.org/draft-07/schema#"
    return fastjsonschema.compile(schema)


def json_path(parts: Any) -> str:
    out = "$"
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


def first_error(instance: Any, schema: str) -> tuple[str, str] | None:
    """(message, JSON path) of the first problem of ``instance``, or None when valid."""
    import fastjsonschema

    try:
        _fast(schema)(instance)
        return None
    except fastjsonschema.JsonSchemaException:
        pass  # find out exactly what is wrong, below
    errors = sorted(_validator(schema).iter_errors(instance),
                    key=lambda e: (len(e.absolute_path), list(map(str, e.absolute_path))))
    if not errors:
        return None
    err = errors[0]
    message = err.message
    if isinstance(err.schema, dict) and "x-message" in err.schema:
        message = f"{err.instance!r} {err.schema['x-message']}"
    elif err.schema is False:
        message = "this field is not allowed here"
    if len(message) > 200:
        message = message[:200] + "..."
    return message, json_path(err.absolute_path)


def validate(instance: Any, schema: str, source: str) -> None:
    """Raise :class:`ManifestError` naming ``source`` and the path of the first bad field."""
    found = first_error(instance, schema)
    if found is not None:
        raise ManifestError(source, found[0], path=found[1])
