"""PEFT LoRA directories packed as experts: converted to GGUF, or refused in one line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tiny_gguf

gguf = pytest.importorskip("gguf")
safetensors_numpy = pytest.importorskip("safetensors.numpy")

HF_MODULES = {"attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj",
              "attn_v": "self_attn.v_proj", "attn_output": "self_attn.o_proj",
              "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj"}


def _unpermute(b: np.ndarray, n_head: int) -> np.ndarray:
    """The HF row order of a q/k weight whose llama.cpp order is ``b``."""
    return (b.reshape(n_head, b.shape[0] // n_head // 2, 2, *b.shape[1:])
            .swapaxes(1, 2).reshape(b.shape))


def _save_bf16(tensors: dict[str, np.ndarray], path: Path) -> None:
    """A safetensors file in BF16 (the top half of each float32), as torch writes it."""
    header: dict[str, object] = {}
    blobs, offset = [], 0
    for name, arr in sorted(tensors.items()):
        data = (arr.astype("<f4").view("<u4") >> 16).astype("<u2").tobytes()
        header[name] = {"dtype": "BF16", "shape": list(arr.shape),
                        "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    head = json.dumps(header).encode()
    head += b" " * (-len(head) % 8)
    path.write_bytes(len(head).to_bytes(8, "little") + head + b"".join(blobs))


def _tensors(path: Path) -> dict[str, np.ndarray]:
    reader = gguf.GGUFReader(path)
    return {t.name: np.array(t.data) for t in reader.tensors}


def write_peft(lora: Path, out: Path, params: tiny_gguf.TinyLlamaParams, *,
               config: bool = True, bf16: bool = False) -> Path:
    """The PEFT directory training code would have written for the GGUF adapter ``lora``
    (same deltas, in Hugging Face's names and row order)."""
    out.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, np.ndarray] = {}
    for name, arr in _tensors(lora).items():
        weight, part = name.rsplit(".", 1)  # blk.0.attn_q.weight, lora_a
        if weight == "output.weight":
            module = "base_model.model.lm_head"
        else:
            _, layer, kind, _ = weight.split(".")
            module = f"base_model.model.model.layers.{layer}.{HF_MODULES[kind]}"
        if part == "lora_b" and kind in ("attn_q", "attn_k") and weight != "output.weight":
            arr = _unpermute(arr, params.n_head if kind == "attn_q" else params.n_head_kv)
        key = f"{module}.lora_{part[-1].upper()}.weight"
        tensors[key] = np.ascontiguousarray(arr, dtype=np.float32)
    if bf16:  # what most training runs save; numpy has no bf16, so write it by hand
        _save_bf16(tensors, out / "adapter_model.safetensors")
    else:
        safetensors_numpy.save_file(tensors, str(out / "adapter_model.safetensors"))
    (out / "adapter_config.json").write_text(json.dumps({
        "peft_type": "LORA", "r": 4, "lora_alpha": 8, "lora_dropout": 0.0,
        "base_model_name_or_path": "acme/tiny-llama", "task_type": "CAUSAL_LM",
        "target_modules": ["q_proj", "v_proj", "down_proj", "lm_head"]}))
    if config:
        (out / "config.json").write_text(json.dumps({
            "model_type": "llama", "num_attention_heads": params.n_head,
            "num_key_value_heads": params.n_head_kv, "hidden_size": params.n_embd}))
    return out


def _expert(tmp_path: Path, name: str, lora: Path, params: tiny_gguf.TinyLlamaParams,
            **kw: bool) -> Path:
    root = tmp_path / name
    write_peft(lora, root / "adapter", params, **kw)
    (root / "manifest.json").write_text(json.dumps({
        "name": name, "version": "1.0.0", "description": "x", "license": "MIT",
        "type": "lora", "base_model": "tiny-llama", "weights": "adapter"}))
    return root


@pytest.fixture
def base(tmp_path: Path) -> tuple[Path, Path, tiny_gguf.TinyLlamaParams]:
    model = tiny_gguf.make_model(tmp_path / "tiny-llama" / "model.gguf", seed=0)
    lora = tiny_gguf.make_lora(tmp_path / "lora.gguf", model, seed=1)
    return model, lora, tiny_gguf.read_params(model)


def test_peft_directory_becomes_the_gguf_adapter_llama_cpp_would_write(
        cli, home: Path, tmp_path: Path, registry_dir: Path, base) -> None:  # noqa: ANN001
    model, lora, params = base
    src = _expert(tmp_path, "peft-expert", lora, params)
    ref = f"oci:{registry_dir}/peft-expert:1.0.0"
    cli("pack", "expert", src, "--ref", ref)
    out = cli("expert", "install", ref, "--json").json
    adapter = Path(out["path"]) / "adapter.gguf"
    reader = gguf.GGUFReader(adapter)
    fields = {k: reader.get_field(k).contents() for k in (
        "general.type", "general.architecture", "adapter.type", "adapter.lora.alpha")}
    assert fields == {"general.type": "adapter", "general.architecture": "llama",
                      "adapter.type": "lora", "adapter.lora.alpha": 8.0}
    # Tensor for tensor what make_lora wrote: names, shapes and q's row order.
    want, got = _tensors(lora), _tensors(adapter)
    assert sorted(got) == sorted(want)
    for name, arr in want.items():
        np.testing.assert_array_equal(got[name], arr, err_msg=name)
    assert not list(Path(out["path"]).rglob("*.safetensors"))  # never packed as-is


@pytest.mark.llama
def test_converted_peft_adapter_changes_the_greedy_output(
        cli, home: Path, tmp_path: Path, registry_dir: Path, base) -> None:  # noqa: ANN001
    pytest.importorskip("llama_cpp")
    model, lora, params = base
    cli("pack", "model", model.parent, "--ref", f"oci:{registry_dir}/tiny-llama:1.0.0")
    cli("model", "install", f"oci:{registry_dir}/tiny-llama:1.0.0")
    src = _expert(tmp_path, "peft-expert", lora, params, bf16=True)
    cli("pack", "expert", src, "--ref", f"oci:{registry_dir}/peft-expert:1.0.0")
    cli("expert", "install", f"oci:{registry_dir}/peft-expert:1.0.0")
    plain = cli("run", "tiny-llama", "-p", "hello", "-n", "8", "--json").json["text"]
    tuned = cli("run", "tiny-llama", "--expert", "peft-expert", "-p", "hello", "-n", "8",
                "--json").json["text"]
    assert plain and tuned and plain != tuned


def test_peft_adapters_that_cannot_convert_are_refused_in_one_line(
        cli, home: Path, tmp_path: Path, registry_dir: Path, base) -> None:  # noqa: ANN001
    _, lora, params = base
    ref = f"oci:{registry_dir}/e:1.0.0"
    # q_proj LoRA without the base's head count: llama.cpp's row order is unknown.
    src = _expert(tmp_path, "no-config", lora, params, config=False)
    (src / "manifest.json").write_text(json.dumps({
        "name": "no-config", "version": "1.0.0", "base_model": {
            "name": "tiny-llama", "architecture": "llama"}, "weights": "adapter"}))
    assert "config.json" in cli.fail("pack", "expert", src, "--ref", ref, code=2).stderr
    # Without any word on the architecture.
    src = _expert(tmp_path, "no-arch", lora, params, config=False)
    assert "architecture" in cli.fail("pack", "expert", src, "--ref", ref, code=2).stderr
    # Another architecture, DoRA, a bare safetensors file.
    src = _expert(tmp_path, "qwen", lora, params)
    (src / "adapter" / "config.json").write_text(json.dumps({"model_type": "qwen2"}))
    assert "llama-family" in cli.fail("pack", "expert", src, "--ref", ref, code=2).stderr
    src = _expert(tmp_path, "dora", lora, params)
    conf = json.loads((src / "adapter" / "adapter_config.json").read_text())
    (src / "adapter" / "adapter_config.json").write_text(json.dumps({**conf, "use_dora": True}))
    assert "DoRA" in cli.fail("pack", "expert", src, "--ref", ref, code=2).stderr
    src = _expert(tmp_path, "bare", lora, params)
    (src / "adapter" / "adapter_config.json").unlink()
    (src / "manifest.json").write_text(json.dumps({
        "name": "bare", "version": "1.0.0", "base_model": "tiny-llama",
        "weights": "adapter/adapter_model.safetensors"}))
    assert "PEFT" in cli.fail("pack", "expert", src, "--ref", ref, code=2).stderr
    assert not (home / "store" / "index.json").exists() or "e:1.0.0" not in (
        home / "store" / "index.json").read_text()
