"""sxpm's one GGUF reader: a fast, bounded, dependency-free reader of a file's header.

``pack`` reads what a GGUF file says about itself (architecture, type, quantization,
parameter count, tensor bytes), so users never have to type it; the runner reads
every model and adapter before handing it to llama.cpp, to refuse a truncated or
damaged file with a clear message (llama.cpp only says "failed to load"), to compare
an adapter's architecture with its model's, and to size ``n_gpu_layers``.

The files are untrusted (``pack`` takes downloads, the runner installed artifacts), so
every count and length is bounded before anything is allocated for it, and arrays
(the tokenizer's vocabulary: 262,144 strings in current models) are skipped without
a Python object per entry. ``gguf.GGUFReader`` builds numpy views of every field and
tensor: 18 s and 1.6 GB on a hostile 8 MB file. This reader needs ``struct`` and
``mmap`` only and touches nothing but the header's pages.
"""

from __future__ import annotations

import mmap
import re
import struct
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from sxpm.errors import ArtifactInputError, ModelFileError

MAGIC = b"GGUF"
DEFAULT_ALIGNMENT = 32
# Bounds, checked before allocating: a hostile header must not size the reader's memory.
# Real files have a few dozen keys, a few thousand tensors and under 200 blocks.
MAX_KV = 1 << 16
MAX_TENSORS = 1 << 18
MAX_ARRAY = 1 << 24  # entries of one (skipped) array
MAX_KEY = 1 << 16  # bytes of a key or a tensor name
MAX_VALUE = 1 << 20  # bytes of one string value kept (a chat template is ~10 KB)
MAX_KEPT = 16 << 20  # bytes of all string values kept
MAX_BLOCKS = 1 << 16

# ggml type id -> (elements per block, bytes per block), as in ggml.h / gguf-py.
GGML_TYPE_SIZES: dict[int, tuple[int, int]] = {
    0: (1, 4), 1: (1, 2), 2: (32, 18), 3: (32, 20), 6: (32, 22), 7: (32, 24),
    8: (32, 34), 9: (32, 40), 10: (256, 84), 11: (256, 110), 12: (256, 144),
    13: (256, 176), 14: (256, 210), 15: (256, 292), 16: (256, 66), 17: (256, 74),
    18: (256, 98), 19: (256, 50), 20: (32, 18), 21: (256, 110), 22: (256, 82),
    23: (256, 136), 24: (1, 1), 25: (1, 2), 26: (1, 4), 27: (1, 8), 28: (1, 8),
    29: (256, 56), 30: (1, 2), 34: (256, 54), 35: (256, 66), 39: (32, 17),
    40: (64, 36), 41: (128, 18),
}

# GGUF metadata value types -> struct format (scalars only).
_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?",
            10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9
_U64 = struct.Struct("<Q")
_LAYER = re.compile(r"^blk\.(\d{1,9})\.")  # int() of a longer run is costly

# ggml tensor type id -> name (gguf-py's GGMLQuantizationType).
GGML_TYPE_NAMES: dict[int, str] = {
    0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 6: "Q5_0", 7: "Q5_1", 8: "Q8_0", 9: "Q8_1",
    10: "Q2_K", 11: "Q3_K", 12: "Q4_K", 13: "Q5_K", 14: "Q6_K", 15: "Q8_K", 16: "IQ2_XXS",
    17: "IQ2_XS", 18: "IQ3_XXS", 19: "IQ1_S", 20: "IQ4_NL", 21: "IQ3_S", 22: "IQ2_S",
    23: "IQ4_XS", 24: "I8", 25: "I16", 26: "I32", 27: "I64", 28: "F64", 29: "IQ1_M",
    30: "BF16", 34: "TQ1_0", 35: "TQ2_0", 39: "MXFP4", 40: "NVFP4", 41: "Q1_0",
}
# ``general.file_type`` -> name (gguf-py's LlamaFileType, less MOSTLY_/ALL_).
LLAMA_FILE_TYPES: dict[int, str] = {
    0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1", 10: "Q2_K",
    11: "Q3_K_S", 12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S", 15: "Q4_K_M", 16: "Q5_K_S",
    17: "Q5_K_M", 18: "Q6_K", 19: "IQ2_XXS", 20: "IQ2_XS", 21: "Q2_K_S", 22: "IQ3_XS",
    23: "IQ3_XXS", 24: "IQ1_S", 25: "IQ4_NL", 26: "IQ3_S", 27: "IQ3_M", 28: "IQ2_S",
    29: "IQ2_M", 30: "IQ4_XS", 31: "IQ1_M", 32: "BF16", 36: "TQ1_0", 37: "TQ2_0",
    38: "MXFP4_MOE", 39: "NVFP4", 40: "Q1_0", 1024: "GUESSED",
}


def is_gguf(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            return fh.read(4) == MAGIC
    except OSError:
        return False


@dataclass(frozen=True)
class TensorEntry:
    name: str
    type_id: int
    n_elements: int
    offset: int  # from the start of the data section
    n_bytes: int | None  # None for a type this reader does not know

    @property
    def layer(self) -> int | None:
        match = _LAYER.match(self.name)
        return int(match.group(1)) if match else None


@dataclass(frozen=True)
class GGUFHeader:
    path: Path
    version: int
    metadata: dict[str, Any]
    tensors: tuple[TensorEntry, ...]
    data_offset: int
    file_size: int
    arrays: dict[str, int] = field(default_factory=dict)  # array key -> length

    @property
    def architecture(self) -> str | None:
        arch = self.metadata.get("general.architecture")
        return arch if isinstance(arch, str) else None

    @property
    def general_type(self) -> str:
        return str(self.metadata.get("general.type") or "model")

    @property
    def name(self) -> str | None:
        value = self.metadata.get("general.name")
        return value if isinstance(value, str) else None

    @property
    def license(self) -> str | None:
        value = self.metadata.get("general.license")
        return value if isinstance(value, str) else None

    @property
    def block_count(self) -> int | None:
        value = self.metadata.get(f"{self.architecture}.block_count")
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    @cached_property
    def param_count(self) -> int:
        return sum(t.n_elements for t in self.tensors)

    @property
    def param_size(self) -> str:
        """Human form of the parameter count, as model cards write it (``1.2B``)."""
        n = float(self.param_count)
        for unit, scale in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
            if n >= scale:
                return f"{n / scale:.3g}{unit}"
        return str(self.param_count)

    @cached_property
    def file_type(self) -> str | None:
        """The quantization (``Q4_K_M``, ``F16``): ``general.file_type``, else the most
        common tensor type (older writers leave the key out)."""
        ft = self.metadata.get("general.file_type")
        if isinstance(ft, int) and not isinstance(ft, bool):
            return LLAMA_FILE_TYPES.get(ft, f"type{ft}")
        counts: dict[str, int] = {}
        for t in self.tensors:
            name = GGML_TYPE_NAMES.get(t.type_id, f"type{t.type_id}")
            counts[name] = counts.get(name, 0) + 1
        return max(counts, key=lambda k: counts[k]) if counts else None

    @property
    def precision(self) -> str | None:
        return self.file_type if self.file_type in ("F32", "F16", "BF16") else None

    def meta_int(self, key: str) -> int | None:
        value = self.metadata.get(f"{self.architecture}.{key}")
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    @property
    def tensor_bytes(self) -> int:
        return sum(t.n_bytes or 0 for t in self.tensors)

    def layer_bytes(self) -> tuple[list[int], int]:
        """Bytes of each repeating block (``blk.N.*``) and of everything else."""
        n = self.block_count or 1 + max((t.layer or 0 for t in self.tensors), default=-1)
        per = [0] * min(max(n, 0), MAX_BLOCKS)  # the reader refuses more; belt and braces
        other = 0
        for t in self.tensors:
            size = t.n_bytes or 0
            if t.layer is not None and t.layer < len(per):
                per[t.layer] += size
            else:
                other += size
        return per, other


class _Cursor:
    def __init__(self, buf: mmap.mmap | bytes, path: Path) -> None:
        self.buf = buf
        self.pos = 0
        self.path = path
        self.kept = 0  # bytes of string values kept so far

    def need(self, n: int) -> None:
        if self.pos + n > len(self.buf):
            raise ModelFileError(self.path, f"truncated header (needs {self.pos + n} bytes, "
                                 f"the file has {len(self.buf)})")

    def unpack(self, fmt: str) -> Any:
        size = struct.calcsize(fmt)
        self.need(size)
        value = struct.unpack_from(fmt, self.buf, self.pos)[0]
        self.pos += size
        return value

    def count(self, what: str, limit: int, min_bytes: int) -> int:
        """A count of items that take at least ``min_bytes`` each: refused when over
        ``limit`` or when the rest of the file cannot hold them."""
        value = int(self.unpack("<Q"))
        if value > limit or value * min_bytes > len(self.buf) - self.pos:
            raise ModelFileError(self.path, f"implausible {what} ({value})")
        return value

    def string(self, limit: int = MAX_KEY) -> str:
        n = int(self.unpack("<Q"))
        if n > limit:
            raise ModelFileError(self.path, f"implausible string length {n}")
        self.need(n)
        raw = bytes(self.buf[self.pos:self.pos + n])
        self.pos += n
        return raw.decode("utf-8", "replace")

    def skip_strings(self, count: int) -> None:
        """Skip ``count`` strings: one length read each, no object kept."""
        buf, pos, end = self.buf, self.pos, len(self.buf)
        unpack = _U64.unpack_from
        for _ in range(count):
            if pos + 8 > end:
                break
            pos += 8 + unpack(buf, pos)[0]
        self.pos = pos
        self.need(0)  # past the end: truncated

    def value(self, type_id: int) -> Any:
        fmt = _SCALARS.get(type_id)
        if fmt is not None:
            return self.unpack(fmt)
        if type_id == _STRING:
            n = int(self.unpack("<Q"))
            self.pos -= 8
            if n > MAX_VALUE or self.kept + n > MAX_KEPT:  # not needed: skip, keep nothing
                self.skip_strings(1)
                return None
            self.kept += n
            return self.string(MAX_VALUE)
        raise ModelFileError(self.path, f"unknown metadata value type {type_id}")


def read_header(path: Path) -> GGUFHeader:
    """Parse ``path``'s header and check that its tensor data is all there."""
    path = Path(path)
    try:
        fh = open(path, "rb")
    except FileNotFoundError:
        raise ModelFileError(path, "file not found", hint="reinstall the artifact") from None
    with fh:
        size = path.stat().st_size
        if size < 24 or fh.read(4) != MAGIC:
            raise ModelFileError(path, "not a GGUF file (bad magic bytes)")
        fh.seek(0)
        with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            return _parse(_Cursor(buf, path), path, size)


def _parse(cur: _Cursor, path: Path, size: int) -> GGUFHeader:
    cur.pos = 4
    version = int(cur.unpack("<I"))
    if version not in (2, 3):
        raise ModelFileError(path, f"unsupported GGUF version {version}",
                             hint="sxpm and llama.cpp read GGUF versions 2 and 3")
    # Minimal sizes: a tensor info is a name length, dims, type and offset (24 bytes);
    # a key-value pair a key length, a type and a one-byte value (13 bytes).
    n_tensors = cur.count("tensor count", MAX_TENSORS, 24)
    n_kv = cur.count("metadata count", MAX_KV, 13)
    metadata: dict[str, Any] = {}
    arrays: dict[str, int] = {}
    for _ in range(n_kv):
        key = cur.string()
        type_id = int(cur.unpack("<I"))
        if type_id == _ARRAY:
            item_type = int(cur.unpack("<I"))
            width = 8 if item_type == _STRING else struct.calcsize(_SCALARS.get(item_type, "B"))
            n = cur.count(f"length of {key}", MAX_ARRAY, width)
            arrays[key] = n
            if item_type == _STRING:
                cur.skip_strings(n)
            elif item_type in _SCALARS:
                width = struct.calcsize(_SCALARS[item_type]) * n
                cur.need(width)
                cur.pos += width
            else:
                raise ModelFileError(path, f"unsupported array type {item_type} in {key}")
            continue
        value = cur.value(type_id)
        if value is not None:
            metadata[key] = value
    blocks = metadata.get(f"{metadata.get('general.architecture')}.block_count")
    if isinstance(blocks, int) and not 0 <= blocks <= MAX_BLOCKS:
        raise ModelFileError(path, f"implausible block count ({blocks})")
    tensors: list[TensorEntry] = []
    for _ in range(n_tensors):
        name = cur.string()
        n_dims = int(cur.unpack("<I"))
        if n_dims > 8:
            raise ModelFileError(path, f"tensor {name!r} has {n_dims} dimensions")
        n_elements = 1
        for _ in range(n_dims):
            n_elements *= int(cur.unpack("<Q"))
        type_id = int(cur.unpack("<I"))
        offset = int(cur.unpack("<Q"))
        block = GGML_TYPE_SIZES.get(type_id)
        n_bytes = None if block is None else n_elements // block[0] * block[1]
        tensors.append(TensorEntry(name, type_id, n_elements, offset, n_bytes))
    alignment = metadata.get("general.alignment", DEFAULT_ALIGNMENT)
    if not isinstance(alignment, int) or alignment <= 0:
        alignment = DEFAULT_ALIGNMENT
    data_offset = -(-cur.pos // alignment) * alignment
    end = max((data_offset + t.offset + (t.n_bytes or 0) for t in tensors), default=cur.pos)
    if end > size:
        raise ModelFileError(path, f"truncated: its tensors end at byte {end}, the file has "
                             f"{size} bytes")
    return GGUFHeader(path, version, metadata, tuple(tensors), data_offset, size, arrays)


def read_gguf(path: Path) -> GGUFHeader:
    """The header of a GGUF file given to ``pack``; a one-line input error otherwise."""
    path = Path(path)
    if not is_gguf(path):
        raise ArtifactInputError(f"{path} is not a GGUF file (bad magic bytes)",
                                 hint="give a .gguf file written by llama.cpp or gguf-py")
    try:
        header = read_header(path)
    except ModelFileError as exc:
        raise ArtifactInputError(f"{path} is not a readable GGUF file ({exc.reason})",
                                 hint="the file is corrupt or truncated; download it again"
                                 ) from None
    if not header.architecture:
        raise ArtifactInputError(f"{path} has no general.architecture",
                                 hint="write the file with a current llama.cpp or gguf-py")
    return header
