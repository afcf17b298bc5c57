"""A conversation as the model's prompt: which template, and what fits the context.

The template is, in order:

1. the expert's prompt template, else an Ollama model's own template (each user turn
   through it, see :meth:`~sxpm.runner.templates.PromptTemplate.render_chat`);
2. the model's own chat template, the Jinja text of GGUF ``tokenizer.chat_template``
   (rendered by llama-cpp-python's ``Jinja2ChatFormatter``, as llama.cpp's server
   does);
3. otherwise sxpm's plain fallback, :data:`FALLBACK_FORMAT`: the system message, then
   ``User: ...`` / ``Assistant: ...`` lines, ending with ``Assistant:``, stopped at the
   next ``User:``. llama-cpp-python would use its ``llama-2`` format here, whose
   ``[INST]`` tags a model not trained on them often answers with an end token at once:
   an empty reply. A one-line note says the fallback is in use.

When the conversation with room for the answer is longer than the context, the oldest
turns go first (the system message stays) and a note says how many; when the last user
turn alone does not fit, :class:`~sxpm.errors.ContextOverflowError`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sxpm.errors import ContextOverflowError

Messages = Sequence[Mapping[str, Any]]
FALLBACK_FORMAT = "User: {user}\nAssistant: {assistant}\n"
FALLBACK_STOP = ["\nUser:"]
# Room kept for the answer when turns must be dropped: a reply of at least this many
# tokens, or max_tokens when it is smaller.
MIN_ANSWER = 16


@dataclass
class ChatPrompt:
    tokens: list[int]
    stop: list[str]
    source: str  # "template" (the expert's or an Ollama model's), "model" or "fallback"
    dropped: int = 0  # turns left out to fit the context
    notes: list[str] = field(default_factory=list)


def model_chat_template(metadata: Mapping[str, Any]) -> str | None:
    value = metadata.get("tokenizer.chat_template")
    return value if isinstance(value, str) and value.strip() else None


def text_of(message: Mapping[str, Any]) -> str:
    """A message's text; OpenAI's list-of-parts content keeps its text parts."""
    content = message.get("content")
    if isinstance(content, list):
        return "".join(str(p.get("text", "")) for p in content if isinstance(p, Mapping))
    return str(content or "")


def fallback_prompt(messages: Messages) -> str:
    parts: list[str] = []
    for m in messages:
        role, text = m.get("role"), text_of(m)
        if role == "system":
            parts.append(text + "\n\n")
        elif role == "user":
            parts.append(f"User: {text}\n")
        elif role == "assistant":
            parts.append(f"Assistant: {text}\n")
    parts.append("Assistant:")
    return "".join(parts)


class ChatRenderer:
    """Renders and tokenizes conversations for one loaded model (plus expert)."""

    def __init__(self, llama: Any, template: Any = None,
                 model_template: str | None = None, name: str = "the model") -> None:
        self.llama = llama
        self.template = template  # the expert's, else an Ollama model's own
        self.model_template = model_template
        self.name = name
        self._jinja: Any = None

    @property
    def source(self) -> str:
        if self.template is not None:
            return "template"
        return "model" if self.model_template else "fallback"

    def render(self, messages: Messages) -> tuple[str, list[str], bool]:
        """(prompt text, stop strings, whether the text already holds BOS)."""
        plain = [{"role": str(m.get("role")), "content": text_of(m)} for m in messages]
        if self.template is not None:
            return self.template.render_chat(plain), [], False
        if self.model_template:
            if self._jinja is None:
                from llama_cpp.llama_chat_format import Jinja2ChatFormatter

                llm = self.llama
                eos = llm.detokenize([llm.token_eos()], special=True).decode(errors="replace")
                bos = llm.detokenize([llm.token_bos()], special=True).decode(errors="replace")
                self._jinja = Jinja2ChatFormatter(self.model_template, eos_token=eos,
                                                  bos_token=bos)
            result = self._jinja(messages=plain)
            stop = result.stop if isinstance(result.stop, list) else [result.stop] \
                if result.stop else []
            return result.prompt, [s for s in stop if s], bool(result.added_special)
        return fallback_prompt(plain), list(FALLBACK_STOP), False

    def tokens(self, messages: Messages) -> tuple[list[int], list[str]]:
        text, stop, has_bos = self.render(messages)
        return list(self.llama.tokenize(text.encode("utf-8"), add_bos=not has_bos,
                                        special=True)), stop

    def fit(self, messages: Messages, max_tokens: int, n_ctx: int) -> ChatPrompt:
        """The prompt for ``messages``, oldest turns dropped until it fits ``n_ctx``."""
        msgs = list(messages)
        room = min(max_tokens, MIN_ANSWER)
        tokens, stop = self.tokens(msgs)
        dropped = 0
        while len(tokens) + room > n_ctx:
            turns = [i for i, m in enumerate(msgs) if m.get("role") != "system"]
            if len(turns) <= 1:
                raise ContextOverflowError(len(tokens), n_ctx)
            # Drop the oldest turn, and the assistant reply that answered it.
            first = turns[0]
            del msgs[first]
            dropped += 1
            if first < len(msgs) and msgs[first].get("role") == "assistant" and len(turns) > 2:
                del msgs[first]
                dropped += 1
            tokens, stop = self.tokens(msgs)
        out = ChatPrompt(tokens, stop, self.source, dropped)
        if self.source == "fallback":
            out.notes.append(f"{self.name} has no chat template: using sxpm's plain "
                             "'User:/Assistant:' format")
        if dropped:
            out.notes.append(f"dropped the {dropped} oldest message{'s' if dropped > 1 else ''}"
                             f" to fit the context of {n_ctx} tokens")
        return out
