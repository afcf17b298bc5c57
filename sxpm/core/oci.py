"""OCI image-spec v1.1 objects: descriptors, manifests and image indexes.

Manifests are serialised canonically (sorted keys, no spaces) so that packing the
same content twice gives the same digest on any machine.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sxpm.core.reference import Digest
from sxpm.errors import ManifestError

if TYPE_CHECKING:
    from sxpm.core.artifact import Variant

# --- media types ---------------------------------------------------------------
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_EMPTY = "application/vnd.oci.empty.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MANIFEST_TYPES = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})
INDEX_TYPES = frozenset({OCI_INDEX, DOCKER_LIST})

MODEL_ARTIFACT = "application/vnd.cncf.model.manifest.v1+json"
MODEL_CONFIG = "application/vnd.cncf.model.config.v1+json"
MODEL_WEIGHT = "application/vnd.cncf.model.weight.v1.raw"
MODEL_WEIGHT_CONFIG = "application/vnd.cncf.model.weight.config.v1.raw"
MODEL_DOC = "application/vnd.cncf.model.doc.v1.raw"
# ModelPack's other layer forms (modctl's default is plain tar): an archive of the
# file(s) under their paths, for weights, configs, docs, code and datasets alike.
MODEL_LAYER_PREFIX = "application/vnd.cncf.model."
MODEL_ARCHIVE_SUFFIXES = (".tar", ".tar+gzip", ".tar+zstd")
IMAGE_CONFIGS = frozenset({"application/vnd.oci.image.config.v1+json",
                           "application/vnd.docker.container.image.v1+json"})

EXPERT_ARTIFACT = "application/vnd.simplex.expert.manifest.v1+json"
EXPERT_CONFIG = "application/vnd.simplex.expert.config.v1+json"
EXPERT_ADAPTER = "application/vnd.simplex.expert.adapter.v1.raw"
EXPERT_SOFT_PROMPT = "application/vnd.simplex.expert.soft-prompt.v1.raw"
EXPERT_TEMPLATE = "application/vnd.simplex.expert.prompt-template.v1.raw"
EXPERT_DOC = "application/vnd.simplex.expert.doc.v1.raw"

PACKAGE_ARTIFACT = "application/vnd.simplex.package.manifest.v1+json"
PACKAGE_CONFIG = "application/vnd.simplex.package.config.v1+json"
PACKAGE_LAYER = "application/vnd.simplex.package.layer.v1.tar+zstd"

# --- annotations ---------------------------------------------------------------
ANN_TITLE = "org.opencontainers.image.title"
ANN_REF_NAME = "org.opencontainers.image.ref.name"
ANN_VERSION = "org.opencontainers.image.version"
ANN_FILEPATH = "org.cncf.model.filepath"
ANN_VARIANT = "org.simplex.variant"
ANN_BASE_MODEL = "org.simplex.base-model"
ANN_NAME = "org.simplex.name"
ANN_KIND = "org.simplex.kind"
ANN_DEPENDENCIES = "org.simplex.dependencies"
ANN_MEMORY = "org.simplex.memory"
ANN_SIZE = "org.simplex.size"
ANN_SIMPLEX_REF = "org.simplex.ref"

KIND_BY_ARTIFACT = {MODEL_ARTIFACT: "model", EXPERT_ARTIFACT: "expert", PACKAGE_ARTIFACT: "package"}
# A manifest pushed without artifactType (`oras push` without `--artifact-type`, older
# modctl) still says its kind by its config's media type.
KIND_BY_CONFIG = {MODEL_CONFIG: "model", EXPERT_CONFIG: "expert", PACKAGE_CONFIG: "package"}
ARTIFACT_BY_KIND = {v: k for k, v in KIND_BY_ARTIFACT.items()}

# Registries commonly refuse manifests over 4 MiB; sxpm refuses to read larger ones
# so a hostile source cannot make it buffer arbitrary amounts of JSON.
MAX_MANIFEST_BYTES = 4 * 1024 * 1024


# The grammar image-spec gives ``org.opencontainers.image.ref.name``; skopeo's
# ``oci:DIR:NAME`` refuses any other name.
_REF_COMPONENT = r"[A-Za-z0-9]+(?:(?:[-._:@+]|--)[A-Za-z0-9]+)*"
_REF_NAME = re.compile(rf"{_REF_COMPONENT}(?:/{_REF_COMPONENT})*")


def valid_ref_name(name: str) -> bool:
    return _REF_NAME.fullmatch(name) is not None


def ref_entry_name(ref: str) -> str:
    """What other tools call the ``index.json`` entry for ``ref``: ``ref`` itself where
    the OCI grammar allows it, else (``oci:/abs/path:tag``) a name it allows:
    ``oci/abs/path:tag``, or where other characters had to go, that with a short hash
    of ``ref`` so two refs never share one. The full ref is kept in
    :data:`ANN_SIMPLEX_REF`."""
    if valid_ref_name(ref):
        return ref
    parts = [re.sub(r"[^A-Za-z0-9]+", _one_separator, p).strip("-._:@+")
             for p in ref.split("/")]
    body = "/".join(p for p in parts if p) or "ref"
    if body == ref.replace(":/", "/", 1) and valid_ref_name(body):
        return body  # only the scheme's ``:/`` went: ``oci/abs/path/repo:tag``
    return f"{body}-{hashlib.sha256(ref.encode()).hexdigest()[:8]}"


def _one_separator(run: re.Match[str]) -> str:
    first = run.group(0)[0]
    return first if first in "-._:@+" else "-"


def ref_entry(name: str, entry: dict[str, Any]) -> dict[str, Any]:
    """An ``index.json`` entry (a descriptor's dict) naming it ``name``."""
    ann = {k: v for k, v in (entry.get("annotations") or {}).items()
           if k not in (ANN_REF_NAME, ANN_SIMPLEX_REF)}
    ann[ANN_REF_NAME] = ref_entry_name(name)
    ann[ANN_SIMPLEX_REF] = name
    return {**entry, "annotations": ann}


def entry_ref(annotations: Mapping[str, str]) -> str | None:
    """The ref an ``index.json`` entry names: sxpm's own annotation, else (stores
    written before it, other tools' layouts) ``org.opencontainers.image.ref.name``."""
    return annotations.get(ANN_SIMPLEX_REF) or annotations.get(ANN_REF_NAME) or None


def model_archive(media_type: str) -> str | None:
    """The archive form (``tar``, ``tar+gzip``, ``tar+zstd``) of a ModelPack layer that
    carries its file(s) as an archive; None for a raw layer or any other."""
    if media_type.startswith(MODEL_LAYER_PREFIX):
        for suffix in MODEL_ARCHIVE_SUFFIXES:
            if media_type.endswith(".v1" + suffix):
                return suffix[1:]
    return None


def canonical_json(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def sha256_digest(data: bytes) -> Digest:
    return Digest("sha256", hashlib.sha256(data).hexdigest())


def digest_of(data: bytes, algorithm: str = "sha256") -> Digest:
    """``data``'s digest by ``algorithm``: content named by a sha512 digest is checked
    with sha512, never re-hashed with sha256."""
    return Digest(algorithm, hashlib.new(algorithm, data).hexdigest())


def _require(obj: Mapping[str, Any], key: str, kind: type, source: str, path: str) -> Any:
    if key not in obj:
        raise ManifestError(source, f"missing required field {key!r}", path=path or "$")
    value = obj[key]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ManifestError(source, f"{key!r} must be {kind.__name__}", path=f"{path}.{key}")
    return value


def _annotations(obj: Mapping[str, Any], source: str, path: str) -> dict[str, str]:
    value = obj.get("annotations") or {}
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise ManifestError(source, "annotations must map strings to strings",
                            path=f"{path}.annotations")
    return dict(value)


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: Digest
    size: int
    annotations: Mapping[str, str] = field(default_factory=dict)
    artifact_type: str | None = None

    @classmethod
    def for_bytes(cls, media_type: str, data: bytes, algorithm: str = "sha256", **kw: Any
                  ) -> Descriptor:
        return cls(media_type, digest_of(data, algorithm), len(data), **kw)

    @classmethod
    def from_dict(cls, obj: Any, *, source: str = "descriptor", path: str = "$") -> Descriptor:
        if not isinstance(obj, dict):
            raise ManifestError(source, "descriptor must be an object", path=path)
        media_type = _require(obj, "mediaType", str, source, path)
        digest_text = _require(obj, "digest", str, source, path)
        try:
            digest = Digest.parse(digest_text)
        except ValueError as exc:
            raise ManifestError(source, str(exc), path=f"{path}.digest") from None
        size = _require(obj, "size", int, source, path)
        if size < 0:
            raise ManifestError(source, "size must not be negative", path=f"{path}.size")
        artifact_type = obj.get("artifactType")
        if artifact_type is not None and not isinstance(artifact_type, str):
            raise ManifestError(source, "artifactType must be a string",
                                path=f"{path}.artifactType")
        return cls(media_type, digest, size, _annotations(obj, source, path), artifact_type)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "mediaType": self.media_type,
            "digest": str(self.digest),
            "size": self.size,
        }
        if self.artifact_type:
            out["artifactType"] = self.artifact_type
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        return out

    @property
    def title(self) -> str | None:
        return self.annotations.get(ANN_TITLE) or self.annotations.get(ANN_FILEPATH)

    @property
    def is_index(self) -> bool:
        return self.media_type in INDEX_TYPES


def _with_optional(out: dict[str, Any], artifact_type: str | None, subject: Descriptor | None,
                   annotations: Mapping[str, str]) -> dict[str, Any]:
    """Add the fields a manifest and an index both may carry, when set."""
    if artifact_type:
        out["artifactType"] = artifact_type
    if subject:
        out["subject"] = subject.to_dict()
    if annotations:
        out["annotations"] = dict(annotations)
    return out


def _optional_fields(obj: Mapping[str, Any], source: str) -> tuple[str | None, Descriptor | None]:
    """``artifactType`` and ``subject`` of a manifest or index, checked."""
    subject = None
    if obj.get("subject") is not None:
        subject = Descriptor.from_dict(obj["subject"], source=source, path="$.subject")
    artifact_type = obj.get("artifactType")
    if artifact_type is not None and not isinstance(artifact_type, str):
        raise ManifestError(source, "artifactType must be a string", path="$.artifactType")
    return artifact_type, subject


@dataclass(frozen=True)
class Manifest:
    config: Descriptor
    layers: tuple[Descriptor, ...]
    artifact_type: str | None = None
    annotations: Mapping[str, str] = field(default_factory=dict)
    subject: Descriptor | None = None
    media_type: str = OCI_MANIFEST

    @property
    def kind(self) -> str | None:
        if self.artifact_type is not None:
            return KIND_BY_ARTIFACT.get(self.artifact_type)
        # oras before 1.0 wrote `--artifact-type` as the config's media type.
        config = self.config.media_type
        return KIND_BY_ARTIFACT.get(config) or KIND_BY_CONFIG.get(config)

    @property
    def listed_type(self) -> str | None:
        """The ``artifactType`` a descriptor of this manifest carries."""
        return self.artifact_type

    def blobs(self) -> list[Descriptor]:
        return [self.config, *self.layers]

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "schemaVersion": 2,
            "mediaType": self.media_type,
            "config": self.config.to_dict(),
            "layers": [layer.to_dict() for layer in self.layers],
        }
        return _with_optional(out, self.artifact_type, self.subject, self.annotations)

    def to_bytes(self) -> bytes:
        return canonical_json(self.to_dict())

    def descriptor(self, **annotations: str) -> Descriptor:
        return Descriptor.for_bytes(
            self.media_type, self.to_bytes(), annotations=annotations,
            artifact_type=self.artifact_type,
        )

    @classmethod
    def from_dict(cls, obj: Any, source: str = "manifest") -> Manifest:
        if not isinstance(obj, dict):
            raise ManifestError(source, "a manifest must be a JSON object")
        if obj.get("schemaVersion") != 2:
            raise ManifestError(source, "schemaVersion must be 2", path="$.schemaVersion")
        media_type = obj.get("mediaType", OCI_MANIFEST)
        if media_type not in MANIFEST_TYPES:
            raise ManifestError(source, f"unsupported manifest media type {media_type!r}",
                                path="$.mediaType")
        config = Descriptor.from_dict(obj.get("config"), source=source, path="$.config")
        layers_obj = obj.get("layers", [])
        if not isinstance(layers_obj, list):
            raise ManifestError(source, "layers must be an array", path="$.layers")
        layers = tuple(
            Descriptor.from_dict(layer, source=source, path=f"$.layers[{i}]")
            for i, layer in enumerate(layers_obj)
        )
        artifact_type, subject = _optional_fields(obj, source)
        return cls(config, layers, artifact_type, _annotations(obj, source, "$"), subject,
                   media_type)


@dataclass(frozen=True)
class ImageIndex:
    manifests: tuple[Descriptor, ...]
    artifact_type: str | None = None
    annotations: Mapping[str, str] = field(default_factory=dict)
    subject: Descriptor | None = None
    media_type: str = OCI_INDEX

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "schemaVersion": 2,
            "mediaType": self.media_type,
            "manifests": [m.to_dict() for m in self.manifests],
        }
        return _with_optional(out, self.artifact_type, self.subject, self.annotations)

    def to_bytes(self) -> bytes:
        return canonical_json(self.to_dict())

    @property
    def kind(self) -> str | None:
        """model, expert or package: the index's ``artifactType`` where it has one (as
        sxpm wrote indexes before), else its ``org.simplex.kind`` annotation."""
        kind = KIND_BY_ARTIFACT.get(self.artifact_type or "") or self.annotations.get(ANN_KIND)
        return kind if kind in ARTIFACT_BY_KIND else None

    @property
    def listed_type(self) -> str | None:
        """The ``artifactType`` a descriptor of this index carries (in a layout's
        index.json, never inside the index), so listings know the kind unread."""
        kind = self.kind
        return self.artifact_type or (ARTIFACT_BY_KIND[kind] if kind else None)

    def descriptor(self) -> Descriptor:
        return Descriptor.for_bytes(self.media_type, self.to_bytes(),
                                    artifact_type=self.listed_type)

    def variants(self) -> dict[str, Descriptor]:
        return {d.annotations.get(ANN_VARIANT, str(d.digest)): d for d in self.manifests}

    def variant_values(self) -> list[Variant]:
        """Each manifest as a :class:`Variant`, with the sizes its annotations declare."""
        # Here, not at the top: a no-op `install --frozen` reads manifests without it.
        from sxpm.core.artifact import Variant

        def num(text: str | None) -> int | None:
            return int(text) if text and text.isdigit() else None

        return [Variant(d.annotations.get(ANN_VARIANT, str(d.digest)), d.digest,
                        num(d.annotations.get(ANN_SIZE)) or 0, num(d.annotations.get(ANN_MEMORY)),
                        d.annotations.get(ANN_BASE_MODEL)) for d in self.manifests]

    def select(self, variant: str | None) -> Descriptor:
        """The manifest of ``variant``, or the first one when none is asked for."""
        if not self.manifests:
            raise ManifestError("image index", "the index lists no manifests")
        if variant is None:
            return self.manifests[0]
        found = self.variants().get(variant)
        if found is None:
            from sxpm.errors import NotFoundError

            raise NotFoundError(
                f"No variant {variant!r} in this artifact",
                hint=f"choose one of: {', '.join(self.variants())}",
            )
        return found

    @classmethod
    def from_dict(cls, obj: Any, source: str = "index") -> ImageIndex:
        if not isinstance(obj, dict):
            raise ManifestError(source, "an image index must be a JSON object")
        if obj.get("schemaVersion") != 2:
            raise ManifestError(source, "schemaVersion must be 2", path="$.schemaVersion")
        media_type = obj.get("mediaType", OCI_INDEX)
        if media_type not in INDEX_TYPES:
            raise ManifestError(source, f"unsupported index media type {media_type!r}",
                                path="$.mediaType")
        items = obj.get("manifests")
        if not isinstance(items, list):
            raise ManifestError(source, "manifests must be an array", path="$.manifests")
        manifests = tuple(
            Descriptor.from_dict(m, source=source, path=f"$.manifests[{i}]")
            for i, m in enumerate(items)
        )
        artifact_type, subject = _optional_fields(obj, source)
        return cls(manifests, artifact_type, _annotations(obj, source, "$"), subject, media_type)


def parse_manifest_bytes(data: bytes, source: str) -> Manifest | ImageIndex:
    """Parse manifest or index JSON, refusing oversized or malformed input."""
    if len(data) > MAX_MANIFEST_BYTES:
        raise ManifestError(source, f"manifest is {len(data)} bytes, over the 4 MiB limit")
    try:
        obj = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ManifestError(source, f"not valid JSON ({exc})") from None
    except RecursionError:  # the parser recurses once per level of nesting
        raise ManifestError(source, "JSON nested too deeply") from None
    if not isinstance(obj, dict):
        raise ManifestError(source, "a manifest must be a JSON object")
    media_type = obj.get("mediaType")
    if media_type in INDEX_TYPES or (media_type is None and "manifests" in obj):
        return ImageIndex.from_dict(obj, source)
    return Manifest.from_dict(obj, source)
