"""Install one artifact: its manifests from the store or the registry, trust, its tree."""

from __future__ import annotations

import hashlib
from pathlib import Path

from sxpm.core.progress import SILENT, Reporter
from sxpm.core.reference import Digest, Reference
from sxpm.errors import StoreError
from sxpm.home import Home
from sxpm.installed.records import Installed
from sxpm.installed.tree import materialize
from sxpm.ops.fetch import Budget, Fetcher, Identity
from sxpm.ops.transfer import fetch_blobs
from sxpm.store.refs import store_name
from sxpm.transport import TransportOptions


def install(home: Home, ref: Reference, *, variant: str | None = None,
            root: Path | None = None, pull_missing: bool = True,
            insecure_skip_verify: bool = False, options: TransportOptions | None = None,
            reporter: Reporter = SILENT, fetcher: Fetcher | None = None,
            memory_budget: Budget = None, expect: Identity | None = None,
            repair: bool = False) -> Installed:
    """Install ``ref`` (pulling what is missing) as a tree under ``root`` (default: home).

    When a trust policy covers the artifact, it must carry a valid signature from a
    trusted signer (the store's, else the registry's) before any layer is fetched
    or anything installed; the signer goes into the install record. ``fetcher`` is
    the command's, when it has one. With no ``variant``, :mod:`sxpm.core.variants`
    picks one for ``memory_budget`` (usable bytes). ``expect``: what the index line
    says the artifact is (refused when the artifact says otherwise). ``repair``: hash
    each layer blob first and drop one that no longer matches its digest (a write
    through an installed hard link changes the store's copy too), so it is fetched
    again and the tree re-linked from verified blobs.
    """
    fetcher = fetcher or Fetcher.for_command(home, options=options, offline=not pull_missing,
                                             skip_verify=insecure_skip_verify)
    with home.store.in_use():  # gc waits: what this install links must stay in the store
        tree = fetcher.tree(ref)
        art = fetcher.artifact(tree, tree.entry(variant, budget=memory_budget), expect=expect)
        if repair:
            for layer in art.info.manifest.layers:
                if home.store.has_blob(layer.digest) and not _intact(home, layer.digest):
                    home.store.remove_blob(layer.digest)
        missing = [(ref, b) for b in art.info.manifest.blobs()
                   if not home.store.has_blob(b.digest)]
        if missing:
            if fetcher.offline:
                raise StoreError(f"{ref}: some blobs are missing from the store",
                                 hint="run without --offline to fetch them")
            fetch_blobs(home, missing, options=fetcher.options, reporter=reporter)
        fetcher.keep(tree)
        name = store_name(ref)
        if home.store.resolve(name) != tree.descriptor:
            with home.store.ref_lock(name):
                home.store.set_ref(name, tree.descriptor)
        return materialize(home.store, art.info, root or home.root, str(ref),
                           signer=art.signer.to_dict() if art.signer else None)


def _intact(home: Home, digest: Digest) -> bool:
    h = hashlib.new(digest.algorithm)
    with home.store.open_blob(digest) as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest() == digest.hex
