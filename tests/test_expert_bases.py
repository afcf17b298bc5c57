"""A v2 expert built for two bases installs for both, side by side, and `sxpm expert
install` without `--for` picks the installed base that fits (issue 14, item 4); through
the command line."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_expert_compat import _pack

from sxpm.core.names import INSTALL_RECORD

llama = pytest.mark.llama


def _bases(cli) -> dict[str, str]:  # noqa: ANN001
    """Installed trees of multi-expert: the base each is for -> its path."""
    return {r["variant"]: r["path"] for r in cli("expert", "list", "--json").json
            if r["name"] == "multi-expert"}


@pytest.fixture
def two_bases(cli, home: Path, sample_dir: Path, registry_dir: Path) -> str:  # noqa: ANN001
    """Both bases of multi-expert installed (tiny-llama F32, other-llama); its ref."""
    _pack(home, sample_dir, registry_dir)
    cli("model", "install", f"oci:{registry_dir}/tiny-llama:1.0.0", "--variant", "F32")
    cli("model", "install", f"oci:{registry_dir}/other-llama:1.0.0")
    return f"oci:{registry_dir}/multi-expert:1.0.0"


def test_one_expert_version_installs_for_two_bases_side_by_side(cli, two_bases: str) -> None:  # noqa: ANN001
    a = cli("expert", "install", two_bases, "--for", "tiny-llama", "--json").json
    b = cli("expert", "install", two_bases, "--for", "other-llama", "--json").json
    assert a["variant"] == "tiny-llama" and b["variant"] == "other-llama"
    assert a["path"] != b["path"]
    bases = _bases(cli)
    assert sorted(bases) == ["other-llama", "tiny-llama"]  # the first was not replaced
    for base, path in bases.items():
        assert (Path(path) / "adapters" / f"{base}.gguf").is_file()
        assert not (Path(path) / "adapters" / ("other-llama.gguf" if base == "tiny-llama"
                                               else "tiny-llama.gguf")).exists()
        assert (Path(path) / INSTALL_RECORD).is_file()
    # Installing for one again leaves the other alone.
    cli("expert", "install", two_bases, "--for", "tiny-llama")
    assert _bases(cli) == bases
    for base in bases:
        info = cli("expert", "info", "multi-expert", "--for", base, "--json").json
        assert info["variant"] == base and info["base_model"] == base
        assert any(f["path"] == f"adapters/{base}.gguf" for f in info["files"])
    assert "other-llama" in cli("expert", "info", "multi-expert", "--for", "other-llama").stdout
    out = cli("expert", "remove", "multi-expert", "--for", "other-llama").stdout
    assert "other-llama" in out
    assert _bases(cli) == {"tiny-llama": bases["tiny-llama"]}
    r = cli.fail("expert", "remove", "multi-expert", "--for", "other-llama", code=2)
    assert "for other-llama" in r.stderr
    cli("expert", "remove", "multi-expert")
    assert _bases(cli) == {}


@llama
def test_run_uses_the_weights_built_for_each_base(cli, two_bases: str) -> None:  # noqa: ANN001
    pytest.importorskip("llama_cpp")
    for base in ("tiny-llama", "other-llama"):
        cli("expert", "install", two_bases, "--for", base)
    args = ["-p", "hi", "--max-tokens", "2", "--threads", "2", "--json"]
    for base in ("other-llama", "tiny-llama"):  # whichever tree was installed last
        out = cli("run", base, "--expert", "multi-expert", *args).json
        adapter = out["expert"]["adapter"]
        assert adapter.endswith(f"adapters/{base}.gguf"), adapter
        assert Path(adapter).parent.parent == Path(_bases(cli)[base])


def test_install_without_for_names_the_base_it_chose(cli, home: Path, sample_dir: Path,  # noqa: ANN001
                                                     registry_dir: Path) -> None:
    _pack(home, sample_dir, registry_dir)
    ref = f"oci:{registry_dir}/multi-expert:1.0.0"
    r = cli.fail("expert", "install", ref, code=2)  # neither base installed
    assert "tiny-llama ^1.0" in r.stderr and "other-llama ^1.0" in r.stderr
    assert "sxpm model install tiny-llama@^1.0" in r.stderr
    assert cli("expert", "list", "--json").json == []
    cli("model", "install", f"oci:{registry_dir}/other-llama:1.0.0")
    out = cli("expert", "install", ref).stdout
    assert "for other-llama" in out
    cli("model", "install", f"oci:{registry_dir}/tiny-llama:1.0.0", "--variant", "F32")
    cli("expert", "remove", "multi-expert")
    r = cli.fail("expert", "install", ref, code=2)  # both fit: the user chooses
    assert "tiny-llama 1.0.0" in r.stderr and "other-llama 1.0.0" in r.stderr
    assert "--for" in r.stderr
    assert cli("expert", "list", "--json").json == []
    assert "for tiny-llama" in cli("expert", "install", ref, "--for", "tiny-llama").stdout
