"""Photos per second encoded into the latent cache: in process against a local Ray with 1 and 2
workers; writes a section of BENCHMARKS.md.

    python benchmarks/bench_ray.py [--data DIR] [--n 512]

The first ``--n`` photos of the reproduction report's training pool, TAEF2 fp32 at 128 px, each
run into an empty cache folder of its own. The local Ray is started once before the timed runs
(its start-up is reported apart); each Ray run is timed from the call to the last shard written,
then the in-process read-back that ``fit`` does is timed too.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_core import run_header, write_section  # noqa: E402
from bench_mixture import training_pool  # noqa: E402

SECTION = "## Encoding on Ray (local workers)"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=None)
    ap.add_argument("--n", type=int, default=512)
    ap.add_argument("-o", "--output", type=Path, default=ROOT / "BENCHMARKS.md")
    args = ap.parse_args(argv)
    import ray

    from lrgmm.autoencoders import get_autoencoder
    from lrgmm.io.latent_cache import LatentCache
    from lrgmm.pipeline.encoding import encode_images
    from lrgmm.pipeline.ray_encoding import _start_ray, encode_on_ray

    files = [str(p) for p in training_pool(args.data)[: args.n]]
    ae = get_autoencoder("taef2")
    encode_images(files[:16], ae, cache=False, progress=False)  # warm-up
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        encode_images(files, ae, cache=LatentCache(Path(tmp) / "local"), progress=False)
        rows.append(("in process (2 torch threads)", args.n / (time.perf_counter() - t), None))
        t = time.perf_counter()
        _start_ray(ray, None)
        startup = time.perf_counter() - t
        warm = LatentCache(Path(tmp) / "warm")
        encode_on_ray(files[:16], cache=warm, workers=1, progress=False)  # actors and Ray Data warmed up
        for workers, threads in ((1, 2), (2, 1)):
            cache = LatentCache(Path(tmp) / f"ray{workers}")
            rep = encode_on_ray(files, cache=cache, workers=workers, threads=threads, progress=False)
            t = time.perf_counter()
            back = encode_images(files, ae, cache=cache, progress=False)
            read_back = time.perf_counter() - t
            assert back.n_cached == args.n and back.n_encoded == 0
            rows.append((f"Ray, {workers} worker(s) x {threads} thread(s)", rep.photos_per_second, read_back))
            print(rows[-1], file=sys.stderr)
    ray.shutdown()
    base = rows[0][1]
    lines = [SECTION, "", run_header("bench_ray.py", argv) + f" {args.n} photos of the training pool, TAEF2 fp32, 128 px, "
             f"an empty cache per run. Local Ray start-up: {startup:.1f} s (once, not in the rates).", "",
             "| engine | photos/s | vs in process | read back by `fit` (s) |", "|---|---|---|---|"]
    for label, rate, back in rows:
        lines.append(f"| {label} | {rate:.1f} | {rate / base:.2f}x | {'–' if back is None else f'{back:.1f}'} |")
    lines.append("")
    write_section(args.output, SECTION, "\n".join(lines))


if __name__ == "__main__":
    main(sys.argv[1:])
