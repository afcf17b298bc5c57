"""Ollama's model format, read as an sxpm model.

Ollama pushes a Docker v2 manifest whose config is
``application/vnd.docker.container.image.v1+json`` (``model_format``, ``model_family``,
``file_type``...) and whose layers are typed ``application/vnd.ollama.image.<part>``:
``model`` (the GGUF), ``adapter`` (a LoRA GGUF), ``projector`` (a vision projector
GGUF), ``template`` (a Go template), ``system`` (the system prompt), ``params`` (JSON
run options such as ``stop`` and ``num_ctx``), ``license`` and ``messages``. Its layers
carry no file names, so :func:`view` gives each part a fixed title; the installed tree
and the runner find the parts under those titles. The blobs, the manifest and its
digest stay exactly what the registry holds.
"""

from __future__ import annotations

from collections.abc import Mapping

from sxpm.core import oci
from sxpm.core.oci import Descriptor, Manifest
from sxpm.errors import ArtifactInputError

CONFIG = "application/vnd.docker.container.image.v1+json"
LAYER_PREFIX = "application/vnd.ollama.image."

# Where each part lives in the installed tree. The model is the tree's main GGUF; the
# other parts sit under ``ollama/`` so they never pass for a model's own files.
MODEL = "model.gguf"
ADAPTER = "ollama/adapter.gguf"
PROJECTOR = "ollama/projector.gguf"
TEMPLATE = "ollama/template"
SYSTEM = "ollama/system"
PARAMS = "ollama/params.json"
LICENSE = "ollama/license"
MESSAGES = "ollama/messages.json"
TITLES = {"model": MODEL, "adapter": ADAPTER, "projector": PROJECTOR,
          "template": TEMPLATE, "prompt": TEMPLATE,  # "prompt": Ollama's older name
          "system": SYSTEM, "params": PARAMS, "license": LICENSE, "messages": MESSAGES}
ANN_FORMAT = "org.simplex.format"


def is_ollama(manifest: Manifest) -> bool:
    return manifest.config.media_type == CONFIG and any(
        layer.media_type.startswith(LAYER_PREFIX) for layer in manifest.layers)


def _numbered(title: str, n: int) -> str:
    if n == 1:
        return title
    stem, dot, ext = title.rpartition(".")
    return f"{stem}-{n}.{ext}" if dot and "/" not in ext else f"{title}-{n}"


def view(manifest: Manifest, where: str) -> Manifest:
    """The manifest with a title on every part sxpm uses (a read-only view: its
    digest is not the artifact's). Refuses a model whose weights are not one GGUF."""
    part_of = {layer.media_type.removeprefix(LAYER_PREFIX) for layer in manifest.layers}
    if "tensor" in part_of and "model" not in part_of:
        raise ArtifactInputError(f"{where} is an Ollama model in safetensors form",
                                 hint="sxpm runs GGUF weights; pull a GGUF tag of the model")
    models = [layer for layer in manifest.layers if layer.media_type == LAYER_PREFIX + "model"]
    if len(models) != 1:
        raise ArtifactInputError(f"{where} is an Ollama manifest with {len(models)} model "
                                 "layers", hint="sxpm reads Ollama models with one GGUF layer")
    seen: dict[str, int] = {}
    layers: list[Descriptor] = []
    for layer in manifest.layers:
        part = layer.media_type.removeprefix(LAYER_PREFIX)
        title = TITLES.get(part) if layer.media_type.startswith(LAYER_PREFIX) else None
        if title is None:  # draft models, old embeddings: nothing sxpm runs
            layers.append(layer)
            continue
        seen[title] = seen.get(title, 0) + 1
        # Titles and the model's media type are what the installed tree and the runner
        # read; the digest and size are the registry's.
        media_type = oci.MODEL_WEIGHT if part == "model" else layer.media_type
        annotations: Mapping[str, str] = {**layer.annotations,
                                          oci.ANN_TITLE: _numbered(title, seen[title])}
        layers.append(Descriptor(media_type, layer.digest, layer.size, annotations))
    annotations = {**manifest.annotations, ANN_FORMAT: "ollama", "org.simplex.gguf.main": MODEL}
    return Manifest(manifest.config, tuple(layers), oci.MODEL_ARTIFACT, annotations,
                    manifest.subject, manifest.media_type)
