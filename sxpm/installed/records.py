"""Install records: what is installed where, read without the store.

Every installed tree ``<root>/<kind>s/<name>/<version>/`` holds ``.sxpm-install.json``
(written by :func:`sxpm.installed.tree.materialize`). Reading those records needs only the
file system and ``json``, so ``sxpm run NAME`` finds an installed model without
loading the store, the OCI modules or the install machinery.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sxpm.core.names import INSTALL_RECORD
from sxpm.home import KINDS

__all__ = ["INSTALL_RECORD", "Installed", "find_installed", "install_dir", "list_installed"]


@dataclass(frozen=True)
class Installed:
    kind: str
    name: str
    version: str
    path: Path
    record: dict[str, Any]


def install_dir(root: Path, kind: str, name: str, version: str) -> Path:
    return root / f"{kind}s" / name / version


def list_installed(root: Path, kind: str | None = None) -> list[Installed]:
    out: list[Installed] = []
    for k in KINDS if kind is None else (kind,):
        base = root / f"{k}s"
        for record_path in sorted(base.glob(f"*/*/{INSTALL_RECORD}")):
            if record_path.parent.name.startswith("."):
                continue  # a tree being built, or one a killed install left behind
            try:
                record = json.loads(record_path.read_text())
            except (OSError, ValueError, RecursionError):
                continue
            if not isinstance(record, dict):
                continue  # not a record sxpm wrote
            out.append(Installed(k, record.get("name", record_path.parent.parent.name),
                                 record.get("version", record_path.parent.name),
                                 record_path.parent, record))
    return out


def find_installed(root: Path, kind: str, name: str, version: str | None = None
                   ) -> list[Installed]:
    return [i for i in list_installed(root, kind)
            if i.name == name and (version is None or i.version == version)]
