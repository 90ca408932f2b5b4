"""reports/conditional.md: completion of masked faces and attribute-conditional sampling, measured.

    python -m experiments.conditional_report --out reports/

Setup (every number is a parameter of ``run``; the committed report's run took 48.6 minutes on 2
CPU cores shared with other jobs, Inception features being the main cost): the model is
the demo's (``lrgmm demo``: 1,024 shared UTKFace photos drawn with
seed 0, default settings). The other shared photos are held out; from them, at random (seed),
``n_inputs`` photos to complete and ``n_real`` real photos for FID references and for training
the independent attribute judges (``experiments.attribute_judge``, Inception features, 80/20 split).

Completion protocol (after the CGML paper's face-completion set-up): square boxes covering 10,
15 and 25 % of the 128 px image, either centred or at a random place (one per input, seeded).
Per input and mask, ``n_completions`` completions of each method, compared with the real photo:

- ``lrgmm-nn``: ``FacePipeline.complete`` defaults (exact conditional draw, NN on the hole).
- ``lrgmm-nn, low-rank draw``: ``noise=False`` (only the low-rank part is drawn, like eq. 4).
- ``lrgmm, no NN``: ``nn=False`` (the conditional Gaussian draw decoded as is).
- ``unconditional paste``: unconditional LR-GMM-NN faces (``generate``) pasted into the hole.
- ``nearest training face``: the training photo nearest to the input on the visible pixels
  (mean squared difference), pasted into the hole (one per input).
- ``component mean``: the conditional mean of the most probable component, decoded (one).

Every method is blended with the same feathered mask, so outside the feather every method
returns the original pixels: the numbers differ only by what fills the hole. PSNR and SSIM are
over the whole 128 px image (the protocol's convention), best of n and mean of n. FID and KID:
the first completion of every input in all settings against the ``n_real`` real photos (FID at a
couple of hundred images is biased upwards: compare rows, not with published numbers).
Diversity: mean pairwise Euclidean distance between the Inception features of the n completions
of one input (for the two LR-GMM-NN variants: Inception features are the run's main cost), and
the RMS pixel difference inside the hole (every method with n > 1), averaged over inputs.

Attribute sampling: for each condition, ``n_attribute`` faces from ``generate(where=...)`` and
the same number of unconditional faces; the share the judge assigns the requested category
(both judges for a combination), and FID against the real photos that carry the labels.
"""

from __future__ import annotations

import argparse
import inspect
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from lrgmm.data.splits import seeded_subset
from lrgmm.data.masks import blend, box_mask, centre_box, feathered_alpha, fill_masked, random_box

from lrgmm.core.conditioning import complete_codes, conditional_mean_code, unknown_positions
from lrgmm.demo import find_demo_data
from lrgmm.io.atomic import atomic_write_bytes
from lrgmm.io.images import list_images, load_images, make_grid, save_png
from lrgmm.data.labels import LabelTable, parse_conditions
from lrgmm.metrics.frechet import fid
from lrgmm.metrics.image_quality import psnr, ssim
from lrgmm.metrics.kernel_distance import kid
from lrgmm.pipeline import FacePipeline
from lrgmm.core.provenance import index_colors

METHODS = (
    "lrgmm-nn",
    "lrgmm-nn, low-rank draw",
    "lrgmm, no NN",
    "unconditional paste",
    "nearest training face",
    "component mean",
)
INCEPTION_DIVERSITY = ("lrgmm-nn", "lrgmm-nn, low-rank draw")
CONDITIONS = (("gender=female",), ("gender=male",), ("age=senior",), ("gender=female", "age=senior"))


def _provenance_tile(prov: torch.Tensor, original: torch.Tensor) -> torch.Tensor:
    R = original.shape[-1]
    h, w = prov.shape
    rgb = index_colors(prov.clamp_min(0)).permute(2, 0, 1)
    rgb = rgb.repeat_interleave(R // h, 1).repeat_interleave(R // w, 2)
    obs = (prov < 0).repeat_interleave(R // h, 0).repeat_interleave(R // w, 1)
    return torch.where(obs[None], 0.35 * original + 0.65, rgb)


def _pairwise_mean(feats: np.ndarray) -> float:
    """Mean Euclidean distance over the pairs of rows of (n, D)."""
    d = np.sqrt(np.maximum(((feats[:, None, :] - feats[None, :, :]) ** 2).sum(-1), 0))
    n = feats.shape[0]
    return float(d.sum() / (n * (n - 1))) if n > 1 else float("nan")


def run(
    out_dir: str | Path = "reports",
    data: str | Path | None = None,
    n_train: int = 1024,
    n_inputs: int = 24,
    n_completions: int = 4,
    n_real: int = 800,
    n_attribute: int = 80,
    areas: tuple[float, ...] = (0.10, 0.15, 0.25),
    seed: int = 0,
    progress: bool = True,
) -> dict:
    """Measure everything in the module docstring and write ``conditional.md``, the figures
    under ``conditional/`` and ``conditional/results.json`` into ``out_dir``."""
    from lrgmm.metrics.features import InceptionExtractor, quantize

    t0 = time.perf_counter()
    out = Path(out_dir)
    fig_dir = out / "conditional"
    folder = Path(data) if data is not None else find_demo_data()
    files = list_images(folder).paths
    chosen = seeded_subset(files, n_train, seed)
    pipe = FacePipeline(random_state=seed, progress=progress).fit(chosen)
    model = pipe.model_
    R = pipe.resolution
    h, w = model.codes_.shape[2:]
    train_set = set(pipe.training_files_)
    rest = [f for f in files if str(f) not in train_set]
    order = torch.randperm(len(rest), generator=torch.Generator().manual_seed(seed + 1)).tolist()
    input_files = [rest[i] for i in order[:n_inputs]]
    real_files = [rest[i] for i in order[n_inputs : n_inputs + n_real]]
    timings = {"fit_and_setup_s": 0.0}

    inputs = load_images(input_files, R)
    originals = torch.from_numpy(inputs.images)
    n_in = originals.shape[0]
    train_images = torch.from_numpy(load_images(pipe.training_files_, R).images)
    train_flat = train_images.reshape(train_images.shape[0], -1).double()
    extractor = InceptionExtractor(progress=progress)
    real = load_images(real_files, R)
    real_feats = extractor.file_features(real.paths, real.hashes, R, lambda: real.images, desc="Inception (real)")
    real_labels = LabelTable.from_files(real.paths)
    n_uncond = n_in * n_completions
    uncond = pipe.generate(max(n_uncond, n_attribute), seed=seed)
    uncond_images = uncond.images
    timings["fit_and_setup_s"] = time.perf_counter() - t0

    results: dict = {"settings": [], "pooled": {}}
    examples: dict = {}
    first_feats: dict = {}
    feature_jobs: list = []
    t1 = time.perf_counter()
    settings = [(kind, area) for kind in ("centre", "random") for area in areas]
    for s_idx, (kind, area) in enumerate(tqdm(settings, desc="mask settings", disable=not progress)):
        box_gen = torch.Generator().manual_seed(seed * 7919 + s_idx)
        boxes = [centre_box(R, area) if kind == "centre" else random_box(R, area, box_gen) for _ in range(n_in)]
        masks = torch.stack([box_mask(R, *b) for b in boxes])
        alphas = torch.stack([feathered_alpha(m) for m in masks])
        filled = torch.stack([fill_masked(o, m) for o, m in zip(originals, masks)])
        latents = pipe.autoencoder_.encode(filled)
        codes = model.projector_.transform(latents)
        per: dict[str, list[torch.Tensor]] = {m: [] for m in METHODS}
        provs = []
        for i in range(n_in):
            unk = unknown_positions(masks[i], (h, w))
            variants = {
                "lrgmm-nn": {"nn": True, "noise": True},
                "lrgmm-nn, low-rank draw": {"nn": True, "noise": False},
                "lrgmm, no NN": {"nn": False, "noise": True},
            }
            for name, kw in variants.items():
                gen = torch.Generator().manual_seed(seed * 100003 + s_idx * 1000 + i)
                c = complete_codes(model, codes[i], unk, n_completions, gen, **kw)
                lat = torch.where(unk, model.projector_.inverse_transform(c.codes), latents[i : i + 1])
                per[name].append(lat)
                if name == "lrgmm-nn":
                    provs.append(c.provenance)
            mean_code = conditional_mean_code(model, codes[i], unk)
            lat = torch.where(unk, model.projector_.inverse_transform(mean_code[None]), latents[i : i + 1])
            per["component mean"].append(lat)
        decoded = {}
        for name in ("lrgmm-nn", "lrgmm-nn, low-rank draw", "lrgmm, no NN", "component mean"):
            lat = torch.cat(per[name])
            decoded[name] = pipe.decode(lat).clamp(0, 1).reshape(n_in, -1, 3, R, R)
        decoded["unconditional paste"] = uncond_images[:n_uncond].reshape(n_in, n_completions, 3, R, R)
        # nearest training photo on the visible pixels: sum over visible of (t - o)^2
        keep = (~masks)[:, None].expand(-1, 3, -1, -1).reshape(n_in, -1).double()
        o = originals.reshape(n_in, -1).double()
        d2 = (train_flat**2) @ keep.T - 2 * train_flat @ (o * keep).T  # (N_train, n_in), + const
        nearest = d2.argmin(0)
        decoded["nearest training face"] = train_images[nearest][:, None]
        row = {"mask": kind, "area": area, "masked_share": float(masks.float().mean()), "methods": {}}
        for name in METHODS:
            imgs = blend(decoded[name], originals[:, None], alphas[:, None, None])
            k = imgs.shape[1]
            ref = originals[:, None].expand_as(imgs).reshape(-1, 3, R, R)
            p = psnr(imgs.reshape(-1, 3, R, R), ref).reshape(n_in, k)
            s = ssim(imgs.reshape(-1, 3, R, R), ref).reshape(n_in, k)
            # Inception features of all n completions where the diversity is measured, of the
            # first completion elsewhere (the FID / KID set): Inception is the run's main cost.
            # (collected as 8-bit pixels and run in one pass after the loop: every Inception call
            # has a fixed cost of seconds)
            k_feat = k if name in INCEPTION_DIVERSITY else 1
            feature_jobs.append((len(results["settings"]), name, quantize(imgs[:, :k_feat].reshape(-1, 3, R, R)), k_feat))
            hole = masks[:, None, None].expand_as(imgs)
            pix_div = float("nan")
            if k > 1:  # RMS pixel difference inside the hole, averaged over pairs and inputs
                diffs = [((imgs[:, a] - imgs[:, b]) ** 2 * hole[:, a]).flatten(1).sum(1) / hole[:, a].flatten(1).sum(1)
                         for a in range(k) for b in range(a + 1, k)]
                pix_div = float(torch.stack(diffs).sqrt().mean())
            row["methods"][name] = {
                "n": k,
                "psnr_best": float(p.max(1).values.mean()),
                "psnr_mean": float(p.mean(1).mean()),
                "ssim_best": float(s.max(1).values.mean()),
                "ssim_mean": float(s.mean(1).mean()),
                "pixel_diversity": pix_div,
            }
            if (kind, area) in (("centre", 0.25), ("random", 0.15)):
                examples.setdefault((kind, area), {})[name] = imgs[:4]
        if (kind, area) in (("centre", 0.25), ("random", 0.15)):
            examples[(kind, area)]["_masked"] = torch.where(masks[:4, None], torch.full_like(originals[:4], 0.5), originals[:4])
            examples[(kind, area)]["_original"] = originals[:4]
            examples[(kind, area)]["_prov"] = [provs[i] for i in range(min(4, n_in))]
        results["settings"].append(row)
    all_feats = extractor.features(torch.cat([j[2] for j in feature_jobs]), desc="Inception (completions)", cache=False)
    start = 0
    for s_row, name, q8, k_feat in feature_jobs:
        feats = all_feats[start : start + q8.shape[0]].reshape(n_in, k_feat, -1)
        start += q8.shape[0]
        first_feats.setdefault(name, []).append(feats[:, 0])
        div = float(np.mean([_pairwise_mean(f) for f in feats])) if k_feat > 1 else float("nan")
        results["settings"][s_row]["methods"][name]["diversity"] = div
    for name, chunks in first_feats.items():
        f_all = np.concatenate(chunks)
        k_res = kid(f_all, real_feats, subsets=100, subset_size=f_all.shape[0], seed=seed)
        results["pooled"][name] = {"n": int(f_all.shape[0]), "fid": fid(f_all, real_feats),
                                   "kid_x1000": 1000 * k_res.mean, "kid_std_x1000": 1000 * k_res.std}
    timings["completion_s"] = time.perf_counter() - t1

    # ---------------------------------------------------------------- attribute sampling
    t2 = time.perf_counter()
    from experiments.attribute_judge import train_attribute_classifier

    judges = {}
    for attribute in ("gender", "age"):
        judges[attribute] = train_attribute_classifier(real.paths, attribute, seed=seed, extractor=extractor, progress=progress)
    train_labels = LabelTable.from_files(pipe.training_files_)
    attr_rows = []
    attr_examples = []
    parsed = [parse_conditions(list(cond)) for cond in CONDITIONS]
    generated = [pipe.generate(n_attribute, seed=seed, where=c).images for c in parsed]
    feats_all = extractor.features(torch.cat([uncond_images[:n_attribute], *generated]), desc="Inception (attributes)", cache=False)
    uncond_feats = feats_all[:n_attribute]
    uncond_pred = {a: judges[a].classifier.predict(uncond_feats) for a in judges}
    for c_idx, conditions in enumerate(parsed):
        feats = feats_all[(c_idx + 1) * n_attribute : (c_idx + 2) * n_attribute]
        hit = np.ones(n_attribute, dtype=bool)
        hit_u = np.ones(n_attribute, dtype=bool)
        for a, c in conditions.items():
            hit &= np.array(judges[a].classifier.predict(feats)) == c
            hit_u &= np.array(uncond_pred[a]) == c
        real_mask = real_labels.mask(conditions)
        real_hit = np.ones(int(real_mask.sum()), dtype=bool)
        for a, c in conditions.items():
            real_hit &= np.array(judges[a].classifier.predict(real_feats[real_mask])) == c
        attr_rows.append({
            "condition": " ".join(f"{a}={c}" for a, c in conditions.items()),
            "training_faces": int(train_labels.mask(conditions).sum()),
            "training_share": float(train_labels.mask(conditions).mean()),
            "judged_share_conditional": float(hit.mean()),
            "judged_share_unconditional": float(hit_u.mean()),
            "judged_share_real": float(real_hit.mean()) if real_hit.size else float("nan"),
            "real_faces": int(real_mask.sum()),
            "fid_conditional": fid(feats, real_feats[real_mask]),
            "fid_unconditional": fid(uncond_feats, real_feats[real_mask]),
        })
        attr_examples.append(generated[c_idx][:8])
    timings["attributes_s"] = time.perf_counter() - t2
    timings["total_s"] = time.perf_counter() - t0

    # ---------------------------------------------------------------------- writing
    fig_dir.mkdir(parents=True, exist_ok=True)
    figures = []
    for (kind, area), ex in examples.items():
        n_ex = ex["_original"].shape[0]
        tiles = []
        for i in range(n_ex):
            tiles += [ex["_masked"][i], *ex["lrgmm-nn"][i], _provenance_tile(ex["_prov"][i][0], ex["_original"][i]),
                      ex["unconditional paste"][i][0], ex["nearest training face"][i][0], ex["component mean"][i][0],
                      ex["_original"][i]]
        ncols = 1 + n_completions + 5
        name = f"completions_{kind}_{round(area * 100)}.png"
        save_png(make_grid(torch.stack(tiles), ncols=ncols), fig_dir / name)
        figures.append((kind, area, name))
    save_png(make_grid(torch.cat(attr_examples), ncols=8), fig_dir / "attributes.png")
    meta = {
        "command": "python -m experiments.conditional_report --out reports/",
        "n_train": len(pipe.training_files_), "n_inputs": n_in, "n_completions": n_completions, "n_real": len(real.paths),
        "n_attribute": n_attribute, "areas": list(areas), "seed": seed, "timings_s": {k: round(v, 1) for k, v in timings.items()},
        "judges": {a: {"accuracy": j.accuracy, "balanced_accuracy": j.balanced_accuracy, "n_train": j.n_train, "n_test": j.n_test, "counts": j.counts}
                   for a, j in judges.items()},
    }
    payload = {"meta": meta, "completion": results, "attributes": attr_rows}
    atomic_write_bytes(fig_dir / "results.json", json.dumps(payload, indent=1).encode())
    atomic_write_bytes(out / "conditional.md", _markdown(payload, figures).encode())
    return payload


def _f(x, digits=2):
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def _markdown(payload: dict, figures) -> str:
    meta, comp, attrs = payload["meta"], payload["completion"], payload["attributes"]
    t = meta["timings_s"]
    lines = [
        "# Conditional generation: completing masked faces, sampling faces with given attributes",
        "",
        (f"Regenerate: `{meta['command']}` (this run: {t['total_s'] / 60:.1f} min on this machine's 2 shared CPU cores; "
        f"setup {t['fit_and_setup_s']:.0f} s, completions {t['completion_s']:.0f} s, attributes {t['attributes_s']:.0f} s). "
        "Method and choices: `src/lrgmm/conditional.py` (module docstring); protocol: `experiments/conditional_report.py`."),
        "",
        (f"Model: the demo's, fitted on {meta['n_train']} shared UTKFace photos (seed {meta['seed']}, default settings). "
        f"Inputs: {meta['n_inputs']} held-out photos (not in the training set), {meta['n_completions']} completions "
        f"per input and method; {meta['n_real']} other held-out photos are the FID reference and train the attribute judges."),
        "",
        "## Completion",
        "",
        ("Square boxes covering 10, 15 and 25 % of the 128 px image, centred or at a random place (one per input). "
         "All methods are blended with the same feathered mask (4 px), so they differ only inside the hole and its feather. "
         "PSNR (dB) and SSIM over the whole image, best and mean of the n completions of an input, averaged over inputs. "
         "Diversity: mean pairwise Inception-feature distance between the n completions of one input (measured for the "
         "two LR-GMM-NN rows: Inception is the run's main cost), and the RMS pixel difference inside the hole between "
         "completions (all rows with n > 1)."),
        "",
    ]
    for row in comp["settings"]:
        lines += [
            f"### {row['mask']} box, {round(row['area'] * 100)} % ({100 * row['masked_share']:.1f} % of pixels masked)",
            "",
            "| method | n | PSNR best | PSNR mean | SSIM best | SSIM mean | diversity (Inception) | diversity (pixels) |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for name, m in row["methods"].items():
            lines.append(
                f"| {name} | {m['n']} | {_f(m['psnr_best'])} | {_f(m['psnr_mean'])} | {_f(m['ssim_best'], 4)} | "
                f"{_f(m['ssim_mean'], 4)} | {_f(m['diversity'], 2)} | {_f(m['pixel_diversity'], 4)} |"
            )
        lines.append("")
    n_pool = next(iter(comp["pooled"].values()))["n"]
    lines += [
        "### FID and KID of the completions",
        "",
        (f"The first completion of every input in all six settings ({n_pool} images) against the {meta['n_real']} real "
         f"photos. At {n_pool} images FID is dominated by its small-sample bias (it would fall with more images): "
         "compare the rows with each other, not with published numbers; KID (x 1000, 100 subsets) is unbiased."),
        "",
        "| method | FID | KID x 1000 |",
        "|---|---|---|",
    ]
    for name, m in comp["pooled"].items():
        lines.append(f"| {name} | {_f(m['fid'], 1)} | {_f(m['kid_x1000'], 2)} +- {_f(m['kid_std_x1000'], 2)} |")
    lines += ["", "### Examples", ""]
    for kind, area, name in figures:
        lines += [
            (f"{kind} box, {round(area * 100)} %: each row is one held-out input: the masked input, {meta['n_completions']} "
            "LR-GMM-NN completions, the provenance map of the first (one colour per training photo; faded = observed), "
            "then the baselines (unconditional paste, nearest training face, component mean) and the real photo."),
            "",
            f"![{kind} {round(area * 100)} %](conditional/{name})",
            "",
        ]
    j = meta["judges"]
    lines += [
        "## Attribute-conditional sampling",
        "",
        ("`generate(n, where=...)`: component weights from the labelled training faces' responsibilities, NN step "
        f"over the labelled training faces only. {meta['n_attribute']} faces per condition (seed {meta['seed']}) and "
        f"{meta['n_attribute']} unconditional faces. Judges: logistic regression on Inception features of real photos "
        f"(`experiments.attribute_judge`), held-out accuracy gender {j['gender']['accuracy']:.3f} (balanced "
        f"{j['gender']['balanced_accuracy']:.3f}), age group {j['age']['accuracy']:.3f} (balanced {j['age']['balanced_accuracy']:.3f}); "
        "'real' is the share of the real photos carrying the labels that the judges assign them (their recall; 80 % of these photos trained the judges, so it is an optimistic ceiling). "
        "FID against the real photos that carry the labels."),
        "",
        "| condition | training faces | share of training set | judged share: conditional | unconditional | real | real faces | FID conditional | FID unconditional |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in attrs:
        lines.append(
            f"| {r['condition']} | {r['training_faces']} | {100 * r['training_share']:.1f} % | "
            f"{100 * r['judged_share_conditional']:.1f} % | {100 * r['judged_share_unconditional']:.1f} % | "
            f"{100 * r['judged_share_real']:.1f} % | {r['real_faces']} | {_f(r['fid_conditional'], 1)} | {_f(r['fid_unconditional'], 1)} |"
        )
    lines += [
        "",
        "First 8 faces per condition (rows: " + ", ".join(r["condition"] for r in attrs) + "):",
        "",
        "![attribute samples](conditional/attributes.png)",
        "",
        "All numbers: `reports/conditional/results.json`.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m experiments.conditional_report", description=__doc__.split("\n")[0])
    p.add_argument("--out", default="reports", help="folder for conditional.md and conditional/")
    p.add_argument("--data", default=None, help="face folder (default: the shared UTKFace folder)")
    for name in ("n_inputs", "n_completions", "n_real", "n_attribute"):
        default = inspect.signature(run).parameters[name].default
        p.add_argument(f"--{name.replace('_', '-')}", dest=name, type=int, default=default, help=f"(default: {default})")
    p.add_argument("--seed", type=int, default=inspect.signature(run).parameters["seed"].default)
    p.add_argument("--quiet", action="store_true")
    a = p.parse_args(argv)
    res = run(a.out, a.data, n_inputs=a.n_inputs, n_completions=a.n_completions, n_real=a.n_real,
              n_attribute=a.n_attribute, seed=a.seed, progress=not a.quiet)
    print(f"written {Path(a.out) / 'conditional.md'} in {res['meta']['timings_s']['total_s'] / 60:.1f} min")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
