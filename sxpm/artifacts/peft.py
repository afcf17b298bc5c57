"""PEFT LoRA adapters (what training code writes) converted to GGUF LoRA adapters.

A PEFT directory holds ``adapter_config.json`` and ``adapter_model.safetensors``;
llama.cpp loads LoRA adapters only as GGUF. ``pack expert`` converts the directory,
for llama-family bases, the way llama.cpp's ``convert_lora_to_gguf.py`` does:

* ``base_model.model.model.layers.N.self_attn.q_proj.lora_A.weight`` becomes
  ``blk.N.attn_q.weight.lora_a`` (and ``lora_B`` -> ``lora_b``); the shapes stay
  (A: rank x n_in, B: n_out x rank), as llama.cpp's adapter loader expects;
* the rows of q_proj's and k_proj's B are reordered as llama.cpp reorders those of the
  base weights when it converts a llama model (rotary halves interleaved), which needs
  the head counts of the base model's ``config.json``;
* ``general.type`` = ``adapter``, ``adapter.type`` = ``lora``, ``adapter.lora.alpha``
  = ``lora_alpha`` (times sqrt(r) for rsLoRA, whose scale is alpha / sqrt(r) where
  llama.cpp applies alpha / r).

Whatever cannot be converted faithfully (DoRA, per-module alphas, embedding LoRA,
full modules to save, another architecture) is refused with one line that says what to
do; the safetensors file is never packed as-is, which llama.cpp would only reject at
run time. The safetensors file is read here, bounded, with numpy alone (bf16 included,
which numpy cannot name), so no torch and no safetensors package are needed.
"""

from __future__ import annotations

import json
import math
import re
import struct
from pathlib import Path
from typing import Any

from sxpm.errors import ArtifactInputError

CONFIG = "adapter_config.json"
WEIGHTS = "adapter_model.safetensors"
LLAMA_FAMILY = {"llama": "llama", "mistral": "llama"}  # HF model_type -> GGUF architecture
MAX_HEADER = 100 * 1024 * 1024
_CONVERT = "convert it with llama.cpp's convert_lora_to_gguf.py and name the .gguf in " \
           "manifest.json"
_NAME = re.compile(r"^base_model\.model\.(?:model\.)?(.+)\.lora_([AB])(?:\.[^.]+)?\.weight$")
_MODULES = [
    (re.compile(r"^layers\.(\d+)\.self_attn\.(q|k|v|o)_proj$"),
     {"q": "attn_q", "k": "attn_k", "v": "attn_v", "o": "attn_output"}),
    (re.compile(r"^layers\.(\d+)\.mlp\.(gate|up|down)_proj$"),
     {"gate": "ffn_gate", "up": "ffn_up", "down": "ffn_down"}),
]


def peft_dir(path: Path) -> Path | None:
    """The PEFT adapter directory ``path`` names (the directory, or a file in it)."""
    if path.is_dir():
        return path if (path / CONFIG).is_file() else None
    if path.name in (CONFIG, WEIGHTS) or path.suffix == ".safetensors":
        return path.parent if (path.parent / CONFIG).is_file() else None
    return None


def _refuse(source: Path, why: str, hint: str = _CONVERT) -> ArtifactInputError:
    return ArtifactInputError(f"PEFT adapter {source}: {why}", hint=hint)


def _json(path: Path, source: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _refuse(source, f"cannot read {path.name} ({exc})",
                      "write the directory again with PEFT's save_pretrained") from None
    if not isinstance(data, dict):
        raise _refuse(source, f"{path.name} is not a JSON object")
    return data


def read_safetensors(path: Path) -> dict[str, Any]:
    """Tensors of a safetensors file as float32 numpy arrays (F32, F16 and BF16)."""
    import numpy as np  # heavy: only a PEFT conversion needs it

    dtypes = {"F32": np.float32, "F16": np.float16, "BF16": np.uint16}
    where = path.parent
    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
            (length,) = struct.unpack("<Q", head) if len(head) == 8 else (None,)
            if length is None or length > MAX_HEADER:
                raise _refuse(where, f"{path.name} is not a safetensors file")
            header = json.loads(fh.read(length))
            body = fh.read()
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _refuse(where, f"cannot read {path.name} ({exc})") from None
    out: dict[str, Any] = {}
    for name, spec in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype, shape, (begin, end) = spec["dtype"], spec["shape"], spec["data_offsets"]
        except (KeyError, TypeError, ValueError):
            raise _refuse(where, f"{path.name}: tensor {name} has a bad header") from None
        if dtype not in dtypes:
            raise _refuse(where, f"tensor {name} is {dtype}; sxpm converts F32, F16 and BF16")
        np_type = np.dtype(dtypes[dtype]).newbyteorder("<")
        if not (0 <= begin <= end <= len(body)) or end - begin != math.prod(shape) * \
                np_type.itemsize:
            raise _refuse(where, f"{path.name}: tensor {name} lies outside the file")
        arr = np.frombuffer(body, np_type, (end - begin) // np_type.itemsize, begin)
        if dtype == "BF16":  # bf16 is the top half of a float32
            arr = (arr.astype(np.uint32) << 16).view(np.float32)
        out[name] = arr.astype(np.float32).reshape(shape)
    return out


def _gguf_name(module: str) -> str | None:
    if module == "lm_head":
        return "output.weight"
    for pattern, names in _MODULES:
        m = pattern.match(module)
        if m:
            return f"blk.{m.group(1)}.{names[m.group(2)]}.weight"
    return None


def _permute(b: Any, n_head: int) -> Any:
    """llama.cpp's reordering of q/k rows (convert_hf_to_gguf's LlamaModel.permute)."""
    return (b.reshape(n_head, 2, b.shape[0] // n_head // 2, *b.shape[1:])
            .swapaxes(1, 2).reshape(b.shape))


def convert_peft(source: Path, out: Path, architecture: str | None = None) -> str:
    """Write the GGUF LoRA adapter of the PEFT directory ``source`` to ``out``;
    ``architecture`` is what manifest.json says of the base. Returns the GGUF's
    architecture."""
    import gguf  # heavy (numpy): only a PEFT conversion needs it

    config = _json(source / CONFIG, source)
    if str(config.get("peft_type", "LORA")).upper() != "LORA":
        raise _refuse(source, f"a {config.get('peft_type')} adapter, not LoRA",
                      "llama.cpp runs LoRA adapters only")
    for key, why in (("use_dora", "DoRA"), ("alpha_pattern", "a per-module lora_alpha"),
                     ("fan_in_fan_out", "fan_in_fan_out weights"),
                     ("modules_to_save", "full modules to save")):
        if config.get(key):
            raise _refuse(source, f"{why} cannot be a GGUF LoRA adapter",
                          "train without it, or merge the adapter into the base model")
    base = _json(source / "config.json", source) if (source / "config.json").is_file() else {}
    model_type = base.get("model_type") or architecture
    arch = LLAMA_FAMILY.get(str(model_type).lower()) if model_type else None
    if arch is None:
        raise _refuse(source, f"sxpm converts adapters of llama-family bases; this base is "
                      f"{model_type!r}" if model_type else "the base model's architecture is "
                      "not known", f"for a llama base, put the base's config.json next to "
                      f"{CONFIG} (or add \"architecture\": \"llama\" to the base in "
                      f"manifest.json); else {_CONVERT}")
    if not (source / WEIGHTS).is_file():
        raise _refuse(source, f"no {WEIGHTS}", "sxpm reads safetensors adapters; save with "
                      "safe_serialization=True")
    pairs: dict[str, dict[str, Any]] = {}
    for name, arr in read_safetensors(source / WEIGHTS).items():
        m = _NAME.match(name)
        target = _gguf_name(m.group(1)) if m else None
        if m is None or target is None or arr.ndim != 2:
            raise _refuse(source, f"tensor {name} is not LoRA of an attention or MLP "
                          "projection or lm_head")
        pairs.setdefault(target, {})[m.group(2)] = arr
    if not pairs:
        raise _refuse(source, f"{WEIGHTS} holds no LoRA tensors")
    n_head = base.get("num_attention_heads")
    n_head_kv = base.get("num_key_value_heads") or n_head
    alpha = float(config.get("lora_alpha", config.get("r", 8)))
    if config.get("use_rslora"):
        alpha *= math.sqrt(float(config.get("r", 8)))
    out.parent.mkdir(parents=True, exist_ok=True)
    writer = gguf.GGUFWriter(out, arch)
    writer.add_type(gguf.GGUFType.ADAPTER)
    writer.add_name(source.name)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, alpha)
    for target in sorted(pairs):
        a, b = pairs[target].get("A"), pairs[target].get("B")
        if a is None or b is None or a.shape[0] != b.shape[1]:
            raise _refuse(source, f"{target}: lora_A and lora_B do not pair up")
        if target.endswith((".attn_q.weight", ".attn_k.weight")):
            heads = n_head if target.endswith("attn_q.weight") else n_head_kv
            if not isinstance(heads, int) or heads < 1 or b.shape[0] % (2 * heads):
                raise _refuse(source, "q_proj/k_proj LoRA needs the base's head count, "
                              "which llama.cpp's row order depends on",
                              f"put the base model's config.json next to {CONFIG}")
            b = _permute(b, heads)
        writer.add_tensor(f"{target}.lora_a", a)
        writer.add_tensor(f"{target}.lora_b", b)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return arch
