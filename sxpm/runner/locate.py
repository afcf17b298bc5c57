"""From what the user typed to files on disk: the model GGUF, the adapter, the template.

A MODEL is looked up, in order, as

0. a path to a ``.gguf`` file, run as it is (nothing is stored or installed);
1. ``NAME`` locked in the project's ``simplex.lock`` (found from the current directory
   upwards): the version the lock pins, installed in the project's ``.simplex/``;
2. ``NAME[@VERSION]`` of an installed model (the newest version when none is given);
3. a full reference (``oci:DIR/name:tag``, ``host/repo:tag``, ``...@sha256:...``)
   already in the store, run straight from its content-addressed blobs;
4. otherwise it is not installed: :class:`~sxpm.errors.ModelNotInstalledError` names
   the install command, or, with ``install=True``, sxpm installs it first.

Experts are found the same way. An expert is checked against its model *before*
anything is loaded, and against the installed base when it is installed: the base model
names of its manifest must include the model's name, the model must meet that entry's
version requirement, ``sha256`` and ``quantization`` when the expert pins them, and the
adapter GGUF must be a LoRA adapter of the model's architecture.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sxpm.core.categories import Traits, from_record
from sxpm.core.gguf import GGUFHeader, read_header
from sxpm.core.versions import VersionReq, version_key
from sxpm.errors import (
    IncompatibleExpertError,
    InputError,
    ManifestError,
    ModelNotInstalledError,
    NotFoundError,
    StoreError,
    SxpmError,
)
from sxpm.home import Home
from sxpm.installed.records import Installed, check_files, find_installed, main_gguf

if TYPE_CHECKING:
    from sxpm.core.oci import Descriptor, ImageIndex, Manifest
    from sxpm.core.reference import Reference
    from sxpm.runner.extras import ModelExtras
    from sxpm.runner.templates import PromptTemplate

# The OCI modules, the store and the install code load only on the paths that need
# them: running an installed model by name reads its install record and GGUF header.


@dataclass(frozen=True)
class ModelFiles:
    name: str
    version: str
    variant: str | None
    path: Path  # the GGUF to load
    origin: str  # "installed", "store" or "file"
    ref: str | None
    header: GGUFHeader
    extras: ModelExtras | None = None  # an Ollama model's template, system, options, adapter
    sha256: str | None = None  # the weights' digest as recorded; None: hashed when asked
    traits: Traits | None = None  # what the install record (or manifest) declares


    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "variant": self.variant,
                "path": str(self.path), "origin": self.origin, "ref": self.ref,
                "architecture": self.header.architecture}


@dataclass(frozen=True)
class BaseRequirement:
    """One base model entry of an expert manifest: what the expert needs of its base."""

    name: str
    version: str = "*"
    sha256: str | None = None
    quantization: str | None = None
    architecture: str | None = None

    def install_hint(self) -> str:
        spec = self.name if self.version.strip() in ("", "*") else f"{self.name}@{self.version}"
        return f"install the base it needs: sxpm model install {spec}"


@dataclass(frozen=True)
class ExpertFiles:
    name: str
    version: str
    base_models: tuple[str, ...]  # every base model the expert's manifest names
    variant_base: str | None  # the base model of the variant at hand
    adapter: Path | None
    adapter_header: GGUFHeader | None
    template: PromptTemplate | None
    origin: str
    ref: str | None
    requirements: tuple[BaseRequirement, ...] = ()  # what each base entry pins

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "base_models": list(self.base_models),
                "adapter": str(self.adapter) if self.adapter else None,
                "template": self.template.text if self.template else None,
                "origin": self.origin, "ref": self.ref}


def is_reference(spec: str) -> bool:
    """A full reference has a path, a host or a digest; a name has none of them."""
    return "/" in spec or ":" in spec


def split_spec(spec: str) -> tuple[str, str | None]:
    name, _, version = spec.partition("@")
    if not name:
        raise InputError(f"Invalid model or expert {spec!r}", hint="write NAME[@VERSION] or REF")
    return name, version or None


def _newest(items: list[Any]) -> Any:
    if len(items) == 1:
        return items[0]  # the usual case: no need to import the version library
    from sxpm.core.versions import parse_version

    def key(item: Any) -> tuple[int, Any]:
        try:
            return (1, parse_version(item.version))
        except InputError:
            return (0, item.version)

    return max(items, key=key)


def store_refs_named(home: Home, name: str) -> list[tuple[Reference, Descriptor]]:
    """Refs in the store whose repository is called ``name``, newest tag last."""
    from sxpm.core.reference import Reference

    out: list[tuple[Reference, Descriptor]] = []
    if not home.store.exists():
        return out
    for text, desc in home.store.refs().items():
        try:
            ref = Reference.parse(text)
        except InputError:
            continue
        if ref.name == name:
            out.append((ref, desc))
    return sorted(out, key=lambda item: _tag_key(item[0].tag))


def _tag_key(tag: str | None) -> tuple[int, Any]:
    from sxpm.core.versions import parse_version

    try:
        return (1, parse_version(tag or ""))
    except InputError:
        return (0, tag or "")


def suggest_ref(home: Home, name: str, version: str | None) -> Reference:
    """Where to install ``name`` from: a matching store ref, else the default registry."""
    for ref, _desc in reversed(store_refs_named(home, name)):
        if version is None or ref.tag == version:
            return ref
    return home.parse_ref(f"{name}:{version}" if version else name)


def _install_source(home: Home, spec: str, kind: str, suggested: Reference,
                    variant: str | None) -> tuple[Reference, Any]:
    """Where ``run NAME --install`` installs from: a ref the store already has under that
    name, else the newest matching version the configured index lists (pinned by its
    digest, with what the line says the artifact is), else the default registry."""
    if home.store.exists() and home.store.resolve(str(suggested)) is not None:
        return suggested, None
    from sxpm.ops.names import resolve_spec  # `sxpm run NAME` stays lean: the index loads here

    named = resolve_spec(home, spec, kind, variant=variant)
    return named.ref, named.expect


# --- manifests from the store -------------------------------------------------------


def _manifest_by_digest(home: Home, digest_text: str) -> Manifest:
    from sxpm.core import oci
    from sxpm.core.oci import Descriptor, Manifest
    from sxpm.core.reference import Digest

    digest = Digest.parse(digest_text)
    store = home.store
    if not store.has_blob(digest):
        raise StoreError(f"The manifest {digest} of an installed artifact is not in the store",
                         hint="reinstall it (`sxpm gc` may have removed it)")
    obj = store.load_manifest(Descriptor(oci.OCI_MANIFEST, digest, store.blob_size(digest)))
    if not isinstance(obj, Manifest):
        raise ManifestError(str(digest), "expected a manifest, found an image index")
    return obj


def _config(home: Home, manifest: Manifest) -> dict[str, Any]:
    try:
        data = json.loads(home.store.read_blob(manifest.config))
    except ValueError:
        raise ManifestError(str(manifest.config.digest), "config blob is not JSON") from None
    if not isinstance(data, dict):
        raise ManifestError(str(manifest.config.digest), "config must be a JSON object")
    return data


def _title(layer: Descriptor) -> str:
    from sxpm.core import oci

    return layer.annotations.get(oci.ANN_FILEPATH) or layer.annotations.get(oci.ANN_TITLE) or ""


# --- models -------------------------------------------------------------------------


def _extras(titles: Any, part: Callable[[str], Path | None], where: str
            ) -> ModelExtras | None:
    """An Ollama model's template, system prompt, options and adapter; None for others."""
    if not any(str(t).startswith("ollama/") for t in titles):
        return None
    # Only here: `sxpm run NAME` of any other model never loads the template modules.
    from sxpm.runner.ollama import read_extras

    return read_extras(part, where)


Budget = Callable[[], "int | None"]


def _from_lock(kind: str, name: str, version: str | None) -> tuple[Path, str] | None:
    """(install root, version) when the project's lock pins ``name`` as a ``kind``."""
    from sxpm.project.manifest import LOCKFILE, find_manifest

    manifest = find_manifest()
    if manifest is None or not (manifest.parent / LOCKFILE).is_file():
        return None
    from sxpm.project.lock import Lock

    locked = Lock.read(manifest.parent / LOCKFILE).by_name().get(name)
    if locked is None or locked.kind != kind or version not in (None, locked.version):
        return None
    return manifest.parent / ".simplex", locked.version


def _installed(home: Home, kind: str, name: str, version: str | None) -> list[Any]:
    """Installed items for ``name``: the project's locked one, else the home's."""
    locked = _from_lock(kind, name, version)
    if locked is None:
        return find_installed(home.root, kind, name, version)
    root, pinned = locked
    found = find_installed(root, kind, name, pinned)
    if not found:
        raise NotFoundError(f"{kind} {name} {pinned} is locked in this project but not "
                            "installed", hint="run `sxpm install --frozen`")
    return found


def find_model(home: Home, spec: str, *, variant: str | None = None,
               memory_budget: Budget | None = None, install: bool = False,
               **install_kw: Any) -> ModelFiles:
    """The model ``spec`` names (see the module docstring for the order of lookup).

    ``memory_budget`` (called only when there is a choice) gives the bytes a model may
    take; among the variants of an artifact the largest that fits is chosen when
    ``variant`` is None.
    """
    if spec.lower().endswith(".gguf") and Path(spec).is_file():
        path = Path(spec).resolve()  # a file on disk runs as it is: nothing is stored
        return ModelFiles(path.stem, "file", None, path, "file", None, read_header(path))
    if is_reference(spec):
        ref = home.parse_ref(spec)
        return _model_from_store(home, ref, variant, memory_budget, install, **install_kw)
    name, version = split_spec(spec)
    found = _installed(home, "model", name, version)
    if variant is not None:
        found = [i for i in found if i.record.get("variant") == variant]
    if not found:
        ref = suggest_ref(home, name, version)
        if not install:
            raise ModelNotInstalledError("model", spec, str(ref))
        from sxpm.ops.install import install as do_install

        ref, expect = _install_source(home, spec, "model", ref, variant)
        chosen = variant or _choose_variant_in_store(home, ref, memory_budget)
        item = do_install(home, ref, variant=chosen, expect=expect, **install_kw)
    else:
        item = _newest(found)
    check_files(item)  # a corrupted install is refused before it loads
    path = main_gguf(item.path, item.record)
    header = read_header(path)

    files = item.record.get("files", {})

    def part(title: str) -> Path | None:
        found = item.path / title
        return found if title in files and found.is_file() else None

    digest = files.get(path.relative_to(item.path).as_posix())
    return ModelFiles(item.name, item.version, item.record.get("variant"), path, "installed",
                      item.record.get("ref"), header, _extras(files, part, str(item.path)),
                      str(digest) if digest else None, from_record(item.record))


def _store_tree(home: Home, ref: Reference) -> Any:
    """``ref``'s manifest tree as the store holds it (NotFoundError when it does not).

    Running from the store checks no signature (installing does), so no policy is
    loaded for it.
    """
    from sxpm.ops.fetch import Fetcher
    from sxpm.trust.policy import TrustPolicy

    fetcher = Fetcher(home, TrustPolicy(), offline=True)
    return fetcher, fetcher.tree(ref, where="store")


def _choose_variant_in_store(home: Home, ref: Reference, budget: Budget | None
                             ) -> str | None:
    try:
        _, tree = _store_tree(home, ref)
    except NotFoundError:
        return None  # not local yet: the install pulls its first variant
    return _choose_variant(home, tree.index, budget)


def _choose_variant(home: Home, index: ImageIndex | None, budget: Budget | None,
                    held_only: bool = False) -> str | None:
    """The variant the policy picks for ``budget``; with ``held_only``, among those the
    store holds (running from the store never fetches), when it holds any."""
    from sxpm.artifacts.describe import held_variants
    from sxpm.core.variants import usable_memory
    from sxpm.runner.plan import choose_variant

    if index is None:
        return None
    options = index.variant_values()
    if held_only:
        held = set(held_variants(home.store, index, layers=True))
        pulled = [o for o in options if o.name in held]
        if len(pulled) == 1:
            return pulled[0].name
        options = pulled or options
    if len(options) < 2:
        return None
    return choose_variant(options, usable_memory(budget()) if budget else None).name


def _model_from_store(home: Home, ref: Reference, variant: str | None, budget: Budget | None,
                      install: bool, **install_kw: Any) -> ModelFiles:
    from sxpm.artifacts.describe import model_traits
    from sxpm.core import oci
    from sxpm.ops.install import install as do_install

    try:
        fetcher, tree = _store_tree(home, ref)
    except NotFoundError:
        if not install:
            raise ModelNotInstalledError("model", str(ref), str(ref)) from None
        item = do_install(home, ref, variant=variant, **install_kw)
        return find_model(home, f"{item.name}@{item.version}", install=False)
    if variant is None and tree.index is not None:
        variant = _choose_variant(home, tree.index, budget, held_only=True)
    info = fetcher.artifact(tree, tree.entry(variant), trust=False).info
    if info.kind != "model":
        raise InputError(f"{ref} is {info.kind!r}, not a model",
                         hint="run a model; pass an expert with --expert")
    layer = info.main_weights()
    if layer is None and any(oci.model_archive(d.media_type) for d in info.manifest.layers):
        # Weights in a tar layer (modctl's default) are files only once unpacked: the
        # installed tree is what runs; the store keeps the archive as it was served.
        if not _installed(home, "model", info.name, info.version):
            if not install:
                raise ModelNotInstalledError("model", str(ref), str(ref))
            do_install(home, ref, variant=info.variant, **install_kw)
        return find_model(home, f"{info.name}@{info.version}", variant=info.variant)
    if layer is None:
        raise NotFoundError(f"{ref} holds no GGUF weights")
    if not home.store.has_blob(layer.digest):
        if not install:
            hint_variant = f" --variant {info.variant}" if info.variant else ""
            raise ModelNotInstalledError("model", f"{ref} ({info.variant or 'default'} variant, "
                                         "not pulled)", f"{ref}{hint_variant}")
        do_install(home, ref, variant=info.variant, **install_kw)
    path = home.store.blob_path(layer.digest)
    blobs = {_title(d): d.digest for d in info.manifest.layers if home.store.has_blob(d.digest)}

    def part(title: str) -> Path | None:
        return home.store.blob_path(blobs[title]) if title in blobs else None

    return ModelFiles(info.name, info.version, info.variant, path, "store", str(ref),
                      read_header(path), _extras(blobs, part, str(ref)), str(layer.digest),
                      model_traits(home.store, info))


# --- experts ------------------------------------------------------------------------


def base_model_names(config: dict[str, Any]) -> tuple[str, ...]:
    """Every base model an expert manifest (schema v1 or v2) names."""
    if isinstance(config.get("base_models"), list):
        return tuple(str(b.get("name")) for b in config["base_models"] if isinstance(b, dict))
    base = config.get("base_model")
    if isinstance(base, dict):
        return (str(base.get("name")),)
    return (str(base),) if base else ()


def base_requirements(config: dict[str, Any]) -> tuple[BaseRequirement, ...]:
    """What every base entry of an expert manifest (schema v1 or v2) pins."""
    entries: list[Any] = config["base_models"] if isinstance(config.get("base_models"),
                                                               list) else [config.get("base_model")]
    out: list[BaseRequirement] = []
    for entry in entries:
        if isinstance(entry, str) and entry:
            out.append(BaseRequirement(entry))
        elif isinstance(entry, dict) and entry.get("name"):
            opt = {k: str(entry[k]) for k in ("sha256", "quantization", "architecture")
                   if entry.get(k)}
            out.append(BaseRequirement(str(entry["name"]), str(entry.get("version") or "*"),
                                       **opt))
    return tuple(out)


def _hex(digest: str) -> str:
    return digest.removeprefix("sha256:").lower()


def _file_sha256(path: Path) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def misfit(req: BaseRequirement, version: str | None, sha256: Callable[[], str],
           header: GGUFHeader, adapter_architecture: str | None = None) -> str | None:
    """Why a base model (its version, weights' digest, GGUF header) does not meet
    ``req``; None when it does. ``version`` None (a bare GGUF file) skips the version."""
    if version is not None and req.version.strip() not in ("", "*") \
            and not VersionReq.parse(req.version).matches(version):
        return f"it needs {req.name} {req.version}, not {version}"
    if req.quantization and (header.file_type or "").upper() != req.quantization.upper():
        return f"it needs {req.name} quantized {req.quantization}, not {header.file_type}"
    if req.architecture and header.architecture != req.architecture:
        return (f"it needs {req.name} of architecture {req.architecture!r}, not "
                f"{header.architecture!r}")
    if adapter_architecture and adapter_architecture != header.architecture:
        return (f"its adapter is for architecture {adapter_architecture!r}, the model is "
                f"{header.architecture!r}")
    if req.sha256 and _hex(sha256()) != _hex(req.sha256):
        return f"it pins {req.name}'s weights to sha256:{_hex(req.sha256)[:12]}, these differ"
    return None


def _expert_files(home: Home, manifest: Manifest, config: dict[str, Any], name: str,
                  version: str, locate: Callable[[Descriptor], Path], origin: str,
                  ref: str | None) -> ExpertFiles:
    from sxpm.core import oci
    from sxpm.runner.templates import PromptTemplate

    adapter: Path | None = None
    template: PromptTemplate | None = None
    for layer in manifest.layers:
        title = _title(layer)
        if layer.media_type == oci.EXPERT_ADAPTER and adapter is None:
            adapter = locate(layer)
        elif layer.media_type == oci.EXPERT_TEMPLATE and template is None:
            path = locate(layer)
            try:
                text = path.read_text(encoding="utf-8")
            except UnicodeDecodeError:
                raise ManifestError(str(path), "the prompt template is not UTF-8 text") from None
            template = PromptTemplate.parse(text, f"{title or path} of expert {name!r}")
    return ExpertFiles(name, version, base_model_names(config),
                       manifest.annotations.get(oci.ANN_BASE_MODEL), adapter,
                       read_header(adapter) if adapter else None, template, origin, ref,
                       base_requirements(config))


def find_expert(home: Home, spec: str, model_name: str, *, install: bool = False,
                **install_kw: Any) -> ExpertFiles:
    """The expert ``spec`` names, in the variant built for ``model_name``."""
    if is_reference(spec):
        return _expert_from_store(home, home.parse_ref(spec), model_name, install, **install_kw)
    name, version = split_spec(spec)
    found = _installed(home, "expert", name, version)
    if not found:
        ref = suggest_ref(home, name, version)
        if not install:
            raise ModelNotInstalledError("expert", spec, f"{ref} --for {model_name}")
        ref, expect = _install_source(home, spec, "expert", ref, None)
        done = install_expert(home, ref, model_name, expect=expect, **install_kw)
        found = find_installed(home.root, "expert", name, done.version)
    if len(found) > 1:
        # One version may be installed for several bases, side by side: the tree built
        # for this model (else the newest: check_compatible says what is wrong with it).
        built = [i for i in found if expert_base(home, i) == model_name]
        found = built or found
    item = _newest(found)
    check_files(item)
    manifest = _manifest_by_digest(home, item.record["digest"])
    config = _config(home, manifest)

    def locate(layer: Descriptor) -> Path:
        path = Path(item.path) / _title(layer)
        if not path.is_file():
            raise NotFoundError(f"{path} is missing from the installed expert",
                                hint=f"reinstall it: sxpm expert install {item.record.get('ref')}")
        return path

    return _expert_files(home, manifest, config, item.name, item.version, locate, "installed",
                         item.record.get("ref"))


def expert_base(home: Home, item: Installed) -> str | None:
    """The base model an installed expert tree is built for: its manifest's
    ``org.simplex.base-model``, else the variant its record names (a v2 expert's
    variants are named after their bases); None when neither says."""
    from sxpm.core import oci

    try:
        base = _manifest_by_digest(home, str(item.record.get("digest"))).annotations.get(
            oci.ANN_BASE_MODEL)
    except SxpmError:
        base = None
    variant = item.record.get("variant")
    return base or (variant if isinstance(variant, str) else None)


def missing_base_hint(home: Home, item: Installed) -> str | None:
    """For an expert tree whose base model is not installed: what to install (the
    requirement its manifest states); None when the base is there or unnamed."""
    base = expert_base(home, item)
    if not base or find_installed(home.root, "model", base):
        return None
    try:
        config = _config(home, _manifest_by_digest(home, str(item.record.get("digest"))))
    except SxpmError:
        config = {}
    req = next((r for r in base_requirements(config) if r.name == base),
               BaseRequirement(base))
    return req.install_hint()


def variant_for_base(index: ImageIndex, model_name: str) -> str | None:
    """The variant of a v2 expert index built for ``model_name``, if any."""
    from sxpm.core import oci

    for desc in index.manifests:
        if desc.annotations.get(oci.ANN_BASE_MODEL) == model_name:
            return desc.annotations.get(oci.ANN_VARIANT, model_name)
    return None


ANN_ADAPTER_ARCH = "org.simplex.adapter.architecture"


def _installed_base(item: Installed) -> tuple[Callable[[], str], GGUFHeader]:
    """An installed model's weights digest (as recorded, else hashed) and GGUF header."""
    path = main_gguf(item.path, item.record)
    digest = item.record.get("files", {}).get(path.relative_to(item.path).as_posix())
    return (lambda: str(digest) if digest else _file_sha256(path)), read_header(path)


def _fitting_base(expert: str, reqs: tuple[BaseRequirement, ...], model_name: str | None,
                  home: Home, adapter_arch: Callable[[str], str | None], *,
                  choose: bool = False) -> str | None:
    """The installed base model the expert is installed for: ``model_name`` when given
    (refused unless an installed version of it fits), else the newest installed model
    that meets one of ``reqs``. None when no base it names is installed (nothing to
    check against yet: `sxpm run` checks again), unless ``choose`` (the expert has a
    variant per base, and which one to install depends on the answer): then no base
    installed, or installed bases of two names that fit, is an :class:`InputError`
    naming the candidates."""
    wanted = [r for r in reqs if model_name is None or r.name == model_name]
    if model_name is not None and not wanted:
        first = reqs[0] if reqs else None
        raise IncompatibleExpertError(
            expert, model_name, f"its manifest names {', '.join(r.name for r in reqs) or 'no'}"
            " as base model", hint=first.install_hint() if first else None)
    fits: list[tuple[Installed, BaseRequirement]] = []
    first_misfit: tuple[str, str, BaseRequirement] | None = None
    for req in wanted:
        for item in sorted(find_installed(home.root, "model", req.name),
                           key=lambda i: version_key(i.version), reverse=True):
            sha256, header = _installed_base(item)
            reason = misfit(req, item.version, sha256, header, adapter_arch(req.name))
            if reason is None:
                fits.append((item, req))
            elif first_misfit is None:
                first_misfit = (f"{item.name} {item.version}", reason, req)
    if fits:
        names = sorted({f[0].name for f in fits})
        if choose and model_name is None and len(names) > 1:
            found = ", ".join(f"{item.name} {item.version}" for item, _ in fits)
            raise InputError(f"{expert} fits more than one installed base model: {found}",
                             hint="choose one with --for MODEL: " + " or ".join(
                                 f"--for {n}" for n in names))
        return max(fits, key=lambda f: version_key(f[0].version))[0].name
    if first_misfit is not None:
        model, reason, req = first_misfit
        raise IncompatibleExpertError(expert, model, reason, hint=req.install_hint())
    if choose and model_name is None and reqs:
        raise NotFoundError(f"No base model of {expert} is installed (it runs on "
                            + ", ".join(f"{r.name} {r.version}" for r in reqs) + ")",
                            hint=f"{reqs[0].install_hint()}; or choose the variant with "
                                 "--for MODEL")
    return model_name


def install_expert(home: Home, ref: Reference, model_name: str | None = None,
                   **install_kw: Any) -> Any:
    """Install an expert for the installed base that fits (``model_name``, else the
    newest installed model one of its base entries accepts); for a v2 expert, the
    variant built for that base. A base that does not fit is refused before anything
    is installed."""
    from sxpm.core import oci
    from sxpm.ops.fetch import Fetcher
    from sxpm.ops.install import install

    fetcher = Fetcher.for_command(
        home, options=install_kw.get("options"), offline=not install_kw.get("pull_missing", True),
        skip_verify=bool(install_kw.get("insecure_skip_verify")))
    # The manifests and the config alone say which base: no layer is fetched to find out.
    tree = fetcher.tree(ref)
    index = tree.index
    if model_name is not None and index is not None and variant_for_base(index,
                                                                         model_name) is None:
        bases = [d.annotations.get(oci.ANN_BASE_MODEL, "?") for d in index.manifests]
        raise IncompatibleExpertError(
            ref.name, model_name, f"it has no variant for it (built for "
            f"{', '.join(bases)})", hint="choose one of those models")
    info = fetcher.artifact(tree, tree.entry(None), trust=False).info
    if info.kind != "expert":
        return install(home, ref, fetcher=fetcher, **install_kw)  # the caller says what it is
    reqs = base_requirements(info.config)
    if index is not None:
        reqs = tuple(r for r in reqs if variant_for_base(index, r.name) is not None)

    def adapter_arch(base: str) -> str | None:
        if index is None:
            return info.manifest.annotations.get(ANN_ADAPTER_ARCH) or None
        entry = next(d for d in index.manifests if d.annotations.get(oci.ANN_BASE_MODEL) == base)
        return tree.manifest(entry).annotations.get(ANN_ADAPTER_ARCH) or None

    base = _fitting_base(ref.name, reqs, model_name, home, adapter_arch,
                         choose=index is not None and len(reqs) > 1)
    variant = variant_for_base(index, base) if index is not None and base else None
    return install(home, ref, variant=variant, fetcher=fetcher, **install_kw)


def _expert_from_store(home: Home, ref: Reference, model_name: str, install: bool,
                       **install_kw: Any) -> ExpertFiles:
    from sxpm.core import oci

    try:
        fetcher, tree = _store_tree(home, ref)
    except NotFoundError:
        if not install:
            raise ModelNotInstalledError("expert", str(ref), f"{ref} --for {model_name}"
                                         ) from None
        item = install_expert(home, ref, model_name, **install_kw)
        return find_expert(home, f"{item.name}@{item.version}", model_name)
    variant = None
    if tree.index is not None:
        variant = variant_for_base(tree.index, model_name)
        if variant is None:
            variant = tree.index.select(None).annotations.get(oci.ANN_VARIANT)
    info = fetcher.artifact(tree, tree.entry(variant), trust=False).info
    if info.kind != "expert":
        raise InputError(f"{ref} is {info.kind!r}, not an expert")

    def locate(layer: Descriptor) -> Path:
        if not home.store.has_blob(layer.digest):
            raise NotFoundError(f"{ref}: {_title(layer)} is not in the store",
                                hint=f"sxpm expert install {ref} --for {model_name}")
        return home.store.blob_path(layer.digest)

    return _expert_files(home, info.manifest, info.config, info.name, info.version, locate,
                         "store", str(ref))


def check_compatible(expert: ExpertFiles, model: ModelFiles) -> None:
    """Refuse an expert that is not built for ``model``, before loading anything."""
    if model.name not in expert.base_models:
        bases = ", ".join(expert.base_models) or "no base model"
        first = expert.base_models[0] if expert.base_models else "its base model"
        raise IncompatibleExpertError(
            expert.name, model.name, f"its manifest names {bases} as base model",
            hint=f"run it on {first}: sxpm run {first} --expert {expert.name}")
    if expert.variant_base and expert.variant_base != model.name:
        raise IncompatibleExpertError(
            expert.name, model.name, f"the installed variant is built for "
            f"{expert.variant_base}", hint=f"install the right one: sxpm expert install "
            f"{expert.ref or expert.name} --for {model.name}")
    req = next((r for r in expert.requirements if r.name == model.name), None)
    if req is not None:
        # A bare GGUF file has no version to check; its bytes and header still tell.
        version = None if model.origin == "file" else model.version
        reason = misfit(req, version, lambda: model.sha256 or _file_sha256(model.path),
                        model.header)
        if reason is not None:
            raise IncompatibleExpertError(expert.name, f"{model.name} {model.version}", reason,
                                          hint=req.install_hint())
    header = expert.adapter_header
    if header is None:
        return
    if header.general_type != "adapter":
        raise IncompatibleExpertError(
            expert.name, model.name, f"its weights {expert.adapter} are a {header.general_type}, "
            "not a LoRA adapter", hint="the expert is malformed; report it to its publisher")
    if header.architecture != model.header.architecture:
        raise IncompatibleExpertError(
            expert.name, model.name, f"its adapter is for architecture {header.architecture!r}, "
            f"the model is {model.header.architecture!r}",
            hint="use an expert built for this model")
