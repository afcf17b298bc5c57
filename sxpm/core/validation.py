"""JSON Schema validation of every file sxpm reads or writes.

Two validators over the same schema: ``fastjsonschema`` compiles the schema to Python
and answers "valid?" some fifty times faster, which matters when an index read checks
thousands of lines; ``jsonschema`` runs only on the rare invalid input, to name the
first bad field with its path. Both follow the same keywords (the schemas use nothing
newer than draft 7 besides ``$defs``, which is a plain JSON pointer to both).
"""

from __future__ import annotations

import hashlib
import json
import os
from functools import cache
from pathlib import Path
from typing import Any

from sxpm.errors import ManifestError


@cache
def _schema(name: str) -> Any:
    from importlib import resources

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


class ValidationCache:
    """Files that passed their checks before, by content: ``$SIMPLEX_HOME/cache/checked``.

    jsonschema alone takes longer to import than a no-op ``sxpm install --frozen`` may
    take, so a file whose exact bytes passed the schema (and whatever the caller
    checks with it) under this sxpm and this schema is not checked again. Only passes
    are remembered; a file that fails is checked, and reported, every time.
    """

    def __init__(self, root: Path) -> None:
        self.root = root

    @classmethod
    def for_home(cls) -> ValidationCache | None:
        env = os.environ.get("SIMPLEX_HOME")
        try:
            root = Path(env).expanduser() if env else Path.home() / ".simplex"
        except RuntimeError:  # no home directory to cache in
            return None
        return cls(root / "cache" / "checked")

    def key(self, schema: str, text: str) -> str | None:
        """A digest of the schema, sxpm's version and ``text``; None without the schema."""
        from sxpm._version import __version__

        try:
            package = Path(__file__).parent.parent  # sxpm/
            schema_bytes = (package / "schemas" / f"{schema}.schema.json").read_bytes()
            stamps = ",".join(str(os.stat(package / f).st_mtime_ns) for f in
                              ("core/validation.py", "project/manifest.py", "core/versions.py"))
        except OSError:
            return None
        # The code that checks is in the key too: an upgrade or an edit checks afresh.
        h = hashlib.sha256()
        for part in (__version__.encode(), stamps.encode(), schema.encode(), schema_bytes,
                     text.encode()):
            h.update(len(part).to_bytes(8, "big"))
            h.update(part)
        return h.hexdigest()

    def seen(self, key: str) -> bool:
        return (self.root / key[:2] / key).is_file()

    def remember(self, key: str) -> None:
        try:
            (self.root / key[:2]).mkdir(parents=True, exist_ok=True)
            (self.root / key[:2] / key).touch()
        except OSError:
            pass  # a read-only home only loses the shortcut
