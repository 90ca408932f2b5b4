"""How close the autoencoder and the sampling pipeline run to this machine's limit; writes a
section of BENCHMARKS.md.

    python benchmarks/bench_throughput.py [--data DIR] [--n-faces 256] [--no-avx2]

In one run, after a warm-up of each thing timed:

- the machine's peak: a large GEMM (2048^3) in fp32 and in bf16, GFLOP/s;
- TAEF2's FLOPs per face (torch's FlopCounterMode) for the encoder and decoder, at 128 and 256 px;
- encode and decode ms per face on tensors, and the achieved GFLOP/s as a share of the GEMM peak
  of the same precision, for three setups: fp32 NCHW (how the autoencoder ran before), fp32 NHWC
  (channels_last, the layout it runs in now) and bf16 NHWC (``precision="bf16"``);
- the decoder batch size (4 ... 64 faces);
- photos/s encoded from files (JPEG decode, crop, resize, encode; no cache);
- end to end, model file -> PNG faces + provenance maps + JSON on disk: "before" (fp32 NCHW,
  faces written inline) against ``FacePipeline.generate_to`` now (writer thread) in fp32 and bf16;
- the same comparison on an AVX2-only CPU, emulated in a child process by capping oneDNN and
  ATen at AVX2 (``ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2``): there ``auto`` is fp32.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_core import run_header, write_section  # noqa: E402
from bench_mixture import training_pool  # noqa: E402

SECTION = "## Autoencoder throughput: precision, layout and the end-to-end pipeline"
AVX2_ENV = {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}


def log(*a) -> None:
    print(*a, file=sys.stderr, flush=True)


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


def timed(fn, reps: int) -> float:
    """Median seconds of ``reps`` calls after one warm-up call."""
    fn()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def gemm_gflops(dtype: torch.dtype, n: int = 2048, reps: int = 5) -> float:
    """The faster of two GEMMs of 2 n^3 FLOPs: ``torch.mm`` (BLAS: MKL runs its AVX2 path on some
    CPUs) and the same product as a 1x1 convolution on NHWC tensors (oneDNN, as TAEF2's layers)."""
    a = torch.randn(n, n).to(dtype)
    b = torch.randn(n, n).to(dtype)
    side = int(n**0.5)
    x = torch.randn(1, n, side, side).to(dtype).contiguous(memory_format=torch.channels_last)
    w = torch.randn(n, n, 1, 1).to(dtype).contiguous(memory_format=torch.channels_last)
    conv = torch.nn.functional.conv2d
    with torch.inference_mode():
        t_mm = min(timed(lambda: a @ b, 1) for _ in range(reps))
        t_conv = min(timed(lambda: conv(x, w), 1) for _ in range(reps))
    return max(2 * n**3 / t_mm, 2 * n * n * side * side / t_conv) / 1e9


def flops_per_face(net: torch.nn.Module, x: torch.Tensor) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        net(x)
    return counter.get_total_flops() / x.shape[0]


def autoencoders():
    """(label, autoencoder) for the three setups. "before" is TAEF2 as it ran before this
    release: NCHW tensors and modules, fp32, batches of 16."""
    from lrgmm.autoencoders import TAEF2

    before = TAEF2(batch_size=16)
    before.channels_last = False
    before.encoder.to(memory_format=torch.contiguous_format)
    before.decoder.to(memory_format=torch.contiguous_format)
    return [("fp32 NCHW (before)", before), ("fp32 NHWC", TAEF2()), ("bf16 NHWC", TAEF2(precision="bf16"))]


def network_rows(setups, resolutions, peaks) -> list[dict]:
    rows = []
    for res in resolutions:
        batch = 16  # faces per timed call, run in the autoencoder's own batch size
        reps = 5 if res <= 128 else 2
        x = torch.rand(batch, 3, res, res)
        ref = setups[0][1]
        z = ref.encode(x)
        fl_enc = flops_per_face(ref.encoder, x)
        fl_dec = flops_per_face(ref.decoder, z)
        for label, ae in setups:
            enc = timed(lambda: ae.encode(x), reps) / batch
            dec = timed(lambda: ae.decode(z), reps) / batch
            peak = peaks["bf16" if ae.precision == "bf16" else "fp32"]
            rows.append({"res": res, "setup": label, "enc_ms": 1e3 * enc, "dec_ms": 1e3 * dec,
                         "enc_gflops": fl_enc / enc / 1e9, "dec_gflops": fl_dec / dec / 1e9,
                         "enc_peak": fl_enc / enc / 1e9 / peak, "dec_peak": fl_dec / dec / 1e9 / peak,
                         "flops_enc": fl_enc, "flops_dec": fl_dec})
            log(f"{res}px {label}: encode {1e3 * enc:.1f} ms/face, decode {1e3 * dec:.1f} ms/face")
    return rows


BATCHES = (2, 4, 8, 16, 32)


def batch_rows(n: int = 64) -> list[dict]:
    from lrgmm.autoencoders import TAEF2

    rows = []
    x = torch.rand(n, 3, 128, 128)
    z = torch.randn(n, 32, 16, 16)
    for label, precision in (("fp32 NHWC", "fp32"), ("bf16 NHWC", "bf16")):
        for bs in BATCHES:
            ae = TAEF2(batch_size=bs, precision=precision)
            rows.append({"setup": label, "batch": bs, "enc_ms": 1e3 * timed(lambda: ae.encode(x), 2) / n,
                         "dec_ms": 1e3 * timed(lambda: ae.decode(z), 2) / n})
            log(f"batch {bs} {label}: encode {rows[-1]['enc_ms']:.1f}, decode {rows[-1]['dec_ms']:.1f} ms/face")
    return rows


def file_rows(setups, files) -> list[dict]:
    from lrgmm.pipeline.encoding import encode_images

    rows = []
    for label, ae in setups:
        encode_images(files[:16], ae, 128, cache=False, progress=False)  # warm-up
        t = time.perf_counter()
        encode_images(files, ae, 128, cache=False, progress=False)
        rows.append({"setup": label, "photos_s": len(files) / (time.perf_counter() - t)})
        log(f"encode from files {label}: {rows[-1]['photos_s']:.1f} photos/s")
    return rows


def _write_before(pipe, out: Path, n: int, seed: int) -> None:
    """The sampling loop as it ran before: each batch drawn, decoded, then written inline."""
    from lrgmm.pipeline.generated import FaceWriter

    writer = FaceWriter(out, total=n, background=False)
    batches, settings = pipe._generate_batches(n, seed)
    for batch in batches:
        writer.write(batch)
    writer.close(seed, settings)


def end_to_end_rows(setups, files, resolutions, n_faces: int, tmp: Path) -> list[dict]:
    from lrgmm.pipeline import FacePipeline

    rows = []
    for res in resolutions:
        n = n_faces if res <= 128 else max(16, n_faces // 4)
        fit_ae = setups[-1][1]
        model = FacePipeline(autoencoder=fit_ae, resolution=res, cache=False, progress=False).fit(files[: 128 if res > 128 else len(files)])
        path = model.save(tmp / f"m{res}.lrgmm")
        for label, ae in setups:
            pipe = FacePipeline.load(path, autoencoder=ae, progress=False)
            before = label.endswith("(before)")
            run = (lambda out, k, s: _write_before(pipe, out, k, s)) if before else \
                (lambda out, k, s: pipe.generate_to(out, k, s, progress=False))
            run(tmp / f"warm{res}{len(rows)}", 16, 1)
            t = time.perf_counter()
            run(tmp / f"out{res}{len(rows)}", n, 2)
            rows.append({"res": res, "setup": label, "n": n, "faces_s": n / (time.perf_counter() - t)})
            log(f"end to end {res}px {label}: {rows[-1]['faces_s']:.2f} faces/s")
    return rows


def measure(args, avx2: bool) -> dict:
    torch.manual_seed(0)
    files = [str(p) for p in training_pool(args.data)[: args.n_files]]
    setups = autoencoders()
    if avx2:  # bf16 is emulated there (and "auto" is fp32): only the fp32 setups are compared
        setups = setups[:2]
    peaks = {"fp32": gemm_gflops(torch.float32)}
    if not avx2:
        peaks["bf16"] = gemm_gflops(torch.bfloat16)
    log(f"GEMM peaks (GFLOP/s): {peaks}")
    resolutions = (128,) if avx2 else (128, 256)
    out = {"peaks": peaks, "networks": network_rows(setups, resolutions, peaks)}
    with tempfile.TemporaryDirectory() as tmp:
        out["end_to_end"] = end_to_end_rows(setups, files, resolutions, args.n_faces, Path(tmp))
    if not avx2:
        out["batches"] = batch_rows()
        out["files"] = file_rows(setups, files)
    return out


def _default_batch() -> int:
    import inspect

    from lrgmm.autoencoders import TAEF2

    return inspect.signature(TAEF2.__init__).parameters["batch_size"].default


def markdown(args, argv, res: dict, avx2: dict | None) -> str:
    p = res["peaks"]
    lines = [SECTION, "", run_header("bench_throughput.py", argv) + f" CPU: {cpu_name()}.", "",
             f"Machine peak, a 2048^3 GEMM (the faster of `torch.mm` and a 1x1 convolution on NHWC tensors): fp32 "
             f"{p['fp32']:.0f} GFLOP/s, bf16 {p['bf16']:.0f} GFLOP/s.", "",
             "### TAEF2 per face (tensors in, tensors out)", "",
             f"16 faces per call, run in TAEF2's default batches of {_default_batch()} faces.", "",
             "| px | setup | GFLOP/face enc / dec | encode ms | decode ms | encode GFLOP/s (% of peak) | decode GFLOP/s (% of peak) | decode vs before |",
             "|---|---|---|---|---|---|---|---|"]
    base = {r["res"]: r["dec_ms"] for r in res["networks"] if r["setup"].endswith("(before)")}
    for r in res["networks"]:
        lines.append(f"| {r['res']} | {r['setup']} | {r['flops_enc'] / 1e9:.1f} / {r['flops_dec'] / 1e9:.1f} | "
                     f"{r['enc_ms']:.1f} | {r['dec_ms']:.1f} | {r['enc_gflops']:.0f} ({100 * r['enc_peak']:.0f} %) | "
                     f"{r['dec_gflops']:.0f} ({100 * r['dec_peak']:.0f} %) | {base[r['res']] / r['dec_ms']:.2f}x |")
    lines += ["", "Peak: the GEMM rate of the setup's precision (bf16 rows against the bf16 GEMM).", "",
              "### Batch size (128 px, 64 faces; ms per face)", "", "| setup | " + " | ".join(
                  f"batch {b}" for b in BATCHES) + " |", "|---|" + "---|" * len(BATCHES)]
    for label in ("fp32 NHWC", "bf16 NHWC"):
        for key, what in (("enc_ms", "encode"), ("dec_ms", "decode")):
            ms = [r[key] for r in res["batches"] if r["setup"] == label]
            lines.append(f"| {label} {what} | " + " | ".join(f"{m:.1f}" for m in ms) + " |")
    lines += ["", "### Encoding photos from files (128 px, no cache)", "", "| setup | photos/s | vs before |", "|---|---|---|"]
    b = res["files"][0]["photos_s"]
    for r in res["files"]:
        lines.append(f"| {r['setup']} | {r['photos_s']:.1f} | {r['photos_s'] / b:.2f}x |")
    lines += ["", "### End to end: model file -> PNG faces, provenance maps and JSON on disk", "",
              "| px | setup | faces | faces/s | vs before |", "|---|---|---|---|---|"]
    for rows, tag in ((res["end_to_end"], ""), ((avx2 or {}).get("end_to_end", []), " (AVX2 only, emulated)")):
        base_e = {r["res"]: r["faces_s"] for r in rows if r["setup"].endswith("(before)")}
        for r in rows:
            lines.append(f"| {r['res']} | {r['setup']}{tag} | {r['n']} | {r['faces_s']:.2f} | "
                         f"{r['faces_s'] / base_e[r['res']]:.2f}x |")
    if avx2:
        a = avx2["networks"]
        lines += ["", f"AVX2-only CPU (emulated: `{' '.join(f'{k}={v}' for k, v in AVX2_ENV.items())}`): fp32 GEMM "
                  f"{avx2['peaks']['fp32']:.0f} GFLOP/s; decode at 128 px {a[0]['dec_ms']:.1f} ms/face NCHW (before) "
                  f"and {a[1]['dec_ms']:.1f} NHWC ({a[0]['dec_ms'] / a[1]['dec_ms']:.2f}x); `precision=\"auto\"` "
                  "is fp32 there (bf16 would be emulated: about 5 s per face in a probe)."]
    lines += ["", "\"before\": TAEF2 in fp32 on NCHW tensors in batches of 16, faces written inline after each batch is decoded (how "
              "`lrgmm sample` ran before). Now: NHWC layout, and `FacePipeline.generate_to` / `lrgmm sample` "
              "write on a thread while the next batch is drawn and decoded. Goals (issue 15): decode >= 60 % of the "
              "bf16 GEMM rate where bf16 is used; end to end >= 2x before on a bf16-capable CPU and no slower on "
              "an AVX2-only one.", ""]
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=None)
    ap.add_argument("--n-files", type=int, default=256, help="photos encoded from files (and fitted on)")
    ap.add_argument("--n-faces", type=int, default=256, help="faces written end to end at 128 px (a quarter at 256)")
    ap.add_argument("--no-avx2", action="store_true", help="skip the emulated AVX2-only run")
    ap.add_argument("--child-avx2", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("-o", "--output", type=Path, default=ROOT / "BENCHMARKS.md")
    args = ap.parse_args(argv)
    if args.child_avx2:
        print(json.dumps(measure(args, avx2=True)))
        return
    res = measure(args, avx2=False)
    avx2 = None
    if not args.no_avx2:
        cmd = [sys.executable, __file__, "--child-avx2", "--n-files", str(args.n_files), "--n-faces", str(args.n_faces)]
        if args.data:
            cmd += ["--data", str(args.data)]
        done = subprocess.run(cmd, env={**os.environ, **AVX2_ENV}, stdout=subprocess.PIPE, check=True, text=True)
        avx2 = json.loads(done.stdout)
    write_section(args.output, SECTION, markdown(args, argv, res, avx2))


if __name__ == "__main__":
    main(sys.argv[1:])
