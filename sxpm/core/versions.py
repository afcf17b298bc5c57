"""Versions and version requirements with Cargo's meaning; the one version module.

A version is strict SemVer, ``MAJOR.MINOR.PATCH[-pre][+build]``. Checking one, its
precedence (:func:`version_key`) and whether it is a pre-release are pure functions here,
so the lean paths (``sxpm run NAME``, a no-op ``install --frozen``) compare versions
without loading ``semantic_version``.

Requirements are matched by ``semantic_version.SimpleSpec``, which already implements
``^``, ``~``, comparisons, ``*`` and wildcards with Cargo's meaning; two spellings differ
and are translated first: a bare version (``1.2``) is a caret requirement in Cargo
(``==`` in SimpleSpec), and Cargo writes exact matches as ``=1.2.3`` (partial: ``=1.2``
means ``>=1.2.0, <1.3.0``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from sxpm.errors import InputError, InvalidVersionError

if TYPE_CHECKING:
    from semantic_version import Version as Version

# Checked with fullmatch: ``$`` would let a trailing newline through.
VERSION_RE = re.compile(
    r"(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)(?:-([0-9A-Za-z.-]+))?(?:\+[0-9A-Za-z.-]+)?")
_BARE = re.compile(r"^v?\d+(\.\d+){0,2}(-[0-9A-Za-z.-]+)?(\+[0-9A-Za-z.-]+)?$")
_FULL = re.compile(r"^\d+\.\d+\.\d+")


def check_version(text: str) -> str:
    """``text`` if it is a strict ``MAJOR.MINOR.PATCH[-pre][+build]`` version, else raise."""
    if not isinstance(text, str):
        raise InvalidVersionError(repr(text), "not a string")
    if not VERSION_RE.fullmatch(text):
        raise InvalidVersionError(text)
    return text


def version_key(vers: str) -> tuple[Any, ...]:
    """Semantic-version precedence as a sort key (build metadata ignored).

    Unparsable versions sort first.
    """
    m = VERSION_RE.fullmatch(vers)
    if not m:
        return (-1,)
    major, minor, patch, pre = m.groups()
    if pre is None:
        return (int(major), int(minor), int(patch), 1, ())
    ids = tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in pre.split("."))
    return (int(major), int(minor), int(patch), 0, ids)


def is_prerelease(vers: str) -> bool:
    return "-" in vers.split("+", 1)[0]


def parse_version(text: str) -> Version:
    """A strict ``MAJOR.MINOR.PATCH[-pre][+build]`` version (a leading ``v`` is allowed)."""
    if not isinstance(text, str):
        raise InvalidVersionError(repr(text), "not a string")
    return _parse_version(text)


@lru_cache(maxsize=65536)
def _parse_version(text: str) -> Version:
    import semantic_version  # heavy: kept off the lean paths, which only compare keys

    if not VERSION_RE.fullmatch(text.removeprefix("v")):
        raise InvalidVersionError(text)
    try:
        return semantic_version.Version(text.removeprefix("v"))
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
        import semantic_version  # heavy: kept off the lean paths

        translated = ",".join(_translate(part) for part in text.split(","))
        try:
            spec = semantic_version.SimpleSpec(translated)
        except ValueError as exc:
            raise InvalidRequirementError(text, str(exc)) from None
        return cls(text.strip(), spec)

    def matches(self, version: Version | str) -> bool:
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

