"""Publishing to and yanking from an index: a commit on a branch of a git checkout.

``publish`` packs, pushes (through :func:`sxpm.ops.transfer.push`, so any registry
works) and adds the version's line to the name's file as a commit on a new branch
``publish/<name>-<version>``, ready to open as a pull request. Each step can be
repeated: packing is deterministic, a push sends only what the registry lacks, and
a line already written by an interrupted run is committed rather than written
twice. A version already committed to the index is refused: versions are immutable.

``yank`` changes only the ``yanked`` field of one line, on a branch ``yank/...``.
"""

from __future__ import annotations

import json
import re
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from sxpm.core import oci
from sxpm.core.artifact import Dependency, Variant
from sxpm.core.names import normalize_name
from sxpm.core.oci import Descriptor, ImageIndex, Manifest
from sxpm.core.progress import SILENT, Reporter
from sxpm.core.reference import LAYOUT_SCHEME, Reference
from sxpm.core.versions import version_key
from sxpm.errors import (
    ArtifactInputError,
    CheckoutError,
    GitError,
    InputError,
    NotFoundError,
    VersionExistsError,
)
from sxpm.home import Home
from sxpm.index.format import (
    CONFIG_FILE,
    IndexConfig,
    IndexEntry,
    dump_line,
    index_path,
    load_line,
    parse_lines,
)
from sxpm.ops.sign import sign_if_configured
from sxpm.transport import TransportOptions

WORK_BRANCHES = ("publish/", "yank/", "unyank/")

# --- git ---------------------------------------------------------------------------


def _git(cwd: Path, *args: str, check: bool = True) -> str:
    try:
        proc = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True,
                              timeout=120)
    except FileNotFoundError:
        raise GitError("git is not installed", hint="install git (apt-get install git)"
                       ) from None
    if check and proc.returncode != 0:
        detail = (proc.stderr.strip() or proc.stdout.strip()).splitlines()
        raise GitError(f"`git {' '.join(args)}` failed in {cwd}: "
                       f"{detail[-1] if detail else 'exit ' + str(proc.returncode)}",
                       command=f"git {' '.join(args)}",
                       hint="fix the checkout and run the same command again; it resumes")
    return proc.stdout


@dataclass
class Checkout:
    """A local git checkout of an index (the index may be a folder of a larger repo)."""

    root: Path  # the index root (holds config.json)
    top: Path  # the git work tree

    @classmethod
    def open(cls, path: Path) -> Checkout:
        root = Path(path).expanduser().resolve()
        if not root.is_dir():
            raise CheckoutError(f"{path} is not a directory",
                                hint="--index takes a local git checkout of the index")
        proc = subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=root,
                              capture_output=True, text=True)
        if proc.returncode != 0:
            raise CheckoutError(f"{root} is not a git checkout",
                                hint="clone the index repository and pass that directory")
        if not (root / CONFIG_FILE).is_file():
            raise CheckoutError(f"{root} has no {CONFIG_FILE}: not an sxpm index",
                                hint="pass the root of the index (it holds config.json)")
        return cls(root, Path(proc.stdout.strip()).resolve())

    def config(self) -> IndexConfig:
        path = self.root / CONFIG_FILE
        try:
            obj = json.loads(path.read_text(encoding="utf-8"))
        except ValueError as exc:
            from sxpm.errors import IndexFormatError

            raise IndexFormatError(str(path), None, f"not valid JSON ({exc})") from None
        return IndexConfig.from_dict(obj, str(path))

    def git(self, *args: str, check: bool = True) -> str:
        return _git(self.top, *args, check=check)

    def rel_to_top(self, rel: str) -> str:
        return (self.root / rel).relative_to(self.top).as_posix()

    def dirty(self) -> list[str]:
        """Paths (relative to the work tree) with uncommitted changes."""
        out = self.git("status", "--porcelain", "--untracked-files=all", "--", ".")
        return [line[3:].split(" -> ")[-1].strip('"') for line in out.splitlines() if line]

    def committed_text(self, rel: str) -> str:
        proc = subprocess.run(["git", "show", f"HEAD:{self.rel_to_top(rel)}"], cwd=self.top,
                              capture_output=True, text=True)
        return proc.stdout if proc.returncode == 0 else ""

    def branch(self) -> str:
        return self.git("rev-parse", "--abbrev-ref", "HEAD").strip()

    def has_branch(self, name: str) -> bool:
        return bool(self.git("branch", "--list", name).strip())

    def base_branch(self, branch: str) -> str:
        """The branch a new ``branch`` starts from: the current one, unless it is itself
        a publish or yank branch (whose commits do not belong in another pull request)."""
        current = self.branch()
        if current == branch:
            return "main"
        if current.startswith(WORK_BRANCHES):
            raise CheckoutError(
                f"The index checkout {self.top} is on {current}, another publish or yank "
                "branch", hint="switch back to the main branch first (git checkout main)")
        return current

    def switch(self, branch: str) -> None:
        """Move to ``branch``, creating it at HEAD when new (working changes move along)."""
        if self.branch() == branch:
            return
        if self.has_branch(branch):
            self.git("checkout", "-q", branch)
        else:
            self.git("checkout", "-q", "-b", branch)

    def fresh_branch(self, stem: str) -> str:
        """``stem``, or ``stem-2``, ``stem-3``... when a branch of that name exists from
        an earlier change: yanking again after an un-yank must not land on the old
        branch, where the line already says what the new commit would."""
        if not self.has_branch(stem) or self.branch() == stem:
            return stem
        n = 2
        while self.has_branch(f"{stem}-{n}") and self.branch() != f"{stem}-{n}":
            n += 1
        return f"{stem}-{n}"

    def remote(self) -> str:
        """The remote to push to: ``origin``, else the only one."""
        remotes = self.git("remote").split()
        if "origin" in remotes:
            return "origin"
        if len(remotes) == 1:
            return remotes[0]
        raise CheckoutError(f"The index checkout {self.top} has "
                            + ("no remote" if not remotes else
                               f"several remotes ({', '.join(remotes)}) and no origin"),
                            hint="add the index repository as origin: git remote add "
                                 "origin URL")

    def commit(self, rel: str, message: str) -> str:
        path = self.rel_to_top(rel)
        self.git("add", "--", path)
        self.git("commit", "-q", "-m", message, "--", path)
        return self.git("rev-parse", "HEAD").strip()

    def require_clean(self, allowed: str | None = None) -> None:
        others = [p for p in self.dirty() if p != allowed]
        if others:
            raise CheckoutError(
                f"The index checkout {self.top} has uncommitted changes ({others[0]}"
                + (f" and {len(others) - 1} more" if len(others) > 1 else "") + ")",
                hint="commit or stash them first (git stash)")


# --- what a line says, read from the store ------------------------------------------


def _int(text: str | None) -> int | None:
    try:
        return int(text) if text else None
    except ValueError:
        return None


def _manifest_size(manifest: Manifest) -> int:
    return sum(layer.size for layer in manifest.layers)


def entry_from_store(home: Home, top: Descriptor, *, ref: Reference,
                     description: str | None = None, license: str | None = None,
                     tags: tuple[str, ...] = ()) -> IndexEntry:
    """The index line of the artifact ``top`` in the store, published at ``ref``."""
    from sxpm.artifacts.describe import describe, model_traits

    store = home.store
    obj = store.load_manifest(top)
    info = describe(store, top)
    traits = model_traits(store, info)
    variants: list[Variant] = []
    deps: dict[tuple[str, str], Dependency] = {}
    manifests: list[Manifest] = []
    if isinstance(obj, ImageIndex):
        for child in obj.manifests:
            manifest = store.load_manifest(child)
            assert isinstance(manifest, Manifest)
            manifests.append(manifest)
            ann = child.annotations
            size = _int(ann.get("org.simplex.size")) or sum(layer.size for layer in
                                                            manifest.layers)
            variants.append(Variant(
                ann.get(oci.ANN_VARIANT, str(child.digest)), child.digest, size,
                _int(ann.get(oci.ANN_MEMORY)),
                ann.get(oci.ANN_BASE_MODEL) or manifest.annotations.get(oci.ANN_BASE_MODEL)))
    else:
        assert isinstance(obj, Manifest)
        manifests.append(obj)
    for manifest in manifests:
        text = manifest.annotations.get(oci.ANN_DEPENDENCIES)
        for dep in json.loads(text) if text else []:
            d = Dependency.from_dict(dep)
            deps.setdefault((d.kind, d.name), d)
    config = info.config
    if info.kind == "model":
        meta = config.get("descriptor", {})
        licenses = meta.get("licenses") or []
        default_desc = meta.get("description") or meta.get("title") or ""
        default_license = licenses[0] if licenses else ""
        default_tags: list[str] = []
    else:
        default_desc = config.get("description", "")
        default_license = config.get("license", "")
        default_tags = list(config.get("tags", []))
    return IndexEntry(
        name=info.name, vers=info.version, kind=info.kind, ref=ref, digest=top.digest,
        artifact_type=obj.artifact_type or oci.ARTIFACT_BY_KIND[info.kind],
        size=_manifest_size(manifests[0]), deps=tuple(deps.values()), variants=tuple(variants),
        description=description if description is not None else default_desc,
        license=license if license is not None else default_license,
        tags=tuple(tags) if tags else tuple(default_tags),
        category=traits.category if traits else "",
        capabilities=traits.capabilities if traits else ())


# --- pushing a branch and its pull request ------------------------------------------

_GITHUB = re.compile(r"^(?:https://(?:[^@/]+@)?github\.com/|git@github\.com:|"
                     r"ssh://git@github\.com/)([^/]+)/([^/]+?)(?:\.git)?/?$")


def pull_request_url(remote_url: str, base: str, branch: str) -> str | None:
    """The page that opens a pull request of ``branch`` into ``base``, for a
    GitHub-hosted index (None for other hosts: their pages differ)."""
    m = _GITHUB.match(remote_url.strip())
    if m is None:
        return None
    return (f"https://github.com/{m.group(1)}/{m.group(2)}/compare/"
            f"{quote(base, safe='/')}...{quote(branch, safe='/')}?expand=1")


@dataclass
class Pushed:
    """A branch pushed to the index repository: where to, and the pull request."""

    remote: str
    url: str  # the remote's URL as configured
    pr_url: str | None  # GitHub's compare page; None for other hosts
    opened: str | None = None  # the pull request `gh` opened (its URL)
    gh_missing: bool = False  # --open-pr was asked but `gh` is not installed


def push_branch(index_dir: Path, branch: str, base: str, *, title: str,
                open_pr: bool = False) -> Pushed:
    """Push ``branch`` of the index checkout to its remote and say where its pull
    request is; with ``open_pr``, open it through GitHub's ``gh`` when installed."""
    import shutil

    checkout = Checkout.open(index_dir)
    remote = checkout.remote()
    # The URL as configured, not as `insteadOf` rewrites it: the page is the host's.
    url = checkout.git("config", "--get", f"remote.{remote}.url", check=False).strip()
    checkout.git("push", "-q", "-u", remote, f"{branch}:{branch}")
    pushed = Pushed(remote, url, pull_request_url(url, base, branch))
    if open_pr:
        gh = shutil.which("gh")
        if gh is None:
            pushed.gh_missing = True
        else:
            out = subprocess.run([gh, "pr", "create", "--base", base, "--head", branch,
                                  "--title", title, "--body", "Opened by sxpm."],
                                 cwd=checkout.top, capture_output=True, text=True,
                                 timeout=120)
            if out.returncode != 0:
                raise GitError(f"gh pr create failed: {out.stderr.strip() or out.stdout}",
                               hint=f"open it by hand: {pushed.pr_url or url}")
            pushed.opened = out.stdout.strip().splitlines()[-1] if out.stdout.strip() \
                else pushed.pr_url
    return pushed


# --- publish -------------------------------------------------------------------------


@dataclass
class PublishResult:
    entry: IndexEntry
    file: Path  # the name's index file
    branch: str
    base: str  # the branch the publish branch starts from
    commit: str
    pushed_blobs: int
    pushed_bytes: int
    resumed: bool  # an interrupted run had already written the line
    signer: str | None = None  # key id or identity, when a signing key is configured

    @property
    def pr_command(self) -> str:
        title = f"Publish {self.entry.name} {self.entry.vers}"
        return (f"git push -u origin {self.branch} && gh pr create --base {self.base} "
                f"--head {self.branch} --title '{title}' --body 'sxpm publish'")


def detect_kind(path: Path) -> str:
    if path.is_file():
        if path.suffix == ".gguf":
            return "model"
        return "expert"  # a legacy .expert archive
    if (path / "manifest.json").is_file():
        return "expert"
    if (path / "simplex.toml").is_file():
        return "package"
    if any(path.glob("*.gguf")):
        return "model"
    raise ArtifactInputError(f"Cannot tell what {path} is",
                             hint="pass --kind model|expert|package")


def _declared(kind: str, path: Path) -> tuple[str | None, str | None]:
    """(name, version) the artifact's own metadata declares."""
    from sxpm.artifacts.pack import (
        extract_legacy_expert,
        load_expert_manifest,
        load_package_metadata,
    )

    if kind == "expert":
        if path.is_file():
            with tempfile.TemporaryDirectory(prefix="sxpm-expert-") as tmp:
                data, _ = load_expert_manifest(extract_legacy_expert(path, Path(tmp)))
        else:
            data, _ = load_expert_manifest(path)
        return data["name"], data["version"]
    if kind == "package":
        meta = load_package_metadata(path)
        return meta["name"], meta["version"]
    return None, None


def _registry_ref(registry: str, name: str, version: str) -> Reference:
    # OCI tags cannot hold '+': build metadata is written with '_' (as Helm does).
    base = registry.rstrip("/")
    return Reference.parse(f"{base}/{name}:{version.replace('+', '_')}")


def _line_state(text: str, entry: IndexEntry, source: str) -> IndexEntry | None:
    """The line of ``entry.vers`` in ``text``, if any."""
    key = version_key(entry.vers)
    for line in parse_lines(text, source=source):
        if version_key(line.vers) == key:
            return line
    return None


def _insert_line(text: str, line: str, vers: str, source: str) -> str:
    """``text`` with ``line`` inserted in version order; other lines stay byte-identical."""
    raw = [r for r in text.splitlines() if r.strip()]
    key = version_key(vers)
    position = len(raw)
    for i, r in enumerate(raw):
        obj = load_line(r, source=source, line=i + 1)
        if isinstance(obj, dict) and version_key(str(obj.get("vers", ""))) > key:
            position = i
            break
    raw.insert(position, line)
    return "\n".join(raw) + "\n"


def publish(home: Home, paths: list[Path], *, index_dir: Path, registry: str | None = None,
            kind: str | None = None, name: str | None = None, version: str | None = None,
            variants: list[str] | None = None, description: str | None = None,
            license: str | None = None, tags: tuple[str, ...] = (),
            options: TransportOptions | None = None, reporter: Reporter = SILENT,
            category: str | None = None, capabilities: tuple[str, ...] = ()
            ) -> PublishResult:
    """Pack ``paths``, push them to ``registry`` and commit the index line on a branch.

    Several paths with ``variants`` (one name each) publish one image index, e.g. the
    quantizations of a model. ``category`` and ``capabilities`` are pack's.
    """
    from sxpm.artifacts.pack import pack
    from sxpm.ops.transfer import push

    checkout = Checkout.open(index_dir)
    config = checkout.config()
    registry = (registry or config.default_registry).rstrip("/")
    if registry.startswith(LAYOUT_SCHEME):
        registry = LAYOUT_SCHEME + str(Path(registry[len(LAYOUT_SCHEME):]).expanduser()
                                       .resolve())
    if not config.registry_allowed(registry):
        raise InputError(f"The index does not accept artifacts from {registry}",
                         hint=f"publish to one of: {', '.join(config.registries)}")
    if not paths:
        raise InputError("Nothing to publish", hint="give the artifact's directory")
    variants = list(variants or [])
    if variants and len(variants) != len(paths):
        raise InputError(f"{len(paths)} path(s) but {len(variants)} --variant(s)",
                         hint="give one --variant per path, in the same order")
    if len(paths) > 1 and not variants:
        raise InputError("Several paths need one --variant each",
                         hint="e.g. --variant Q4_K_M --variant Q8_0")
    kind = kind or detect_kind(paths[0])
    declared_name, declared_version = _declared(kind, paths[0])
    name = name or declared_name or (paths[0].stem if paths[0].is_file() else paths[0].name)
    version = version or declared_version
    if not version:
        raise InputError(f"No version for {name}", hint="pass --version X.Y.Z")
    rel = index_path(name)
    # Fail before packing or pushing if the checkout cannot take a commit.
    checkout.require_clean(allowed=checkout.rel_to_top(rel))
    branch = f"publish/{normalize_name(name)}-{version}"
    base = checkout.base_branch(branch)

    ref = _registry_ref(registry, normalize_name(name), version)
    result = None
    for i, path in enumerate(paths):
        result = pack(home, kind, path, ref, variant=variants[i] if variants else None,
                      version=version, category=category, capabilities=capabilities)
    assert result is not None
    entry = entry_from_store(home, result.descriptor, ref=ref.repository_ref,
                             description=description, license=license, tags=tags)
    problem = config.ref_problem(entry.ref)
    if problem:
        raise InputError(problem)

    file = checkout.root / rel
    committed = checkout.committed_text(rel)
    existing = _line_state(committed, entry, rel) if committed else None
    if existing is not None:
        raise VersionExistsError(entry.name, existing.vers, str(existing.digest))
    current = file.read_text(encoding="utf-8") if file.exists() else ""
    written = _line_state(current, entry, rel) if current else None
    if written is not None and written != entry:
        raise VersionExistsError(
            entry.name, written.vers, str(written.digest),
            hint=f"an uncommitted line in {file} differs from this artifact; "
                 "remove it (git checkout -- FILE) and publish again")
    # The only uncommitted change allowed in the file is this very line.
    others = [r for r in current.splitlines() if r.strip() and r != entry.to_line()]
    if others != [r for r in committed.splitlines() if r.strip()]:
        raise CheckoutError(f"{file} has uncommitted changes",
                            hint="commit or discard them first (git checkout -- FILE)")

    pushed = push(home, result.ref, options=options, reporter=reporter)
    # Sign after the push (the signature is a referrer of the pushed manifest) and
    # before the index line, so a published line always has its signature.
    signed = sign_if_configured(home, result.ref, options=options)

    checkout.switch(branch)
    if written is None:
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_text(_insert_line(current, entry.to_line(), entry.vers, rel),
                        encoding="utf-8")
    commit = checkout.commit(rel, f"Publish {entry.name} {entry.vers}")
    return PublishResult(entry, file, branch, base, commit, pushed.blobs_transferred,
                         pushed.bytes_transferred, resumed=written is not None,
                         signer=signed.signer if signed else None)


# --- yank -----------------------------------------------------------------------------


@dataclass
class YankResult:
    entry: IndexEntry
    branch: str
    commit: str
    base: str = "main"  # the branch the yank branch starts from


def yank(index_dir: Path, name: str, version: str, *, undo: bool = False) -> YankResult:
    """Set (or with ``undo`` clear) ``yanked`` on one line, committed on a new branch."""
    checkout = Checkout.open(index_dir)
    rel = index_path(name)
    checkout.require_clean()
    file = checkout.root / rel
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise NotFoundError(f"No {name!r} in the index {checkout.root}") from None
    lines = text.splitlines()
    for number, raw in enumerate(lines, 1):
        if not raw.strip():
            continue
        obj: dict[str, Any] = load_line(raw, source=str(file), line=number)
        entry = IndexEntry.from_dict(obj, source=str(file), line=number)
        if normalize_name(entry.name) != normalize_name(name):
            continue
        if entry.vers != version and entry.vers.split("+")[0] != version:
            continue
        if entry.yanked != undo:
            state = "yanked" if entry.yanked else "not yanked"
            raise InputError(f"{entry.name} {entry.vers} is already {state}")
        obj["yanked"] = not undo  # the only field a line may ever change
        lines[number - 1] = dump_line(obj)
        verb = "unyank" if undo else "yank"
        branch = checkout.fresh_branch(f"{verb}/{normalize_name(entry.name)}-{entry.vers}")
        base = checkout.base_branch(branch)
        created = not checkout.has_branch(branch)
        checkout.switch(branch)
        try:
            file.write_text("\n".join(lines) + "\n", encoding="utf-8")
            commit = checkout.commit(rel, f"{verb.capitalize()} {entry.name} {entry.vers}")
        except BaseException:
            # Leave the checkout as it was found: on its branch, the file unchanged.
            checkout.git("checkout", "-q", "--", checkout.rel_to_top(rel), check=False)
            checkout.git("checkout", "-q", base, check=False)
            if created:
                checkout.git("branch", "-q", "-D", branch, check=False)
            raise
        return YankResult(entry.with_yanked(not undo), branch, commit, base)
    raise NotFoundError(f"{name} has no version {version} in {file}")
