"""Shell completion: the scripts click writes, sourced in a real bash, completing the
names only sxpm knows (installed models and experts, refs in the store, variants)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

BASH = shutil.which("bash")


def complete(cli, script: Path, bindir: Path, *words: str) -> list[str]:  # noqa: ANN001
    """What bash offers for the last of ``words``, through the sourced script's own
    completion function, as pressing Tab would."""
    line = " ".join(f"'{w}'" for w in ["sxpm", *words])
    code = (f"source {script}\nCOMP_WORDS=({line})\nCOMP_CWORD={len(words)}\n"
            "_sxpm_completion sxpm\nprintf '%s\\n' \"${COMPREPLY[@]}\"\n")
    env = {**cli.env, "PATH": f"{bindir}:{cli.env.get('PATH', '')}"}
    out = subprocess.run([BASH, "--norc", "--noprofile", "-c", code], env=env, cwd=cli.cwd,
                         capture_output=True, text=True, timeout=60, check=True)
    return [w for w in out.stdout.splitlines() if w]


@pytest.mark.skipif(BASH is None, reason="bash is not installed")
def test_bash_completes_installed_names_refs_and_variants(cli, sample_dir: Path,  # noqa: ANN001
                                                          registry_dir: Path,
                                                          tmp_path: Path) -> None:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    wrapper = bindir / "sxpm"  # what the installed entry point is
    wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m sxpm "$@"\n')
    wrapper.chmod(0o755)
    script = tmp_path / "sxpm.bash"
    script.write_text(cli("completion", "bash").stdout)
    for shell in ("zsh", "fish"):
        assert "_SXPM_COMPLETE" in cli("completion", shell).stdout
    cli.fail("completion", "tcsh", code=2)

    ref = f"oci:{registry_dir}/tiny-llama:1.0.0"
    cli("pack", "model", sample_dir / "tiny-llama", "--ref", ref, "--variant", "F32")
    cli("pack", "model", sample_dir / "tiny-llama-f16", "--ref", ref, "--variant", "F16")
    expert = f"oci:{registry_dir}/sql-expert:2.1.0"
    cli("pack", "expert", sample_dir / "sql-expert", "--ref", expert)
    cli("model", "install", ref, "--variant", "F16")
    cli("expert", "install", expert)

    assert complete(cli, script, bindir, "ru") == ["run"]
    assert complete(cli, script, bindir, "run", "") == ["tiny-llama"]
    assert complete(cli, script, bindir, "run", "tiny-llama@") == ["tiny-llama@1.0.0"]
    assert complete(cli, script, bindir, "run", "tiny-llama", "--expert", "") == [
        "sql-expert"]
    assert complete(cli, script, bindir, "model", "info", "t") == ["tiny-llama"]
    assert complete(cli, script, bindir, "expert", "remove", "") == ["sql-expert"]
    refs = complete(cli, script, bindir, "push", "oci:")
    assert sorted(refs) == sorted([ref, expert])
    assert complete(cli, script, bindir, "rm", ref, "oci:") == sorted([ref, expert])
    assert complete(cli, script, bindir, "push", ref, "--variant", "") == ["F16", "F32"]
    assert complete(cli, script, bindir, "run", "--variant", "F1") == ["F16"]
    # A broken home completes nothing, quietly.
    (cli.home / "store").rename(cli.home / "store.away")
    (cli.home / "store").write_text("not a directory")
    assert complete(cli, script, bindir, "push", "") == []
