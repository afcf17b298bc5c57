"""What a model is for: its category and its capabilities, by one rule.

The Simplex runtime asks for a reasoning model, an embedding model or a specialist, not
for a name: a model's ``category`` is ``cognitive`` (reasons, chats), ``mnemonic``
(embeds, for memory and retrieval) or ``specialist`` (one narrow task), and its
``capabilities`` say which calls it answers (``chat``, ``completion``, ``embedding``).

The rule, used by ``pack``, install records, publishing and the runner alike: what the
artifact declares (``--category`` / ``--capability`` at pack, written as manifest
annotations and copied into the install record) wins; what it leaves out is read from
the GGUF header. A GGUF with ``<arch>.pooling_type`` set (or an encoder architecture
such as BERT) embeds; any other is generative (``completion``) and chats when it has
a chat template. Embedding models are ``mnemonic`` unless declared otherwise, the
rest ``cognitive``; ``specialist`` is only ever declared.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from sxpm.core.gguf import GGUFHeader
from sxpm.errors import InputError

CATEGORIES = ("cognitive", "mnemonic", "specialist")
CAPABILITIES = ("chat", "completion", "embedding")  # also the order they are listed in
ANN_CATEGORY = "org.simplex.category"
ANN_CAPABILITIES = "org.simplex.capabilities"  # comma-separated, in CAPABILITIES order
# llama.cpp's enum llama_pooling_type: 0 is none (a generative model); -1 unspecified.
POOLING_NONE = 0
# Encoder-only architectures llama.cpp runs: they embed whether or not the converter
# wrote a pooling type.
ENCODER_ARCHITECTURES = frozenset({"bert", "nomic-bert", "nomic-bert-moe", "jina-bert-v2",
                                   "jina-bert-v3", "neo-bert", "modern-bert", "t5encoder"})
# ModelPack's own vocabulary (config.capabilities.outputTypes): a model that outputs
# embeddings, as other tools (modctl, KitOps) may declare it.
_MODELPACK_EMBEDDING = "embedding"
SET_DEFAULT_HINT = ('set one: `default = true` on the model in simplex.toml [models], or '
                    '"default_models": {"CATEGORY": "NAME"} in the home\'s config.json')


@dataclass(frozen=True)
class Traits:
    """A model's category and capabilities."""

    category: str
    capabilities: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"category": self.category, "capabilities": list(self.capabilities)}

    def annotations(self) -> dict[str, str]:
        return {ANN_CATEGORY: self.category, ANN_CAPABILITIES: ",".join(self.capabilities)}


def check_category(text: str, where: str = "--category") -> str:
    if text not in CATEGORIES:
        raise InputError(f"Unknown category {text!r} ({where})",
                         hint=f"use one of {', '.join(CATEGORIES)}")
    return text


def check_capabilities(items: Iterable[str], where: str = "--capability") -> tuple[str, ...]:
    """Known capabilities, each once, in the canonical order; at least one."""
    given = list(items)
    for item in given:
        if item not in CAPABILITIES:
            raise InputError(f"Unknown capability {item!r} ({where})",
                             hint=f"use {', '.join(CAPABILITIES)}")
    if not given:
        raise InputError(f"No capability given ({where})",
                         hint=f"give at least one of {', '.join(CAPABILITIES)}")
    return tuple(c for c in CAPABILITIES if c in given)


def is_embedding(header: GGUFHeader) -> bool:
    """An embedding model: a pooling type other than none, or an encoder architecture."""
    pooling = header.meta_int("pooling_type")
    if pooling is not None:
        return pooling != POOLING_NONE
    return header.architecture in ENCODER_ARCHITECTURES


def gguf_capabilities(header: GGUFHeader, *, template: bool = False) -> tuple[str, ...]:
    """What the GGUF says it can do; ``template``: a chat template comes from elsewhere
    (an Ollama model's own template layer)."""
    if is_embedding(header):
        return ("embedding",)
    if template or isinstance(header.metadata.get("tokenizer.chat_template"), str):
        return ("chat", "completion")
    return ("completion",)


def default_category(capabilities: Iterable[str]) -> str:
    return "mnemonic" if "embedding" in capabilities else "cognitive"


def resolve(declared_category: str | None, declared_capabilities: Iterable[str] | None,
            header: GGUFHeader | None, *, template: bool = False) -> Traits | None:
    """The one rule: what is declared wins, the rest comes from ``header`` (None when
    neither says anything about the capabilities)."""
    caps = tuple(declared_capabilities or ())
    if not caps:
        if header is None:
            return None
        caps = gguf_capabilities(header, template=template)
    return Traits(declared_category or default_category(caps), caps)


def declared(annotations: Mapping[str, str], config: Mapping[str, Any] | None = None
             ) -> tuple[str | None, tuple[str, ...] | None]:
    """(category, capabilities) an artifact declares: sxpm's annotations, else the
    ModelPack config's ``outputTypes`` for an embedding model. A value sxpm does not
    know (a newer writer, a hostile manifest) counts as not declared."""
    category = annotations.get(ANN_CATEGORY)
    if category not in CATEGORIES:
        category = None
    text = annotations.get(ANN_CAPABILITIES) or ""
    listed = [c for c in text.split(",") if c]
    caps: tuple[str, ...] | None = None
    if listed and all(c in CAPABILITIES for c in listed):
        caps = tuple(c for c in CAPABILITIES if c in listed)
    elif config is not None:
        inner = config.get("config")
        spec = inner.get("capabilities") if isinstance(inner, Mapping) else None
        outputs = spec.get("outputTypes") if isinstance(spec, Mapping) else None
        if isinstance(outputs, list) and outputs == [_MODELPACK_EMBEDDING]:
            caps = ("embedding",)
    return category, caps


def from_record(record: Mapping[str, Any]) -> Traits | None:
    """The traits an install record holds (None for a record written before them)."""
    category, caps = record.get("category"), record.get("capabilities")
    if category not in CATEGORIES or not isinstance(caps, list) or not caps \
            or not all(c in CAPABILITIES for c in caps):
        return None
    return Traits(str(category), tuple(c for c in CAPABILITIES if c in caps))


def modelpack_capabilities(traits: Traits) -> dict[str, Any]:
    """``config.capabilities`` of the ModelPack config, in the spec's own terms: the
    config validates against the unchanged upstream schema, which has no field for a
    category or for chat versus completion (those are annotations)."""
    caps = traits.capabilities
    outputs = (["text"] if "chat" in caps or "completion" in caps else []) + (
        ["embedding"] if "embedding" in caps else [])
    return {"inputTypes": ["text"], "outputTypes": outputs}
