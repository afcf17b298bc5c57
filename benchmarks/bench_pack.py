"""`sxpm pack model` on a GGUF with a 262,144-token vocabulary, against `sha256sum`.

Packing hashes the file once into the store; reading its metadata should add little.
The file is written with the gguf package's writer: a llama header, a vocabulary of
``--vocab`` tokens (scores and types too, as current models carry) and ``--mib`` MiB
of F16 tensors. Each run is a fresh process with a fresh home, timed by
``/usr/bin/time -v`` (wall clock and peak RSS).

    python benchmarks/bench_pack.py [--vocab 262144] [--mib 512] [--runs 3]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def write_model(path: Path, vocab: int, mib: int) -> None:
    import gguf
    import numpy as np

    w = gguf.GGUFWriter(path, "llama")
    w.add_type(gguf.GGUFType.MODEL)
    w.add_name("bench-vocab")
    w.add_file_type(int(gguf.LlamaFileType.MOSTLY_F16))
    w.add_block_count(8)
    w.add_context_length(4096)
    w.add_embedding_length(1024)
    w.add_tokenizer_model("llama")
    w.add_token_list([f"<tok{i}>" for i in range(vocab)])
    w.add_token_scores([0.0] * vocab)
    w.add_token_types([1] * vocab)
    per = mib // 8
    for i in range(8):
        w.add_tensor(f"blk.{i}.ffn.weight", np.zeros((per * 512, 1024), dtype=np.float16))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def timed(cmd: list[str], env: dict[str, str]) -> tuple[float, int]:
    """(wall seconds, peak RSS in KiB) of ``cmd``."""
    out = subprocess.run(["/usr/bin/time", "-v", *cmd], env=env, capture_output=True,
                         text=True, check=True)
    wall = re.search(r"Elapsed \(wall clock\) time.*: (?:(\d+):)?(\d+(?:\.\d+)?)", out.stderr)
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", out.stderr)
    assert wall and rss, out.stderr
    return int(wall.group(1) or 0) * 60 + float(wall.group(2)), int(rss.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--vocab", type=int, default=262_144)
    parser.add_argument("--mib", type=int, default=512)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="sxpm-bench-pack-") as tmp:
        base = Path(tmp)
        model = base / "model.gguf"
        write_model(model, args.vocab, args.mib)
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        sha, pack, rss = [], [], []
        for i in range(args.runs):
            sha.append(timed(["sha256sum", str(model)], env)[0])
            home = base / f"home{i}"
            wall, kib = timed([sys.executable, "-m", "sxpm", "pack", "model", str(model),
                               "--ref", f"oci:{base}/reg/bench:1.0.0"],
                              {**env, "SIMPLEX_HOME": str(home)})
            pack.append(wall)
            rss.append(kib)
            shutil.rmtree(home)
        size = model.stat().st_size
        print(f"file: {size / 2**20:.0f} MiB, {args.vocab} tokens")
        print(f"sha256sum: {statistics.median(sha):.2f} s (median of {args.runs})")
        print(f"sxpm pack model: {statistics.median(pack):.2f} s, "
              f"ratio {statistics.median(pack) / statistics.median(sha):.2f}x, "
              f"peak RSS {max(rss) / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
