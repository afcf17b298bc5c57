"""Hostile artifacts against the store and installed trees (issue 13: 1, 7, 14, 15).

Installed files are hard links to store blobs, so an install that opened a file of
its tree for writing would write into a blob another artifact uses. The tests run as
root (as Docker builds and CI do), where file modes stop nothing: each checks that the
store is byte for byte what it was after a refused attempt.
"""

from __future__ import annotations

import io
import json
import tarfile
import unicodedata
from pathlib import Path

import pytest
from relhelp import make_model, store_state, tar_zstd

pytestmark = pytest.mark.timeout(120)

PKG = "application/vnd.simplex.package.layer.v1.tar+zstd"


def _file(name: str, data: bytes = b"x") -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def _dir(name: str) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    return info, None


def _artifact(home: Path, ref_text: str, layers: list[tuple[str, bytes, str | None]],
              kind: str = "model") -> str:
    """An artifact whose layers are (media type, bytes, title) exactly as given."""
    from sxpm.core import oci
    from sxpm.home import Home
    from sxpm.store.refs import store_name

    h = Home(home)
    store = h.store
    store.ensure()
    config_type, artifact_type = {
        "model": (oci.MODEL_CONFIG, oci.MODEL_ARTIFACT),
        "package": (oci.PACKAGE_CONFIG, oci.PACKAGE_ARTIFACT)}[kind]
    cfg = ({"descriptor": {"name": "evil", "version": "1.0.0"}} if kind == "model"
           else {"name": "evil", "version": "1.0.0"})
    config = store.put_bytes(json.dumps(cfg).encode(), config_type)
    descs = tuple(store.put_bytes(data, mt, annotations={oci.ANN_TITLE: title} if title else {})
                  for mt, data, title in layers)
    desc = store.put_manifest(oci.Manifest(config, descs, artifact_type=artifact_type))
    store.set_ref(store_name(h.parse_ref(ref_text)), desc)
    return str(desc.digest)


W = "application/vnd.cncf.model.weight.v1.raw"
VICTIM = b"the signed weights of another artifact"
NFC = unicodedata.normalize("NFC", "caf\u00e9.bin")
NFD = unicodedata.normalize("NFD", "caf\u00e9.bin")

# Each: the layers; the victim's bytes are always the first layer's.
THROUGH_LINKS = {
    "two layers, one title": [(W, VICTIM, "w.bin"), (W, b"evil", "w.bin")],
    "title of the install record": [(W, VICTIM, ".sxpm-install.json")],
    "title of the install record, other case": [(W, VICTIM, ".SXPM-Install.json")],
    "titles equal up to case": [(W, VICTIM, "W.bin"), (W, b"evil", "w.bin")],
    "titles equal up to Unicode normalisation": [(W, VICTIM, NFC), (W, b"evil", NFD)],
    "titles equal after path normalisation": [(W, VICTIM, "d/w.bin"), (W, b"evil", "d/./w.bin")],
    "a title that is a directory of another": [(W, VICTIM, "a"), (W, b"evil", "a/b")],
    "a title under another": [(W, VICTIM, "a/b"), (W, b"evil", "a")],
    "package file on a linked title": [(W, VICTIM, "w.bin"),
                                       (PKG, tar_zstd([_file("w.bin", b"evil")]), None)],
    "package file on a linked title, package first": [
        (PKG, tar_zstd([_file("w.bin", b"evil")]), None), (W, VICTIM, "w.bin")],
    "package directory over a linked title": [
        (W, VICTIM, "w.bin"), (PKG, tar_zstd([_dir("w.bin"), _file("w.bin/x")]), None)],
    "package file named like the install record": [
        (W, VICTIM, "w.bin"), (PKG, tar_zstd([_file(".sxpm-install.json", b"{}")]), None)],
    "package with one member twice": [
        (W, VICTIM, "w.bin"), (PKG, tar_zstd([_file("x", b"1"), _file("x", b"2")]), None)],
}


@pytest.mark.parametrize("case", list(THROUGH_LINKS))
def test_install_never_writes_through_a_link(case: str, lib_home, tmp_path: Path,  # noqa: ANN001
                                             registry_dir: Path) -> None:
    from sxpm.errors import SxpmError
    from sxpm.ops.install import install

    ref = f"oci:{registry_dir}/evil:1.0.0"
    _artifact(lib_home.root, ref, THROUGH_LINKS[case])
    before = store_state(lib_home.root)
    with pytest.raises(SxpmError) as err:
        install(lib_home, lib_home.parse_ref(ref))
    line = err.value.one_line()
    assert len(line.splitlines()) == 1
    assert "land on" in line or "reserved" in line or "also" in line or "inside" in line, line
    assert store_state(lib_home.root) == before  # not one byte of a blob changed
    assert lib_home.store.verify().bad == []
    assert not any((lib_home.root / "models").glob("*/*")), "no install left behind"


def test_reserved_name_of_another_case_installs_nothing_elsewhere(lib_home,  # noqa: ANN001
                                                                  registry_dir: Path) -> None:
    """A second, honest artifact sharing the victim blob still installs its own bytes."""
    from sxpm.errors import SxpmError
    from sxpm.ops.install import install

    good = f"oci:{registry_dir}/good:1.0.0"
    make_model(lib_home.root, good, {"w.bin": VICTIM}, name="good")
    evil = f"oci:{registry_dir}/evil:1.0.0"
    _artifact(lib_home.root, evil, [(W, VICTIM, "w.bin"), (W, b"evil", "w.bin")])
    with pytest.raises(SxpmError):
        install(lib_home, lib_home.parse_ref(evil))
    inst = install(lib_home, lib_home.parse_ref(good))
    assert (inst.path / "w.bin").read_bytes() == VICTIM


PACK_CASES = {
    "a file named like the install record": {".sxpm-install.json": b"{}"},
    "two files equal up to case": {"README.md": b"a", "readme.md": b"b"},
    "two files equal up to Unicode normalisation": {NFC: b"a", NFD: b"b"},
}


@pytest.mark.parametrize("case", list(PACK_CASES))
@pytest.mark.parametrize("kind", ["model", "package"])
def test_pack_refuses_colliding_paths(case: str, kind: str, lib_home, tmp_path: Path,  # noqa: ANN001
                                      sample_dir: Path) -> None:
    import shutil

    from sxpm.artifacts.pack import pack
    from sxpm.errors import ArtifactInputError

    src = tmp_path / "src"
    if kind == "model":
        src.mkdir()
        shutil.copy(sample_dir / "tiny-llama" / "model.gguf", src / "model.gguf")
    else:
        shutil.copytree(sample_dir / "simplex-hello", src)
    for name, data in PACK_CASES[case].items():
        (src / name).write_bytes(data)
    lib_home.store.ensure()
    before = store_state(lib_home.root)
    with pytest.raises(ArtifactInputError) as err:
        pack(lib_home, kind, src, lib_home.parse_ref(f"oci:{tmp_path}/reg/x:1.0.0"))
    assert "rename the file" in err.value.one_line()
    assert store_state(lib_home.root) == before


def test_pack_refuses_an_expert_file_listed_twice(lib_home, tmp_path: Path,  # noqa: ANN001
                                                  sample_dir: Path) -> None:
    import shutil

    from sxpm.artifacts.pack import pack
    from sxpm.errors import ArtifactInputError

    src = tmp_path / "expert"
    shutil.copytree(sample_dir / "sql-expert", src)
    manifest = json.loads((src / "manifest.json").read_text())
    manifest["files"] = [*manifest.get("files", []), manifest["weights"]]
    (src / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtifactInputError, match="one path, two files"):
        pack(lib_home, "expert", src, lib_home.parse_ref(f"oci:{tmp_path}/reg/e:1.0.0"))


def test_copy_fallback_refuses_an_existing_file(tmp_path: Path) -> None:
    """Where hard links fail (another file system), the copy is a new file too."""
    import os

    from sxpm.errors import ArtifactInputError
    from sxpm.installed import tree as inst

    blob = tmp_path / "blob"
    blob.write_bytes(VICTIM)
    os.chmod(blob, 0o444)
    dst = tmp_path / "tree" / "w.bin"
    dst.parent.mkdir()
    os.link(blob, dst)
    real_link = os.link

    def no_links(src: object, dst: object) -> None:
        raise OSError(18, "Invalid cross-device link")

    os.link = no_links  # type: ignore[assignment]
    try:
        with pytest.raises(ArtifactInputError, match="land on"):
            inst._link_or_copy(tmp_path / "other", dst, "test")
        inst._link_or_copy(blob, tmp_path / "tree" / "copy.bin", "test")
    finally:
        os.link = real_link
    assert blob.read_bytes() == VICTIM
    assert (tmp_path / "tree" / "copy.bin").read_bytes() == VICTIM
    assert (tmp_path / "tree" / "copy.bin").stat().st_ino != blob.stat().st_ino



# --- 7: legacy .expert bombs -------------------------------------------------------


def _gz_stream(path: Path, chunks) -> Path:  # noqa: ANN001
    import gzip

    with gzip.open(path, "wb", compresslevel=6) as out:
        for chunk in chunks:
            out.write(chunk)
    return path


def _zeros_member(n: int):  # noqa: ANN202
    info = tarfile.TarInfo("weights.bin")
    info.size = n
    yield info.tobuf(format=tarfile.USTAR_FORMAT)
    block = bytes(1 << 20)
    for _ in range(n >> 20):
        yield block
    yield bytes(-n % 512) + bytes(1024)


def _pax_header(n: int):  # noqa: ANN202
    header = tarfile.TarInfo("././@PaxHeader")
    header.type = tarfile.XHDTYPE
    header.size = n
    yield header.tobuf(format=tarfile.USTAR_FORMAT)
    block = b"9" * (1 << 20)
    for _ in range(n >> 20):
        yield block


def _peak(fn):  # noqa: ANN001, ANN202
    import time
    import tracemalloc

    tracemalloc.start()
    start = time.perf_counter()
    try:
        fn()
    finally:
        elapsed = time.perf_counter() - start
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return elapsed, peak


LEGACY_BOMBS = {
    "ratio bomb (256 MiB of zeros)": (lambda: _zeros_member(256 << 20), "unpacks to over"),
    "pax header of 64 MiB": (lambda: _pax_header(64 << 20), "header over"),
}


@pytest.mark.parametrize("case", list(LEGACY_BOMBS))
def test_legacy_expert_bombs_are_bounded(case: str, tmp_path: Path) -> None:
    from sxpm.artifacts.pack import extract_legacy_expert
    from sxpm.errors import ArtifactInputError

    make, expected = LEGACY_BOMBS[case]
    archive = _gz_stream(tmp_path / "bomb.expert", make())
    assert archive.stat().st_size < 1 << 20
    dest = tmp_path / "out"
    dest.mkdir()
    caught: list[ArtifactInputError] = []

    def run() -> None:
        try:
            extract_legacy_expert(archive, dest)
        except ArtifactInputError as exc:
            caught.append(exc)

    elapsed, peak = _peak(run)
    assert caught and expected in caught[0].one_line(), caught
    written = sum(p.stat().st_size for p in dest.rglob("*") if p.is_file())
    # At most MAX_RATIO times the archive was written; headers never held whole.
    assert written <= 200 * archive.stat().st_size and peak < 16 << 20, (written, peak)


def test_legacy_expert_member_count_is_bounded(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from sxpm.artifacts import pack as packmod
    from sxpm.errors import ArtifactInputError

    monkeypatch.setattr(packmod, "MAX_LEGACY_MEMBERS", 100)  # 10 000 in use; same code
    archive = tmp_path / "many.expert"
    with tarfile.open(archive, "w:gz") as tf:
        for i in range(101):
            info = tarfile.TarInfo(f"f{i}")
            tf.addfile(info, None)
    (tmp_path / "out").mkdir()
    with pytest.raises(ArtifactInputError, match="over 100 files"):
        packmod.extract_legacy_expert(archive, tmp_path / "out")


def test_legacy_expert_with_duplicate_members_is_refused(tmp_path: Path) -> None:
    from sxpm.artifacts.pack import extract_legacy_expert
    from sxpm.errors import ArtifactInputError

    archive = tmp_path / "dup.expert"
    with tarfile.open(archive, "w:gz") as tf:
        for data in (b'{"name": "a"}', b'{"name": "b"}'):
            info = tarfile.TarInfo("manifest.json")
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    (tmp_path / "out").mkdir()
    with pytest.raises(ArtifactInputError, match="two files"):
        extract_legacy_expert(archive, tmp_path / "out")


# --- 14: deeply nested JSON ----------------------------------------------------------

DEEP = b'{"descriptor": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"


def _deep_config_model(home: Path, ref_text: str) -> None:
    from sxpm.core import oci
    from sxpm.home import Home
    from sxpm.store.refs import store_name

    h = Home(home)
    store = h.store
    store.ensure()
    config = store.put_bytes(DEEP, oci.MODEL_CONFIG)
    layer = store.put_bytes(b"w", W, annotations={oci.ANN_TITLE: "w.bin"})
    desc = store.put_manifest(oci.Manifest(config, (layer,), artifact_type=oci.MODEL_ARTIFACT,
                                           annotations={oci.ANN_NAME: "deep",
                                                        oci.ANN_VERSION: "1.0.0"}))
    store.set_ref(store_name(h.parse_ref(ref_text)), desc)


def test_deeply_nested_config_is_one_line(cli, registry_dir: Path) -> None:  # noqa: ANN001
    _deep_config_model(cli.home, f"oci:{registry_dir}/deep:1.0.0")
    r = cli("model", "install", f"oci:{registry_dir}/deep:1.0.0", ok=False)
    assert r.returncode in (1, 2) and "Traceback" not in r.stderr, r.stderr
    assert "nests too deeply" in r.stderr and len(r.stderr.strip().splitlines()) <= 2, r.stderr


def test_one_bad_artifact_never_breaks_list(cli, registry_dir: Path) -> None:  # noqa: ANN001
    make_model(cli.home, f"oci:{registry_dir}/good:1.0.0", {"w.bin": b"w"}, name="good")
    _deep_config_model(cli.home, f"oci:{registry_dir}/deep:1.0.0")
    r = cli("list")
    assert "good" in r.stdout and "Traceback" not in r.stderr
    warnings = [line for line in r.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "deep" in warnings[0], r.stderr
    rows = cli("list", "--json").json
    assert {row["ref"].rsplit("/", 1)[-1]: row.get("error") is None for row in rows} == {
        "good:1.0.0": True, "deep:1.0.0": False}


def test_a_foreign_install_record_never_breaks_list(cli, registry_dir: Path) -> None:  # noqa: ANN001
    make_model(cli.home, f"oci:{registry_dir}/good:1.0.0", {"w.bin": b"w"}, name="good")
    cli("model", "install", f"oci:{registry_dir}/good:1.0.0")
    bad = cli.home / "models" / "odd" / "1.0.0"
    bad.mkdir(parents=True)
    (bad / ".sxpm-install.json").write_text("[1, 2]")
    deep = cli.home / "models" / "deep" / "1.0.0"
    deep.mkdir(parents=True)
    (deep / ".sxpm-install.json").write_bytes(b"[" * 100_000 + b"]" * 100_000)
    r = cli("model", "list", "--json")
    assert [row["name"] for row in r.json] == ["good"]


def test_deeply_nested_manifest_is_refused() -> None:
    from sxpm.core.oci import parse_manifest_bytes
    from sxpm.errors import ManifestError

    with pytest.raises(ManifestError, match="nested too deeply"):
        parse_manifest_bytes(b'{"layers": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "test")


# --- 15: trees killed installs leave -----------------------------------------------


def _dead_pid() -> int:
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _leftovers(parent: Path, live_pid: int) -> dict[str, Path]:
    """Hidden trees as killed (and running) installs leave them, with a file inside."""
    import os
    import time

    dead = _dead_pid()
    trees = {
        "building, owner dead": parent / f".1.0.0.tmp-{dead}-abcd1234",
        "replaced, owner dead": parent / f".1.0.0.old.{dead}",
        "building, owner alive": parent / f".1.0.0.tmp-{live_pid}-abcd1234",
        "replaced, owner alive": parent / f".1.0.0.old.{live_pid}",
        "unowned, old": parent / ".1.0.0.k3j4h5g6",
        "unowned, fresh": parent / ".1.0.0.q1w2e3r4",
        "building, owner alive, two days old": parent / f".2.0.0.tmp-{live_pid}-zxcv5678",
    }
    for path in trees.values():
        (path / "sub").mkdir(parents=True)
        (path / "sub" / "big.bin").write_bytes(b"x" * 1000)
    two_days = time.time() - 2 * 86400
    for key in ("unowned, old", "building, owner alive, two days old"):
        os.utime(trees[key], (two_days, two_days))
    return trees


STALE = {"building, owner dead", "replaced, owner dead", "unowned, old",
         "building, owner alive, two days old"}


def test_next_install_removes_stale_trees_only(lib_home, registry_dir: Path) -> None:  # noqa: ANN001
    import subprocess
    import sys

    from sxpm.ops.install import install

    ref = f"oci:{registry_dir}/m:1.0.0"
    make_model(lib_home.root, ref, {"w.bin": b"w"}, name="m")
    parent = lib_home.root / "models" / "m"
    parent.mkdir(parents=True)
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        trees = _leftovers(parent, live.pid)
        install(lib_home, lib_home.parse_ref(ref))
        left = {k for k, p in trees.items() if p.exists()}
    finally:
        live.kill()
        live.wait()
    assert left == set(trees) - STALE
    assert (parent / "1.0.0" / "w.bin").read_bytes() == b"w"


def test_gc_removes_stale_trees_of_every_name(cli, registry_dir: Path) -> None:  # noqa: ANN001
    import subprocess
    import sys

    parents = [cli.home / "models" / "a", cli.home / "packages" / "b"]
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        trees = [_leftovers(p, live.pid) for p in parents]
        r = cli("gc")
        left = [{k for k, p in t.items() if p.exists()} for t in trees]
        again = cli("gc", "--json").json["trees"]
    finally:
        live.kill()
        live.wait()
    assert left == [set(trees[0]) - STALE] * 2
    assert f"removed {2 * len(STALE)} unfinished install tree(s)" in r.stdout
    assert again == 0


def test_killed_reinstall_leaves_nothing_after_the_rerun(cli, registry_dir: Path) -> None:  # noqa: ANN001
    """kill -9 in the middle of a reinstall of a package (its tree is a full copy)."""
    import os
    import signal
    import subprocess
    import sys

    from relhelp import make_package

    files = [_file(f"src/f{i}.py", os.urandom(2000)) for i in range(1500)]
    ref = f"oci:{registry_dir}/pkg:0.1.0"
    make_package(cli.home, ref, tar_zstd(files), name="pkg")
    # The library's install in a child process (the CLI installs packages per project).
    code = ("import sys; from sxpm.home import Home; from sxpm.ops.install import install; "
            "h = Home.from_env(); install(h, h.parse_ref(sys.argv[1]))")

    def install() -> subprocess.Popen[bytes]:
        return subprocess.Popen([sys.executable, "-c", code, ref], cwd=cli.cwd, env=cli.env)

    assert install().wait() == 0
    parent = cli.home / "packages" / "pkg"
    for _ in range(20):  # kill while a hidden tree exists; retry if the install wins
        proc = install()
        while proc.poll() is None and not any(p.name.startswith(".") for p in parent.iterdir()):
            pass
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            if any(p.name.startswith(".") for p in parent.iterdir()):
                break
        proc.wait()
    else:
        pytest.skip("the reinstall always finished before it could be killed")
    assert install().wait() == 0
    assert sorted(p.name for p in parent.iterdir()) == ["0.1.0"]
    assert len(list((parent / "0.1.0" / "src").iterdir())) == 1500
