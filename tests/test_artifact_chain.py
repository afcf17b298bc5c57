"""The name trusted is the name installed, and a lock installs only what chains from the
digest it pins (issue 13, items 2 and 3), against a real layout registry."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from sxpm.core.oci import Descriptor
from sxpm.core.reference import Reference
from sxpm.transport.layout import LayoutRepository


@pytest.fixture
def signed(cli, sample_dir: Path, registry_dir: Path, tmp_path: Path) -> dict[str, str]:  # noqa: ANN001
    """tiny-llama 1.0.0 (F32, F16) signed; other-llama and innocent 1.0.0 unsigned."""
    reg = f"oci:{registry_dir}"
    ref = f"{reg}/tiny-llama:1.0.0"
    cli("pack", "model", sample_dir / "tiny-llama", "--ref", ref, "--variant", "F32")
    cli("pack", "model", sample_dir / "tiny-llama-f16", "--ref", ref, "--variant", "F16")
    cli("push", ref)
    key = tmp_path / "keys" / "k.pem"
    kid = cli("keygen", "--out", key, "--json").json["key_id"]
    cli("sign", ref, "--key", key)
    for name in ("other-llama", "innocent"):
        cli("pack", "model", sample_dir / "other-llama", "--ref", f"{reg}/{name}:1.0.0")
        cli("push", f"{reg}/{name}:1.0.0")
    return {"kid": kid, "reg": reg}


def _project(tmp_path: Path, reg: str, models: str, trust: str = "") -> Path:
    proj = tmp_path / "proj"
    proj.mkdir(exist_ok=True)
    (proj / "simplex.toml").write_text(
        f'[package]\nname = "p"\nversion = "0.1.0"\n\n[models]\n{models}\n\n'
        f'[registries]\ndefault = "{reg}"\n{trust}')
    return proj


def _record(lock: str, name: str) -> str:
    return re.search(r"\[\[artifact\]\]\nname = \"" + name + r"\"\n.*?\]\n(?=\n|$)", lock,
                     re.S).group(0)


# --- item 2: the name checked is the name installed ------------------------------------


def test_an_unsigned_artifact_cannot_be_installed_under_a_trusted_name(
        cli, signed: dict[str, str], tmp_path: Path) -> None:  # noqa: ANN001
    """A lock (or index line) naming tiny-llama but pointing at repository `innocent`:
    the policy was checked for `innocent`, the tree installed as tiny-llama."""
    proj = _project(tmp_path, signed["reg"], 'innocent = "1"')
    manifest = str(proj / "simplex.toml")
    cli("lock", "--manifest-path", manifest)
    lock = (proj / "simplex.lock").read_text()
    (proj / "simplex.lock").write_text(lock.replace('name = "innocent"',
                                                    'name = "tiny-llama"'))
    (proj / "simplex.toml").write_text(
        (proj / "simplex.toml").read_text() + '\n[trust]\nrules = [{ pattern = "tiny-*", '
        f'keys = ["{signed["kid"]}"] }}]\n')
    r = cli.fail("install", "--frozen", "--manifest-path", manifest, code=2)
    assert "name 'innocent'" in r.stderr and "'tiny-llama'" in r.stderr
    assert not (proj / ".simplex" / "models").exists()


def test_a_config_that_names_another_artifact_is_refused(
        cli2, signed: dict[str, str], registry_dir: Path) -> None:  # noqa: ANN001
    """The manifest says `innocent`, its config says `tiny-llama`: one artifact, two
    names; neither pull nor install picks one."""
    ref = Reference.parse(f"oci:{registry_dir}/innocent:1.0.0")
    repo = LayoutRepository(ref)
    desc, data = repo.get_manifest("1.0.0")
    obj = json.loads(data)
    config = json.loads(repo.layout.read_blob(Descriptor.from_dict(obj["config"])))
    config["descriptor"]["name"] = "tiny-llama"
    cdesc = repo.layout.put_bytes(json.dumps(config).encode(), obj["config"]["mediaType"])
    obj["config"]["digest"], obj["config"]["size"] = str(cdesc.digest), cdesc.size
    forged = repo.layout.put_bytes(json.dumps(obj).encode(), desc.media_type)
    repo.layout.set_ref("1.0.0", forged)
    for args in (("model", "install", str(ref)), ("pull", str(ref))):
        r = cli2.fail(*args, code=2)
        assert "'innocent'" in r.stderr and "'tiny-llama'" in r.stderr, r.stderr
    assert cli2("model", "list", "--json").json == []


# --- item 3: install --frozen verifies the chain -----------------------------------------


def test_frozen_install_refuses_a_manifest_the_locked_digest_does_not_list(
        cli, signed: dict[str, str], tmp_path: Path) -> None:  # noqa: ANN001
    """The record keeps the signed index's digest (and its signer) but installs the
    manifest of an unsigned artifact: refused, naming the record, nothing installed."""
    reg = signed["reg"]
    proj = _project(tmp_path, reg, 'tiny-llama = { version = "1", variant = "F16" }\n'
                                   'other-llama = "1"',
                    f'\n[trust]\nrules = [{{ pattern = "tiny-*", keys = ["{signed["kid"]}"] }}]\n')
    manifest = str(proj / "simplex.toml")
    cli("lock", "--manifest-path", manifest)
    lock = (proj / "simplex.lock").read_text()
    tiny, other = _record(lock, "tiny-llama"), _record(lock, "other-llama")
    assert "signer = " in tiny

    def field(record: str, key: str) -> str:
        return re.search(key + r" = (.*)\n", record).group(1)

    forged = tiny.replace(field(tiny, "manifest"), field(other, "manifest"))
    forged = forged[:forged.index("layers = [")] + other[other.index("layers = ["):]
    (proj / "simplex.lock").write_text(lock.replace(tiny, forged))
    r = cli.fail("install", "--frozen", "--manifest-path", manifest, code=2)
    assert "tiny-llama" in r.stderr and field(other, "manifest").strip('"') in r.stderr
    assert "not what its digest" in r.stderr
    assert not (proj / ".simplex" / "models").exists()


def test_frozen_install_refuses_another_variant_than_the_record_names(
        cli, signed: dict[str, str], tmp_path: Path) -> None:  # noqa: ANN001
    """Neighbour: a manifest the index does list, but not as the variant the lock
    records (F32's bytes under an F16 record)."""
    proj = _project(tmp_path, signed["reg"], 'tiny-llama = { version = "1", variant = "F16" }')
    manifest = str(proj / "simplex.toml")
    cli("lock", "--manifest-path", manifest)
    lock = (proj / "simplex.lock").read_text()
    (proj / "simplex.lock").write_text(lock.replace('variant = "F16"', 'variant = "F32"'))
    r = cli.fail("install", "--frozen", "--manifest-path", manifest, code=2)
    assert "variant 'F16'" in r.stderr and "not 'F32'" in r.stderr
    assert not (proj / ".simplex" / "models").exists()
