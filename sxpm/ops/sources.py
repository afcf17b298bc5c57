"""Install an expert from where experts live today: a git repository or a local path.

``git+https://HOST/REPO#TAG``, ``git+http://``, ``git+git://`` (a ``git daemon``) and
``git+file:///PATH#TAG`` are cloned shallow (``--depth 1``, the tag or branch after
``#``, else the default branch) into a temporary directory; ``file:///PATH`` names a
directory or a legacy ``.expert`` archive. What was fetched is packed by
:func:`sxpm.artifacts.pack.pack`, with every check ``sxpm pack`` makes, under the
expert's own name and version in the home's default registry (what ``sxpm pack`` and
``sxpm import`` name a local artifact), and then installed from the store.

A clone runs a command that someone else's repository feeds, so it is bounded: a
wall-clock limit, only the URL's own protocol allowed (no ``ext::`` or other helpers),
no credential prompt, no hooks (neither the user's ``core.hooksPath`` nor a template's),
no submodules (a repository that has any is refused), symlinks checked out as plain
files so nothing outside the clone is read.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

from sxpm.artifacts.pack import PackResult, extract_legacy_expert, load_expert_manifest, pack
from sxpm.errors import ArtifactInputError, GitError, InputError
from sxpm.home import Home
from sxpm.trust.legacy import check_legacy_signature
from sxpm.trust.policy import TrustPolicy

CLONE_TIMEOUT = 300.0  # seconds for one clone, whatever the repository's size
_GIT_SCHEMES = {"git+https": "https", "git+http": "http", "git+git": "git", "git+file": "file"}
_FORMS = "write git+https://HOST/REPO#TAG, git+file:///PATH#TAG or file:///PATH"


def is_source_spec(spec: str) -> bool:
    """Whether ``spec`` names a source to pack (not a name or an OCI reference)."""
    return spec.startswith(("git+", "file:"))


@dataclass(frozen=True)
class Source:
    """A parsed source: the URL git clones (``git`` set) or a local path."""

    spec: str
    url: str = ""
    protocol: str = ""  # what GIT_ALLOW_PROTOCOL lets git use
    rev: str | None = None
    path: Path | None = None


def parse_source(spec: str) -> Source:
    """Parse ``spec``; an :class:`~sxpm.errors.InputError` (exit 2) for any other form."""
    scheme, _, rest = spec.partition(":")
    if scheme == "file":
        parts = urlsplit(spec)
        if parts.netloc not in ("", "localhost") or not parts.path or parts.fragment:
            raise InputError(f"Unsupported source {spec!r}: file: takes an absolute path",
                             hint="write file:///ABSOLUTE/PATH (a directory or a .expert)")
        return Source(spec, path=Path(unquote(parts.path)))
    protocol = _GIT_SCHEMES.get(scheme)
    if protocol is None:
        raise InputError(f"Unsupported source {spec!r}", hint=_FORMS)
    location, _, rev = rest.partition("#")
    url = f"{protocol}:{location}"
    parts = urlsplit(url)
    if not parts.path.strip("/") or (protocol != "file" and not parts.netloc):
        raise InputError(f"Unsupported source {spec!r}: no repository path", hint=_FORMS)
    if rev.startswith("-") or any(c.isspace() for c in rev):
        raise InputError(f"Invalid tag {rev!r} in {spec!r}", hint="write #TAG or #BRANCH")
    return Source(spec, url=url, protocol=protocol, rev=rev or None)


@contextlib.contextmanager
def checkout(source: Source, timeout: float = CLONE_TIMEOUT) -> Iterator[Path]:
    """The source's files: a local path as is, or a fresh shallow clone, removed after."""
    if source.path is not None:
        if not source.path.exists():
            raise ArtifactInputError(f"{source.path} does not exist",
                                     hint="give an expert directory or a .expert archive")
        yield source.path
        return
    with tempfile.TemporaryDirectory(prefix="sxpm-source-") as tmp:
        templates = Path(tmp) / "templates"  # empty: no template hooks copied in
        templates.mkdir()
        dest = Path(tmp) / "repo"
        cmd = ["git", "-c", f"core.hooksPath={os.devnull}", "-c", "core.symlinks=false",
               "-c", "protocol.allow=never", "-c", f"protocol.{source.protocol}.allow=always",
               "clone", "--quiet", "--depth", "1", "--no-recurse-submodules",
               f"--template={templates}"]
        if source.rev:
            cmd += ["--branch", source.rev]
        cmd += ["--", source.url, str(dest)]
        env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "GIT_ASKPASS": "true",
               "GIT_ALLOW_PROTOCOL": source.protocol, "GIT_LFS_SKIP_SMUDGE": "1",
               "GIT_CONFIG_NOSYSTEM": "1"}
        try:
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True,
                                  timeout=timeout, stdin=subprocess.DEVNULL)
        except FileNotFoundError:
            raise GitError("git is not installed", command="git clone",
                           hint="install git, or give a file:/// path") from None
        except subprocess.TimeoutExpired:
            raise GitError(f"Cloning {source.url} took over {timeout:.0f} s",
                           command="git clone", hint="check the host, or clone it yourself "
                           "and install file:///PATH") from None
        if proc.returncode != 0:
            last = (proc.stderr.strip().splitlines() or ["git clone failed"])[-1]
            raise GitError(f"Cannot clone {source.spec}: {last}", command="git clone",
                           hint="check the URL and that the tag exists")
        if (dest / ".gitmodules").exists():
            raise ArtifactInputError(f"{source.spec} has submodules, which sxpm does not "
                                     "fetch", hint="keep the expert's files in the "
                                     "repository itself")
        shutil.rmtree(dest / ".git", ignore_errors=True)
        yield dest


def pack_source(home: Home, spec: str, *, policy: TrustPolicy | None = None,
                timeout: float = CLONE_TIMEOUT) -> PackResult:
    """Fetch the expert at ``spec``, pack it (every check of ``sxpm pack``) and point
    ``<default registry>/<name>:<version>`` at it in the store; nothing is installed."""
    source = parse_source(spec)
    with checkout(source, timeout) as path:
        if path.is_file():
            # A legacy archive: its name and version are known only once it is open.
            with tempfile.TemporaryDirectory(prefix="sxpm-expert-") as tmp:
                root = extract_legacy_expert(path, Path(tmp))
                check_legacy_signature(home, root, str(path), policy)
                return _pack_dir(home, root)
        return _pack_dir(home, path)


def _pack_dir(home: Home, root: Path) -> PackResult:
    data, _ = load_expert_manifest(root)
    ref = home.parse_ref(f"{data['name']}:{data['version']}")
    return pack(home, "expert", root, ref)
