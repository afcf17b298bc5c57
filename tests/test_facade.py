"""The public face: ``import sxpm`` offers the library's workflows, each a function or
class that stays one however often it is called, and the import stays cheap."""

from __future__ import annotations

import pkgutil
import subprocess
import sys
import types
from pathlib import Path

import pytest

import sxpm

ROOT = Path(__file__).resolve().parents[1]
SAMPLE_INDEX = ROOT / "registry-index"
PUBLIC = {"pack", "push", "pull", "copy", "install", "lock", "load", "search", "info",
          "describe", "Home", "Reference", "Digest", "SxpmError"}
SUBMODULES = {m.name for m in pkgutil.iter_modules(sxpm.__path__)}


def _check_face() -> None:
    for name in PUBLIC:
        value = getattr(sxpm, name)
        assert not isinstance(value, types.ModuleType), name
        assert callable(value), name


def test_all_is_exactly_the_public_set_and_no_name_is_a_module() -> None:
    assert set(sxpm.__all__) == PUBLIC and len(sxpm.__all__) == len(PUBLIC)
    assert not PUBLIC & SUBMODULES, PUBLIC & SUBMODULES
    assert {"core", "ops", "project", "home", "errors"} <= SUBMODULES  # the check sees them
    _check_face()
    assert set(dir(sxpm)) >= PUBLIC
    with pytest.raises(AttributeError):
        sxpm.no_such_name  # noqa: B018


def test_import_sxpm_stays_cheap() -> None:
    code = ("import sys, sxpm\n"
            "heavy = sorted(n for n in sys.modules if n.split('.')[0] in ('requests', "
            "'jsonschema', 'cryptography', 'numpy', 'gguf', 'llama_cpp', 'sigstore'))\n"
            "assert not heavy, heavy\n"
            "sxpm.lock, sxpm.search, sxpm.Home\n"
            "heavy = sorted(n for n in sys.modules if n.split('.')[0] in ('requests', "
            "'jsonschema', 'cryptography', 'numpy'))\n"
            "assert not heavy, heavy\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr


def test_every_public_function_twice(lib_home, sample_dir: Path, registry_dir: Path,  # noqa: ANN001
                                     tmp_path: Path) -> None:
    home = sxpm.Home.from_env()
    assert home.root == lib_home.root.resolve()
    reg = f"oci:{registry_dir}"
    proj = tmp_path / "proj"
    proj.mkdir()
    (proj / "simplex.toml").write_text(
        f'[package]\nname = "app"\nversion = "0.1.0"\n\n[models]\ntiny-llama = "^1"\n\n'
        f'[registries]\ndefault = "{reg}"\n')
    for attempt in range(2):
        ref = sxpm.Reference.parse(f"{reg}/tiny-llama:1.0.0")
        assert sxpm.Digest.parse("sha256:" + "0" * 64).algorithm == "sha256"
        packed = sxpm.pack(home, "model", sample_dir / "tiny-llama", ref)
        assert packed.name == "tiny-llama" and packed.version == "1.0.0"
        pushed = sxpm.push(home, ref)
        pulled = sxpm.pull(home, ref)
        assert pulled.descriptor.digest == pushed.descriptor.digest == packed.descriptor.digest
        target = sxpm.Reference.parse(f"{reg}/mirror/tiny-llama:1.0.0")
        assert sxpm.copy(home, ref, target).descriptor.digest == packed.descriptor.digest
        installed = sxpm.install(home, ref)
        assert (installed.path / "model.gguf").is_file()
        info = sxpm.describe(home, ref)
        assert (info.kind, info.name, info.version) == ("model", "tiny-llama", "1.0.0")
        assert sxpm.describe(home, f"{reg}/tiny-llama:1.0.0").descriptor == info.descriptor
        session = sxpm.load("tiny-llama", home=home, install=False)
        assert session.model.name == "tiny-llama" and not session.loaded

        locked = sxpm.lock(proj, home)
        assert locked.lock.by_name()["tiny-llama"].version == "1.0.0"
        assert locked.changed is (attempt == 0)  # the second lock changes nothing
        assert (proj / "simplex.lock").is_file()

        found = sxpm.search("sql", index=str(SAMPLE_INDEX))
        assert [h.name for h in found.hits] == ["sql-expert"] and found.has_catalog
        about = sxpm.info("sql-expert", index=str(SAMPLE_INDEX))
        assert about.entry.vers == "2.1.0"
        assert [e.vers for e in about.versions] == ["2.0.0", "2.1.0"]
        with pytest.raises(sxpm.SxpmError):
            sxpm.info("no-such-name", index=str(SAMPLE_INDEX))
        _check_face()  # still the functions, not modules of the same name
