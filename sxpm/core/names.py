"""The one name rule: how an artifact's name is spelled, checked and compared.

A name is 1-64 characters of ``[A-Za-z0-9._-]`` starting with a letter or digit, with
no ``..``. Two names are the same name when their normalised forms are equal (lower
case, ``_`` as ``-``), so ``Foo_Bar`` and ``foo-bar`` share one index file and one
installed directory can never hold both. Names sxpm stores (``simplex.toml``, the
lock, artifact metadata) are spelled in lower case.

Every check uses ``fullmatch``: ``re.match`` with ``$`` accepts a trailing newline,
which would let a listing show a spoofed name.
"""

from __future__ import annotations

import re

from sxpm.errors import InvalidNameError

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def check_name(name: str) -> str:
    """``name`` if it is a name in any case (as an index line may spell it), else raise."""
    if not isinstance(name, str) or not _NAME.fullmatch(name) or ".." in name:
        raise InvalidNameError(str(name))
    return name


def validate_name(name: str) -> str:
    """``name`` if it is a name spelled in lower case, the form sxpm stores, else raise."""
    check_name(name)
    if name != name.lower():
        raise InvalidNameError(name)
    return name


def normalize_name(name: str) -> str:
    """The form names are compared and filed under: lower case, ``_`` as ``-``."""
    return name.lower().replace("_", "-")


def same_name(a: str, b: str) -> bool:
    return normalize_name(a) == normalize_name(b)


# The install record's file name, reserved in every artifact (a layer may not be
# titled so). Here, light, because `sxpm run NAME` reads records without tarfile.
INSTALL_RECORD = ".sxpm-install.json"


def is_name_spec(spec: str) -> bool:
    """``NAME`` or ``NAME@REQ`` (looked up in an index): no registry host, path, tag or
    digest, which only a ``REF`` has."""
    name = spec.partition("@")[0]
    return bool(name) and "/" not in name and ":" not in spec
