"""Speed and size of the core on 1,024 encoded shared faces; writes BENCHMARKS.md.

    python benchmarks/bench_core.py [--data DIR] [--n-train 1024] [--skip-sklearn] [-o BENCHMARKS.md]

Every stage runs in a child process of its own so that its peak resident memory can be read
(ru_maxrss of the child). Times are medians of repeated runs on this machine; the comparisons
that matter are the ratios measured in the same run (scikit-learn's full-covariance EM, a naive
per-sample NN loop), since absolute times on shared 2-core machines are noisy.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def _subset(data: Path | None, n: int, seed: int = 0) -> list[Path]:
    from lrgmm.demo import find_demo_data
    from lrgmm.io.images import list_images

    files = list_images(data or find_demo_data()).paths
    pick = torch.randperm(len(files), generator=torch.Generator().manual_seed(seed))[:n]
    return [files[i] for i in sorted(pick.tolist())]


def _latents(files):
    from lrgmm.autoencoders import get_autoencoder
    from lrgmm.pipeline.encoding import encode_images

    return encode_images(files, get_autoencoder("taef2"), 128, 16, cache=True, progress=False).latents


def _median_time(fn, repeat):
    times = []
    out = None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


# ----------------------------------------------------------------- stages (child processes)
def stage_fit(files, repeat):
    from lrgmm.core.model import LRGMM

    y = _latents(files)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t, model = _median_time(lambda: LRGMM(n_components=8).fit(y), repeat)
    m = model.mixture_
    return {
        "seconds": t,
        "em_iterations": m.n_iter_,
        "converged": m.converged_,
        "ranks": m.ranks_.tolist(),
        "counts": model.parameter_counts(),
        "peak_extra_mib": (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024,
    }


def stage_sklearn(files):
    import warnings

    from sklearn.mixture import GaussianMixture

    from lrgmm.core.projector import PixelPCA

    y = _latents(files)
    codes = PixelPCA(16).fit(y).transform(y).reshape(y.shape[0], -1).double().numpy()
    gm = GaussianMixture(8, covariance_type="full", reg_covar=1e-3, random_state=0)
    t = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gm.fit(codes)
    return {"seconds": time.perf_counter() - t, "em_iterations": int(gm.n_iter_)}


def stage_sample(files, repeat, n):
    from lrgmm.core.model import LRGMM

    model = LRGMM(n_components=8).fit(_latents(files))
    model.sample(16, seed=0)  # warm-up
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t_nn, _ = _median_time(lambda: model.sample(n, seed=1), repeat)
    t_lr, _ = _median_time(lambda: model.sample(n, seed=1, nn=False), repeat)
    peak = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024
    # The obvious alternative: one sample at a time, explicit zero-padded patches (unfold).
    import torch.nn.functional as F

    s = model.sample(64, seed=2, nn=False)
    mem = model.codes_
    q, h, w = mem.shape[1:]
    mem_p = F.unfold(mem, 5, padding=2)  # (N, q*25, h*w)

    def naive():
        for i in range(s.codes.shape[0]):
            members = (model.labels_ == s.components[i]).nonzero().squeeze(1)
            zp = F.unfold(s.codes[i : i + 1], 5, padding=2)  # (1, q*25, hw)
            d = ((mem_p[members] - zp) ** 2).sum(1)  # (n_k, hw)
            j = members[d.argmin(0)]
            _ = mem.reshape(mem.shape[0], q, h * w)[j, :, torch.arange(h * w)]

    t_naive, _ = _median_time(naive, max(1, repeat // 2))
    return {
        "ms_per_face_nn": 1000 * t_nn / n,
        "ms_per_face_lr": 1000 * t_lr / n,
        "ms_per_face_naive_nn_only": 1000 * t_naive / 64,
        "peak_extra_mib": peak,
    }


def stage_autoencoder(files, resolution, repeat):
    from lrgmm.autoencoders import get_autoencoder
    from lrgmm.io.images import load_images

    ae = get_autoencoder("taef2", batch_size=16)
    x = torch.from_numpy(load_images(files[:16], resolution).images)
    ae.encode(x[:2])  # warm-up
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t_enc, z = _median_time(lambda: ae.encode(x), repeat)
    t_dec, _ = _median_time(lambda: ae.decode(z), repeat)
    return {
        "encode_ms": 1000 * t_enc / 16,
        "decode_ms": 1000 * t_dec / 16,
        "peak_extra_mib": (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024,
    }


def stage_file(files):
    from lrgmm.pipeline import FacePipeline

    pipe = FacePipeline(n_components=8, progress=False).fit(files)
    with tempfile.TemporaryDirectory() as d:
        path = pipe.save(Path(d) / "m.lrgmm")
        size = path.stat().st_size
    return {"file_mib": size / 2**20, "counts": pipe.model_.parameter_counts()}


def _child(conn, fn, args):
    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", torch.get_num_threads())))
    try:
        conn.send(("ok", fn(*args)))
    except Exception as exc:  # report, don't hang the parent
        conn.send(("error", repr(exc)))
    conn.close()


def run_stage(fn, *args):
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_child, args=(child, fn, args))
    proc.start()
    status, value = parent.recv()
    proc.join()
    if status != "ok":
        raise RuntimeError(f"{fn.__name__} failed: {value}")
    print(f"  {fn.__name__}: {value}", file=sys.stderr)
    return value


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=None)
    ap.add_argument("--n-train", type=int, default=1024)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--n-samples", type=int, default=1000)
    ap.add_argument("--skip-sklearn", action="store_true")
    ap.add_argument("-o", "--output", type=Path, default=ROOT / "BENCHMARKS.md")
    args = ap.parse_args(argv)

    files = _subset(args.data, args.n_train)
    print(f"encoding/caching {len(files)} faces...", file=sys.stderr)
    _latents(files)
    fit = run_stage(stage_fit, files, args.repeat)
    skl = None if args.skip_sklearn else run_stage(stage_sklearn, files)
    smp = run_stage(stage_sample, files, args.repeat, args.n_samples)
    ae128 = run_stage(stage_autoencoder, files, 128, args.repeat)
    ae256 = run_stage(stage_autoencoder, files, 256, max(1, args.repeat // 2))
    mf = run_stage(stage_file, files)

    cmd = "python benchmarks/bench_core.py" + (" " + " ".join(argv) if argv else "")
    counts = mf["counts"]
    lines = [
        "# Benchmarks",
        "",
        f"Produced by `{cmd}` on {time.strftime('%Y-%m-%d')}, "
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads. {len(files)} shared UTKFace faces (seed-0 subset, as `lrgmm demo`), "
        "128 px, TAEF2 latents 32x16x16, q = 16 (d0 = 4,096), K = 8, lambda = 0.12, omega = 5, one NN iteration.",
        "Each stage runs in its own process; peak memory is the growth of that process's peak resident set "
        "during the stage. Times are medians of repeated runs.",
        "",
        "## Fit (projector + mixture, encoding excluded)",
        "",
        "| what | time | EM iterations | ratio |",
        "|---|---|---|---|",
        f"| lrgmm `LRGMM(n_components=8).fit` | {fit['seconds']:.2f} s | {fit['em_iterations']} | 1 |",
    ]
    if skl:
        lines.append(
            f"| scikit-learn `GaussianMixture(8, covariance_type='full', reg_covar=1e-3)` on the same codes "
            f"| {skl['seconds']:.1f} s | {skl['em_iterations']} | {skl['seconds'] / fit['seconds']:.1f}x slower |"
        )
    lines += [
        "",
        f"Targets: at most 2 s (the paper: 9.05 s for its GMM fit) and at least 5x faster than scikit-learn. "
        f"Peak memory during our fit: +{fit['peak_extra_mib']:.0f} MiB. Ranks d_k: {fit['ranks']}.",
        "",
        f"## Sampling ({args.n_samples} faces in one batch)",
        "",
        "| what | ms per face |",
        "|---|---|",
        f"| LR-GMM draw + NN projection (batched) | {smp['ms_per_face_nn']:.3f} |",
        f"| LR-GMM draw only (no NN) | {smp['ms_per_face_lr']:.3f} |",
        f"| NN step as a naive per-sample loop (unfold patches, one face at a time), for comparison | {smp['ms_per_face_naive_nn_only']:.2f} |",
        "",
        f"Target: at most 2 ms per face (the paper: 11.3 ms per face on a GPU; LatentPatch 581 ms). "
        f"Peak memory: +{smp['peak_extra_mib']:.0f} MiB.",
        "",
        "## Autoencoder (TAEF2, fp32, batch 16)",
        "",
        "| resolution | encode ms/face | decode ms/face | peak memory |",
        "|---|---|---|---|",
        f"| 128 px | {ae128['encode_ms']:.0f} | {ae128['decode_ms']:.0f} | +{ae128['peak_extra_mib']:.0f} MiB |",
        f"| 256 px | {ae256['encode_ms']:.0f} | {ae256['decode_ms']:.0f} | +{ae256['peak_extra_mib']:.0f} MiB |",
        "",
        "## Size",
        "",
        "| part | values stored | the paper (appendix 3) |",
        "|---|---|---|",
        f"| projector P0 (mean, q eigenvectors of size c, q eigenvalues) | {counts['projector']:,} | (c+1) d0 = 526k as printed; c + qc = 2,304 for its c = 256, q = 8 |",
        f"| mixture (K weights, K means, sum_k d_k eigenvectors + eigenvalues, K noise variances) | {counts['mixture']:,} | ~1M (K = 10, d_k = 48, d0 = 2,048) |",
        f"| NN memory (N x d0 training codes) | {counts['nn_memory']:,} | N d0 = 2M for N = 1,000 |",
        f"| model file on disk (all of the above + labels + metadata) | {mf['file_mib']:.1f} MiB | |",
        "",
        "## Notes",
        "",
        f"- Fit target (<= 2 s, >= 5x scikit-learn): {'met' if fit['seconds'] <= 2 else 'missed'} "
        f"({fit['seconds']:.2f} s" + (f", {skl['seconds'] / fit['seconds']:.0f}x" if skl else "") + "). "
        "Both EMs stop after 2 iterations on these codes: at d0 = 4,096 the responsibilities are 0 or 1 "
        "(see `lrgmm/mixture.py`). Ours never forms a d0 x d0 matrix (Gram matrices of each component's "
        "samples, one GEMM for the E-step); scikit-learn factorises eight 4,096 x 4,096 covariances per iteration.",
        f"- Sampling target (<= 2 ms per face): {'met' if smp['ms_per_face_nn'] <= 2 else 'missed'}. "
        "The NN step is one batched product per cluster and a box filter over positions.",
        "- The mixture holds about twice the paper's ~1M values because d0 is twice the paper's: q = 16 "
        "projector channels for TAEF2's 32-channel latents instead of the paper's q = 8 for a 256-channel "
        "VQGAN (q = 8 loses eyes and mouths on TAEF2, SPEC.md). The count scales with d0 (K means and "
        "sum_k d_k = lambda d0 eigenvectors of size d0).",
        "- The TAEF2 cost at 256 px is about 6-7x that at 128 px (4x the pixels): the full-resolution "
        "layers dominate and are memory-bound on this CPU.",
        "",
    ]
    text = "\n".join(lines)
    # Other scripts own other sections of the file (bench_studio.py: "## Studio ..."): keep them.
    if args.output.exists():
        ours = {ln for ln in lines if ln.startswith("## ")}
        text = text.rstrip("\n") + "\n" + "".join(
            "\n" + sec for sec in _sections(args.output.read_text()) if sec.splitlines()[0] not in ours
        )
    args.output.write_text(text)
    print(f"wrote {args.output}", file=sys.stderr)


def _cpu_flags() -> str:
    try:
        flags = next(ln for ln in Path("/proc/cpuinfo").read_text().splitlines() if ln.startswith("flags")).split()
    except (OSError, StopIteration):
        return "unknown"
    return ", ".join(f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in flags) or "no AVX2"


def run_header(script: str, argv) -> str:
    """The command, date and machine a benchmark table was measured with, as one sentence."""
    cmd = f"python benchmarks/{script}" + (" " + " ".join(argv) if argv else "")
    return (f"`{cmd}` on {time.strftime('%Y-%m-%d')}, {platform.machine()}, {os.cpu_count()} CPU cores "
            f"({_cpu_flags()}), torch {torch.__version__}, {torch.get_num_threads()} threads.")


def write_section(path: Path, heading: str, text: str) -> None:
    """Put ``text`` (a "## heading" section) into the markdown file ``path``: the file's preamble
    and every other section stay as they are, a section of the same heading is replaced, and the
    new one goes last."""
    if path.exists():
        old_text = path.read_text()
        head = old_text.split("\n## ", 1)[0].rstrip("\n") + "\n"
        keep = [sec for sec in _sections(old_text) if sec.splitlines()[0] != heading]
        text = head + "".join("\n" + sec for sec in keep) + "\n" + text
    path.write_text(text)
    print(f"wrote {path}", file=sys.stderr)


def _sections(markdown: str) -> list[str]:
    """The "## " sections of a markdown file, each with its heading line (the preamble dropped)."""
    parts, current = [], None
    for line in markdown.splitlines(keepends=True):
        if line.startswith("## "):
            current = [line]
            parts.append(current)
        elif current is not None:
            current.append(line)
    return ["".join(p).rstrip("\n") + "\n" for p in parts]


if __name__ == "__main__":
    main(sys.argv[1:])
