"""Helpers of the reliability tests: artifacts built in a home's store, store snapshots,
and sxpm run as a child process that a test can kill at a chosen moment."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable
from pathlib import Path

MiB = 1024 * 1024


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def make_model(home: Path, ref_text: str, files: dict[str, bytes], *, name: str = "relmodel",
               version: str = "1.0.0", config: dict | None = None,
               titles: dict[str, str] | None = None) -> str:
    """A model artifact (one layer per file) in ``home``'s store under ``ref_text``."""
    from sxpm.core import oci
    from sxpm.home import Home
    from sxpm.store.refs import store_name

    h = Home(home)
    store = h.store
    store.ensure()
    cfg = config if config is not None else {"descriptor": {"name": name, "version": version}}
    config_desc = store.put_bytes(json.dumps(cfg).encode(), oci.MODEL_CONFIG)
    layers = tuple(store.put_bytes(data, oci.MODEL_WEIGHT,
                                   annotations={oci.ANN_FILEPATH: (titles or {}).get(f, f)})
                   for f, data in files.items())
    desc = store.put_manifest(oci.Manifest(config_desc, layers,
                                           artifact_type=oci.MODEL_ARTIFACT))
    store.set_ref(store_name(h.parse_ref(ref_text)), desc)
    return str(desc.digest)


def tar_zstd(members: list[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    """A tar+zstd stream of ``members`` exactly as given (hostile ones included)."""
    import zstandard

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for info, data in members:
            tf.addfile(info, io.BytesIO(data) if data is not None else None)
    return zstandard.ZstdCompressor(level=3).compress(buf.getvalue())


def make_package(home: Path, ref_text: str, layer: bytes, *, name: str = "relpkg",
                 version: str = "0.1.0") -> str:
    """A package artifact whose one layer is ``layer`` (a tar+zstd, possibly hostile)."""
    from sxpm.core import oci
    from sxpm.home import Home
    from sxpm.store.refs import store_name

    h = Home(home)
    store = h.store
    store.ensure()
    config = store.put_bytes(json.dumps({"name": name, "version": version}).encode(),
                             oci.PACKAGE_CONFIG)
    layer_desc = store.put_bytes(layer, oci.PACKAGE_LAYER)
    desc = store.put_manifest(oci.Manifest(config, (layer_desc,),
                                           artifact_type=oci.PACKAGE_ARTIFACT))
    store.set_ref(store_name(h.parse_ref(ref_text)), desc)
    return str(desc.digest)


def tree(root: Path) -> dict[str, str]:
    """Every path under ``root`` with what it is (file digest, dir, link target)."""
    out: dict[str, str] = {}
    if not root.exists():
        return out
    for dirpath, dirnames, filenames in os.walk(root):
        for d in dirnames:
            p = Path(dirpath, d)
            out[str(p.relative_to(root))] = "link" if p.is_symlink() else "dir"
        for f in filenames:
            p = Path(dirpath, f)
            if p.is_symlink():
                out[str(p.relative_to(root))] = "link->" + os.readlink(p)
            elif p.is_file():
                out[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest()
            else:
                out[str(p.relative_to(root))] = "special"
    return out


def store_state(home: Path) -> dict[str, str]:
    """The store's content (blobs, partials, index.json); lock files left out."""
    return tree(home / "store")


def spawn(cli, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:  # noqa: ANN001
    return subprocess.Popen([sys.executable, "-m", "sxpm", *args], cwd=cli.cwd,
                            env={**cli.env, **(env or {})}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)


def kill_when(proc: subprocess.Popen[bytes], condition: Callable[[], bool],
              timeout: float = 60) -> bool:
    """SIGKILL ``proc`` as soon as ``condition()`` holds; False if it ended first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        if condition():
            proc.kill()
            proc.wait()
            return True
        time.sleep(0.002)
    proc.kill()
    proc.wait()
    raise AssertionError("the kill condition never held")
