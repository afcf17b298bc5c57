"""A fast, dependency-free reader of a GGUF file's header.

The runner reads every model and adapter before handing it to llama.cpp: to refuse
a truncated or damaged file with a clear message (llama.cpp only says "failed to
load"), to compare an adapter's architecture with its model's, and to size
``n_gpu_layers`` from the bytes of each layer. ``gguf.GGUFReader`` does all that
too, but imports numpy and maps every tensor; reading the header with ``struct``
costs well under a millisecond for a small file, which keeps ``sxpm run`` within a
few percent of a plain llama-cpp-python script.
"""

from __future__ import annotations

import mmap
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sxpm.errors import ModelFileError

MAGIC = b"GGUF"
DEFAULT_ALIGNMENT = 32
# Sanity bounds: a hostile header must not make the reader allocate without limit.
MAX_COUNT = 1 << 24
MAX_STRING = 1 << 26

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
_LAYER = re.compile(r"^blk\.(\d+)\.")


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
    def block_count(self) -> int | None:
        value = self.metadata.get(f"{self.architecture}.block_count")
        return value if isinstance(value, int) else None

    def meta_int(self, key: str) -> int | None:
        value = self.metadata.get(f"{self.architecture}.{key}")
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    @property
    def tensor_bytes(self) -> int:
        return sum(t.n_bytes or 0 for t in self.tensors)

    def layer_bytes(self) -> tuple[list[int], int]:
        """Bytes of each repeating block (``blk.N.*``) and of everything else."""
        n = self.block_count or 1 + max((t.layer or 0 for t in self.tensors), default=-1)
        per = [0] * max(n, 0)
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

    def count(self, what: str) -> int:
        value = int(self.unpack("<Q"))
        if value > MAX_COUNT:
            raise ModelFileError(self.path, f"implausible {what} ({value})")
        return value

    def string(self) -> str:
        n = int(self.unpack("<Q"))
        if n > MAX_STRING:
            raise ModelFileError(self.path, f"implausible string length {n}")
        self.need(n)
        raw = bytes(self.buf[self.pos:self.pos + n])
        self.pos += n
        return raw.decode("utf-8", "replace")

    def skip_string(self) -> None:
        n = int(self.unpack("<Q"))
        self.need(n)
        self.pos += n

    def value(self, type_id: int) -> Any:
        fmt = _SCALARS.get(type_id)
        if fmt is not None:
            return self.unpack(fmt)
        if type_id == _STRING:
            return self.string()
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
    n_tensors = cur.count("tensor count")
    n_kv = cur.count("metadata count")
    metadata: dict[str, Any] = {}
    arrays: dict[str, int] = {}
    for _ in range(n_kv):
        key = cur.string()
        type_id = int(cur.unpack("<I"))
        if type_id == _ARRAY:
            item_type = int(cur.unpack("<I"))
            n = cur.count(f"length of {key}")
            arrays[key] = n
            if item_type == _STRING:
                for _ in range(n):
                    cur.skip_string()
            elif item_type in _SCALARS:
                width = struct.calcsize(_SCALARS[item_type]) * n
                cur.need(width)
                cur.pos += width
            else:
                raise ModelFileError(path, f"unsupported array type {item_type} in {key}")
            continue
        metadata[key] = cur.value(type_id)
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
