"""The everyday path: install, pull and run by name through the index; one-step removal,
disk usage, integrity at load, one JSON shape (issue 14)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, sample_dir: Path) -> tuple[Path, Path]:
    """An index checkout and its layout registry: tiny-llama 1.0.0 (F32, F16), 1.1.0 (F32),
    2.0.0 (F32, yanked); sql-expert 2.1.0; simplex-hello 0.1.0. Returns (index, registry)."""
    from conftest import Cli
    from test_index import git, make_checkout, merge

    base = tmp_path_factory.mktemp("everyday")
    registry = base / "registry"
    publisher = base / "publisher"
    publisher.mkdir()
    cli = Cli(publisher, base)
    idx = make_checkout(base / "index", registry)

    def publish(*args: object) -> None:
        out = cli("publish", *args, "--index", idx, "--json", "-q").json
        merge(idx, out["branch"])

    publish(sample_dir / "tiny-llama", sample_dir / "tiny-llama-f16", "--variant", "F32",
            "--variant", "F16", "--name", "tiny-llama", "--version", "1.0.0")
    for vers in ("1.1.0", "2.0.0"):
        publish(sample_dir / "tiny-llama", "--variant", "F32", "--name", "tiny-llama",
                "--version", vers)
    publish(sample_dir / "sql-expert")
    publish(sample_dir / "simplex-hello")
    out = cli("yank", "tiny-llama@2.0.0", "--index", idx, "--json").json
    merge(idx, out["branch"])
    cli("index", "build", idx)
    git(idx, "add", "-A")
    git(idx, "commit", "-q", "-m", "Build search.json")
    return idx, registry


@pytest.fixture
def user(cli, world: tuple[Path, Path]):  # noqa: ANN001, ANN201
    """``cli`` with a fresh home whose config names only the index."""
    (cli.home / "config.json").write_text(json.dumps({"index": str(world[0])}))
    return cli


def store_refs(home: Path) -> list[str]:
    path = home / "store" / "index.json"
    if not path.exists():
        return []
    return [m["annotations"]["org.opencontainers.image.ref.name"]
            for m in json.loads(path.read_text())["manifests"]]


# --- 1. names ---------------------------------------------------------------------------


def test_model_install_by_name_takes_the_newest_match_not_yanked(user) -> None:  # noqa: ANN001
    out = user("model", "install", "tiny-llama@^1.0", "-q", "--json").json
    assert (out["name"], out["version"]) == ("tiny-llama", "1.1.0")  # 2.0.0 is yanked
    out = user("model", "install", "tiny-llama@~1.0", "--variant", "F16", "-q", "--json").json
    assert (out["version"], out["variant"]) == ("1.0.0", "F16")
    assert (user.home / "models" / "tiny-llama" / "1.0.0" / "model.gguf").is_file()
    refs = store_refs(user.home)
    assert any(r.endswith("/tiny-llama:1.1.0") for r in refs), refs
    assert any(r.endswith("/tiny-llama:1.0.0") for r in refs), refs
    listed = user("model", "list", "--json").json
    assert sorted(r["version"] for r in listed) == ["1.0.0", "1.1.0"]


def test_name_without_requirement_and_pull_and_expert_by_name(user) -> None:  # noqa: ANN001
    out = user("pull", "tiny-llama", "--variant", "F32", "-q", "--json").json
    assert out["ref"].endswith("/tiny-llama:1.1.0@" + out["digest"])
    out = user("expert", "install", "sql-expert@^2", "--for", "tiny-llama", "-q",
               "--json").json
    assert (out["name"], out["version"]) == ("sql-expert", "2.1.0")


def test_index_flag_and_env_choose_the_index(cli, world: tuple[Path, Path]) -> None:  # noqa: ANN001
    out = cli("model", "install", "tiny-llama@=1.0.0", "--index", world[0], "-q",
              "--json").json
    assert out["version"] == "1.0.0"
    out = cli("pull", "sql-expert", "-q", "--json", env={"SXPM_INDEX": str(world[0])}).json
    assert "/sql-expert:2.1.0@" in out["ref"]


@pytest.mark.parametrize(("args", "needle"), [
    (["model", "install", "tiny-lama"], "did you mean tiny-llama"),
    (["model", "install", "sql-expert"], "sql-expert is an expert, not a model"),
    (["expert", "install", "tiny-llama"], "use `sxpm model install tiny-llama`"),
    (["model", "install", "tiny-llama@^2"], "is yanked"),
    (["model", "install", "tiny-llama@^3"], "no version matching ^3"),
    (["model", "install", "tiny-llama@~1.1", "--variant", "F16"], "has no variant 'F16'"),
    (["pull", "nothing-like-it"], "full REF"),
])
def test_bad_names_are_one_line_exit_2_and_change_nothing(user, args: list[str],  # noqa: ANN001
                                                           needle: str) -> None:
    r = user.fail(*args, code=2)
    assert needle in r.stderr, r.stderr
    assert store_refs(user.home) == []
    assert not (user.home / "models").exists() or not any((user.home / "models").iterdir())


def test_a_full_ref_still_works(user, world: tuple[Path, Path]) -> None:  # noqa: ANN001
    out = user("model", "install", f"oci:{world[1]}/tiny-llama:1.0.0", "--variant", "F32",
               "-q", "--json").json
    assert (out["version"], out["variant"]) == ("1.0.0", "F32")


def test_the_index_line_must_name_what_the_registry_serves(cli, world: tuple[Path, Path],  # noqa: ANN001
                                                           tmp_path: Path) -> None:
    import shutil

    idx = tmp_path / "forged"
    shutil.copytree(world[0], idx)
    path = next(idx.glob("packages/**/sql-expert"))
    line = json.loads(path.read_text().splitlines()[0])
    tiny = json.loads(next(idx.glob("packages/**/tiny-llama")).read_text().splitlines()[0])
    line["digest"] = tiny["digest"]  # the line points at another artifact
    line["ref"] = tiny["ref"]
    path.write_text(json.dumps(line) + "\n")
    r = cli.fail("pull", "sql-expert", "--index", idx, "-q", code=2)
    assert "tiny-llama" in r.stderr and "record 'expert'" in r.stderr  # kind refused
    assert store_refs(cli.home) == []


def test_tags_lists_a_registry_without_an_index(cli, world: tuple[Path, Path]) -> None:  # noqa: ANN001
    out = cli("tags", f"oci:{world[1]}/tiny-llama", "--json").json
    assert out["tags"] == ["1.0.0", "1.1.0", "2.0.0"]
    assert cli("tags", f"oci:{world[1]}/sql-expert").stdout.split() == ["2.1.0"]
    cli.fail("tags", f"oci:{world[1]}/sql-expert:2.1.0", code=2)
