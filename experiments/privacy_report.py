"""The copy budget and copying at N = 1,024: what a budget costs, and LR-GMM-NN beside the
LatentPatch-style baseline, at a sample size that can tell them apart.

    python -m experiments.privacy_report [--data DIR] [--out reports/] [--n 1000] [--seeds 3]

The reproduction report's protocol (``experiments.reproduction``, quick scale: UTKFace permuted with seed 0,
the last 3,000 photos held out, 2,000 of them the reference), restricted to N = 1,024:

- its table for every generator (100 faces each) with the copying columns: C_T (Meehan et al.
  2020) and the authentic share (Alaa et al. 2022), on Inception features;
- its privacy stage: LR-GMM-NN under the quick scale's copy budgets (``SCALES["quick"].budgets``:
  1 (off), 0.25, 0.20 (the default) and 0.10), and the LatentPatch-style baseline, ``--n``
  faces per seed and ``--seeds`` seeds each (FID, KID,
  precision/recall, near copies, C_T, authenticity, largest single-photo share), with the
  memorisation figure of both generators.

Writes ``OUT/privacy.md``, ``OUT/privacy.json`` and ``OUT/figures/privacy/`` (memorisation
figures, sample grids). ``python -m experiments.reproduction`` runs the same privacy stage inside the whole report.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
import warnings
from dataclasses import replace
from pathlib import Path

import torch

from lrgmm.demo import find_demo_data
from lrgmm.io.atomic import atomic_write_bytes, atomic_write_json
from experiments.reproduction import SCALES, ReportRun, _Context, _privacy_md, _table_md


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=None, help="face folder (default: the shared UTKFace folder)")
    ap.add_argument("--out", type=Path, default=Path("reports"))
    ap.add_argument("--n", type=int, default=1000, help="faces per seed in the privacy rows")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--train", type=int, default=1024, help="training photos N")
    ap.add_argument("--budgets", type=float, nargs="+", default=None,
                    help="copy budgets to measure (default: the report's, "
                         + " ".join(f"{b:g}" for b in SCALES["quick"].budgets) + "; 1 = off)")
    ap.add_argument("--scale", choices=["quick", "test"], default="quick",
                    help="the report scale whose split and reference sizes are used (test: a smoke run on a few photos)")
    args = ap.parse_args(argv)

    scale = replace(SCALES[args.scale], name="privacy", train_sizes=(args.train,), sweep_n=args.train, fid_vs_n_extra=(),
                    main_sizes=(), n_privacy=args.n, noise_seeds=args.seeds)
    if args.budgets:
        scale = replace(scale, budgets=tuple(args.budgets))
    cmd = "python -m experiments.privacy_report " + " ".join(argv if argv is not None else sys.argv[1:])
    (args.out / "figures").mkdir(parents=True, exist_ok=True)
    ctx = _Context(scale=scale, data=args.data or find_demo_data(), out=args.out, progress=True, command=cmd.strip())
    run = ReportRun(ctx)
    run.fig_dir = args.out / "figures" / "privacy"  # beside, not over, the reproduction report's figures
    run.fig_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        run.split()
        run.table()
        run.privacy()
    total = time.perf_counter() - start
    mem = ctx.figures.get("memorisation", {})
    ctx.figures = {"memorisation": {k: f"privacy/{v}" for k, v in mem.items()}}
    (n, rows), = ctx.results["table"].items()
    fi = ctx.results["fit_info"][n]
    md = [
        f"# Privacy: the copy budget and copying at N = {fi['n_used']}",
        "",
        f"Produced by `{ctx.command}` in {total / 60:.0f} min on {platform.machine()}, {os.cpu_count()} CPU cores "
        f"(torch {torch.__version__}, {torch.get_num_threads()} threads), {time.strftime('%Y-%m-%d')}. "
        f"Reference: {len(ctx.heldout)} held-out photos (never trained on); training set: the first {n} photos of "
        f"the reproduction report's training pool (K = {fi['K']}).",
        "",
        f"## Every generator ({scale.n_table} faces each)",
        "",
        "C_T and authentic on Inception features (C_T << 0: copying; ~0: like new photos). At 100 faces C_T has "
        "few cells; the 1,000-face rows below are the ones to read.",
        "",
        *_table_md(rows),
        "",
        *_privacy_md(ctx.results["privacy"], ctx.figures),
    ]
    atomic_write_bytes(args.out / "privacy.md", "\n".join(md).encode())
    payload = {"command": ctx.command, "seconds": total, "table": rows, "fit_info": fi,
               "privacy": ctx.results["privacy"], "figures": ctx.figures}
    atomic_write_json(args.out / "privacy.json", payload)
    print(f"wrote {args.out / 'privacy.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
