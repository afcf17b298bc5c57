"""Versions and version requirements with Cargo's meaning, on ``semantic_version``.

``semantic_version.SimpleSpec`` already implements ``^``, ``~``, comparisons, ``*``
and wildcards with Cargo's meaning; two spellings differ and are translated first:
a bare version (``1.2``) is a caret requirement in Cargo (``==`` in SimpleSpec), and
Cargo writes exact matches as ``=1.2.3`` (partial: ``=1.2`` means ``>=1.2.0, <1.3.0``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import semantic_version

from sxpm.errors import InputError, InvalidVersionError

Version = semantic_version.Version
_BARE = re.compile(r"^v?\d+(\.\d+){0,2}(-[0-9A-Za-z.-]+)?(\+[0-9A-Za-z.-]+)?$")
_FULL = re.compile(r"^\d+\.\d+\.\d+")


def parse_version(text: str) -> semantic_version.Version:
    """A strict ``MAJOR.MINOR.PATCH[-pre][+build]`` version."""
    if not isinstance(text, str):
        raise InvalidVersionError(repr(text), "not a string")
    return _parse_version(text)


@lru_cache(maxsize=65536)
def _parse_version(text: str) -> semantic_version.Version:
    try:
        return semantic_version.Version(text.strip().removeprefix("v"))
    except ValueError:
        raise InvalidVersionError(text) from None


class InvalidRequirementError(InputError):
    def __init__(self, text: str, reason: str = "") -> None:
        super().__init__(
            f"Invalid version requirement {text!r}" + (f": {reason}" if reason else ""),
            hint="write ^1.2, ~1.2, =1.2.3, >=1,<2 or *")
        self.text = text


def _translate(clause: str) -> str:
    clause = clause.strip()
    if _BARE.match(clause):
        return "^" + clause.removeprefix("v")
    if clause.startswith("=") and not clause.startswith("=="):
        rest = clause[1:].strip()
        return f"=={rest}" if _FULL.match(rest) else f"~{rest}"
    return clause.replace(" ", "")


@dataclass(frozen=True)
class VersionReq:
    """A version requirement such as ``^1.2`` or ``>=1, <2``; ``str()`` gives it back."""

    text: str
    _spec: Any = field(compare=False, repr=False)
    # The resolver asks the same questions many times; semantic_version is slow to answer.
    _seen: dict[Any, bool] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def parse(cls, text: str) -> VersionReq:
        if not isinstance(text, str):
            raise InvalidRequirementError(str(text), "not a string")
        return _parse_req(text)

    @classmethod
    def _parse(cls, text: str) -> VersionReq:
        if not text.strip():
            raise InvalidRequirementError(str(text), "empty")
        if len(text) > 128:
            raise InvalidRequirementError(text[:40] + "...", "too long")
        translated = ",".join(_translate(part) for part in text.split(","))
        try:
            spec = semantic_version.SimpleSpec(translated)
        except ValueError as exc:
            raise InvalidRequirementError(text, str(exc)) from None
        return cls(text.strip(), spec)

    def matches(self, version: semantic_version.Version | str) -> bool:
        known = self._seen.get(version)
        if known is not None:
            return known
        parsed = version
        if isinstance(parsed, str):
            try:
                parsed = parse_version(parsed)
            except InvalidVersionError:
                return False
        answer = self._seen[version] = bool(parsed in self._spec)
        return answer

    def __str__(self) -> str:
        return self.text


@lru_cache(maxsize=4096)
def _parse_req(text: str) -> VersionReq:
    # Index lines repeat a few requirement texts many times; parse each once.
    return VersionReq._parse(text)


ANY = VersionReq.parse("*")
