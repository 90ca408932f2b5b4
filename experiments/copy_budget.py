"""The copy budget (``max_share``) on the demo's 1,024-face model: what it costs.

    python experiments/copy_budget.py [--data DIR] [--n 1000] [--json out.json]

Fits the default ``FacePipeline`` on the demo's subset (the first 1,024 photos of the seed-0
permutation, sorted; latents from the latent cache), then samples n faces' latents (no
decoding) with max_share in {None, 0.5, 0.25, 0.15} and prints, per budget: each face's largest
share from one photo (median, p95, max), faces over 0.25, sampling time per face (median and min
of 3 runs), the mean eq. 5 patch distance between the query and what was copied (and its
increase over no budget), positions changed, and faces that needed a longer candidate list.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import warnings

import torch

import lrgmm.core.nn_projection as nnp
from lrgmm.data.splits import seeded_subset
from lrgmm import FacePipeline
from lrgmm.demo import find_demo_data
from lrgmm.io.images import list_images

SHARES = (None, 0.5, 0.25, 0.15)


def patch_distances(model, pre, provenance) -> torch.Tensor:
    """Eq. 5 distance between each query patch (the codes before the NN step) and the patch of
    the training code it copied from, per face and position: (n, h, w) float64."""
    n, _, h, w = pre.codes.shape
    box_sq = nnp.box_sum((model.codes_ * model.codes_).sum(1), model.patch_size)
    out = torch.empty(n, h, w, dtype=torch.float64)
    for k in torch.unique(pre.components).tolist():
        rows = (pre.components == k).nonzero().squeeze(1)
        members = (model.labels_ == k).nonzero().squeeze(1)
        local = torch.searchsorted(members, provenance[rows].reshape(len(rows), -1)).reshape(len(rows), h, w)
        mem_t, box_t = nnp._memory_t(model.codes_[members], box_sq[members])
        for s in range(0, len(rows), 64):
            z = pre.codes[rows[s : s + 64]]
            d = nnp._distance_block(z, mem_t, box_t, model.patch_size)  # (h, w, b, m)
            d = d.gather(3, local[s : s + 64].permute(1, 2, 0).unsqueeze(3)).squeeze(3).permute(2, 0, 1)
            d = d + nnp.box_sum((z * z).sum(1), model.patch_size)
            out[rows[s : s + 64]] = d.double()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=None, help="face folder (default: the demo's shared UTKFace folder)")
    ap.add_argument("--n", type=int, default=1000, help="faces sampled per budget")
    ap.add_argument("--json", default=None, help="also write the rows as JSON")
    args = ap.parse_args()

    files = list_images(args.data or find_demo_data()).paths
    t = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pipe = FacePipeline(progress=False).fit(seeded_subset(files, 1024, 0))
    m = pipe.model_
    N, _, h, w = m.codes_.shape
    P, n, seed = h * w, args.n, 1
    print(f"fit {time.perf_counter() - t:.1f} s; N = {N}, K = {m.n_components_}, cluster sizes "
          f"{torch.bincount(m.labels_).tolist()}, smallest feasible max_share {m.min_max_share():.4f}", flush=True)

    redone = [0]  # faces recomputed with a longer candidate list
    original = nnp._nearest_with_budget

    def counting(queries, *a, **kw):
        if (len(a) > 5 and a[5] is not None) or kw.get("k") is not None:
            redone[0] += queries.shape[0]
        return original(queries, *a, **kw)

    nnp._nearest_with_budget = counting
    pre = m.sample(n, seed, nn=False)  # the same draw, before the NN step
    rows, base, plain = {}, None, None
    for share in SHARES:
        m.sample(50, 99, max_share=share)  # warm-up
        redone[0] = 0
        times = []
        for _ in range(3):
            t = time.perf_counter()
            s = m.sample(n, seed, max_share=share)
            times.append(time.perf_counter() - t)
        flat = s.provenance.reshape(n, -1)
        counts = torch.zeros(n, N, dtype=torch.long).scatter_add_(1, flat, torch.ones_like(flat))
        largest = counts.max(1).values.double() / P
        mean_d = float(patch_distances(m, pre, s.provenance).mean())
        base = mean_d if base is None else base
        med, p95 = torch.quantile(largest, torch.tensor([0.5, 0.95], dtype=torch.float64)).tolist()
        row = {
            "max_share": share, "largest_median": med, "largest_p95": p95, "largest_max": float(largest.max()),
            "faces_over_0.25": int((largest > 0.25).sum()),
            "ms_per_face_median": 1000 * statistics.median(times) / n, "ms_per_face_min": 1000 * min(times) / n,
            "mean_patch_distance": mean_d, "patch_distance_increase_pct": 100 * (mean_d / base - 1),
            "positions_changed_pct": 0.0 if plain is None else 100 * float((s.provenance != plain).double().mean()),
            "faces_redone_with_a_longer_list": redone[0] // 3,
        }
        plain = s.provenance.clone() if plain is None else plain
        rows[str(share)] = row
        print(json.dumps(row), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
