"""Moving artifacts between the store and registries: pull, push, copy.

Order of writes makes crashes harmless: blobs first (each verified before it is
renamed into the store), then manifests, then the ref. A ref therefore never
names content that is not fully present and checked.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from sxpm.core.oci import ANN_VARIANT, Descriptor, ImageIndex, Manifest, parse_manifest_bytes
from sxpm.core.progress import SILENT, Progress, Reporter
from sxpm.core.reference import Digest, Reference
from sxpm.errors import CorruptBlobError, NotFoundError
from sxpm.home import Home
from sxpm.ops.fetch import Budget, Fetcher, Identity
from sxpm.store.layout import OCILayout
from sxpm.store.refs import resolve_local, store_name
from sxpm.transport import Repository, TransportOptions, open_repository
from sxpm.transport.base import Taken
from sxpm.transport.referrers import fetch_referrers, push_referrers

if TYPE_CHECKING:
    from sxpm.trust.verify import VerifiedSigner


@dataclass
class TransferResult:
    ref: Reference
    descriptor: Descriptor
    blobs_transferred: int = 0
    bytes_transferred: int = 0
    blobs_skipped: int = 0
    variants: list[str] = field(default_factory=list)
    signer: VerifiedSigner | None = None
    """Who signed it, when a trust policy covers it (see :mod:`sxpm.trust`)."""


def pull(home: Home, ref: Reference, *, variant: str | None = None,
         all_variants: bool = False, options: TransportOptions | None = None,
         reporter: Reporter = SILENT, insecure_skip_verify: bool = False,
         fetcher: Fetcher | None = None, memory_budget: Budget = None,
         expect: Identity | None = None) -> TransferResult:
    """Fetch an artifact into the store, fetching only the blobs that are missing.

    For an image index every variant's manifest is stored (so the index keeps its
    digest), but only the layers of ``variant`` unless ``all_variants``; with no
    ``variant`` the rule of :mod:`sxpm.core.variants` picks one for
    ``memory_budget`` (usable bytes). When a trust policy covers the artifact, its signature is
    checked against the manifest digest before any layer is fetched
    (``insecure_skip_verify`` skips that). ``fetcher`` is the command's, when it
    has one (its policy and the manifests it already read). ``expect``: what the index
    line says the artifact is (refused when the artifact says otherwise).
    """
    fetcher = fetcher or Fetcher.for_command(home, options=options,
                                             skip_verify=insecure_skip_verify)
    options = fetcher.options
    tree = fetcher.tree(ref, where="registry")
    entries = list(tree.index.manifests) if tree.index is not None and all_variants \
        else [tree.entry(variant, budget=memory_budget)]
    # What each variant is and who signed the whole, before any layer is fetched.
    signers = [fetcher.check(tree, entry) if expect is None
               else fetcher.artifact(tree, entry, expect=expect).signer for entry in entries]
    blobs: dict[Digest, Descriptor] = {}
    for entry in entries:
        for blob in tree.manifest(entry).blobs():
            blobs.setdefault(blob.digest, blob)
    variants = [e.annotations.get(ANN_VARIANT, str(e.digest)) for e in entries] \
        if tree.index is not None else []
    top = tree.descriptor
    result = TransferResult(ref, top, variants=variants, signer=signers[0])
    repo = fetcher.repo(ref)
    # From "which blobs are present" to "the ref names them", gc must keep its hands off.
    with home.store.in_use():
        missing = [b for b in blobs.values() if not home.store.has_blob(b.digest)]
        result.blobs_skipped = len(blobs) - len(missing)
        total = sum(b.size for b in missing)
        bar = reporter.start(f"pull {ref.name}", total)
        streams = range_streams(options, missing)
        try:
            _parallel(options.jobs, missing,
                      lambda b, taken: _fetch_one(repo, home.store, b, bar, ref, streams,
                                                  taken),
                      interrupt=home.store.interrupted)
        finally:
            bar.close()
        early = [b for b in blobs.values() if b.digest in fetcher.fetched]  # the configs
        result.blobs_skipped -= len(early)
        result.blobs_transferred = len(missing) + len(early)
        result.bytes_transferred = total + sum(b.size for b in early)
        fetcher.keep(tree)
        name = store_name(ref)
        with home.store.ref_lock(name):
            home.store.set_ref(name, top)
    return result


def range_streams(options: TransportOptions, blobs: Iterable[Descriptor]) -> int:
    """Streams for each large blob: the ``jobs`` shared among the large blobs fetched.

    Eight large layers with ``-j 8`` take one stream each (read and hashed in order);
    one large blob takes all eight, as ranges, but no more than the CPUs (at least 2).
    """
    large = sum(1 for b in blobs if b.size >= options.range_min_bytes)
    streams = options.jobs // max(1, min(options.jobs, large))
    # Each stream costs a core or so on a fast link (receive, and the hashing thread
    # reading back): more streams than cores only contend.
    return max(1, min(streams, max(2, os.cpu_count() or 1)))


def _fetch_one(repo: Repository, store: OCILayout, desc: Descriptor, bar: Progress,
               ref: Reference, streams: int = 1, taken: Taken | None = None) -> None:
    with store.writer(desc, where=str(ref)) as w:
        if store.has_blob(desc.digest):  # another process fetched it while we waited
            w.abort(keep_partial=True)
            return
        resumed = w.offset > 0 or w.ranges_path.exists()
        try:
            repo.fetch_blob(desc, w, bar, streams, taken)
            w.commit()
            return
        except CorruptBlobError:
            # Bytes kept from an earlier attempt (a crash, a power loss) may be what is
            # wrong: fetch the whole blob once more. A fresh fetch that fails is final.
            if not resumed:
                raise
        bar.update(-desc.size)  # the failed attempt counted every byte
    with store.writer(desc, where=str(ref)) as w:
        if store.has_blob(desc.digest):
            w.abort(keep_partial=True)
            return
        if w.offset or w.ranges_path.exists():
            w.restart()
        repo.fetch_blob(desc, w, bar, streams)
        w.commit()


def _parallel(jobs: int, items: Iterable[Descriptor],
              fn: Callable[[Descriptor, Taken], None],
              interrupt: threading.Event | None = None) -> None:
    """Run ``fn(item, taken)`` on every item, ``jobs`` at a time; the first error is
    raised.

    An item's slot is free once ``fn`` calls ``taken`` (every byte of its blob asked
    for, the last ones arriving) or returns: the next blob starts while the last
    pieces of the one before arrive and it is hashed and stored, instead of every
    stream waiting at the boundary (eight layers with ``-j 4`` over a far link lost
    about 0.4 s there, a tenth of the pull). At most ``2 * jobs`` run at once.

    On Ctrl-C, ``interrupt`` is set so running transfers stop at their next write
    (their bytes stay on disk for the next attempt) instead of running to the end.
    """
    todo = list(items)
    if not todo:
        return
    slots = threading.Semaphore(max(1, jobs))

    def run(item: Descriptor) -> None:
        slots.acquire()
        once = threading.Lock()
        freed = False

        def taken() -> None:
            nonlocal freed
            with once:
                if freed:
                    return
                freed = True
            slots.release()

        try:
            if interrupt is None or not interrupt.is_set():  # else it is ending: skip
                fn(item, taken)
        finally:
            taken()

    with ThreadPoolExecutor(max_workers=max(1, min(2 * jobs, len(todo)))) as pool:
        futures = [pool.submit(run, item) for item in todo]
        errors: list[BaseException] = []
        try:
            for future in futures:
                try:
                    future.result()
                except Exception as exc:  # report the first, after all have stopped
                    errors.append(exc)
        except KeyboardInterrupt:
            for future in futures:
                future.cancel()
            if interrupt is not None:
                interrupt.set()
                try:
                    pool.shutdown(wait=True)
                finally:
                    interrupt.clear()
            raise
        if errors:
            raise errors[0]


def _collect_push(store: OCILayout, top: Descriptor, variant: str | None
                  ) -> tuple[list[tuple[Descriptor, bytes]], list[Descriptor], Descriptor]:
    """Manifests (children first) and blobs to push; the top may narrow to one variant."""
    data = store.read_blob(top)
    obj = parse_manifest_bytes(data, str(top.digest))
    manifests: list[tuple[Descriptor, bytes]] = []
    blobs: dict[str, Descriptor] = {}
    if isinstance(obj, ImageIndex):
        children = list(obj.manifests) if variant is None else [obj.select(variant)]
        for child in children:
            cdata = store.read_blob(child)
            cobj = parse_manifest_bytes(cdata, str(child.digest))
            assert isinstance(cobj, Manifest)
            manifests.append((child, cdata))
            for b in cobj.blobs():
                blobs[str(b.digest)] = b
        if variant is not None:
            return manifests, list(blobs.values()), children[0]
    else:
        for b in obj.blobs():
            blobs[str(b.digest)] = b
    manifests.append((top, data))
    return manifests, list(blobs.values()), top


def push(home: Home, ref: Reference, *, target: Reference | None = None,
         variant: str | None = None, options: TransportOptions | None = None,
         reporter: Reporter = SILENT) -> TransferResult:
    """Send what the store holds under ``ref`` to ``target`` (default: ``ref`` itself)."""
    options = options or TransportOptions()
    top = resolve_local(home.store, ref)
    dest = target or ref
    manifests, blobs, top = _collect_push(home.store, top, variant)
    absent = [b for b in blobs if not home.store.has_blob(b.digest)]
    if absent:
        raise NotFoundError(
            f"{ref}: {len(absent)} blob(s) of this artifact are not in the store "
            f"(e.g. {absent[0].digest})",
            hint="pull it with --all-variants first, or push one variant with --variant")
    repo = open_repository(dest, options)
    result = TransferResult(dest, top)
    mounts = mount_candidates(home, dest, blobs)
    bar = reporter.start(f"push {dest.name}", sum(b.size for b in blobs))
    sent: list[Descriptor] = []

    def one(desc: Descriptor, _taken: Taken) -> None:  # done when pushed
        if repo.push_blob(desc, home.store, bar, mount_from=mounts.get(desc.digest, ())):
            sent.append(desc)
        else:
            bar.update(desc.size)

    try:
        _parallel(options.jobs, blobs, one)
    finally:
        bar.close()
    result.blobs_transferred = len(sent)
    result.bytes_transferred = sum(d.size for d in sent)
    result.blobs_skipped = len(blobs) - len(sent)
    for desc, data in manifests:
        tag = dest.tag if desc.digest == top.digest else None
        repo.push_manifest(desc, data, tag)
    for desc, _ in manifests:  # signatures (and SBOMs...) travel with the artifact
        push_referrers(home, ref, repo, desc.digest)
    return result


def mount_candidates(home: Home, dest: Reference, blobs: Iterable[Descriptor]
                     ) -> dict[Digest, list[str]]:
    """Other repositories of ``dest``'s registry that hold each blob, as far as the
    store's refs tell: a registry can then mount the blob instead of receiving it."""
    wanted = {b.digest for b in blobs}
    out: dict[Digest, list[str]] = {}
    if dest.is_layout or not wanted or not home.store.exists():
        return out
    for name, desc in home.store.refs().items():
        try:
            ref = Reference.parse(name)
        except ValueError:
            continue
        if ref.registry != dest.registry or ref.repository == dest.repository:
            continue
        for digest in home.store.reachable([desc]) & wanted:
            if ref.repository not in out.setdefault(digest, []):
                out[digest].append(ref.repository)
    return out


def attach(home: Home, subject: Reference, manifest: Manifest, *,
           options: TransportOptions | None = None) -> Descriptor:
    """Push ``manifest`` as a referrer of ``subject`` (a signature, an SBOM...).

    Its blobs must be in the store. The manifest's ``subject`` is set to the
    descriptor the registry serves for ``subject``; the referrer is pushed by digest,
    and registries without the referrers API get the tag-schema index updated.
    """
    options = options or TransportOptions()
    repo = open_repository(subject, options)
    sdesc, _ = repo.get_manifest(str(subject.digest) if subject.digest
                                 else (subject.tag or "latest"))
    if subject.digest and sdesc.digest != subject.digest:
        raise CorruptBlobError(str(subject.digest), str(sdesc.digest), where=str(subject))
    manifest = replace(manifest, subject=Descriptor(sdesc.media_type, sdesc.digest,
                                                    sdesc.size))
    for blob in manifest.blobs():
        if not home.store.has_blob(blob.digest):
            raise NotFoundError(f"Blob {blob.digest} of the referrer is not in the store",
                                hint="put it in the store first (OCILayout.put_bytes)")
        repo.push_blob(blob, home.store, SILENT.start("", 0))
    desc = manifest.descriptor()
    data = manifest.to_bytes()
    home.store.put_bytes(data, desc.media_type)
    repo.push_manifest(desc, data, None)
    return desc


def list_referrers(subject: Reference, artifact_type: str | None = None, *,
                   options: TransportOptions | None = None) -> list[Descriptor]:
    """Manifests in ``subject``'s repository whose ``subject`` is that artifact."""
    repo = open_repository(subject, options or TransportOptions())
    digest = subject.digest
    if digest is None:
        digest = repo.get_manifest(subject.tag or "latest")[0].digest
    return repo.referrers(digest, artifact_type)


def copy(home: Home, src: Reference, dst: Reference, *,
         options: TransportOptions | None = None, reporter: Reporter = SILENT
         ) -> TransferResult:
    """Copy every variant of ``src`` to ``dst`` through the store (blobs deduplicated),
    with what the source lists as attached to the artifact and to each variant."""
    pulled = pull(home, src, all_variants=True, options=options, reporter=reporter)
    repo = open_repository(src, options or TransportOptions())
    manifests, _, _ = _collect_push(home.store, pulled.descriptor, None)
    for desc, _ in manifests:
        fetch_referrers(home, src, repo, desc.digest)
    return push(home, src.with_digest(pulled.descriptor.digest) if not src.tag else src,
                target=dst if dst.tag or dst.digest else dst.with_tag(src.tag),
                options=options, reporter=reporter)


def fetch_blobs(home: Home, wanted: Iterable[tuple[Reference, Descriptor]], *,
                options: TransportOptions | None = None, reporter: Reporter = SILENT
                ) -> tuple[int, int]:
    """Fetch blobs of many artifacts in one parallel pass; (blobs, bytes) fetched.

    ``wanted`` pairs a repository (a reference; its tag and digest are not used) with
    a blob. A blob several artifacts share is fetched once.
    """
    options = options or TransportOptions()
    unique: dict[Digest, tuple[Reference, Descriptor]] = {}
    for source, desc in wanted:
        if not home.store.has_blob(desc.digest):
            unique.setdefault(desc.digest, (source.repository_ref, desc))
    repos: dict[Reference, Repository] = {}
    for source, _ in unique.values():
        if source not in repos:
            repos[source] = open_repository(source, options)
    total = sum(d.size for _, d in unique.values())
    bar = reporter.start("install", total)
    by_digest = {d.digest: s for s, d in unique.values()}
    streams = range_streams(options, [d for _, d in unique.values()])

    def one(desc: Descriptor, taken: Taken) -> None:
        source = by_digest[desc.digest]
        _fetch_one(repos[source], home.store, desc, bar, source, streams, taken)

    try:
        _parallel(options.jobs, [d for _, d in unique.values()], one,
                  interrupt=home.store.interrupted)
    finally:
        bar.close()
    return len(unique), total
