"""Bring in models the user already has on disk, without copying them.

* ``import_path``: a GGUF file, or a directory holding GGUF files, becomes a ModelPack
  model in the store, installed under its name and a local version (``local`` unless
  given: no semantic version is demanded of a file on disk).
* ``import_ollama``: models from Ollama's store (``$OLLAMA_MODELS``, default
  ``~/.ollama/models``: ``manifests/<host>/<namespace>/<name>/<tag>`` and
  ``blobs/sha256-<hex>``): the blobs are linked in and the manifest kept as it is.
* ``import_hf``: GGUF files of the Hugging Face cache (``$HF_HUB_CACHE``, default
  ``~/.cache/huggingface/hub``: ``models--OWNER--REPO/snapshots/<rev>/`` symlinks into
  ``blobs/``).

Each file is hard-linked into the store when the store and the file share a file
system, else copied; either way it is hashed while it is read. A linked blob *is* the
user's file: it keeps the user's mode (sxpm never changes the mode of a file it did not
write), so editing the original in place changes the blob, which ``sxpm verify`` then
reports as corrupt.
"""

from __future__ import annotations

import hashlib
import os
import re
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sxpm.artifacts.describe import describe
from sxpm.artifacts.pack import classify_model_file, gguf_model_config, main_weights
from sxpm.core import categories, oci
from sxpm.core.names import normalize_name
from sxpm.core.oci import Descriptor, Manifest, canonical_json, parse_manifest_bytes
from sxpm.core.reference import Digest, Reference
from sxpm.core.validation import validate
from sxpm.errors import (
    ArtifactInputError,
    CorruptBlobError,
    InputError,
    NotFoundError,
    SizeMismatchError,
)
from sxpm.home import Home
from sxpm.installed.records import Installed
from sxpm.installed.tree import materialize
from sxpm.store.layout import CHUNK, OCILayout
from sxpm.store.refs import store_name

LOCAL_VERSION = "local"
OLLAMA_HOST = "registry.ollama.ai"
_UNSAFE = re.compile(r"[^a-z0-9._-]+")


@dataclass(frozen=True)
class Imported:
    ref: Reference
    installed: Installed
    linked: int  # files hard-linked into the store
    copied: int  # files copied (another file system, or links refused)


def link_blob(store: OCILayout, path: Path, media_type: str,
              expect: Descriptor | None = None) -> tuple[Descriptor, bool]:
    """Put ``path`` into the store, by hard link where possible; (descriptor, linked).

    With ``expect`` (the digest and size a source announced), a file that does not
    match is refused before it enters the store.
    """
    store.ensure()
    store.tmp_dir.mkdir(parents=True, exist_ok=True)
    tmp = store.tmp_dir / f"link-{uuid.uuid4().hex}"
    try:
        os.link(path, tmp)
    except OSError:  # another file system, or links not allowed: copy, hashing as it goes
        if expect is None:
            return store.put_file(path, media_type), False
        with store.writer(expect, where=str(path)) as w, open(path, "rb") as src:
            for chunk in iter(lambda: src.read(CHUNK), b""):
                w.write(chunk)
            return w.commit(media_type), False
    try:
        # Hash what the store now names (the link), not the path, which may change.
        sha = hashlib.sha256()
        with open(tmp, "rb") as fh:
            for chunk in iter(lambda: fh.read(CHUNK), b""):
                sha.update(chunk)
        digest = Digest("sha256", sha.hexdigest())
        size = tmp.stat().st_size
        if expect is not None and digest != expect.digest:
            raise CorruptBlobError(str(expect.digest), str(digest), where=str(path))
        if expect is not None and size != expect.size:
            raise SizeMismatchError(str(digest), expect.size, size, where=str(path))
        with store.blob_lock(digest):
            target = store.blob_path(digest)
            if not target.exists():
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(tmp, target)
        return Descriptor(media_type, digest, size), True
    finally:
        tmp.unlink(missing_ok=True)


def _local_name(text: str) -> str:
    name = _UNSAFE.sub("-", normalize_name(text)).strip("-.")[:64]
    if not name:
        raise InputError(f"Cannot make a model name of {text!r}", hint="pass --name NAME")
    return name


def _install(home: Home, ref: Reference, top: Descriptor) -> Installed:
    info = describe(home.store, top)
    return materialize(home.store, info, home.root, str(ref))


def _set_ref(home: Home, ref: Reference, desc: Descriptor) -> None:
    name = store_name(ref)
    with home.store.ref_lock(name):
        home.store.set_ref(name, desc)


# --- GGUF files and directories -------------------------------------------------------


def _files(path: Path) -> list[tuple[str, Path]]:
    if path.is_file():
        return [(path.name, path)]
    out = []
    for full in sorted(path.rglob("*")):
        rel = full.relative_to(path).as_posix()
        if full.is_file() and not any(part.startswith(".") for part in rel.split("/")):
            out.append((rel, full.resolve()))  # a symlink's target is what gets linked
    return out


def import_path(home: Home, path: Path, *, name: str | None = None,
                version: str | None = None) -> Imported:
    """Import a GGUF file or a directory of model files (see the module docstring)."""
    path = Path(path)
    if not path.exists():
        raise ArtifactInputError(f"{path} does not exist", hint="give a .gguf file or a "
                                 "directory holding one")
    return _import_files(home, _files(path), path, name, version)


def _import_files(home: Home, files: list[tuple[str, Path]], path: Path, name: str | None,
                  version: str | None, *, origin: str | None = None,
                  expect: dict[str, Descriptor] | None = None) -> Imported:
    """Import ``files`` (title, file) as one model; ``path`` is where they came from
    (``origin`` says so instead, for a download); ``expect`` holds what a source
    announced for a title, checked before the file enters the store."""
    main_rel, main_path, info = main_weights(files, path)
    name = _local_name(name or info.name or Path(main_rel).stem)
    version = version or LOCAL_VERSION
    ref = home.parse_ref(f"{name}:{version}")  # InputError for a version that is no tag
    with home.store.in_use():
        layers, linked = [], 0
        for rel, file in files:
            media_type = classify_model_file(rel)
            desc, was_linked = link_blob(home.store, file, media_type,
                                         (expect or {}).get(rel))
            linked += was_linked
            layers.append(Descriptor(media_type, desc.digest, desc.size,
                                     {oci.ANN_TITLE: rel, oci.ANN_FILEPATH: rel}))
        traits = categories.resolve(None, None, info)
        assert traits is not None  # read from the header, which is there
        config = {"descriptor": {"name": name, "version": version,
                                 "family": info.architecture},
                  "config": gguf_model_config(info, traits),
                  "modelfs": {"type": "layers",
                              "diffIds": [str(layer.digest) for layer in layers]}}
        validate(config, "modelpack-config", f"model config of {path}")
        config_desc = home.store.put_bytes(canonical_json(config), oci.MODEL_CONFIG)
        annotations = {oci.ANN_NAME: name, oci.ANN_VERSION: version,
                       "org.simplex.gguf.main": main_rel, "org.simplex.imported-from":
                       origin or str(path.resolve()), **traits.annotations()}
        manifest = Manifest(config_desc, tuple(layers), oci.MODEL_ARTIFACT, annotations)
        top = home.store.put_manifest(manifest)
        _set_ref(home, ref, top)
        installed = _install(home, ref, top)
    return Imported(ref, installed, linked, len(files) - linked)


# --- Ollama's store -------------------------------------------------------------------


def ollama_models_dir(env: dict[str, str] | None = None) -> Path:
    env = dict(os.environ) if env is None else env
    return Path(env.get("OLLAMA_MODELS") or Path.home() / ".ollama" / "models")


def _ollama_manifests(root: Path, spec: str | None) -> list[tuple[Reference, Path]]:
    """(reference, manifest file) of the models ``spec`` (``[ns/]name[:tag]``) names."""
    base = root / "manifests"
    if not base.is_dir():
        raise NotFoundError(f"No Ollama models at {root}",
                            hint="set OLLAMA_MODELS to Ollama's models directory")
    want_name, _, want_tag = (spec or "").partition(":")
    out = []
    for file in sorted(p for p in base.rglob("*") if p.is_file()):
        parts = file.relative_to(base).parts
        if len(parts) != 4 or any(p.startswith(".") for p in parts):
            continue
        host, namespace, model, tag = parts
        if want_name and want_name not in (model, f"{namespace}/{model}"):
            continue
        if want_tag and tag != want_tag:
            continue
        try:
            out.append((Reference.parse(f"{host}/{namespace}/{model}:{tag}"), file))
        except InputError:
            continue  # a name Ollama accepts but OCI does not: left alone
    if not out:
        raise NotFoundError(f"No Ollama model {spec!r} in {root}" if spec else
                            f"No Ollama models in {root}", hint="`ollama list` shows them")
    return out


def import_ollama(home: Home, spec: str | None = None, *, root: Path | None = None
                  ) -> list[Imported]:
    """Import Ollama models (all, or those ``spec`` names): links and a manifest."""
    root = root or ollama_models_dir()
    done = []
    for ref, file in _ollama_manifests(root, spec):
        data = file.read_bytes()
        manifest = parse_manifest_bytes(data, str(file))
        if not isinstance(manifest, Manifest):
            raise ArtifactInputError(f"{file} is not an Ollama model manifest")
        with home.store.in_use():
            linked = 0
            for blob in manifest.blobs():
                source = root / "blobs" / f"{blob.digest.algorithm}-{blob.digest.hex}"
                if not source.is_file():
                    raise NotFoundError(f"{ref}: blob {blob.digest} is missing from {root}",
                                        hint=f"pull it again: ollama pull {ref.name}")
                desc, was_linked = link_blob(home.store, source, blob.media_type)
                if desc.digest != blob.digest or desc.size != blob.size:
                    raise ArtifactInputError(f"{source} does not match its name "
                                             f"({desc.digest})", hint="the Ollama store is "
                                             "damaged; pull the model again with ollama")
                linked += was_linked
            top = Descriptor(manifest.media_type, oci.sha256_digest(data), len(data))
            home.store.put_bytes(data, manifest.media_type)  # byte for byte: same digest
            _set_ref(home, ref, top)
            installed = _install(home, ref, top)
        done.append(Imported(ref, installed, linked, len(manifest.blobs()) - linked))
    return done


# --- the Hugging Face cache -----------------------------------------------------------


def hf_cache_dir(env: dict[str, str] | None = None) -> Path:
    env = dict(os.environ) if env is None else env
    if env.get("HF_HUB_CACHE"):
        return Path(env["HF_HUB_CACHE"])
    hf_home = env.get("HF_HOME")
    return Path(hf_home) / "hub" if hf_home else Path.home() / ".cache" / "huggingface" / "hub"


def _snapshot(repo_dir: Path) -> tuple[str, Path]:
    """(revision, snapshot dir): the one ``refs/main`` names, else the newest."""
    main = repo_dir / "refs" / "main"
    if main.is_file():
        rev = main.read_text().strip()
        if (repo_dir / "snapshots" / rev).is_dir():
            return rev, repo_dir / "snapshots" / rev
    snaps = sorted((p for p in (repo_dir / "snapshots").glob("*") if p.is_dir()),
                   key=lambda p: p.stat().st_mtime)
    if not snaps:
        raise NotFoundError(f"{repo_dir} has no snapshot", hint="download the model again")
    return snaps[-1].name, snaps[-1]


def import_hf(home: Home, repo: str | None = None, *, cache: Path | None = None
              ) -> list[Imported]:
    """Import the GGUF files of cached Hugging Face repositories (all, or ``repo``);
    each file becomes a model named after it, versioned by the snapshot's revision."""
    cache = cache or hf_cache_dir()
    if repo:
        dirs = [cache / ("models--" + repo.replace("/", "--"))]
        if not dirs[0].is_dir():
            raise NotFoundError(f"{repo} is not in the Hugging Face cache at {cache}",
                                hint="download it first, or set HF_HUB_CACHE")
    else:
        dirs = sorted(cache.glob("models--*"))
    done = []
    for repo_dir in dirs:
        rev, snap = _snapshot(repo_dir)
        for file in sorted(snap.rglob("*.gguf")):
            # The snapshot's name is the title; the blob it links to is what is linked.
            done.append(_import_files(home, [(file.name, file.resolve())], file, file.stem,
                                      rev[:12]))
    if not done:
        raise NotFoundError(f"No GGUF files in the Hugging Face cache at {cache}"
                            + (f" for {repo}" if repo else ""),
                            hint="sxpm imports GGUF models; download a GGUF repository")
    return done


def describe_imported(items: list[Imported]) -> list[dict[str, Any]]:
    return [{"ref": str(i.ref), "name": i.installed.name, "version": i.installed.version,
             "path": str(i.installed.path), "linked": i.linked, "copied": i.copied}
            for i in items]
