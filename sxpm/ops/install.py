"""Install one artifact: find it in the store or pull it, check trust, build its tree."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sxpm.artifacts.describe import describe
from sxpm.core.oci import ANN_VARIANT, Descriptor, ImageIndex
from sxpm.core.reference import Reference
from sxpm.core.variants import select as select_variant
from sxpm.errors import NotFoundError, SignatureError, StoreError
from sxpm.home import Home
from sxpm.installed.records import Installed
from sxpm.installed.tree import materialize
from sxpm.ops.transfer import pull
from sxpm.store.refs import resolve_local
from sxpm.trust.enforce import check_local


def install(home: Home, ref: Reference, *, variant: str | None = None,
            root: Path | None = None, pull_missing: bool = True,
            insecure_skip_verify: bool = False, memory_budget: int | None = None,
            **pull_kw: Any) -> Installed:
    """Install ``ref`` (pulling what is missing) as a tree under ``root`` (default: home).

    When a trust policy covers the artifact, it must carry a valid signature from a
    trusted signer (checked by the pull, or against the signatures the store keeps)
    before anything is installed; the signer goes into the install record. With no
    ``variant``, :mod:`sxpm.core.variants` picks one for ``memory_budget``.
    """
    pull_kw["memory_budget"] = memory_budget
    with home.store.in_use():  # gc waits: what this install links must stay in the store
        return _install(home, ref, variant=variant, root=root, pull_missing=pull_missing,
                        insecure_skip_verify=insecure_skip_verify, **pull_kw)


def _install(home: Home, ref: Reference, *, variant: str | None, root: Path | None,
             pull_missing: bool, insecure_skip_verify: bool, **pull_kw: Any) -> Installed:

    pull_kw["insecure_skip_verify"] = insecure_skip_verify
    try:
        top: Descriptor | None = resolve_local(home.store, ref)
    except NotFoundError:
        if not pull_missing:
            raise
        top = None
    if top is not None:
        try:
            signer = check_local(home, ref, top, skip=insecure_skip_verify)
        except SignatureError:
            if not pull_missing:
                raise
            top = None  # the registry may hold the signature the store lacks
    if top is None:
        pulled = pull(home, ref, variant=variant, **pull_kw)
        top, signer = pulled.descriptor, pulled.signer
    if variant is None and top.is_index:
        index = home.store.load_manifest(top)
        assert isinstance(index, ImageIndex)
        chosen = select_variant(index, budget=pull_kw.get("memory_budget"))
        variant = chosen.annotations.get(ANN_VARIANT, str(chosen.digest))
    info = describe(home.store, top, variant)
    if any(not home.store.has_blob(b.digest) for b in info.manifest.blobs()):
        if not pull_missing:
            raise StoreError(f"{ref}: some blobs are missing from the store",
                             hint="run without --offline to fetch them")
        pull(home, ref, variant=info.variant, **pull_kw)
    return materialize(home.store, info, root or home.root, str(ref),
                       signer=signer.to_dict() if signer else None)
