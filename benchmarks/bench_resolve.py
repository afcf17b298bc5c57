"""Resolver and project benchmarks (issue: resolver, simplex.toml, simplex.lock).

    python benchmarks/bench_resolve.py [--runs 5] [--sizes 1000,10000,100000]

Measures, on synthetic indexes of N names x 20 versions with dependency chains 5 deep:
resolving a 50-requirement project, reporting a conflict, a no-op
``sxpm install --frozen`` of 50 installed artifacts (the whole command, as a user runs
it), and ``sxpm --help``. Writes the table into docs/benchmarks.md between the
``resolve`` markers.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sxpm.core.versions import VersionReq  # noqa: E402
from sxpm.resolver import Requirement, ResolutionImpossible, resolve  # noqa: E402
from sxpm.resolver.lines import LinesProvider  # noqa: E402

LEVELS = 5
VERSIONS = 20


def synthetic_lines(n_names: int) -> list[dict]:
    """N names in 5 levels; every version of a name depends on one name a level down.

    So each of the project's requirements starts a chain 5 deep.
    """
    per_level = n_names // LEVELS
    lines = []
    for i in range(n_names):
        level = i // per_level
        for v in range(VERSIONS):
            major, minor = 1 + v // 10, v % 10
            deps = []
            if level < LEVELS - 1:
                base = (level + 1) * per_level
                for k in (1,):
                    target = base + (i * 7 + k * 13) % per_level
                    deps.append({"name": f"n{target}", "req": f"^{1 + (i + k) % 2}",
                                 "kind": "package"})
            lines.append({"name": f"n{i}", "vers": f"{major}.{minor}.0", "kind": "package",
                          "digest": f"sha256:{i:032x}{v:032x}", "ref": f"reg.example/n{i}",
                          "deps": deps})
    return lines


def project(n_names: int, count: int = 50) -> list[Requirement]:
    per_level = n_names // LEVELS
    return [Requirement(f"n{(k * 37) % per_level}", "package", VersionReq.parse("*"))
            for k in range(count)]


def timed(fn, runs: int) -> float:  # noqa: ANN001
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench_resolve(n_names: int, runs: int) -> dict[str, float]:
    lines = synthetic_lines(n_names)
    reqs = project(n_names)

    # The provider is built outside the timing: like an index, it parses only the
    # names a resolution reaches, and each run gets a fresh one.
    providers = [LinesProvider(lines) for _ in range(2 * runs + 1)]

    def ok() -> None:
        resolve(reqs, providers.pop())

    result = resolve(reqs, providers.pop())
    # A conflict: pin one name the first requirement reaches to a major nobody allows.
    first = next(iter(result.artifacts.values()))
    target = first.deps[0].name
    wrong = "^2" if first.deps[0].req.text == "^1" else "^1"
    bad = [*reqs, Requirement(target, "package", VersionReq.parse(wrong))]

    def conflict() -> None:
        try:
            resolve(bad, providers.pop())
        except ResolutionImpossible:
            return
        raise AssertionError("expected a conflict")

    row = {"names": n_names, "resolved": len(result.artifacts),
           "resolve_s": timed(ok, runs), "conflict_s": timed(conflict, runs)}
    row["index_resolve_s"] = bench_index_resolve(lines, reqs, runs)
    return row


def bench_index_resolve(lines: list[dict], reqs: list[Requirement], runs: int) -> float:
    """The same resolution through the index client over an index directory on disk:
    one file read and parsed (and checked) per name the resolution reaches."""
    from sxpm.index.format import index_path
    from sxpm.index.provider import IndexProvider

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "config.json").write_text(json.dumps(
            {"format": 1, "default_registry": "reg.example"}))
        by_name: dict[str, list[str]] = {}
        for line in lines:
            full = {"artifactType": "application/vnd.simplex.package.manifest.v1+json",
                    "size": 1000, "variants": [], "description": "", "license": "MIT",
                    "tags": [], "yanked": False, **line}
            by_name.setdefault(line["name"], []).append(json.dumps(full))
        for name, rows in by_name.items():
            path = root / index_path(name)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("\n".join(rows) + "\n")

        def once() -> None:
            resolve(reqs, IndexProvider.open(str(root)))

        once()  # page cache
        return timed(once, runs)


def bytecode_cache(env: dict[str, str], tmp: Path) -> None:
    """As installed by pip, sxpm's modules are byte-compiled; with PYTHONDONTWRITEBYTECODE
    set, every run would compile sxpm from source instead. So the benchmark enables the
    byte-code cache, in a private prefix (the checkout gets no __pycache__)."""
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(tmp / "pycache")


def sxpm(*args: str, env: dict[str, str], cwd: Path) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "sxpm", *args], env=env, cwd=cwd, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def bench_frozen_install(runs: int) -> float:
    """A project of 50 small packages, installed; then time no-op install --frozen."""
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        env = {**os.environ, "SIMPLEX_HOME": str(work / "home"), "PYTHONPATH": str(ROOT)}
        bytecode_cache(env, work)
        reg = work / "registry"
        deps = []
        from sxpm.artifacts.pack import pack
        from sxpm.home import Home
        from sxpm.ops.transfer import push

        home = Home(work / "home")
        for i in range(50):
            src = work / "src" / f"pkg{i}"
            src.mkdir(parents=True)
            (src / "simplex.toml").write_text(
                f'[package]\nname = "pkg{i}"\nversion = "1.0.{i}"\n')
            (src / "main.py").write_text(f"print({i})\n")
            result = pack(home, "package", src, home.parse_ref(f"oci:{reg}/pkg{i}:1.0.{i}"))
            push(home, result.ref)
            deps.append(f'pkg{i} = "^1.0"')
        proj = work / "proj"
        proj.mkdir()
        (proj / "simplex.toml").write_text(
            '[package]\nname = "bench"\nversion = "0.1.0"\n\n[dependencies]\n'
            + "\n".join(deps) + f'\n\n[registries]\ndefault = "oci:{reg}"\n')
        sxpm("install", env=env, cwd=proj)
        sxpm("install", "--frozen", env=env, cwd=proj)  # warm: page and byte-code caches
        times = [sxpm("install", "--frozen", env=env, cwd=proj) for _ in range(runs)]
        return statistics.median(times)


def bench_help(runs: int) -> float:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with tempfile.TemporaryDirectory() as tmp:
        bytecode_cache(env, Path(tmp))
        sxpm("--help", env=env, cwd=ROOT)  # fills the byte-code cache
        return statistics.median(sxpm("--help", env=env, cwd=ROOT) for _ in range(runs))


def write_table(rows: list[dict], frozen: float, help_s: float, runs: int) -> str:
    lines = [
        f"Medians of {runs} runs; synthetic index of N names x {VERSIONS} versions, "
        f"dependency chains {LEVELS} deep, a 50-requirement project "
        "(`benchmarks/bench_resolve.py`).",
        "",
        "| names | artifacts resolved | resolve (lines in memory) | resolve (index on disk) "
        "| report a conflict |",
        "| ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(f"| {r['names']:,} | {r['resolved']} | {r['resolve_s'] * 1000:.0f} ms "
                     f"| {r['index_resolve_s'] * 1000:.0f} ms "
                     f"| {r['conflict_s'] * 1000:.0f} ms |")
    lines += [
        "",
        "| command | wall | target |",
        "| --- | ---: | ---: |",
        f"| no-op `sxpm install --frozen`, 50 installed artifacts | {frozen * 1000:.0f} ms "
        "| < 300 ms |",
        f"| `sxpm --help` | {help_s * 1000:.0f} ms | < 250 ms |",
    ]
    return "\n".join(lines)


def update_doc(section: str, body: str) -> None:
    from _doc import replace_block

    replace_block(f"<!-- {section}:start -->", f"<!-- {section}:end -->",
                  f"<!-- {section}:start -->\n{body}\n<!-- {section}:end -->")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--sizes", default="1000,10000,100000")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    rows = []
    for n in map(int, args.sizes.split(",")):
        row = bench_resolve(n, args.runs)
        print(json.dumps(row))
        rows.append(row)
    frozen = bench_frozen_install(args.runs)
    print(json.dumps({"install_frozen_noop_s": frozen}))
    help_s = bench_help(args.runs)
    print(json.dumps({"help_s": help_s}))
    table = write_table(rows, frozen, help_s, args.runs)
    print(table)
    if not args.no_write:
        update_doc("resolve", "## Resolver and project commands\n\n" + table)
    shutil.rmtree(ROOT / "benchmarks" / "__pycache__", ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
