"""Where sxpm keeps its state: ``$SIMPLEX_HOME`` (default ``~/.simplex``).

Read from the environment when asked, never frozen at import time, so tests and
embedding programs can point sxpm at another home at any moment.

Layout of a home::

    config.json       settings (default registry, index, trust)
    store/            OCI image layout: every blob and manifest, content-addressed
    locks/            lock files of the store
    models/<name>/<version>/    installed trees (hard links into store/)
    experts/<name>/<version>/
    packages/<name>/<version>/
    registry/         the embedded default registry (one OCI layout per repository)
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sxpm.core.categories import CATEGORIES
from sxpm.errors import ManifestError

if TYPE_CHECKING:
    from sxpm.core.reference import Reference
    from sxpm.store.layout import OCILayout

# The store and references load when first used: ``sxpm run NAME`` finds an installed
# model from the home's path alone, without them.

KINDS = ("model", "expert", "package")


def default_home() -> Path:
    env = os.environ.get("SIMPLEX_HOME")
    return Path(env).expanduser() if env else Path.home() / ".simplex"


@dataclass
class Home:
    root: Path

    @classmethod
    def from_env(cls) -> Home:
        return cls(default_home().resolve())

    @cached_property
    def store(self) -> OCILayout:
        from sxpm.store.layout import OCILayout

        return OCILayout(self.root / "store", lock_dir=self.root / "locks")

    @property
    def config_path(self) -> Path:
        return self.root / "config.json"

    def config(self) -> dict[str, Any]:
        try:
            data = json.loads(self.config_path.read_text())
        except FileNotFoundError:
            return {}
        except ValueError as exc:
            raise ManifestError(str(self.config_path), f"not valid JSON ({exc})",
                                hint="fix or delete the file") from None
        if not isinstance(data, dict):
            raise ManifestError(str(self.config_path), "must be a JSON object")
        return data

    def default_models(self) -> dict[str, str]:
        """``default_models`` of ``config.json``: category -> the model (``NAME`` or
        ``NAME@VERSION``) ``sxpm.load(category=...)`` takes when the project names none."""
        value = self.config().get("default_models", {})
        example = 'e.g. "default_models": {"mnemonic": "embed-small"}'
        if not isinstance(value, dict):
            raise ManifestError(str(self.config_path), "default_models must be an object",
                                path="$.default_models", hint=example)
        for category, name in value.items():
            if category not in CATEGORIES:
                raise ManifestError(str(self.config_path), f"unknown category {category!r}",
                                    path="$.default_models",
                                    hint=f"use {', '.join(CATEGORIES)}")
            if not isinstance(name, str) or not name:
                raise ManifestError(str(self.config_path), "a default model is a name",
                                    path=f"$.default_models.{category}", hint=example)
        return dict(value)

    def save_config(self, data: dict[str, Any]) -> None:
        from sxpm.store.layout import write_atomic

        write_atomic(self.config_path, json.dumps(data, indent=2, sort_keys=True).encode())

    @property
    def default_registry(self) -> str:
        """Registry for references with no host: the config's, else the embedded one."""
        env = os.environ.get("SXPM_REGISTRY")
        if env:
            return env
        configured = self.config().get("default_registry")
        if isinstance(configured, str) and configured:
            return configured
        from sxpm.core.reference import LAYOUT_SCHEME

        return f"{LAYOUT_SCHEME}{self.root / 'registry'}"

    def parse_ref(self, text: str) -> Reference:
        from sxpm.core.reference import Reference

        return Reference.parse(text, default_registry=self.default_registry)

    def install_root(self, kind: str) -> Path:
        return self.root / f"{kind}s"
