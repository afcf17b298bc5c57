"""An expert is checked against its base (name, version requirement, pinned sha256 and
quantization, the adapter's architecture) at `sxpm expert install` and at `sxpm run`."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

from test_runner import packed

from sxpm.artifacts.pack import pack
from sxpm.home import Home
from sxpm.ops.install import install as do_install


def _pack(home: Path, sample_dir: Path, registry_dir: Path) -> Home:
    """test_runner's packed home (tiny-llama 1.0.0 F32 + F16, other-llama 1.0.0,
    sql-expert for tiny-llama ^1.0, multi-expert for tiny-llama ^1.0 F32 and other-llama
    ^1.0), nothing installed, and tiny-llama 2.0.0."""
    h = packed(home, sample_dir, registry_dir, install=False)
    pack(h, "model", sample_dir / "tiny-llama", h.parse_ref(f"oci:{registry_dir}/tiny-llama:2.0.0"))
    return h


def test_expert_for_base_1_is_refused_on_base_2(cli, home: Path, sample_dir: Path,  # noqa: ANN001
                                                registry_dir: Path) -> None:
    h = _pack(home, sample_dir, registry_dir)
    cli("model", "install", f"oci:{registry_dir}/tiny-llama:2.0.0")
    r = cli.fail("expert", "install", f"oci:{registry_dir}/sql-expert:2.1.0", code=2)
    assert "needs tiny-llama ^1.0, not 2.0.0" in r.stderr
    assert "sxpm model install tiny-llama@^1.0" in r.stderr
    assert len(r.stderr.strip().splitlines()) <= 2  # the error and its hint
    assert cli("expert", "list", "--json").json == []  # nothing installed
    r = cli.fail("expert", "install", f"oci:{registry_dir}/sql-expert:2.1.0",
                 "--for", "tiny-llama", code=2)
    assert "needs tiny-llama ^1.0, not 2.0.0" in r.stderr
    # installed behind the check's back: `sxpm run` refuses it before loading anything
    do_install(h, h.parse_ref(f"oci:{registry_dir}/sql-expert:2.1.0"))
    r = cli.fail("run", "tiny-llama", "--expert", "sql-expert", "-p", "x", code=2)
    assert "needs tiny-llama ^1.0, not 2.0.0" in r.stderr
    assert "sxpm model install tiny-llama@^1.0" in r.stderr


def test_an_expert_installed_before_its_base_says_what_to_install(
        cli, home: Path, sample_dir: Path, registry_dir: Path) -> None:  # noqa: ANN001
    _pack(home, sample_dir, registry_dir)
    ref = f"oci:{registry_dir}/sql-expert:2.1.0"
    r = cli("expert", "install", ref)
    assert "installed expert sql-expert 2.1.0 for tiny-llama" in r.stdout
    assert "note: its base model tiny-llama is not installed" in r.stderr
    assert "sxpm model install tiny-llama@^1.0" in r.stderr
    cli("model", "install", f"oci:{registry_dir}/tiny-llama:1.0.0")
    assert "note:" not in cli("expert", "install", ref).stderr


def test_install_without_for_picks_the_installed_base_that_fits(
        cli, home: Path, sample_dir: Path, registry_dir: Path) -> None:  # noqa: ANN001
    _pack(home, sample_dir, registry_dir)
    ref = f"oci:{registry_dir}/multi-expert:1.0.0"
    # tiny-llama 2.0.0 does not meet ^1.0; other-llama 1.0.0 does
    cli("model", "install", f"oci:{registry_dir}/tiny-llama:2.0.0")
    cli("model", "install", f"oci:{registry_dir}/other-llama:1.0.0")
    out = cli("expert", "install", ref, "--json").json
    assert out["variant"] == "other-llama"
    assert (Path(out["path"]) / "adapters" / "other-llama.gguf").is_file()


def test_pinned_quantization_is_checked(cli, home: Path, sample_dir: Path,  # noqa: ANN001
                                        registry_dir: Path) -> None:
    h = _pack(home, sample_dir, registry_dir)
    ref = f"oci:{registry_dir}/multi-expert:1.0.0"
    cli("model", "install", f"oci:{registry_dir}/tiny-llama:1.0.0", "--variant", "F16")
    r = cli.fail("expert", "install", ref, "--for", "tiny-llama", code=2)
    assert "quantized F32, not F16" in r.stderr and "tiny-llama@^1.0" in r.stderr
    assert cli("expert", "list", "--json").json == []
    do_install(h, h.parse_ref(ref), variant="tiny-llama")
    r = cli.fail("run", "tiny-llama", "--expert", "multi-expert", "-p", "x", code=2)
    assert "quantized F32, not F16" in r.stderr


def _sql_copy(sample_dir: Path, tmp_path: Path, name: str, base: dict[str, str]) -> Path:
    src = tmp_path / name
    shutil.copytree(sample_dir / "sql-expert", src)
    manifest = json.loads((src / "manifest.json").read_text())
    manifest.update(name=name, base_model=base)
    (src / "manifest.json").write_text(json.dumps(manifest))
    return src


def test_pinned_sha256_is_checked(cli, home: Path, tmp_path: Path, sample_dir: Path,  # noqa: ANN001
                                  registry_dir: Path) -> None:
    h = _pack(home, sample_dir, registry_dir)
    cli("model", "install", f"oci:{registry_dir}/tiny-llama:1.0.0", "--variant", "F32")
    good = hashlib.sha256((sample_dir / "tiny-llama" / "model.gguf").read_bytes()).hexdigest()
    for name, digest in (("pinned-expert", good), ("wrong-expert", "0" * 64)):
        src = _sql_copy(sample_dir, tmp_path, name,
                        {"name": "tiny-llama", "version": "^1.0", "sha256": digest})
        pack(h, "expert", src, h.parse_ref(f"oci:{registry_dir}/{name}:2.1.0"))
    out = cli("expert", "install", f"oci:{registry_dir}/pinned-expert:2.1.0", "--json").json
    assert out["name"] == "pinned-expert"
    r = cli.fail("expert", "install", f"oci:{registry_dir}/wrong-expert:2.1.0", code=2)
    assert "pins tiny-llama's weights to sha256:000000000000" in r.stderr
    do_install(h, h.parse_ref(f"oci:{registry_dir}/wrong-expert:2.1.0"))
    r = cli.fail("run", "tiny-llama", "--expert", "wrong-expert", "-p", "x", code=2)
    assert "pins tiny-llama's weights" in r.stderr


def test_adapter_of_another_architecture_is_refused_at_install(
        cli, home: Path, tmp_path: Path, sample_dir: Path,  # noqa: ANN001
        registry_dir: Path) -> None:
    import samples

    h = _pack(home, sample_dir, registry_dir)
    cli("model", "install", f"oci:{registry_dir}/tiny-llama:1.0.0", "--variant", "F32")
    src = samples.write_foreign_expert(tmp_path / "gpt-expert")
    pack(h, "expert", src, h.parse_ref(f"oci:{registry_dir}/gpt-expert:1.0.0"))
    r = cli.fail("expert", "install", f"oci:{registry_dir}/gpt-expert:1.0.0", code=2)
    assert "adapter is for architecture 'gpt2', the model is 'llama'" in r.stderr
    assert cli("expert", "list", "--json").json == []


def test_for_a_model_the_manifest_does_not_name_is_refused(
        cli, home: Path, sample_dir: Path, registry_dir: Path) -> None:  # noqa: ANN001
    _pack(home, sample_dir, registry_dir)
    cli("model", "install", f"oci:{registry_dir}/other-llama:1.0.0")
    r = cli.fail("expert", "install", f"oci:{registry_dir}/sql-expert:2.1.0",
                 "--for", "other-llama", code=2)
    assert "manifest names tiny-llama" in r.stderr and "sxpm model install tiny-llama@^1.0" \
        in r.stderr
    assert cli("expert", "list", "--json").json == []
