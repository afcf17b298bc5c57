"""Hostile artifacts: each is refused with a one-line error and nothing is written
outside the store or the install directory (no half install either)."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest
from relhelp import MiB, make_model, make_package, tar_zstd, tree

pytestmark = pytest.mark.timeout(120)


def _file(name: str, data: bytes = b"x") -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def _special(name: str, kind: bytes, **kw: object) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type = kind
    for k, v in kw.items():
        setattr(info, k, v)
    return info, None


def _pax_bomb() -> bytes:
    """A pax header claiming 300 MiB (tarfile reads headers whole), 10 KiB packed."""
    import zstandard

    size = 300 * MiB
    header = tarfile.TarInfo("././@PaxHeader")
    header.type = tarfile.XHDTYPE
    header.size = size
    out = io.BytesIO()
    with zstandard.ZstdCompressor().stream_writer(out, closefd=False) as w:
        w.write(header.tobuf(format=tarfile.USTAR_FORMAT))
        block = b"9" * MiB
        for _ in range(size // MiB):
            w.write(block)
    return out.getvalue()


def _zeros(n: int) -> bytes:
    import zstandard

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        info = tarfile.TarInfo("zeros.bin")
        info.size = n
        tf.addfile(info, io.BytesIO(bytes(n)))
    return zstandard.ZstdCompressor(level=19).compress(buf.getvalue())


PACKAGES = {
    "dot-dot": (lambda: tar_zstd([_file("../../escaped.txt")]), "unsafe file name"),
    "dot-dot inside": (lambda: tar_zstd([_file("src/../../../escaped.txt")]),
                       "unsafe file name"),
    "absolute path": (lambda: tar_zstd([_file("/tmp/sxpm-escaped.txt")]), "unsafe file name"),
    "symlink out": (lambda: tar_zstd([_special("evil", tarfile.SYMTYPE,
                                               linkname="/etc/passwd")]), "link"),
    "symlink then file through it": (
        lambda: tar_zstd([_special("d", tarfile.SYMTYPE, linkname=".."), _file("d/x")]),
        "link"),
    "hard link out": (lambda: tar_zstd([_special("h", tarfile.LNKTYPE,
                                                 linkname="/etc/passwd")]), "link"),
    "character device": (lambda: tar_zstd([_special("tty", tarfile.CHRTYPE, devmajor=5,
                                                    devminor=0)]), "special file"),
    "block device": (lambda: tar_zstd([_special("sda", tarfile.BLKTYPE, devmajor=8)]),
                     "special file"),
    "fifo": (lambda: tar_zstd([_special("pipe", tarfile.FIFOTYPE)]), "special file"),
    "file named '.'": (lambda: tar_zstd([_file(".")]), "unsafe file name"),
    "ratio bomb (64 MiB of zeros)": (lambda: _zeros(64 * MiB), "decompression bomb"),
    "pax header bomb (300 MiB)": (_pax_bomb, "decompression bomb"),
    "not tar+zstd": (lambda: b"\x28\xb5\x2f\xfd" + b"garbage" * 100, "not a valid tar+zstd"),
    "too many members": (lambda: tar_zstd([_file(f"f{i}") for i in range(1001)]),
                         "over 1000 files"),
}


def _outside(tmp_path: Path, home: Path) -> dict[str, str]:
    """Everything under tmp_path except the store (blobs may be fetched), the locks and
    the (empty) install roots of each kind."""
    return {k: v for k, v in tree(tmp_path).items()
            if not k.startswith(("home/store", "home/locks"))
            and k not in ("home/packages", "home/models", "home/experts")}


@pytest.mark.parametrize("case", list(PACKAGES))
def test_hostile_package_is_refused(case: str, lib_home, tmp_path: Path, registry_dir: Path,  # noqa: ANN001
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from sxpm.errors import SxpmError
    from sxpm.installed import tree as inst
    from sxpm.ops.install import install

    monkeypatch.setattr(inst, "MAX_PACKAGE_MEMBERS", 1000)  # the limit is 100 000; same code
    make, expected = PACKAGES[case]
    ref = f"oci:{registry_dir}/evil:0.1.0"
    make_package(lib_home.root, ref, make(), name="evil")
    before = _outside(tmp_path, lib_home.root)
    with pytest.raises(SxpmError) as err:
        install(lib_home, lib_home.parse_ref(ref))
    assert expected in str(err.value.one_line()), err.value.one_line()
    assert len(err.value.one_line().splitlines()) == 1
    assert _outside(tmp_path, lib_home.root) == before  # nothing written anywhere
    assert not (lib_home.root / "packages").exists() or not any(
        (lib_home.root / "packages").iterdir())
    assert not Path("/tmp/sxpm-escaped.txt").exists()


MODELS = {
    "layer title with ..": ({"titles": {"w.bin": "../../escaped.bin"}}, "unsafe file name"),
    "absolute layer title": ({"titles": {"w.bin": "/tmp/sxpm-escaped.bin"}},
                             "unsafe file name"),
    "layer title '.'": ({"titles": {"w.bin": "."}}, "unsafe file name"),
    "name with ..": ({"name": "../../../escaped"}, "unsafe name"),
    "name with a slash": ({"name": "a/b"}, "unsafe name"),
    "version with ..": ({"version": ".."}, "unsafe version"),
    "version climbing out": ({"version": "../../x"}, "unsafe version"),
}


@pytest.mark.parametrize("case", list(MODELS))
def test_hostile_manifest_fields_are_refused(case: str, lib_home, tmp_path: Path,  # noqa: ANN001
                                             registry_dir: Path) -> None:
    from sxpm.errors import SxpmError
    from sxpm.ops.install import install

    kw, expected = MODELS[case]
    ref = f"oci:{registry_dir}/evilmodel:1"
    make_model(lib_home.root, ref, {"w.bin": b"weights"}, **kw)  # type: ignore[arg-type]
    before = _outside(tmp_path, lib_home.root)
    with pytest.raises(SxpmError) as err:
        install(lib_home, lib_home.parse_ref(ref))
    assert expected in err.value.one_line(), err.value.one_line()
    assert _outside(tmp_path, lib_home.root) == before
    assert not Path("/tmp/sxpm-escaped.bin").exists()


# --- lying manifests in a layout registry: pulled by a second home ---------------------


def _publish(src, registry_dir: Path, mutate) -> str:  # noqa: ANN001
    """Push a model to a layout registry, then rewrite its manifest with ``mutate``."""
    from sxpm.core.oci import canonical_json, sha256_digest
    from sxpm.ops.transfer import push
    from sxpm.store.layout import OCILayout

    ref = f"oci:{registry_dir}/liar:1"
    make_model(src.root, ref, {"w.bin": b"w" * 5000})
    push(src, src.parse_ref(ref))
    layout = OCILayout(registry_dir / "liar")
    desc = layout.resolve("1")
    assert desc is not None
    obj = json.loads(layout.blob_path(desc.digest).read_bytes())
    data = mutate(obj, layout)
    if isinstance(data, dict):
        data = canonical_json(data)
    digest = sha256_digest(data)
    layout.blob_path(digest).write_bytes(data)
    index = json.loads(layout.index_path.read_bytes())
    index["manifests"][0].update(digest=str(digest), size=len(data))
    layout.index_path.write_bytes(canonical_json(index))
    return ref


def _smaller(obj: dict, _layout) -> dict:  # noqa: ANN001
    obj["layers"][0]["size"] -= 100
    return obj


def _larger(obj: dict, _layout) -> dict:  # noqa: ANN001
    obj["layers"][0]["size"] += 100
    return obj


def _other_digest(obj: dict, layout) -> dict:  # noqa: ANN001
    # The registry keeps other bytes under the digest the manifest names.
    from sxpm.core.reference import Digest

    path = layout.blob_path(Digest.parse(obj["layers"][0]["digest"]))
    path.chmod(0o644)
    path.write_bytes(b"x" * 5000)
    return obj


def _media_type(obj: dict, _layout) -> dict:  # noqa: ANN001
    obj["mediaType"] = "application/x-evil"
    return obj


def _huge_config(obj: dict, layout) -> dict:  # noqa: ANN001
    big = b'{"descriptor": {"name": "x", "version": "1.0.0"}, "pad": "' + b" " * (5 * MiB) + b'"}'
    desc = layout.put_bytes(big, "application/vnd.cncf.model.config.v1+json")
    obj["config"] = desc.to_dict()
    return obj


def _config_list(obj: dict, layout) -> dict:  # noqa: ANN001
    desc = layout.put_bytes(b"[1, 2]", "application/vnd.cncf.model.config.v1+json")
    obj["config"] = desc.to_dict()
    return obj


def _huge_manifest(obj: dict, _layout) -> bytes:  # noqa: ANN001
    return b" " * (5 * MiB) + json.dumps(obj).encode()


def _not_json(obj: dict, _layout) -> bytes:  # noqa: ANN001
    return b"\xff\xfe{not json"


def _index_of_index(obj: dict, layout) -> dict:  # noqa: ANN001
    from sxpm.core.oci import OCI_INDEX, canonical_json

    inner = canonical_json({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []})
    d = layout.put_bytes(inner, OCI_INDEX)
    return {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [d.to_dict()]}


LIES = {
    "layer smaller than it says": (_smaller, "size mismatch"),
    "layer larger than it says": (_larger, "size mismatch"),
    "other bytes under the digest": (_other_digest, "digest mismatch"),
    "unknown manifest media type": (_media_type, "media type"),
    "config blob over 4 MiB": (_huge_config, "over the limit"),
    "config blob not an object": (_config_list, "not a json object"),
    "manifest over 4 MiB": (_huge_manifest, "4 mib"),
    "manifest not JSON": (_not_json, "not valid json"),
    "index of an index": (_index_of_index, "nested"),
}


@pytest.mark.parametrize("case", list(LIES))
def test_lying_manifests_are_refused(case: str, tmp_path: Path, registry_dir: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from sxpm.errors import SxpmError
    from sxpm.home import Home
    from sxpm.ops.install import install

    src = Home(tmp_path / "src")
    ref = _publish(src, registry_dir, LIES[case][0])
    home = Home(tmp_path / "home")
    monkeypatch.setenv("SIMPLEX_HOME", str(home.root))
    with pytest.raises(SxpmError) as err:
        install(home, home.parse_ref(ref))
    assert LIES[case][1] in err.value.one_line().lower(), err.value.one_line()
    report = home.store.verify() if home.store.exists() else None
    assert report is None or not report.bad
    if not case.startswith("config"):  # a config is checked after a verified pull
        assert not home.store.exists() or not home.store.refs()
    assert not (home.root / "models").exists() or not any((home.root / "models").iterdir())


# --- names and references built to traverse paths ---------------------------------------

BAD_REFS = ["localhost:5000/../etc/passwd:1", "localhost:5000/a/..:1", "localhost:5000/a/b:../x",
            "localhost:5000/a@sha256:../../etc", "oci:/x:1:2", "localhost:5000/%2e%2e/x:1",
            "localhost:5000//x:1", "localhost:5000/a\x00b:1", "localhost:5000/A/B:1"]
BAD_NAMES = ["../x", "..", "a/../../b", "/abs", "a/b", "", ".hidden", "a\x00b", "x" * 200]


@pytest.mark.parametrize("text", BAD_REFS)
def test_traversing_references_are_refused(text: str) -> None:
    from sxpm.core.reference import Reference
    from sxpm.errors import InvalidReferenceError

    with pytest.raises(InvalidReferenceError):
        Reference.parse(text)


@pytest.mark.parametrize("name", BAD_NAMES)
def test_traversing_index_names_are_refused(name: str) -> None:
    from sxpm.errors import InvalidNameError
    from sxpm.index.format import index_path

    with pytest.raises(InvalidNameError):
        index_path(name)


def test_hostile_cli_errors_are_one_line(cli, registry_dir: Path) -> None:  # noqa: ANN001
    ref = f"oci:{registry_dir}/evil:0.1.0"
    make_model(cli.home, ref, {"w.bin": b"w"}, name="../../escaped")
    r = cli.fail("model", "install", ref, code=2)
    assert "unsafe name" in r.stderr
    assert not (cli.home.parent / "escaped").exists()
