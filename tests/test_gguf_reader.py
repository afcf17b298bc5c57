"""sxpm's one GGUF reader (``sxpm.core.gguf``): what pack records from a file, and
hostile headers, built by hand, that must be refused in bounded time and memory."""

from __future__ import annotations

import struct
import time
import tracemalloc
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(120)

MiB = 1024 * 1024


def _s(text: str | bytes) -> bytes:
    raw = text.encode() if isinstance(text, str) else text
    return struct.pack("<Q", len(raw)) + raw


def _kv_str(key: str, value: str) -> bytes:
    return _s(key) + struct.pack("<I", 8) + _s(value)


def _kv_u32(key: str, value: int) -> bytes:
    return _s(key) + struct.pack("<I", 4) + struct.pack("<I", value)


def _kv_u64(key: str, value: int) -> bytes:
    return _s(key) + struct.pack("<I", 10) + struct.pack("<Q", value)


def _gguf(path: Path, kvs: list[bytes], tensors: list[bytes] = (), *,  # type: ignore[assignment]
          n_kv: int | None = None, n_tensors: int | None = None, tail: bytes = b"") -> Path:
    head = b"GGUF" + struct.pack("<I", 3)
    head += struct.pack("<Q", len(tensors) if n_tensors is None else n_tensors)
    head += struct.pack("<Q", len(kvs) if n_kv is None else n_kv)
    path.write_bytes(head + b"".join(kvs) + b"".join(tensors) + tail)
    return path


BASE = [_kv_str("general.architecture", "llama")]


def _measure(fn):  # noqa: ANN001, ANN202
    tracemalloc.start()
    start = time.perf_counter()
    try:
        fn()
    finally:
        elapsed = time.perf_counter() - start
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return elapsed, peak


HOSTILE = {
    "block_count 2^27": (lambda: BASE + [_kv_u32("llama.block_count", 1 << 27)], {},
                         "block count"),
    "block_count 2^33": (lambda: BASE + [_kv_u64("llama.block_count", 1 << 33)], {},
                         "block count"),
    "tensor count 2^40": (lambda: BASE, {"n_tensors": 1 << 40}, "tensor count"),
    "metadata count 2^60": (lambda: BASE, {"n_kv": 1 << 60}, "metadata count"),
    "metadata count the file cannot hold": (lambda: BASE, {"n_kv": 60_000}, "metadata count"),
    "string array of 2^40 entries": (
        lambda: BASE + [_s("tokenizer.ggml.tokens") + struct.pack("<IIQ", 9, 8, 1 << 40)],
        {}, "length of tokenizer.ggml.tokens"),
    "float array of 2^28 entries in a small file": (
        lambda: BASE + [_s("tokenizer.ggml.scores") + struct.pack("<IIQ", 9, 6, 1 << 28)],
        {}, "length of tokenizer.ggml.scores"),
    "key of 2^40 bytes": (lambda: BASE + [struct.pack("<Q", 1 << 40) + b"k" * 64], {},
                          "string length"),
    "string value of 2^62 bytes": (
        lambda: BASE + [_s("general.name") + struct.pack("<IQ", 8, 1 << 62)], {}, "truncated"),
    "string in an array of 2^62 bytes": (
        lambda: BASE + [_s("tokenizer.ggml.tokens") + struct.pack("<IIQQ", 9, 8, 1, 1 << 62)],
        {}, "truncated"),
    "tensor of 2^62 elements": (
        lambda: BASE, {"tensors": [_s("blk.0.w") + struct.pack("<IQQIQ", 2, 1 << 31, 1 << 31,
                                                                0, 0)]}, "truncated"),
    "tensor named blk.<5000 digits>": (
        lambda: BASE, {"tensors": [_s("blk." + "9" * 5000 + ".w") + struct.pack("<IQIQ", 1, 1,
                                                                                 0, 0)],
                       "tail": bytes(64)}, None),
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_headers_are_bounded(case: str, tmp_path: Path) -> None:
    from sxpm.core.gguf import read_header
    from sxpm.errors import ModelFileError

    kvs, kw, expected = HOSTILE[case]
    path = _gguf(tmp_path / "evil.gguf", kvs(), kw.pop("tensors", []), **kw)
    outcome: list[object] = []

    def read() -> None:
        try:
            header = read_header(path)
            outcome.append(header.layer_bytes())
        except ModelFileError as exc:
            outcome.append(exc)

    elapsed, peak = _measure(read)
    if expected is None:
        assert not isinstance(outcome[0], Exception)
    else:
        assert isinstance(outcome[0], ModelFileError), outcome
        assert expected in str(outcome[0]), outcome[0]
    assert elapsed < 2 and peak < 4 * MiB, (elapsed, peak)


def test_huge_vocabulary_is_skipped_fast(tmp_path: Path) -> None:
    """1M empty token strings (8 MB): the gguf package took 18 s and 1.6 GB on such a
    file; sxpm's reader skips the array without an object per entry."""
    from sxpm.core.gguf import read_header

    n = 1 << 20
    kv = _s("tokenizer.ggml.tokens") + struct.pack("<IIQ", 9, 8, n) + bytes(8 * n)
    path = _gguf(tmp_path / "vocab.gguf", [*BASE, kv])
    start = time.perf_counter()  # timed without tracemalloc, which slows the loop 10x
    assert read_header(path).arrays["tokenizer.ggml.tokens"] == n
    elapsed = time.perf_counter() - start
    peak = _measure(lambda: read_header(path))[1]
    assert elapsed < 3 and peak < 4 * MiB, (elapsed, peak)


def test_pack_refuses_a_hostile_gguf_in_one_line(cli, tmp_path: Path) -> None:  # noqa: ANN001
    path = _gguf(tmp_path / "evil.gguf", [*BASE, _kv_u64("llama.block_count", 1 << 33)])
    r = cli("pack", "model", str(path), "--ref", f"oci:{tmp_path}/reg/evil:1.0.0", ok=False)
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip().count("\n") <= 1 and "block count" in r.stderr, r.stderr


@pytest.mark.parametrize("dtype", ["F32", "F16", "Q8_0"])
@pytest.mark.parametrize("file_type", [True, False])
def test_reader_agrees_with_the_gguf_package(dtype: str, file_type: bool, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """What pack records (architecture, type, quantization, parameters, tensor bytes,
    blocks, name) equals what gguf-py reads from the same file, written by gguf-py."""
    gguf = pytest.importorskip("gguf")
    import tiny_gguf

    from sxpm.core.gguf import read_gguf

    if not file_type:  # older writers leave general.file_type out
        monkeypatch.setattr(gguf.GGUFWriter, "add_file_type", lambda self, ft: None)
    path = tiny_gguf.make_model(tmp_path / "m.gguf", dtype=dtype)  # type: ignore[arg-type]
    ours = read_gguf(path)
    reader = gguf.GGUFReader(str(path))
    assert ours.architecture == "llama"
    assert ours.general_type == "model"
    assert ours.name == "tiny-llama"
    assert ours.param_count == sum(int(t.n_elements) for t in reader.tensors)
    assert ours.tensor_bytes == sum(int(t.n_bytes) for t in reader.tensors)
    assert ours.block_count == 2
    ft = reader.get_field("general.file_type")
    if ft is not None:
        want = gguf.LlamaFileType(int(ft.contents())).name
        assert ours.file_type == want.removeprefix("MOSTLY_").removeprefix("ALL_")
    else:
        names = [t.tensor_type.name for t in reader.tensors]
        assert ours.file_type == max(set(names), key=names.count)


def test_file_type_tables_match_the_gguf_package() -> None:
    """Where gguf-py knows a type, it gives it the same name and size (a newer gguf-py
    may know more; an older one fewer)."""
    gguf = pytest.importorskip("gguf")
    from sxpm.core.gguf import GGML_TYPE_NAMES, GGML_TYPE_SIZES, LLAMA_FILE_TYPES

    theirs = [{int(t): t.name for t in gguf.GGMLQuantizationType},
              {int(k): v for k, v in gguf.GGML_QUANT_SIZES.items()},
              {int(t): t.name.removeprefix("MOSTLY_").removeprefix("ALL_")
               for t in gguf.LlamaFileType}]
    for ours, table in zip([GGML_TYPE_NAMES, GGML_TYPE_SIZES, LLAMA_FILE_TYPES], theirs,
                           strict=True):
        shared = set(ours) & set(table)
        assert len(shared) >= 30
        assert {k: ours[k] for k in shared} == {k: table[k] for k in shared}
