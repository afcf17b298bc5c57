"""Turning a directory (or file) into an artifact in the store.

* model: CNCF ModelPack manifest; one unarchived file per layer; the config is read
  from the GGUF file's own metadata and validates against the ModelPack schema.
* expert: the expert manifest (schema v1 or v2) as config; adapter GGUF, prompt
  templates, soft prompts and docs one file per layer. A v2 expert becomes an image
  index with one manifest per base model.
* package: the package metadata as config; one reproducible ``tar+zstd`` layer.

Packing is deterministic: the same input gives the same digests on any machine.
"""

from __future__ import annotations

import json
import os
import tarfile
import tempfile
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sxpm.artifacts.peft import CONFIG as PEFT_CONFIG
from sxpm.artifacts.peft import convert_peft, peft_dir
from sxpm.core import categories, oci
from sxpm.core.gguf import GGUFHeader, is_gguf, read_gguf
from sxpm.core.names import validate_name
from sxpm.core.oci import Descriptor, ImageIndex, Manifest, canonical_json
from sxpm.core.reference import Reference
from sxpm.core.unpack import check_paths, extract_tar
from sxpm.core.validation import validate
from sxpm.core.versions import parse_version
from sxpm.errors import ArtifactInputError, InputError, InvalidVersionError, ManifestError
from sxpm.home import KINDS, Home
from sxpm.store.layout import OCILayout
from sxpm.trust.policy import TrustPolicy

# Files that never belong in an artifact.
_IGNORED_NAMES = {".git", ".hg", ".svn", "__pycache__", ".simplex", ".DS_Store", ".venv"}
_DOC_PREFIXES = ("readme", "license", "licence", "notice", "copying", "changelog")
# Installed files are hard links to store blobs: two files on one path (or on the
# install record's) would make an install write one through the other.
_RENAME = ("rename the file: installed trees need distinct names, also ignoring case, "
           "and .sxpm-install.json is sxpm's")
MAX_LEGACY_MEMBERS = 10_000
MAX_LEGACY_BYTES = 64 * 1024**3


@dataclass(frozen=True)
class PackResult:
    ref: Reference
    kind: str
    name: str
    version: str
    descriptor: Descriptor  # what the ref now points at (manifest or index)
    manifest: Descriptor  # the manifest just built (for an expert v2: the index)
    variants: tuple[str, ...] = ()
    traits: categories.Traits | None = None  # a model's category and capabilities


def pack(home: Home, kind: str, path: Path, ref: Reference, *, variant: str | None = None,
         version: str | None = None, policy: TrustPolicy | None = None,
         category: str | None = None, capabilities: Iterable[str] = ()) -> PackResult:
    """Pack ``path`` as an artifact of ``kind`` and point ``ref`` at it in the store.

    ``policy`` (the command's) decides whether a legacy ``.expert`` must be signed.
    ``category`` and ``capabilities`` (models only) override what the GGUF says
    (:mod:`sxpm.core.categories`).
    """
    if kind not in KINDS:
        raise InputError(f"Unknown artifact kind {kind!r}", hint="use model, expert or package")
    caps = tuple(capabilities)
    if kind != "model" and (category or caps):
        raise InputError(f"A {kind} has no category or capabilities",
                         hint="--category and --capability apply to models")
    declared = (categories.check_category(category) if category else None,
                categories.check_capabilities(caps) if caps else None)
    if ref.digest:
        raise InputError(f"{ref}: pack takes a tag, not a digest",
                         hint="write REPOSITORY:TAG")
    path = Path(path)
    if not path.exists():
        raise ArtifactInputError(f"{path} does not exist", hint="give the artifact's directory")
    with home.store.in_use():  # gc waits until the ref names the new blobs
        return _pack(home, kind, path, ref, variant, version, policy, declared)


def _pack(home: Home, kind: str, path: Path, ref: Reference, variant: str | None,
          version: str | None, policy: TrustPolicy | None = None,
          declared: tuple[str | None, tuple[str, ...] | None] = (None, None)) -> PackResult:
    if kind == "model":
        return _pack_model(home, path, ref, variant, version, declared)
    if kind == "expert":
        if path.is_file():
            with tempfile.TemporaryDirectory(prefix="sxpm-expert-") as tmp:
                root = extract_legacy_expert(path, Path(tmp))
                from sxpm.trust.legacy import check_legacy_signature

                check_legacy_signature(home, root, str(path), policy)
                return _pack_expert(home, root, ref, variant, version)
        return _pack_expert(home, path, ref, variant, version)
    return _pack_package(home, path, ref, variant, version)


# --- shared ---------------------------------------------------------------------


def _checked_version(text: str | None, source: str) -> str:
    if not text:
        raise InvalidVersionError("", f"{source} gives no version")
    return str(parse_version(text))


def _resolve_version(ref: Reference, given: str | None, declared: str | None) -> str:
    if given:
        return _checked_version(given, "--version")
    if declared:
        return _checked_version(declared, "the artifact's metadata")
    if ref.tag:
        try:
            return str(parse_version(ref.tag))
        except InvalidVersionError:
            pass
    raise InvalidVersionError(ref.tag or "", "the tag is not a version and no --version was given")


def _walk(root: Path) -> list[tuple[str, Path]]:
    """(relative POSIX path, path) of every regular file under ``root``, sorted."""
    out: list[tuple[str, Path]] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in _IGNORED_NAMES)
        for name in sorted(filenames):
            if name in _IGNORED_NAMES or name.endswith((".pyc", ".partial")):
                continue
            full = Path(dirpath) / name
            if full.is_symlink() or not full.is_file():
                continue
            out.append((full.relative_to(root).as_posix(), full))
    out.sort()
    return out


def _file_layer(store: OCILayout, rel: str, path: Path, media_type: str,
                extra: dict[str, str] | None = None) -> Descriptor:
    if not path.is_file():
        raise ArtifactInputError(f"{path} does not exist",
                                 hint="the manifest names a file that is not in the directory")
    desc = store.put_file(path, media_type)
    annotations = {oci.ANN_TITLE: rel}
    if media_type.startswith("application/vnd.cncf.model."):
        annotations[oci.ANN_FILEPATH] = rel
    annotations.update(extra or {})
    return Descriptor(desc.media_type, desc.digest, desc.size, annotations)


def _store_ref(home: Home, ref: Reference, manifest_desc: Descriptor, variant: str | None,
               artifact_type: str, variant_annotations: dict[str, str] | None = None
               ) -> tuple[Descriptor, tuple[str, ...]]:
    """Point ``ref`` at the manifest, or add it as ``variant`` of the index at ``ref``."""
    from sxpm.store.refs import store_name

    store = home.store
    name = store_name(ref)
    kind = oci.KIND_BY_ARTIFACT[artifact_type]
    with store.ref_lock(name):
        if variant is None:
            store.set_ref(name, manifest_desc)
            return manifest_desc, ()
        existing = store.resolve(name)
        entries: list[Descriptor] = []
        position = None
        if existing is not None and existing.is_index:
            index = store.load_manifest(existing)
            assert isinstance(index, ImageIndex)
            if index.kind not in (None, kind):
                raise InputError(f"{ref} holds a different kind of artifact",
                                 hint="use another ref, or `sxpm rm` it first")
            # Entries of an index written before carry artifactType: dropped, as below.
            entries = [Descriptor(d.media_type, d.digest, d.size, d.annotations)
                       for d in index.manifests if d.annotations.get(oci.ANN_VARIANT) != variant]
            # Keep the order variants were packed in: the first is the default.
            position = next((i for i, d in enumerate(index.manifests)
                             if d.annotations.get(oci.ANN_VARIANT) == variant), None)
        annotations = {oci.ANN_VARIANT: variant, **(variant_annotations or {})}
        entry = Descriptor(manifest_desc.media_type, manifest_desc.digest, manifest_desc.size,
                           annotations)
        if position is None:
            entries.append(entry)
        else:
            entries.insert(position, entry)
        new_index = ImageIndex(tuple(entries), annotations={oci.ANN_KIND: kind})
        desc = store.put_manifest(new_index)
        store.set_ref(name, desc)
        return desc, tuple(d.annotations.get(oci.ANN_VARIANT, "") for d in entries)


def _deps_annotation(deps: Iterable[dict[str, str]]) -> str:
    return json.dumps(list(deps), sort_keys=True, separators=(",", ":"))


# --- model ----------------------------------------------------------------------


def classify_model_file(rel: str) -> str:
    """The layer type of a model's file: GGUF weights, a document, else a config."""
    lower = rel.rsplit("/", 1)[-1].lower()
    if lower.endswith(".gguf"):
        return oci.MODEL_WEIGHT
    if lower.startswith(_DOC_PREFIXES) or lower.endswith((".md", ".txt")):
        return oci.MODEL_DOC
    return oci.MODEL_WEIGHT_CONFIG


def main_weights(files: list[tuple[str, Path]], path: Path
                 ) -> tuple[str, Path, GGUFHeader]:
    """The model's GGUF among ``files`` (title, file): the largest (others, e.g. a vision
    projector, travel with it), read with the bounded reader; a LoRA adapter or a
    folder without GGUF is refused. Pack and import both choose by this rule."""
    weights = [(rel, p) for rel, p in files if classify_model_file(rel) == oci.MODEL_WEIGHT]
    if not weights:
        raise ArtifactInputError(f"{path} holds no .gguf weight file",
                                 hint="a model artifact needs at least one GGUF file; "
                                      "convert other formats with llama.cpp")
    main_rel, main_path = max(weights, key=lambda item: item[1].stat().st_size)
    info = read_gguf(main_path)
    if info.general_type == "adapter":
        raise ArtifactInputError(f"{main_path} is a LoRA adapter, not a model",
                                 hint="pack it as an expert: sxpm pack expert DIR --ref ...")
    return main_rel, main_path, info


def gguf_model_config(info: GGUFHeader, traits: categories.Traits) -> dict[str, Any]:
    """The ModelPack ``config`` object of a model, read from its main GGUF."""
    out: dict[str, Any] = {"architecture": info.architecture or "", "format": "gguf",
                           "paramSize": info.param_size,
                           "capabilities": categories.modelpack_capabilities(traits)}
    if info.file_type:
        out["quantization"] = info.file_type
    if info.precision:
        out["precision"] = info.precision
    return out


def _pack_model(home: Home, path: Path, ref: Reference, variant: str | None,
                version: str | None,
                declared: tuple[str | None, tuple[str, ...] | None]) -> PackResult:
    name = validate_name(ref.name)
    files = [(path.name, path)] if path.is_file() else _walk(path)
    check_paths([rel for rel, _ in files], str(path), _RENAME)
    main_rel, main_path, info = main_weights(files, path)
    traits = categories.resolve(*declared, info)
    assert traits is not None  # the header is there: capabilities always follow
    arch = info.architecture or ""  # read_gguf refuses a file without one
    vers = _resolve_version(ref, version, None)
    store = home.store
    layers = [_file_layer(store, rel, p, classify_model_file(rel)) for rel, p in files]
    descriptor: dict[str, Any] = {"name": name, "version": vers, "family": arch}
    if info.name:
        descriptor["title"] = info.name
    if info.license:
        descriptor["licenses"] = [info.license]
    config = {
        "descriptor": descriptor,
        "config": gguf_model_config(info, traits),
        "modelfs": {"type": "layers", "diffIds": [str(layer.digest) for layer in layers]},
    }
    validate(config, "modelpack-config", f"model config of {ref}")
    config_desc = store.put_bytes(canonical_json(config), oci.MODEL_CONFIG)
    annotations = {
        oci.ANN_NAME: name,
        oci.ANN_VERSION: vers,
        "org.simplex.gguf.main": main_rel,
        "org.simplex.gguf.architecture": arch,
        "org.simplex.gguf.param-count": str(info.param_count),
        **traits.annotations(),
    }
    if info.file_type:
        annotations["org.simplex.gguf.file-type"] = info.file_type
    manifest = Manifest(config_desc, tuple(layers), oci.MODEL_ARTIFACT, annotations)
    mdesc = store.put_manifest(manifest)
    size = sum(layer.size for layer in layers)
    ref = ref if ref.tag else ref.with_tag(vers)
    top, variants = _store_ref(home, ref, mdesc, variant, oci.MODEL_ARTIFACT, {
        "org.simplex.size": str(size),
        oci.ANN_MEMORY: str(info.tensor_bytes),
        "org.simplex.gguf.file-type": info.file_type or "",
    })
    return PackResult(ref, "model", name, vers, top, mdesc, variants, traits)


# --- expert ---------------------------------------------------------------------


def load_expert_manifest(root: Path) -> tuple[dict[str, Any], int]:
    """Read and validate ``manifest.json``; (manifest, schema major version)."""
    source = root / "manifest.json"
    try:
        text = source.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ArtifactInputError(f"{root} has no manifest.json",
                                 hint="an expert directory needs a manifest.json") from None
    except UnicodeDecodeError:
        raise ManifestError(str(source), "not UTF-8 text") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ManifestError(str(source), f"not valid JSON: {exc.msg}",
                            path=f"line {exc.lineno} column {exc.colno}") from None
    if not isinstance(data, dict):
        raise ManifestError(str(source), "must be a JSON object")
    if "base_model" in data and "base_models" in data:
        raise ManifestError(str(source), "both base_model and base_models are set",
                            hint="schema v1 has base_model; schema v2 "
                                 "(schema_version \"2.0\") has base_models")
    declared = data.get("schema_version")
    if declared is None and "base_models" in data:
        raise ManifestError(str(source), "base_models needs schema_version \"2.0\"",
                            path="$.schema_version",
                            hint="add \"schema_version\": \"2.0\" or use base_model (v1)")
    major = 2 if isinstance(declared, str) and declared.startswith("2") else 1
    if isinstance(declared, str) and declared.split(".")[0] not in ("1", "2"):
        raise ManifestError(str(source), f"unknown schema_version {declared!r}",
                            path="$.schema_version", hint="sxpm reads schema 1.x and 2.x")
    validate(data, f"expert-manifest-v{major}", str(source))
    if major == 2:
        seen: dict[str, str] = {}
        for i, base in enumerate(data["base_models"]):
            other = seen.get(base["weights"])
            if other is not None:
                raise ManifestError(str(source), f"weights {base['weights']!r} are also "
                                    f"those of {other!r}; weight paths must be unique",
                                    path=f"$.base_models[{i}].weights")
            seen[base["weights"]] = base["name"]
        names = [b["name"] for b in data["base_models"]]
        if len(set(names)) != len(names):
            raise ManifestError(str(source), "a base model is listed twice",
                                path="$.base_models")
    return data, major


def _base_entries(data: dict[str, Any], major: int) -> list[dict[str, Any]]:
    """Base models as v2-style entries (name, version, weights, prompt_template)."""
    if major == 2:
        return [dict(b) for b in data["base_models"]]
    base = data["base_model"]
    entry = {"name": base} if isinstance(base, str) else dict(base)
    entry.setdefault("version", "*")
    if "weights" in data:
        entry["weights"] = data["weights"]
    if "prompt_template" in data:
        entry["prompt_template"] = data["prompt_template"]
    return [entry]


def _convert_peft(root: Path, data: dict[str, Any], bases: list[dict[str, Any]],
                  tmp: Path) -> dict[str, Path]:
    """Convert the PEFT adapter directories the bases name into GGUF files under ``tmp``;
    the bases (and ``data``, the config) then name ``DIR.gguf``. {new rel: file}."""
    converted: dict[str, Path] = {}
    for i, base in enumerate(bases):
        rel = base.get("weights")
        source = peft_dir(root / rel) if rel else None
        if source is None:
            if rel and rel.lower().endswith(".safetensors"):
                raise ArtifactInputError(f"{rel!r} is safetensors without {PEFT_CONFIG} "
                                         "beside it", hint="give the PEFT adapter directory "
                                         "(adapter_config.json + adapter_model.safetensors) "
                                         "or a GGUF LoRA adapter")
            continue
        dir_rel = source.relative_to(root).as_posix()
        new_rel = f"{dir_rel}.gguf" if dir_rel != "." else "adapter.gguf"
        out = tmp / f"{i}.gguf"
        convert_peft(source, out, base.get("architecture"))
        converted[new_rel] = out
        base["weights"] = new_rel
        entry = data["base_models"][i] if "base_models" in data else data
        entry["weights"] = new_rel
    return converted


def _check_adapter(root: Path, rel: str, base: dict[str, Any],
                   path: Path | None = None) -> dict[str, str]:
    path = path or root / rel
    if not path.is_file():
        raise ArtifactInputError(f"Weight file {rel!r} of base model {base['name']!r} is "
                                 f"missing from {root}", hint="add the file or fix manifest.json")
    if not is_gguf(path):
        return {}
    info = read_gguf(path)
    if info.general_type != "adapter":
        raise ArtifactInputError(f"{path} is a full model, not an adapter",
                                 hint="an expert's weights are a LoRA adapter GGUF")
    arch = base.get("architecture")
    if arch and arch != info.architecture:
        raise ArtifactInputError(
            f"{path} is an adapter for {info.architecture!r}, but manifest.json says "
            f"{base['name']!r} is {arch!r}", hint="rebuild the adapter for that base model")
    return {"org.simplex.adapter.architecture": info.architecture or ""}


def _pack_expert(home: Home, root: Path, ref: Reference, variant: str | None,
                 version: str | None) -> PackResult:
    data, major = load_expert_manifest(root)
    bases = _base_entries(data, major)
    with tempfile.TemporaryDirectory(prefix="sxpm-peft-") as tmp:
        converted = _convert_peft(root, data, bases, Path(tmp))
        return _pack_expert_files(home, root, ref, variant, version, data, major, bases,
                                  converted)


def _pack_expert_files(home: Home, root: Path, ref: Reference, variant: str | None,
                       version: str | None, data: dict[str, Any], major: int,
                       bases: list[dict[str, Any]], converted: dict[str, Path]
                       ) -> PackResult:
    name = data["name"]
    vers = _resolve_version(ref, version, data["version"])
    store = home.store
    # Check every file before writing anything, so bad input leaves the store as it was.
    checks = {b["name"]: _check_adapter(root, b["weights"], b, converted.get(b["weights"]))
              if b.get("weights") else {} for b in bases}
    shared: list[tuple[str, str]] = [(p, oci.EXPERT_SOFT_PROMPT) for p in
                                     data.get("soft_prompts", [])]
    shared += [(p, oci.EXPERT_DOC) for p in data.get("files", [])]
    listed = {p for p, _ in shared}
    for rel, _ in _walk(root):
        if "/" not in rel and rel.lower().startswith(_DOC_PREFIXES) and rel not in listed:
            shared.append((rel, oci.EXPERT_DOC))
    if major == 2 and data.get("prompt_template"):
        shared.append((data["prompt_template"], oci.EXPERT_TEMPLATE))
    for rel in [b["prompt_template"] for b in bases if b.get("prompt_template")] + [
            rel for rel, _ in shared]:
        if not (root / rel).is_file():
            raise ArtifactInputError(f"{rel!r} named in manifest.json is missing from {root}",
                                     hint="add the file or fix manifest.json")
    for base in bases:  # the files one manifest installs side by side
        check_paths([base[k] for k in ("weights", "prompt_template") if base.get(k)]
                    + [rel for rel, _ in shared], str(root), _RENAME)
    # The config says what the annotations say (--version may differ from the file):
    # an install refuses an artifact whose name, version or kind disagree.
    config_desc = store.put_bytes(canonical_json({**data, "version": vers}), oci.EXPERT_CONFIG)
    ref = ref if ref.tag else ref.with_tag(vers)
    built: list[tuple[dict[str, Any], Descriptor]] = []
    for base in bases:
        layers: list[Descriptor] = []
        extra = checks[base["name"]]
        if base.get("weights"):
            layers.append(_file_layer(store, base["weights"],
                                      converted.get(base["weights"], root / base["weights"]),
                                      oci.EXPERT_ADAPTER, {oci.ANN_BASE_MODEL: base["name"]}))
        if base.get("prompt_template"):
            layers.append(_file_layer(store, base["prompt_template"],
                                      root / base["prompt_template"], oci.EXPERT_TEMPLATE))
        layers += [_file_layer(store, rel, root / rel, mt) for rel, mt in shared]
        dep = {"name": base["name"], "req": str(base.get("version", "*")), "kind": "model"}
        annotations = {oci.ANN_NAME: name, oci.ANN_VERSION: vers,
                       oci.ANN_BASE_MODEL: base["name"],
                       oci.ANN_DEPENDENCIES: _deps_annotation([dep]), **extra}
        manifest = Manifest(config_desc, tuple(layers), oci.EXPERT_ARTIFACT, annotations)
        built.append((base, store.put_manifest(manifest)))
    if major == 1:
        top, variants = _store_ref(home, ref, built[0][1], variant, oci.EXPERT_ARTIFACT,
                                   {oci.ANN_BASE_MODEL: built[0][0]["name"]})
        return PackResult(ref, "expert", name, vers, top, built[0][1], variants)
    if variant is not None:
        raise InputError("--variant does not apply to a v2 expert",
                         hint="its variants are its base models, one per base_models entry")
    entries = tuple(
        Descriptor(d.media_type, d.digest, d.size,
                   {oci.ANN_VARIANT: b["name"], oci.ANN_BASE_MODEL: b["name"]})
        for b, d in built)
    index = ImageIndex(entries, annotations={oci.ANN_NAME: name, oci.ANN_VERSION: vers,
                                             oci.ANN_KIND: "expert"})
    top = store.put_manifest(index)
    from sxpm.store.refs import store_name

    with store.ref_lock(store_name(ref)):
        store.set_ref(store_name(ref), top)
    return PackResult(ref, "expert", name, vers, top, top,
                      tuple(b["name"] for b, _ in built))


def _decompressed(fh: Any) -> Any:
    """The tar stream inside a ``.expert`` file: gzip (the format), bzip2, xz or none."""
    import bz2
    import gzip
    import lzma

    magic = fh.peek(6)[:6]
    if magic.startswith(b"\x1f\x8b"):
        return gzip.GzipFile(fileobj=fh, mode="rb")
    if magic.startswith(b"BZh"):
        return bz2.BZ2File(fh)
    if magic.startswith(b"\xfd7zXZ\x00"):
        return lzma.LZMAFile(fh)
    return fh


def extract_legacy_expert(archive: Path, dest: Path) -> Path:
    """Unpack a legacy ``.expert`` tar.gz safely; the directory holding manifest.json.

    Bounded like a package layer (members, total bytes, ratio to the archive's size,
    header bytes), so a small archive cannot fill the disk or the memory.
    """
    import lzma
    import zlib

    where = str(archive)
    try:
        fh = open(archive, "rb")  # noqa: SIM115 - closed below, also on errors
    except OSError as exc:
        raise ArtifactInputError(f"{archive} is not a readable .expert archive ({exc})",
                                 hint="give an expert directory or a .expert tar.gz") from None
    with fh:
        try:
            extract_tar(_decompressed(fh), dest, where, packed_size=os.fstat(fh.fileno()).st_size,
                        max_members=MAX_LEGACY_MEMBERS, max_bytes=MAX_LEGACY_BYTES)
        except (tarfile.TarError, OSError, EOFError, zlib.error, lzma.LZMAError) as exc:
            raise ArtifactInputError(f"{archive} is not a readable .expert archive ({exc})",
                                     hint="give an expert directory or a .expert tar.gz"
                                     ) from None
    if (dest / "manifest.json").is_file():
        return dest
    subdirs = [p for p in dest.iterdir() if p.is_dir()]
    if len(subdirs) == 1 and (subdirs[0] / "manifest.json").is_file():
        return subdirs[0]
    raise ArtifactInputError(f"{archive} has no manifest.json")


# --- package --------------------------------------------------------------------


def load_package_metadata(root: Path) -> dict[str, Any]:
    source = root / "simplex.toml"
    try:
        with open(source, "rb") as fh:
            doc = tomllib.load(fh)
    except FileNotFoundError:
        raise ArtifactInputError(f"{root} has no simplex.toml",
                                 hint="a code package needs simplex.toml with a [package] "
                                      "table (sxpm init writes one)") from None
    except tomllib.TOMLDecodeError as exc:
        raise ManifestError(str(source), f"invalid TOML: {exc}") from None
    package = doc.get("package")
    if not isinstance(package, dict):
        raise ManifestError(str(source), "missing [package] table", path="$.package")
    meta: dict[str, Any] = {k: package[k] for k in
                            ("name", "version", "description", "license", "authors", "tags")
                            if k in package}
    for table in ("dependencies", "models", "experts", "features"):
        if table in doc:
            meta[table] = doc[table]
    validate(meta, "package-metadata", str(source))
    return meta


def _tarinfo(rel: str, path: Path) -> tarfile.TarInfo:
    info = tarfile.TarInfo(rel)
    st = path.stat()
    info.size = st.st_size
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.mode = 0o755 if st.st_mode & 0o111 else 0o644
    return info


def build_package_layer(root: Path, store: OCILayout) -> Descriptor:
    """One reproducible tar+zstd of the tree: sorted, mtime 0, owner 0, fixed modes."""
    import zstandard

    with store.writer(None, where=str(root)) as w:
        compressor = zstandard.ZstdCompressor(level=10, write_checksum=True)
        with compressor.stream_writer(w, closefd=False) as zw:  # type: ignore[arg-type]
            with tarfile.open(fileobj=zw, mode="w|", format=tarfile.PAX_FORMAT) as tf:
                for rel, path in _walk(root):
                    with open(path, "rb") as fh:
                        tf.addfile(_tarinfo(rel, path), fh)
        return w.commit(oci.PACKAGE_LAYER)


def _pack_package(home: Home, root: Path, ref: Reference, variant: str | None,
                  version: str | None) -> PackResult:
    if not root.is_dir():
        raise ArtifactInputError(f"{root} is not a directory",
                                 hint="a code package is a directory with simplex.toml")
    meta = load_package_metadata(root)
    vers = _resolve_version(ref, version, meta["version"])
    check_paths([rel for rel, _ in _walk(root)], str(root), _RENAME)
    store = home.store
    layer = build_package_layer(root, store)
    layer = Descriptor(layer.media_type, layer.digest, layer.size,
                       {oci.ANN_TITLE: f"{meta['name']}-{vers}.tar.zst"})
    config_desc = store.put_bytes(canonical_json({**meta, "version": vers}),
                                  oci.PACKAGE_CONFIG)
    deps = []
    for table, dep_kind in (("dependencies", "package"), ("models", "model"),
                            ("experts", "expert")):
        for dep_name, req in sorted(meta.get(table, {}).items()):
            text = req if isinstance(req, str) else req.get("version", "*")
            deps.append({"name": dep_name, "req": text, "kind": dep_kind})
    annotations = {oci.ANN_NAME: meta["name"], oci.ANN_VERSION: vers,
                   oci.ANN_DEPENDENCIES: _deps_annotation(deps)}
    manifest = Manifest(config_desc, (layer,), oci.PACKAGE_ARTIFACT, annotations)
    mdesc = store.put_manifest(manifest)
    ref = ref if ref.tag else ref.with_tag(vers)
    top, variants = _store_ref(home, ref, mdesc, variant, oci.PACKAGE_ARTIFACT)
    return PackResult(ref, "package", meta["name"], vers, top, mdesc, variants)
