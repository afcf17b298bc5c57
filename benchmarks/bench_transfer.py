"""Transfer benchmark: sxpm against the oras Python client and curl, one registry.

    pip install -e '.[bench]'                              # the oras client, the peer
    python benchmarks/bench_transfer.py --runs 3          # full sizes (1 GiB, 8 x 128 MiB)
    python benchmarks/bench_transfer.py --runs 3 --quick  # small sizes, to check it works

Starts its own docker-registry on loopback, makes random blobs, then measures side by
side, on the same blobs, each tool as a separate process: wall time and peak RSS
(``os.wait4``), medians of ``--runs`` runs. Writes the table between the
``<!-- transfer:start -->`` and ``<!-- transfer:end -->`` markers of
``docs/benchmarks.md`` (``--no-write`` only prints it).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from faultproxy import FaultProxy  # noqa: E402
from registry import Registry  # noqa: E402

MiB = 1024 * 1024
CASES = ("pull", "layers", "push", "delta")
START, END = "<!-- transfer:start -->", "<!-- transfer:end -->"


def run(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, float]:
    """Wall seconds and peak RSS (MiB) of one process.

    GNU time forks the command from its own small process: ``ru_maxrss`` of a child
    forked straight from this one would include this process's memory.
    """
    # Each command starts with no dirty pages left by the one before (curl and oras
    # leave a GiB for the kernel to write back; sxpm fsyncs its own): otherwise that
    # writeback lands on whichever command runs next.
    os.sync()
    with tempfile.NamedTemporaryFile("r", suffix=".rss") as rss:
        start = time.perf_counter()
        proc = subprocess.run(["/usr/bin/time", "-f", "%M", "-o", rss.name, *cmd], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        wall = time.perf_counter() - start
        if proc.returncode != 0:
            raise RuntimeError(f"{cmd[:4]} failed: {proc.stderr.decode(errors='replace')}")
        return wall, int(rss.read().split()[-1]) / 1024


def write_random(path: Path, size: int) -> str:
    h = hashlib.sha256()
    with open(path, "wb") as fh:
        left = size
        while left:
            block = os.urandom(min(16 * MiB, left))
            fh.write(block)
            h.update(block)
            left -= len(block)
    return "sha256:" + h.hexdigest()


def make_artifact(home: Path, ref: str, files: list[Path]) -> list[str]:
    from sxpm.core.oci import ANN_TITLE, Manifest
    from sxpm.home import Home
    from sxpm.store.refs import store_name

    h = Home(home)
    store = h.store
    store.ensure()
    config = store.put_bytes(b"{}", "application/vnd.simplex.test.config.v1+json")
    layers = []
    for path in files:
        desc = store.put_file(path, "application/octet-stream")
        layers.append(type(desc)(desc.media_type, desc.digest, desc.size,
                                 {ANN_TITLE: path.name}))
    manifest = Manifest(config, tuple(layers), artifact_type="application/vnd.simplex.test.v1")
    store.set_ref(store_name(h.parse_ref(ref)), store.put_manifest(manifest))
    return [str(d.digest) for d in layers]


PYCACHE: Path | None = None
"""Byte-code cache of the measured Python processes (set in main)."""


def python_env(**extra: str) -> dict[str, str]:
    """The environment of a measured Python process (sxpm or oras).

    Byte code is cached as an installed package has it (pip compiles on install), even
    where ``PYTHONDONTWRITEBYTECODE`` is set for this shell: otherwise every run would
    compile the sources again and time the compiler.
    """
    env = dict(os.environ, **extra)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    if PYCACHE is not None:
        env["PYTHONPYCACHEPREFIX"] = str(PYCACHE)
    return env


def sxpm_env(home: Path) -> dict[str, str]:
    env = python_env(SIMPLEX_HOME=str(home), PYTHONPATH=str(ROOT))
    for name in [k for k in env if k.startswith("SXPM_")]:
        del env[name]
    return env


ORAS_PULL = """
import sys, oras.client
c = oras.client.OrasClient(hostname=sys.argv[1], insecure=True)
c.pull(target=sys.argv[2], outdir=sys.argv[3])
"""
ORAS_PUSH = """
import os, sys, oras.client
c = oras.client.OrasClient(hostname=sys.argv[1], insecure=True)
os.chdir(os.path.dirname(sys.argv[3]))
c.push(target=sys.argv[2], files=[os.path.basename(sys.argv[3])], disable_path_validation=True,
       quiet=True)
"""


VARIANTS = {"sxpm, 2 range streams": {"SXPM_RANGE_STREAMS": "2"},
            "sxpm, no direct I/O": {"SXPM_NO_DIRECT": "1"}}


def median(rows: list[tuple[float, float]]) -> tuple[float, float]:
    return statistics.median(r[0] for r in rows), statistics.median(r[1] for r in rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="64 MiB and 8 x 8 MiB blobs")
    ap.add_argument("--no-write", action="store_true", help="print, do not update docs/")
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--cases", default=",".join(CASES),
                    help=f"comma-separated subset of {','.join(CASES)} (a subset only prints)")
    args = ap.parse_args()
    big_size = 64 * MiB if args.quick else 1024 * MiB
    layer_size = 8 * MiB if args.quick else 128 * MiB
    load_before = os.getloadavg()[0]
    work = Path(tempfile.mkdtemp(prefix="sxpm-bench-", dir=args.workdir))
    global PYCACHE
    PYCACHE = work / "pycache"
    reg = Registry.start(work / "registry")
    host = reg.host
    results: dict[str, dict[str, tuple[float, float]]] = {}
    notes: list[str] = []
    try:
        data = work / "data"
        data.mkdir()
        big = data / "big.bin"
        big_digest = write_random(big, big_size)
        layers = [data / f"layer-{i}.bin" for i in range(8)]
        for p in layers:
            write_random(p, layer_size)
        seed = work / "seed"
        make_artifact(seed, f"{host}/bench/big:1", [big])
        make_artifact(seed, f"{host}/bench/layers:1", layers)
        for ref in ("bench/big:1", "bench/layers:1"):
            subprocess.run([sys.executable, "-m", "sxpm", "push", f"{host}/{ref}", "-q"],
                           env=sxpm_env(seed), check=True, stdout=subprocess.DEVNULL)
        # Warm the byte-code cache of the oras client, as the pushes above did for sxpm.
        subprocess.run([sys.executable, "-c", "import oras.client"], env=python_env(),
                       check=True)
        layer_manifest = json.loads(urllib.request.urlopen(urllib.request.Request(
            f"http://{host}/v2/bench/layers/manifests/1",
            headers={"Accept": "application/vnd.oci.image.manifest.v1+json"})).read())
        layer_urls = [f"http://{host}/v2/bench/layers/blobs/{d['digest']}"
                      for d in layer_manifest["layers"]]

        def fresh(name: str) -> Path:
            path = work / "runs" / name
            shutil.rmtree(path, ignore_errors=True)
            path.mkdir(parents=True)
            return path

        cases: dict[str, dict[str, list[tuple[float, float]]]] = {}

        def add(case: str, tool: str, sample: tuple[float, float]) -> None:
            cases.setdefault(case, {}).setdefault(tool, []).append(sample)

        single = f"pull 1 x {big_size // MiB} MiB"
        multi = f"pull 8 x {layer_size // MiB} MiB"
        push = f"push 1 x {big_size // MiB} MiB"
        for i in range(args.runs):
            if "pull" in args.cases:  # pull one large blob
                d = fresh("sxpm")
                add(single, "sxpm", run([sys.executable, "-m", "sxpm", "pull",
                                         f"{host}/bench/big:1", "-q"], sxpm_env(d)))
                d = fresh("curl")
                add(single, "curl", run(["curl", "-sf", "-o", str(d / "blob"),
                                         f"http://{host}/v2/bench/big/blobs/{big_digest}"]))
                # The choices behind the default, measured beside it: two streams of
                # ranges (the default for a registry that is not on loopback), and
                # writes through the page cache (the fallback without direct I/O).
                for label, extra in VARIANTS.items():
                    d = fresh("sxpm")
                    add(single, label, run([sys.executable, "-m", "sxpm", "pull",
                                            f"{host}/bench/big:1", "-q"], {**sxpm_env(d), **extra}))
                d = fresh("oras")
                add(single, "oras", run([sys.executable, "-c", ORAS_PULL, host,
                                         f"{host}/bench/big:1", str(d)], python_env()))
            if "layers" in args.cases:  # pull eight layers
                d = fresh("sxpm")
                add(multi, "sxpm", run([sys.executable, "-m", "sxpm", "pull",
                                        f"{host}/bench/layers:1", "-q", "-j", "8"], sxpm_env(d)))
                d = fresh("curl")
                cmd = ["curl", "-sf", "--parallel", "--parallel-max", "8"]
                for n, url in enumerate(layer_urls):
                    cmd += ["-o", str(d / f"l{n}"), url]
                add(multi, "curl (parallel)", run(cmd))
                d = fresh("oras")
                add(multi, "oras", run([sys.executable, "-c", ORAS_PULL, host,
                                        f"{host}/bench/layers:1", str(d)], python_env()))
            if "push" in args.cases:
                # push one large blob to an empty repository (no mount source)
                d = fresh("sxpm-push")
                make_artifact(d, f"oci:{work}/layout/big:1", [big])
                add(push, "sxpm", run([sys.executable, "-m", "sxpm", "push",
                                       f"oci:{work}/layout/big:1", "--to",
                                       f"{host}/push-sxpm-{i}/big:1", "-q"], sxpm_env(d)))
                req = urllib.request.Request(f"http://{host}/v2/push-curl-{i}/blobs/uploads/",
                                             method="POST", data=b"")
                location = urllib.request.urlopen(req).headers["Location"]
                sep = "&" if "?" in location else "?"
                add(push, "curl -T", run(["curl", "-sf", "-T", str(big), "-H",
                                          "Content-Type: application/octet-stream",
                                          f"{location}{sep}digest={big_digest}"]))
                add(push, "oras", run([sys.executable, "-c", ORAS_PUSH, host,
                                       f"{host}/push-oras-{i}/big:1", str(big)], python_env()))
                shutil.rmtree(work / "layout", ignore_errors=True)
                repos = reg.root / "docker" / "registry" / "v2" / "repositories"
                for name in (f"push-sxpm-{i}", f"push-curl-{i}", f"push-oras-{i}"):
                    shutil.rmtree(repos / name, ignore_errors=True)

        if "delta" in args.cases:  # re-pull after one of eight layers changed,
            # bytes counted by a proxy
            changed = data / "layer-3.bin"
            write_random(changed, layer_size)
            make_artifact(seed, f"{host}/bench/layers:2", layers)
            subprocess.run([sys.executable, "-m", "sxpm", "push", f"{host}/bench/layers:2", "-q"],
                           env=sxpm_env(seed), check=True, stdout=subprocess.DEVNULL)
            proxy = FaultProxy(host)
            d = fresh("delta")
            subprocess.run([sys.executable, "-m", "sxpm", "pull", f"{proxy.host}/bench/layers:1",
                            "-q"], env=sxpm_env(d), check=True, stdout=subprocess.DEVNULL)
            proxy.clear()
            subprocess.run([sys.executable, "-m", "sxpm", "pull", f"{proxy.host}/bench/layers:2",
                            "-q"], env=sxpm_env(d), check=True, stdout=subprocess.DEVNULL)
            fetched = proxy.bytes_sent("/blobs/")
            proxy.close()
            notes.append(f"re-pull after one of eight layers changed: {fetched:,} blob bytes "
                         f"fetched for a {layer_size:,}-byte changed layer "
                         f"({fetched / layer_size:.3f}x; target <= 1.01x)")
        for case, tools in cases.items():
            results[case] = {tool: median(samples) for tool, samples in tools.items()}
    finally:
        reg.stop()
        shutil.rmtree(work, ignore_errors=True)

    baseline = {single: "curl", multi: "curl (parallel)", push: "curl -T"}
    targets = {single: 1.15, multi: 1.15, push: 1.25}
    lines = [START, "",
             f"Run `{' '.join(['python', 'benchmarks/bench_transfer.py', *sys.argv[1:]])}` "
             f"on {platform.machine()} with {os.cpu_count()} CPUs, Python "
             f"{platform.python_version()}, docker-registry on loopback; medians of "
             f"{args.runs} runs{' (quick sizes)' if args.quick else ''}, on a machine shared "
             f"with other work (load average {load_before:.1f} before, "
             f"{os.getloadavg()[0]:.1f} after). Each tool runs as "
             "its own process (start-up included); peak RSS is that process's.", "",
             "| case | tool | wall (s) | vs curl | target | peak RSS (MiB) |",
             "| --- | --- | ---: | ---: | ---: | ---: |"]
    for case, tools in results.items():
        base = tools[baseline[case]][0]
        for tool, (wall, rss) in tools.items():
            target = f"<= {targets[case]:.2f}x" if tool == "sxpm" else ""
            lines.append(f"| {case} | {tool} | {wall:.2f} | {wall / base:.2f}x | {target} "
                         f"| {rss:.0f} |")
    lines += ["", *(f"- {n}" for n in notes), "", END]
    table = "\n".join(lines)
    print(table)
    if args.no_write or set(args.cases.split(",")) != set(CASES):
        return  # a partial run leaves the page as it is
    from _doc import replace_block

    replace_block(START, END, table)


if __name__ == "__main__":
    main()
