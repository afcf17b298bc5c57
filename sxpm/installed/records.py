"""Install records: what is installed where, read without the store.

Every installed tree ``<root>/<kind>s/<name>/<version>/`` (another variant of the same
version: ``<version>~<variant>/``, see :func:`sxpm.installed.tree.tree_dir`) holds
``.sxpm-install.json`` (written by :func:`sxpm.installed.tree.materialize`). Reading
those records needs only the file system and ``json``, so ``sxpm run NAME`` finds an
installed model without loading the store, the OCI modules or the install machinery.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sxpm.core import categories
from sxpm.core.gguf import read_header
from sxpm.core.names import INSTALL_RECORD
from sxpm.errors import ModelFileError, NotFoundError, StoreError
from sxpm.home import KINDS, default_home

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


def main_gguf(path: Path, record: dict[str, Any]) -> Path:
    """The GGUF an installed model runs: the largest one its record lists (as `sxpm
    pack` chose it), an Ollama model's adapter and projector left out."""
    names = [str(n) for n in record.get("files", {}) if str(n).lower().endswith(".gguf")
             and not str(n).startswith("ollama/")]
    files: list[Path] = [path / n for n in names if (path / n).is_file()] or sorted(
        path.rglob("*.gguf"))
    if not files:
        raise NotFoundError(f"The installed model at {path} holds no .gguf file",
                            hint="reinstall it with `sxpm model install REF`")
    return max(files, key=lambda p: p.stat().st_size)


def installed_traits(item: Installed) -> categories.Traits | None:
    """An installed model's category and capabilities: its record's, else (a record
    written before records held them) read from its GGUF header; None when unreadable."""
    traits = categories.from_record(item.record)
    if traits is not None or item.kind != "model":
        return traits
    try:
        header = read_header(main_gguf(item.path, item.record))
    except (NotFoundError, ModelFileError, OSError):
        return None
    template = "ollama/template" in item.record.get("files", {})
    return categories.resolve(None, None, header, template=template)


def file_stamp(path: Path) -> list[int]:
    """What an installed file is now: [size, inode, mtime in ns]."""
    st = os.stat(path)
    return [st.st_size, st.st_ino, st.st_mtime_ns]


def stamps_path(tree: Path) -> Path:
    """Where this machine keeps the stamps of an installed tree.

    Not in the tree: a file's inode and time belong to this machine, and two homes
    installing one lock must build byte-identical trees. Kept in the home's cache,
    named by the tree's path."""
    key = hashlib.sha256(str(tree.absolute()).encode()).hexdigest()
    return default_home() / "cache" / "stamps" / key[:2] / f"{key}.json"


def take_stamps(tree: Path, titles: list[str]) -> dict[str, list[int]]:
    """What each file of ``tree`` is now. Taken in a tree being built, before it is
    renamed into place: renaming the directory changes none of them, and another
    install of the same tree may replace the final one at any moment."""
    return {t: file_stamp(tree / t) for t in titles if t and (tree / t).is_file()}


def save_stamps(tree: Path, titles: list[str],
                stamps: dict[str, list[int]] | None = None) -> None:
    """Record what each installed file is (``stamps`` taken before, else now; best
    effort: without stamps a load trusts the tree, as for trees installed before
    stamps existed)."""
    if stamps is None:
        stamps = take_stamps(tree, titles)
    path = stamps_path(tree)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        tmp.write_text(json.dumps(stamps, sort_keys=True))
        os.replace(tmp, path)
    except OSError:
        pass


def read_stamps(tree: Path) -> dict[str, Any] | None:
    try:
        stamps = json.loads(stamps_path(tree).read_text())
    except (OSError, ValueError):
        return None
    return stamps if isinstance(stamps, dict) else None


def check_files(item: Installed, titles: list[str] | None = None) -> None:
    """Refuse an installed file that changed since install: one ``stat`` each when it
    matches its record; else its bytes are hashed against the record's digest, and a
    file that no longer matches raises :class:`~sxpm.errors.StoreError` with the
    command that repairs it. A tree installed before stamps were recorded is trusted."""
    stamps = read_stamps(item.path)
    files = item.record.get("files", {})
    if not isinstance(stamps, dict) or not isinstance(files, dict):
        return
    for title in titles if titles is not None else list(stamps):
        want = stamps.get(title)
        path = item.path / title
        try:
            if want is None or file_stamp(path) == want:
                continue
        except OSError:
            pass
        digest = str(files.get(title, ""))
        algorithm, _, hexdigest = digest.partition(":")
        try:
            h = hashlib.new(algorithm or "sha256")
            with open(path, "rb") as fh:
                while chunk := fh.read(1 << 20):
                    h.update(chunk)
            if h.hexdigest() == hexdigest:
                continue  # touched, not changed
        except (OSError, ValueError):
            pass
        variant = item.record.get("variant")
        raise StoreError(f"{path} changed since it was installed (size, inode or time "
                         f"differ and its bytes do not match {digest[:19]})",
                         hint=f"sxpm {item.kind} install {item.record.get('ref')}"
                              + (f" --variant {variant}" if variant else "") + " --repair")
