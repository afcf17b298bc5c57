"""Variants side by side: any subset of an artifact's variants in the store and installed."""

from __future__ import annotations

import os
from pathlib import Path


def two_variants(cli, sample_dir: Path, registry_dir: Path) -> str:  # noqa: ANN001
    ref = f"oci:{registry_dir}/tiny-llama:1.0.0"
    cli("pack", "model", sample_dir / "tiny-llama", "--ref", ref, "--variant", "F32")
    cli("pack", "model", sample_dir / "tiny-llama-f16", "--ref", ref, "--variant", "F16")
    cli("push", ref)
    return ref


def store_bytes(home: Path) -> int:
    blobs = home / "store" / "blobs" / "sha256"
    return sum(os.path.getsize(blobs / name) for name in os.listdir(blobs))


def test_non_default_variant_lists_and_describes(cli, cli2, sample_dir: Path,  # noqa: ANN001
                                                 registry_dir: Path) -> None:
    ref = two_variants(cli, sample_dir, registry_dir)
    cli2("pull", ref, "--variant", "F16")  # the default (first) variant is F32
    [row] = cli2("list", "--json").json
    assert (row["kind"], row["name"], row["version"]) == ("model", "tiny-llama", "1.0.0")
    assert row["size"] == store_bytes(cli2.home)  # what this artifact holds on disk
    assert "?" not in cli2("list").stdout
    info = cli2("model", "info", ref, "--json").json
    assert (info["variant"], info["quantization"]) == ("F16", "F16")


def test_two_variants_installed_side_by_side(cli, sample_dir: Path,  # noqa: ANN001
                                             registry_dir: Path) -> None:
    ref = two_variants(cli, sample_dir, registry_dir)
    first = cli("model", "install", ref, "--variant", "F32", "--json").json
    second = cli("model", "install", ref, "--variant", "F16", "--json").json
    assert first["path"] != second["path"]
    assert (Path(first["path"]) / "model.gguf").is_file()  # not replaced
    rows = cli("model", "list", "--json").json
    assert sorted(r["variant"] for r in rows) == ["F16", "F32"]
    # Installing one again replaces only that one.
    again = cli("model", "install", ref, "--variant", "F16", "--json").json
    assert again["path"] == second["path"]
    assert len(cli("model", "list", "--json").json) == 2
    info = cli("model", "info", "tiny-llama", "--variant", "F32", "--json").json
    assert info["variant"] == "F32" and len(info["installed"]) == 2
    cli("model", "remove", "tiny-llama@1.0.0")
    assert cli("model", "list", "--json").json == []
