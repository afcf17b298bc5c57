"""The one rule that picks a variant of an image index, for pull, install, lock and run.

In order:

1. an explicit choice (``--variant``, a ``variant=`` argument) names it;
2. else the project's pin (``variant = ...`` in ``simplex.toml``, or the lock's record);
3. else the largest variant whose memory (its file size when the publisher gave no
   memory figure) fits the budget: the accelerator's free memory, RAM on a CPU machine,
   less a headroom (:func:`usable_memory`) for compute buffers and the runtime;
   the smallest when none fits;
4. with no budget (the caller measured nothing) or no sizes, the publisher's default:
   the first variant.

Pure: the caller measures the machine (``sxpm.core.detect``) and passes a number, so
the same budget gives the same answer in every command.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol, TypeVar

from sxpm.errors import ManifestError, NotFoundError

if TYPE_CHECKING:  # the run path imports this module and must not load the OCI types
    from sxpm.core.oci import Descriptor, ImageIndex

MiB = 1024 * 1024
# Compute buffers, CUDA context and fragmentation: kept free on the device.
MIN_RESERVE = 256 * MiB
RESERVE_FRACTION = 0.08


class Sized(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def need(self) -> int | None: ...


V = TypeVar("V", bound=Sized)


def reserve_for(free_bytes: int) -> int:
    """The headroom kept free out of ``free_bytes``."""
    return max(MIN_RESERVE, int(free_bytes * RESERVE_FRACTION))


def usable_memory(free_bytes: int | None) -> int | None:
    """The budget a variant must fit: measured free memory less the headroom."""
    if free_bytes is None:
        return None
    return max(0, free_bytes - reserve_for(free_bytes))


def choose_variant(variants: Sequence[V], *, explicit: str | None = None,
                   pinned: str | None = None, budget: int | None = None) -> V:
    """The variant the rule of this module picks (see the module docstring).

    ``budget`` is already usable bytes (see :func:`usable_memory`). Raises
    :class:`~sxpm.errors.NotFoundError` when ``explicit`` or ``pinned`` names no variant.
    """
    if not variants:
        raise ValueError("no variants to choose from")
    for wanted in (explicit, pinned):
        if wanted is not None:
            found = next((v for v in variants if v.name == wanted), None)
            if found is None:
                raise NotFoundError(f"No variant {wanted!r} in this artifact",
                                    hint="choose one of: "
                                         + ", ".join(v.name for v in variants))
            return found
    sized = [v for v in variants if v.need]
    if budget is None or not sized:
        return variants[0]
    fitting = [v for v in sized if (v.need or 0) <= budget]
    if fitting:
        return max(fitting, key=lambda v: v.need or 0)
    return min(sized, key=lambda v: v.need or 0)


def select(index: ImageIndex, *, explicit: str | None = None, pinned: str | None = None,
           budget: int | None = None) -> Descriptor:
    """The manifest of ``index`` that :func:`choose_variant` picks."""
    if not index.manifests:
        raise ManifestError("image index", "the index lists no manifests")
    options = index.variant_values()
    chosen = choose_variant(options, explicit=explicit, pinned=pinned, budget=budget)
    return index.manifests[options.index(chosen)]
