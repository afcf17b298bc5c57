"""Pull, install and push through a proxy that cuts, corrupts, stalls and refuses.

Every case runs the real CLI against the real registry (tests/registry.py) behind
tests/faultproxy.py, and must either finish with verified content or fail with a
one-line error, within a bounded time; ``sxpm verify`` is clean after each.
Reads time out after 2 s here (``SXPM_TIMEOUT``) so stalls cost seconds, not minutes.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest import Cli
from relhelp import MiB, make_model, sha, store_state

pytestmark = [pytest.mark.registry, pytest.mark.timeout(120)]

ENV = {"SXPM_TIMEOUT": "2", "SXPM_RETRIES": "3"}
BOUND_S = 45  # what any case may take, success or failure, before it counts as hung
FILES = {"a.bin": os.urandom(MiB), "b.bin": os.urandom(MiB), "c.bin": os.urandom(MiB // 2)}
# Faults hit one 1 MiB layer, whatever order the parallel fetches go in.
BLOB = f"/blobs/{sha(FILES['a.bin'])}"
ANY_BLOB = "/blobs/sha256:"

# (case, request pattern, rule, expected: "ok" or a text the one-line error contains)
PULL_CASES = [
    ("cut mid-blob", BLOB, {"cut_after": 300_000}, "ok"),
    ("cut before the first byte", BLOB, {"cut_after": 0}, "ok"),
    ("cut three times", BLOB, {"cut_after": 100_000, "times": 3}, "ok"),
    ("cut on every attempt", BLOB, {"cut_after": 100_000, "times": 1000}, "dropped"),
    ("byte flipped", BLOB, {"flip_at": 5000}, "mismatch"),
    ("lying Content-Length", BLOB, {"headers": {"Content-Length": "1000"}}, "size mismatch"),
    ("stall mid-body", BLOB, {"stall_at": 200_000, "stall_s": 30}, "ok"),
    ("stall before the answer (blob)", BLOB, {"stall_s": 30}, "ok"),
    ("stall before the answer (manifest)", "/manifests/", {"stall_s": 30}, "ok"),
    ("stall on every attempt", "/manifests/", {"stall_s": 30, "times": 1000}, "timed out"),
    ("503 with Retry-After (manifest)", "/manifests/",
     {"status": 503, "headers": {"Retry-After": "1"}, "times": 2}, "ok"),
    ("429 with Retry-After (blob)", BLOB,
     {"status": 429, "headers": {"Retry-After": "1"}, "times": 2}, "ok"),
    ("500 twice (blob)", BLOB, {"status": 500, "times": 2}, "ok"),
    ("502 then 504 (manifest)", "/manifests/", {"status": 502}, "ok"),
    ("500 on every attempt (manifest)", "/manifests/", {"status": 500, "times": 1000},
     "HTTP 500"),
    ("503 on every attempt (blob)", BLOB,
     {"status": 503, "headers": {"Retry-After": "0"}, "times": 1000}, "HTTP 503"),
    ("429 asking for an hour", "/manifests/",
     {"status": 429, "headers": {"Retry-After": "3600"}, "times": 1000}, "HTTP 429"),
    ("connection dropped before an answer", BLOB, {"drop": True, "times": 2}, "ok"),
]

INSTALL_CASES = [
    ("cut mid-blob", BLOB, {"cut_after": 500_000, "times": 2}, "ok"),
    ("stall mid-body", BLOB, {"stall_at": 100_000, "stall_s": 30}, "ok"),
    ("503 with Retry-After", BLOB,
     {"status": 503, "headers": {"Retry-After": "1"}, "times": 2}, "ok"),
    ("byte flipped", BLOB, {"flip_at": 10}, "mismatch"),
    ("500 on every attempt", "/manifests/", {"status": 500, "times": 1000}, "HTTP 500"),
]

PUSH_CASES = [
    ("503 on opening the upload", "/blobs/uploads/",
     {"method": "POST", "status": 503, "headers": {"Retry-After": "1"}}, "ok"),
    ("429 on the blob PUT", "/blobs/uploads/",
     {"method": "PUT", "status": 429, "headers": {"Retry-After": "1"}, "times": 2}, "ok"),
    ("connection dropped on the blob PUT", "/blobs/uploads/",
     {"method": "PUT", "drop": True}, "ok"),
    ("connection dropped on the manifest PUT", "/manifests/",
     {"method": "PUT", "drop": True}, "ok"),
    ("stall on the blob HEAD", ANY_BLOB, {"method": "HEAD", "stall_s": 30}, "ok"),
    ("500 on every manifest PUT", "/manifests/",
     {"method": "PUT", "status": 500, "times": 1000}, "HTTP 500"),
]



@pytest.fixture(scope="module")
def published(oci_registry, tmp_path_factory: pytest.TempPathFactory) -> str:  # noqa: ANN001
    """``rel/faults:1``, a 2.5 MiB model of three layers, in the registry."""
    home = tmp_path_factory.mktemp("faults-src") / "home"
    home.mkdir()
    cli = Cli(home, home.parent)
    ref = f"{oci_registry.host}/rel/faults:1"
    make_model(home, ref, FILES)
    cli("push", ref)
    return "rel/faults:1"


def _run(cli: Cli, expect: str, *args: str) -> None:
    # A case that waits forever fails on the process timeout; how long the cases take
    # is measured on a quiet machine, not asserted on a loaded one.
    if expect == "ok":
        cli(*args, env=ENV, timeout=BOUND_S + 15)
    else:
        r = cli.fail(*args, env=ENV, timeout=BOUND_S + 15, code=1)
        assert expect.lower() in r.stderr.lower(), r.stderr


def _fresh(tmp_path: Path, name: str) -> Cli:
    home = tmp_path / name
    home.mkdir()
    return Cli(home, tmp_path)


@pytest.mark.parametrize(("case", "pattern", "rule", "expect"), PULL_CASES,
                         ids=[c[0] for c in PULL_CASES])
def test_pull_under_fault(case: str, pattern: str, rule: dict, expect: str, published: str,  # noqa: ARG001
                          fault_proxy, tmp_path: Path) -> None:  # noqa: ANN001
    cli = _fresh(tmp_path, "home")
    fault_proxy.add(pattern, **rule)
    if case.startswith("502"):
        fault_proxy.add(pattern, status=504)
    _run(cli, expect, "pull", "-q", f"{fault_proxy.host}/{published}")
    assert cli("verify").returncode == 0
    if expect == "ok":
        for data in FILES.values():
            assert (cli.home / "store/blobs/sha256" / sha(data)[7:]).read_bytes() == data
    else:
        assert cli("list", "--json").json == []  # no ref to anything half there


@pytest.mark.parametrize(("case", "pattern", "rule", "expect"), INSTALL_CASES,
                         ids=[c[0] for c in INSTALL_CASES])
def test_install_under_fault(case: str, pattern: str, rule: dict, expect: str,  # noqa: ARG001
                             published: str, fault_proxy, tmp_path: Path) -> None:  # noqa: ANN001
    cli = _fresh(tmp_path, "home")
    fault_proxy.add(pattern, **rule)
    _run(cli, expect, "model", "install", "-q", f"{fault_proxy.host}/{published}")
    assert cli("verify").returncode == 0
    tree = cli.home / "models" / "relmodel" / "1.0.0"
    if expect == "ok":
        for name, data in FILES.items():
            assert (tree / name).read_bytes() == data
    else:
        assert not tree.exists() and not (cli.home / "models" / "relmodel").exists()


@pytest.mark.parametrize(("case", "pattern", "rule", "expect"), PUSH_CASES,
                         ids=[c[0] for c in PUSH_CASES])
def test_push_under_fault(case: str, pattern: str, rule: dict, expect: str,  # noqa: ARG001
                          oci_registry, fault_proxy, tmp_path: Path) -> None:  # noqa: ANN001
    cli = _fresh(tmp_path, "home")
    files = {"w.bin": os.urandom(MiB), "x.bin": os.urandom(4096)}
    repo = f"rel/push-{abs(hash(case)) % 10**8}:1"
    make_model(cli.home, f"{fault_proxy.host}/{repo}", files)
    before = store_state(cli.home)
    fault_proxy.add(pattern, **rule)
    _run(cli, expect, "push", "-q", f"{fault_proxy.host}/{repo}")
    assert cli("verify").returncode == 0
    assert store_state(cli.home) == before  # a push never changes the store
    if expect == "ok":  # what the registry now serves is exactly what was pushed
        other = _fresh(tmp_path, "check")
        other("model", "install", "-q", f"{oci_registry.host}/{repo}")
        for name, data in files.items():
            assert (other.home / "models/relmodel/1.0.0" / name).read_bytes() == data
