"""The one variant policy: a pure function of the variants, the choices and a budget,
and the same answer from pull and run for the same measured memory."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from sxpm.core.artifact import Variant
from sxpm.core.reference import Digest
from sxpm.core.variants import MIN_RESERVE, choose_variant, usable_memory
from sxpm.errors import NotFoundError

GiB = 1024**3


def _v(name: str, memory: int | None, size: int = 0) -> Variant:
    return Variant(name, Digest("sha256", hashlib.sha256(name.encode()).hexdigest()), size, memory)


VARIANTS = [_v("Q4_K_M", 4 * GiB), _v("F16", 14 * GiB), _v("Q8_0", 7 * GiB)]


@pytest.mark.parametrize(("explicit", "pinned", "budget", "expected"), [
    ("F16", "Q8_0", 1 * GiB, "F16"),      # an explicit choice beats the pin and the budget
    (None, "Q8_0", 80 * GiB, "Q8_0"),     # the project's pin beats the budget
    (None, None, 10 * GiB, "Q8_0"),       # the largest that fits
    (None, None, 80 * GiB, "F16"),
    (None, None, 1 * GiB, "Q4_K_M"),      # none fits: the smallest
    (None, None, None, "Q4_K_M"),         # nothing measured: the publisher's default (first)
])
def test_policy_table(explicit: str | None, pinned: str | None, budget: int | None,
                      expected: str) -> None:
    assert choose_variant(VARIANTS, explicit=explicit, pinned=pinned,
                          budget=budget).name == expected


def test_policy_sizes_and_missing_names() -> None:
    by_files = [_v("a", None, 5), _v("b", None, 9)]
    assert choose_variant(by_files, budget=6).name == "a"  # file size when no memory figure
    assert choose_variant([_v("x", None)], budget=1).name == "x"
    with pytest.raises(NotFoundError):
        choose_variant(VARIANTS, explicit="Q2_K")
    with pytest.raises(NotFoundError):
        choose_variant(VARIANTS, pinned="Q2_K")


def test_headroom() -> None:
    assert usable_memory(None) is None
    assert usable_memory(MIN_RESERVE) == 0
    assert usable_memory(100 * GiB) == 100 * GiB - 8 * GiB


def test_pull_and_run_pick_the_same_variant(cli, sample_dir: Path, registry_dir: Path,  # noqa: ANN001
                                            home: Path) -> None:
    from sxpm.core.oci import ImageIndex
    from sxpm.home import Home
    from sxpm.ops.transfer import pull
    from sxpm.runner.locate import _choose_variant_in_store
    from sxpm.store.refs import resolve_local

    ref_text = f"oci:{registry_dir}/tiny-llama:1.0.0"
    cli("pack", "model", sample_dir / "tiny-llama", "--ref", ref_text, "--variant", "F32")
    cli("pack", "model", sample_dir / "tiny-llama-f16", "--ref", ref_text, "--variant", "F16")
    h = Home(home)
    ref = h.parse_ref(ref_text)
    index = h.store.load_manifest(resolve_local(h.store, ref))
    assert isinstance(index, ImageIndex)
    needs = {v.name: v.need for v in index.variant_values()}
    assert needs["F32"] > needs["F16"] > 0
    cli("push", ref_text)
    for free, expected in [(MIN_RESERVE + needs["F16"], "F16"),
                           (MIN_RESERVE + needs["F32"], "F32")]:
        pulled = pull(h, ref, memory_budget=usable_memory(free))
        assert pulled.variants == [expected]
        assert _choose_variant_in_store(h, ref, lambda f=free: f) == expected
