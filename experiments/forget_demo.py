"""Forgetting one photo of the demo's 1,024-face model: the time, and the same model as a fresh fit.

    python experiments/forget_demo.py [--data DIR] [--index 500] [--out DIR]

Fits the default ``FacePipeline`` on the demo's subset (the first 1,024 photos of the seed-0
permutation, sorted, as ``lrgmm demo`` picks them; latents from the latent cache, which the demo
fills), saves it, forgets the photo at ``--index`` of the model's training list with
``lrgmm.pipeline.forget.forget_model_file`` (load, refit, checks with 256 faces, save, record), then fits
the same subset without that photo from scratch and compares every tensor of the two models
(``torch.equal``) and their training lists. Prints the times; exits 1 when the models differ.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

from lrgmm.data.splits import seeded_subset
from lrgmm import FacePipeline
from lrgmm.demo import find_demo_data
from lrgmm.pipeline.forget_file import forget_model_file
from lrgmm.io.images import list_images
from lrgmm.io.model_file import load_model_file, model_tensors


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=None, help="folder of face photos (default: the shared UTKFace folder)")
    ap.add_argument("--index", type=int, default=500, help="training photo to forget")
    ap.add_argument("--out", default=None, help="folder for the model files (default: a temporary one)")
    args = ap.parse_args()
    files = list_images(Path(args.data) if args.data else find_demo_data()).paths
    chosen = seeded_subset(files, 1024, 0)
    out = Path(args.out or tempfile.mkdtemp(prefix="lrgmm-forget-"))
    out.mkdir(parents=True, exist_ok=True)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the demo subset holds one duplicate, reported by fit
        t = time.perf_counter()
        pipe = FacePipeline(random_state=0, progress=False).fit(chosen)
        print(f"fit: {len(pipe.training_files_)} photos, K = {pipe.model_.n_components_}, "
              f"{time.perf_counter() - t:.1f} s")
        pipe.save(out / "demo.lrgmm")
        gone = pipe.training_files_[args.index]

        t = time.perf_counter()
        rec = forget_model_file(out / "demo.lrgmm", [gone], out / "forgot.lrgmm", progress=False)
        print(f"forget 1 photo: {time.perf_counter() - t:.1f} s in all, {rec['seconds']:.1f} s refit and checks "
              f"({rec['latents']['from_cache']} latents from the cache, {rec['latents']['encoded']} encoded); "
              f"record {rec['record_path']}")

        t = time.perf_counter()
        fresh = FacePipeline(random_state=0, progress=False).fit([p for p in chosen if str(p) != gone])
        print(f"fresh fit without it: {len(fresh.training_files_)} photos, {time.perf_counter() - t:.1f} s")

    new, meta = load_model_file(out / "forgot.lrgmm")
    a, b = model_tensors(new), model_tensors(fresh.model_)
    differ = [k for k in a if not torch.equal(a[k], b[k])]
    same_files = [f["path"] for f in meta["training_files"]] == fresh.training_files_
    print(f"tensors equal: {not differ} {differ or ''}; training files equal: {same_files}")
    return 0 if not differ and same_files else 1


if __name__ == "__main__":
    sys.exit(main())
