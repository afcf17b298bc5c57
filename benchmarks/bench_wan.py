"""WAN benchmark: sxpm, curl, aria2c and the oras client over a shaped link.

    apt-get install -y aria2 docker-registry curl      # aria2c, the parallel downloader
    pip install -e '.[bench]'                           # the oras client
    python benchmarks/bench_wan.py                      # 1 GiB and 8 x 128 MiB, 40 ms, 20 MiB/s
    python benchmarks/bench_wan.py --big-mib 128 --layer-mib 16   # a quick run

Starts a docker-registry on loopback and a shaping proxy in front of it
(benchmarks/wanproxy.py: ``--latency-ms`` per request, ``--rate-mib`` per connection),
then pulls the same blobs through the proxy with each tool, one after the other, in
one run: sxpm (``sxpm pull``), curl (one stream), ``aria2c -x16 -s16`` and the oras
Python client. It also pulls the large blob straight from the registry (loopback)
with sxpm and curl. Writes the table between ``<!-- wan:start -->`` and
``<!-- wan:end -->`` in docs/benchmarks.md (``--no-write`` only prints it).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _doc import replace_block  # noqa: E402
from bench_transfer import (  # noqa: E402
    ORAS_PULL,
    make_artifact,
    python_env,
    run,
    sxpm_env,
    write_random,
)
from registry import Registry  # noqa: E402
from wanproxy import WanProxy  # noqa: E402

MiB = 1024 * 1024
START, END = "<!-- wan:start -->", "<!-- wan:end -->"
TOOLS = ("sxpm", "curl", "aria2c", "oras")
CASES = ("single", "multi", "loopback")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--big-mib", type=int, default=1024)
    ap.add_argument("--layer-mib", type=int, default=128)
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--latency-ms", type=float, default=40.0)
    ap.add_argument("--rate-mib", type=float, default=20.0, help="per connection")
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--tools", default=",".join(TOOLS),
                    help="comma-separated subset of " + ",".join(TOOLS)
                    + " (curl is always run on loopback, as the reference there)")
    ap.add_argument("--cases", default=",".join(CASES),
                    help="comma-separated subset of " + ",".join(CASES))
    args = ap.parse_args()
    tools = set(args.tools.split(","))
    chosen = set(args.cases.split(","))
    if not tools <= set(TOOLS) or not chosen <= set(CASES):
        ap.error(f"--tools takes {','.join(TOOLS)}; --cases takes {','.join(CASES)}")
    have_oras = "oras" in tools and subprocess.run(
        [sys.executable, "-c", "import oras.client"], capture_output=True).returncode == 0
    have_aria = "aria2c" in tools and shutil.which("aria2c") is not None
    load_before = os.getloadavg()[0]
    work = Path(tempfile.mkdtemp(prefix="sxpm-wan-", dir=args.workdir))
    reg = Registry.start(work / "registry")
    # On loopback, as every server of the benchmarks; sxpm measures the link behind it
    # (SXPM_RANGE_PLAN=measure, as for a tunnel) instead of taking it for next door.
    proxy = WanProxy(reg.host, latency_s=args.latency_ms / 1000, rate=args.rate_mib * MiB)
    cases: dict[str, dict[str, list[float]]] = {}
    peaks: dict[str, dict[str, list[float]]] = {}  # peak RSS (MiB) per case and tool
    try:
        data = work / "data"
        data.mkdir()
        big = data / "big.bin"
        write_random(big, args.big_mib * MiB)
        layers = [data / f"layer-{i}.bin" for i in range(args.layers)]
        for p in layers:
            write_random(p, args.layer_mib * MiB)
        seed = work / "seed"
        make_artifact(seed, f"{reg.host}/bench/big:1", [big])
        make_artifact(seed, f"{reg.host}/bench/layers:1", layers)
        for ref in ("bench/big:1", "bench/layers:1"):
            subprocess.run([sys.executable, "-m", "sxpm", "push", f"{reg.host}/{ref}", "-q"],
                           env=sxpm_env(seed), check=True, stdout=subprocess.DEVNULL)

        def urls(host: str, repo: str) -> list[str]:
            manifest = json.loads(urllib.request.urlopen(urllib.request.Request(
                f"http://{reg.host}/v2/bench/{repo}/manifests/1",
                headers={"Accept": "application/vnd.oci.image.manifest.v1+json"})).read())
            return [f"http://{host}/v2/bench/{repo}/blobs/{d['digest']}"
                    for d in manifest["layers"]]

        def fresh(name: str) -> Path:
            path = work / "runs" / name
            shutil.rmtree(path, ignore_errors=True)
            path.mkdir(parents=True)
            return path

        def add(case: str, tool: str, measured: tuple[float, float]) -> None:
            cases.setdefault(case, {}).setdefault(tool, []).append(measured[0])
            peaks.setdefault(case, {}).setdefault(tool, []).append(measured[1])

        link = f"{args.latency_ms:g} ms, {args.rate_mib:g} MiB/s per connection"
        single = f"1 x {args.big_mib} MiB, {link}"
        multi = f"{args.layers} x {args.layer_mib} MiB, {link}"
        loop = f"1 x {args.big_mib} MiB, loopback"
        plan = [(single, "big", proxy.host, "single"), (multi, "layers", proxy.host, "multi"),
                (loop, "big", reg.host, "loopback")]
        for _ in range(args.runs):
            for case, repo, host, key in plan:
                if key not in chosen:
                    continue
                blob_urls = urls(host, repo)
                insecure = [] if host == reg.host else ["--insecure"]  # plain HTTP
                env = sxpm_env(fresh("sxpm"))
                if host != reg.host:
                    env["SXPM_RANGE_PLAN"] = "measure"
                if "sxpm" in tools:
                    add(case, "sxpm", run([sys.executable, "-m", "sxpm", "pull",
                                           f"{host}/bench/{repo}:1", "-q", *insecure], env))
                if "curl" in tools or case == loop:
                    d = fresh("curl")
                    cmd = ["curl", "-sf"]
                    if len(blob_urls) > 1:
                        cmd += ["--parallel", "--parallel-max", str(len(blob_urls))]
                    for i, url in enumerate(blob_urls):
                        cmd += ["-o", str(d / f"b{i}"), url]
                    add(case, "curl", run(cmd))
                if case == loop:
                    continue
                if have_aria:
                    d = fresh("aria2c")
                    listing = d / "urls.txt"
                    listing.write_text("".join(f"{u}\n  out=b{i}\n"
                                               for i, u in enumerate(blob_urls)))
                    add(case, "aria2c -x16 -s16", run(
                        ["aria2c", "-q", "-x16", "-s16", "-k1M", "-j", str(len(blob_urls)),
                         "--file-allocation=none", "--allow-overwrite=true", "-d", str(d),
                         "-i", str(listing)]))
                if have_oras:
                    add(case, "oras", run([sys.executable, "-c", ORAS_PULL, host,
                                           f"{host}/bench/{repo}:1", str(fresh("oras"))],
                                          python_env()))
    finally:
        proxy.close()
        reg.stop()
        shutil.rmtree(work, ignore_errors=True)
    rows = ["| case | tool | wall (s) | MiB/s | vs aria2c (throughput) | vs curl (time) "
            "| peak RSS (MiB) |", "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    for case, runs in cases.items():
        size = args.big_mib if case.startswith("1 x") else args.layers * args.layer_mib
        walls = {t: statistics.median(w) for t, w in runs.items()}
        aria = walls.get("aria2c -x16 -s16")
        for tool, wall in walls.items():
            vs_aria = f"{aria / wall:.2f}x" if aria else "-"
            vs_curl = f"{wall / walls['curl']:.2f}x" if "curl" in walls else "-"
            rss = max(peaks[case][tool])
            rows.append(f"| {case} | {tool} | {wall:.2f} | {size / wall:.0f} | {vs_aria} | "
                        f"{vs_curl} | {rss:.0f} |")
        if args.runs > 1:
            print(case, {t: [round(x, 2) for x in w] for t, w in runs.items()})
    table = "\n".join(rows)
    print(table)
    load = f"load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after"
    print(load)
    if args.no_write:
        return
    where = "loopback; sxpm plans its streams as for a far registry (SXPM_RANGE_PLAN=measure)"
    block = f"""{START}
## Over a slow link (benchmarks/bench_wan.py)

A shaping proxy (benchmarks/wanproxy.py, listening on {where}) in front of Debian's
docker-registry on loopback adds {args.latency_ms:g} ms to every request and caps
every connection at {args.rate_mib:g} MiB/s, the way CDNs and object-store-backed registries cap one
connection. Each tool pulls the same blobs through it, one after the other, in one
run ({args.runs} run(s), median; peak RSS the largest): sxpm (`sxpm pull`), curl
(one stream per blob), `aria2c -x16 -s16` and the oras Python client; then sxpm and
curl pull the large blob straight from the registry. Measured sizes: 1 x {args.big_mib} MiB and
{args.layers} x {args.layer_mib} MiB, on {os.cpu_count()} CPUs shared with other
work ({load}; {platform.python_implementation()} {platform.python_version()}); the
issue's sizes (1 GiB, 8 x 128 MiB) are the defaults.
Targets: sxpm >= 0.95x aria2c's throughput on the capped link; sxpm <= 1.0x curl's
time on loopback.

{table}

sxpm plans its streams from what the link shows (sxpm/transport/ranges.py). A host
whose answers take 30 ms or more (the manifest's and the config's already show it,
else the blob's first range) is a far link: all 16 streams of a pull (aria2c's -x16)
start at once, on 8 MiB pieces taken in offset order, each stream asking for its next
piece on a second connection as the end of its piece arrives, so the bytes arrive
close enough together to be hashed from memory while they come; what runs ahead of
the hash is written, released and read back around the page cache. Each stream
writes its own buffers (direct I/O). At the end, a stream with no piece left takes
over the second half of what another still has to read, so the last pieces do not
run at one connection's rate while the other streams wait. Eight large layers at
once would want 16 streams each: the process starts at 16 in all and adds 16 more
when the aggregate rate grows by at least a quarter with them (a link that caps each
connection), else takes them back; and a layer's slot among the `-j` transfers is free
once every piece of it is asked for, so the next layer starts while the last pieces of
the one before arrive and it is hashed and stored. A nearer registry first
sends an 8 MiB probe on one stream; its first byte and rate size the pieces (about 40
round trips long, 4-64 MiB), then 16 streams run for one window and stay only if the
aggregate rate grew with them. A LAN keeps one stream; a loopback registry is not
measured at all: one request, no probe.
The machine is shared: the proxy, the registry and each client compete for the
same 2 CPUs, so absolute rates are those of this box at that moment.
{END}"""
    print(f"wrote {replace_block(START, END, block)}")


if __name__ == "__main__":
    main()
