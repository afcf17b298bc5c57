"""Accelerator detection, offload planning, variant choice, templates and GGUF headers.

No hardware needed: sysfs trees are temporary directories, NVML is a stand-in
module, environments are plain dicts.
"""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from sxpm.core import detect
from sxpm.core.gguf import GGML_TYPE_SIZES, read_header
from sxpm.core.variants import MIN_RESERVE
from sxpm.errors import ModelFileError, TemplateError
from sxpm.runner.plan import (
    VariantOption,
    choose_variant,
    kv_bytes_per_layer,
    plan_for_header,
    plan_offload,
)
from sxpm.runner.templates import PromptTemplate

GiB = 1024**3


# --- NVIDIA through a stand-in NVML -----------------------------------------------


class FakeNVMLError(Exception):
    pass


def fake_nvml(gpus: list[tuple[str, int, int, str]], *, fail_init: bool = False) -> Any:
    """A pynvml stand-in; gpus are (name, total, free, uuid)."""
    calls: list[str] = []

    def init() -> None:
        calls.append("init")
        if fail_init:
            raise FakeNVMLError("NVML Shared Library Not Found")

    return SimpleNamespace(
        calls=calls,
        nvmlInit=init,
        nvmlShutdown=lambda: calls.append("shutdown"),
        nvmlSystemGetDriverVersion=lambda: b"550.54.15",
        nvmlSystemGetCudaDriverVersion=lambda: 12040,
        nvmlDeviceGetCount=lambda: len(gpus),
        nvmlDeviceGetHandleByIndex=lambda i: i,
        nvmlDeviceGetName=lambda h: gpus[h][0],
        nvmlDeviceGetMemoryInfo=lambda h: SimpleNamespace(total=gpus[h][1], free=gpus[h][2],
                                                          used=gpus[h][1] - gpus[h][2]),
        nvmlDeviceGetUUID=lambda h: gpus[h][3],
    )


TWO_GPUS = [("NVIDIA H100 80GB HBM3", 80 * GiB, 79 * GiB, "GPU-aaaa-1111"),
            ("NVIDIA L4", 24 * GiB, 20 * GiB, "GPU-bbbb-2222")]


def test_nvidia_devices_memory_driver_and_cuda_version() -> None:
    nvml = fake_nvml(TWO_GPUS)
    devices = detect.detect_nvidia({}, nvml)
    assert [d.name for d in devices] == ["NVIDIA H100 80GB HBM3", "NVIDIA L4"]
    assert devices[0].total_memory == 80 * GiB and devices[0].free_memory == 79 * GiB
    assert devices[0].driver_version == "550.54.15" and devices[0].cuda_version == "12.4"
    assert nvml.calls == ["init", "shutdown"]


@pytest.mark.parametrize(("value", "names"), [
    ("1", ["NVIDIA L4"]),
    ("1,0", ["NVIDIA L4", "NVIDIA H100 80GB HBM3"]),
    ("GPU-bbbb", ["NVIDIA L4"]),
    ("0,7,1", ["NVIDIA H100 80GB HBM3"]),  # CUDA stops at the first unusable entry
    ("", []),
    ("-1", []),
])
def test_cuda_visible_devices(value: str, names: list[str]) -> None:
    notes: list[str] = []
    devices = detect.detect_nvidia({"CUDA_VISIBLE_DEVICES": value}, fake_nvml(TWO_GPUS), notes)
    assert [d.name for d in devices] == names
    assert [d.index for d in devices] == list(range(len(names)))  # renumbered as CUDA does
    if not names:
        assert "hides every GPU" in notes[0]


def test_nvml_failing_to_initialise_is_a_note_not_an_error() -> None:
    notes: list[str] = []
    assert detect.detect_nvidia({}, fake_nvml([], fail_init=True), notes) == []
    assert "NVML is not available" in notes[0] and "Not Found" in notes[0]


def test_nvml_absent(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import pynvml -> ImportError
    notes: list[str] = []
    assert detect.detect_nvidia({}, None, notes) == []
    assert "nvidia-ml-py is not installed" in notes[0]
    report = detect.detect(env={}, sysfs_root=tmp_path, proc_root=tmp_path, system="Linux",
                           machine="x86_64", check_llama=False)
    assert report.backend == "cpu" and report.devices == [] and not report.can_offload


# --- AMD through a fake sysfs -------------------------------------------------------


def amd_card(root: Path, n: int, *, total: int, used: int, vendor: str = "0x1002",
             name: str | None = None) -> None:
    dev = root / "class" / "drm" / f"card{n}" / "device"
    dev.mkdir(parents=True)
    (dev / "vendor").write_text(vendor + "\n")
    (dev / "device").write_text("0x74a1\n")
    if total:
        (dev / "mem_info_vram_total").write_text(f"{total}\n")
        (dev / "mem_info_vram_used").write_text(f"{used}\n")
    if name:
        (dev / "product_name").write_text(name + "\n")
    # connectors live beside cards and must be ignored
    (root / "class" / "drm" / f"card{n}-DP-1").mkdir()


def test_amd_from_sysfs(tmp_path: Path) -> None:
    amd_card(tmp_path, 0, total=0, used=0, vendor="0x8086")  # an Intel iGPU: skipped
    amd_card(tmp_path, 1, total=192 * GiB, used=2 * GiB, name="AMD Instinct MI300X")
    amd_card(tmp_path, 2, total=16 * GiB, used=0)
    devices = detect.detect_amd(tmp_path, {})
    assert [(d.backend, d.index, d.name) for d in devices] == [
        ("rocm", 0, "AMD Instinct MI300X"), ("rocm", 1, "AMD GPU 0x74a1")]
    assert devices[0].free_memory == 190 * GiB and devices[0].total_memory == 192 * GiB


@pytest.mark.parametrize(("var", "value", "count"), [
    ("HIP_VISIBLE_DEVICES", "1", 1), ("ROCR_VISIBLE_DEVICES", "0,1", 2),
    ("HIP_VISIBLE_DEVICES", "-1", 0), ("CUDA_VISIBLE_DEVICES", "", 0)])
def test_hip_visible_devices(tmp_path: Path, var: str, value: str, count: int) -> None:
    amd_card(tmp_path, 0, total=8 * GiB, used=0, name="first")
    amd_card(tmp_path, 1, total=16 * GiB, used=0, name="second")
    devices = detect.detect_amd(tmp_path, {var: value})
    assert len(devices) == count
    if value == "1":
        assert devices[0].name == "second" and devices[0].index == 0


def test_detect_prefers_nvidia_then_amd_then_metal(tmp_path: Path) -> None:
    amd_card(tmp_path, 0, total=8 * GiB, used=0, name="radeon")
    (tmp_path / "meminfo").write_text("MemTotal: 16384 kB\nMemAvailable: 8192 kB\n")
    kw: dict[str, Any] = {"sysfs_root": tmp_path, "proc_root": tmp_path, "check_llama": False}
    both = detect.detect(env={}, nvml=fake_nvml(TWO_GPUS), system="Linux", machine="x86_64",
                         **kw)
    assert both.backend == "cuda" and both.best_device().name == "NVIDIA H100 80GB HBM3"
    amd = detect.detect(env={}, nvml=fake_nvml([], fail_init=True), system="Linux",
                        machine="x86_64", **kw)
    assert amd.backend == "rocm"
    assert amd.cpu.total_memory == 16 * 1024 * 1024 and amd.cpu.available_memory == 8 * 1024**2
    mac = detect.detect(env={}, nvml=fake_nvml([], fail_init=True), system="Darwin",
                        machine="arm64", **{**kw, "sysfs_root": tmp_path / "none"})
    assert mac.backend == "metal" and mac.devices[0].total_memory == 16 * 1024 * 1024
    cpu = detect.detect(env={}, nvml=fake_nvml([], fail_init=True), system="Darwin",
                        machine="x86_64", **{**kw, "sysfs_root": tmp_path / "none"})
    assert cpu.backend == "cpu"
    data = both.to_dict()
    assert data["devices"][0]["cuda_version"] == "12.4" and data["backend"] == "cuda"


def test_llama_build_reports_offload_support() -> None:
    pytest.importorskip("llama_cpp")
    import llama_cpp

    build = detect.llama_build()
    assert build.installed and build.version == llama_cpp.__version__
    assert build.gpu_offload == bool(llama_cpp.llama_supports_gpu_offload())
    assert build.system_info and "CPU" in build.system_info


# --- planning ------------------------------------------------------------------------


def test_plan_all_layers_fit() -> None:
    plan = plan_offload([100] * 10, 50, 10 * GiB, reserve=0)
    assert plan.n_gpu_layers == 11 and plan.full


def test_plan_partial_offload_takes_the_last_layers() -> None:
    # 1 GiB per layer, 4.5 GiB usable: four layers fit, output does not.
    plan = plan_offload([GiB] * 8, GiB, int(4.5 * GiB), reserve=0)
    assert plan.n_gpu_layers == 4 and not plan.full
    # the KV cache counts too
    assert plan_offload([GiB] * 8, GiB, int(4.5 * GiB), reserve=0,
                        kv_per_layer=GiB // 4).n_gpu_layers == 3


def test_plan_without_device_or_memory() -> None:
    assert plan_offload([1] * 4, 1, None).n_gpu_layers == 0
    assert plan_offload([GiB] * 4, 1, MIN_RESERVE // 2).n_gpu_layers == 0


def test_plan_from_a_real_header(sample_dir: Path) -> None:
    header = read_header(sample_dir / "tiny-llama" / "model.gguf")
    per, other = header.layer_bytes()
    assert len(per) == 2 and all(p > 0 for p in per) and other > 0
    assert sum(per) + other == header.tensor_bytes
    kv = kv_bytes_per_layer(header, 256)
    n_head_kv = header.meta_int("attention.head_count_kv")
    assert n_head_kv and kv == 256 * n_head_kv * (16 + 16) * 2  # n_ctx * heads * (K+V) * f16
    assert plan_for_header(header, 8 * GiB, 256).full
    assert plan_for_header(header, None, 256).n_gpu_layers == 0


def test_variant_choice_largest_that_fits() -> None:
    options = [VariantOption("Q4_K_M", 4 * GiB, None), VariantOption("F16", 14 * GiB, None),
               VariantOption("Q8_0", 7 * GiB, None)]
    assert choose_variant(options, 10 * GiB).name == "Q8_0"
    assert choose_variant(options, 80 * GiB).name == "F16"
    assert choose_variant(options, 1 * GiB).name == "Q4_K_M"  # none fits: the smallest
    assert choose_variant(options, None).name == "F16"
    sized_by_files = [VariantOption("a", None, 5), VariantOption("b", None, 9)]
    assert choose_variant(sized_by_files, 6).name == "a"
    assert choose_variant([VariantOption("x", None, None)], 1).name == "x"


# --- templates -------------------------------------------------------------------------


def test_template_renders_prompt_and_system() -> None:
    t = PromptTemplate.parse("### Question\n{prompt}\n### SQL\n")
    assert t.render("list users") == "### Question\nlist users\n### SQL\n"
    t2 = PromptTemplate.parse("{system}|{prompt}|{{literal}}")
    assert t2.render("p", "s") == "s|p|{literal}"
    assert t2.variables == ("prompt", "system")
    chat = t.render_chat([{"role": "user", "content": "a"}, {"role": "assistant",
                          "content": "A"}, {"role": "user", "content": "b"}])
    assert chat == "### Question\na\n### SQL\nA\n### Question\nb\n### SQL\n"


@pytest.mark.parametrize(("text", "named"), [
    ("{question}\n{prompt}", "{question}"),
    ("{prompt} {context} {user}", "{context}, {user}"),
    ("{}", "{}"),
    ("{prompt.upper}", "{prompt.upper}"),
    ("{prompt!r}", "{prompt!r}"),
])
def test_template_unknown_variables_are_named(text: str, named: str) -> None:
    with pytest.raises(TemplateError) as info:
        PromptTemplate.parse(text, "t.txt")
    assert named in str(info.value)
    assert "\n" not in info.value.one_line()


def test_template_malformed() -> None:
    with pytest.raises(TemplateError, match="malformed"):
        PromptTemplate.parse("{prompt")


# --- GGUF header ---------------------------------------------------------------------


def test_header_matches_gguf_reader(sample_dir: Path) -> None:
    gguf = pytest.importorskip("gguf")
    for rel in ("tiny-llama/model.gguf", "tiny-llama-f16/model.gguf",
                "sql-expert/adapter.gguf"):
        path = sample_dir / rel
        header = read_header(path)
        reader = gguf.GGUFReader(str(path))
        assert [t.name for t in header.tensors] == [t.name for t in reader.tensors]
        assert [t.n_bytes for t in header.tensors] == [int(t.n_bytes) for t in reader.tensors]
        assert header.data_offset == reader.data_offset
        assert header.architecture == "llama"
    assert read_header(sample_dir / "sql-expert" / "adapter.gguf").general_type == "adapter"
    assert read_header(sample_dir / "tiny-llama" / "model.gguf").block_count == 2


def test_type_sizes_match_gguf() -> None:
    gguf = pytest.importorskip("gguf")
    for type_id, (block, size) in GGML_TYPE_SIZES.items():
        assert gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType(type_id)] == (block, size)


@pytest.mark.parametrize("cut", [10, 200, -100])
def test_truncated_gguf_is_refused(sample_dir: Path, tmp_path: Path, cut: int) -> None:
    data = (sample_dir / "tiny-llama" / "model.gguf").read_bytes()
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(data[:cut])
    with pytest.raises(ModelFileError, match="truncated|not a GGUF"):
        read_header(bad)


def test_not_a_gguf(tmp_path: Path) -> None:
    path = tmp_path / "x.gguf"
    path.write_bytes(b"PK\x03\x04" + bytes(100))
    with pytest.raises(ModelFileError, match="bad magic"):
        read_header(path)
