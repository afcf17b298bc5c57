"""``sxpm expert install`` from where experts live: git repositories and local paths.

Real git: local repositories, cloned over file:// and over git:// from a ``git daemon``
on loopback (git+https goes through the same clone, with only the protocol changed).
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="needs git")

GIT_ENV = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.invalid",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.invalid"}


def git(cwd: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True,
                   env={"PATH": "/usr/bin:/bin", "HOME": str(cwd), **GIT_ENV})


def expert_repo(tmp_path: Path, sample_dir: Path, name: str = "repo") -> Path:
    """A repository whose tag v2.1.0 holds the sql expert and whose main branch moved on."""
    repo = tmp_path / name
    shutil.copytree(sample_dir / "sql-expert", repo)
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "expert")
    git(repo, "tag", "v2.1.0")
    manifest = json.loads((repo / "manifest.json").read_text())
    manifest["version"] = "2.2.0"
    (repo / "manifest.json").write_text(json.dumps(manifest))
    git(repo, "commit", "-q", "-am", "next")
    return repo


def installed(cli) -> list[dict]:  # noqa: ANN001
    return [(r["name"], r["version"]) for r in cli("expert", "list", "--json").json]


def test_git_file_install_takes_the_tag(cli, sample_dir: Path, tmp_path: Path) -> None:  # noqa: ANN001
    repo = expert_repo(tmp_path, sample_dir)
    out = cli("expert", "install", f"git+file://{repo}#v2.1.0", "--json").json
    assert (out["name"], out["version"]) == ("sql-expert", "2.1.0")
    assert (Path(out["path"]) / "adapter.gguf").is_file()
    # The default branch when no tag is given: the newer commit.
    cli("expert", "install", f"git+file://{repo}")
    assert installed(cli) == [("sql-expert", "2.1.0"), ("sql-expert", "2.2.0")]


@pytest.fixture
def git_daemon(tmp_path: Path) -> Iterator[tuple[Path, int]]:
    base = tmp_path / "served"
    base.mkdir()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(["git", "daemon", f"--base-path={base}", "--export-all",
                             "--reuseaddr", f"--port={port}", "--listen=127.0.0.1", str(base)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.05)
        yield base, port
    finally:
        proc.terminate()
        proc.wait(10)


def test_git_daemon_install(cli, sample_dir: Path, tmp_path: Path, git_daemon) -> None:  # noqa: ANN001
    base, port = git_daemon
    expert_repo(base, sample_dir, "sql.git")
    out = cli("expert", "install", f"git+git://127.0.0.1:{port}/sql.git#v2.1.0",
              "--json").json
    assert (out["name"], out["version"]) == ("sql-expert", "2.1.0")
    r = cli.fail("expert", "install", f"git+git://127.0.0.1:{port}/sql.git#v9.9.9", code=1)
    assert "v9.9.9" in r.stderr


def test_file_directory_and_legacy_archive(cli, sample_dir: Path, tmp_path: Path) -> None:  # noqa: ANN001
    out = cli("expert", "install", f"file://{sample_dir / 'sql-expert'}", "--json").json
    assert (out["name"], out["version"]) == ("sql-expert", "2.1.0")
    archive = tmp_path / "sql.expert"
    with tarfile.open(archive, "w:gz") as tf:
        for f in sorted((sample_dir / "sql-expert").iterdir()):
            tf.add(f, arcname=f.name)
    again = cli("expert", "install", f"file://{archive}", "--json").json
    assert again["digest"] == out["digest"]  # the same bytes packed the same way


def test_pack_checks_apply(cli, sample_dir: Path, tmp_path: Path) -> None:  # noqa: ANN001
    bad = tmp_path / "bad"
    shutil.copytree(sample_dir / "sql-expert", bad)
    manifest = json.loads((bad / "manifest.json").read_text())
    del manifest["base_model"]
    (bad / "manifest.json").write_text(json.dumps(manifest))
    r = cli.fail("expert", "install", f"file://{bad}", code=2)
    assert "manifest.json" in r.stderr
    assert installed(cli) == []
    r = cli.fail("expert", "install", "git+svn://example.invalid/x", code=2)
    assert "git+https://" in r.stderr


def test_submodules_refused_and_hooks_never_run(cli, sample_dir: Path,  # noqa: ANN001
                                               tmp_path: Path) -> None:
    # The user's own hooks directory would run a post-checkout hook on a clone.
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    marker = tmp_path / "hook-ran"
    hook = hooks / "post-checkout"
    hook.write_text(f"#!/bin/sh\ntouch {marker}\n")
    hook.chmod(0o755)
    userhome = cli.home.parent / "userhome"
    userhome.mkdir(exist_ok=True)
    (userhome / ".gitconfig").write_text(f"[core]\n\thooksPath = {hooks}\n")
    repo = expert_repo(tmp_path, sample_dir)
    cli("expert", "install", f"git+file://{repo}#v2.1.0")
    assert not marker.exists()

    (repo / ".gitmodules").write_text('[submodule "x"]\n\tpath = x\n\turl = ../x\n')
    git(repo, "add", ".gitmodules")
    git(repo, "commit", "-q", "-m", "submodule")
    git(repo, "tag", "v3")
    r = cli.fail("expert", "install", f"git+file://{repo}#v3", code=2)
    assert "submodule" in r.stderr
