"""Load test of the studio: bursts of concurrent generate requests on loopback.

    python benchmarks/bench_studio.py [--model M.lrgmm | --n-train 256] [--clients 20] [--faces 8]
                                      [--rounds 4] [-o BENCHMARKS.md]

Starts ``lrgmm serve`` in a child process on a free loopback port (the model given, or one fitted
here on ``--n-train`` shared faces), then, ``--rounds`` times, sends ``--clients`` generate
requests at once (``--faces`` faces each, distinct seeds) and, per request, fetches its first face
and its whole grid PNG (which waits until all its faces are decoded). Every answer must be a 200
with a PNG of the right size: a lost or failed request fails the run. The server's resident
memory (VmRSS from /proc) is sampled every 20 ms; each round adds ``clients x faces`` faces, more
than the face cache holds after a few rounds, so a bounded server plateaus.

Writes (or replaces) the "Studio" section at the end of BENCHMARKS.md and leaves the other
sections alone.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import math
import os
import platform
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SECTION = "## Studio (lrgmm serve under load)"


def _rss_mib(pid: int, field: str = "VmRSS") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} for process {pid}")


def _percentile(values: list[float], q: float) -> float:
    """Linear interpolation between order statistics (numpy's default)."""
    v = sorted(values)
    pos = (len(v) - 1) * q
    lo = int(pos)
    hi = min(lo + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (pos - lo)


def _fit_model(n_train: int, path: Path) -> None:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from bench_core import _subset

    from lrgmm.pipeline import FacePipeline

    FacePipeline(progress=True).fit(_subset(None, n_train)).save(path)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def _one(client, model: str, seed: int, faces: int, resolution: int) -> dict:
    from PIL import Image

    t0 = time.perf_counter()
    r = await client.post("/api/generate", json={"model": model, "n": faces, "seed": seed})
    r.raise_for_status()
    grid = r.json()
    t_gen = time.perf_counter() - t0
    r = await client.get(grid["faces"][0]["url"])
    r.raise_for_status()
    t_first = time.perf_counter() - t0
    r = await client.get(grid["grid_url"])
    r.raise_for_status()
    t_all = time.perf_counter() - t0
    img = Image.open(io.BytesIO(r.content))
    img.load()
    cols = math.ceil(math.sqrt(faces))  # lrgmm.io.images.make_grid's layout, 2 px padding
    expected = (2 + cols * (resolution + 2), 2 + math.ceil(faces / cols) * (resolution + 2))
    assert img.format == "PNG" and img.size == expected, (img.format, img.size, expected)
    return {"generate": t_gen, "first_face": t_first, "all_faces": t_all, "grid": grid["id"]}


async def _round(url: str, model: str, clients: int, faces: int, seed0: int, resolution: int) -> list[dict]:
    import httpx

    limits = httpx.Limits(max_connections=clients + 4)
    async with httpx.AsyncClient(base_url=url, timeout=600, limits=limits) as client:
        tasks = [_one(client, model, seed0 + i, faces, resolution) for i in range(clients)]
        return await asyncio.gather(*tasks, return_exceptions=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, default=None, help="model file (default: fit one on --n-train shared faces)")
    ap.add_argument("--n-train", type=int, default=256)
    ap.add_argument("--clients", type=int, default=20, help="concurrent generate requests per round")
    ap.add_argument("--faces", type=int, default=8, help="faces per request")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--single", type=int, default=5, help="sequential single requests of 16 faces, timed first")
    ap.add_argument("--workers", type=int, default=None, help="server decode threads (default: lrgmm serve's)")
    ap.add_argument("-o", "--output", type=Path, default=ROOT / "BENCHMARKS.md")
    args = ap.parse_args(argv)

    tmp = Path(tempfile.mkdtemp(prefix="bench-studio-"))
    model = args.model
    if model is None:
        model = tmp / f"shared{args.n_train}.lrgmm"
        print(f"fitting a model on {args.n_train} shared faces -> {model}")
        _fit_model(args.n_train, model)
    from lrgmm.io.model_file import read_metadata

    meta = read_metadata(model)
    resolution = int(meta["resolution"])
    port = _free_port()
    cmd = [sys.executable, "-m", "lrgmm", "serve", str(model), "--port", str(port)]
    if args.workers:
        cmd += ["--workers", str(args.workers)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        import httpx

        deadline = time.monotonic() + 120
        while True:
            try:
                models = httpx.get(url + "/api/models", timeout=2).json()
                break
            except httpx.HTTPError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"server did not start: {proc.stdout.read() if proc.poll() is not None else ''}") from None
                time.sleep(0.3)
        model_id = models[0]["id"]
        # One warm-up request (first decode allocates the network's buffers).
        asyncio.run(_round(url, model_id, 1, args.faces, 10**6, resolution))
        rss_idle = _rss_mib(proc.pid)
        # One request at a time, as a single user of the page: 16 faces (the page's default).
        single = [asyncio.run(_round(url, model_id, 1, 16, 2 * 10**6 + i, resolution))[0] for i in range(args.single)]

        samples: list[float] = []
        stop = threading.Event()

        def sampler():
            while not stop.is_set():
                samples.append(_rss_mib(proc.pid))
                time.sleep(0.02)

        th = threading.Thread(target=sampler, daemon=True)
        th.start()
        load = [Path("/proc/loadavg").read_text().split()[0], None]
        results, per_round = [], []
        wall0 = time.perf_counter()
        for k in range(args.rounds):
            t0 = time.perf_counter()
            out = asyncio.run(_round(url, model_id, args.clients, args.faces, k * args.clients, resolution))
            failed = [o for o in out if isinstance(o, BaseException)]
            if failed:
                raise RuntimeError(f"round {k}: {len(failed)} of {args.clients} requests failed: {failed[0]!r}")
            results += out
            status = httpx.get(url + "/api/status").json()
            per_round.append({"seconds": time.perf_counter() - t0, "rss": _rss_mib(proc.pid),
                              "cached_faces": status["cache"]["faces"], "max_faces": status["cache"]["max_faces"]})
            print(f"round {k + 1}: {args.clients} requests answered in {per_round[-1]['seconds']:.1f} s, "
                  f"server RSS {per_round[-1]['rss']:.0f} MiB, cached faces {per_round[-1]['cached_faces']}")
        wall = time.perf_counter() - wall0
        load[1] = Path("/proc/loadavg").read_text().split()[0]
        stop.set()
        th.join()
        hwm = _rss_mib(proc.pid, "VmHWM")
        workers = status["queues"]["decode"]["workers"]
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()

    n_req = len(results)
    assert n_req == args.clients * args.rounds and len({r["grid"] for r in results}) == n_req
    faces_total = n_req * args.faces
    rows = []
    for key, label in (("generate", "generate answered (latents sampled, decoding queued)"),
                       ("first_face", "first face received"), ("all_faces", "whole grid PNG received (all faces decoded)")):
        v = [r[key] for r in results]
        rows.append(f"| {label} | {_percentile(v, .5):.2f} | {_percentile(v, .9):.2f} | {_percentile(v, .99):.2f} | {max(v):.2f} |")
    command = "python benchmarks/bench_studio.py " + " ".join(argv if argv is not None else sys.argv[1:])
    lines = [
        SECTION,
        "",
        (f"`{command.strip()}` on {platform.machine()}, {os.cpu_count()} cores (shared with other work), "
        f"{meta['fit']['n_images']}-face model, TAEF2 {resolution} px, server defaults ({workers} decode thread, "
        f"face cache {per_round[0]['max_faces']} faces). {args.rounds} rounds of {args.clients} concurrent generate "
        f"requests of {args.faces} faces each: {n_req} of {n_req} requests answered with a decodable PNG, none lost "
        f"({faces_total} faces in {wall:.1f} s, {faces_total / wall:.1f} faces/s)."),
        "",
        "Latency per request, seconds from sending it, over all rounds:",
        "",
        "| until | p50 | p90 | p99 | max |",
        "|---|---|---|---|---|",
        *rows,
        "",
        (f"One request at a time on the idle server ({args.single} requests of 16 faces, the page's default; "
        "median and max, seconds):"),
        "",
        "| until | median | max |",
        "|---|---|---|",
        *[f"| {label} | {statistics.median(r[key] for r in single):.2f} | {max(r[key] for r in single):.2f} |"
          for key, label in (("generate", "generate answered"), ("first_face", "first face received"),
                             ("all_faces", "whole grid PNG received"))],
        "",
        "Server memory (resident set, VmRSS):",
        "",
        "| when | RSS MiB | faces in the cache |",
        "|---|---|---|",
        f"| idle, after one warm-up request | {rss_idle:.0f} | |",
        *[f"| after round {k + 1} | {r['rss']:.0f} | {r['cached_faces']} |" for k, r in enumerate(per_round)],
        f"| peak during the rounds (sampled every 20 ms) | {max(samples):.0f} | |",
        f"| peak of the process's life (VmHWM) | {hwm:.0f} | |",
        "",
        ("The grids of a burst take turns in the decode pool, one batch of faces at a time, so each "
         "request's first face comes early and whole grids finish towards the end of the burst; the "
         "burst's total time is the decoding work (faces/s above). The cache drops the oldest grids "
         "beyond its face limit, so memory stops growing once it is full. The machine's load average "
         f"(other users' work included) was {load[0]} at the start and {load[1]} at the end of the rounds: "
         "absolute times on this shared machine are noisy."),
        "",
    ]
    text = args.output.read_text() if args.output.exists() else ""
    pattern = re.compile(re.escape(SECTION) + r".*?(?=^## |\Z)", re.DOTALL | re.MULTILINE)
    new = "\n".join(lines)
    text = pattern.sub(new, text) if pattern.search(text) else text.rstrip("\n") + "\n\n" + new
    args.output.write_text(text)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
