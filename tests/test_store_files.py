"""Files the store writes (issue 13: 17, 18): digests by their own algorithm, and
atomic writes that keep a file's mode instead of leaving it owner-only."""

from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path

import pytest
from relhelp import make_model

pytestmark = pytest.mark.timeout(120)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def umask_022():  # noqa: ANN201
    old = os.umask(0o022)
    yield
    os.umask(old)


# --- 18: modes -------------------------------------------------------------------


@pytest.mark.parametrize("before", [0o644, 0o664, 0o640, 0o444], ids=oct)
def test_write_atomic_keeps_the_mode_it_replaces(before: int, tmp_path: Path,
                                                 umask_022: None) -> None:
    from sxpm.store.layout import write_atomic

    path = tmp_path / "simplex.toml"
    path.write_text("old")
    os.chmod(path, before)
    write_atomic(path, b"new")
    assert path.read_bytes() == b"new" and _mode(path) == before


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077], ids=oct)
def test_write_atomic_gives_a_new_file_the_umask_mode(umask: int, tmp_path: Path) -> None:
    from sxpm.store.layout import write_atomic

    old = os.umask(umask)
    try:
        write_atomic(tmp_path / "index.json", b"{}")
    finally:
        os.umask(old)
    assert _mode(tmp_path / "index.json") == 0o666 & ~umask


def test_write_atomic_keeps_the_owner_it_replaces(tmp_path: Path) -> None:
    from sxpm.store.layout import write_atomic

    if os.geteuid() != 0:
        pytest.skip("only root can give a file to another user")
    path = tmp_path / "simplex.lock"
    path.write_text("old")
    os.chown(path, 4321, 4321)
    write_atomic(path, b"new")
    assert (path.stat().st_uid, path.stat().st_gid) == (4321, 4321)


def test_secrets_are_owner_only_even_over_a_readable_file(tmp_path: Path,
                                                         umask_022: None) -> None:
    from sxpm.store.layout import write_atomic

    path = tmp_path / "config.json"
    path.write_text("{}")
    os.chmod(path, 0o644)
    write_atomic(path, b'{"auths": {}}', mode=0o600)
    assert _mode(path) == 0o600


def test_layout_registry_and_project_files_stay_readable(cli, tmp_path: Path,  # noqa: ANN001
                                                         sample_dir: Path,
                                                         umask_022: None) -> None:
    """A push into a layout registry shared between users and an edited project keep
    0644 (under umask 022); credentials written by `sxpm login` are 0600."""
    reg = tmp_path / "shared-registry" / "tiny"
    cli("pack", "model", str(sample_dir / "tiny-llama"), "--ref", f"oci:{reg}:1.0.0")
    cli("push", f"oci:{reg}:1.0.0")
    for name in ("index.json", "oci-layout"):
        assert _mode(reg / name) == 0o644, name
    project = tmp_path / "proj"
    project.mkdir()
    cli("init", str(project), "--name", "proj")
    assert _mode(project / "simplex.toml") == 0o644
    from sxpm.home import Home

    Home(cli.home).save_config({"default_registry": "localhost:5000"})
    assert _mode(cli.home / "config.json") == 0o644


def test_credentials_file_is_owner_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                        umask_022: None) -> None:
    from sxpm.transport import credentials

    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker"))
    credentials._write({"auths": {"example.com": {"auth": "dTpw"}}})
    path = credentials.config_path()
    assert _mode(path) == 0o600


# --- 17: digests by their own algorithm ------------------------------------------


def _to_sha512(layout_dir: Path, tag: str) -> str:
    """Re-address ``tag``'s manifest in a layout registry by sha512 (the bytes as they
    are); the layer and config blobs stay sha256, as OCI allows."""
    index = json.loads((layout_dir / "index.json").read_text())
    entry = next(m for m in index["manifests"]
                 if m["annotations"]["org.opencontainers.image.ref.name"] == tag)
    alg, hexd = entry["digest"].split(":")
    data = (layout_dir / "blobs" / alg / hexd).read_bytes()
    digest = hashlib.sha512(data).hexdigest()
    (layout_dir / "blobs" / "sha512").mkdir(exist_ok=True)
    (layout_dir / "blobs" / "sha512" / digest).write_bytes(data)
    entry["digest"] = f"sha512:{digest}"
    (layout_dir / "index.json").write_text(json.dumps(index))
    return f"sha512:{digest}"


@pytest.mark.parametrize("by", ["tag", "digest"])
def test_sha512_manifest_pulls_from_a_layout_registry(by: str, lib_home, tmp_path: Path,  # noqa: ANN001
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from sxpm.home import Home
    from sxpm.ops.install import install
    from sxpm.ops.transfer import pull, push

    reg = tmp_path / "reg" / "m"
    ref = f"oci:{reg}:1.0.0"
    make_model(lib_home.root, ref, {"w.bin": b"weights"}, name="m")
    push(lib_home, lib_home.parse_ref(ref))
    digest = _to_sha512(reg, "1.0.0")
    other = Home(tmp_path / "home2")
    monkeypatch.setenv("SIMPLEX_HOME", str(other.root))
    target = ref if by == "tag" else f"oci:{reg}@{digest}"
    pull(other, other.parse_ref(target))
    assert other.store.has_blob(other.parse_ref(f"oci:{reg}@{digest}").digest)  # type: ignore[arg-type]
    inst = install(other, other.parse_ref(target))
    assert (inst.path / "w.bin").read_bytes() == b"weights"
    assert inst.record["digest"] == digest


def test_sha512_manifest_copies_into_another_layout(lib_home, tmp_path: Path) -> None:  # noqa: ANN001
    from sxpm.ops.transfer import copy, push

    reg = tmp_path / "reg" / "m"
    ref = f"oci:{reg}:1.0.0"
    make_model(lib_home.root, ref, {"w.bin": b"weights"}, name="m")
    push(lib_home, lib_home.parse_ref(ref))
    digest = _to_sha512(reg, "1.0.0")
    dst = tmp_path / "reg2" / "m"
    copy(lib_home, lib_home.parse_ref(ref), lib_home.parse_ref(f"oci:{dst}:1.0.0"))
    assert (dst / "blobs" / "sha512" / digest.split(":")[1]).is_file()


def test_a_lying_sha512_manifest_is_refused(lib_home, tmp_path: Path) -> None:  # noqa: ANN001
    from sxpm.errors import CorruptBlobError
    from sxpm.ops.transfer import pull, push

    reg = tmp_path / "reg" / "m"
    ref = f"oci:{reg}:1.0.0"
    make_model(lib_home.root, ref, {"w.bin": b"weights"}, name="m")
    push(lib_home, lib_home.parse_ref(ref))
    digest = _to_sha512(reg, "1.0.0")
    blob = reg / "blobs" / "sha512" / digest.split(":")[1]
    blob.write_bytes(blob.read_bytes().replace(b"weights", b"weightz") + b" ")
    with pytest.raises(CorruptBlobError):
        pull(lib_home, lib_home.parse_ref(f"oci:{reg}@{digest}"))
