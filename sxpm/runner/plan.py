"""How much of a model goes on the accelerator, and which variant to run.

Pure functions of numbers (tensor bytes, free memory), so they are tested without
hardware. llama.cpp offloads the last ``n_gpu_layers`` repeating blocks; a value
above the block count also offloads the output layer, i.e. everything.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sxpm.core.gguf import GGUFHeader

MiB = 1024 * 1024
# Compute buffers, CUDA context and fragmentation: kept free on the device.
MIN_RESERVE = 256 * MiB
RESERVE_FRACTION = 0.08
KV_BYTES_PER_ELEMENT = 2  # llama.cpp's default KV cache type is F16


@dataclass(frozen=True)
class OffloadPlan:
    n_gpu_layers: int
    n_layers: int
    reason: str

    @property
    def full(self) -> bool:
        return self.n_gpu_layers > self.n_layers


def reserve_for(free_bytes: int) -> int:
    return max(MIN_RESERVE, int(free_bytes * RESERVE_FRACTION))


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


def choose_variant(options: Sequence[VariantOption], budget: int | None) -> VariantOption:
    """The largest variant that fits ``budget`` bytes; the smallest when none does.

    An unknown budget picks the largest; a variant with no size is taken only when
    no variant has one.
    """
    if not options:
        raise ValueError("no variants to choose from")
    sized = [o for o in options if o.need is not None]
    if not sized:
        return options[0]
    if budget is None:
        return max(sized, key=lambda o: o.need or 0)
    fitting = [o for o in sized if (o.need or 0) <= budget]
    if fitting:
        return max(fitting, key=lambda o: o.need or 0)
    return min(sized, key=lambda o: o.need or 0)
