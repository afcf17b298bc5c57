"""The registry index: format, verify/build, search/info, location, publish and yank.

Publishing goes to real `oci:` layout registries and a real git checkout; reading over
HTTP uses a real nginx on loopback (see ``nginx_index``), whose access log shows every
request and its status, so the ETag / 304 path is checked for real.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from static_server import NGINX, Nginx, serve_static

from sxpm.core.names import normalize_name
from sxpm.core.versions import version_key
from sxpm.index.format import index_path

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "registry-index"


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True,
                          text=True).stdout


def make_checkout(path: Path, registry: Path, *, extra: dict | None = None) -> Path:
    """A fresh index repository whose config allows the layout registry ``registry``."""
    path.mkdir(parents=True)
    config = {"format": 1, "default_registry": f"oci:{registry}", **(extra or {})}
    (path / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    git(path, "init", "-q", "-b", "main")
    git(path, "config", "user.name", "Index Test")
    git(path, "config", "user.email", "index@example.org")
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", "Start the index")
    return path


def merge(checkout: Path, branch: str) -> None:
    """What merging the pull request does."""
    git(checkout, "checkout", "-q", "main")
    git(checkout, "merge", "-q", "--ff-only", branch)


def copy_sample(dest: Path) -> Path:
    shutil.copytree(SAMPLE, dest, ignore=shutil.ignore_patterns(".github"))
    return dest


def lines_of(index: Path, name: str) -> list[dict]:
    text = (index / index_path(name)).read_text()
    return [json.loads(line) for line in text.splitlines() if line.strip()]


# --- format -------------------------------------------------------------------------


def test_paths_follow_the_crates_io_layout() -> None:
    assert index_path("a") == "packages/1/a"
    assert index_path("qa") == "packages/2/qa"
    assert index_path("bge") == "packages/3/b/bge"
    assert index_path("tiny-llama") == "packages/ti/ny/tiny-llama"
    assert index_path("Tiny_Llama") == "packages/ti/ny/tiny-llama"
    assert normalize_name("SQL_Expert") == "sql-expert"
    for bad in ["a/b", "..", "a..b", "/etc", "-x", ""]:
        with pytest.raises(ValueError):
            index_path(bad)


def test_version_order_is_semver_precedence() -> None:
    versions = ["1.0.0", "1.0.0-alpha", "1.0.0-alpha.1", "1.0.0-beta.2", "1.0.0-beta.11",
                "0.9.10", "0.9.9", "1.0.0-rc.1", "10.0.0"]
    assert sorted(versions, key=version_key) == [
        "0.9.9", "0.9.10", "1.0.0-alpha", "1.0.0-alpha.1", "1.0.0-beta.2", "1.0.0-beta.11",
        "1.0.0-rc.1", "1.0.0", "10.0.0"]


# --- the sample index, verify and build -----------------------------------------------------


def test_sample_index_verifies_and_its_catalogue_is_current(cli, tmp_path: Path) -> None:  # noqa: ANN001
    report = cli("index", "verify", SAMPLE, "--json").json
    assert report["problems"] == [] and report["lines"] >= 8
    copy = copy_sample(tmp_path / "idx")
    cli("index", "build", copy)
    # search.json is generated, deterministic, and the committed one is up to date.
    assert (copy / "search.json").read_text() == (SAMPLE / "search.json").read_text()
    workflow = (SAMPLE / ".github" / "workflows" / "index.yml").read_text()
    assert "sxpm index verify" in workflow and "sxpm index build" in workflow
    assert "pull_request" in workflow


def test_build_skips_fully_yanked_names_and_prefers_releases(cli, tmp_path: Path) -> None:  # noqa: ANN001
    idx = copy_sample(tmp_path / "idx")
    path = idx / index_path("bge")
    line = json.loads(path.read_text())
    line["yanked"] = True
    path.write_text(json.dumps(line) + "\n")
    tl = idx / index_path("tiny-llama")
    pre = json.loads(tl.read_text().splitlines()[-1])
    pre["vers"] = "2.0.0-rc.1"
    tl.write_text(tl.read_text() + json.dumps(pre) + "\n")
    cli("index", "verify", idx)
    cli("index", "build", idx)
    catalog = json.loads((idx / "search.json").read_text())
    rows = {r[0]: r for r in catalog["packages"]}
    assert "bge" not in rows
    assert rows["tiny-llama"][2] == "1.1.0" and rows["tiny-llama"][6] == 3


@dataclass
class Bad:
    line: str
    expect: str


BAD_LINES = {
    "not-json": Bad('{"name": "tiny-llama", ', "not valid JSON"),
    "schema": Bad('{"name": "tiny-llama", "vers": "1.0"}', "semantic version"),
    "slash": Bad('{"name": "ti/ny"}', "not a valid name"),
    "dotdot": Bad('{"name": "ti..ny"}', "not a valid name"),
}


@pytest.mark.parametrize("case", sorted(BAD_LINES))
def test_verify_refuses_bad_lines_with_file_and_line(cli, tmp_path: Path, case: str) -> None:  # noqa: ANN001
    idx = copy_sample(tmp_path / "idx")
    path = idx / index_path("tiny-llama")
    good = json.loads(path.read_text().splitlines()[0])
    bad = BAD_LINES[case]
    obj = None
    try:
        obj = json.loads(bad.line)
    except ValueError:
        pass
    text = bad.line if obj is None else json.dumps({**good, **obj})
    path.write_text(path.read_text() + text + "\n")
    r = cli.fail("index", "verify", idx, code=2)
    assert "packages/ti/ny/tiny-llama:3" in r.stderr and bad.expect in r.stderr, r.stderr
    # A client reading the name refuses it the same way, with the file and line.
    r = cli.fail("info", "tiny-llama", "--index", idx, code=2)
    assert "tiny-llama:3" in r.stderr and bad.expect in r.stderr, r.stderr


def _append(idx: Path, file_of: str, **changes: object) -> Path:
    path = idx / index_path(file_of)
    lines = path.read_text().splitlines()
    obj = {**json.loads(lines[-1]), **changes}
    path.write_text(path.read_text() + json.dumps(obj) + "\n")
    return path


def test_verify_refuses_collisions_refs_order_and_duplicates(cli, tmp_path: Path) -> None:  # noqa: ANN001
    idx = copy_sample(tmp_path / "idx")
    _append(idx, "sql-expert", name="SQL_Expert", vers="3.0.0")
    _append(idx, "tiny-llama", vers="1.2.0", ref="http://evil.example/tiny-llama")
    _append(idx, "qa", vers="0.4.0", ref="docker.io/someone/qa")
    _append(idx, "bge", vers="0.1.0")
    _append(idx, "multi-expert", vers="1.0.0")
    report = cli("index", "verify", idx, "--json", ok=False)
    assert report.returncode == 2
    problems = {(p["file"], p["line"]): p["message"] for p in report.json["problems"]}
    assert "collides with 'sql-expert'" in problems[("packages/sq/l-/sql-expert", 3)]
    assert "scheme 'http'" in problems[("packages/ti/ny/tiny-llama", 3)]
    assert "not in a registry this index allows" in problems[("packages/2/qa", 2)]
    assert "out of order" in problems[("packages/3/b/bge", 2)]
    assert "duplicates line 1" in problems[("packages/mu/lt/multi-expert", 2)]
    assert len(problems) == 5
    # Text output lists every problem; stderr has one line.
    r = cli.fail("index", "verify", idx, code=2)
    assert "5 problem(s)" in r.stderr and len(r.stdout.strip().splitlines()) == 5
    r = cli.fail("info", "tiny-llama", "--index", idx, code=2)
    assert "tiny-llama:3" in r.stderr and "scheme 'http'" in r.stderr


def test_a_file_in_the_wrong_place_is_reported(cli, tmp_path: Path) -> None:  # noqa: ANN001
    idx = copy_sample(tmp_path / "idx")
    wrong = idx / "packages" / "zz" / "zz" / "zzzz"
    wrong.parent.mkdir(parents=True)
    shutil.copy(idx / index_path("qa"), wrong)
    report = cli("index", "verify", idx, "--json", ok=False).json
    assert report["problems"][0]["file"] == "packages/zz/zz/zzzz"
    assert "belongs in packages/2/qa" in report["problems"][0]["message"]


# --- search and info ------------------------------------------------------------------------


def test_search_ranks_names_then_tags_and_descriptions(cli) -> None:  # noqa: ANN001
    hits = cli("search", "sql", "--index", SAMPLE, "--json").json
    assert [h["name"] for h in hits] == ["sql-expert"]
    assert hits[0]["version"] == "2.1.0" and hits[0]["kind"] == "expert"
    names = [h["name"] for h in cli("search", "llama", "--index", SAMPLE, "--json").json]
    assert names == ["tiny-llama"]
    # "model" only appears in descriptions; a name match ranks first.
    found = [h["name"] for h in cli("search", "model", "--index", SAMPLE, "--json").json]
    assert set(found) == {"tiny-llama", "multi-expert", "simplex-hello", "bge"}
    assert [h["name"] for h in cli("search", "test", "--index", SAMPLE, "--json").json] == [
        "tiny-llama"]  # a tag
    models = cli("search", "--kind", "model", "--index", SAMPLE, "--json").json
    assert {h["name"] for h in models} == {"tiny-llama", "bge"}
    assert cli("search", "Tiny_Llama", "--index", SAMPLE, "--json").json[0]["score"] == 10000
    text = cli("search", "sql", "--index", SAMPLE).stdout
    assert text.splitlines()[0].split() == ["NAME", "KIND", "VERSION", "SIZE", "DESCRIPTION"]
    assert "sql-expert" in text and "50.9 KiB" in text
    assert cli("search", "nothing-like-this", "--index", SAMPLE).stdout.strip() == "no match"


def test_info_shows_versions_variants_and_dependencies(cli) -> None:  # noqa: ANN001
    data = cli("info", "sql-expert", "--index", SAMPLE, "--json").json
    assert data["versions"] == [{"version": "2.0.0", "yanked": True},
                                {"version": "2.1.0", "yanked": False}]
    sel = data["selected"]
    assert sel["version"] == "2.1.0" and sel["license"] == "Apache-2.0"
    assert sel["dependencies"] == [{"name": "tiny-llama", "req": "^1.0", "kind": "model"}]
    assert sel["reference"] == f"{sel['ref']}@{sel['digest']}"
    text = cli("info", "sql-expert@2.0.0", "--index", SAMPLE).stdout
    assert "YANKED" in text and "2.0.0 (yanked)" in text and "base models:" in text
    text = cli("info", "tiny-llama@1.0.0", "--index", SAMPLE).stdout
    assert "F32:" in text and "F16:" in text and "needs" in text
    multi = cli("info", "multi-expert", "--index", SAMPLE, "--json").json["selected"]
    assert [v["base_model"] for v in multi["variants"]] == ["tiny-llama", "other-llama"]
    cli.fail("info", "no-such-name", "--index", SAMPLE, code=2)
    r = cli.fail("info", "sql-expert@9.9.9", "--index", SAMPLE, code=2)
    assert "2.0.0, 2.1.0" in r.stderr


def test_index_location_precedence(cli, tmp_path: Path) -> None:  # noqa: ANN001
    a = copy_sample(tmp_path / "a")
    b = copy_sample(tmp_path / "b")
    c = copy_sample(tmp_path / "c")
    d = copy_sample(tmp_path / "d")
    for idx, label in [(a, "A"), (b, "B"), (c, "C"), (d, "D")]:
        catalog = json.loads((idx / "search.json").read_text())
        catalog["packages"][0][4] = f"from {label}"
        (idx / "search.json").write_text(json.dumps(catalog))

    def source(*args: str, env: dict | None = None, cwd: Path | None = None) -> str:
        old = cli.cwd
        cli.cwd = cwd or old
        try:
            return cli("search", "bge", "--json", *args, env=env).json[0]["description"]
        finally:
            cli.cwd = old

    r = cli.fail("search", "bge", code=2)
    assert "No index is configured" in r.stderr and "SXPM_INDEX" in r.stderr
    (cli.home / "config.json").write_text(json.dumps({"index": str(d)}))
    assert source() == "from D"
    project = tmp_path / "project"
    (project / "sub").mkdir(parents=True)
    (project / "simplex.toml").write_text(
        '[package]\nname = "p"\nversion = "0.1.0"\n\n[registries]\nindex = "../c"\n')
    assert source(cwd=project / "sub") == "from C"  # found walking up, relative to the toml
    assert source(env={"SXPM_INDEX": str(b)}, cwd=project) == "from B"
    assert source("--index", str(a), env={"SXPM_INDEX": str(b)}, cwd=project) == "from A"
    r = cli.fail("search", "x", "--index", str(tmp_path / "missing"), code=2)
    assert "not a directory" in r.stderr


# --- publish and yank to real layout registries and a real git checkout ----------------------


@pytest.fixture
def checkout(tmp_path: Path, registry_dir: Path) -> Path:
    return make_checkout(tmp_path / "index", registry_dir)


def test_publish_expert_then_pull_it_by_the_index_line(cli, cli2, sample_dir: Path,  # noqa: ANN001
                                                        checkout: Path,
                                                        registry_dir: Path) -> None:
    out = cli("publish", sample_dir / "sql-expert", "--index", checkout, "--json",
              "-q").json
    entry = out["entry"]
    assert out["branch"] == "publish/sql-expert-2.1.0" and out["resumed"] is False
    assert "gh pr create" in out["pr_command"] and "--base main" in out["pr_command"]
    assert entry["ref"] == f"oci:{registry_dir}/sql-expert"
    assert entry["dependencies"] == [{"name": "tiny-llama", "req": "^1.0", "kind": "model"}]
    assert entry["tags"] == ["sql", "text-to-sql"] and entry["license"] == "Apache-2.0"
    assert git(checkout, "rev-parse", "--abbrev-ref", "HEAD").strip() == out["branch"]
    assert git(checkout, "log", "-1", "--format=%s").strip() == "Publish sql-expert 2.1.0"
    assert git(checkout, "status", "--porcelain") == ""
    # --json names the line's keys in the CLI's one style (docs/store.md, "JSON keys").
    renamed = {"vers": "version", "deps": "dependencies", "artifactType": "artifact_type"}
    assert [{renamed.get(k, k): v for k, v in line.items()}
            for line in lines_of(checkout, "sql-expert")] == [entry]
    # Another machine pulls exactly what the line names.
    pulled = cli2("pull", f"{entry['ref']}@{entry['digest']}", "--json", "-q").json
    assert pulled["digest"] == entry["digest"]
    report = cli("index", "verify", checkout, "--check-registry", "--json").json
    assert report["problems"] == []
    # Versions are immutable: publishing 2.1.0 again is refused, whatever its content.
    r = cli.fail("publish", sample_dir / "sql-expert", "--index", checkout, code=2)
    assert "already published" in r.stderr
    cli("index", "build", checkout)
    assert cli("search", "sql", "--index", checkout, "--json").json[0]["name"] == "sql-expert"


def test_publish_model_variants_and_package(cli, sample_dir: Path, checkout: Path) -> None:  # noqa: ANN001
    out = cli("publish", sample_dir / "tiny-llama", sample_dir / "tiny-llama-f16",
              "--variant", "F32", "--variant", "F16", "--name", "tiny-llama",
              "--version", "1.0.0", "--index", checkout, "--description", "Tiny test model",
              "--tag", "llama", "--json", "-q").json
    entry = out["entry"]
    assert [v["name"] for v in entry["variants"]] == ["F32", "F16"]
    f32, f16 = entry["variants"]
    assert f32["size"] > f16["size"] > 0 and f32["memory"] > f16["memory"] > 0
    assert entry["size"] == f32["size"] and entry["kind"] == "model"
    assert entry["description"] == "Tiny test model" and entry["tags"] == ["llama"]
    r = cli.fail("publish", sample_dir / "simplex-hello", "--index", checkout, code=2)
    assert "git checkout main" in r.stderr
    git(checkout, "checkout", "-q", "main")
    pkg = cli("publish", sample_dir / "simplex-hello", "--index", checkout, "--json",
              "-q").json["entry"]
    assert {(d["name"], d["kind"]) for d in pkg["dependencies"]} == {("simplex-http", "package"),
                                                             ("tiny-llama", "model")}
    git(checkout, "checkout", "-q", "main")
    multi = cli("publish", sample_dir / "multi-expert", "--index", checkout, "--json",
                "-q").json["entry"]
    assert [(v["name"], v["base_model"]) for v in multi["variants"]] == [
        ("tiny-llama", "tiny-llama"), ("other-llama", "other-llama")]
    assert {d["name"] for d in multi["dependencies"]} == {"tiny-llama", "other-llama"}


def test_publish_interrupted_after_push_finishes_without_duplicates(
        cli, sample_dir: Path, checkout: Path) -> None:  # noqa: ANN001
    hook = checkout / ".git" / "hooks" / "pre-commit"
    hook.write_text("#!/bin/sh\necho 'hook refuses' >&2\nexit 1\n")
    hook.chmod(0o755)
    r = cli.fail("publish", sample_dir / "sql-expert", "--index", checkout, "-q", code=1)
    assert "git commit" in r.stderr and "run the same command again" in r.stderr
    # Pushed, line written, not committed.
    assert len(lines_of(checkout, "sql-expert")) == 1
    hook.unlink()
    out = cli("publish", sample_dir / "sql-expert", "--index", checkout, "--json", "-q").json
    assert out["resumed"] is True and out["pushed_blobs"] == 0
    assert len(lines_of(checkout, "sql-expert")) == 1
    assert git(checkout, "status", "--porcelain") == ""


def test_publish_refuses_a_different_uncommitted_line_and_bad_checkouts(
        cli, sample_dir: Path, checkout: Path, tmp_path: Path, registry_dir: Path) -> None:  # noqa: ANN001
    cli("publish", sample_dir / "sql-expert", "--index", checkout, "-q")
    git(checkout, "checkout", "-q", "main")
    # Same version, other content, left uncommitted on main: immutable.
    path = checkout / index_path("sql-expert")
    other = json.loads(git(checkout, "show", "publish/sql-expert-2.1.0:" + index_path(
        "sql-expert")))
    other["digest"] = "sha256:" + "0" * 64
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(other, separators=(",", ":")) + "\n")
    r = cli.fail("publish", sample_dir / "sql-expert", "--index", checkout, code=2)
    assert "already published" in r.stderr and "differs" in r.stderr
    path.unlink()
    (checkout / "stray.txt").write_text("x")
    r = cli.fail("publish", sample_dir / "sql-expert", "--index", checkout, code=2)
    assert "uncommitted changes (stray.txt)" in r.stderr
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "config.json").write_text(json.dumps({"format": 1,
                                                   "default_registry": f"oci:{registry_dir}"}))
    r = cli.fail("publish", sample_dir / "sql-expert", "--index", plain, code=2)
    assert "not a git checkout" in r.stderr
    r = cli.fail("publish", sample_dir / "sql-expert", "--index", checkout, "--registry",
                 f"oci:{tmp_path / 'elsewhere'}", code=2)
    assert "does not accept artifacts" in r.stderr


def test_yank_changes_only_the_yanked_field(cli, sample_dir: Path, checkout: Path) -> None:  # noqa: ANN001
    cli("publish", sample_dir / "sql-expert", "--index", checkout, "-q")
    r = cli.fail("yank", "sql-expert@2.1.0", "--index", checkout, code=2)
    assert "another publish or yank branch" in r.stderr
    merge(checkout, "publish/sql-expert-2.1.0")
    before = (checkout / index_path("sql-expert")).read_text()
    out = cli("yank", "sql-expert@2.1.0", "--index", checkout, "--json").json
    assert out["yanked"] is True and out["branch"] == "yank/sql-expert-2.1.0"
    after = (checkout / index_path("sql-expert")).read_text()
    assert after == before.replace('"yanked":false', '"yanked":true')
    diff = git(checkout, "diff", "HEAD~1", "--numstat")
    assert diff.split()[:2] == ["1", "1"]
    cli.fail("yank", "sql-expert@2.1.0", "--index", checkout, code=2)  # already yanked
    assert cli("info", "sql-expert", "--index", checkout, "--json").json["versions"] == [
        {"version": "2.1.0", "yanked": True}]
    cli("index", "build", checkout)
    assert cli("search", "sql", "--index", checkout, "--json").json == []
    git(checkout, "add", "search.json")
    git(checkout, "commit", "-q", "-m", "catalogue")
    merge(checkout, "yank/sql-expert-2.1.0")
    out = cli("yank", "sql-expert@2.1.0", "--undo", "--index", checkout, "--json").json
    assert out["yanked"] is False and out["branch"] == "unyank/sql-expert-2.1.0"
    assert (checkout / index_path("sql-expert")).read_text() == before
    cli.fail("yank", "sql-expert@9.0.0", "--index", checkout, code=2)
    cli.fail("yank", "sql-expert", "--index", checkout, code=2)


def test_publish_push_to_a_bare_remote_then_yank_unyank_yank(cli, sample_dir: Path,  # noqa: ANN001
                                                             checkout: Path,
                                                             tmp_path: Path) -> None:
    """`--push` sends the branch to the checkout's remote (a bare repository standing in
    for GitHub through git's own `insteadOf`) and prints GitHub's compare page; yank
    and un-yank work any number of times."""
    bare = tmp_path / "remote.git"
    git(tmp_path, "init", "-q", "--bare", "-b", "main", str(bare))
    github = "https://github.com/acme/simplex-index.git"
    git(checkout, "remote", "add", "origin", github)
    git(checkout, "config", f"url.{bare}.insteadOf", github)
    git(checkout, "push", "-q", "origin", "main")

    out = cli("publish", sample_dir / "sql-expert", "--index", checkout, "--push", "--json",
              "-q").json
    assert out["pushed_to"] == "origin"
    assert out["pr_url"] == ("https://github.com/acme/simplex-index/compare/"
                             "main...publish/sql-expert-2.1.0?expand=1")
    assert git(bare, "rev-parse", "publish/sql-expert-2.1.0").strip() == out["commit"]
    merge(checkout, "publish/sql-expert-2.1.0")

    branches = []
    for step, args in enumerate([(), ("--undo",), (), ("--undo",), ()]):
        r = cli("yank", "sql-expert@2.1.0", *args, "--index", checkout, "--push")
        branch = r.stdout.split(" on branch ")[1].split()[0]
        assert f"compare/main...{branch}?expand=1" in r.stdout
        assert git(bare, "rev-parse", branch).strip() == git(checkout, "rev-parse",
                                                             "HEAD").strip()
        merge(checkout, branch)
        yanked = lines_of(checkout, "sql-expert")[0]["yanked"]
        assert yanked is (step % 2 == 0), (step, r.stdout)
        branches.append(branch)
    assert branches == ["yank/sql-expert-2.1.0", "unyank/sql-expert-2.1.0",
                        "yank/sql-expert-2.1.0-2", "unyank/sql-expert-2.1.0-2",
                        "yank/sql-expert-2.1.0-3"]
    assert git(checkout, "rev-parse", "--abbrev-ref", "HEAD").strip() == "main"
    # A checkout without a remote says how to add one.
    git(checkout, "remote", "remove", "origin")
    r = cli.fail("yank", "sql-expert@2.1.0", "--undo", "--index", checkout, "--push",
                 code=2)
    assert "no remote" in r.stderr and "git remote add origin" in r.stderr


# --- over HTTP, through a real nginx --------------------------------------------------------


@pytest.fixture(scope="module")
def nginx_index(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Nginx]:
    if NGINX is None:
        pytest.skip("nginx is not installed (scripts/test installs nginx-light)")
    with serve_static(tmp_path_factory.mktemp("nginx")) as server:
        yield server


def test_http_index_is_cached_and_revalidated_with_etags(cli, nginx_index: Nginx,  # noqa: ANN001
                                                          request) -> None:  # noqa: ANN001
    sub = request.node.name.replace("_", "-")[:40]
    copy_sample(nginx_index.root / sub)
    url = nginx_index.url(sub)
    cold = cli("search", "sql", "--index", url, "--json").json
    assert cold[0]["name"] == "sql-expert"
    assert nginx_index.requests(sub) == [("search.json", 200, "-")]
    warm = cli("search", "sql", "--index", url, "--json").json
    assert warm == cold
    second = nginx_index.requests(sub)[1]
    assert second[:2] == ("search.json", 304) and second[2] != "-"  # sent If-None-Match
    assert (cli.home / "cache" / "index").is_dir()
    # info reads config.json and the name's file: cold 200s, then 304s.
    cli("info", "sql-expert", "--index", url)
    cli("info", "sql-expert", "--index", url)
    info_requests = nginx_index.requests(sub)[2:]
    assert sorted((p, s) for p, s, _ in info_requests) == [
        ("config.json", 200), ("config.json", 304),
        ("packages/sq/l-/sql-expert", 200), ("packages/sq/l-/sql-expert", 304)]
    # Offline: the cached copies, no request at all.
    count = len(nginx_index.requests(sub))
    assert cli("search", "sql", "--index", url, "--offline", "--json").json == cold
    data = cli("info", "sql-expert", "--index", url, "--offline", "--json").json
    assert data["selected"]["version"] == "2.1.0"
    assert len(nginx_index.requests(sub)) == count
    # A changed file is fetched again (new ETag), and its new content is used.
    time.sleep(1.1)  # nginx's ETag includes the modification time in seconds
    catalog = json.loads((nginx_index.root / sub / "search.json").read_text())
    catalog["packages"] = [r for r in catalog["packages"] if r[0] != "sql-expert"]
    (nginx_index.root / sub / "search.json").write_text(json.dumps(catalog))
    assert cli("search", "sql", "--index", url, "--json").json == []
    assert nginx_index.requests(sub)[-1][:2] == ("search.json", 200)
    # Unknown names are a 404, not an error; offline without a cache is a clear error.
    cli.fail("info", "nope", "--index", url, code=2)
    r = cli.fail("search", "sql", "--index", url, "--offline",
                 env={"SIMPLEX_HOME": str(cli.home.parent / "fresh-home")}, code=1)
    assert "not in the cache" in r.stderr


@pytest.mark.parametrize("validators", ["last-modified", "none"])
def test_index_behind_a_server_without_etag_is_cached_and_revalidated(  # noqa: ANN001
        cli, tmp_path: Path, validators: str) -> None:
    """nginx with `etag off` (Last-Modified alone), and with no validator at all: the
    files are kept, `--offline` reads them, and each read revalidates them (304 by
    date; by content hash when there is nothing else)."""
    if NGINX is None:
        pytest.skip("nginx is not installed (scripts/test installs nginx-light)")
    with serve_static(tmp_path / "nginx", validators=validators) as server:
        copy_sample(server.root / "idx")
        url = server.url("idx")
        cold = cli("info", "sql-expert", "--index", url, "--json").json
        count = len(server.requests("idx"))
        assert cli("info", "sql-expert", "--index", url, "--offline", "--json").json == cold
        assert len(server.requests("idx")) == count  # no request offline
        assert cli("info", "sql-expert", "--index", url, "--json").json == cold
        warm = sorted((path, status) for path, status, _ in server.requests("idx")[count:])
        again = 304 if validators == "last-modified" else 200
        assert warm == [("config.json", again), ("packages/sq/l-/sql-expert", again)]
        # A changed file is seen at once, online and then offline.
        time.sleep(1.1)  # Last-Modified has a resolution of one second
        path = server.root / "idx" / index_path("sql-expert")
        path.write_text(path.read_text().replace('"yanked":false', '"yanked":true'))
        versions = cli("info", "sql-expert", "--index", url, "--json").json["versions"]
        assert versions != cold["versions"] and all(v["yanked"] for v in versions)
        offline = cli("info", "sql-expert", "--index", url, "--offline", "--json").json
        assert offline["versions"] == versions


WARM_SEARCH = """\
import json, sys
from click.testing import CliRunner
from sxpm.cli.main import cli
r = CliRunner().invoke(cli, ["search", "sql", "--index", sys.argv[1], "--json"])
assert r.exit_code == 0, r.output
print(json.dumps({"hits": json.loads(r.output),
                  "requests": "requests" in sys.modules or "cachecontrol" in sys.modules}))
"""


def test_warm_http_search_revalidates_without_requests(cli, nginx_index: Nginx,  # noqa: ANN001
                                                        request) -> None:  # noqa: ANN001
    """A warm read revalidates CacheControl's own entry over http.client (304: the cached
    body); anything else (a changed file, a proxy in the environment) goes through
    requests + CacheControl, which keep the cache up to date."""
    import sys

    sub = request.node.name.replace("_", "-")[:40]
    copy_sample(nginx_index.root / sub)
    url = nginx_index.url(sub)

    def warm(**env: str) -> dict:  # type: ignore[type-arg]
        out = subprocess.run([sys.executable, "-c", WARM_SEARCH, url], env={**cli.env, **env},
                             capture_output=True, text=True, timeout=60, check=True)
        return json.loads(out.stdout)  # type: ignore[no-any-return]

    cold = cli("search", "sql", "--index", url, "--json").json  # fills the cache
    assert nginx_index.requests(sub) == [("search.json", 200, "-")]
    cache = cli.home / "cache" / "index"
    entries = [p for p in cache.rglob("*") if p.is_file() and not p.name.endswith(".lock")]
    assert len(entries) == 1 and entries[0].read_bytes().startswith(b"cc=4,")
    before = entries[0].stat().st_mtime_ns
    first = warm()
    assert first == {"hits": cold, "requests": False}
    log = nginx_index.requests(sub)
    assert len(log) == 2 and log[1][:2] == ("search.json", 304) and log[1][2] != "-"
    assert entries[0].stat().st_mtime_ns >= before  # headers refreshed, as on a 304
    # The entry is still CacheControl's: its own reader (offline, forced) takes it.
    from sxpm.index.client import IndexClient

    client = IndexClient(url, offline=True, cache_dir=cache)
    import sxpm.index.httpcache as fast

    orig, fast.read_offline = fast.read_offline, lambda *a: (False, None)
    try:
        assert client.search("sql")[0].name == "sql-expert"
    finally:
        fast.read_offline = orig
    # A proxy in the environment: requests' own path (which would use the proxy).
    assert warm(no_proxy="*", NO_PROXY="*", http_proxy="http://127.0.0.1:9") == {
        "hits": cold, "requests": True}
    assert nginx_index.requests(sub)[-1][:2] == ("search.json", 304)
    # A changed file: the 200 goes through CacheControl, which stores the new body ...
    time.sleep(1.1)  # nginx's ETag includes the modification time in seconds
    catalog = json.loads((nginx_index.root / sub / "search.json").read_text())
    catalog["packages"] = [r for r in catalog["packages"] if r[0] != "sql-expert"]
    (nginx_index.root / sub / "search.json").write_text(json.dumps(catalog))
    assert warm() == {"hits": [], "requests": True}
    assert [s for _p, s, _e in nginx_index.requests(sub)[-2:]] == [200, 200]
    # ... and the next warm read is a 304 again, without requests, with the new body.
    assert warm() == {"hits": [], "requests": False}
    assert nginx_index.requests(sub)[-1][:2] == ("search.json", 304)


def test_http_index_refuses_bad_lines_and_plain_http(cli, nginx_index: Nginx,  # noqa: ANN001
                                                      request) -> None:  # noqa: ANN001
    sub = request.node.name.replace("_", "-")[:40]
    idx = copy_sample(nginx_index.root / sub)
    path = idx / index_path("qa")
    path.write_text(path.read_text() + "{oops\n")
    r = cli.fail("info", "qa", "--index", nginx_index.url(sub), code=2)
    assert f"{nginx_index.url(sub)}packages/2/qa:2" in r.stderr and "not valid JSON" in r.stderr
    r = cli.fail("search", "x", "--index", "http://index.example.org/", code=2)
    assert "plain HTTP" in r.stderr


@pytest.mark.parametrize("query", ["sql", "SQL_expert", "llama test", "model", "", "zzz",
                                   "a", "expert tiny"])
def test_search_on_text_ranks_as_on_parsed_rows(query: str) -> None:
    from sxpm.index.search import load_catalog_rows, search, search_text

    text = (SAMPLE / "search.json").read_text()
    expected = search(load_catalog_rows(text, "s"), query, limit=None)
    assert search_text(text, query, limit=None) == expected
    # Any other layout of the same JSON (e.g. pretty-printed) gives the same answer.
    pretty = json.dumps(json.loads(text), indent=1)
    assert search_text(pretty, query, limit=None) == expected
    for kind in ("model", "expert"):
        assert search_text(text, query, kind=kind, limit=None) == search(
            load_catalog_rows(text, "s"), query, kind=kind, limit=None)


@pytest.mark.parametrize("url", ["http://127.0.0.1:8080/idx/search.json",
                                 "HTTPS://Index.Example.org/sub/packages/sq/l-/sql-expert",
                                 "https://index.example.org:8443/config.json"])
def test_fast_cache_key_and_path_are_cachecontrols(url: str, tmp_path: Path) -> None:
    import requests
    from cachecontrol.caches.file_cache import FileCache
    from cachecontrol.controller import CacheController

    from sxpm.index.httpcache import cache_key, entry_path

    key = CacheController.cache_url(requests.Request("GET", url).prepare().url)
    assert cache_key(url) == key
    assert str(entry_path(tmp_path, key)) == FileCache(str(tmp_path))._fn(key)
    for odd in ("http://user:pw@host/x", "http://host/a/../b", "http://host/x?q=1",
                "http://host/%41", "ftp://host/x"):
        assert cache_key(odd) is None  # falls back to requests + CacheControl


def test_fast_freshness_follows_cachecontrol() -> None:
    from email.utils import formatdate

    from sxpm.index.httpcache import is_fresh

    now = 1_700_000_000.0
    date = formatdate(now - 100, usegmt=True)
    assert is_fresh({"date": date, "cache-control": "public, max-age=600"}, now)
    assert not is_fresh({"date": date, "cache-control": "max-age=60"}, now)
    assert is_fresh({"date": date, "expires": formatdate(now + 10, usegmt=True)}, now)
    assert not is_fresh({"date": date}, now)  # no lifetime: revalidate
    assert not is_fresh({"cache-control": "max-age=600"}, now)  # no Date: revalidate
