"""What a GGUF file says about itself, read with the ``gguf`` package.

Architecture, quantization and parameter count come from the file's own metadata,
so users never have to type them (and cannot get them wrong). ``gguf`` imports
numpy, so this module is imported only by the commands that read GGUF files.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sxpm.errors import ArtifactInputError, MissingExtraError

GGUF_MAGIC = b"GGUF"


def is_gguf(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            return fh.read(4) == GGUF_MAGIC
    except OSError:
        return False


@dataclass(frozen=True)
class GGUFInfo:
    path: Path
    architecture: str
    general_type: str  # "model" or "adapter"
    file_type: str | None  # e.g. "Q4_K_M", "F16", "F32"
    param_count: int
    tensor_bytes: int
    block_count: int | None
    name: str | None = None
    license: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def param_size(self) -> str:
        """Human form of the parameter count, as model cards write it (``1.2B``)."""
        n = float(self.param_count)
        for unit, scale in (("T", 1e12), ("B", 1e9), ("M", 1e6), ("K", 1e3)):
            if n >= scale:
                return f"{n / scale:.3g}{unit}"
        return str(self.param_count)

    @property
    def precision(self) -> str | None:
        if self.file_type in ("F32", "F16", "BF16"):
            return self.file_type
        return None


def _scalar(field_: Any) -> Any:
    """The Python value of a GGUFReader field (strings decoded, arrays skipped)."""
    import gguf

    types = field_.types
    if not types:
        return None
    if types[0] == gguf.GGUFValueType.STRING:
        return bytes(field_.parts[field_.data[0]]).decode("utf-8", "replace")
    if types[0] == gguf.GGUFValueType.ARRAY:
        return None
    value = field_.parts[field_.data[0]]
    return value.tolist()[0] if hasattr(value, "tolist") else value


def read_gguf(path: Path) -> GGUFInfo:
    """Read a GGUF file's metadata; a clear error for anything that is not one."""
    if not is_gguf(path):
        raise ArtifactInputError(f"{path} is not a GGUF file (bad magic bytes)",
                                 hint="give a .gguf file written by llama.cpp or gguf-py")
    try:
        import gguf
    except ImportError as exc:
        raise MissingExtraError("gguf", "gguf") from exc
    try:
        reader = gguf.GGUFReader(str(path), "r")
    except Exception as exc:  # gguf raises ValueError, IndexError... on damaged files
        raise ArtifactInputError(
            f"{path} is not a readable GGUF file ({exc})",
            hint="the file is corrupt or truncated; download it again") from None
    meta: dict[str, Any] = {}
    for key, fld in reader.fields.items():
        if key.startswith("GGUF.") or key.startswith("tokenizer.ggml."):
            continue
        try:
            meta[key] = _scalar(fld)
        except Exception:  # noqa: BLE001 - skip odd fields rather than refuse the file
            continue
    arch = meta.get("general.architecture")
    if not isinstance(arch, str) or not arch:
        raise ArtifactInputError(f"{path} has no general.architecture",
                                 hint="write the file with a current llama.cpp or gguf-py")
    file_type = None
    ft = meta.get("general.file_type")
    if isinstance(ft, int):
        try:
            file_type = gguf.LlamaFileType(ft).name.removeprefix("MOSTLY_").removeprefix("ALL_")
        except ValueError:
            file_type = f"type{ft}"
    params = 0
    tensor_bytes = 0
    for tensor in reader.tensors:
        params += int(tensor.n_elements)
        tensor_bytes += int(tensor.n_bytes)
    if file_type is None and reader.tensors:
        # Older writers leave general.file_type out; the most common tensor type says it.
        counts: dict[str, int] = {}
        for tensor in reader.tensors:
            counts[tensor.tensor_type.name] = counts.get(tensor.tensor_type.name, 0) + 1
        file_type = max(counts, key=lambda k: counts[k])
    block_count = meta.get(f"{arch}.block_count")
    return GGUFInfo(
        path=path,
        architecture=arch,
        general_type=str(meta.get("general.type") or "model"),
        file_type=file_type,
        param_count=params,
        tensor_bytes=tensor_bytes,
        block_count=block_count if isinstance(block_count, int) else None,
        name=meta.get("general.name") if isinstance(meta.get("general.name"), str) else None,
        license=meta.get("general.license") if isinstance(meta.get("general.license"),
                                                          str) else None,
        metadata=meta,
    )
