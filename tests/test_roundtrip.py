"""The quick start path: pack, push to a layout registry, pull into a fresh home."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_pack_push_pull_install_into_a_second_home(cli, cli2, sample_dir: Path,  # noqa: ANN001
                                                   registry_dir: Path) -> None:
    model_ref = f"oci:{registry_dir}/tiny-llama:1.0.0"
    expert_ref = f"oci:{registry_dir}/sql-expert:2.1.0"
    cli("pack", "model", sample_dir / "tiny-llama", "--ref", model_ref, "--variant", "F32")
    cli("pack", "model", sample_dir / "tiny-llama-f16", "--ref", model_ref, "--variant", "F16")
    cli("pack", "expert", sample_dir / "sql-expert", "--ref", expert_ref)
    pushed = cli("push", model_ref, "--json").json
    assert pushed["blobs_transferred"] == 5  # 2 weights, 2 configs, 1 shared README
    # The registry is a plain OCI layout per repository, readable by other tools.
    repo = registry_dir / "tiny-llama"
    assert json.loads((repo / "oci-layout").read_text()) == {"imageLayoutVersion": "1.0.0"}
    index = json.loads((repo / "index.json").read_text())
    assert index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"] == "1.0.0"
    # Pushing again sends nothing.
    assert cli("push", model_ref, "--json").json["blobs_transferred"] == 0
    cli("push", expert_ref)

    pulled = cli2("pull", model_ref, "--json").json
    assert pulled["variants"] == ["F32"]  # default: the first variant's layers
    assert pulled["digest"] == pushed["digest"]
    # Delta: the second variant shares the README and fetches only its own files.
    f16 = cli2("pull", model_ref, "--variant", "F16", "--json").json
    assert f16["blobs_transferred"] == 2 and f16["blobs_skipped"] == 1
    cli2("pull", expert_ref)
    refs = {row["ref"]: row for row in cli2("list", "--json").json}
    assert refs[model_ref]["kind"] == "model" and refs[model_ref]["variants"] == ["F32", "F16"]
    assert refs[expert_ref]["kind"] == "expert"

    installed = cli2("model", "install", model_ref, "--json").json
    path = Path(installed["path"]) / "model.gguf"
    assert sha(path) == sha(sample_dir / "tiny-llama" / "model.gguf")  # byte-identical
    # Installed files are hard links into the store, not copies.
    blob = cli2.home / "store" / "blobs" / "sha256" / sha(path)
    assert path.stat().st_ino == blob.stat().st_ino
    assert cli2("model", "list", "--json").json[0]["name"] == "tiny-llama"
    assert cli2("verify").returncode == 0
    cli2("model", "remove", "tiny-llama@1.0.0")
    assert cli2("model", "list", "--json").json == []
    assert blob.exists()  # the store keeps it until gc and rm


@pytest.mark.llama
def test_llama_cpp_generates_from_the_pulled_file(cli, cli2, sample_dir: Path,  # noqa: ANN001
                                                  registry_dir: Path) -> None:
    pytest.importorskip("llama_cpp")
    ref = f"oci:{registry_dir}/tiny-llama:1.0.0"
    cli("pack", "model", sample_dir / "tiny-llama", "--ref", ref)
    cli("push", ref)
    installed = cli2("model", "install", ref, "--json").json
    model = Path(installed["path"]) / "model.gguf"
    script = (
        "import sys, llama_cpp\n"
        "m = llama_cpp.Llama(model_path=sys.argv[1], n_ctx=64, seed=0, verbose=False,"
        " n_threads=2)\n"
        "print(m.create_completion('Hello', max_tokens=8, temperature=0)['choices'][0]['text'])\n"
    )
    import sys

    out = subprocess.run([sys.executable, "-c", script, str(model)], capture_output=True,
                         text=True, timeout=120, check=True).stdout
    assert len(out.strip()) > 0


def test_gc_and_rm(cli, sample_dir: Path, registry_dir: Path) -> None:  # noqa: ANN001
    ref = f"oci:{registry_dir}/tiny-llama:1.0.0"
    cli("pack", "model", sample_dir / "tiny-llama", "--ref", ref)
    assert cli("gc", "--json").json["blobs"] == 0
    cli("rm", "--keep-blobs", ref)  # rm collects by itself; --keep-blobs leaves it to gc
    freed = cli("gc", "--json").json
    assert freed["blobs"] == 4  # weights, README, config, manifest
    assert cli("list", "--json").json == []
    cli.fail("rm", ref, code=2)


def test_verify_names_a_corrupt_blob(cli, sample_dir: Path, registry_dir: Path) -> None:  # noqa: ANN001
    ref = f"oci:{registry_dir}/tiny-llama:1.0.0"
    cli("pack", "model", sample_dir / "tiny-llama", "--ref", ref)
    digest = sha(sample_dir / "tiny-llama" / "README.md")
    path = cli.home / "store" / "blobs" / "sha256" / digest
    path.chmod(0o644)
    path.write_text("tampered")
    r = cli.fail("verify", code=1)
    assert f"sha256:{digest}" in r.stderr


def test_corrupt_registry_blob_is_not_stored(cli, cli2, sample_dir: Path,  # noqa: ANN001
                                             registry_dir: Path) -> None:
    ref = f"oci:{registry_dir}/tiny-llama:1.0.0"
    cli("pack", "model", sample_dir / "tiny-llama", "--ref", ref)
    cli("push", ref)
    digest = sha(sample_dir / "tiny-llama" / "model.gguf")
    bad = registry_dir / "tiny-llama" / "blobs" / "sha256" / digest
    bad.chmod(0o644)
    data = bytearray(bad.read_bytes())
    data[1000] ^= 0xFF
    bad.write_bytes(bytes(data))
    r = cli2.fail("pull", ref, code=1)
    assert f"sha256:{digest}" in r.stderr and "mismatch" in r.stderr.lower()
    assert not (cli2.home / "store" / "blobs" / "sha256" / digest).exists()
    assert cli2("list", "--json").json == []


def test_cli_basics(cli) -> None:  # noqa: ANN001
    from sxpm import __version__

    assert cli("--version").stdout.strip().endswith(__version__)
    top = cli("--help").stdout
    commands = ["pack", "push", "pull", "copy", "inspect", "list", "rm", "gc", "verify",
                "model"]
    for name in commands:
        assert name in top
        assert "Example:" in cli(name, "--help").stdout, name
    for sub in ["list", "install", "remove", "info"]:
        assert "Example:" in cli("model", sub, "--help").stdout, sub


def test_debug_shows_a_traceback(cli) -> None:  # noqa: ANN001
    r = cli("--debug", "inspect", "localhost:5000/x:1", ok=False)
    assert r.returncode == 2
    assert "Traceback" in r.stderr
    plain = cli.fail("inspect", "localhost:5000/x:1", code=2)
    assert "Traceback" not in plain.stderr


D1 = "sha256:" + "1" * 64
D2 = "sha256:" + "2" * 64
LOCK_TEXT = f"""\
# simplex.lock: written by sxpm from simplex.toml; do not edit by hand.
version = 1
requirements-hash = "{D1}"

[index]
source = "https://index.example/simplex"
state = "{D2}"

[[requirement]]
name = "tiny-llama"
kind = "model"
req = "~1.0"

[[artifact]]
name = "sql-expert"
kind = "expert"
version = "2.1.0"
source = "oci:/srv/registry/sql-\U0001f600"
digest = "{D1}"
manifest = "{D1}"
dependencies = ["tiny-llama"]
layers = [
  {{ path = "adapter.gguf", digest = "{D2}", size = 3, media-type = "application/x" }},
]

[[artifact]]
name = "tiny-llama"
kind = "model"
version = "1.0.0"
source = "localhost:5000/simplex/tiny-llama"
digest = "{D1}"
manifest = "{D2}"
variant = "F16"
dependencies = []
layers = [
]
"""


def test_lock_and_index_sources_are_typed_and_written_back_byte_for_byte() -> None:
    """Sources and refs are read once into repository references (no tag, no digest)
    and written back as the same bytes."""
    from sxpm.core.reference import Reference
    from sxpm.errors import IndexFormatError, ManifestError
    from sxpm.index.format import IndexEntry, load_line, parse_lines
    from sxpm.project.lock import Lock

    lock = Lock.loads(LOCK_TEXT)
    assert lock.dumps() == LOCK_TEXT
    by_name = lock.by_name()
    assert by_name["tiny-llama"].source == Reference("localhost:5000", "simplex/tiny-llama")
    assert by_name["sql-expert"].source.is_layout
    with pytest.raises(ManifestError, match=r"artifact\[1\]\.source"):
        Lock.loads(LOCK_TEXT.replace("tiny-llama\"\ndigest", "tiny-llama:1.0.0\"\ndigest"))
    # A lock that an older sxpm wrote from a relative `oci:` registry still reads.
    old = Lock.loads(LOCK_TEXT.replace("oci:/srv/registry", "oci:./registry"))
    assert old.by_name()["sql-expert"].source.repository.startswith("/")

    line = ('{"name":"tiny-llama","vers":"1.0.0","kind":"model",'
            '"ref":"localhost:5000/simplex/tiny-llama","digest":"' + D1 + '",'
            '"artifactType":"application/x","size":3,"deps":[],"variants":[],"yanked":false}')
    entry = IndexEntry.from_dict(load_line(line, source="x", line=1))
    assert entry.ref == Reference("localhost:5000", "simplex/tiny-llama")
    assert entry.to_line() == line
    for bad, why in (("localhost:5000/simplex/tiny-llama:1.0.0", "no tag or digest"),
                     ("http://evil.example/tiny-llama", "scheme 'http'"),
                     ("oci:/srv/reg/../etc", "'..'"), ("oci:/srv/reg/", "write the repository")):
        with pytest.raises(IndexFormatError, match=why):
            parse_lines(line.replace("localhost:5000/simplex/tiny-llama", bad), source="x",
                        check=False)
