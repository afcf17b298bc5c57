"""How much of a model goes on the accelerator, and which variant to run.

Pure functions of numbers (tensor bytes, free memory), so they are tested without
hardware. llama.cpp offloads the last ``n_gpu_layers`` repeating blocks; a value
above the block count also offloads the output layer, i.e. everything.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sxpm.core import variants as policy
from sxpm.core.gguf import GGUFHeader
from sxpm.core.variants import MiB, V, reserve_for

KV_BYTES_PER_ELEMENT = 2  # llama.cpp's default KV cache type is F16


@dataclass(frozen=True)
class OffloadPlan:
    n_gpu_layers: int
    n_layers: int
    reason: str

    @property
    def full(self) -> bool:
        return self.n_gpu_layers > self.n_layers


def kv_bytes_per_layer(header: GGUFHeader, n_ctx: int) -> int:
    """Bytes of K and V cache one block needs for ``n_ctx`` tokens."""
    n_embd = header.meta_int("embedding_length") or 0
    n_head = header.meta_int("attention.head_count") or 1
    n_head_kv = header.meta_int("attention.head_count_kv") or n_head
    k_len = header.meta_int("attention.key_length") or (n_embd // max(n_head, 1))
    v_len = header.meta_int("attention.value_length") or k_len
    return n_ctx * n_head_kv * (k_len + v_len) * KV_BYTES_PER_ELEMENT


def plan_offload(layer_bytes: Sequence[int], other_bytes: int, free_bytes: int | None, *,
                 kv_per_layer: int = 0, reserve: int | None = None) -> OffloadPlan:
    """The number of layers to offload so weights and KV cache fit in ``free_bytes``.

    ``free_bytes`` None means there is no usable device: nothing is offloaded.
    """
    n = len(layer_bytes)
    if free_bytes is None:
        return OffloadPlan(0, n, "no GPU offload available: running on the CPU")
    budget = free_bytes - (reserve_for(free_bytes) if reserve is None else reserve)
    total = sum(layer_bytes) + n * kv_per_layer + other_bytes
    if total <= budget:
        return OffloadPlan(n + 1, n, f"all {n} layers fit ({total // MiB} MiB of "
                           f"{max(budget, 0) // MiB} MiB usable)")
    used = 0
    count = 0
    for size in reversed(layer_bytes):  # llama.cpp offloads the last blocks first
        if used + size + kv_per_layer > budget:
            break
        used += size + kv_per_layer
        count += 1
    return OffloadPlan(count, n, f"{count} of {n} layers fit in {max(budget, 0) // MiB} MiB "
                       f"usable (the model needs {total // MiB} MiB)")


def plan_for_header(header: GGUFHeader, free_bytes: int | None, n_ctx: int,
                    adapter_bytes: int = 0) -> OffloadPlan:
    per, other = header.layer_bytes()
    if free_bytes is not None:
        free_bytes -= adapter_bytes
    return plan_offload(per, other, free_bytes, kv_per_layer=kv_bytes_per_layer(header, n_ctx))


@dataclass(frozen=True)
class VariantOption:
    name: str
    memory: int | None  # bytes the weights take when loaded (org.simplex.memory)
    size: int | None  # bytes of the files (org.simplex.size)

    @property
    def need(self) -> int | None:
        return self.memory if self.memory is not None else self.size


def choose_variant(options: Sequence[V], budget: int | None) -> V:
    """The largest variant that fits ``budget`` usable bytes; the smallest when none does.

    The rule is :func:`sxpm.core.variants.choose_variant`'s. ``run`` asks only when
    it found a device or RAM figure; if it could not measure, it would rather try the
    largest (llama.cpp then offloads what fits) than the publisher's default.
    """
    return policy.choose_variant(options, budget=_UNLIMITED if budget is None else budget)


_UNLIMITED = 1 << 62
