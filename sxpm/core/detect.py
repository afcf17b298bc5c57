"""Which accelerator this machine has, and whether llama-cpp-python can use it.

Every probe is a function of what it reads, so tests can hand it a fake sysfs tree,
an environment mapping or a fake NVML module:

* NVIDIA through NVML (``nvidia-ml-py``, imported here only), honouring
  ``CUDA_VISIBLE_DEVICES`` (indices or ``GPU-`` UUID prefixes, as CUDA reads it).
* AMD through sysfs: ``class/drm/card*/device/mem_info_vram_total`` of vendor
  ``0x1002``, honouring ``HIP_VISIBLE_DEVICES`` / ``ROCR_VISIBLE_DEVICES``.
* Apple Metal on arm64 macOS (unified memory: the GPU's memory is the machine's).
* Otherwise the CPU.

Memory is reported as total and free bytes per device; the plan (:mod:`.plan`) sizes
``n_gpu_layers`` from the free memory.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

AMD_VENDOR = "0x1002"


@dataclass(frozen=True)
class Device:
    backend: str  # "cuda", "rocm" or "metal"
    index: int  # as the backend numbers the visible devices
    name: str
    total_memory: int
    free_memory: int
    uuid: str | None = None
    physical_index: int | None = None
    driver_version: str | None = None
    cuda_version: str | None = None


@dataclass(frozen=True)
class CpuInfo:
    cores: int
    total_memory: int | None
    available_memory: int | None
    machine: str
    system: str


@dataclass(frozen=True)
class LlamaBuild:
    installed: bool
    version: str | None = None
    gpu_offload: bool | None = None
    system_info: str | None = None


@dataclass
class Report:
    devices: list[Device]
    cpu: CpuInfo
    llama_cpp: LlamaBuild | None = None
    visible_devices: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def backend(self) -> str:
        return self.devices[0].backend if self.devices else "cpu"

    @property
    def can_offload(self) -> bool:
        return bool(self.devices) and bool(self.llama_cpp and self.llama_cpp.gpu_offload)

    def best_device(self) -> Device | None:
        return max(self.devices, key=lambda d: d.free_memory, default=None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "offload": self.can_offload,
            "devices": [asdict(d) for d in self.devices],
            "cpu": asdict(self.cpu),
            "llama_cpp": asdict(self.llama_cpp) if self.llama_cpp else None,
            "visible_devices": dict(self.visible_devices),
            "notes": list(self.notes),
        }


# --- visibility ------------------------------------------------------------------


def visible_filter(value: str | None) -> list[str] | None:
    """The entries of a ``*_VISIBLE_DEVICES`` value; None when it is not set.

    CUDA stops at the first entry it cannot use; ``-1`` or an empty value hide every
    device.
    """
    if value is None:
        return None
    out: list[str] = []
    for item in (part.strip() for part in value.split(",")):
        if not item or item.startswith("-"):
            break
        out.append(item)
    return out


def _select(devices: list[Device], wanted: list[str] | None) -> list[Device]:
    if wanted is None:
        return devices
    chosen: list[Device] = []
    for item in wanted:
        match: Device | None = None
        if item.isdigit():
            index = int(item)
            match = next((d for d in devices if d.physical_index == index), None)
        else:
            match = next((d for d in devices if d.uuid and d.uuid.startswith(item)), None)
        if match is None or match in chosen:
            break  # as CUDA does: the list ends at the first unusable entry
        chosen.append(match)
    return [_renumber(d, i) for i, d in enumerate(chosen)]


def _renumber(device: Device, index: int) -> Device:
    values = asdict(device)
    values["index"] = index
    return Device(**values)


# --- NVIDIA ------------------------------------------------------------------------


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def detect_nvidia(env: Mapping[str, str], nvml: Any = None,
                  notes: list[str] | None = None) -> list[Device]:
    """NVIDIA GPUs through NVML; ``nvml`` is the ``pynvml`` module (or a stand-in)."""
    notes = notes if notes is not None else []
    if nvml is None:
        try:
            import pynvml

            nvml = pynvml
        except ImportError:
            notes.append("NVIDIA: nvidia-ml-py is not installed (pip install 'sxpm[run]')")
            return []
    try:
        nvml.nvmlInit()
    except Exception as exc:  # noqa: BLE001 - NVMLError_LibraryNotFound, DriverNotLoaded...
        notes.append(f"NVIDIA: NVML is not available ({_text(exc) or type(exc).__name__})")
        return []
    devices: list[Device] = []
    try:
        driver = _text(nvml.nvmlSystemGetDriverVersion())
        cuda: str | None = None
        try:
            raw = int(nvml.nvmlSystemGetCudaDriverVersion())
            cuda = f"{raw // 1000}.{raw % 1000 // 10}"
        except Exception:  # noqa: BLE001 - older drivers lack it
            cuda = None
        for i in range(int(nvml.nvmlDeviceGetCount())):
            handle = nvml.nvmlDeviceGetHandleByIndex(i)
            mem = nvml.nvmlDeviceGetMemoryInfo(handle)
            devices.append(Device(
                backend="cuda", index=i, name=_text(nvml.nvmlDeviceGetName(handle)),
                total_memory=int(mem.total), free_memory=int(mem.free),
                uuid=_text(nvml.nvmlDeviceGetUUID(handle)), physical_index=i,
                driver_version=driver, cuda_version=cuda))
    except Exception as exc:  # noqa: BLE001 - a device that disappears mid-query
        notes.append(f"NVIDIA: NVML query failed ({_text(exc) or type(exc).__name__})")
    finally:
        try:
            nvml.nvmlShutdown()
        except Exception:  # noqa: BLE001, S110 - nothing to do if shutdown fails
            pass
    visible = _select(devices, visible_filter(env.get("CUDA_VISIBLE_DEVICES")))
    if devices and not visible:
        notes.append("NVIDIA: CUDA_VISIBLE_DEVICES hides every GPU")
    return visible


# --- AMD ---------------------------------------------------------------------------


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except (OSError, UnicodeDecodeError):
        return None


def detect_amd(sysfs_root: Path, env: Mapping[str, str],
               notes: list[str] | None = None) -> list[Device]:
    """AMD GPUs from ``<sysfs_root>/class/drm/card<N>/device``."""
    notes = notes if notes is not None else []
    drm = Path(sysfs_root) / "class" / "drm"
    cards: list[tuple[int, Path]] = []
    try:
        entries = list(drm.iterdir())
    except OSError:
        return []
    for entry in entries:
        suffix = entry.name.removeprefix("card")
        if entry.name.startswith("card") and suffix.isdigit():
            cards.append((int(suffix), entry / "device"))
    devices: list[Device] = []
    for _n, dev in sorted(cards):
        if _read(dev / "vendor") != AMD_VENDOR:
            continue
        total_text = _read(dev / "mem_info_vram_total")
        if total_text is None or not total_text.isdigit():
            continue
        total = int(total_text)
        used_text = _read(dev / "mem_info_vram_used")
        used = int(used_text) if used_text and used_text.isdigit() else 0
        name = _read(dev / "product_name") or f"AMD GPU {_read(dev / 'device') or ''}".strip()
        uuid = _read(dev / "unique_id")
        index = len(devices)
        devices.append(Device("rocm", index, name, total, max(total - used, 0), uuid=uuid,
                              physical_index=index))
    for var in ("ROCR_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES", "CUDA_VISIBLE_DEVICES"):
        wanted = visible_filter(env.get(var))
        if wanted is not None:
            before = bool(devices)
            devices = _select(devices, wanted)
            if before and not devices:
                notes.append(f"AMD: {var} hides every GPU")
    return devices


# --- Apple -------------------------------------------------------------------------


def detect_metal(system: str, machine: str, cpu: CpuInfo) -> list[Device]:
    """Apple silicon: one Metal device sharing the machine's (unified) memory."""
    if system != "Darwin" or machine not in ("arm64", "aarch64"):
        return []
    total = cpu.total_memory or 0
    free = cpu.available_memory if cpu.available_memory is not None else total
    return [Device("metal", 0, "Apple GPU (Metal)", total, free, physical_index=0)]


# --- CPU and memory ----------------------------------------------------------------


def detect_cpu(proc_root: Path = Path("/proc"), system: str | None = None,
               machine: str | None = None) -> CpuInfo:
    total: int | None = None
    available: int | None = None
    text = _read(Path(proc_root) / "meminfo")
    if text:
        fields: dict[str, int] = {}
        for line in text.splitlines():
            key, _, rest = line.partition(":")
            parts = rest.split()
            if parts and parts[0].isdigit():
                fields[key] = int(parts[0]) * (1024 if parts[1:] == ["kB"] else 1)
        total = fields.get("MemTotal")
        available = fields.get("MemAvailable", fields.get("MemFree"))
    if total is None:
        try:
            total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (ValueError, OSError, AttributeError):
            total = None
    return CpuInfo(cores=os.cpu_count() or 1, total_memory=total, available_memory=available,
                   machine=machine or platform.machine(), system=system or platform.system())


# --- llama-cpp-python --------------------------------------------------------------


def llama_build() -> LlamaBuild:
    """What the installed llama-cpp-python can do.

    Asks its shared library directly (a few milliseconds) rather than importing the
    Python package, which imports numpy and takes about 0.2 s; falls back to the
    import where the library is not where the package keeps it.
    """
    import importlib.util

    try:
        spec = importlib.util.find_spec("llama_cpp")
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        return LlamaBuild(installed=False)
    version = _llama_version(Path(next(iter(spec.submodule_search_locations))))
    probed = _probe_library(Path(next(iter(spec.submodule_search_locations))) / "lib")
    if probed is not None:
        return LlamaBuild(True, version, probed[0], probed[1])
    try:
        import llama_cpp
    except Exception as exc:  # noqa: BLE001 - a broken shared library
        return LlamaBuild(installed=False, system_info=f"import failed: {exc}")
    info = llama_cpp.llama_print_system_info()
    return LlamaBuild(installed=True, version=getattr(llama_cpp, "__version__", version),
                      gpu_offload=bool(llama_cpp.llama_supports_gpu_offload()),
                      system_info=_clean(info))


def _clean(info: Any) -> str:
    text = info.decode("utf-8", "replace") if isinstance(info, bytes) else str(info)
    return " ".join(text.split())


def _llama_version(package_dir: Path) -> str | None:
    text = _read(package_dir / "__init__.py") or ""
    for line in text.splitlines():
        if line.startswith("__version__"):
            return line.split("=", 1)[1].strip().strip("\"'")
    return None


def _probe_library(lib_dir: Path) -> tuple[bool, str] | None:
    import ctypes
    import sys

    names = {"win32": ["llama.dll", "libllama.dll"], "darwin": ["libllama.dylib",
                                                                 "libllama.so"]}
    for name in names.get(sys.platform, ["libllama.so"]):
        path = lib_dir / name
        if not path.is_file():
            continue
        try:
            lib = ctypes.CDLL(str(path), mode=ctypes.RTLD_GLOBAL)
            lib.llama_supports_gpu_offload.restype = ctypes.c_bool
            lib.llama_print_system_info.restype = ctypes.c_char_p
            return bool(lib.llama_supports_gpu_offload()), _clean(lib.llama_print_system_info())
        except (OSError, AttributeError):
            return None
    return None


# --- all together ------------------------------------------------------------------


def detect(*, env: Mapping[str, str] | None = None, sysfs_root: Path = Path("/sys"),
           proc_root: Path = Path("/proc"), system: str | None = None,
           machine: str | None = None, nvml: Any = None, check_llama: bool = True
           ) -> Report:
    """Every accelerator found, best backend first: NVIDIA, AMD, Metal, else none."""
    env = os.environ if env is None else env
    notes: list[str] = []
    cpu = detect_cpu(proc_root, system, machine)
    devices = detect_nvidia(env, nvml, notes)
    if not devices:
        devices = detect_amd(sysfs_root, env, notes)
    if not devices:
        devices = detect_metal(cpu.system, cpu.machine, cpu)
    visible = {k: env[k] for k in ("CUDA_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES",
                                   "ROCR_VISIBLE_DEVICES") if k in env}
    build = llama_build() if check_llama else None
    if build is not None:
        if not build.installed:
            notes.append("llama-cpp-python is not installed: pip install 'sxpm[run]'")
        elif devices and not build.gpu_offload:
            notes.append("this llama-cpp-python build cannot offload to a GPU; reinstall it "
                         "with the backend enabled, e.g. CMAKE_ARGS=-DGGML_CUDA=on pip install "
                         "--force-reinstall --no-cache-dir llama-cpp-python")
    return Report(devices, cpu, build, visible, notes)


def free_memory() -> int | None:
    """Bytes a model may take here: the best accelerator's free memory, else available RAM.

    What pull, install and lock give the variant policy (less its headroom); llama.cpp
    is not asked, so no heavy module is loaded.
    """
    device = detect(check_llama=False).best_device()
    return device.free_memory if device is not None else detect_cpu().available_memory


def memory_budget() -> int | None:
    """Usable bytes for a model on this machine, for the variant policy: the
    accelerator's free memory (RAM on a CPU machine) less the policy's headroom. The
    one number pull, install, lock and run give :func:`sxpm.core.variants.choose`."""
    from sxpm.core.variants import usable_memory

    return usable_memory(free_memory())
