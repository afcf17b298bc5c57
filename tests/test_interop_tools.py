"""What sxpm writes, read by other tools: skopeo reads the store and layout registries
by name and copies digest-exact; referrers (signatures, SBOMs) travel with `sxpm copy`
and are found even where a listing leaves `artifactType` out. Real skopeo, the real
registry on loopback."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import requests
from test_interop import _descriptor, push_raw

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
REF_NAME = "org.opencontainers.image.ref.name"
SIGNATURE = "application/vnd.simplex.signature.v1+json"
SBOM = "application/spdx+json"
# image-spec's grammar for org.opencontainers.image.ref.name, written out here so the
# test does not trust sxpm's own copy of it.
_COMPONENT = r"[A-Za-z0-9]+(?:(?:[-._:@+]|--)[A-Za-z0-9]+)*"
REF_GRAMMAR = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")

needs_skopeo = pytest.mark.skipif(shutil.which("skopeo") is None,
                                  reason="skopeo is not installed (scripts/test installs it)")


def skopeo(*args: str) -> subprocess.CompletedProcess[str]:
    out = subprocess.run(["skopeo", *args], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out


def _store_index(home: Path) -> dict:  # type: ignore[type-arg]
    return json.loads((home / "store" / "index.json").read_text())


def _entry_named(home: Path, ref: str) -> dict:  # type: ignore[type-arg]
    entries = [m for m in _store_index(home)["manifests"]
               if m["annotations"].get("org.simplex.ref") == ref]
    assert len(entries) == 1, entries
    return entries[0]


@needs_skopeo
def test_skopeo_reads_the_store_and_a_layout_registry_by_name(
        cli, home: Path, sample_dir: Path, registry_dir: Path, tmp_path: Path) -> None:  # noqa: ANN001
    ref = f"oci:{registry_dir}/tiny-llama:1.0.0"
    cli("pack", "model", sample_dir / "tiny-llama", "--ref", ref)
    cli("push", ref)
    index = _store_index(home)
    assert index["mediaType"] == OCI_INDEX
    names = [m["annotations"][REF_NAME] for m in index["manifests"]]
    assert all(REF_GRAMMAR.fullmatch(n) for n in names), names
    entry = _entry_named(home, ref)
    name = entry["annotations"][REF_NAME]
    blob = home / "store" / "blobs" / "sha256" / entry["digest"].split(":")[1]
    # The store, by the name its index.json gives.
    raw = skopeo("inspect", "--raw", f"oci:{home / 'store'}:{name}").stdout
    assert raw.encode() == blob.read_bytes()
    if shutil.which("umoci"):  # another reader of the same layout
        listed = subprocess.run(["umoci", "ls", "--layout", str(home / "store")],
                                capture_output=True, text=True, timeout=60)
        assert listed.returncode == 0 and name in listed.stdout.split(), listed.stderr
    # The layout registry sxpm pushed to, by tag.
    layout = registry_dir / "tiny-llama"
    assert json.loads((layout / "index.json").read_text())["mediaType"] == OCI_INDEX
    raw = skopeo("inspect", "--raw", f"oci:{layout}:1.0.0").stdout
    assert raw.encode() == blob.read_bytes()
    # A digest-exact copy by skopeo, which sxpm then reads as its own.
    copied = tmp_path / "copied"
    skopeo("copy", "--preserve-digests", f"oci:{home / 'store'}:{name}", f"oci:{copied}:1.0.0")
    assert json.loads((copied / "index.json").read_text())["manifests"][0]["digest"] \
        == entry["digest"]
    cli2_ref = f"oci:{copied}:1.0.0"
    out = cli("pull", cli2_ref, "--json").json
    assert out["digest"] == entry["digest"]


@needs_skopeo
@pytest.mark.registry
def test_skopeo_copies_a_variant_index_digest_exact(
        cli, cli2, home: Path, sample_dir: Path, oci_registry, tmp_path: Path) -> None:  # noqa: ANN001
    """skopeo 1.9 re-serialises an index without `artifactType`: sxpm's indexes carry
    none, so `--preserve-digests` copies them (and their variants) byte for byte, and
    another home reads the copy as the same artifact, variants and all."""
    ref = f"{oci_registry.host}/simplex/tiny-llama:1.0.0"
    cli("pack", "model", sample_dir / "tiny-llama", "--ref", ref, "--variant", "F32")
    top = cli("pack", "model", sample_dir / "tiny-llama-f16", "--ref", ref, "--variant",
              "F16", "--json").json["digest"]
    cli("push", ref, "--insecure")
    copied = tmp_path / "copied"
    skopeo("copy", "--all", "--preserve-digests", "--src-tls-verify=false",
           f"docker://{ref}", f"oci:{copied}:1.0.0")
    entry = json.loads((copied / "index.json").read_text())["manifests"][0]
    assert entry["digest"] == top
    blob = copied / "blobs" / "sha256" / top.split(":")[1]
    assert hashlib.sha256(blob.read_bytes()).hexdigest() == top.split(":")[1]
    out = cli2("pull", f"oci:{copied}:1.0.0", "--variant", "F16", "--json").json
    assert out["digest"] == top
    info = cli2("model", "info", f"oci:{copied}:1.0.0", "--variant", "F16", "--json").json
    assert info["variants"] == ["F32", "F16"] and info["quantization"] == "F16"


def test_stores_written_with_the_old_names_keep_working(
        cli, home: Path, sample_dir: Path, registry_dir: Path) -> None:  # noqa: ANN001
    """Stores from before the annotation name `oci:` refs by the full ref and have no
    `mediaType`: read as they are, and rewritten in the new form on the next write."""
    ref = f"oci:{registry_dir}/tiny-llama:1.0.0"
    cli("pack", "model", sample_dir / "tiny-llama", "--ref", ref)
    path = home / "store" / "index.json"
    index = _store_index(home)
    digest = _entry_named(home, ref)["digest"]
    for m in index["manifests"]:
        m["annotations"] = {REF_NAME: m["annotations"].pop("org.simplex.ref")}
    del index["mediaType"]
    path.chmod(0o644)
    path.write_text(json.dumps(index))
    assert cli("inspect", ref, "--json").json["digest"] == digest
    assert cli("model", "info", ref, "--json").json["name"] == "tiny-llama"
    cli("pack", "model", sample_dir / "tiny-llama-f16", "--ref", ref)
    index = _store_index(home)
    assert index["mediaType"] == OCI_INDEX
    assert [m["annotations"].get("org.simplex.ref") for m in index["manifests"]] == [ref]
    assert REF_GRAMMAR.fullmatch(index["manifests"][0]["annotations"][REF_NAME])


def _attach_sbom(host: str, repo: str, subject: dict) -> str:  # type: ignore[type-arg]
    """Attach an SBOM as another tool would (oras attach on a registry without the
    referrers API): the manifest, then the subject's fallback tag listing it."""
    body = b'{"spdxVersion":"SPDX-2.3","name":"tiny"}'
    empty = b"{}"
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": SBOM,
        "config": _descriptor("application/vnd.oci.empty.v1+json", empty),
        "layers": [_descriptor(SBOM, body)], "subject": subject}).encode()
    digest = push_raw(host, repo, "sbom", manifest,
                      {str(_descriptor("", body)["digest"]): body,
                       str(_descriptor("", empty)["digest"]): empty}, OCI_MANIFEST)
    tag = subject["digest"].replace(":", "-")
    listed = requests.get(f"http://{host}/v2/{repo}/manifests/{tag}", timeout=30,
                          headers={"Accept": OCI_INDEX})
    entries = listed.json()["manifests"] if listed.status_code == 200 else []
    entries.append({**_descriptor(OCI_MANIFEST, manifest), "artifactType": SBOM})
    push_raw(host, repo, tag, json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX,
                                          "manifests": entries}).encode(), {}, OCI_INDEX)
    return digest


@pytest.mark.registry
def test_copy_carries_signatures_and_other_referrers_from_the_source(
        cli, cli2, sample_dir: Path, oci_registry, tmp_path: Path) -> None:  # noqa: ANN001
    host = oci_registry.host
    src, dst = f"{host}/carry/tiny-llama:1.0.0", f"{host}/carried/tiny-llama:1.0.0"
    cli("pack", "model", sample_dir / "tiny-llama", "--ref", src)
    cli("push", src)
    key = tmp_path / "keys" / "k.pem"
    kid = cli("keygen", "--out", key, "--json").json["key_id"]
    cli("sign", src, "--key", key)
    subject = cli("inspect", src, "--json").json
    sbom = _attach_sbom(host, "carry/tiny-llama",
                        {"mediaType": subject["media_type"], "digest": subject["digest"],
                         "size": subject["size"]})
    # A second home that holds nothing of it (no signature in its store) copies it.
    cli2("copy", src, dst)
    tag = subject["digest"].replace(":", "-")
    listed = requests.get(f"http://{host}/v2/carried/tiny-llama/manifests/{tag}",
                          headers={"Accept": OCI_INDEX}, timeout=30).json()["manifests"]
    assert sorted(d.get("artifactType") for d in listed) == sorted([SBOM, SIGNATURE])
    assert sbom in {d["digest"] for d in listed}
    # skopeo sees what sxpm carried, byte for byte.
    if shutil.which("skopeo"):
        for d in listed:
            raw = skopeo("inspect", "--raw", "--tls-verify=false",
                         f"docker://{host}/carried/tiny-llama@{d['digest']}").stdout
            assert "sha256:" + hashlib.sha256(raw.encode()).hexdigest() == d["digest"]
    # And the copy verifies against the key in a third home.
    (tmp_path / "h3").mkdir()
    third = type(cli)(tmp_path / "h3", tmp_path)
    (third.home / "config.json").write_text(json.dumps({"trust": {"keys": [kid]}}))
    third("pull", dst)


@pytest.mark.registry
def test_signatures_are_found_when_the_listing_has_no_artifact_type(
        cli, cli2, sample_dir: Path, oci_registry, tmp_path: Path) -> None:  # noqa: ANN001
    host = oci_registry.host
    ref = f"{host}/untyped/tiny-llama:1.0.0"
    cli("pack", "model", sample_dir / "tiny-llama", "--ref", ref)
    cli("push", ref)
    key = tmp_path / "keys" / "k.pem"
    kid = cli("keygen", "--out", key, "--json").json["key_id"]
    cli("sign", ref, "--key", key)
    subject = cli("inspect", ref, "--json").json["digest"]
    tag = subject.replace(":", "-")
    url = f"http://{host}/v2/untyped/tiny-llama/manifests/{tag}"
    listing = requests.get(url, headers={"Accept": OCI_INDEX}, timeout=30).json()
    assert listing["manifests"][0]["artifactType"] == SIGNATURE
    # As a tool that keeps only what image-spec 1.0 descriptors have writes it; an SBOM
    # beside it, also untyped, is read and passed over.
    _attach_sbom(host, "untyped/tiny-llama",
                 {"mediaType": OCI_INDEX if "index" in listing["mediaType"] else OCI_MANIFEST,
                  "digest": subject, "size": cli("inspect", ref, "--json").json["size"]})
    listing = requests.get(url, headers={"Accept": OCI_INDEX}, timeout=30).json()
    for d in listing["manifests"]:
        d.pop("artifactType", None)
    push_raw(host, "untyped/tiny-llama", tag, json.dumps(listing).encode(), {}, OCI_INDEX)
    (cli2.home / "config.json").write_text(json.dumps({"trust": {"keys": [kid]}}))
    out = cli2("pull", ref, "--json").json
    assert out["digest"] == subject


# --- ModelPack in every layer form (modctl, KitOps) -----------------------------------

MODEL_CONFIG = "application/vnd.cncf.model.config.v1+json"
MODEL_ARTIFACT = "application/vnd.cncf.model.manifest.v1+json"


def _tar(files: dict[str, bytes], form: str) -> bytes:
    """A tar as modctl and KitOps write one: the file(s) under their paths."""
    import io
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path, data in files.items():
            info = tarfile.TarInfo(path)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    raw = buf.getvalue()
    if form == "tar+gzip":
        import gzip

        return gzip.compress(raw)
    if form == "tar+zstd":
        import zstandard

        return zstandard.ZstdCompressor().compress(raw)
    return raw


def push_modelpack(host: str, repo: str, tag: str, layers: list[tuple[str, str, bytes]],
                   config_type: str = MODEL_CONFIG, artifact_type: str | None = MODEL_ARTIFACT
                   ) -> tuple[str, list[str]]:
    """Push a manifest of ``(media type, filepath, bytes)`` layers (modctl's shape: no
    version, `org.cncf.model.filepath` on each layer); its digest and layer digests."""
    config = json.dumps({"descriptor": {"name": repo.rsplit("/", 1)[-1]},
                         "config": {"format": "gguf"},
                         "modelfs": {"type": "layers", "diffIds": []}}).encode()
    descs = [{**_descriptor(media_type, data),
              "annotations": {"org.cncf.model.filepath": path}}
             for media_type, path, data in layers]
    manifest: dict[str, object] = {
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": _descriptor(config_type, config), "layers": descs}
    if artifact_type:
        manifest["artifactType"] = artifact_type
    blobs = {str(_descriptor("", data)["digest"]): data for _, _, data in layers}
    blobs[str(_descriptor("", config)["digest"])] = config
    digest = push_raw(host, repo, tag, json.dumps(manifest).encode(), blobs, OCI_MANIFEST)
    return digest, [str(d["digest"]) for d in descs]


@pytest.fixture(scope="module")
def gguf_bytes(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    import tiny_gguf

    out = tmp_path_factory.mktemp("gguf")
    return tiny_gguf.make_model(out / "model.gguf", seed=0, name="tiny-llama").read_bytes()


@pytest.mark.registry
@pytest.mark.parametrize("form", ["tar", "tar+gzip", "tar+zstd"])
def test_modelpack_weights_in_tar_forms_install_unpacked_and_run(
        cli, home: Path, oci_registry, gguf_bytes: bytes, form: str,  # noqa: ANN001
        monkeypatch: pytest.MonkeyPatch) -> None:
    repo = f"mp-{form.replace('+', '-')}/tiny"
    weight = f"application/vnd.cncf.model.weight.v1.{form}"
    doc = f"application/vnd.cncf.model.doc.v1.{form}"
    layers = [(weight, "weights/tiny.gguf", _tar({"weights/tiny.gguf": gguf_bytes}, form)),
              (doc, "README.md", _tar({"README.md": b"# tiny\n"}, form))]
    _, digests = push_modelpack(oci_registry.host, repo, "v1", layers)
    ref = f"{oci_registry.host}/{repo}:v1"
    cli("model", "install", ref)
    tree = home / "models" / "tiny" / "v1"
    assert (tree / "weights" / "tiny.gguf").read_bytes() == gguf_bytes
    assert (tree / "README.md").read_bytes() == b"# tiny\n"
    # The store keeps each blob as it was served (same digest, archive bytes).
    for (_, _, data), digest in zip(layers, digests, strict=True):
        assert (home / "store" / "blobs" / "sha256" / digest.split(":")[1]).read_bytes() == data
    record = json.loads((tree / ".sxpm-install.json").read_text())
    assert record["files"]["weights/tiny.gguf"] == \
        "sha256:" + hashlib.sha256(gguf_bytes).hexdigest()
    cli("verify")
    # `run` finds the GGUF by name and by reference, whichever form carried it.
    monkeypatch.setenv("SIMPLEX_HOME", str(home))
    from sxpm.home import Home
    from sxpm.runner.locate import find_model

    for spec in ("tiny@v1", ref):
        found = find_model(Home(home), spec)
        assert found.path == tree / "weights" / "tiny.gguf", spec
        assert found.header.architecture == "llama"
    # A file of the tree changed behind sxpm's back is caught by its own digest.
    gguf = tree / "weights" / "tiny.gguf"
    gguf.chmod(0o644)
    gguf.write_bytes(gguf_bytes[:-1] + b"\x01")
    err = cli.fail("run", "tiny@v1", "-p", "hi", "-n", "1", code=1).stderr
    assert "changed since it was installed" in err


@pytest.mark.registry
@pytest.mark.llama
def test_modelpack_tar_zstd_model_runs(cli, oci_registry, gguf_bytes: bytes) -> None:  # noqa: ANN001
    pytest.importorskip("llama_cpp")
    layer = ("application/vnd.cncf.model.weight.v1.tar+zstd", "tiny.gguf",
             _tar({"tiny.gguf": gguf_bytes}, "tar+zstd"))
    push_modelpack(oci_registry.host, "mp-run/tiny", "v1", [layer])
    ref = f"{oci_registry.host}/mp-run/tiny:v1"
    out = cli("run", ref, "--install", "-p", "hello", "-n", "4", "--json").json
    assert out["text"] and out["model"]["name"] == "tiny"


@pytest.mark.registry
def test_modelpack_tar_layer_keeps_the_package_guards(cli, home: Path, oci_registry,  # noqa: ANN001
                                                     gguf_bytes: bytes) -> None:
    import io
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        link = tarfile.TarInfo("weights/tiny.gguf")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(link)
    push_modelpack(oci_registry.host, "mp-evil/tiny", "v1",
                   [("application/vnd.cncf.model.weight.v1.tar", "weights/tiny.gguf",
                     buf.getvalue())])
    err = cli.fail("model", "install", f"{oci_registry.host}/mp-evil/tiny:v1", code=2).stderr
    assert "link or special file" in err
    assert not (home / "models" / "tiny").exists()
    escape = _tar({"../outside.gguf": gguf_bytes}, "tar")
    push_modelpack(oci_registry.host, "mp-evil/tiny", "v2",
                   [("application/vnd.cncf.model.weight.v1.tar", "x.gguf", escape)])
    cli.fail("model", "install", f"{oci_registry.host}/mp-evil/tiny:v2", code=2)
    assert not (home / "models" / "outside.gguf").exists()


@pytest.mark.registry
def test_a_container_image_or_unknown_artifact_is_refused_with_what_it_is(
        cli, home: Path, oci_registry) -> None:  # noqa: ANN001
    rootfs = _tar({"bin/sh": b"\x7fELF" + b"\x00" * 4096}, "tar+gzip")
    push_modelpack(oci_registry.host, "img/busy", "1", [
        ("application/vnd.oci.image.layer.v1.tar+gzip", "", rootfs)],
        config_type="application/vnd.oci.image.config.v1+json", artifact_type=None)
    err = cli.fail("model", "install", f"{oci_registry.host}/img/busy:1", code=2).stderr
    assert "a container image (1 layer(s))" in err and "podman" in err
    # Refused before any layer came: only what the manifest is was read.
    assert not (home / "store" / "blobs" / "sha256"
                / hashlib.sha256(rootfs).hexdigest()).exists()
    push_modelpack(oci_registry.host, "art/helm", "1", [
        ("application/vnd.cncf.helm.chart.content.v1.tar+gzip", "chart.tgz", b"x" * 64)],
        config_type="application/vnd.cncf.helm.config.v1+json", artifact_type=None)
    err = cli.fail("model", "install", f"{oci_registry.host}/art/helm:1", code=2).stderr
    assert "application/vnd.cncf.helm.config.v1+json" in err


@pytest.mark.registry
def test_the_oras_client_reads_what_sxpm_pushes_and_sxpm_installs_what_oras_pushes(
        cli, home: Path, sample_dir: Path, oci_registry, gguf_bytes: bytes,  # noqa: ANN001
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The oras Python client against the real registry on loopback: it pulls an sxpm
    model as files under their names, byte for byte, and a GGUF it pushes the way
    `oras push` users do (ModelPack media types, no version) installs with sxpm."""
    import oras.client

    client = oras.client.OrasClient(hostname=oci_registry.host, insecure=True)
    ref = f"{oci_registry.host}/oras/tiny-llama:1.0.0"
    cli("pack", "model", sample_dir / "tiny-llama", "--ref", ref)
    cli("push", ref, "--insecure")
    assert client.get_manifest(ref) == cli("inspect", ref, "--json").json["manifest"]
    out = tmp_path / "pulled"
    pulled = [Path(p) for p in client.pull(target=ref, outdir=str(out))]
    names = {p.relative_to(out).as_posix() for p in pulled}
    expected = {p.relative_to(sample_dir / "tiny-llama").as_posix()
                for p in (sample_dir / "tiny-llama").rglob("*") if p.is_file()}
    assert "model.gguf" in names and names <= expected, (names, expected)
    for name in names:
        assert (out / name).read_bytes() == (sample_dir / "tiny-llama" / name).read_bytes()

    work = tmp_path / "push"
    work.mkdir()
    (work / "model.gguf").write_bytes(gguf_bytes)
    (work / "config.json").write_text(json.dumps({
        "descriptor": {"name": "from-oras"}, "config": {"format": "gguf"},
        "modelfs": {"type": "layers", "diffIds": []}}))
    monkeypatch.chdir(work)  # oras-py names each layer by its path under the cwd
    target = f"{oci_registry.host}/oras/from-oras:v2"
    client.push(target=target, files=["model.gguf:application/vnd.cncf.model.weight.v1.raw"],
                manifest_config=f"config.json:{MODEL_CONFIG}", quiet=True)
    cli("model", "install", target)
    tree = home / "models" / "from-oras" / "v2"
    assert (tree / "model.gguf").read_bytes() == gguf_bytes
    info = cli("model", "info", target, "--json").json
    assert (info["name"], info["version"]) == ("from-oras", "v2")
