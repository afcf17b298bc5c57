"""A model's own run settings (an Ollama model's template, system prompt, options and
adapter), kept apart from their readers so ``sxpm run NAME`` imports nothing more for a
model that has none."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sxpm.core.gguf import GGUFHeader
    from sxpm.runner.templates import PromptTemplate

# Ollama options sxpm maps onto llama-cpp-python's sampling arguments. Temperature
# and seed stay sxpm's (greedy and fixed unless asked) so runs are reproducible.
_SAMPLING = {"stop": "stop", "top_k": "top_k", "top_p": "top_p", "min_p": "min_p",
             "repeat_penalty": "repeat_penalty", "presence_penalty": "presence_penalty",
             "frequency_penalty": "frequency_penalty"}



@dataclass(frozen=True)
class ModelExtras:
    """Parts of an Ollama model the runner applies when no expert overrides them."""

    template: PromptTemplate | None = None
    system: str = ""
    options: dict[str, Any] = field(default_factory=dict)
    adapter: Path | None = None
    adapter_header: GGUFHeader | None = None

    @property
    def n_ctx(self) -> int | None:
        value = self.options.get("num_ctx")
        return value if isinstance(value, int) and value > 0 else None

    def sampling(self) -> dict[str, Any]:
        out = {ours: self.options[theirs] for theirs, ours in _SAMPLING.items()
               if theirs in self.options}
        if isinstance(out.get("stop"), str):
            out["stop"] = [out["stop"]]
        return out
