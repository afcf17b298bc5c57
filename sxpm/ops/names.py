"""What a user names on the command line: ``NAME[@REQ]`` through the index, or a ``REF``.

``sxpm model install``, ``sxpm expert install``, ``sxpm run NAME --install`` and
``sxpm pull`` all take either form and ask :func:`resolve_spec` which artifact it is:
a name is looked up in the configured index (``--index``, ``SXPM_INDEX``, the
project's, the home's ``config.json``) and becomes the newest matching version that
is not yanked, pinned by the index line's digest; the line's kind, name and version
travel with it so the fetcher refuses an artifact that says otherwise.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

from sxpm.core.names import is_name_spec, normalize_name
from sxpm.core.reference import Reference, is_valid_tag
from sxpm.core.versions import VersionReq, is_prerelease, version_key
from sxpm.errors import IndexLocationError, InputError, NotFoundError
from sxpm.home import Home
from sxpm.index.client import IndexClient
from sxpm.index.format import IndexEntry
from sxpm.index.location import find_index
from sxpm.ops.fetch import Identity

_REF_FORM = "or give a full REF (oci:PATH:TAG or HOST/REPO:TAG)"


@dataclass(frozen=True)
class Resolved:
    """What a spec names: the reference to fetch (pinned by digest when it came from the
    index), what the index says the artifact is (None for a REF) and the line itself."""

    ref: Reference
    expect: Identity | None = None
    entry: IndexEntry | None = None


def resolve_spec(home: Home, spec: str, kind: str | None, *, index: str | None = None,
                 variant: str | None = None, offline: bool = False,
                 insecure: bool = False) -> Resolved:
    """Resolve ``spec`` (``NAME[@REQ]`` or ``REF``) for a command about ``kind``.

    A name with no index configured is read as a reference in the home's default
    registry (as before names were looked up). Raises a one-line
    :class:`~sxpm.errors.InputError` (exit 2) for an unknown name (naming near
    matches), a name of another kind, a requirement only yanked versions meet, and a
    ``variant`` the chosen version does not have.
    """
    if not is_name_spec(spec):
        return Resolved(home.parse_ref(spec))
    name, _, req_text = spec.partition("@")
    try:
        location = find_index(index)
    except IndexLocationError:
        if index is None:
            return Resolved(home.parse_ref(spec.replace("@", ":", 1) if req_text else spec))
        raise
    client = IndexClient(location, offline=offline, insecure=insecure)
    entry = pick(client, name, req_text or None, kind)
    if variant is not None and entry.variants and \
            variant not in {v.name for v in entry.variants}:
        raise InputError(f"{entry.name} {entry.vers} has no variant {variant!r}",
                         hint="variants: " + ", ".join(v.name for v in entry.variants))
    tag = entry.vers if is_valid_tag(entry.vers) else None
    ref = entry.ref.with_tag(tag).with_digest(entry.digest)
    return Resolved(ref, Identity(entry.kind, entry.name, entry.vers), entry)


def pick(client: IndexClient, name: str, req_text: str | None, kind: str | None
         ) -> IndexEntry:
    """The newest version of ``name`` meeting ``req_text`` that is not yanked."""
    entries = client.entries(name)
    if not entries:
        near = difflib.get_close_matches(normalize_name(name),
                                         [normalize_name(n) for n in client.names()], n=3)
        hint = (f"did you mean {', '.join(near)}? " if near else "`sxpm search` finds names; ")
        raise NotFoundError(f"No {name!r} in the index {client.location}", hint=hint + _REF_FORM)
    first = entries[0]
    if kind is not None and first.kind != kind:
        raise InputError(f"{first.name} is {_a(first.kind)}, not {_a(kind)}",
                         hint=f"use `sxpm {first.kind} install {first.name}`")
    req = VersionReq.parse(req_text) if req_text else None
    matching = [e for e in entries if req is None or req.matches(e.vers)]
    live = [e for e in matching if not e.yanked]
    if not live:
        versions = ", ".join(f"{e.vers}{' (yanked)' if e.yanked else ''}" for e in entries)
        what = "every version" if req is None else f"every version matching {req}"
        if not matching:
            raise NotFoundError(f"{first.name} has no version matching {req}",
                                hint=f"versions: {versions}")
        raise NotFoundError(f"{first.name}: {what} is yanked",
                            hint=f"versions: {versions}; pin one by REF if you must")
    releases = [e for e in live if not is_prerelease(e.vers)]
    return max(releases or live, key=lambda e: version_key(e.vers))


def _a(kind: str) -> str:
    return f"an {kind}" if kind[0] in "aeiou" else f"a {kind}"
