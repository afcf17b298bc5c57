"""Where the index is: ``--index``, ``SXPM_INDEX``, ``simplex.toml``, the home's config.

Read at call time (never frozen at import) and without importing the store, so a
search stays cheap. ``simplex.toml`` is read by :mod:`sxpm.project.manifest` only.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from sxpm.errors import IndexLocationError, ManifestError
from sxpm.project.manifest import Project


def _absolute(location: str, base: Path) -> str:
    if location.startswith(("http://", "https://", "file://")):
        return location
    path = Path(location).expanduser()
    return str(path if path.is_absolute() else base / path)


def _from_project(project: Project) -> str | None:
    registries = project.data.get("registries")
    value = registries.get("index") if isinstance(registries, dict) else None
    if value is None:
        return None  # the nearest project decides, even when it names no index
    if not isinstance(value, str) or not value:
        raise ManifestError(str(project.path), "must be a URL or a path",
                            path="$.registries.index")
    return _absolute(value, project.root)


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


def find_index(explicit: str | None = None, *, project: Project | None = None,
               cwd: Path | None = None) -> str:
    """The index location, by precedence; :class:`IndexLocationError` when none is set.

    ``project`` is the project in use (its ``[registries] index``; relative paths are
    taken from its folder); without one, the nearest ``simplex.toml`` above ``cwd`` is
    read for that one table.
    """
    base = project.root if project is not None else (cwd or Path.cwd())
    if explicit:
        return _absolute(explicit, base)
    env = os.environ.get("SXPM_INDEX")
    if env:
        return _absolute(env, base)
    if project is None:
        project = Project.nearest(base)
    found = (_from_project(project) if project is not None else None) or _from_home()
    if found:
        return found
    raise IndexLocationError("No index is configured")
