"""What the NN step's order and copy budget cost at sampling time; writes a section of BENCHMARKS.md.

    python benchmarks/bench_nn_order.py [--data DIR] [--n-train 1024 ...] [--n 1000] [--repeat 3]

The default model (q = 16, K from N) on the first N photos of the reproduction report's training
pool (``all``: the whole pool), for each N given; 1,000 LR-GMM-NN latents per setting (decoding
excluded; the copied pixels' latents gathered), the median of ``--repeat`` runs after a warm-up,
in one process: eq. 5 in parallel (the paper's step) and in raster order, each without and with
a copy budget of 0.25; raster order with 0.20 (the default) and 0.10 budgets; two parallel
iterations with a 0.20 budget. psi (``spread``) scales the draws and costs nothing here.
Budgets are set as the model's default, so a cluster too small for one gets the even
split instead (``lrgmm.core.nn_projection``, "Copy budget").
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
# (order, NN iterations, copy budget; 1.0: none)
SETTINGS = [("parallel", 1, 1.0), ("parallel", 1, 0.25), ("raster", 1, 1.0), ("raster", 1, 0.25), ("raster", 1, 0.2),
            ("raster", 1, 0.1), ("parallel", 2, 0.2)]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=None)
    ap.add_argument("--n-train", nargs="+", default=["1024"], help="training photos N (or 'all'), one table row group each")
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("-o", "--output", type=Path, default=ROOT / "BENCHMARKS.md")
    args = ap.parse_args(argv)
    from lrgmm.core.model import LRGMM

    pool = training_pool(args.data)
    rows = []
    for size in args.n_train:
        n_train = len(pool) if size == "all" else int(size)
        model = LRGMM().fit(_latents(pool[:n_train]))
        n_fit = int(model.codes_.shape[0])
        base = None
        for order, iterations, share in SETTINGS:
            model.max_share = share  # as the model's default: met wherever a cluster can
            model.sample(64, seed=0, nn_order=order, nn_iterations=iterations)  # warm-up
            times = []
            for r in range(args.repeat):
                t = time.perf_counter()
                model.sample(args.n, seed=1 + r, nn_order=order, nn_iterations=iterations)
                times.append(time.perf_counter() - t)
            ms = 1e3 * statistics.median(times) / args.n
            base = ms if base is None else base
            rows.append((n_fit, model.n_components_, order, iterations, share, ms, ms / base))
            print(n_fit, order, iterations, share, f"{ms:.3f} ms/face", file=sys.stderr)
    lines = [
        SECTION,
        "",
        f"{run_header('bench_nn_order.py', argv)} Default model on the first N photos of the training pool; "
        f"{args.n:,} LR-GMM-NN latents per setting, decoding excluded (the copied pixels' latents gathered), "
        f"median of {args.repeat} runs after a warm-up.",
        "",
        "| N | K | NN step | iterations | copy budget | sampling ms/face | against parallel, no budget |",
        "|---|---|---|---|---|---|---|",
    ]
    for n_fit, k, order, iterations, share, ms, ratio in rows:
        lines.append(f"| {n_fit:,} | {k} | {order} | {iterations} | {'none' if share >= 1 else share} | {ms:.3f} | "
                     f"{ratio:.2f}x |")
    lines += ["", "Target: sampling <= 2 ms per face before decoding. Raster order advances every cluster drawn "
              "together, position by position; its cost grows with the cluster size m (a (b, m) window-sum update "
              "per position and face), where the parallel step is one GEMM per position.", ""]
    write_section(args.output, SECTION, "\n".join(lines))


if __name__ == "__main__":
    main(sys.argv[1:])
