"""A lock stays portable (issue 14, item 3): it pins the image index and every variant's
manifest and layers, and each machine chooses its variant at install unless the project
pins one; against a real layout registry."""

from __future__ import annotations

import json
import re
import shutil
import tomllib
from pathlib import Path

import jsonschema
import pytest
from test_project import ROOT, _published_once, published, run_in  # noqa: F401

from sxpm.errors import CorruptBlobError, ManifestError
from sxpm.home import Home
from sxpm.installed.records import find_installed
from sxpm.ops.project import install_project
from sxpm.project.lock import Lock

SMALL = 1  # fits no variant: the policy takes the smallest (F16)
LARGE = 1 << 50  # fits every variant: the policy takes the largest (F32)


def _project(root: Path, registry: Path, model: str) -> Path:
    root.mkdir()
    (root / "simplex.toml").write_text(
        f'[package]\nname = "p"\nversion = "0.1.0"\n\n[models]\ntiny-llama = {model}\n\n'
        f'[registries]\ndefault = "oci:{registry}"\n')
    return root


@pytest.fixture
def portable(cli, published: Path, tmp_path: Path,  # noqa: ANN001, F811
             monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project requiring tiny-llama ~1.0 (F32 and F16) without a variant, locked; no
    index is reachable (a frozen install must not ask one)."""
    proj = _project(tmp_path / "proj", published, '"~1.0"')
    run_in(cli, proj)("lock")
    monkeypatch.setenv("SXPM_INDEX", "http://127.0.0.1:9/no-index")
    return proj


def _installed_variant(proj: Path) -> list[str]:
    return [i.record["variant"] for i in find_installed(proj / ".simplex", "model",
                                                        "tiny-llama")]


def test_the_lock_pins_every_variant_and_each_machine_chooses_at_install(
        cli, cli2, portable: Path, tmp_path: Path) -> None:  # noqa: ANN001
    text = (portable / "simplex.lock").read_text()
    data = tomllib.loads(text)
    jsonschema.validate(data, json.loads(
        (ROOT / "schemas" / "simplex-lock.schema.json").read_text()))
    assert data["version"] == 2
    (art,) = data["artifact"]
    assert "manifest" not in art and "variant" not in art and "layers" not in art
    assert [v["name"] for v in art["variants"]] == ["F32", "F16"]  # the index's order
    assert all([layer["path"] for layer in v["layers"]] == ["README.md", "model.gguf"]
               for v in art["variants"])
    assert Lock.loads(text).dumps() == text
    run_in(cli, portable)("lock", "--check")  # the same on any machine: nothing changed
    assert (portable / "simplex.lock").read_text() == text

    # Another machine gets the same lock; each chooses by its own memory, frozen.
    other = tmp_path / "other"
    other.mkdir()
    for name in ("simplex.toml", "simplex.lock"):
        shutil.copy(portable / name, other / name)
    small = install_project(portable, Home(cli.home), frozen=True, memory_budget=lambda: SMALL)
    large = install_project(other, Home(cli2.home), frozen=True, memory_budget=lambda: LARGE)
    assert _installed_variant(portable) == ["F16"] and _installed_variant(other) == ["F32"]
    assert [a.variant for a in small.report.installed] == ["F16"]
    assert [a.variant for a in large.report.installed] == ["F32"]
    for proj in (portable, other):
        assert (proj / "simplex.lock").read_text() == text
    # A variant chosen before stays when free memory moves: no reinstall churn.
    again = install_project(portable, Home(cli.home), frozen=True, memory_budget=lambda: LARGE)
    assert again.report.installed == [] and _installed_variant(portable) == ["F16"]
    # Through the CLI the machine's own budget decides; the tree says it is per machine.
    p = run_in(cli, portable)
    assert p("install", "--frozen", "--json").json["unchanged"] == ["tiny-llama"]
    assert "tiny-llama 1.0.0 (model, variant per machine: F32|F16)" in p("tree").stdout
    assert p("tree", "--json").json["artifacts"]["tiny-llama"]["variants"] == ["F32", "F16"]


def _variant_field(text: str, variant: str, key: str) -> str:
    found = re.search(r'\[\[artifact\.variants\]\]\nname = "' + variant + r'"\n(?:.*\n)*?'
                      + key + r' = "(sha256:[0-9a-f]{64})"', text)
    assert found is not None
    return found.group(1)


def test_a_tampered_variant_digest_is_refused_naming_it(cli, portable: Path) -> None:  # noqa: ANN001
    """Whichever variant this machine would choose: every locked variant must be the one
    the image index lists."""
    lock = portable / "simplex.lock"
    text = lock.read_text()
    f32 = _variant_field(text, "F32", "manifest")
    lock.write_text(text.replace(f32, "sha256:" + "0" * 64))
    out = cli.fail("install", "--frozen", "--manifest-path", str(portable / "simplex.toml"),
                   code=2)
    assert "variant 'F32'" in out.stderr and "sha256:" + "0" * 64 in out.stderr
    assert not (portable / ".simplex" / "models").exists()
    with pytest.raises(ManifestError, match="variant 'F32'"):
        install_project(portable, Home(cli.home), frozen=True, memory_budget=lambda: SMALL)
    assert not (portable / ".simplex" / "models").exists()


def test_the_chosen_variants_layers_must_be_the_locked_ones(cli, portable: Path) -> None:  # noqa: ANN001
    lock = portable / "simplex.lock"
    text = lock.read_text()
    start = text.index('name = "F16"')
    layer = re.compile(r'digest = "(sha256:[0-9a-f]{64})"').search(text, start)
    assert layer is not None
    lock.write_text(text[:layer.start(1)] + "sha256:" + "1" * 64 + text[layer.end(1):])
    with pytest.raises(CorruptBlobError, match="layers differ from the lock"):
        install_project(portable, Home(cli.home), frozen=True, memory_budget=lambda: SMALL)
    assert not (portable / ".simplex" / "models").exists()


def test_a_pinned_variant_locks_only_it(cli, published: Path,  # noqa: ANN001, F811
                                        tmp_path: Path) -> None:
    proj = _project(tmp_path / "proj", published, '{ version = "~1.0", variant = "F16" }')
    p = run_in(cli, proj)
    p("lock")
    text = (proj / "simplex.lock").read_text()
    data = tomllib.loads(text)
    assert data["version"] == 1  # what an older sxpm reads as before
    (art,) = data["artifact"]
    assert art["variant"] == "F16" and "manifest" in art and "variants" not in art
    install_project(proj, Home(cli.home), frozen=True, memory_budget=lambda: LARGE)
    assert _installed_variant(proj) == ["F16"]  # the pin, whatever the budget


def test_lock_versions() -> None:
    """Version 1 locks read as they are; a per-machine record needs version 2; a newer
    version than this sxpm knows is refused with the upgrade hint."""
    from test_roundtrip import LOCK_TEXT

    assert Lock.loads(LOCK_TEXT).dumps() == LOCK_TEXT
    d = "sha256:" + "a" * 64
    record = (f'\n[[artifact]]\nname = "m"\nkind = "model"\nversion = "1.0.0"\n'
              f'source = "localhost:5000/ns/m"\ndigest = "{d}"\ndependencies = []\n\n'
              f'[[artifact.variants]]\nname = "Q4"\nmanifest = "{d}"\nlayers = [\n]\n')
    head = (f'# simplex.lock: written by sxpm from simplex.toml; do not edit by hand.\n'
            f'version = VERSION\nrequirements-hash = "{d}"\n')
    two = head.replace("VERSION", "2") + record
    assert Lock.loads(two).dumps() == two
    with pytest.raises(ManifestError, match="need lock format 2"):
        Lock.loads(head.replace("VERSION", "1") + record)
    with pytest.raises(ManifestError) as info:
        Lock.loads(head.replace("VERSION", "3") + record)
    assert "newer than this sxpm" in info.value.message and "upgrade sxpm" in str(
        info.value.hint)
    for bad, why in (('manifest = "' + d + '"\ndependencies', "pins no single manifest"),
                     ("[[artifact.variants]]\nname = \"Q4\"", "locked twice")):
        text = two.replace("dependencies", bad, 1) if "manifest" in bad else \
            two + "\n" + bad + f'\nmanifest = "{d}"\nlayers = []\n'
        with pytest.raises(ManifestError, match=why):
            Lock.loads(text)


def test_a_bundle_of_a_portable_lock_carries_every_variant(
        cli, cli2, portable: Path, published: Path, tmp_path: Path) -> None:  # noqa: ANN001, F811
    """Made on a machine that installed F16 only, a bundle still lets an offline machine
    with more memory install F32."""
    install_project(portable, Home(cli.home), frozen=True, memory_budget=lambda: SMALL)
    bundle = tmp_path / "project.tar"
    cli("bundle", "create", "--lock", portable / "simplex.lock", "-o", bundle)
    shutil.rmtree(published)  # the registry is gone: only the bundle remains
    offline = tmp_path / "offline"
    offline.mkdir()
    for name in ("simplex.toml", "simplex.lock"):
        shutil.copy(portable / name, offline / name)
    cli2("bundle", "import", bundle)
    install_project(offline, Home(cli2.home), frozen=True, offline=True,
                    memory_budget=lambda: LARGE)
    assert _installed_variant(offline) == ["F32"]
