"""Does bf16 arithmetic in the autoencoder change the faces? FID, KID and precision/recall of
the default LR-GMM-NN with TAEF2 in fp32 and in bf16, measured in one run.

    python -m experiments.precision_report [--seeds 3] [--n 1000] [--train 1024] [--out reports/]

Three setups on the reproduction report's split (training: the first ``--train`` photos of the
pool; reference: its 2,000 held-out photos), each drawn with the same seeds:

- ``fp32``: latents encoded and faces decoded in fp32 (the baseline);
- ``bf16 decode``: the same fitted model and the same latent draws, decoded in bf16;
- ``bf16 encode + decode``: the model fitted on latents encoded in bf16, decoded in bf16.

Metrics are computed in fp32 (Inception). Writes ``precision.md``, ``precision.jsonl`` (one row
per setup and seed; rows already there are reused) and ``figures/precision/grids.png``.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import sys
import warnings
from pathlib import Path

import numpy as np
import torch

from lrgmm.autoencoders import get_autoencoder
from lrgmm.baselines import LRGMMNNGenerator
from lrgmm.figures import labelled_rows
from lrgmm.io.atomic import atomic_write_bytes
from lrgmm.io.images import make_grid
from lrgmm.pipeline import FacePipeline
from experiments.reproduction import EVAL_SEED, FIGURE_SEED, ReportRun, _gap

SETUPS = ("fp32", "bf16 decode", "bf16 encode + decode")
METRICS = ("fid", "kid", "precision", "recall", "generation_ms")


def _pipelines(run: ReportRun, n_train: int) -> dict[str, FacePipeline]:
    fp32 = run.pipeline(n_train)
    bf16_decode = copy.copy(fp32)
    bf16_decode.autoencoder_ = get_autoencoder("taef2", batch_size=fp32.batch_size, precision="bf16")
    files = run.c.pool[:n_train]
    encoded = FacePipeline(precision="bf16", progress=True).encode(files)
    both = FacePipeline(precision="bf16", progress=False).fit(encoded)
    return {"fp32": fp32, "bf16 decode": bf16_decode, "bf16 encode + decode": both}


def _summary(rows: list[dict]) -> dict[str, dict]:
    out = {}
    for name in SETUPS:
        rs = [r for r in rows if r["setup"] == name]
        if not rs:
            continue
        s = {"seeds": len(rs), "n": rs[0]["n"]}
        for k in METRICS:
            v = np.array([r[k] for r in rs], dtype=float)
            s[k] = float(v.mean())
            s[k + "_sd"] = float(v.std(ddof=1)) if len(v) > 1 else None
        out[name] = s
    return out


def _pm(s: dict, k: str, fmt: str, scale: float = 1.0) -> str:
    sd = s.get(k + "_sd")
    return fmt.format(s[k] * scale) + (" ± " + fmt.format(sd * scale) if sd is not None else "")


def write_markdown(out: Path, rows: list[dict], meta: dict) -> Path:
    summary = _summary(rows)
    lines = ["# The autoencoder in bf16: does it change the faces?", "",
             f"Produced by `{meta['command']}` on {meta['machine']}. Default LR-GMM-NN (N = {meta['train']} training "
             f"photos of the reproduction split), {meta['n_reference']} held-out photos as the reference; every setup "
             "drawn with the same seeds. Metrics in fp32 (Inception-v3).", "",
             "| setup | seeds x faces | FID | KID x 1e3 | precision | recall | draw + decode ms/face (in the run) |",
             "|---|---|---|---|---|---|---|"]
    for name, s in summary.items():
        lines.append(f"| {name} | {s['seeds']} x {s['n']} | {_pm(s, 'fid', '{:.2f}')} | {_pm(s, 'kid', '{:.2f}', 1e3)} | "
                     f"{_pm(s, 'precision', '{:.3f}')} | {_pm(s, 'recall', '{:.3f}')} | {s['generation_ms']:.1f} |")
    base = summary.get("fp32")
    if base:
        lines += ["", "Against fp32 (setup minus fp32; 2 sd: twice the sd of the difference of seed means):", "",
                  "| setup | FID gap | 2 sd | KID x 1e3 gap | 2 sd | within the seed spread |", "|---|---|---|---|---|---|"]
        for name, s in summary.items():
            if name == "fp32":
                continue
            dF, sF = _gap(base, s, "fid")
            dK, sK = _gap(base, s, "kid")
            within = "–" if sF is None else ("yes" if abs(dF) <= sF and abs(dK) <= sK else "no")
            fmt2 = (lambda v: "–" if v is None else f"{v:.2f}")
            lines.append(f"| {name} | {dF:+.2f} | {fmt2(sF)} | {1e3 * dK:+.2f} | "
                         f"{fmt2(None if sK is None else 1e3 * sK)} | {within} |")
    lines += ["", f"The same draws (seed {FIGURE_SEED}), 8 faces per setup:", "", "![grids](figures/precision/grids.png)", ""]
    path = out / "precision.md"
    atomic_write_bytes(path, ("\n".join(lines) + "\n").encode())
    return path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--n", type=int, default=1000, help="faces per setup and seed")
    ap.add_argument("--train", type=int, default=1024)
    ap.add_argument("--data", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=Path("reports"))
    args = ap.parse_args(argv)

    cmd = "python -m experiments.precision_report " + " ".join(argv if argv is not None else sys.argv[1:])
    run = ReportRun.at_one_n(args.train, args.out, cmd, args.data)
    ctx = run.c
    args.out.mkdir(parents=True, exist_ok=True)
    store = args.out / "precision.jsonl"
    rows = [json.loads(line) for line in store.read_text().splitlines()] if store.exists() else []
    have = {(r["setup"], r["seed"], r["n"], r["N"]) for r in rows}
    pipes = _pipelines(run, args.train)
    grid_rows = []
    for name, pipe in pipes.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            gen = LRGMMNNGenerator(pipe).fit()
        ev = run.evaluator(pipe, memorisation=False)
        for seed in [EVAL_SEED + i for i in range(args.seeds)]:
            if (name, seed, args.n, args.train) in have:
                continue
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                res = ev.evaluate(gen, args.n, seed=seed, name=name)
            row = {"setup": name, "seed": seed, "n": args.n, "N": args.train, "fid": res.fid, "kid": res.kid.mean,
                   "precision": res.pr.precision, "recall": res.pr.recall,
                   "generation_ms": 1e3 * res.timings["generation"] / args.n,
                   "precision_used": pipe.autoencoder_.precision,
                   "encoding_precision": getattr(pipe, "encoding_precision_", "fp32")}
            with store.open("a") as fh:
                fh.write(json.dumps(row) + "\n")
            rows.append(row)
            print(f"{name} seed {seed}: FID {row['fid']:.2f} KID {1e3 * row['kid']:.2f} "
                  f"P {row['precision']:.3f} R {row['recall']:.3f}", flush=True)
        grid_rows.append((name, make_grid(gen.generate(8, seed=FIGURE_SEED).images, ncols=8)))
    labelled_rows(grid_rows, args.out / "figures" / "precision" / "grids.png")
    meta = {"command": ctx.command, "train": args.train, "n_reference": len(ctx.heldout),
            "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__}"}
    print(f"wrote {write_markdown(args.out, rows, meta)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
