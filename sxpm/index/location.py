"""Where the index is: ``--index``, ``SXPM_INDEX``, ``simplex.toml``, the home's config.

Read at call time (never frozen at import) and without importing the store, so a
search stays cheap.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from sxpm.errors import IndexLocationError, ManifestError


def _absolute(location: str, base: Path) -> str:
    if location.startswith(("http://", "https://", "file://")):
        return location
    path = Path(location).expanduser()
    return str(path if path.is_absolute() else base / path)


def _from_project(start: Path) -> str | None:
    for folder in [start, *start.parents]:
        manifest = folder / "simplex.toml"
        if not manifest.is_file():
            continue
        import tomllib

        try:
            with open(manifest, "rb") as fh:
                doc = tomllib.load(fh)
        except tomllib.TOMLDecodeError as exc:
            raise ManifestError(str(manifest), f"invalid TOML: {exc}") from None
        return _from_registries(doc.get("registries"), manifest)
    return None


def _from_registries(registries: object, manifest: Path) -> str | None:
    value = registries.get("index") if isinstance(registries, dict) else None
    if value is None:
        return None  # the nearest project decides, even when it names no index
    if not isinstance(value, str) or not value:
        raise ManifestError(str(manifest), "must be a URL or a path",
                            path="$.registries.index")
    return _absolute(value, manifest.parent)


def _from_home() -> str | None:
    env = os.environ.get("SIMPLEX_HOME")
    root = Path(env).expanduser() if env else Path.home() / ".simplex"
    path = root / "config.json"
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except ValueError as exc:
        raise ManifestError(str(path), f"not valid JSON ({exc})") from None
    value = data.get("index") if isinstance(data, dict) else None
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise ManifestError(str(path), "must be a URL or a path", path="$.index")
    return _absolute(value, root)


def find_index(explicit: str | None = None, *, cwd: Path | None = None,
               project: tuple[Path, object] | None = None) -> str:
    """The index location, by precedence; :class:`IndexLocationError` when none is set.

    ``project``: the ``simplex.toml`` a command already read and its ``[registries]``
    table, used instead of looking for (and reading) the file again.
    """
    base = cwd or Path.cwd()
    if explicit:
        return _absolute(explicit, base)
    env = os.environ.get("SXPM_INDEX")
    if env:
        return _absolute(env, base)
    found = (_from_registries(project[1], project[0]) if project is not None
             else _from_project(base)) or _from_home()
    if found:
        return found
    raise IndexLocationError("No index is configured")
