"""Value types parsed once at the edge: digests, names and references.

Reference forms:

* ``host[:port]/repository[:tag][@sha256:<hex>]`` - an OCI distribution registry.
  The first component is a host when it holds a ``.`` or ``:`` or is ``localhost``
  (Docker's rule); otherwise the default registry is put in front.
* ``oci:PATH[:tag][@sha256:<hex>]`` - a repository kept as an OCI image layout
  directory (the form ORAS and skopeo use), e.g. ``oci:./registry/tiny-llama:1.0.0``.
  This is the embedded registry: it needs no server. ``PATH`` is made absolute at
  parse time so a reference means the same thing from any working directory.
"""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass, field, replace

from sxpm.errors import InvalidDigestError, InvalidReferenceError

_HEX = {"sha256": 64, "sha512": 128}
_DIGEST_RE = re.compile(r"^([a-z0-9]+(?:[.+_-][a-z0-9]+)*):([a-zA-Z0-9=_-]+)$")
_TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$")
_REPO_COMPONENT_RE = re.compile(r"^[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*$")
_HOST_RE = re.compile(
    r"^(?:localhost|\[[0-9a-fA-F:]+\]|[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*)(?::[0-9]{1,5})?$"
)
LAYOUT_SCHEME = "oci:"


@dataclass(frozen=True, order=True)
class Digest:
    """A content digest such as ``sha256:<64 hex>``; only algorithms sxpm can check."""

    algorithm: str
    hex: str

    @classmethod
    def parse(cls, text: str) -> Digest:
        if not isinstance(text, str):
            raise InvalidDigestError(repr(text), "not a string")
        m = _DIGEST_RE.fullmatch(text)
        if not m:
            raise InvalidDigestError(text, "expected ALGORITHM:HEX")
        algorithm, value = m.groups()
        if algorithm not in _HEX:
            raise InvalidDigestError(text, f"unsupported algorithm {algorithm!r}")
        if len(value) != _HEX[algorithm] or not re.fullmatch(r"[0-9a-f]+", value):
            raise InvalidDigestError(
                text, f"{algorithm} takes {_HEX[algorithm]} lower-case hex digits"
            )
        return cls(algorithm, value)

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.hex}"

    @property
    def short(self) -> str:
        return f"{self.algorithm}:{self.hex[:12]}"


def is_valid_tag(tag: str) -> bool:
    return bool(_TAG_RE.fullmatch(tag))


@dataclass(frozen=True)
class Reference:
    """Where an artifact lives: a registry repository plus a tag and/or digest.

    ``registry`` is ``host[:port]`` for a distribution registry, or ``""`` for an
    OCI layout, whose ``repository`` is then the absolute path of its directory.
    """

    registry: str
    repository: str
    tag: str | None = None
    digest: Digest | None = field(default=None)

    @property
    def is_layout(self) -> bool:
        return self.registry == ""

    @property
    def name(self) -> str:
        """The last component of the repository: the artifact's name by convention."""
        return self.repository.rstrip("/").rsplit("/", 1)[-1]

    @property
    def locator(self) -> str:
        """The repository without tag or digest, e.g. ``localhost:5000/simplex/tiny``."""
        if self.is_layout:
            return f"{LAYOUT_SCHEME}{self.repository}"
        return f"{self.registry}/{self.repository}"

    def with_tag(self, tag: str | None) -> Reference:
        return replace(self, tag=tag)

    def with_digest(self, digest: Digest | None) -> Reference:
        return replace(self, digest=digest)

    def with_repository(self, repository: str) -> Reference:
        return replace(self, repository=repository)

    def __str__(self) -> str:
        text = self.locator
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text

    @property
    def repository_ref(self) -> Reference:
        """This reference without tag or digest: the repository it lives in."""
        return replace(self, tag=None, digest=None)

    @classmethod
    def parse_locator(cls, text: str, *, exact: bool = True) -> Reference:
        """Parse a repository locator (``host[:port]/repository`` or ``oci:PATH``): no
        tag, no digest, no default registry. ``exact`` also asks that it be written as
        :attr:`locator` writes it back (``oci:`` with an absolute, normal path), so a
        file that stores one reads and writes the same bytes."""
        ref = cls.parse(text)
        if ref.tag is not None or ref.digest is not None:
            raise InvalidReferenceError(text, "a repository takes no tag or digest here")
        if exact and ref.locator != text:
            raise InvalidReferenceError(text, f"write the repository as {ref.locator!r}")
        return ref

    @classmethod
    def parse(cls, text: str, *, default_registry: str | None = None) -> Reference:
        """Parse ``text``; a reference without a host goes to ``default_registry``.

        ``default_registry`` is a registry locator: ``host[:port][/namespace]`` or
        ``oci:DIR`` (a directory holding one layout per repository).
        """
        if not isinstance(text, str) or not text.strip():
            raise InvalidReferenceError(str(text), "empty")
        if any(c.isspace() for c in text) or "\x00" in text:
            raise InvalidReferenceError(text, "contains whitespace or NUL")
        rest, digest = _split_digest(text)
        if rest.startswith(LAYOUT_SCHEME):
            return _parse_layout(text, rest[len(LAYOUT_SCHEME) :], digest)
        head, sep, _ = rest.partition("/")
        if sep and ("." in head or ":" in head or head == "localhost" or head.startswith("[")):
            return _parse_remote(text, rest, digest)
        if default_registry is None:
            raise InvalidReferenceError(text, "no registry host and no default registry set")
        base = default_registry.rstrip("/")
        if base.startswith(LAYOUT_SCHEME):
            return _parse_layout(text, base[len(LAYOUT_SCHEME) :] + "/" + rest, digest)
        return _parse_remote(text, f"{base}/{rest}", digest)


def _split_digest(text: str) -> tuple[str, Digest | None]:
    if "@" not in text:
        return text, None
    rest, _, digest_text = text.rpartition("@")
    try:
        return rest, Digest.parse(digest_text)
    except InvalidDigestError as exc:
        raise InvalidReferenceError(text, exc.message) from None


def _split_tag(original: str, rest: str) -> tuple[str, str | None]:
    slash = rest.rfind("/")
    colon = rest.rfind(":")
    if colon > slash:
        locator, tag = rest[:colon], rest[colon + 1 :]
        if not is_valid_tag(tag):
            raise InvalidReferenceError(original, f"invalid tag {tag!r}")
        return locator, tag
    return rest, None


def _parse_layout(original: str, rest: str, digest: Digest | None) -> Reference:
    path, tag = _split_tag(original, rest)
    if not path:
        raise InvalidReferenceError(original, "oci: needs a directory path")
    if ":" in path:
        raise InvalidReferenceError(original, "a layout path may not contain ':'")
    absolute = os.path.abspath(os.path.expanduser(path))
    return Reference("", absolute, tag, digest)


def _parse_remote(original: str, rest: str, digest: Digest | None) -> Reference:
    host, _, path = rest.partition("/")
    if not _HOST_RE.fullmatch(host):
        raise InvalidReferenceError(original, f"invalid registry host {host!r}")
    repository, tag = _split_tag(original, path)
    if not repository:
        raise InvalidReferenceError(original, "missing repository")
    for component in repository.split("/"):
        if not _REPO_COMPONENT_RE.fullmatch(component):
            raise InvalidReferenceError(
                original, f"invalid repository component {component!r} (use [a-z0-9._-])"
            )
    if len(host) + 1 + len(repository) > 255:
        raise InvalidReferenceError(original, "longer than 255 characters")
    return Reference(host, repository, tag, digest)


def is_loopback(host: str) -> bool:
    """True for ``localhost``, 127.0.0.0/8 and ::1, with or without a port."""
    name = host
    if name.startswith("["):
        name = name[1:name.find("]")]
    elif name.count(":") == 1:
        name = name.split(":", 1)[0]
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False
