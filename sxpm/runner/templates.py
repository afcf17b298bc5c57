"""An expert's prompt template: ``str.format`` fields limited to a known set.

The fixture expert's template is ``"### Question\\n{prompt}\\n### SQL\\n"``. A
template may use ``{prompt}`` (the user's text) and ``{system}`` (the system message,
empty when there is none); ``{{`` and ``}}`` are literal braces. Anything else
(``{question}``, ``{}``, ``{prompt.upper}``, ``{prompt!r}``) is refused when the
template is loaded, before any model is, naming the offending fields.
"""

from __future__ import annotations

import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sxpm.errors import TemplateError

VARIABLES = ("prompt", "system")


@dataclass(frozen=True)
class PromptTemplate:
    text: str
    source: str = "template"

    @classmethod
    def parse(cls, text: str, source: str = "template") -> PromptTemplate:
        try:
            fields = list(string.Formatter().parse(text))
        except ValueError as exc:
            raise TemplateError(source, f"malformed ({exc})") from None
        unknown: list[str] = []
        for _literal, name, spec, conversion in fields:
            if name is None:
                continue
            if name not in VARIABLES or spec or conversion:
                shown = "{" + name + (f"!{conversion}" if conversion else "") + (
                    f":{spec}" if spec else "") + "}"
                if shown not in unknown:
                    unknown.append(shown)
        if unknown:
            raise TemplateError(
                source, f"unknown variable{'s' if len(unknown) > 1 else ''} "
                f"{', '.join(unknown)} (allowed: {', '.join('{' + v + '}' for v in VARIABLES)})",
                unknown=tuple(unknown))
        return cls(text, source)

    @property
    def variables(self) -> tuple[str, ...]:
        names = {name for _l, name, _s, _c in string.Formatter().parse(self.text) if name}
        return tuple(v for v in VARIABLES if v in names)

    def render(self, prompt: str, system: str = "") -> str:
        return self.text.format(prompt=prompt, system=system)

    def render_chat(self, messages: Sequence[Mapping[str, Any]]) -> str:
        """A conversation as one prompt: each user turn through the template, each
        assistant turn appended after it, the system message given to every turn."""
        system = "\n".join(str(m.get("content") or "") for m in messages
                           if m.get("role") == "system")
        parts: list[str] = []
        for message in messages:
            role = message.get("role")
            content = str(message.get("content") or "")
            if role == "user":
                parts.append(self.render(content, system))
            elif role == "assistant":
                parts.append(content + "\n")
        return "".join(parts)
