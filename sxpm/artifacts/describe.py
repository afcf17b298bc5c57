"""What an artifact's manifest and config say: kind, name, version, variant, files."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from sxpm.artifacts import ollama
from sxpm.core import categories, oci
from sxpm.core.gguf import read_header
from sxpm.core.oci import Descriptor, ImageIndex, Manifest
from sxpm.core.reference import Digest, Reference
from sxpm.errors import InputError, ManifestError, ModelFileError
from sxpm.home import Home
from sxpm.store.layout import OCILayout
from sxpm.store.refs import resolve_local

ANN_GGUF_MAIN = "org.simplex.gguf.main"
OLLAMA_TEMPLATE = "ollama/template"


@dataclass(frozen=True)
class ArtifactInfo:
    """What a manifest says about its artifact."""

    kind: str
    name: str
    version: str
    descriptor: Descriptor  # the manifest (one variant)
    manifest: Manifest
    variant: str | None
    config: dict[str, Any]

    @property
    def size(self) -> int:
        return sum(layer.size for layer in self.manifest.layers)

    def main_weights(self) -> Descriptor | None:
        """A model's GGUF layer: the one ``org.simplex.gguf.main`` names, else the
        largest (as pack chose it); None when the weights are in an archive layer."""
        weights = [d for d in self.manifest.layers if d.media_type == oci.MODEL_WEIGHT]
        main = self.manifest.annotations.get(ANN_GGUF_MAIN)
        return next((w for w in weights if w.title == main), None) or max(
            weights, key=lambda w: w.size, default=None)

    def dependencies(self) -> list[dict[str, str]]:
        text = self.manifest.annotations.get(oci.ANN_DEPENDENCIES)
        if not text:
            return []
        try:
            deps = json.loads(text)
        except (ValueError, RecursionError):  # nesting deeper than the parser goes
            raise ManifestError(str(self.descriptor.digest), "bad dependencies annotation"
                                ) from None
        if not isinstance(deps, list):
            raise ManifestError(str(self.descriptor.digest), "bad dependencies annotation")
        return [d for d in deps if isinstance(d, dict)]


def model_traits(store: OCILayout, info: ArtifactInfo) -> categories.Traits | None:
    """A model's category and capabilities (:func:`sxpm.core.categories.resolve`):
    what its manifest declares, the rest read from its GGUF blob's header when the
    store holds it; None when neither tells (or for another kind)."""
    if info.kind != "model":
        return None
    category, caps = categories.declared(info.manifest.annotations, info.config)
    header = None
    if caps is None:
        layer = info.main_weights()
        if layer is not None and store.has_blob(layer.digest):
            try:
                header = read_header(store.blob_path(layer.digest))
            except ModelFileError:
                header = None  # a damaged blob: `sxpm verify` reports it, listings go on
    template = any(d.title == OLLAMA_TEMPLATE for d in info.manifest.layers)
    return categories.resolve(category, caps, header, template=template)


def parse_config(raw: bytes, desc: Descriptor) -> dict[str, Any]:
    """An artifact's config blob as a JSON object; one-line errors for anything else."""
    try:
        config = json.loads(raw)
    except ValueError:
        raise ManifestError(str(desc.digest), "config blob is not JSON") from None
    except RecursionError:  # the parser recurses once per level of nesting
        raise ManifestError(str(desc.digest), "config blob nests too deeply") from None
    if not isinstance(config, dict) or not isinstance(config.get("descriptor", {}), dict):
        raise ManifestError(str(desc.digest), "config blob is not a JSON object of "
                            "the artifact's kind")
    return config


def not_an_artifact(manifest: Manifest, where: str) -> ManifestError:
    """The error for a manifest sxpm does not install, saying what it is."""
    if manifest.artifact_type is None and manifest.config.media_type in oci.IMAGE_CONFIGS:
        return ManifestError(where, f"a container image ({len(manifest.layers)} layer(s)), "
                             "not a model, expert or package",
                             hint="run it with a container engine (podman, docker)")
    return ManifestError(where, "not a model, expert or package: an OCI artifact of type "
                         f"{manifest.artifact_type or manifest.config.media_type!r}",
                         hint="sxpm installs ModelPack and Ollama models, experts and "
                              "packages; `sxpm pull` or `sxpm copy` moves any artifact")


def describe(store: OCILayout, top: Descriptor, variant: str | None = None) -> ArtifactInfo:
    """Read an artifact's manifest (picking ``variant`` of an index) and config."""
    obj = store.load_manifest(top)
    chosen_variant = None
    if isinstance(obj, ImageIndex):
        desc = obj.select(variant)
        chosen_variant = desc.annotations.get(oci.ANN_VARIANT)
        obj = store.load_manifest(desc)
    else:
        desc = top
    if not isinstance(obj, Manifest):
        raise ManifestError(str(desc.digest), "nested image indexes are not supported")
    kind = obj.kind
    if kind is None and ollama.is_ollama(obj):  # other tools' formats: docs/format.md
        obj = ollama.view(obj, str(desc.digest))
        kind = "model"
    if kind is None:
        raise not_an_artifact(obj, str(desc.digest))
    # read_blob has its own error for a blob over the size limit
    config = parse_config(store.read_blob(obj.config), obj.config)
    if kind == "model":
        name = config.get("descriptor", {}).get("name")
        version = config.get("descriptor", {}).get("version")
    else:
        name, version = config.get("name"), config.get("version")
    name = obj.annotations.get(oci.ANN_NAME, name)
    version = obj.annotations.get(oci.ANN_VERSION, version)
    if not isinstance(name, str) or not isinstance(version, str):
        name, version = name_from_refs(store, top, name, version)
    if not isinstance(name, str) or not isinstance(version, str):
        raise ManifestError(str(desc.digest), "artifact has no name or version")
    return ArtifactInfo(kind, name, version, desc, obj, chosen_variant, config)


def name_from_refs(store: OCILayout, top: Descriptor, name: Any, version: Any
                   ) -> tuple[Any, Any]:
    """Name and version of an artifact that does not state them (an Ollama model, a
    plain ModelPack push): the repository's name and the tag of a ref naming it, else
    the digest's first 12 hex digits as the version."""
    for text, desc in sorted(store.refs().items()):
        if desc.digest != top.digest:
            continue
        try:
            ref = Reference.parse(text)
        except InputError:
            continue
        if not isinstance(name, str):
            name = ref.name
        if not isinstance(version, str) and ref.tag:
            version = ref.tag
        break
    if not isinstance(version, str):
        version = top.digest.hex[:12]
    return name, version


def describe_ref(home: Home, ref: Reference | str, variant: str | None = None) -> ArtifactInfo:
    """What the store holds under ``ref`` (a :class:`Reference`, or text parsed against
    the home's default registry); :class:`~sxpm.errors.NotFoundError` when nothing."""
    if isinstance(ref, str):
        ref = home.parse_ref(ref)
    return describe(home.store, resolve_local(home.store, ref), variant)


def held_variants(store: OCILayout, index: ImageIndex, *, layers: bool = False) -> list[str]:
    """The variants of ``index`` whose manifest and config (and with ``layers``, every
    layer) the store holds: a pull of one variant fetches only that variant's."""
    return [d.annotations.get(oci.ANN_VARIANT, str(d.digest)) for d in index.manifests
            if store.has_blob(d.digest) and _held(store, d, layers)]


def _held(store: OCILayout, desc: Descriptor, layers: bool) -> bool:
    obj = store.load_manifest(desc)
    return isinstance(obj, Manifest) and all(
        store.has_blob(b.digest) for b in (obj.blobs() if layers else [obj.config]))


def describe_held(store: OCILayout, top: Descriptor, variant: str | None = None
                  ) -> ArtifactInfo:
    """:func:`describe`, but with no ``variant`` asked an index is described by its
    default variant only when the store holds it, else by the first variant it holds."""
    if variant is None and top.is_index:
        index = store.load_manifest(top)
        if isinstance(index, ImageIndex):
            held = held_variants(store, index)
            default = index.select(None).annotations.get(oci.ANN_VARIANT)
            if held and default not in held:
                variant = held[0]
    return describe(store, top, variant)


def bytes_held(store: OCILayout, top: Descriptor) -> int:
    """The bytes of ``top``'s blobs the store holds: its manifests, configs and layers
    (each blob once), whatever subset of variants was pulled."""
    sizes: dict[Digest, int] = {}
    todo = [top]
    while todo:
        desc = todo.pop()
        if desc.digest in sizes or not store.has_blob(desc.digest):
            continue
        sizes[desc.digest] = desc.size
        if desc.is_index or desc.media_type in oci.MANIFEST_TYPES:
            obj = store.load_manifest(desc)
            todo += obj.manifests if isinstance(obj, ImageIndex) else obj.blobs()
    return sum(sizes.values())
