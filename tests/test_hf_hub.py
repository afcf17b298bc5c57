"""`sxpm pull hf://...` through huggingface_hub, against a Hub-shaped server on loopback."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest
import tiny_gguf
from hf_hub_server import HubRepo, HubServer

pytest.importorskip("huggingface_hub")

COMMIT = "a1b2c3d4e5f60718293a4b5c6d7e8f9012345678"


@pytest.fixture(scope="module")
def ggufs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    out = tmp_path_factory.mktemp("hfgguf")
    return {dtype: tiny_gguf.make_model(out / f"{dtype}.gguf", dtype=dtype,  # type: ignore[arg-type]
                                        name="tiny").read_bytes()
            for dtype in ("F16", "Q8_0")}


@pytest.fixture
def hub() -> Iterator[HubServer]:
    server = HubServer()
    yield server
    server.close()


def _env(hub: HubServer, cache: Path, **extra: str) -> dict[str, str]:
    return {"HF_ENDPOINT": hub.url, "HF_HUB_CACHE": str(cache), "HF_TOKEN": "",
            "HF_HUB_DISABLE_TELEMETRY": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1", **extra}


def test_pull_a_gguf_file_from_the_hub(cli, home: Path, tmp_path: Path,  # noqa: ANN001
                                       hub: HubServer, ggufs: dict[str, bytes]) -> None:
    hub.repos["acme/Tiny-GGUF"] = HubRepo(COMMIT, {
        "tiny-Q8_0.gguf": ggufs["Q8_0"], "tiny-F16.gguf": ggufs["F16"],
        "README.md": b"# tiny\n"})
    cache = tmp_path / "hf-cache"
    env = _env(hub, cache)
    out = cli("pull", "hf://acme/Tiny-GGUF/tiny-Q8_0.gguf", "--json", env=env).json
    assert [(o["name"], o["version"]) for o in out] == [("tiny-q8-0", COMMIT[:12])]
    # The file is huggingface_hub's: in its cache, and the store's blob is that very file.
    blob = cache / "models--acme--Tiny-GGUF" / "blobs" / hashlib.sha256(
        ggufs["Q8_0"]).hexdigest()
    assert blob.read_bytes() == ggufs["Q8_0"]
    stored = home / "store" / "blobs" / "sha256" / hashlib.sha256(ggufs["Q8_0"]).hexdigest()
    assert stored.stat().st_ino == blob.stat().st_ino
    tree = home / "models" / "tiny-q8-0" / COMMIT[:12]
    assert (tree / "tiny-Q8_0.gguf").read_bytes() == ggufs["Q8_0"]
    assert any(m == "GET" and p == "/api/models/acme/Tiny-GGUF" for m, p, _ in hub.requests)
    cli("verify")

    # Two quantizations and none chosen: refused with the list, naming --variant.
    result = cli.fail("pull", "hf://acme/Tiny-GGUF", env=env, code=2)
    assert "tiny-F16.gguf" in result.stderr and "tiny-Q8_0.gguf" in result.stderr
    assert "--variant" in result.stderr
    # --variant picks by quantization; a revision pins the commit.
    out = cli("pull", f"hf://acme/Tiny-GGUF@{COMMIT}", "--variant", "F16", "--json",
              env=env).json
    assert [(o["name"], o["version"]) for o in out] == [("tiny-f16", COMMIT[:12])]
    assert "no revision" in cli.fail("pull", "hf://acme/Tiny-GGUF@nosuch", env=env,
                                     code=2).stderr
    assert "No model" in cli.fail("pull", "hf://acme/None", env=env, code=2).stderr
    assert "not a GGUF file of" in cli.fail("pull", "hf://acme/Tiny-GGUF/x.gguf", env=env,
                                            code=2).stderr


def test_pull_hf_refuses_bytes_not_matching_the_lfs_sha256(  # noqa: ANN001
        cli, home: Path, tmp_path: Path, hub: HubServer, ggufs: dict[str, bytes]) -> None:
    bad = bytearray(ggufs["Q8_0"])
    bad[-1] ^= 0xFF  # same size, one byte of tensor data changed
    hub.repos["acme/Bad-GGUF"] = HubRepo(COMMIT, {"bad-Q8_0.gguf": ggufs["Q8_0"]},
                                         served={"bad-Q8_0.gguf": bytes(bad)})
    result = cli.fail("pull", "hf://acme/Bad-GGUF", env=_env(hub, tmp_path / "c"), code=1)
    assert "Digest mismatch" in result.stderr
    blobs = home / "store" / "blobs" / "sha256"
    assert not blobs.exists() or not any(
        p.stat().st_size == len(bad) for p in blobs.iterdir())  # nothing entered the store
    assert not (home / "models" / "bad-q8-0").exists()


def test_pull_hf_sends_hf_token(cli, home: Path, tmp_path: Path,  # noqa: ANN001
                                hub: HubServer, ggufs: dict[str, bytes]) -> None:
    hub.repos["acme/Private-GGUF"] = HubRepo(COMMIT, {"p-Q8_0.gguf": ggufs["Q8_0"]},
                                             token="hf_secret")
    env = _env(hub, tmp_path / "c")
    result = cli.fail("pull", "hf://acme/Private-GGUF", env=env, code=1)
    assert "HF_TOKEN" in result.stderr
    out = cli("pull", "hf://acme/Private-GGUF", "--json",
              env={**env, "HF_TOKEN": "hf_secret"}).json
    assert out[0]["name"] == "p-q8-0"
    assert ("GET", "/api/models/acme/Private-GGUF", "Bearer hf_secret") in hub.requests
