"""Tests for fixtures/tiny_gguf.py: the tiny GGUF model/LoRA generator.

The GGUF-level checks only need the ``gguf`` package; the inference checks run
when llama-cpp-python is installed and are skipped otherwise.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import gguf
import pytest

# Import the fixture module by file location, not cwd, so pytest can be run
# from anywhere.
FIXTURES_DIR = Path(__file__).resolve().parent.parent / "fixtures"
sys.path.insert(0, str(FIXTURES_DIR))
import tiny_gguf  # noqa: E402

N_TOKENS = 8
PROMPT = "Hello"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def field(reader: gguf.GGUFReader, key: str) -> object:
    f = reader.get_field(key)
    assert f is not None, f"missing GGUF key {key}"
    return f.contents()


@pytest.fixture(scope="module")
def fixture_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("tiny")
    assert tiny_gguf.main([str(out)]) == 0
    return out


# --------------------------------------------------------------------------
# GGUF-level checks
# --------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["F32", "F16", "Q8_0"])
def test_model_is_deterministic(tmp_path: Path, dtype: tiny_gguf.Dtype) -> None:
    a = tiny_gguf.make_model(tmp_path / "a" / "model.gguf", dtype=dtype)
    b = tiny_gguf.make_model(tmp_path / "b" / "model.gguf", dtype=dtype)
    assert sha256(a) == sha256(b)


def test_seed_changes_bytes(tmp_path: Path) -> None:
    a = tiny_gguf.make_model(tmp_path / "a.gguf", seed=0)
    b = tiny_gguf.make_model(tmp_path / "b.gguf", seed=1)
    assert sha256(a) != sha256(b)


def test_lora_is_deterministic(tmp_path: Path) -> None:
    model = tiny_gguf.make_model(tmp_path / "model.gguf")
    a = tiny_gguf.make_lora(tmp_path / "a.gguf", model)
    b = tiny_gguf.make_lora(tmp_path / "b.gguf", tiny_gguf.TinyLlamaParams())
    assert sha256(a) == sha256(b)


def test_cli_writes_layout(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, str(FIXTURES_DIR / "tiny_gguf.py"), str(tmp_path)],
        check=True,
        capture_output=True,
    )
    for rel in ("tiny-llama/model.gguf", "tiny-llama-f16/model.gguf", "tiny-lora.gguf"):
        f = tmp_path / rel
        assert f.is_file() and 10_000 < f.stat().st_size < 2_000_000, rel


@pytest.mark.parametrize(
    ("dtype", "file_type", "weight_type"),
    [
        ("F32", gguf.LlamaFileType.ALL_F32, gguf.GGMLQuantizationType.F32),
        ("F16", gguf.LlamaFileType.MOSTLY_F16, gguf.GGMLQuantizationType.F16),
        ("Q8_0", gguf.LlamaFileType.MOSTLY_Q8_0, gguf.GGMLQuantizationType.Q8_0),
    ],
)
def test_model_metadata(
    tmp_path: Path,
    dtype: tiny_gguf.Dtype,
    file_type: gguf.LlamaFileType,
    weight_type: gguf.GGMLQuantizationType,
) -> None:
    path = tiny_gguf.make_model(tmp_path / "model.gguf", dtype=dtype, name="unit")
    r = gguf.GGUFReader(path)
    assert field(r, "general.architecture") == "llama"
    assert field(r, "general.name") == "unit"
    assert field(r, "general.file_type") == int(file_type)
    assert field(r, "llama.block_count") == 2
    assert field(r, "llama.embedding_length") == 64
    assert int(field(r, "llama.context_length")) >= 64  # type: ignore[call-overload]
    assert field(r, "llama.attention.head_count") == 4
    assert field(r, "llama.attention.head_count_kv") == 2
    assert field(r, "tokenizer.ggml.model") == "llama"
    tokens = field(r, "tokenizer.ggml.tokens")
    assert (
        isinstance(tokens, list) and "<0x41>" in tokens and len(tokens) == len(tiny_gguf.VOCAB[0])
    )

    tensors = {t.name: t for t in r.tensors}
    assert tensors["blk.0.attn_q.weight"].tensor_type == weight_type
    assert tensors["blk.1.ffn_down.weight"].tensor_type == weight_type
    assert tensors["blk.0.attn_norm.weight"].tensor_type == gguf.GGMLQuantizationType.F32
    assert "blk.2.attn_q.weight" not in tensors
    # GGML ne order: [n_in, n_out]
    assert list(tensors["blk.0.attn_k.weight"].shape) == [64, 32]
    assert list(tensors["output.weight"].shape) == [64, len(tokens)]


def test_f16_is_same_model_as_f32(tmp_path: Path) -> None:
    r32 = gguf.GGUFReader(tiny_gguf.make_model(tmp_path / "a.gguf", dtype="F32"))
    r16 = gguf.GGUFReader(tiny_gguf.make_model(tmp_path / "b.gguf", dtype="F16"))
    t32 = {t.name: t.data for t in r32.tensors}
    t16 = {t.name: t.data for t in r16.tensors}
    assert t32.keys() == t16.keys()
    for name, arr in t32.items():
        assert abs(arr.astype("float32") - t16[name].astype("float32")).max() < 1e-2, name


def test_lora_metadata(fixture_dir: Path) -> None:
    r = gguf.GGUFReader(fixture_dir / "tiny-lora.gguf")
    assert field(r, "general.architecture") == "llama"
    assert field(r, "general.type") == "adapter"
    assert field(r, "adapter.type") == "lora"
    assert field(r, "adapter.lora.alpha") == pytest.approx(8.0)
    tensors = {t.name: t for t in r.tensors}
    a, b = tensors["blk.0.attn_q.weight.lora_a"], tensors["blk.0.attn_q.weight.lora_b"]
    # llama.cpp requires a.ne = [n_in, rank], b.ne = [rank, n_out].
    assert list(a.shape) == [64, 4]
    assert list(b.shape) == [4, 64]
    assert list(tensors["blk.1.attn_v.weight.lora_b"].shape) == [4, 32]
    assert all(n.endswith((".lora_a", ".lora_b")) for n in tensors)


def test_rejects_bad_args(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        tiny_gguf.make_model(tmp_path / "x.gguf", dtype="Q4_0")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        tiny_gguf.make_model(tmp_path / "x.gguf", n_embd=48)


# --------------------------------------------------------------------------
# Inference through llama.cpp
# --------------------------------------------------------------------------


def greedy(model: Path, lora: Path | None = None) -> str:
    llama_cpp = pytest.importorskip("llama_cpp")
    kwargs = {"lora_path": str(lora)} if lora is not None else {}
    llm = llama_cpp.Llama(
        model_path=str(model), n_ctx=64, seed=0, verbose=False, n_threads=2, **kwargs
    )
    try:
        out = llm.create_completion(PROMPT, max_tokens=N_TOKENS, temperature=0.0)
        assert isinstance(out, dict)  # not a stream: stream=False
        return str(out["choices"][0]["text"])
    finally:
        llm.close()


@pytest.mark.parametrize("variant", ["tiny-llama", "tiny-llama-f16"])
def test_llama_cpp_greedy_is_deterministic(fixture_dir: Path, variant: str) -> None:
    model = fixture_dir / variant / "model.gguf"
    first = greedy(model)
    assert first.strip(), "greedy generation produced no text"
    assert greedy(model) == first


def test_llama_cpp_q8_0_loads(tmp_path: Path) -> None:
    model = tiny_gguf.make_model(tmp_path / "model.gguf", dtype="Q8_0")
    assert greedy(model).strip()


def test_llama_cpp_lora_changes_output(fixture_dir: Path) -> None:
    model = fixture_dir / "tiny-llama" / "model.gguf"
    base = greedy(model)
    adapted = greedy(model, fixture_dir / "tiny-lora.gguf")
    assert adapted.strip()
    assert adapted != base
    # Applying the same adapter is itself deterministic.
    assert greedy(model, fixture_dir / "tiny-lora.gguf") == adapted
