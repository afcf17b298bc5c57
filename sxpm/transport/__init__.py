"""The one interface every registry is reached through.

A :class:`Repository` (:mod:`sxpm.transport.base`) is one repository of one registry: a
directory holding an OCI image layout (:mod:`sxpm.transport.layout`, the embedded
registry) or a repository of an OCI distribution registry (:mod:`sxpm.transport.remote`).
The operations above it (:mod:`sxpm.ops`) never know which: they call
:func:`open_repository`, which loads the remote client (and ``requests``) only for a
remote reference.
"""

from __future__ import annotations

from sxpm.core.reference import Reference
from sxpm.transport.base import (
    Repository,
    TransportOptions,
    read_referrers_fallback,
    referrers_tag,
    update_referrers_fallback,
)

__all__ = ["Repository", "TransportOptions", "open_repository", "read_referrers_fallback",
           "referrers_tag", "update_referrers_fallback"]


def open_repository(ref: Reference, options: TransportOptions | None = None) -> Repository:
    options = options or TransportOptions()
    if ref.is_layout:
        from sxpm.transport.layout import LayoutRepository

        return LayoutRepository(ref)
    from sxpm.transport.mirrors import wrap
    from sxpm.transport.remote import RemoteRepository

    return wrap(ref, RemoteRepository(ref, options), options)
