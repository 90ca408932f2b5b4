"""The reproduction report: every generator of ``lrgmm.baselines`` measured in one run.

    python -m experiments.reproduction [--scale quick|full|test] [--data DIR] [--out reports/]

writes ``<out>/reproduction.md``, ``<out>/reproduction.json`` (every number) and
``<out>/figures/*.png``:

- the main comparison, where the report's conclusions rest: LR-GMM-NN, LR-GMM, the
  LatentPatch-style baseline and the ex-post GMM at N = 1,024 and the whole split, 1,000 faces
  for each of 3 seeds (mean +- sd), with a frontier figure (FID against near copies, the
  fresh-photo rate marked) per N; whether more data gives better faces, and whether LR-GMM-NN
  is ahead of the baseline, are read from these rows;
- the analogue of the paper's table 1 for every training-set size N (FID, KID, precision,
  recall, near-copy shares, provenance, fit time, sampling time) for every generator, with two
  reference rows: fresh real photos at the same sample count (what FID's small-sample bias alone
  scores) and the training faces through the autoencoder (what copying scores);
- sample grids per method, provenance maps, decoded centroids (paper fig. 7), the lambda sweep
  (fig. 8: same seed, lower and higher rank) with its FID / precision / recall curve, the q sweep
  with the projector's round-trip PSNR, the K, omega and NN-iteration sweeps, FID against N, and
  the defaults these sweeps support.

Data: the shared faces (``--data``, default the shared UTKFace folder) are listed, sorted, and
permuted with a fixed seed; the last ``heldout_reserve`` photos of the permutation are held out
(never trained on): the first ``n_heldout`` of them are the real reference of every metric, the
next ``n_table`` the "fresh real photos" reference row. Training sets are the first N photos of
the rest (nested: the N = 32 set is inside the N = 1,024 set). With the default seed the
N = 1,024 set is the one ``lrgmm demo`` fits on.

Scales (``SCALES``): ``quick`` (about 1.5 hours on a 2-core CPU with the caches filled), ``full`` (the whole training
split; hours the first time, see ``Scale.expected``; the ex-post GMM on 19k codes needs ~11 GB of
memory), ``test`` (seconds, for the test suite).
Encoded latents and Inception features are cached on disk (``$LRGMM_CACHE_DIR``), so a second
run pays only for generating and decoding faces.

Figures are drawn with Pillow (no plotting library needed).
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import shlex
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw
from tqdm.auto import tqdm

from lrgmm.data.splits import holdout_split
from lrgmm.baselines import BASELINES, BaselineGenerator, LRGMMNNGenerator, make_generator
from lrgmm.evaluation import EvalResult, EvalWarning, Evaluator, memorisation_figure
from lrgmm.figures import font as _font
from lrgmm.figures import labelled_rows
from lrgmm.figures import text_size as _text_size
from lrgmm.io.atomic import atomic_write_bytes, atomic_write_json
from lrgmm.io.images import list_images, load_images, make_grid, save_png
from lrgmm.metrics.features import InceptionExtractor
from lrgmm.metrics.frechet import fid
from lrgmm.metrics.kernel_distance import kid
from lrgmm.metrics.precision_recall import precision_recall
from lrgmm.core.model import default_n_components
from lrgmm.errors import InputWarning
from lrgmm.pipeline import FacePipeline
from lrgmm.core.provenance import provenance_image

__all__ = ["SCALES", "Scale", "main", "run_report"]

SPLIT_SEED = 0  # permutation of the data folder (as ``lrgmm demo``'s subset)
EVAL_SEED = 1  # faces measured in the tables and sweeps
FIGURE_SEED = 2  # faces shown in the figures

METHOD_ORDER = ["normal", "random-pixels", "nn-from-random", "gaussian", "gmm10", "latentpatch", "lrgmm", "lrgmm-nn"]
NON_PARAMETRIC = ["random-pixels", "nn-from-random", "latentpatch"]
EX_POST = ["gaussian", "gmm10"]


@dataclass(frozen=True)
class Scale:
    """How much the report measures. ``train_sizes``: the table's N values (None: the whole
    training split). ``sweep_n``: the N of the figures and sweeps (one of ``train_sizes``)."""

    name: str
    heldout_reserve: int
    n_heldout: int
    train_sizes: tuple
    n_table: int
    n_sweep: int
    sweep_n: int
    lambdas: tuple
    qs: tuple
    ks: tuple
    omegas: tuple
    nn_iterations: tuple
    fid_vs_n_extra: tuple
    n_grid: int = 16
    n_timing: int = 256
    n_psnr: int = 64
    noise_seeds: int = 3
    expected: str = ""
    # Above this N, near copies are measured in latent-code space only: the Inception-space test
    # decodes every training code and takes its Inception features (~45 min for 19k on 2 cores).
    inception_memorisation_max_n: int | None = None
    # The privacy section, at ``sweep_n``: LR-GMM-NN under each copy budget (1.0: off) and the
    # LatentPatch-style baseline, ``n_privacy`` faces per seed, ``noise_seeds`` seeds each.
    budgets: tuple = ()
    n_privacy: int = 0
    # The main comparison, where the report's decisions rest: ``main_methods`` at each N of
    # ``main_sizes`` (table sizes; None: the whole split), ``n_main`` faces for each of
    # ``noise_seeds`` seeds. The privacy section shares its rows at the sweep N (same generator,
    # seed and n: one measurement).
    main_sizes: tuple = ()
    main_methods: tuple = ()
    n_main: int = 0


SCALES: dict[str, Scale] = {
    "test": Scale(
        name="test", heldout_reserve=24, n_heldout=16, train_sizes=(16,), n_table=8, n_sweep=8, sweep_n=16,
        lambdas=(0.06,), qs=(8,), ks=(2,), omegas=(3,), nn_iterations=(2,), fid_vs_n_extra=(24,),
        n_grid=4, n_timing=8, n_psnr=4, noise_seeds=2, budgets=(1.0, 0.5), n_privacy=12, main_sizes=(16,),
        main_methods=("lrgmm-nn", "latentpatch"), n_main=12, expected="about a minute",
    ),
    "quick": Scale(
        name="quick", heldout_reserve=3000, n_heldout=2000, train_sizes=(32, 256, 1024, None), n_table=100,
        n_sweep=100, sweep_n=1024, lambdas=(0.02, 0.06, 0.12, 0.25), qs=(4, 8, 16, 32), ks=(1, 4, 8, 16),
        omegas=(1, 3, 5, 7), nn_iterations=(1, 2, 3), fid_vs_n_extra=(128, 512), n_grid=16, n_timing=256, n_psnr=64,
        budgets=(1.0, 0.25, 0.2, 0.1), n_privacy=1000, main_sizes=(1024, None),
        main_methods=("lrgmm-nn", "lrgmm", "latentpatch", "gmm10"), n_main=1000,
        expected=("an estimated 2 hours on 2 CPU cores the first time: the whole split's encoding (~6 min), the "
                  "Inception features of its 18,917 training reconstructions for the near-copy test (~20 min) and of "
                  "the 2,000 reference photos are cached for later runs; the main comparison's 24 x 1,000 faces take "
                  "~30 min and the privacy section's 15 x 1,000 (6 of them shared with the main comparison) ~15 min; "
                  "the ex-post GMM on 19k codes needs ~11 GB"),
    ),
    "full": Scale(
        name="full", heldout_reserve=3000, n_heldout=2000, train_sizes=(32, 1024, None), n_table=500, n_sweep=300,
        sweep_n=1024, lambdas=(0.01, 0.03, 0.06, 0.12, 0.25, 0.5), qs=(4, 8, 12, 16, 24, 32), ks=(1, 2, 4, 8, 16, 32),
        omegas=(1, 3, 5, 7, 9), nn_iterations=(1, 2, 3, 4), fid_vs_n_extra=(128, 256, 512, 2048, 4096, 8192),
        n_grid=16, n_timing=256, n_psnr=128, budgets=(1.0, 0.25, 0.2, 0.1), n_privacy=1000, main_sizes=(1024, None),
        main_methods=("lrgmm-nn", "lrgmm", "latentpatch", "gmm10"), n_main=1000,
        expected=("about 3 hours on 2 CPU cores the first time, an hour of which encodes the 19,187 training "
                  "photos (~17 min) and takes the Inception features of their reconstructions for the near-copy "
                  "test (~45 min); both are cached, and a second run takes about 1.5 hours (the main comparison's "
                  "24 x 1,000 faces: ~30 min)"),
    ),
}


# ---------------------------------------------------------------------------------- plotting

_PALETTE = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
            (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207)]


def _nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return [0.0, 1.0]
    if hi - lo < 1e-12:
        lo, hi = lo - 0.5 * max(abs(lo), 1e-3), hi + 0.5 * max(abs(hi), 1e-3)
    raw = (hi - lo) / max(n - 1, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = min((m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw), default=10 * mag)
    start = math.floor(lo / step) * step
    ticks = []
    t = start
    while t <= hi + step * 0.999:
        ticks.append(round(t, 12))
        t += step
    return ticks


def _fmt_tick(v: float) -> str:
    if v == 0:
        return "0"
    a = abs(v)
    if a >= 1000 and float(v).is_integer():
        return f"{int(v):,}"
    if a >= 1000 or a < 0.01:
        return f"{v:.2g}"
    if a >= 10:
        return f"{v:.0f}"
    return f"{v:.3g}"


def line_plot(panels: list[dict], path: Path, panel_size: tuple[int, int] = (430, 330), title: str | None = None) -> Path:
    """Panels side by side, each a line chart with categorical x (equally spaced, labelled by
    value): ``{"title", "xlabel", "x": [...], "series": {label: [y or None, ...]}, "default": x}``.
    The default x value gets a dashed vertical line. Written as PNG (Pillow only)."""
    pw, ph = panel_size
    top = 34 if title else 0
    legend_labels = []
    for p in panels:
        for lab in p["series"]:
            if lab not in legend_labels:
                legend_labels.append(lab)
    colours = {lab: _PALETTE[i % len(_PALETTE)] for i, lab in enumerate(legend_labels)}
    font, small, big = _font(13), _font(11), _font(15)
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    # legend rows under the panels
    width = pw * len(panels)
    entries = [(lab, _text_size(probe, lab, small)[0] + 34) for lab in legend_labels]
    rows, cur, cw = [], [], 10
    for lab, w in entries:
        if cur and cw + w > width - 10:
            rows.append(cur)
            cur, cw = [], 10
        cur.append((lab, w))
        cw += w
    if cur:
        rows.append(cur)
    legend_h = 20 * len(rows) + 8 if len(legend_labels) > 1 else 0
    img = Image.new("RGB", (width, top + ph + legend_h), "white")
    draw = ImageDraw.Draw(img)
    if title:
        tw, _ = _text_size(draw, title, big)
        draw.text(((width - tw) // 2, 8), title, fill="black", font=big)
    for pi, p in enumerate(panels):
        x0 = pi * pw
        left, right, ptop, bottom = x0 + 62, x0 + pw - 14, top + 28, top + ph - 44
        xs = list(p["x"])
        ys = [v for s in p["series"].values() for v in s if v is not None and math.isfinite(v)]
        ylog = bool(p.get("ylog")) and bool(ys) and min(ys) > 0
        lo, hi = (min(ys), max(ys)) if ys else (0.0, 1.0)
        if ylog:
            ticks = [m * 10.0 ** e for e in range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1)
                     for m in (1, 2, 5)]
            below = [t for t in ticks if t <= lo]
            above = [t for t in ticks if t >= hi]
            ticks = [t for t in ticks if (below[-1] if below else lo) <= t <= (above[0] if above else hi)]
            tf = math.log10
        else:
            pad = 0.06 * (hi - lo) if hi > lo else 0.0
            ticks = _nice_ticks(max(lo - pad, 0.0) if lo >= 0 else lo - pad, hi + pad)

            def tf(v):
                return v
        ylo, yhi = tf(ticks[0]), tf(ticks[-1])

        def ypix(v):
            v = tf(v)
            return bottom - (v - ylo) / (yhi - ylo) * (bottom - ptop) if yhi > ylo else (bottom + ptop) / 2

        def xpix(i):
            return left + (i + 0.5) / max(len(xs), 1) * (right - left)

        tw, _ = _text_size(draw, p.get("title", ""), font)
        draw.text((x0 + (pw - tw) // 2, top + 6), p.get("title", ""), fill="black", font=font)
        for t in ticks:
            y = ypix(t)
            draw.line([(left, y), (right, y)], fill=(225, 225, 225))
            lab = _fmt_tick(t)
            lw, lh = _text_size(draw, lab, small)
            draw.text((left - lw - 6, y - lh / 2 - 2), lab, fill="black", font=small)
        draw.rectangle([left, ptop, right, bottom], outline="black")
        for i, xv in enumerate(xs):
            x = xpix(i)
            draw.line([(x, bottom), (x, bottom + 4)], fill="black")
            lab = _fmt_tick(xv) if isinstance(xv, (int, float)) else str(xv)
            lw, _ = _text_size(draw, lab, small)
            draw.text((x - lw / 2, bottom + 6), lab, fill="black", font=small)
            if p.get("default") is not None and xv == p["default"]:
                for yy in range(int(ptop), int(bottom), 8):
                    draw.line([(x, yy), (x, min(yy + 4, bottom))], fill=(120, 120, 120))
        xl = p.get("xlabel", "")
        lw, _ = _text_size(draw, xl, font)
        draw.text((left + (right - left - lw) / 2, bottom + 22), xl, fill="black", font=font)
        for lab, s in p["series"].items():
            col = colours[lab]
            pts = [(xpix(i), ypix(v)) for i, v in enumerate(s) if v is not None and math.isfinite(v)]
            if len(pts) > 1:
                draw.line(pts, fill=col, width=2)
            for x, y in pts:
                draw.ellipse([x - 3.5, y - 3.5, x + 3.5, y + 3.5], fill=col)
    if legend_h:
        y = top + ph + 2
        for row in rows:
            x = 10
            for lab, w in row:
                col = colours[lab]
                draw.line([(x, y + 8), (x + 22, y + 8)], fill=col, width=3)
                draw.text((x + 27, y + 1), lab, fill="black", font=small)
                x += w
            y += 20
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path


def frontier_plot(points: list[tuple], path: Path, fresh_rate: float = 0.05, title: str | None = None,
                  ylabel: str = "FID") -> Path:
    """FID (y) against near copies (x, % of faces): ``points`` are (label, near-copy share, FID,
    FID seed sd or None), the sd drawn as a bar; the fresh-photo rate as a dashed vertical line
    (a generator left of it copies no more than new photos resemble the training set). Pillow only."""
    W, H, L, R, T, B = 900, 540, 70, 350, 58, 60
    pts = [(lab, 100 * x, y, sd if sd is not None and math.isfinite(sd) else 0.0) for lab, x, y, sd in points
           if x is not None and y is not None and math.isfinite(x) and math.isfinite(y)]
    img = Image.new("RGB", (W, H), "white")
    d = ImageDraw.Draw(img)
    f, small = _font(13), _font(11)
    if title:
        d.text((L, 8), title, fill="black", font=f)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not pts:
        d.text((L, T), "no points with near copies", fill="black", font=f)
        img.save(path)
        return path
    xt = _nice_ticks(0.0, max([p[1] for p in pts] + [100 * fresh_rate]) * 1.1)
    yt = _nice_ticks(min(p[2] - p[3] for p in pts), max(p[2] + p[3] for p in pts))
    x0, x1, y0, y1 = xt[0], xt[-1], yt[0], yt[-1]

    def px(x):
        return L + (x - x0) / (x1 - x0) * (W - L - R)

    def py(y):
        return H - B - (y - y0) / ((y1 - y0) or 1.0) * (H - T - B)

    for t in yt:
        d.line([(L, py(t)), (W - R, py(t))], fill=(225, 225, 225))
        lab = _fmt_tick(t)
        d.text((L - _text_size(d, lab, small)[0] - 6, py(t) - 7), lab, fill="black", font=small)
    for t in xt:
        lab = _fmt_tick(t)
        d.text((px(t) - _text_size(d, lab, small)[0] / 2, H - B + 6), lab, fill="black", font=small)
    d.rectangle([L, T, W - R, H - B], outline="black")
    xf = px(100 * fresh_rate)
    for yy in range(T, H - B, 8):
        d.line([xf, yy, xf, min(yy + 4, H - B)], fill=(120, 120, 120))
    d.text((xf + 4, H - B - 16), f"fresh photos ({100 * fresh_rate:g} %)", fill=(90, 90, 90), font=small)
    d.text((L + (W - L - R) // 2 - 130, H - B + 26), "near copies, Inception space (% of faces)", fill="black", font=f)
    d.text((L, T - 20), ylabel, fill="black", font=small)
    for i, (lab, x, y, sd) in enumerate(pts):
        col = _PALETTE[i % len(_PALETTE)]
        cx, cy = px(x), py(y)
        d.line([cx, py(y - sd), cx, py(y + sd)], fill=col, width=2)
        # a shape per round of the palette, so that more than 10 points stay apart
        mark = d.ellipse if i < len(_PALETTE) else d.rectangle if i < 2 * len(_PALETTE) else d.chord
        extra = {"start": 180, "end": 360} if mark == d.chord else {}
        mark([cx - 5, cy - 5, cx + 5, cy + 5], fill=col, **extra)
        mark([W - R + 12, T + 18 * i + 3, W - R + 22, T + 18 * i + 13], fill=col, **extra)
        d.text((W - R + 28, T + 18 * i), f"{lab}: {y:.1f}", fill="black", font=small)
    img.save(path)
    return path


# ---------------------------------------------------------------------------------- the run


def timed_sampling(gen, n: int) -> float:
    """Milliseconds per face of ``gen.sample(n)`` (latents only), after a warm-up of 16 faces."""
    gen.sample(min(16, n), seed=EVAL_SEED + 999)
    t = time.perf_counter()
    gen.sample(n, seed=EVAL_SEED + 1000)
    return 1e3 * (time.perf_counter() - t) / n


def _row(res: EvalResult, method: str, label: str, n_train: int, fit_s: float | None, sample_ms: float | None) -> dict:
    mem_i = res.memorisation.get("inception")
    mem_c = res.memorisation.get("latent_codes")
    prov = res.provenance or {}
    cop = res.copying.get("inception") or res.copying.get("latent_codes")
    return {
        "method": method,
        "label": label,
        "N": n_train,
        "n": res.n,
        "seed": res.seed,
        "fid": res.fid,
        "kid": res.kid.mean,
        "kid_std": res.kid.std,
        "kid_subset_size": res.kid.subset_size,
        "precision": res.pr.precision,
        "recall": res.pr.recall,
        "near_copy_inception": mem_i.near_copy_share if mem_i else None,
        "near_copy_inception_strict": mem_i.near_copy_share_strict if mem_i else None,
        "median_ratio_inception": mem_i.median_ratio if mem_i else None,
        "near_copy_codes": mem_c.near_copy_share if mem_c else None,
        "median_ratio_codes": mem_c.median_ratio if mem_c else None,
        "distinct_sources_median": prov.get("distinct_training_images", {}).get("median"),
        "largest_share_median": prov.get("largest_share", {}).get("median"),
        "largest_share_p95": prov.get("largest_share", {}).get("p95"),
        "largest_share_max": prov.get("largest_share", {}).get("max"),
        "c_t": cop.c_t if cop else None,
        "authenticity": cop.authenticity if cop else None,
        "authenticity_heldout": cop.authenticity_heldout if cop else None,
        "copying_space": cop.space if cop else None,
        "whole_face_copies": prov.get("whole_face_copies"),
        "fit_s": fit_s,
        "sample_ms": sample_ms,
        "fid_train_recon": res.fid_training_reconstructions,
        "settings": res.settings.get("generate_kwargs", {}),
    }


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = ((a.clamp(0, 1) - b.clamp(0, 1)) ** 2).reshape(a.shape[0], -1).mean(1).clamp_min(1e-12)
    return float((10 * torch.log10(1.0 / mse)).mean())


def _git_commit() -> str:
    try:
        here = Path(__file__).resolve().parent
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=here, capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here, capture_output=True,
                               text=True, timeout=10)
        if rev.returncode == 0:
            return rev.stdout.strip() + (" (with uncommitted changes)" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        pass
    return "unknown"


def _load_note() -> str:
    """The load average at the end, and whether it says other jobs shared the CPU: this run's own
    threads account for up to ``torch.get_num_threads()`` of it."""
    load = os.getloadavg()
    own = min(torch.get_num_threads(), os.cpu_count() or 1)
    shared = max(load) > own + 0.5
    return (f"Load average at the end: {', '.join(f'{x:.1f}' for x in load)} "
            + ("(above this run's own threads: other jobs shared the CPU, times are indicative)." if shared
               else f"(no more than this run's {own} threads: times are comparable)."))


@dataclass
class _Context:
    scale: Scale
    data: Path
    out: Path
    progress: bool
    command: str
    files: list[str] = field(default_factory=list)
    heldout: list[str] = field(default_factory=list)
    fresh: list[str] = field(default_factory=list)
    pool: list[str] = field(default_factory=list)
    encoded: dict = field(default_factory=dict)
    pipes: dict = field(default_factory=dict)
    evaluators: dict = field(default_factory=dict)  # N -> the table's Evaluator, kept where later stages measure
    generators: dict = field(default_factory=dict)  # (N, method) -> the table's fitted generator
    eval_results: dict = field(default_factory=dict)  # memo key -> EvalResult with nearest faces (figures)
    main_keys: set = field(default_factory=set)  # memo keys the main comparison measured
    memo: dict = field(default_factory=dict)
    results: dict = field(default_factory=dict)
    figures: dict = field(default_factory=dict)
    stage_seconds: dict = field(default_factory=dict)
    per_face_ms: dict = field(default_factory=dict)
    extractor: InceptionExtractor | None = None
    default_data: bool = False
    commit: str = "unknown"  # set by run_report before any stage writes (see there)


class ReportRun:
    """One report run (``run_report`` is the entry point)."""

    def __init__(self, ctx: _Context):
        self.c = ctx
        self.fig_dir = ctx.out / "figures"

    @classmethod
    def at_one_n(cls, train: int, out: Path, command: str, data: Path | None = None,
                 scale: str = "quick") -> "ReportRun":
        """A run on the report's split at one training size (the first ``train`` photos of the
        pool), split done: what the single-N experiment scripts (picture_sweep, precision_report,
        rank_screen) start from."""
        from lrgmm.demo import find_demo_data

        sc = replace(SCALES[scale], train_sizes=(train,), fid_vs_n_extra=(), main_sizes=())
        run = cls(_Context(scale=sc, data=data or find_demo_data(), out=out, progress=True, command=command.strip()))
        run.split()
        return run

    # ------------------------------------------------------------------ data
    def split(self) -> None:
        c, s = self.c, self.c.scale
        files = [str(p) for p in list_images(c.data).paths]
        need = s.heldout_reserve + max(n for n in s.train_sizes + s.fid_vs_n_extra if n is not None)
        if len(files) < need:
            raise ValueError(f"{c.data} holds {len(files)} images; the {s.name} scale needs at least {need}")
        if s.heldout_reserve < s.n_heldout + s.n_table:
            raise ValueError("heldout_reserve must hold the reference and the fresh-photo row")
        if not set(s.main_methods) <= set(METHOD_ORDER):
            raise ValueError(f"main_methods {s.main_methods}: known methods are {', '.join(METHOD_ORDER)}")
        if not set(s.main_sizes) <= set(s.train_sizes):
            raise ValueError(f"main_sizes {s.main_sizes} must be among the table's train_sizes {s.train_sizes}")
        c.pool, reserve = holdout_split(files, s.heldout_reserve, SPLIT_SEED)
        c.files = files
        c.heldout = reserve[: s.n_heldout]
        c.fresh = reserve[s.n_heldout: s.n_heldout + s.n_table]

    def n_of(self, n: int | None) -> int:
        return len(self.c.pool) if n is None else int(n)

    def encoded_set(self, n: int):
        """Latents of the first n training photos (the pool's, encoded once, sliced)."""
        c = self.c
        biggest = max(c.encoded) if c.encoded else 0
        if n not in c.encoded and biggest < n:
            pipe = FacePipeline(progress=c.progress)
            c.encoded[n] = pipe.encode(c.pool[:n])
        elif n not in c.encoded:
            src = c.encoded[biggest]
            keep = set(c.pool[:n])
            idx = [i for i, p in enumerate(src.paths) if p in keep]
            c.encoded[n] = replace(src, latents=src.latents[idx], paths=[src.paths[i] for i in idx],
                                   hashes=[src.hashes[i] for i in idx])
        return c.encoded[n]

    def pipeline(self, n: int, **params) -> FacePipeline:
        """A pipeline fitted on the first n training photos with ``params`` (memoised)."""
        key = (n, tuple(sorted(params.items())))
        if key not in self.c.pipes:
            enc = self.encoded_set(n)
            self.c.pipes[key] = FacePipeline(progress=False, **params).fit(enc)
        return self.c.pipes[key]

    def extractor(self) -> InceptionExtractor:
        if self.c.extractor is None:
            self.c.extractor = InceptionExtractor(progress=self.c.progress)
        return self.c.extractor

    def evaluator(self, pipe: FacePipeline, memorisation: bool | str) -> Evaluator:
        return Evaluator(pipe, self.c.heldout, memorisation=memorisation, progress=self.c.progress,
                         extractor=self.extractor())

    # ------------------------------------------------------------- measuring
    def measure(self, ev: Evaluator, gen, method: str, n_train: int, key: tuple, n: int, time_sampling: bool = True,
                seed: int = EVAL_SEED) -> dict:
        """Evaluate ``gen`` (memoised under ``key``: the same fitted model and sampling settings
        give the same faces, so a sweep's default point reuses the table's row)."""
        full_key = (key, n, seed)
        if full_key in self.c.memo:
            return self.c.memo[full_key]
        label = getattr(gen, "label", method)
        sample_ms = timed_sampling(gen, min(self.c.scale.n_timing, n)) if time_sampling else None
        res = ev.evaluate(gen, n, seed=seed, name=label)
        if res.closest is not None and seed == EVAL_SEED:
            self.c.eval_results[full_key] = replace(res, generated_features=None)
        self.c.per_face_ms.setdefault("generation_incl_decoding", []).append(1e3 * res.timings["generation"] / n)
        self.c.per_face_ms.setdefault("inception", []).append(1e3 * res.timings["features"] / n)
        row = _row(res, method, label, n_train, getattr(gen, "fit_seconds_", None), sample_ms)
        self.c.memo[full_key] = row
        return row

    def fresh_row(self, ev: Evaluator, n_train: int) -> dict:
        """Fresh held-out photos (not in the reference) at the table's sample count: the score
        of real faces, i.e. FID's small-sample bias alone."""
        key = ("fresh", len(self.c.fresh))
        if key not in self.c.memo:
            res = ev.reference.resolution
            ex = self.extractor()
            li = load_images(self.c.fresh, res)
            feats = ex.file_features(li.paths, li.hashes, res, lambda: li.images, desc="Inception features (fresh photos)")
            real = ev.real_features
            k = kid(feats, real, subsets=ev.kid_subsets, subset_size=ev.kid_subset_size, seed=EVAL_SEED)
            pr = precision_recall(feats, real, k=ev.pr_k)
            self.c.memo[key] = {"fid": fid(feats, real), "kid": k.mean, "kid_std": k.std, "precision": pr.precision,
                                "recall": pr.recall, "n": len(li.paths)}
        return {"method": "real-photos", "label": "fresh real photos (reference)", "N": n_train, **self.c.memo[key]}

    # ---------------------------------------------------------------- stages
    def table(self) -> None:
        c, s = self.c, self.c.scale
        c.results["table"] = {}
        c.results["fit_info"] = {}
        for n_req in s.train_sizes:
            n = self.n_of(n_req)
            t0 = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", InputWarning)
                pipe = self.pipeline(n)
            n_used = int(pipe.model_.codes_.shape[0])
            c.results["fit_info"][n] = {
                "n_photos": n, "n_used": n_used, "K": pipe.model_.n_components_,
                "K_requested": default_n_components(n_used), "ranks": pipe.model_.mixture_.ranks_.tolist(),
                "lambda": pipe.model_.temperature_, "lambda_from_K": pipe.model_.temperature is None,
                "weights": sorted((round(float(w), 4) for w in pipe.model_.mixture_.weights_), reverse=True),
                "q": int(pipe.model_.codes_.shape[1]), "fit_s": pipe.fit_seconds_,
                "input": pipe.report_.summary().splitlines()[0] if pipe.report_ else "",
            }
            cap = s.inception_memorisation_max_n
            ev = self.evaluator(pipe, memorisation=True if cap is None or n_used <= cap else "codes")
            rows = [self.fresh_row(ev, n_used)]
            for name in tqdm(METHOD_ORDER, desc=f"table N={n}", unit="method", disable=not c.progress):
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", UserWarning)  # component removal is recorded below
                    gen = make_generator(name, pipe)
                if n_req in s.main_sizes:
                    c.generators[(n, name)] = gen
                row = self.measure(ev, gen, name, n_used, self._key(n, name, pipe), s.n_table)
                if name == "gmm10":
                    row["components"] = gen.n_components_
                rows.append(row)
                if n == self.n_of(s.sweep_n):
                    self.figure_samples(name, gen)
            c.results["table"][n] = rows
            if n_req in s.main_sizes or n == self.n_of(s.sweep_n):
                c.evaluators[n] = ev
            if n == self.n_of(s.sweep_n):
                self.sweep_ev = ev
                self.sweep_pipe = pipe
                self.figure_centroids(pipe)
            del ev
            c.stage_seconds[f"table, N = {n}"] = time.perf_counter() - t0

    def _key(self, n: int, method: str, pipe: FacePipeline, **sample_kw) -> tuple:
        m = pipe.model_
        fit = (n, int(m.codes_.shape[1]), m.n_components if m.n_components is not None else default_n_components(m.codes_.shape[0]),
               m.temperature, m.random_state, m.spread)
        return (method, fit, tuple(sorted((k, v) for k, v in sample_kw.items() if v is not None)))

    def seeds(self) -> list[int]:
        return [EVAL_SEED + i for i in range(max(1, self.c.scale.noise_seeds))]

    def main_comparison(self) -> None:
        """The rows the report's decisions rest on: every method of ``scale.main_methods`` at each
        N of ``scale.main_sizes``, ``n_main`` faces for each seed, on the table's evaluator (near
        copies against every training reconstruction) and the table's fitted generators."""
        c, s = self.c, self.c.scale
        if not (s.main_sizes and s.main_methods and s.n_main):
            return
        seeds = self.seeds()
        by_n = {}
        bar = tqdm(total=len(s.main_sizes) * len(s.main_methods) * len(seeds), desc="main comparison", unit="run",
                   disable=not c.progress)
        for n_req in s.main_sizes:
            t0 = time.perf_counter()
            n = self.n_of(n_req)
            pipe, ev = self.pipeline(n), c.evaluators[n]
            n_used = int(pipe.model_.codes_.shape[0])
            rows = []
            for name in s.main_methods:
                gen = c.generators[(n, name)]
                for seed in seeds:
                    key = self._key(n, name, pipe)
                    rows.append(self.measure(ev, gen, name, n_used, key, s.n_main, time_sampling=seed == seeds[0],
                                             seed=seed))
                    c.main_keys.add((key, s.n_main, seed))
                    bar.update(1)
            by_n[n] = {"N": n_used, "rows": rows, "summary": _seed_summary(rows, "method")}
            c.stage_seconds[f"main comparison, N = {n}"] = time.perf_counter() - t0
        bar.close()
        c.results["main"] = {"n": s.n_main, "seeds": seeds, "methods": list(s.main_methods), "by_N": by_n}
        # Later stages use the sweep N's evaluator and baseline only (the full-rank GMM is ~0.7 GB).
        sweep = self.n_of(s.sweep_n)
        c.generators = {k: g for k, g in c.generators.items() if k == (sweep, "latentpatch")}
        c.evaluators = {k: e for k, e in c.evaluators.items() if k == sweep}

    def sweeps(self) -> None:
        c, s = self.c, self.c.scale
        n = self.n_of(s.sweep_n)
        ev = self.sweep_ev
        base = self.sweep_pipe
        n_used = int(base.model_.codes_.shape[0])
        out = {}
        bar = tqdm(total=s.noise_seeds - 1 + len(s.lambdas) * 2 + len(s.qs) + len(s.ks) + len(s.omegas)
                   + len(s.nn_iterations), desc="sweeps", unit="point", disable=not c.progress)

        # seed-to-seed spread of the default model at the sweeps' n: what "within noise" means
        t0 = time.perf_counter()
        rows = []
        for i in range(s.noise_seeds):
            gen = LRGMMNNGenerator(base).fit()
            rows.append(self.measure(ev, gen, "lrgmm-nn", n_used, self._key(n, "lrgmm-nn", base), s.n_sweep,
                                     time_sampling=False, seed=EVAL_SEED + i))
            bar.update(1 if i else 0)
        out["noise"] = {"seeds": [EVAL_SEED + i for i in range(s.noise_seeds)], "n": s.n_sweep,
                        "fid": [r["fid"] for r in rows], "kid": [r["kid"] for r in rows],
                        "fid_sd": float(np.std([r["fid"] for r in rows], ddof=1)) if len(rows) > 1 else None,
                        "kid_sd": float(np.std([r["kid"] for r in rows], ddof=1)) if len(rows) > 1 else None}
        c.stage_seconds["seed spread of the default"] = time.perf_counter() - t0

        # lambda: one fit at the largest lambda, sampled at each value (the paper's fig. 8: same
        # seed, same eigenvectors, more or fewer of them).
        t0 = time.perf_counter()
        lam_max = max(max(s.lambdas), base.model_.temperature_)
        pipe_l = self.pipeline(n, temperature=lam_max)
        rows = []
        for lam in s.lambdas:
            for nn in (True, False):
                cls = BASELINES["lrgmm-nn" if nn else "lrgmm"]
                gen = cls(pipe_l, temperature=lam).fit()
                row = self.measure(ev, gen, gen.name, n_used, self._key(n, gen.name, pipe_l, temperature=lam), s.n_sweep,
                                   time_sampling=False)
                dims = pipe_l.model_.sampling_ranks(lam)
                rows.append({**row, "value": lam, "nn": nn, "sum_dk": int(dims.sum()), "dk": dims.tolist()})
                bar.update(1)
        out["lambda"] = rows
        self.figure_lambda(pipe_l)
        c.stage_seconds["sweep: lambda"] = time.perf_counter() - t0

        # q: a new projector per value, so a new evaluator (no memorisation: the reconstructions
        # of the training set would have to be recomputed for each q)
        t0 = time.perf_counter()
        rows = []
        li = load_images(c.heldout[: s.n_psnr], base.resolution)
        x = torch.from_numpy(li.images)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", InputWarning)
            lat = base.encode(li.paths).latents
        ae_only = _psnr(base.decode(lat), x)
        for q in s.qs:
            pipe_q = self.pipeline(n, n_channels=q)
            proj = pipe_q.model_.projector_
            psnr = _psnr(pipe_q.decode(proj.inverse_transform(proj.transform(lat))), x)
            gen = LRGMMNNGenerator(pipe_q).fit()
            key = self._key(n, "lrgmm-nn", pipe_q)
            if (key, s.n_sweep, EVAL_SEED) in c.memo:
                row = c.memo[(key, s.n_sweep, EVAL_SEED)]
            else:
                row = self.measure(self.evaluator(pipe_q, memorisation=False), gen, "lrgmm-nn", n_used, key, s.n_sweep,
                                   time_sampling=False)
            rows.append({**row, "value": q, "psnr": psnr, "psnr_autoencoder": ae_only,
                         "explained_variance": proj.explained_variance_ratio_, "d0": q * lat.shape[-1] * lat.shape[-2]})
            bar.update(1)
        out["q"] = rows
        c.stage_seconds["sweep: q"] = time.perf_counter() - t0

        # K: refits
        t0 = time.perf_counter()
        rows = []
        for k in s.ks:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                pipe_k = self.pipeline(n, n_components=k)
            gen = LRGMMNNGenerator(pipe_k).fit()
            row = self.measure(ev, gen, "lrgmm-nn", n_used, self._key(n, "lrgmm-nn", pipe_k), s.n_sweep, time_sampling=False)
            rows.append({**row, "value": k, "K_fitted": pipe_k.model_.n_components_})
            bar.update(1)
        out["K"] = rows
        c.stage_seconds["sweep: K"] = time.perf_counter() - t0

        # omega and NN iterations: sampling settings of the default model
        for name, values, kw in (("omega", s.omegas, "patch_size"), ("nn_iterations", s.nn_iterations, "nn_iterations")):
            t0 = time.perf_counter()
            rows = []
            for v in values:
                gen = LRGMMNNGenerator(base, **{kw: v}).fit()
                d = {kw: v} if v != getattr(base.model_, kw) else {}
                row = self.measure(ev, gen, "lrgmm-nn", n_used, self._key(n, "lrgmm-nn", base, **d), s.n_sweep,
                                   time_sampling=True)
                rows.append({**row, "value": v})
                bar.update(1)
            out[name] = rows
            c.stage_seconds[f"sweep: {name}"] = time.perf_counter() - t0
        bar.close()
        c.results["sweeps"] = out
        c.results["sweep_n"] = n_used

    def privacy(self) -> None:
        """The copy budget's cost and the copying baseline at the sweeps' N: LR-GMM-NN at every
        budget of ``scale.budgets`` (1.0: off) and the LatentPatch-style baseline, ``n_privacy``
        faces per seed and ``noise_seeds`` seeds each; memorisation figures of both generators."""
        c, s = self.c, self.c.scale
        if not s.budgets or not s.n_privacy or not hasattr(self, "sweep_ev"):
            return
        t0 = time.perf_counter()
        ev, base = self.sweep_ev, self.sweep_pipe
        n = self.n_of(s.sweep_n)
        n_used = int(base.model_.codes_.shape[0])
        seeds = self.seeds()
        # (setting, method, generator, budget, sampling options as the memo key names them): the
        # model's own budget and the baseline are the main comparison's generators, so their rows
        # are read from the memo instead of measured twice.
        own = base.model_.max_share
        settings = [(f"max_share = {b:g}", "lrgmm-nn", LRGMMNNGenerator(base, max_share=b).fit(), b,
                     {} if b == own else {"max_share": b}) for b in s.budgets]
        lp = c.generators.get((n, "latentpatch"))
        if lp is None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                lp = make_generator("latentpatch", base)
        settings.append(("LatentPatch-style", "latentpatch", lp, None, {}))
        rows = []
        bar = tqdm(total=len(settings) * len(seeds), desc="privacy", unit="run", disable=not c.progress)
        shared = []
        for setting, method, gen, budget, kw in settings:
            key = self._key(n, method, base, **kw)
            if (key, s.n_privacy, seeds[0]) in c.main_keys:
                shared.append(setting)
            for seed in seeds:
                row = self.measure(ev, gen, method, n_used, key, s.n_privacy, time_sampling=seed == seeds[0], seed=seed)
                rows.append({**row, "setting": setting, "max_share": budget})
                res = c.eval_results.get((key, s.n_privacy, seed))
                if seed == seeds[0] and budget in (None, 1.0) and res is not None:
                    png, _ = memorisation_figure(res, base, self.fig_dir)
                    c.figures.setdefault("memorisation", {})[gen.label] = png.name
                bar.update(1)
        bar.close()
        c.results["privacy"] = {"N": n_used, "n": s.n_privacy, "seeds": seeds, "rows": rows,
                                "shared_with_main": shared, "nn_order": base.model_.nn_order}
        c.stage_seconds["privacy: copy budgets and copying"] = time.perf_counter() - t0

    def fid_vs_n(self) -> None:
        c, s = self.c, self.c.scale
        t0 = time.perf_counter()
        rows = []
        for n in tqdm(s.fid_vs_n_extra, desc="FID against N", unit="N", disable=not c.progress):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", InputWarning)
                pipe = self.pipeline(n)
            ev = self.evaluator(pipe, memorisation=False)
            for name in ("lrgmm", "lrgmm-nn"):
                gen = make_generator(name, pipe)
                rows.append(self.measure(ev, gen, name, int(pipe.model_.codes_.shape[0]), self._key(n, name, pipe),
                                         s.n_table, time_sampling=False))
        c.results["fid_vs_n_extra"] = rows
        c.stage_seconds["FID against N (extra N)"] = time.perf_counter() - t0

    # --------------------------------------------------------------- figures
    def figure_frontiers(self) -> None:
        """FID against near copies at each N of the main comparison: every method there and, at
        the sweep N, every copy budget of the privacy section (the same n and seeds)."""
        c = self.c
        main, priv = c.results.get("main"), c.results.get("privacy")
        if not main:
            return
        for n, block in main["by_N"].items():
            pts = [(a["label"], a["near_copy_inception"], a["fid"], a["fid_sd"]) for a in block["summary"]]
            if priv and priv["N"] == block["N"] and priv["n"] == main["n"]:
                pts += [(f"LR-GMM-NN, {a['setting']}", a["near_copy_inception"], a["fid"], a["fid_sd"])
                        for a in _seed_summary(priv["rows"], "setting") if a["setting"] not in priv["shared_with_main"]]
            name = f"frontier_N{block['N']}.png"
            frontier_plot(pts, self.fig_dir / name, title=f"N = {block['N']}: FID against near copies "
                          f"({main['n']} faces x {len(main['seeds'])} seeds; bars: seed sd)",
                          ylabel=f"FID ({len(c.heldout)} held-out photos)")
            c.figures.setdefault("frontier", {})[str(block["N"])] = name

    def figure_samples(self, name: str, gen: BaselineGenerator) -> None:
        s = self.c.scale
        out = gen.generate(s.n_grid, seed=FIGURE_SEED)
        ncol = min(8, s.n_grid)
        grid = make_grid(out.images[: s.n_grid], ncols=ncol)
        path = save_png(grid, self.fig_dir / f"samples_{name}.png")
        self.c.figures.setdefault("samples", {})[name] = path.name
        self.c.figures.setdefault("_rows", []).append((gen.label, make_grid(out.images[:ncol], ncols=ncol)))
        prov = out.samples.provenance
        if prov is not None:
            m = min(8, s.n_grid)
            size = out.images.shape[-1]
            maps = torch.stack([provenance_image(prov[i], size) for i in range(m)])
            both = torch.cat([out.images[:m], maps])
            self.c.figures.setdefault("_prov_rows", []).append((gen.label, make_grid(both, ncols=m)))

    def figure_centroids(self, pipe: FacePipeline) -> None:
        m = pipe.model_
        q, h, w = m.codes_.shape[1:]
        means = m.mixture_.means_.reshape(-1, q, h, w)
        faces = pipe.decode(m.projector_.inverse_transform(means))
        size = faces.shape[-1]
        ch = means[:, :3]
        lo = ch.amin(dim=(0, 2, 3), keepdim=True)
        hi = ch.amax(dim=(0, 2, 3), keepdim=True)
        colour = ((ch - lo) / (hi - lo).clamp_min(1e-6)).repeat_interleave(size // h, 2).repeat_interleave(size // w, 3)
        k = means.shape[0]
        path = save_png(make_grid(torch.cat([faces, colour]), ncols=k), self.fig_dir / "centroids.png")
        self.c.figures["centroids"] = path.name
        self.c.results["centroids"] = {"K": k, "weights": [round(float(x), 4) for x in m.mixture_.weights_]}

    def figure_lambda(self, pipe: FacePipeline) -> None:
        s = self.c.scale
        ncol = min(8, s.n_grid)
        for nn in (False, True):
            rows = []
            for lam in s.lambdas:
                out = pipe.generate(ncol, seed=FIGURE_SEED, nn=nn, temperature=lam)
                dsum = int(pipe.model_.sampling_ranks(lam).sum())
                rows.append((f"lambda = {lam:g} (sum d_k = {dsum})", make_grid(out.images, ncols=ncol)))
            name = "lambda_samples_nn.png" if nn else "lambda_samples.png"
            labelled_rows(rows, self.fig_dir / name)
            self.c.figures["lambda_nn" if nn else "lambda"] = name

    def figures_final(self) -> None:
        c = self.c
        rows = c.figures.pop("_rows", [])
        if rows:
            labelled_rows(rows, self.fig_dir / "samples_all.png")
            c.figures["samples_all"] = "samples_all.png"
        prov = c.figures.pop("_prov_rows", [])
        if prov:
            labelled_rows(prov, self.fig_dir / "provenance.png")
            c.figures["provenance"] = "provenance.png"
        self.figure_frontiers()
        sw = c.results.get("sweeps", {})
        s = c.scale

        def panels(rows, xlabel, default, extra=None, nn_split=False):
            xs = sorted({r["value"] for r in rows})

            def series(metric, which=None):
                sel = [r for r in rows if which is None or r.get("nn") == which]
                by = {r["value"]: r[metric] for r in sel}
                return [by.get(x) for x in xs]

            def named(metric):
                if nn_split:
                    return {"LR-GMM-NN": series(metric, True), "LR-GMM (no NN)": series(metric, False)}
                return {"LR-GMM-NN": series(metric)}

            out = [
                {"title": f"FID (n = {rows[0]['n']})", "xlabel": xlabel, "x": xs, "series": named("fid"), "default": default},
                {"title": "KID x 1000", "xlabel": xlabel, "x": xs,
                 "series": {k: [None if v is None else 1e3 * v for v in vs] for k, vs in named("kid").items()}, "default": default},
                {"title": "precision / recall", "xlabel": xlabel, "x": xs, "default": default,
                 "series": {**{f"precision, {k}" if nn_split else "precision": v for k, v in named("precision").items()},
                            **{f"recall, {k}" if nn_split else "recall": v for k, v in named("recall").items()}}},
            ]
            if extra:
                out.append(extra(xs))
            return out

        pipe = getattr(self, "sweep_pipe", None)
        if "lambda" in sw:
            line_plot(panels(sw["lambda"], "lambda (temperature)", pipe.model_.temperature_ if pipe else None, nn_split=True),
                      self.fig_dir / "lambda_curve.png", title=f"lambda sweep, N = {c.results['sweep_n']}")
            c.figures["lambda_curve"] = "lambda_curve.png"
        if "q" in sw:
            def psnr_panel(xs):
                by = {r["value"]: r for r in sw["q"]}
                return {"title": "round-trip PSNR (dB)", "xlabel": "q", "x": xs, "default": 16,
                        "series": {"decode(P0*(P0(E(x)))) vs x": [by[x]["psnr"] for x in xs],
                                   "decode(E(x)) vs x": [by[x]["psnr_autoencoder"] for x in xs]}}
            line_plot(panels(sw["q"], "q (projector channels)", pipe.model_.codes_.shape[1] if pipe else None, psnr_panel),
                      self.fig_dir / "q_curve.png", title=f"q sweep, N = {c.results['sweep_n']}")
            c.figures["q_curve"] = "q_curve.png"
        for name, xlabel, attr in (("K", "K (components)", None), ("omega", "omega (patch size)", "patch_size"),
                                   ("nn_iterations", "NN iterations", "nn_iterations")):
            if name in sw:
                if attr is None:
                    default = default_n_components(c.results["sweep_n"])
                else:
                    default = getattr(pipe.model_, attr) if pipe else None
                line_plot(panels(sw[name], xlabel, default), self.fig_dir / f"{name}_curve.png",
                          title=f"{xlabel} sweep, N = {c.results['sweep_n']}")
                c.figures[f"{name}_curve"] = f"{name}_curve.png"
        # FID against N: every method of the table, plus the extra N of LR-GMM(-NN)
        table = c.results.get("table", {})
        pts: dict[str, dict[int, dict]] = {}
        for n, rows in table.items():
            for r in rows:
                if r["method"] != "real-photos":
                    pts.setdefault(r["label"], {})[r["N"]] = r
        for r in c.results.get("fid_vs_n_extra", []):
            pts.setdefault(r["label"], {})[r["N"]] = r
        xs = sorted({n for d in pts.values() for n in d})
        if xs:
            line_plot(
                [{"title": f"FID (n = {s.n_table}, log scale)", "xlabel": "N (training photos)", "x": xs, "ylog": True,
                  "series": {lab: [d.get(x, {}).get("fid") for x in xs] for lab, d in pts.items()}},
                 {"title": "KID x 1000", "xlabel": "N (training photos)", "x": xs,
                  "series": {lab: [None if d.get(x) is None else 1e3 * d[x]["kid"] for x in xs] for lab, d in pts.items()}},
                 {"title": "precision", "xlabel": "N (training photos)", "x": xs,
                  "series": {lab: [d.get(x, {}).get("precision") for x in xs] for lab, d in pts.items()}}],
                self.fig_dir / "fid_vs_n.png", panel_size=(470, 360), title="FID, KID and precision against N")
            c.figures["fid_vs_n"] = "fid_vs_n.png"


# ---------------------------------------------------------------------------------- markdown


def _f(v, fmt="{:.1f}", none="–"):
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return none
    return fmt.format(v)


def _weights(ws, show: int = 8) -> str:
    """The largest ``show`` mixture weights, then how many more and their range."""
    if not ws:
        return "–"
    head = ", ".join(f"{w:.3f}" for w in ws[:show])
    return head + (f" and {len(ws) - show} more ({ws[-1]:.3f} to {ws[show]:.3f})" if len(ws) > show else "")


def _pct(v):
    return _f(None if v is None else 100 * v, "{:.0f} %")


def _best(rows, metric, lower=True):
    ok = [r for r in rows if r.get(metric) is not None and math.isfinite(r[metric])]
    if not ok:
        return None
    return (min if lower else max)(ok, key=lambda r: r[metric])


def _sweep_verdict(rows, default, name, noise: dict | None = None) -> tuple[str, dict]:
    """Best value by FID and by KID against the default, with the seed-to-seed spread of the
    default model (``noise``: sd of FID and KID over seeds) as the yardstick: a difference of two
    single-seed measurements within 2 sqrt(2) sd is noise. Says what the better value costs in
    copying when the measurement has it."""
    bf, bk = _best(rows, "fid"), _best(rows, "kid")
    drow = next((r for r in rows if r["value"] == default), None)
    info = {"default": default, "best_fid": bf["value"] if bf else None, "best_kid": bk["value"] if bk else None}
    if drow is None or bk is None or bf is None:
        info["verdict"] = f"default {default} not among the sweep's values"
        return info["verdict"], info
    if noise and noise.get("fid_sd") is not None:
        tol_fid, tol_kid = 2 * math.sqrt(2) * noise["fid_sd"], 2 * math.sqrt(2) * noise["kid_sd"]
        yard = "seed noise"
    else:  # no seed spread: the KID subset std, and no FID tolerance
        tol_fid, tol_kid = 0.0, max(bk["kid_std"], drow["kid_std"])
        yard = "one KID subset std"
    d_fid, d_kid = drow["fid"] - bf["fid"], drow["kid"] - bk["kid"]
    info.update({"fid_gap": d_fid, "kid_gap": d_kid, "fid_tolerance": tol_fid, "kid_tolerance": tol_kid})
    copy = ""
    best = bk if bk["value"] != default else bf
    if best["value"] != default and drow.get("near_copy_inception") is not None and best.get("near_copy_inception") is not None:
        copy = (f"; at {best['value']} near copies {_pct(drow['near_copy_inception'])} → {_pct(best['near_copy_inception'])}"
                + (f", largest source share {_pct(drow['largest_share_median'])} → {_pct(best['largest_share_median'])}"
                   if drow.get("largest_share_median") is not None and best.get("largest_share_median") is not None else ""))
    fid_ok, kid_ok = d_fid <= tol_fid, d_kid <= tol_kid
    gaps = (f"best FID at {bf['value']} ({bf['fid']:.1f} vs {drow['fid']:.1f}), best KID at {bk['value']} "
            f"(KID×10³ {1e3 * bk['kid']:.2f} vs {1e3 * drow['kid']:.2f})")
    if bf["value"] == default and bk["value"] == default:
        verdict = "supported: best FID and best KID"
    elif fid_ok and kid_ok:
        verdict = f"supported within {yard} ({gaps}){copy}"
    elif fid_ok or kid_ok:
        verdict = (f"mixed: {gaps}; the default is within {yard} on {'FID' if fid_ok else 'KID'} only{copy}")
    else:
        verdict = f"not supported beyond {yard}: {gaps}{copy}"
    info["verdict"] = verdict
    info["supported"] = {"supported": True, "mixed": None}.get(verdict.split()[0].rstrip(":"), False)
    return verdict, info


def _table_md(rows: list[dict]) -> list[str]:
    head = ("| method | FID | KID x 10³ | precision | recall | near copies (Inception) | near copies (codes) | "
            "C_T | authentic | sources per face (median) | largest source share (median) | fit (s) | sampling (ms/face) |")
    lines = [head, "|" + "---|" * 13]
    for r in rows:
        if r["method"] == "real-photos":
            lines.append(f"| *{r['label']}, n = {r['n']}* | *{_f(r['fid'])}* | *{_f(1e3 * r['kid'], '{:.2f}')} ± "
                         f"{_f(1e3 * r['kid_std'], '{:.2f}')}* | *{_f(r['precision'], '{:.2f}')}* | "
                         f"*{_f(r['recall'], '{:.2f}')}* | | | | | | | | |")
            continue
        lines.append(
            f"| {r['label']} | {_f(r['fid'])} | {_f(1e3 * r['kid'], '{:.2f}')} ± {_f(1e3 * r['kid_std'], '{:.2f}')} | "
            f"{_f(r['precision'], '{:.2f}')} | {_f(r['recall'], '{:.2f}')} | {_pct(r['near_copy_inception'])} | "
            f"{_pct(r['near_copy_codes'])} | {_f(r.get('c_t'), '{:.1f}')} | {_pct(r.get('authenticity'))} | "
            f"{_f(r['distinct_sources_median'], '{:.0f}')} | "
            f"{_pct(r['largest_share_median'])} | {_f(r['fit_s'], '{:.2f}')} | {_f(r['sample_ms'], '{:.2f}')} |"
        )
    return lines


def _shape_checks(rows: list[dict]) -> list[tuple[bool, str]]:
    """The paper's expected shape, checked on one table's numbers: (agrees, sentence) pairs.
    Where a check fails, the sentence says what is known to differ from the paper's setting."""
    by = {r["method"]: r for r in rows}
    out = []
    nn, plain = by.get("lrgmm-nn"), by.get("lrgmm")
    if nn and plain:
        better = nn["fid"] < plain["fid"]
        kid_better = nn["kid"] < plain["kid"]
        out.append((better, f"NN step: FID {plain['fid']:.1f} → {nn['fid']:.1f}, KID×10³ {1e3 * plain['kid']:.2f} → "
                    f"{1e3 * nn['kid']:.2f}: **{'improves' if better else 'does not improve'}** FID"
                    f"{'' if better == kid_better else ' (KID disagrees)'} (expected: improves)."))
    if nn:
        others = [by[m] for m in NON_PARAMETRIC + EX_POST if m in by]
        win_fid = [o["label"] for o in others if nn["fid"] < o["fid"]]
        win_prec = [o["label"] for o in others if nn["precision"] > o["precision"]]
        lose = [o for o in others if not (nn["fid"] < o["fid"] or nn["precision"] > o["precision"])]
        text = (f"LR-GMM-NN has a lower FID than: {', '.join(win_fid) or 'none'}; a higher precision than: "
                f"{', '.join(win_prec) or 'none'}; beaten on both by: **{', '.join(o['label'] for o in lose) or 'none'}** "
                f"(expected: none of the non-parametric and ex-post baselines).")
        if any(o["method"] == "latentpatch" for o in lose):
            lp = by["latentpatch"]
            text += (f" Against the LatentPatch-style generator the gap is FID {nn['fid']:.1f} vs {lp['fid']:.1f}, KID×10³ "
                     f"{1e3 * nn['kid']:.2f} vs {1e3 * lp['kid']:.2f}. It is our re-implementation (2x2 blocks, top-3, "
                     "same-position matching: our choices, not the original's), and in the paper the two tie at "
                     "N = 1,024 (FID 58.4 vs 58.1, precision 0.55 vs 0.52): a LatentPatch ahead on FID and "
                     "precision is within the paper's own picture, not a contradiction of it.")
        out.append((not lose, text))
        lp = by.get("latentpatch")
        if lp and nn.get("largest_share_median") is not None and lp.get("largest_share_median") is not None:
            nci, lci = nn["near_copy_inception"], lp["near_copy_inception"]
            fewer = nci is not None and lci is not None and nci < lci
            smaller = nn["largest_share_median"] < lp["largest_share_median"]
            word = "agrees" if fewer and smaller else ("partly agrees" if fewer or smaller else "does not agree")
            if nci is None or lci is None:
                word = "agrees on the largest share" if smaller else "does not agree on the largest share"
            text = (f"Copying, LR-GMM-NN vs LatentPatch-style (expected: LR-GMM-NN copies far less): near copies "
                    f"(Inception) {_pct(nn['near_copy_inception'])} vs {_pct(lp['near_copy_inception'])} "
                    f"({'fewer' if fewer else ('not measured' if nci is None or lci is None else 'not fewer')}); "
                    "largest single-photo share of a face (median) "
                    f"{_pct(nn['largest_share_median'])} vs {_pct(lp['largest_share_median'])} "
                    f"({'smaller' if smaller else 'not smaller'}); photos per face (median) "
                    f"{_f(nn['distinct_sources_median'], '{:.0f}')} vs {_f(lp['distinct_sources_median'], '{:.0f}')}: "
                    f"**{word}**.")
            if not smaller:
                text += (" LR-GMM-NN copies single latent pixels, but neighbouring positions often take the same photo "
                         "because their omega x omega patches overlap (the omega sweep shows the largest share growing "
                         "with omega), and it searches only the N/K photos of the face's component. Our LatentPatch-style "
                         "generator draws one of 3 candidates for every 2x2 block, which caps how much of a face one "
                         "photo provides: it copies smaller regions than the paper's description of the original "
                         "(\"copies large regions of latent features\"), so this comparison flatters it.")
            out.append((fewer and smaller, text))
    return out


def _per_face(c: _Context, what: str) -> str:
    v = [x for x in c.per_face_ms.get(what, []) if x > 5]  # below 5 ms/face: read from the cache
    return f"{np.median(v):.0f} ms/face" if v else "cached in this run"


def _mean_sd(vals: list) -> tuple[float | None, float | None]:
    v = [x for x in vals if x is not None and math.isfinite(x)]
    if not v:
        return None, None
    return float(np.mean(v)), (float(np.std(v, ddof=1)) if len(v) > 1 else None)


def _seed_summary(rows: list[dict], by: str = "setting") -> list[dict]:
    """Per value of ``rows[i][by]`` (a privacy setting, a method), in first-seen order: means and
    seed sds of its rows, the sampling time of the seed that was timed, the largest share's max."""
    out = []
    for value in dict.fromkeys(r[by] for r in rows):
        sel = [r for r in rows if r[by] == value]
        agg = {by: value, "label": sel[0]["label"], "N": sel[0]["N"], "n": sel[0]["n"], "seeds": len(sel),
               "sample_ms": next((r["sample_ms"] for r in sel if r.get("sample_ms") is not None), None)}
        if "max_share" in sel[0]:
            agg["max_share"] = sel[0]["max_share"]
        for key in ("fid", "kid", "precision", "recall", "near_copy_inception", "c_t", "authenticity",
                    "largest_share_median", "largest_share_p95"):
            agg[key], agg[key + "_sd"] = _mean_sd([r.get(key) for r in sel])
        agg["largest_share_max"] = max((r["largest_share_max"] for r in sel if r.get("largest_share_max") is not None),
                                       default=None)
        out.append(agg)
    return out


def _pm(v, sd, fmt: str = "{:.1f}", scale: float = 1.0) -> str:
    """``v ± sd`` (scaled), "–" without a value."""
    if v is None:
        return "–"
    return fmt.format(scale * v) + ("" if sd is None else " ± " + fmt.format(scale * sd))


# What "LR-GMM-NN beats the LatentPatch-style baseline" asks of its rows beside lower FID and KID:
# copying no more than fresh photos, no face mostly one photo, and both precision and recall.
TARGETS = (("near_copy_inception", "near copies", 0.05, "max"), ("largest_share_median", "median largest source share", 0.20, "max"),
           ("precision", "precision", 0.6, "min"), ("recall", "recall", 0.3, "min"))


def _against_baseline(nn: dict, lp: dict) -> tuple[bool, str]:
    """LR-GMM-NN's seed means against the baseline's: FID and KID lower by more than twice the sd
    of the difference, and each of ``TARGETS`` met. (all met, the sentence)."""
    parts, ok = [], True
    for key, name, sc in (("fid", "FID", 1.0), ("kid", "KID x 10³", 1e3)):
        d, tol = _gap(lp, nn, key)
        lower = tol is not None and d < -tol
        ok &= lower
        parts.append(f"{name} {sc * d:+.2f} (2 sd {'–' if tol is None else f'{sc * tol:.2f}'}: "
                     f"{'lower beyond the spread' if lower else 'not lower beyond the spread'})")
    for key, name, bound, kind in TARGETS:
        v = nn.get(key)
        met = v is not None and (v <= bound if kind == "max" else v >= bound)
        ok &= met
        shown = _f(None if v is None else 100 * v, "{:.1f} %") if kind == "max" else _f(v, "{:.3f}")
        parts.append(f"{name} {shown} ({'≤' if kind == 'max' else '≥'} {_pct(bound) if kind == 'max' else bound}: "
                     f"{'met' if met else 'not met'})")
    return ok, "; ".join(parts)


def _by_method(block: dict, method: str) -> dict | None:
    return next((a for a in block["summary"] if a["method"] == method), None)


def _main_md(main: dict, fit_info: dict, figures: dict) -> list[str]:
    """The main comparison's section: per N a table of seed means ± sds, the frontier figure, and
    LR-GMM-NN against the LatentPatch-style baseline."""
    seeds = len(main["seeds"])
    md = [f"## Main comparison ({main['n']:,} faces x {seeds} seeds per method)", "",
          f"The rows the report's conclusions rest on: each method draws {main['n']:,} faces for each of the seeds "
          f"{', '.join(map(str, main['seeds']))}; mean ± sd over the seeds. Same reference photos, training sets, "
          "fitted models and metrics as the table below (which has one seed of fewer faces for every method). A "
          "difference of two seed means is *beyond the spread* when it exceeds twice its sd "
          "(sqrt(sd_a²/k + sd_b²/k), k seeds). Sampling time: latent codes only, one batch after a warm-up.", ""]
    for n, block in sorted(main["by_N"].items(), key=lambda kv: int(kv[0])):
        fi = fit_info.get(n, {})
        md += [f"### N = {block['N']:,}" + (f" (K = {fi['K']}, lambda = {_f(fi.get('lambda'), '{:.3g}')})" if fi else ""), "",
               "| method | FID | KID x 10³ | precision | recall | near copies (Inception) | C_T | "
               "largest source share (median) | sampling (ms/face) |", "|---|---|---|---|---|---|---|---|---|"]
        for a in block["summary"]:
            md.append(f"| {a['label']} | {_pm(a['fid'], a['fid_sd'])} | {_pm(a['kid'], a['kid_sd'], '{:.2f}', 1e3)} | "
                      f"{_pm(a['precision'], a['precision_sd'], '{:.3f}')} | {_pm(a['recall'], a['recall_sd'], '{:.3f}')} | "
                      f"{_pm(a['near_copy_inception'], a['near_copy_inception_sd'], '{:.1f}', 100)} % | "
                      f"{_pm(a['c_t'], a['c_t_sd'])} | {_pct(a['largest_share_median'])} | {_f(a['sample_ms'], '{:.2f}')} |")
        fig = figures.get("frontier", {}).get(str(block["N"]))
        if fig:
            md += ["", f"![FID against near copies, N = {block['N']}](figures/{fig})"]
        nn, lp = _by_method(block, "lrgmm-nn"), _by_method(block, "latentpatch")
        if nn and lp:
            ok, text = _against_baseline(nn, lp)
            md += ["", f"LR-GMM-NN against the LatentPatch-style baseline (LR-GMM-NN minus baseline): {text}. "
                       + ("**LR-GMM-NN is ahead on every count.**" if ok else "**Not ahead on every count.**")]
        md += [""]
    return md


def _gap(a: dict, b: dict, key: str) -> tuple[float, float | None]:
    """b - a for a metric, and twice the sd of that difference of seed means (None without sds)."""
    d = b[key] - a[key]
    if a.get(key + "_sd") is None or b.get(key + "_sd") is None:
        return d, None
    return d, 2 * math.sqrt(a[key + "_sd"] ** 2 / a["seeds"] + b[key + "_sd"] ** 2 / b["seeds"])


def _privacy_md(priv: dict, figures: dict) -> list[str]:
    agg = _seed_summary(priv["rows"], "setting")
    md = [f"## Privacy: the copy budget and copying (N = {priv['N']}, {priv['n']} faces x {len(priv['seeds'])} seeds)", "",
          "LR-GMM-NN under each copy budget `max_share` (no face takes more than that share of its latent pixels "
          f"from one training photo; 1 = off), the NN step in {priv.get('nn_order', 'parallel')} order, and the "
          "LatentPatch-style baseline, on the same "
          "reference photos. Mean ± sd over the seeds. C_T: the data-copying test of Meehan et al. (AISTATS 2020; "
          "<< 0 copying, ~0 like new photos, >> 0 underfitting); authentic: share of faces farther from their "
          "nearest training face than that face is from its own nearest training neighbour (Alaa et al., ICML "
          "2022); both on Inception features of decoded faces and training reconstructions. Largest source: the "
          "largest share of a face's latent pixels from one photo (median / p95 / max over all faces).", "",
          "| setting | FID | KID x 10³ | precision | recall | near copies (Inception) | C_T | authentic | "
          "largest source (median / p95 / max) | sampling (ms/face) |", "|---|---|---|---|---|---|---|---|---|---|"]

    pm = _pm
    for a in agg:
        md.append(f"| {a['setting']} | {pm(a['fid'], a['fid_sd'])} | {pm(a['kid'], a['kid_sd'], '{:.2f}', 1e3)} | "
                  f"{pm(a['precision'], a['precision_sd'], '{:.3f}')} | {pm(a['recall'], a['recall_sd'], '{:.3f}')} | "
                  f"{pm(a['near_copy_inception'], a['near_copy_inception_sd'], '{:.1f}', 100)} % | "
                  f"{pm(a['c_t'], a['c_t_sd'], '{:.1f}')} | {pm(a['authenticity'], a['authenticity_sd'], '{:.1f}', 100)} % | "
                  f"{_pct(a['largest_share_median'])} / {_pct(a['largest_share_p95'])} / {_pct(a['largest_share_max'])} | "
                  f"{_f(a['sample_ms'], '{:.2f}')} |")
    off = next((a for a in agg if a["max_share"] in (None, 1.0)), None)
    budgets = [a for a in agg if a["max_share"] not in (None, 1.0)]
    verdict = {}
    if off and budgets:
        md += ["", "What each budget costs against no budget (difference of seed means; *within noise* when it is "
                   "under twice the sd of that difference):", ""]
        free = []
        for a in sorted(budgets, key=lambda a: -a["max_share"]):
            parts, ok = [], True
            for key, name, sc, fmt in (("fid", "FID", 1, "{:+.2f}"), ("kid", "KID x 10³", 1e3, "{:+.2f}")):
                d, tol = _gap(off, a, key)
                within = tol is not None and d <= tol
                ok &= within
                parts.append(f"{name} {fmt.format(sc * d)}" + ("" if tol is None else f" (2 sd {sc * tol:.2f}: "
                                                                                 f"{'within noise' if within else 'a cost'})"))
            dn = 100 * (a["near_copy_inception"] - off["near_copy_inception"]) if a["near_copy_inception"] is not None \
                and off["near_copy_inception"] is not None else None
            md.append(f"- {a['setting']}: " + ", ".join(parts) + f"; near copies {_f(dn, '{:+.1f}')} points; largest "
                      f"source max {_pct(a['largest_share_max'])} (off: {_pct(off['largest_share_max'])}).")
            if ok:
                free.append(a["max_share"])
        verdict["budgets_within_noise"] = free
        verdict["smallest_free_budget"] = min(free) if free else None
        md += ["", (f"Smallest budget whose FID and KID cost is within seed noise: **{min(free):g}**." if free else
                    "Every budget measured costs FID or KID beyond seed noise.")]
    lp = next((a for a in agg if a["setting"] == "LatentPatch-style"), None)
    if off and lp:
        d, tol = _gap(lp, off, "fid")
        dk, tolk = _gap(lp, off, "kid")
        verdict["lrgmm_nn_minus_latentpatch_fid"] = d
        md += ["", f"LR-GMM-NN (no budget) against the LatentPatch-style baseline at this sample size: FID {d:+.2f}"
                   + ("" if tol is None else f" (2 sd {tol:.2f})") + f", KID x 10³ {1e3 * dk:+.2f}"
                   + ("" if tolk is None else f" (2 sd {1e3 * tolk:.2f})") + " (negative: LR-GMM-NN better)."]
    mem = figures.get("memorisation", {})
    if mem:
        md += ["", "The 16 generated faces closest to the training set (Inception features), each beside its 3 "
                   "nearest training faces with distances; a red frame marks a near copy (closer than 95 % of held-out "
                   "photos are). Seed " + str(priv["seeds"][0]) + ", no budget:", ""]
        for label, name in mem.items():
            md += [f"**{label}**", "", f"![memorisation figure, {label}](figures/{name})", ""]
    priv["verdict"] = verdict
    priv["summary"] = agg
    return md + [""]


def _more_data_line(R: dict) -> list[str]:
    """Does LR-GMM-NN get better with more data? From the main comparison when it has two N: seed
    means at the largest N against the smallest, beyond twice the sd of their difference, and
    the near copies at the largest N. Otherwise from the table's single seeds at the largest N
    and the sweep N, beside the default's seed spread (a difference of two single-seed
    measurements has sd sqrt(2) sd)."""
    main = R.get("main")
    if main and len(main["by_N"]) > 1:
        keys = sorted(main["by_N"], key=int)
        a, b = (_by_method(main["by_N"][k], "lrgmm-nn") for k in (keys[0], keys[-1]))
        if a and b:
            (d_fid, t_fid), (d_kid, t_kid) = _gap(a, b, "fid"), _gap(a, b, "kid")
            better = t_fid is not None and t_kid is not None and d_fid < -t_fid and d_kid < -t_kid
            fi = R.get("fit_info", {}).get(keys[-1], {})
            return [f"- More data ({main['n']:,} faces x {len(main['seeds'])} seeds): LR-GMM-NN at N = {b['N']:,} against "
                    f"N = {a['N']:,}: FID {_pm(b['fid'], b['fid_sd'])} vs {_pm(a['fid'], a['fid_sd'])} ({d_fid:+.2f}), "
                    f"KID×10³ {_pm(b['kid'], b['kid_sd'], '{:.2f}', 1e3)} vs {_pm(a['kid'], a['kid_sd'], '{:.2f}', 1e3)} "
                    f"({1e3 * d_kid:+.2f}); twice the sd of the difference: "
                    f"{'–' if t_fid is None else f'{t_fid:.2f}'} / {'–' if t_kid is None else f'{1e3 * t_kid:.2f}'}: "
                    + ("**better beyond the seed spread**" if better else "not better beyond the seed spread")
                    + f"; near copies at N = {b['N']:,}: {_pct(b['near_copy_inception'])} (fresh photos: 5 %)"
                    + (f"; largest mixture weight {max(fi['weights']):.3f} (K = {fi['K']})." if fi.get("weights") else ".")]
    table, noise = R.get("table", {}), R.get("sweeps", {}).get("noise")
    # ``sweep_n`` is the training codes used (duplicates dropped); the table is keyed by photos asked for.
    sn = next((n for n in table if R["fit_info"][n]["n_used"] == R.get("sweep_n")), None)
    if sn is None or not noise or noise.get("fid_sd") is None:
        return []
    big = max(table)
    if big == sn:
        return []
    def nn_row(n):
        return next((r for r in table[n] if r["method"] == "lrgmm-nn"), None)
    a, b = nn_row(sn), nn_row(big)
    if not a or not b:
        return []
    tol_fid, tol_kid = 2 * math.sqrt(2) * noise["fid_sd"], 2 * math.sqrt(2) * noise["kid_sd"]
    d_fid, d_kid = b["fid"] - a["fid"], b["kid"] - a["kid"]
    better = d_fid < -tol_fid and d_kid < -tol_kid
    fi = R["fit_info"][big]
    return [f"- More data: LR-GMM-NN at N = {fi['n_used']} against N = {R['fit_info'][sn]['n_used']}: FID "
            f"{b['fid']:.1f} vs {a['fid']:.1f} ({d_fid:+.1f}), KID×10³ {1e3 * b['kid']:.2f} vs {1e3 * a['kid']:.2f} "
            f"({1e3 * d_kid:+.2f}); 2√2 seed sd: {tol_fid:.1f} / {1e3 * tol_kid:.2f}: "
            + ("**better beyond the seed spread**" if better else "not better beyond the seed spread")
            + f"; largest mixture weight {max(fi.get('weights') or [float('nan')]):.3f} (K = {fi['K']})."]


def write_markdown(run: ReportRun, total_s: float) -> str:
    c = run.c
    s = c.scale
    R = c.results
    md: list[str] = []
    md += [
        "# Reproduction report: LR-GMM-NN beside the paper's baselines",
        "",
        f"**Scale: `{s.name}`.** Produced by `{c.command}` in {total_s / 60:.1f} min on "
        f"{platform.machine()}, {os.cpu_count()} CPU cores ({torch.get_num_threads()} torch threads), "
        f"torch {torch.__version__}, lrgmm commit {c.commit}, {time.strftime('%Y-%m-%d %H:%M %Z')}. "
        + _load_note(),
        "",
    ]
    if s.name != "full":
        full = SCALES["full"]
        md += [
            f"> This is the **{s.name}** scale: {s.n_table} faces per method (the paper: 10,000), training sets of "
            f"{', '.join(str(run.n_of(n)) for n in s.train_sizes)} photos and {s.n_heldout} held-out reference photos. "
            f"The full scale (`python -m experiments.reproduction --scale full`) uses N = 32, 1,024 and the whole training split, "
            f"{full.n_table} faces per method, {full.n_heldout} reference photos: {full.expected}.",
            "",
        ]
    summary = []
    for n, rows in R.get("table", {}).items():
        checks = _shape_checks(rows)
        by = {r["method"]: r for r in rows}
        nn = by.get("lrgmm-nn")
        if nn:
            best = min((r for r in rows if r["method"] != "real-photos"), key=lambda r: r["fid"])
            summary.append(f"- N = {R['fit_info'][n]['n_used']}: LR-GMM-NN FID {nn['fid']:.1f}, KID×10³ {1e3 * nn['kid']:.2f}, "
                           f"precision {nn['precision']:.2f}, recall {nn['recall']:.2f}, near copies "
                           f"{_pct(nn['near_copy_inception'])}; lowest FID: {best['label']} ({best['fid']:.1f}). Expected shape: "
                           f"{sum(ok for ok, _ in checks)} of {len(checks)} checks agree.")
    for n, block in sorted(R.get("main", {}).get("by_N", {}).items(), key=lambda kv: int(kv[0])):
        nn, lp = _by_method(block, "lrgmm-nn"), _by_method(block, "latentpatch")
        if nn and lp:
            ok, _ = _against_baseline(nn, lp)
            summary.append(f"- Main comparison, N = {block['N']:,} ({R['main']['n']:,} faces x {len(R['main']['seeds'])} "
                           f"seeds): LR-GMM-NN FID {_pm(nn['fid'], nn['fid_sd'])}, KID×10³ "
                           f"{_pm(nn['kid'], nn['kid_sd'], '{:.2f}', 1e3)}, precision {nn['precision']:.3f}, recall "
                           f"{nn['recall']:.3f}, near copies {_pct(nn['near_copy_inception'])}; LatentPatch-style FID "
                           f"{_pm(lp['fid'], lp['fid_sd'])}, KID×10³ {_pm(lp['kid'], lp['kid_sd'], '{:.2f}', 1e3)}, near "
                           f"copies {_pct(lp['near_copy_inception'])}: LR-GMM-NN "
                           + ("**ahead on every count**" if ok else "not ahead on every count") + ".")
    summary += _more_data_line(R)
    if summary:
        md += ["## Summary", ""] + summary + ["", "Details, and what the disagreements come from, under each table below.", ""]
    md += [
        "## Setup",
        "",
        f"- Data: {len(c.files)} photos of `{c.data}` (shared UTKFace, aligned faces), 128 px, TAEF2 autoencoder "
        f"(32x16x16 latents). Permuted with seed {SPLIT_SEED}; the last {s.heldout_reserve} are held out and never "
        f"trained on: the first {len(c.heldout)} of them are the **real reference** of every metric, the next "
        f"{len(c.fresh)} the *fresh real photos* row. Training sets are the first N of the other {len(c.pool)} "
        "(nested, disjoint from the held-out part" + ("; the N = 1,024 set is the one `lrgmm demo` fits)." if c.default_data
                                                       else ")."),
        f"- Every generator is measured on the same {s.n_table} faces per table cell (seed {EVAL_SEED}) and "
        f"{s.n_sweep} per sweep point; figures show seed {FIGURE_SEED}.",
        "- Metrics (`lrgmm.evaluation.Evaluator`): FID; KID (unbiased, mean ± std over 100 subsets of "
        f"min(1000, n)); improved precision/recall (k = 3) **on Inception-v3 features, since no VGG16 weights are "
        "available**: compare them with each other, not with the paper's numbers; near copies: share of faces "
        "closer (Inception features of decoded faces / latent codes) to a training face than 95 % of held-out "
        "photos are (fresh faces score ~5 %); C_T (Meehan et al. 2020: << 0 copying, ~0 like new photos) and "
        "the authentic share (Alaa et al. 2022), in Inception space where near copies are measured there, else in "
        "latent-code space (at n = 100 C_T has few cells: read the privacy section's 1,000-face rows); "
        "provenance: training photos per face and the largest share of a "
        "face's latent pixels that one photo provides (copying generators only). Read the Inception column for "
        "whether a picture is a copy: in latent-code space, draws that lie in the span of the training codes (LR-GMM, "
        "the ex-post densities) or are made of training pixels sit closer to the training codes than new photos do "
        "by construction.",
        f"- **FID is biased upwards at small n** (its bias falls roughly as 1/n): {s.n_table} faces against "
        f"{len(c.heldout)} reference photos give large FIDs even for real photos — the *fresh real photos* row is "
        "that floor. Compare FIDs only at equal n, and read KID (unbiased) beside them.",
        "- Fit time: what the generator fits itself (LR-GMM: projector + mixture; baselines reuse the pipeline's "
        "projector and training codes). Sampling time: latent codes only, ms per face in one batch of "
        f"{s.n_timing} (decoding is the same for every method: {_per_face(c, 'generation_incl_decoding')} generation "
        f"incl. decoding, Inception features {_per_face(c, 'inception')}; medians over the runs that computed them). "
        f"Caches: the Inception features of {sum(x > 5 for x in c.per_face_ms.get('inception', []))} of the "
        f"{len(c.per_face_ms.get('inception', []))} generated sets were computed in this run (the others read from the "
        f"feature cache, `$LRGMM_CACHE_DIR`{' = ' + os.environ['LRGMM_CACHE_DIR'] if os.environ.get('LRGMM_CACHE_DIR') else ''}).",
        "- LatentPatch has no public code: the `LatentPatch-style` rows are **our re-implementation** from the "
        "papers' description (multi-scale 4→8→16, sequential raster copying of latent blocks at the same position, "
        "top-3 random choice; `lrgmm.baselines.LatentPatch`). The ex-post GMM is our EM at full rank "
        "(`lrgmm.baselines.FullGMM`), not scikit-learn's.",
        "",
    ]
    if R.get("main"):
        md += _main_md(R["main"], R.get("fit_info", {}), c.figures)
    md += [
        "## Table 1 analogue",
        "",
    ]
    for n, rows in R.get("table", {}).items():
        fi = R["fit_info"][n]
        recon = next((r["fid_train_recon"] for r in rows if r.get("fid_train_recon") is not None), None)
        md += [f"### N = {fi['n_used']}" + (" (the whole training split)" if n == len(c.pool) else ""), "",
               f"K = {fi['K']}, q = {fi['q']}, lambda = {_f(fi.get('lambda'), '{:.3g}')}"
               f"{' (from K)' if fi.get('lambda_from_K') else ''}, sum of ranks d_k = {sum(fi['ranks'])}; "
               f"mixture weights, largest first: {_weights(fi.get('weights'))}; {fi['input']}. "
               f"FID of the {fi['n_used']} training faces through the autoencoder (what copying them scores, at "
               f"n = {fi['n_used']}): {_f(recon)}.", ""]
        md += _table_md(rows)
        if all(r.get("near_copy_inception") is None for r in rows if r["method"] != "real-photos"):
            md += ["", f"(Near copies in Inception space are not measured at N = {fi['n_used']} at this scale: the test "
                       "decodes every training code and takes its Inception features, about 45 min for 19k photos on 2 "
                       "cores; `--scale full` does it. Near copies in latent-code space and the provenance columns are "
                       "measured.)"]
        gm = next((r for r in rows if r["method"] == "gmm10"), None)
        if gm and gm.get("components") not in (None, 10):
            md += ["", f"(ex-post GMM: {gm['components']} components at this N: a component needs 4 training codes.)"]
        md += ["", "Expected shape (paper), measured:", ""]
        md += [f"- {t}" for _, t in _shape_checks(rows)]
        md += [""]
    md += [
        "Paper, for reference (CelebA-HQ 256 px, VQGAN, 10k samples, VGG16 precision/recall): N = 1,024 — "
        "LatentPatch 58.4 / 0.55 / 0.01, LR-GMM 73.8 / 0.47 / 0.03, LR-GMM-NN 58.1 / 0.52 / 0.07; N = 28k — "
        "LR-GMM 84.1 / 0.53 / 0.01, LR-GMM-NN 45.0 / 0.68 / 0.06 (FID / precision / recall). Absolute values do not "
        "carry over (other data, autoencoder, resolution, features, sample counts); the ordering should.",
        "",
        "## Figures",
        "",
    ]
    F_ = c.figures
    sn = R.get("sweep_n")
    if "samples_all" in F_:
        md += [f"### Samples per method (N = {sn}, {min(8, s.n_grid)} faces each, seed {FIGURE_SEED})", "",
               f"![samples of every method](figures/{F_['samples_all']})", "",
               "Grids of " + str(s.n_grid) + " faces per method: " + ", ".join(
                   f"[{k}](figures/{v})" for k, v in F_.get("samples", {}).items()) + ".", ""]
    if "provenance" in F_:
        srow = {r["method"]: r for r in R.get("table", {}).get(run.n_of(s.sweep_n), [])}
        stats = "; ".join(
            f"{srow[m]['label']}: {_f(srow[m]['distinct_sources_median'], '{:.0f}')} photos per face, largest share "
            f"{_pct(srow[m]['largest_share_median'])}"
            for m in METHOD_ORDER if m in srow and srow[m].get("distinct_sources_median") is not None)
        md += [f"### Provenance maps (N = {sn})", "",
               "Each pair of rows: faces, then their maps (one colour per training photo a latent pixel was copied "
               f"from). Medians over the table's {s.n_table} faces: {stats}.", "",
               f"![provenance maps](figures/{F_['provenance']})", ""]
    if "centroids" in F_:
        cen = R.get("centroids", {})
        md += [f"### Decoded centroids (paper fig. 7; N = {sn}, K = {cen.get('K')})", "",
               "Top: D(P0*(c_k)); bottom: the first three code channels of c_k as RGB (each channel scaled to its "
               f"range over the centroids). Weights pi_k: {cen.get('weights')}.", "",
               f"![decoded centroids](figures/{F_['centroids']})", ""]
    sw = R.get("sweeps", {})
    noise = sw.get("noise")
    defaults = {}
    if "lambda" in sw:
        rows = sw["lambda"]
        md += [f"### lambda sweep (paper fig. 8; N = {sn}, n = {s.n_sweep} per point)", "",
               f"One fit at lambda = {max(max(s.lambdas), run.sweep_pipe.model_.temperature_):g}, sampled with each lambda "
               "(same seed, same eigenvectors, fewer or more of them per component, as in the paper's figure). "
               "Without the NN step:", "",
               f"![lambda samples, LR-GMM](figures/{F_.get('lambda')})", "", "With the NN step:", "",
               f"![lambda samples, LR-GMM-NN](figures/{F_.get('lambda_nn')})", "",
               f"![lambda curve](figures/{F_.get('lambda_curve')})", "",
               "| lambda | sum d_k | NN | FID | KID x 10³ | precision | recall | near copies (Inception) |", "|---|---|---|---|---|---|---|---|"]
        for r in sorted(rows, key=lambda r: (not r["nn"], r["value"])):
            md.append(f"| {r['value']:g} | {r['sum_dk']} | {'yes' if r['nn'] else 'no'} | {_f(r['fid'])} | "
                      f"{_f(1e3 * r['kid'], '{:.2f}')} ± {_f(1e3 * r['kid_std'], '{:.2f}')} | {_f(r['precision'], '{:.2f}')} | "
                      f"{_f(r['recall'], '{:.2f}')} | {_pct(r['near_copy_inception'])} |")
        v, info = _sweep_verdict([r for r in rows if r["nn"]], run.sweep_pipe.model_.temperature_, "lambda", noise)
        defaults["lambda (temperature)"] = info
        md += ["", f"Default lambda = {run.sweep_pipe.model_.temperature_:g} (LR-GMM-NN): {v}.", ""]
    if "q" in sw:
        rows = sw["q"]
        md += [f"### q sweep (projector channels; N = {sn}, n = {s.n_sweep} per point)", "",
               f"Round-trip PSNR on {s.n_psnr} held-out photos: decode(P0*(P0(E(x)))) against the photo x; the "
               "autoencoder alone, decode(E(x)), is the ceiling. No memorisation numbers here (each q has its own "
               "projector, so the training reconstructions would have to be recomputed).", "",
               f"![q curve](figures/{F_.get('q_curve')})", "",
               "| q | d0 | variance kept | PSNR (dB) | PSNR, autoencoder alone | FID | KID x 10³ | precision | recall |",
               "|---|---|---|---|---|---|---|---|---|"]
        for r in rows:
            md.append(f"| {r['value']} | {r['d0']} | {_pct(r['explained_variance'])} | {r['psnr']:.2f} | "
                      f"{r['psnr_autoencoder']:.2f} | {_f(r['fid'])} | {_f(1e3 * r['kid'], '{:.2f}')} ± "
                      f"{_f(1e3 * r['kid_std'], '{:.2f}')} | {_f(r['precision'], '{:.2f}')} | {_f(r['recall'], '{:.2f}')} |")
        qd = int(run.sweep_pipe.model_.codes_.shape[1])
        v, info = _sweep_verdict(rows, qd, "q", noise)
        defaults["q (n_channels)"] = info
        md += ["", f"Default q = {qd}: {v}. (d0 = q·h·w: the mixture's size and the NN step's cost grow with q.)", ""]
    for name, title, default in (("K", "K sweep: mixture components", default_n_components(sn or 1)),
                                 ("omega", "omega sweep: NN patch size", run.sweep_pipe.patch_size if hasattr(run, "sweep_pipe") else None),
                                 ("nn_iterations", "NN-iteration sweep", run.sweep_pipe.nn_iterations if hasattr(run, "sweep_pipe") else None)):
        if name not in sw:
            continue
        rows = sw[name]
        md += [f"### {title} (N = {sn}, n = {s.n_sweep} per point)", "", f"![{name} curve](figures/{F_.get(f'{name}_curve')})", "",
               f"| {name} | FID | KID x 10³ | precision | recall | near copies (Inception) | largest source share (median) | "
               "sampling (ms/face) |", "|---|---|---|---|---|---|---|---|"]
        for r in rows:
            val = f"{r['value']}" + (f" (fitted K = {r['K_fitted']})" if name == "K" and r.get("K_fitted") != r["value"] else "")
            md.append(f"| {val} | {_f(r['fid'])} | {_f(1e3 * r['kid'], '{:.2f}')} ± {_f(1e3 * r['kid_std'], '{:.2f}')} | "
                      f"{_f(r['precision'], '{:.2f}')} | {_f(r['recall'], '{:.2f}')} | {_pct(r['near_copy_inception'])} | "
                      f"{_pct(r['largest_share_median'])} | {_f(r['sample_ms'], '{:.2f}')} |")
        v, info = _sweep_verdict(rows, default, name, noise)
        defaults[name] = info
        md += ["", f"Default {name} = {default}: {v}.", ""]
    if "fid_vs_n" in F_:
        md += [f"### FID against N (n = {s.n_table} per point)", "",
               "Every method at the table's N, and LR-GMM / LR-GMM-NN at "
               f"{', '.join(str(n) for n in s.fid_vs_n_extra) or 'no'} further N (the default K).", "",
               f"![FID against N](figures/{F_['fid_vs_n']})", ""]
        extra = R.get("fid_vs_n_extra", [])
        if extra:
            md += ["| N | method | FID | KID x 10³ | precision | recall |", "|---|---|---|---|---|---|"]
            for r in sorted(extra, key=lambda r: (r["N"], r["method"])):
                md.append(f"| {r['N']} | {r['label']} | {_f(r['fid'])} | {_f(1e3 * r['kid'], '{:.2f}')} | "
                          f"{_f(r['precision'], '{:.2f}')} | {_f(r['recall'], '{:.2f}')} |")
            md += [""]
    if R.get("privacy"):
        md += _privacy_md(R["privacy"], F_)
    if defaults:
        if noise and noise.get("fid_sd") is not None:
            spread = (f"The default LR-GMM-NN measured with {len(noise['seeds'])} seeds ({s.n_sweep} faces each) gives FID "
                      f"{' / '.join(f'{v:.1f}' for v in noise['fid'])} (sd {noise['fid_sd']:.1f}) and KID x 10³ "
                      f"{' / '.join(f'{1e3 * v:.2f}' for v in noise['kid'])} (sd {1e3 * noise['kid_sd']:.2f}): a value is "
                      "*supported within seed noise* when its FID and KID are within 2√2 sd of the best value's (the "
                      "spread of a difference of two single-seed measurements).")
        else:
            spread = "No seed spread was measured: the tolerance is one KID subset std."
        md += ["## Defaults the sweeps support", "",
               f"At N = {sn}, {s.n_sweep} faces per point. {spread} Lower FID/KID is not the only goal: the NN step's "
               "patch size and iterations, and K, also set how much of a face comes from one training photo (near "
               "copies, largest source share), which the verdicts quote.", "",
               "| parameter | default | best FID at | best KID at | verdict |", "|---|---|---|---|---|"]
        for k, info in defaults.items():
            md.append(f"| {k} | {info['default']} | {info.get('best_fid')} | {info.get('best_kid')} | {info.get('verdict', '')} |")
        md += [""]
        R["defaults"] = defaults
    md += ["## Time per stage", "", "| stage | seconds |", "|---|---|"]
    md += [f"| {k} | {v:.0f} |" for k, v in c.stage_seconds.items()]
    md += ["", f"All numbers: [`reproduction.json`](reproduction.json). Regenerate: `{c.command}`.", ""]
    return "\n".join(md)


def run_report(scale: str | Scale = "quick", data: str | os.PathLike | None = None, out: str | os.PathLike = "reports",
               progress: bool = True, command: str | None = None) -> Path:
    """Run the report and write ``<out>/reproduction.md`` (returned), ``reproduction.json`` and
    ``figures/``. ``data``: folder of face photos (default: the shared UTKFace folder)."""
    sc = SCALES[scale] if isinstance(scale, str) else scale
    default_data = data is None
    if data is None:
        from lrgmm.demo import find_demo_data

        data = find_demo_data()
    out = Path(out)
    (out / "figures").mkdir(parents=True, exist_ok=True)
    cmd = command or f"python -m experiments.reproduction --scale {sc.name} --out {out}"
    # The commit is read before the run writes its figures, which are tracked files: read at the
    # end, every report would call its own commit dirty.
    ctx = _Context(scale=sc, data=Path(data), out=out, progress=progress, command=cmd, default_data=default_data,
                   commit=_git_commit())
    run = ReportRun(ctx)
    start = time.perf_counter()
    stages = [("data split", run.split), ("table", run.table), ("main comparison", run.main_comparison),
              ("sweeps", run.sweeps), ("privacy", run.privacy),
              ("FID against N", run.fid_vs_n),
              ("figures", run.figures_final)]
    with warnings.catch_warnings():
        warnings.simplefilter("once", EvalWarning)
        for name, fn in tqdm(stages, desc="report", unit="stage", disable=not progress):
            t0 = time.perf_counter()
            before = set(ctx.stage_seconds)
            fn()
            if set(ctx.stage_seconds) == before:  # stages that time their parts keep those
                ctx.stage_seconds[name] = time.perf_counter() - t0
    total = time.perf_counter() - start
    text = write_markdown(run, total)
    md_path = out / "reproduction.md"
    atomic_write_bytes(md_path, text.encode())
    payload = {
        "scale": sc.__dict__, "command": cmd, "total_seconds": total, "data": str(ctx.data),
        "split": {"seed": SPLIT_SEED, "n_files": len(ctx.files), "n_reference": len(ctx.heldout),
                  "n_fresh": len(ctx.fresh), "n_training_pool": len(ctx.pool)},
        "eval_seed": EVAL_SEED, "results": ctx.results, "stage_seconds": ctx.stage_seconds,
        "figures": ctx.figures,
    }
    atomic_write_json(out / "reproduction.json", payload)
    return md_path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m experiments.reproduction", description=__doc__.split("\n\n")[0])
    p.add_argument("--scale", choices=list(SCALES), default="quick",
                   help="quick: 1-2 hours on 2 CPU cores; full: several hours; test: seconds")
    p.add_argument("--data", default=None, help="folder of face photos (default: the shared UTKFace folder)")
    p.add_argument("--out", default="reports", help="output folder (default: reports/)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    a = p.parse_args(argv)
    args = ["python -m experiments.reproduction", f"--scale {a.scale}"]
    if a.data:
        args.append(f"--data {shlex.quote(a.data)}")
    args.append(f"--out {shlex.quote(a.out)}")
    md = run_report(a.scale, a.data, a.out, progress=not a.quiet, command=" ".join(args))
    print(f"wrote {md}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
