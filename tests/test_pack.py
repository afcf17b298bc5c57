"""The artifact format for models, experts and packages, through the real CLI."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

import jsonschema
import pytest

from sxpm.core.oci import (
    ANN_BASE_MODEL,
    ANN_FILEPATH,
    ANN_TITLE,
    ANN_VARIANT,
    EXPERT_ARTIFACT,
    INDEX_TYPES,
    MODEL_ARTIFACT,
    MODEL_CONFIG,
    MODEL_DOC,
    MODEL_WEIGHT,
    PACKAGE_ARTIFACT,
    PACKAGE_LAYER,
)

ROOT = Path(__file__).resolve().parents[1]
# The unchanged upstream schema, copied into schemas/ with its attribution.
MODELPACK_SCHEMA = json.loads((ROOT / "schemas" / "modelpack-config.schema.json").read_text())


def blob(home: Path, digest: str) -> bytes:
    alg, hexd = digest.split(":")
    return (home / "store" / "blobs" / alg / hexd).read_bytes()


def manifest_of(cli, ref: str) -> dict:  # noqa: ANN001
    return cli("inspect", ref, "--json").json["manifest"]


def manifest_of_digest(cli, ref: str, digest: str) -> dict:  # noqa: ANN001
    return cli("inspect", f"{ref.rsplit(':', 1)[0]}@{digest}", "--json").json["manifest"]


def test_model_manifest_is_modelpack(cli, sample_dir: Path, registry_dir: Path) -> None:  # noqa: ANN001
    ref = f"oci:{registry_dir}/tiny-llama:1.0.0"
    out = cli("pack", "model", sample_dir / "tiny-llama", "--ref", ref)
    digest = out.last_line
    assert digest.startswith("sha256:") and len(digest) == 71
    m = manifest_of(cli, ref)
    assert m["artifactType"] == MODEL_ARTIFACT
    assert m["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    assert m["config"]["mediaType"] == MODEL_CONFIG
    by_title = {layer["annotations"][ANN_TITLE]: layer for layer in m["layers"]}
    assert set(by_title) == {"model.gguf", "README.md"}
    assert by_title["model.gguf"]["mediaType"] == MODEL_WEIGHT
    assert by_title["README.md"]["mediaType"] == MODEL_DOC
    assert by_title["model.gguf"]["annotations"][ANN_FILEPATH] == "model.gguf"
    gguf_bytes = (sample_dir / "tiny-llama" / "model.gguf").read_bytes()
    assert by_title["model.gguf"]["digest"] == "sha256:" + hashlib.sha256(gguf_bytes).hexdigest()
    config = json.loads(blob(cli.home, m["config"]["digest"]))
    jsonschema.validate(config, MODELPACK_SCHEMA)  # the unchanged upstream schema
    # Read from the GGUF itself, not typed by the user.
    assert config["config"]["architecture"] == "llama"
    assert config["config"]["format"] == "gguf"
    assert config["config"]["quantization"] == "F32"
    assert config["config"]["paramSize"].endswith("K")
    assert config["descriptor"]["name"] == "tiny-llama"
    assert config["descriptor"]["version"] == "1.0.0"
    assert config["modelfs"]["diffIds"] == [layer["digest"] for layer in m["layers"]]


def test_packing_is_deterministic_across_homes(cli, cli2, sample_dir: Path,  # noqa: ANN001
                                               registry_dir: Path) -> None:
    for kind, path, name in [("model", "tiny-llama", "tiny-llama:1.0.0"),
                             ("expert", "sql-expert", "sql-expert:2.1.0"),
                             ("expert", "multi-expert", "multi-expert:1.0.0"),
                             ("package", "simplex-hello", "simplex-hello:0.1.0")]:
        ref = f"oci:{registry_dir}/{name}"
        a = cli("pack", kind, sample_dir / path, "--ref", ref).last_line
        b = cli2("pack", kind, sample_dir / path, "--ref", ref).last_line
        assert a == b, kind


def test_variants_make_an_image_index(cli, sample_dir: Path, registry_dir: Path) -> None:  # noqa: ANN001
    ref = f"oci:{registry_dir}/tiny-llama:1.0.0"
    cli("pack", "model", sample_dir / "tiny-llama", "--ref", ref, "--variant", "F32")
    out = cli("pack", "model", sample_dir / "tiny-llama-f16", "--ref", ref, "--variant", "F16",
              "--json").json
    assert out["variants"] == ["F32", "F16"]
    index = cli("inspect", ref, "--json").json
    assert index["media_type"] in INDEX_TYPES
    entries = index["manifest"]["manifests"]
    assert [e["annotations"][ANN_VARIANT] for e in entries] == ["F32", "F16"]
    # The kind is an annotation of the index, not artifactType on it or its entries:
    # skopeo 1.9 drops artifactType when it copies an index (docs/format.md).
    assert "artifactType" not in index["manifest"]
    assert index["manifest"]["annotations"]["org.simplex.kind"] == "model"
    assert not any("artifactType" in e for e in entries)
    assert all(manifest_of_digest(cli, ref, e["digest"])["artifactType"] == MODEL_ARTIFACT
               for e in entries)
    # Re-packing a variant replaces it in place rather than adding a duplicate.
    again = cli("pack", "model", sample_dir / "tiny-llama-f16", "--ref", ref, "--variant",
                "F16", "--json").json
    assert again["digest"] == out["digest"]
    info = cli("model", "info", ref, "--variant", "F16", "--json").json
    assert info["quantization"] == "F16"
    assert info["variants"] == ["F32", "F16"]


def test_expert_v1(cli, sample_dir: Path, registry_dir: Path) -> None:  # noqa: ANN001
    ref = f"oci:{registry_dir}/sql-expert:2.1.0"
    cli("pack", "expert", sample_dir / "sql-expert", "--ref", ref)
    m = manifest_of(cli, ref)
    assert m["artifactType"] == EXPERT_ARTIFACT
    assert m["annotations"][ANN_BASE_MODEL] == "tiny-llama"
    deps = json.loads(m["annotations"]["org.simplex.dependencies"])
    assert deps == [{"kind": "model", "name": "tiny-llama", "req": "^1.0"}]
    titles = [layer["annotations"][ANN_TITLE] for layer in m["layers"]]
    assert titles == ["adapter.gguf", "template.txt", "LICENSE"]
    config = json.loads(blob(cli.home, m["config"]["digest"]))
    assert config["base_model"]["name"] == "tiny-llama"


def test_expert_v2_is_an_index_per_base_model(cli, sample_dir: Path,  # noqa: ANN001
                                              registry_dir: Path) -> None:
    ref = f"oci:{registry_dir}/multi-expert:1.0.0"
    cli("pack", "expert", sample_dir / "multi-expert", "--ref", ref)
    index = manifest_of(cli, ref)
    entries = index["manifests"]
    assert [e["annotations"][ANN_VARIANT] for e in entries] == ["tiny-llama", "other-llama"]
    for entry in entries:
        child = cli("inspect", f"oci:{registry_dir}/multi-expert@{entry['digest']}",
                    "--json").json["manifest"]
        titles = [layer["annotations"][ANN_TITLE] for layer in child["layers"]]
        base = entry["annotations"][ANN_BASE_MODEL]
        assert titles[0] == f"adapters/{base}.gguf"
        assert "soft-prompt.bin" in titles and "LICENSE" in titles
        assert child["annotations"][ANN_BASE_MODEL] == base


def test_legacy_expert_archive_imports(cli, sample_dir: Path, tmp_path: Path,  # noqa: ANN001
                                       registry_dir: Path) -> None:
    archive = tmp_path / "sql.expert"
    with tarfile.open(archive, "w:gz") as tf:
        for f in sorted((sample_dir / "sql-expert").iterdir()):
            tf.add(f, arcname=f.name)
    a = cli("pack", "expert", archive, "--ref", f"oci:{registry_dir}/sql-expert:2.1.0")
    b = cli("pack", "expert", sample_dir / "sql-expert", "--ref",
            f"oci:{registry_dir}/sql-expert:2.1.0")
    assert a.last_line == b.last_line


def test_hostile_legacy_archive_is_refused(cli, tmp_path: Path, registry_dir: Path) -> None:  # noqa: ANN001
    archive = tmp_path / "evil.expert"
    with tarfile.open(archive, "w:gz") as tf:
        data = b"{}"
        info = tarfile.TarInfo("../escape.json")
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
    r = cli.fail("pack", "expert", archive, "--ref", f"oci:{registry_dir}/x:1.0.0", code=2)
    assert "unsafe" in r.stderr or "escape" in r.stderr
    assert not (tmp_path / "escape.json").exists()


def test_package_layer_is_reproducible_tar_zstd(cli, sample_dir: Path,  # noqa: ANN001
                                                registry_dir: Path, tmp_path: Path) -> None:
    import shutil

    import zstandard

    ref = f"oci:{registry_dir}/simplex-hello:0.1.0"
    first = cli("pack", "package", sample_dir / "simplex-hello", "--ref", ref).last_line
    # Same tree, other mtimes and location: same digest.
    copy = tmp_path / "elsewhere" / "simplex-hello"
    shutil.copytree(sample_dir / "simplex-hello", copy)
    for p in copy.rglob("*"):
        import os
        os.utime(p, (1_000_000, 1_000_000))
    second = cli("pack", "package", copy, "--ref", ref).last_line
    assert first == second
    m = manifest_of(cli, ref)
    assert m["artifactType"] == PACKAGE_ARTIFACT
    [layer] = m["layers"]
    assert layer["mediaType"] == PACKAGE_LAYER
    assert layer["annotations"][ANN_TITLE] == "simplex-hello-0.1.0.tar.zst"
    raw = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(blob(cli.home, layer["digest"])))
    with tarfile.open(fileobj=raw, mode="r|") as tf:
        members = [(t.name, t.mtime, t.uid, t.gid, t.mode) for t in tf]
    names = [name for name, *_ in members]
    assert names == sorted(names)
    assert {(mt, u, g) for _, mt, u, g, _ in members} == {(0, 0, 0)}
    assert ("run.sh", 0, 0, 0, 0o755) in members
    config = json.loads(blob(cli.home, m["config"]["digest"]))
    assert config["dependencies"] == {"simplex-http": "^0.3"}
    deps = json.loads(m["annotations"]["org.simplex.dependencies"])
    assert {"kind": "model", "name": "tiny-llama", "req": "^1.0"} in deps


# --- bad input: one line, exit 2, store unchanged ----------------------------------


def _store_state(home: Path) -> dict[str, bytes]:
    store = home / "store"
    if not store.exists():
        return {}
    return {str(p.relative_to(store)): p.read_bytes() for p in sorted(store.rglob("*"))
            if p.is_file()}


def _expert(tmp_path: Path, sample_dir: Path, manifest: dict | str) -> Path:  # noqa: ANN001
    import shutil

    d = tmp_path / "bad-expert"
    if d.exists():
        shutil.rmtree(d)
    shutil.copytree(sample_dir / "sql-expert", d)
    (d / "manifest.json").write_text(manifest if isinstance(manifest, str)
                                     else json.dumps(manifest))
    return d


GOOD_V1 = {"name": "sql-expert", "version": "2.1.0", "base_model": "tiny-llama",
           "weights": "adapter.gguf"}


@pytest.mark.parametrize(
    ("manifest", "expected"),
    [
        ("{not json", "not valid JSON"),
        ({**GOOD_V1, "base_models": [{"name": "a", "version": "1", "weights": "w"}]},
         "both base_model and base_models"),
        ({**GOOD_V1, "weights": "missing.gguf"}, "missing.gguf"),
        ({**GOOD_V1, "name": "Bad/Name"}, "$.name"),
        ({**GOOD_V1, "weights": "../../etc/passwd"}, "$.weights"),
        ({**GOOD_V1, "version": "one"}, "$.version"),
        ({"schema_version": "2.0", "name": "x", "version": "1.0.0", "base_models": [
            {"name": "a", "version": "1", "weights": "adapter.gguf"},
            {"name": "b", "version": "1", "weights": "adapter.gguf"}]}, "unique"),
        ({"schema_version": "9.0", **GOOD_V1}, "schema_version"),
        ({**GOOD_V1, "weights": "template.txt", "base_model": {"name": "tiny-llama",
                                                               "architecture": "gpt2"}},
         None),
    ],
)
def test_bad_expert_manifests(cli, sample_dir: Path, tmp_path: Path, registry_dir: Path,  # noqa: ANN001
                              manifest: dict | str, expected: str | None) -> None:
    cli("pack", "model", sample_dir / "tiny-llama", "--ref", f"oci:{registry_dir}/m:1.0.0")
    before = _store_state(cli.home)
    d = _expert(tmp_path, sample_dir, manifest)
    if expected is None:  # a non-GGUF weight is accepted as-is (soft prompt style)
        cli("pack", "expert", d, "--ref", f"oci:{registry_dir}/e:2.1.0")
        return
    r = cli.fail("pack", "expert", d, "--ref", f"oci:{registry_dir}/e:2.1.0", code=2)
    assert expected in r.stderr
    assert "manifest.json" in r.stderr or "missing.gguf" in r.stderr
    assert _store_state(cli.home) == before


def test_adapter_for_another_architecture_is_refused(cli, sample_dir: Path, tmp_path: Path,  # noqa: ANN001
                                                     registry_dir: Path) -> None:
    d = _expert(tmp_path, sample_dir, {**GOOD_V1, "base_model": {
        "name": "tiny-llama", "architecture": "gpt2"}})
    r = cli.fail("pack", "expert", d, "--ref", f"oci:{registry_dir}/e:2.1.0", code=2)
    assert "adapter for 'llama'" in r.stderr


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["pack", "widget", "."], "'widget' is not one of"),
        (["pack", "model", "{samples}/nope", "--ref", "oci:{reg}/m:1.0.0"], "does not exist"),
        (["pack", "model", "{samples}/simplex-hello", "--ref", "oci:{reg}/m:1.0.0"], "no .gguf"),
        (["pack", "model", "{samples}/tiny-llama", "--ref", "oci:{reg}/Bad_Name:1.0.0"],
         "Invalid name"),
        (["pack", "model", "{samples}/tiny-llama", "--ref", "oci:{reg}/m:latest"],
         "Invalid version"),
        (["pack", "model", "{samples}/sql-expert/adapter.gguf", "--ref", "oci:{reg}/m:1.0.0"],
         "LoRA adapter"),
        (["pack", "model", "{samples}/truncated.gguf", "--ref", "oci:{reg}/m:1.0.0"],
         "corrupt or truncated"),
        (["pack", "package", "{samples}/tiny-llama", "--ref", "oci:{reg}/p:1.0.0"],
         "simplex.toml"),
        (["inspect", "localhost:5000/nothing:1"], "not in the store"),
        (["pull", "oci:{reg}/absent:1.0.0"], "not found"),
        (["model", "remove", "ghost"], "No installed model"),
    ],
)
def test_bad_cli_input(cli, sample_dir: Path, registry_dir: Path, args: list[str],  # noqa: ANN001
                       expected: str) -> None:
    truncated = sample_dir / "truncated.gguf"
    if not truncated.exists():
        truncated.write_bytes((sample_dir / "tiny-llama" / "model.gguf").read_bytes()[:5000])
    before = _store_state(cli.home)
    argv = [a.format(samples=sample_dir, reg=registry_dir) for a in args]
    r = cli(*argv, ok=False)
    assert r.returncode == 2, r.stderr
    err = r.stderr.strip()
    assert expected in err, err
    assert len(err.splitlines()) == 1 and err.startswith("error: ")
    assert _store_state(cli.home) == before


def test_an_index_names_its_kind_by_annotation_or_by_its_old_artifact_type() -> None:
    from sxpm.core.oci import ImageIndex

    written_now = {"schemaVersion": 2, "manifests": [],
                   "annotations": {"org.simplex.kind": "expert"}}
    written_before = {"schemaVersion": 2, "manifests": [], "artifactType": MODEL_ARTIFACT}
    assert ImageIndex.from_dict(written_now).kind == "expert"
    assert ImageIndex.from_dict(written_before).kind == "model"
    assert ImageIndex.from_dict({**written_now, "annotations": {
        "org.simplex.kind": "container"}}).kind is None
    # The layout's descriptor of an index still carries the type, for listings.
    assert ImageIndex.from_dict(written_now).descriptor().artifact_type == EXPERT_ARTIFACT
