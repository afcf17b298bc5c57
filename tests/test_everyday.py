"""The everyday path: install, pull and run by name through the index; one-step removal,
disk usage, integrity at load, one JSON shape (issue 14)."""

from __future__ import annotations

import json
import os
import subprocess
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


# --- 5. lifecycle -----------------------------------------------------------------------


def blob_bytes(home: Path, *also: str) -> int:
    """What the store's blobs (and ``also``) take on disk, as `du` counts it: each inode
    once, so a blob an installed tree hard-links counts once."""
    out = subprocess.run(["du", "-scb", str(home / "store" / "blobs"),
                          *(str(home / a) for a in also)], capture_output=True, text=True,
                         check=True).stdout
    return int(out.split()[-2])


def test_rm_name_removes_refs_trees_and_the_blobs_in_one_step(user) -> None:  # noqa: ANN001
    user("model", "install", "tiny-llama@^1.0", "-q")
    user("model", "install", "tiny-llama@~1.0", "--variant", "F16", "-q")
    tree = user.home / "models" / "tiny-llama" / "1.1.0"
    weights = os.stat(tree / "model.gguf")
    assert weights.st_nlink == 2  # the store's blob and the tree's hard link
    usage = {r["ref"].rsplit(":", 1)[1]: r for r in user("du", "--json").json["artifacts"]}
    assert set(usage) == {"1.0.0", "1.1.0"}
    # 1.0.0's image index lists an F32 variant too: its weights are 1.1.0's, so shared.
    assert usage["1.1.0"]["shared"] >= weights.st_size
    assert usage["1.1.0"]["size"] >= usage["1.1.0"]["shared"] + usage["1.1.0"]["reclaimable"]
    assert usage["1.0.0"]["reclaimable"] > 0
    before = blob_bytes(user.home)
    out = user("rm", "tiny-llama@1.1.0", "--json").json[0]
    assert not tree.exists()
    assert [r.rsplit(":", 1)[1] for r in out["refs"]] == ["1.1.0"]
    assert out["bytes_freed"] == before - blob_bytes(user.home) == usage["1.1.0"]["reclaimable"]
    assert (user.home / "models" / "tiny-llama" / "1.0.0" / "model.gguf").is_file()
    usage = user("du", "--json").json["artifacts"]
    before = blob_bytes(user.home)
    out = user("rm", "tiny-llama", "--json").json[0]
    assert out["bytes_freed"] == before - blob_bytes(user.home) == usage[0]["reclaimable"]
    assert usage[0]["reclaimable"] >= weights.st_size  # the F32 weights went too
    assert user("du", "--json").json == {"artifacts": [], "total": 0}
    assert user("model", "list", "--json").json == []
    user.fail("rm", "tiny-llama", code=2)


def _drop_ref(home: Path) -> None:
    """A ref lost behind sxpm's back (an older sxpm, a hand edit): only the tree is left."""
    path = home / "store" / "index.json"
    index = json.loads(path.read_text())
    index["manifests"] = []
    os.chmod(path, 0o644)
    path.write_text(json.dumps(index))


def test_gc_keeps_what_an_installed_tree_uses_and_counts_only_real_bytes(user) -> None:  # noqa: ANN001
    user("model", "install", "tiny-llama@^1.0", "-q")
    _drop_ref(user.home)
    # The tree's manifest is a root; only the image index above it goes.
    assert user("gc", "--json").json["blobs"] == 1
    model = user.home / "models" / "tiny-llama" / "1.1.0" / "model.gguf"
    assert os.stat(model).st_nlink == 2
    # A tree with no record of its manifest roots nothing: its blobs go from the store,
    # but the bytes it hard-links stay on disk and are not counted as freed.
    record = model.parent / ".sxpm-install.json"
    data = json.loads(record.read_text())
    del data["digest"]
    record.write_text(json.dumps(data))
    before = blob_bytes(user.home, "models")
    out = user("gc", "--json").json
    assert out["blobs"] > 0
    assert out["bytes_freed"] == before - blob_bytes(user.home, "models") < 4096  # not the weights
    assert os.stat(model).st_nlink == 1 and model.read_bytes()[:4] == b"GGUF"


def test_rm_refuses_what_a_project_lock_pins(user, world: tuple[Path, Path],  # noqa: ANN001
                                             tmp_path: Path) -> None:
    proj = tmp_path / "proj"
    user("init", proj, "--index", str(world[0]))
    p = [f"--manifest-path={proj / 'simplex.toml'}"]
    user("add", "tiny-llama@~1.0", "--model", *p)
    user("install", *p, "-q")
    user("model", "install", "tiny-llama@~1.0", "--variant", "F32", "-q")
    refs = store_refs(user.home)
    r = user.fail("rm", "tiny-llama", code=2)
    assert str(proj) in r.stderr and "--force" in r.stderr
    assert store_refs(user.home) == refs
    assert (user.home / "models" / "tiny-llama" / "1.0.0").is_dir()
    user("rm", "tiny-llama", "--force")
    assert not (user.home / "models" / "tiny-llama").exists()
    locked = proj / ".simplex" / "models" / "tiny-llama" / "1.0.0" / "model.gguf"
    assert os.stat(locked).st_nlink == 2  # the lock is a gc root: its blobs stay
    assert user("gc", "--json").json["blobs"] == 0


# --- 7. integrity at load ---------------------------------------------------------------


@pytest.mark.llama
def test_run_refuses_a_changed_install_and_repair_relinks_it(user) -> None:  # noqa: ANN001
    user("model", "install", "tiny-llama@^1.0", "-q")
    model = user.home / "models" / "tiny-llama" / "1.1.0" / "model.gguf"
    good = model.read_bytes()
    from sxpm.installed.records import read_stamps

    os.environ["SIMPLEX_HOME"], saved = str(user.home), os.environ.get("SIMPLEX_HOME")
    try:
        stamps = read_stamps(model.parent)  # kept in the home, outside the tree
    finally:
        if saved is None:
            del os.environ["SIMPLEX_HOME"]
        else:
            os.environ["SIMPLEX_HOME"] = saved
    assert stamps is not None and stamps["model.gguf"][0] == len(good)
    os.utime(model, ns=(1, 1))  # touched, not changed: one re-hash confirms it
    user("run", "tiny-llama", "-p", "hi", "-n", "1")
    os.chmod(model, 0o644)
    with open(model, "r+b") as fh:  # written through the hard link: the store's copy too
        fh.seek(len(good) - 16)
        fh.write(b"\0" * 16)
    r = user.fail("run", "tiny-llama", "-p", "hi", "-n", "1", code=1)
    assert "changed since it was installed" in r.stderr and "--repair" in r.stderr
    hint = r.stderr.split("hint: ")[-1] if "hint: " in r.stderr else r.stderr
    assert "sxpm model install " in hint
    user("model", "install", "tiny-llama@^1.0", "--repair", "-q")
    assert model.read_bytes() == good
    user("run", "tiny-llama", "-p", "hi", "-n", "1")
