"""Versions and version requirements (Cargo's meaning), on ``semantic_version``."""

from __future__ import annotations

import semantic_version

from sxpm.errors import InvalidVersionError

Version = semantic_version.Version


def parse_version(text: str) -> semantic_version.Version:
    """A strict ``MAJOR.MINOR.PATCH[-pre][+build]`` version."""
    if not isinstance(text, str):
        raise InvalidVersionError(repr(text), "not a string")
    try:
        return semantic_version.Version(text.strip().removeprefix("v"))
    except ValueError:
        raise InvalidVersionError(text) from None
