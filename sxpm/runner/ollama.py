"""What an Ollama model brings besides its weights: template, system prompt, options,
adapter (see :mod:`sxpm.artifacts.ollama` for where each part is installed).

Ollama templates are Go templates. The common subset is rendered here: text,
``{{ .System }}``, ``{{ .Prompt }}``, ``{{ .Response }}`` (where the reply starts, so
the rest is not part of the prompt), ``{{ if .System }}``/``{{ if .Prompt }}`` with
``{{ else }}`` and ``{{ end }}``, and the ``{{-``/``-}}`` trim markers. A template using
anything else (``range .Messages``, functions) is not guessed at: the model's own GGUF
chat template (``tokenizer.chat_template``) is used instead, as for any model.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sxpm.artifacts import ollama
from sxpm.core.gguf import read_header
from sxpm.errors import ManifestError
from sxpm.runner.extras import ModelExtras
from sxpm.runner.templates import PromptTemplate

_ACTION = re.compile(r"\{\{(-?)\s*(.*?)\s*(-?)\}\}", re.S)
_FIELDS = {".System": "system", ".Prompt": "prompt"}

def _tokens(text: str) -> list[tuple[str, str]] | None:
    """(kind, value) pieces: ("text", s), ("field", name), ("if", name), ("else", ""),
    ("end", ""), ("response", ""); None when the template leaves the subset."""
    out: list[tuple[str, str]] = []
    pos = 0
    for match in _ACTION.finditer(text):
        literal = text[pos:match.start()]
        if match.group(1):
            literal = literal.rstrip()
        if out and out[-1] == ("trim", ""):
            out.pop()
            literal = literal.lstrip()
        out.append(("text", literal))
        action = match.group(2)
        if action in _FIELDS:
            out.append(("field", _FIELDS[action]))
        elif action == ".Response":
            out.append(("response", ""))
        elif action.startswith("if ") and action[3:].strip() in _FIELDS:
            out.append(("if", _FIELDS[action[3:].strip()]))
        elif action in ("else", "end"):
            out.append((action, ""))
        else:
            return None
        if match.group(3):
            out.append(("trim", ""))
        pos = match.end()
    tail = text[pos:]
    if out and out[-1] == ("trim", ""):
        out.pop()
        tail = tail.lstrip()
    out.append(("text", tail))
    depth = 0
    for kind, _ in out:
        depth += kind == "if"
        depth -= kind == "end"
        if depth < 0:
            return None
    return out if depth == 0 else None


@dataclass(frozen=True)
class GoTemplate(PromptTemplate):
    """An Ollama template in the subset above, usable wherever a PromptTemplate is."""

    @classmethod
    def parse_go(cls, text: str, source: str) -> GoTemplate | None:
        return cls(text, source) if _tokens(text) is not None else None

    @property
    def variables(self) -> tuple[str, ...]:
        names = {value for kind, value in _tokens(self.text) or [] if kind in ("field", "if")}
        return tuple(v for v in ("prompt", "system") if v in names)

    def render(self, prompt: str, system: str = "") -> str:
        values = {"prompt": prompt, "system": system}
        out: list[str] = []
        # One entry per open `if`: whether its branch is the one being rendered.
        stack: list[tuple[bool, bool]] = []  # (outer active, condition)
        active = True
        for kind, value in _tokens(self.text) or []:
            if kind == "if":
                stack.append((active, bool(values[value])))
                active = active and bool(values[value])
            elif kind == "else":
                outer, cond = stack[-1]
                active = outer and not cond
            elif kind == "end":
                active = stack.pop()[0]
            elif not active:
                continue
            elif kind == "response":
                break  # the reply is generated from here
            elif kind == "field":
                out.append(values[value])
            else:
                out.append(value)
        return "".join(out)


def read_extras(locate: Callable[[str], Path | None], where: str) -> ModelExtras | None:
    """The extras of a model whose parts ``locate`` finds by title; None for a model
    that has none (every model but an Ollama one)."""
    paths = {title: locate(title) for title in
             (ollama.TEMPLATE, ollama.SYSTEM, ollama.PARAMS, ollama.ADAPTER)}
    if not any(paths.values()):
        return None

    def text(title: str) -> str:
        path = paths[title]
        if path is None:
            return ""
        try:
            return path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise ManifestError(f"{where}: {title}", "not UTF-8 text") from None

    options: Any = {}
    if paths[ollama.PARAMS]:
        try:
            options = json.loads(text(ollama.PARAMS))
        except ValueError:
            raise ManifestError(f"{where}: {ollama.PARAMS}", "not JSON") from None
        if not isinstance(options, dict):
            raise ManifestError(f"{where}: {ollama.PARAMS}", "not a JSON object")
    template = GoTemplate.parse_go(text(ollama.TEMPLATE), f"template of {where}") \
        if paths[ollama.TEMPLATE] else None
    adapter = paths[ollama.ADAPTER]
    return ModelExtras(template, text(ollama.SYSTEM), options, adapter,
                       read_header(adapter) if adapter else None)
