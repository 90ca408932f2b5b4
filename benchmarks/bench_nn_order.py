"""What the NN step's order and copy budget cost at sampling time; writes a section of BENCHMARKS.md.

    python benchmarks/bench_nn_order.py [--data DIR] [--n-train 1024] [--n 1000] [--repeat 3]

The default model (q = 16, K from N) on the first N photos of the reproduction report's training
pool; 1,000 LR-GMM-NN latents per setting (decoding excluded), the median of ``--repeat`` runs
after a warm-up, in one process: eq. 5 in parallel (the paper's step) and in raster order, each
without and with a copy budget of 0.25.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_mixture import _latents, training_pool  # noqa: E402
from bench_core import run_header, write_section  # noqa: E402

SECTION = "## NN step: order and copy budget"
SETTINGS = [("parallel", 1.0), ("parallel", 0.25), ("raster", 1.0), ("raster", 0.25)]  # 1.0: no budget


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=None)
    ap.add_argument("--n-train", type=int, default=1024)
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("-o", "--output", type=Path, default=ROOT / "BENCHMARKS.md")
    args = ap.parse_args(argv)
    from lrgmm.core.model import LRGMM

    model = LRGMM().fit(_latents(training_pool(args.data)[: args.n_train]))
    rows = []
    for order, share in SETTINGS:
        model.sample(64, seed=0, nn_order=order, max_share=share)  # warm-up
        times = []
        for r in range(args.repeat):
            t = time.perf_counter()
            model.sample(args.n, seed=1 + r, nn_order=order, max_share=share)
            times.append(time.perf_counter() - t)
        rows.append((order, share, 1e3 * statistics.median(times) / args.n))
        print(order, share, f"{rows[-1][2]:.3f} ms/face", file=sys.stderr)
    base = rows[0][2]
    lines = [
        SECTION,
        "",
        f"{run_header('bench_nn_order.py', argv)} Default model on the first "
        f"{args.n_train:,} photos of the training pool (K = {model.n_components_}); {args.n:,} LR-GMM-NN latents per "
        f"setting, decoding excluded, median of {args.repeat} runs after a warm-up.",
        "",
        "| NN step | copy budget | sampling ms/face | against parallel, no budget |",
        "|---|---|---|---|",
    ]
    for order, share, ms in rows:
        lines.append(f"| {order} | {'none' if share >= 1 else share} | {ms:.3f} | {ms / base:.2f}x |")
    lines += ["", "Target: sampling <= 2 ms per face before decoding.", ""]
    write_section(args.output, SECTION, "\n".join(lines))


if __name__ == "__main__":
    main(sys.argv[1:])
