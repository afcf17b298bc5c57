"""simplex.toml, simplex.lock and reproducible installs, against a real layout registry."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import jsonschema
import pytest

ROOT = Path(__file__).resolve().parents[1]


def tree_digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def _published_once(tmp_path_factory: pytest.TempPathFactory, sample_dir: Path
                    ) -> tuple[Path, Path, Path]:
    """Built once per module: a registry with tiny-llama 1.0.0 (F32, F16), 1.1.0, 2.0.0,
    sql-expert 2.1.0 and simplex-hello 0.1.0, and the home that packed them.

    Returns (the pristine registry, the pristine home, the path tests see the registry
    at). Tests change both (move tags, sign, delete), so each gets fresh copies, put
    back at the same path: the home's refs name the registry by its path.
    """
    from conftest import Cli

    base = tmp_path_factory.mktemp("published")
    live = base / "registry"
    home = base / "home"
    home.mkdir()
    cli = Cli(home, base)
    reg = f"oci:{live}"
    for vers in ("1.0.0", "1.1.0", "2.0.0"):
        ref = f"{reg}/tiny-llama:{vers}"
        cli("pack", "model", sample_dir / "tiny-llama", "--ref", ref, "--variant", "F32")
        if vers == "1.0.0":
            cli("pack", "model", sample_dir / "tiny-llama-f16", "--ref", ref, "--variant", "F16")
        cli("push", ref)
    cli("pack", "expert", sample_dir / "sql-expert", "--ref", f"{reg}/sql-expert:2.1.0")
    cli("push", f"{reg}/sql-expert:2.1.0")
    cli("pack", "package", sample_dir / "simplex-hello", "--ref",
        f"{reg}/simplex-hello:0.1.0")
    cli("push", f"{reg}/simplex-hello:0.1.0")
    pristine = base / "registry.pristine"
    live.rename(pristine)
    return pristine, home, live


@pytest.fixture
def published(cli, _published_once: tuple[Path, Path, Path]) -> Path:  # noqa: ANN001
    """A registry with tiny-llama 1.0.0 (F32, F16), 1.1.0, 2.0.0 and sql-expert 2.1.0,
    and ``cli``'s home holding what was packed, as if this test had published them."""
    pristine, home, live = _published_once
    if live.exists():
        shutil.rmtree(live)
    shutil.copytree(pristine, live, symlinks=True)
    shutil.copytree(home, cli.home, symlinks=True, dirs_exist_ok=True)
    return live


@pytest.fixture
def project(tmp_path: Path, published: Path) -> Path:
    proj = tmp_path / "proj"
    proj.mkdir()
    (proj / "simplex.toml").write_text(f"""\
# my agent project
[package]
name = "my-agent"
version = "0.1.0"

[models]
# the base model
tiny-llama = {{ version = "~1.0", variant = "F16" }}

[experts]
sql-expert = "^2"

[registries]
default = "oci:{published}"
""")
    return proj


def run_in(cli, proj: Path):  # noqa: ANN001, ANN201
    def call(*args: str, **kw: object):  # noqa: ANN202
        return cli(*args, "--manifest-path", str(proj / "simplex.toml"), **kw)
    return call


def test_lock_and_install(cli, project: Path) -> None:  # noqa: ANN001
    p = run_in(cli, project)
    out = p("lock", "--json").json
    assert out["artifacts"] == {"tiny-llama": "1.0.0", "sql-expert": "2.1.0"}
    lock_text = (project / "simplex.lock").read_text()
    import tomllib

    data = tomllib.loads(lock_text)
    schema = json.loads((ROOT / "schemas" / "simplex-lock.schema.json").read_text())
    jsonschema.validate(data, schema)
    arts = {a["name"]: a for a in data["artifact"]}
    assert arts["tiny-llama"]["variant"] == "F16"
    assert arts["sql-expert"]["dependencies"] == ["tiny-llama"]
    assert [layer["path"] for layer in arts["tiny-llama"]["layers"]] == ["README.md",
                                                                        "model.gguf"]
    # Locking again changes nothing, byte for byte.
    assert p("lock", "--json").json["changed"] is False
    assert (project / "simplex.lock").read_text() == lock_text

    report = p("install", "--json").json
    assert sorted(report["installed"]) == ["sql-expert", "tiny-llama"]
    model = project / ".simplex" / "models" / "tiny-llama" / "1.0.0" / "model.gguf"
    assert model.is_file()
    assert (project / ".simplex" / "experts" / "sql-expert" / "2.1.0" / "adapter.gguf").is_file()
    again = p("install", "--frozen", "--json").json
    assert again["installed"] == [] and sorted(again["unchanged"]) == ["sql-expert",
                                                                       "tiny-llama"]
    tree = p("tree").stdout
    assert "sql-expert 2.1.0 (expert)" in tree and "tiny-llama 1.0.0 (model, F16)" in tree
    why = p("why", "tiny-llama", "--json").json["chains"]
    assert ["simplex.toml", "tiny-llama 1.0.0"] in why
    assert ["simplex.toml", "sql-expert 2.1.0", "tiny-llama 1.0.0"] in why


def test_two_homes_install_identical_trees(cli, cli2, project: Path, tmp_path: Path) -> None:  # noqa: ANN001
    run_in(cli, project)("lock")
    other = tmp_path / "other"
    shutil.copytree(project, other, ignore=shutil.ignore_patterns(".simplex"))
    run_in(cli, project)("install", "--frozen")
    run_in(cli2, other)("install", "--frozen")
    a = tree_digest(project / ".simplex")
    b = tree_digest(other / ".simplex")
    assert a == b and len(a) >= 5


def test_moved_tag_does_not_change_frozen_install(cli, cli2, project: Path,  # noqa: ANN001
                                                  sample_dir: Path, published: Path) -> None:
    p = run_in(cli, project)
    p("lock")
    locked = (project / "simplex.lock").read_text()
    # Re-publish tiny-llama:1.0.0 with other content: the tag moves.
    ref = f"oci:{published}/tiny-llama:1.0.0"
    cli("rm", ref)
    cli("pack", "model", sample_dir / "other-llama", "--ref", ref, "--variant", "F16")
    cli("push", ref)
    run_in(cli2, project)("install", "--frozen")
    installed = project / ".simplex" / "models" / "tiny-llama" / "1.0.0" / "model.gguf"
    want = hashlib.sha256((sample_dir / "tiny-llama-f16" / "model.gguf").read_bytes())
    assert hashlib.sha256(installed.read_bytes()).hexdigest() == want.hexdigest()
    assert (project / "simplex.lock").read_text() == locked


def test_locked_names_the_changed_requirement(cli, project: Path) -> None:  # noqa: ANN001
    p = run_in(cli, project)
    p("lock")
    p("add", "tiny-llama@^1", "--model", "--variant", "F32", "--no-lock")
    r = cli.fail("install", "--locked", "--manifest-path", str(project / "simplex.toml"),
                 code=2)
    assert "tiny-llama changed from ~1.0 variant=F16 to ^1 variant=F32" in r.stderr
    assert not (project / ".simplex").exists()


def test_update_moves_forward_and_lock_keeps_versions(cli, project: Path) -> None:  # noqa: ANN001
    p = run_in(cli, project)
    p("remove", "sql-expert", "--no-lock")
    p("add", "tiny-llama@^1", "--model", "--no-lock")
    out = p("lock", "--json").json
    assert out["artifacts"] == {"tiny-llama": "1.1.0"}
    toml = project / "simplex.toml"
    toml.write_text(toml.read_text().replace('"^1"', '"^1.0"'))
    lock_before = (project / "simplex.lock").read_text()
    p("lock")
    assert "1.1.0" in (project / "simplex.lock").read_text()
    assert (project / "simplex.lock").read_text() != lock_before  # requirements hash
    upd = p("update", "--json").json
    assert upd["artifacts"] == {"tiny-llama": "1.1.0"} and upd["changed"] is False


def test_add_and_remove_keep_comments(cli, project: Path) -> None:  # noqa: ANN001
    p = run_in(cli, project)
    p("add", "simplex-hello@^0.1", "--no-lock")
    p("add", "other@1.0", "--model", "--no-lock")
    text = (project / "simplex.toml").read_text()
    assert "# my agent project" in text and "# the base model" in text
    assert 'simplex-hello = "^0.1"' in text
    p("remove", "other", "--no-lock")
    assert "other" not in (project / "simplex.toml").read_text().split("[registries]")[0]
    cli.fail("remove", "ghost", "--manifest-path", str(project / "simplex.toml"), code=2)


def test_init(cli, tmp_path: Path) -> None:  # noqa: ANN001
    d = tmp_path / "new-proj"
    cli("init", str(d), "--registry", "oci:./reg")
    text = (d / "simplex.toml").read_text()
    assert 'name = "new-proj"' in text and 'default = "oci:./reg"' in text
    cli.fail("init", str(d), code=2)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("[package\nname = 1", "line 1 column"),
        ('[models]\ntiny = { versio = "1" }\n', "$.models.tiny"),
        ('[models]\n"Bad Name" = "1"\n', "not a valid name"),
        ('[models]\ntiny = "^^1"\n', "$.models.tiny"),
        ('[widgets]\nx = 1\n', "widgets"),
    ],
)
def test_bad_manifests(cli, tmp_path: Path, content: str, expected: str) -> None:  # noqa: ANN001
    proj = tmp_path / "bad"
    proj.mkdir()
    (proj / "simplex.toml").write_text(content)
    r = cli.fail("lock", "--manifest-path", str(proj / "simplex.toml"), code=2)
    assert expected in r.stderr and "simplex.toml" in r.stderr
    assert not (proj / "simplex.lock").exists()


def test_unknown_and_impossible(cli, project: Path) -> None:  # noqa: ANN001
    p = run_in(cli, project)
    toml = project / "simplex.toml"
    original = toml.read_text()
    toml.write_text(original.replace("sql-expert", "sql-exprt"))
    r = cli.fail("lock", "--manifest-path", str(toml), code=2)
    assert "sql-exprt" in r.stderr
    toml.write_text(original.replace('version = "~1.0"', 'version = "^2"'))
    r = cli.fail("lock", "--manifest-path", str(toml), code=2)
    assert "No version of" in r.stderr
    assert not (project / "simplex.lock").exists()
    toml.write_text(original)
    p("lock")


def test_lock_with_unknown_digest_fails_cleanly(cli, cli2, project: Path) -> None:  # noqa: ANN001
    p = run_in(cli, project)
    p("lock")
    lock = project / "simplex.lock"
    text = lock.read_text()
    import re

    digest = re.search(r'manifest = "(sha256:[0-9a-f]+)"', text).group(1)
    lock.write_text(text.replace(digest, "sha256:" + "0" * 64))
    r = cli2.fail("install", "--frozen", "--manifest-path", str(project / "simplex.toml"),
                  code=2)
    assert "0000000000" in r.stderr
    assert not (project / ".simplex").exists()


def test_newer_lock_format_is_refused(cli, project: Path) -> None:  # noqa: ANN001
    p = run_in(cli, project)
    p("lock")
    lock = project / "simplex.lock"
    lock.write_text(lock.read_text().replace("version = 1\n", "version = 7\n", 1))
    r = cli.fail("install", "--frozen", "--manifest-path", str(project / "simplex.toml"),
                 code=2)
    assert "newer than this sxpm" in r.stderr and "upgrade" in r.stderr


def test_offline_install_uses_the_store(cli, project: Path, published: Path) -> None:  # noqa: ANN001
    p = run_in(cli, project)
    p("lock")
    p("install", "--frozen")
    shutil.rmtree(project / ".simplex")
    shutil.rmtree(published)  # the registry is gone
    p("install", "--frozen", "--offline")
    assert (project / ".simplex" / "models" / "tiny-llama" / "1.0.0" / "model.gguf").exists()


def test_lock_against_the_index(cli, sample_dir: Path, tmp_path: Path,  # noqa: ANN001
                                registry_dir: Path) -> None:
    from test_index import git, make_checkout, merge

    idx = make_checkout(tmp_path / "index", registry_dir)
    for extra in (["--version", "1.0.0"], ["--version", "1.1.0"]):
        out = cli("publish", sample_dir / "tiny-llama", sample_dir / "tiny-llama-f16",
                  "--variant", "F32", "--variant", "F16", "--name", "tiny-llama", *extra,
                  "--index", idx, "--json", "-q").json
        merge(idx, out["branch"])
    out = cli("publish", sample_dir / "sql-expert", "--index", idx, "--json", "-q").json
    merge(idx, out["branch"])
    out = cli("yank", "tiny-llama@1.1.0", "--index", idx, "--json").json
    merge(idx, out["branch"])
    cli("index", "build", idx)
    git(idx, "add", "-A")
    git(idx, "commit", "-q", "-m", "Build search.json")

    proj = tmp_path / "proj"
    cli("init", proj, "--index", str(idx))
    p = run_in(cli, proj)
    p("add", "tiny-llama@^1", "--model", "--no-lock")
    p("add", "sql-expert@^2", "--expert", "--no-lock")
    locked = p("lock", "--json").json
    assert locked["artifacts"] == {"tiny-llama": "1.0.0", "sql-expert": "2.1.0"}  # 1.1.0 yanked
    import tomllib

    data = tomllib.loads((proj / "simplex.lock").read_text())
    assert data["index"]["source"] == str(idx)
    assert data["index"]["state"].startswith("sha256:")
    tiny = next(a for a in data["artifact"] if a["name"] == "tiny-llama")
    # No variant asked: the lock pins every variant (issue 14: a lock stays portable) ...
    assert "variant" not in tiny and [v["name"] for v in tiny["variants"]] == ["F32", "F16"]
    p("install", "--frozen")
    assert (proj / ".simplex" / "models" / "tiny-llama" / "1.0.0" / "model.gguf").exists()
    # ... and install takes the largest that fits this machine.
    record = json.loads((proj / ".simplex" / "models" / "tiny-llama" / "1.0.0"
                         / ".sxpm-install.json").read_text())
    assert record["variant"] == "F32"
    (proj / "simplex.toml").write_text((proj / "simplex.toml").read_text().replace(
        "tiny-llama", "tiny-lama"))
    r = cli.fail("lock", "--manifest-path", str(proj / "simplex.toml"), code=2)
    assert "did you mean tiny-llama" in r.stderr


def test_trust_policy_in_simplex_toml_is_enforced_and_recorded(cli, project: Path,  # noqa: ANN001
                                                               published: Path,
                                                               tmp_path: Path) -> None:
    key = tmp_path / "keys" / "publisher.pem"
    kid = cli("keygen", "--out", key, "--json").json["key_id"]
    toml = project / "simplex.toml"
    toml.write_text(toml.read_text() + f'\n[trust]\nkeys = ["{kid}"]\n')
    p = run_in(cli, project)
    # Nothing is signed yet: the policy refuses the lock, and nothing is written.
    r = cli.fail("install", "--manifest-path", str(toml), code=1)
    assert "signature" in r.stderr.lower()
    assert not (project / "simplex.lock").exists() and not (project / ".simplex").exists()
    for ref in (f"oci:{published}/tiny-llama:1.0.0", f"oci:{published}/sql-expert:2.1.0"):
        cli("sign", ref, "--key", key)
    p("install")
    import tomllib

    data = tomllib.loads((project / "simplex.lock").read_text())
    assert {a["name"]: a.get("signer") for a in data["artifact"]} == {
        "tiny-llama": f"key {kid}", "sql-expert": f"key {kid}"}
    # --insecure-skip-verify is the only way past, with a warning.
    other = tmp_path / "other-keys" / "k.pem"
    other_kid = cli("keygen", "--out", other, "--json").json["key_id"]
    toml.write_text(toml.read_text().replace(kid, other_kid))
    shutil.rmtree(project / ".simplex")  # installed trees were checked when installed
    cli.fail("install", "--frozen", "--manifest-path", str(toml), code=1)
    assert not (project / ".simplex" / "models").exists()
    ok = cli("install", "--frozen", "--insecure-skip-verify", "--manifest-path", str(toml))
    assert "warning: --insecure-skip-verify" in ok.stderr


FROZEN = """\
import sys
from sxpm.cli.main import main
sys.argv = ["sxpm", "install", "--frozen", "--manifest-path", sys.argv[1]]
try:
    main()
except SystemExit as exc:
    assert not exc.code, exc.code
heavy = sorted(n for n in sys.modules if n.split(".")[0] in (
    "jsonschema", "semantic_version", "requests", "urllib3", "filelock", "tomlkit", "oras"))
assert not heavy, heavy
"""


def test_noop_frozen_install_reads_only_the_lock(cli, project: Path) -> None:  # noqa: ANN001
    """Once simplex.toml passed its checks, a no-op `install --frozen` loads neither
    jsonschema nor the version library nor any transport."""
    import subprocess
    import sys

    p = run_in(cli, project)
    p("install")
    manifest = str(project / "simplex.toml")
    r = subprocess.run([sys.executable, "-c", FROZEN, manifest], env=cli.env, cwd=project,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "0 installed, 2 up to date" in r.stdout
    # Only passes are remembered: a broken file fails every time, with the same message.
    text = (project / "simplex.toml").read_text()
    (project / "simplex.toml").write_text(text.replace('"^2"', '"^^2"'))
    for _ in range(2):
        r = cli.fail("install", "--frozen", "--manifest-path", manifest, code=2)
        assert "$.experts.sql-expert" in r.stderr
    (project / "simplex.toml").write_text(text.replace("[registries]", "[widgets]\nx = 1\n"
                                                       "[registries]"))
    r = cli.fail("install", "--frozen", "--manifest-path", manifest, code=2)
    assert "widgets" in r.stderr
    (project / "simplex.toml").write_text(text)
    assert "0 installed, 2 up to date" in p("install", "--frozen").stdout


@pytest.mark.llama
def test_run_finds_the_model_and_expert_the_lock_pins(cli, project: Path) -> None:  # noqa: ANN001
    pytest.importorskip("llama_cpp")
    from conftest import Cli

    in_project = Cli(cli.home, project)
    r = in_project.fail("run", "tiny-llama", "-p", "hi", "--max-tokens", "2", code=2)
    assert "run `sxpm install --frozen`" in r.stderr or "No installed model" in r.stderr
    p = run_in(cli, project)
    p("install")
    assert not (cli.home / "models").exists()  # only the project has it
    out = in_project("run", "tiny-llama", "--expert", "sql-expert", "-p", "hi",
                     "--max-tokens", "4", "--json").json
    assert out["model"]["version"] == "1.0.0" and out["model"]["variant"] == "F16"
    assert out["text"]
    p("lock")
    (project / ".simplex" / "models").rename(project / "moved")
    r = in_project.fail("run", "tiny-llama", "-p", "hi", code=2)
    assert "locked in this project but not installed" in r.stderr


def test_add_looks_up_locks_and_installs_and_remove_undoes_it(cli, project: Path) -> None:  # noqa: ANN001
    """`sxpm add NAME` as uv's: the kind from where the project resolves, a caret lower
    bound of the newest version, then lock and install in one command; `remove` the
    same way back; `lock --check` fails (exit 1) on a stale lock and writes nothing."""
    from conftest import Cli

    p = run_in(cli, project)
    toml = project / "simplex.toml"
    p("install")
    expert = project / ".simplex" / "experts" / "sql-expert" / "2.1.0"
    assert expert.is_dir()
    out = p("remove", "sql-expert").stdout
    assert "removed expert sql-expert" in out and "removed sql-expert 2.1.0" in out
    assert not expert.exists()
    assert "sql-expert" not in (project / "simplex.lock").read_text()

    out = p("add", "sql-expert").stdout
    assert "added expert sql-expert ^2.1.0" in out
    assert 'sql-expert = "^2.1.0"' in toml.read_text()
    assert expert.is_dir() and "installed expert sql-expert 2.1.0" in out
    assert "is up to date (2 artifacts)" in p("lock", "--check").stdout
    lock_text = (project / "simplex.lock").read_text()
    text = toml.read_text()
    toml.write_text(text.replace('"~1.0"', '"^1"'))
    r = cli.fail("lock", "--check", "--manifest-path", str(toml), code=1)
    assert "tiny-llama changed from ~1.0 variant=F16 to ^1 variant=F16" in r.stderr
    assert (project / "simplex.lock").read_text() == lock_text
    toml.write_text(text)

    # The kind is the index's (here the registry's); a wrong flag says which is right.
    r = cli.fail("add", "tiny-llama", "--expert", "--manifest-path", str(toml), code=2)
    assert "tiny-llama is a model, not an expert" in r.stderr and "--model" in r.stderr
    r = cli.fail("add", "tiny-lama", "--manifest-path", str(toml), code=2)
    assert "tiny-lama" in r.stderr
    # An addition that cannot be locked leaves simplex.toml as it was.
    r = cli.fail("add", "simplex-hello", "--manifest-path", str(toml), code=2)
    assert "simplex-http" in r.stderr
    assert toml.read_text() == text and (project / "simplex.lock").read_text() == lock_text
    # --no-lock only edits.
    p("add", "simplex-hello", "--no-lock")
    assert 'simplex-hello = "^0.1.0"' in toml.read_text()
    assert (project / "simplex.lock").read_text() == lock_text
    p("remove", "simplex-hello", "--no-lock")

    # A project's installs show in `model list` and `model info`, from the project.
    here = Cli(cli.home, project)
    rows = here("model", "list", "--json").json
    assert [(r["name"], r["version"], r["project"]) for r in rows] == [
        ("tiny-llama", "1.0.0", "my-agent")]
    assert "my-agent" in here("model", "list").stdout
    info = here("model", "info", "tiny-llama", "--json").json
    assert info["version"] == "1.0.0" and info["project"] == "my-agent"
    assert Cli(cli.home, project.parent)("model", "list", "--json").json == []


def test_offline_install_with_a_fresh_lock_needs_no_frozen(cli, project: Path,  # noqa: ANN001
                                                           published: Path) -> None:
    p = run_in(cli, project)
    p("install")
    shutil.rmtree(project / ".simplex")
    shutil.rmtree(published)  # the registry is gone
    p("install", "--offline")
    assert (project / ".simplex" / "models" / "tiny-llama" / "1.0.0" / "model.gguf").exists()
    assert "unchanged" in p("lock", "--offline").stdout
    assert "up to date" in p("lock", "--check", "--offline").stdout


def test_resolver_names_the_real_cause(cli, project: Path) -> None:  # noqa: ANN001
    toml = project / "simplex.toml"
    toml.write_text(toml.read_text().replace('sql-expert = "^2"', 'simplex-hello = "*"'))
    r = cli.fail("lock", "--manifest-path", str(toml), code=2)
    assert "simplex-hello is a package, not an expert" in r.stderr
    assert "[dependencies]" in r.stderr


def test_features_choose_the_optional_requirements_installed(cli, project: Path) -> None:  # noqa: ANN001
    """Cargo's features: the lock holds every optional requirement; install and tree
    take the chosen set (default features unless told otherwise)."""
    toml = project / "simplex.toml"
    toml.write_text(toml.read_text().replace(
        'sql-expert = "^2"', 'sql-expert = { version = "^2", optional = true }')
        + '\n[features]\ndefault = []\nsql = ["sql-expert"]\nall-experts = ["sql"]\n')
    p = run_in(cli, project)
    expert = project / ".simplex" / "experts" / "sql-expert" / "2.1.0"
    out = p("install", "--json").json
    assert out["installed"] == ["tiny-llama"] and out["features"] == []
    import tomllib

    lock = tomllib.loads((project / "simplex.lock").read_text())
    assert sorted(a["name"] for a in lock["artifact"]) == ["sql-expert", "tiny-llama"]
    jsonschema.validate(lock, json.loads(
        (ROOT / "schemas" / "simplex-lock.schema.json").read_text()))
    assert not expert.exists()
    assert "sql-expert" not in p("tree").stdout
    shown = p("tree", "--features", "sql").stdout
    assert "(features: sql)" in shown and "sql-expert 2.1.0 (expert)" in shown
    out = p("install", "--features", "all-experts", "--json").json
    assert out["installed"] == ["sql-expert"] and out["features"] == ["all-experts", "sql"]
    assert expert.is_dir()
    assert p("install", "--json").json["removed"] == ["sql-expert 2.1.0"]
    assert not expert.exists()
    p("install", "--all-features", "--frozen")
    assert expert.is_dir()
    toml.write_text(toml.read_text().replace("default = []", 'default = ["sql"]'))
    assert p("install", "--json").json["features"] == ["sql"]
    assert expert.is_dir()
    p("install", "--no-default-features")
    assert not expert.exists()
    r = cli.fail("install", "--features", "gpu", "--manifest-path", str(toml), code=2)
    assert "no feature 'gpu'" in r.stderr and "all-experts, sql" in r.stderr
    toml.write_text(toml.read_text().replace('sql = ["sql-expert"]', 'sql = ["tiny-llama"]'))
    r = cli.fail("install", "--manifest-path", str(toml), code=2)
    assert "feature 'sql' enables 'tiny-llama', which is not optional" in r.stderr
