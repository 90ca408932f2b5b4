"""The memorisation figure: the 16 generated faces closest to the training set, each beside its
3 nearest training faces with the distances, and the held-out near-copy threshold: the usual
way of showing copying (Carlini et al., USENIX Security 2023, fig. 1; Somepalli et al., CVPR
2023, fig. 1), calibrated here by fresh photos.

``draw_memorisation_figure`` draws it from an ``EvalResult`` (its ``ClosestFaces``, kept by the
``Evaluator`` as the faces streamed by) and the fitted pipeline it was measured against, with
the tiles of ``lrgmm.figures``, and writes a JSON beside it.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import torch

from ..core.provenance import provenance_shares
from ..errors import FigureError, ParameterError
from ..figures import RED, Tile, tile_rows
from ..io.atomic import atomic_write_json
from ..metrics.features import quantize
from ..pipeline.face_pipeline import FacePipeline
from .result import EvalResult, training_fingerprint

__all__ = ["draw_memorisation_figure"]


_SPACE_TEXT = {
    "inception": ("Inception space", "inception", "Inception-v3 pool3 features (2048-d), as for FID"),
    "latent_codes": ("latent-code space", "codes", "the model's P0 latent codes (whitened projector channels)"),
}


def _pct(share: float) -> str:
    return f"{100 * share:.0f} %" if share >= 0.01 else f"{100 * share:.1f} %"


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "generator"


def draw_memorisation_figure(result: EvalResult, ref: FacePipeline, folder: str | os.PathLike, *,
                             neighbours: int = 3) -> tuple[Path, Path]:
    """Draw the memorisation figure of ``result`` into ``folder``; returns (PNG, JSON) paths.

    One row per face among the (up to) 16 generated faces closest to the training set, nearest
    first: the face, then its ``neighbours`` nearest training faces, each with its distance
    written under it. Training faces are *decoded training reconstructions*,
    decode(P0*(code)), what the distances were measured on (see ``Evaluator``). The space is
    Inception features when the evaluation measured them, else latent codes; the file names and
    the title say which (``memorisation_<generator>_inception.png`` / ``..._codes.png``). A red
    frame marks a near copy (closer than the held-out near-copy threshold), and a red dashed line
    separates the rows below the threshold from the others. A training face that gave latent
    pixels to the face (its provenance, for LR-GMM-NN and LatentPatch) says what share.

    The JSON lists, per row, the face's position among the n generated faces (and its chunk seed
    and position: ``generate(chunk_size, seed)[position]`` gives it back), its distance,
    whether it is a near copy, its largest provenance sources, its nearest training faces
    (index into the model's training files, file, distance) and every tile's pixel box.

    ``ref``: the fitted ``FacePipeline`` the result was measured against; another training set
    is refused. (``lrgmm.evaluation.memorisation_figure`` also takes an ``Evaluator`` or a model
    file.)
    """
    c = result.closest
    if c is None:
        raise FigureError(
            f"no memorisation figure for {result.generator}: the evaluation kept no nearest training faces "
            "(memorisation was off, or the generator returned no latent codes with memorisation='codes')")
    stats = result.memorisation.get(c.space)
    if stats is None or stats.to_train_k_index is None:
        raise FigureError(f"no memorisation figure for {result.generator}: no nearest training faces in {c.space}")
    if training_fingerprint(ref) != c.training:
        raise FigureError(f"the memorisation figure of {result.generator} needs the model it was measured against "
                          f"({result.n_train} training faces); this reference has another training set")
    if neighbours < 1:
        raise ParameterError(f"neighbours must be at least 1, got {neighbours}")
    space_title, tag, space_desc = _SPACE_TEXT.get(c.space, (c.space, _slug(c.space), c.space))
    folder = Path(folder)
    stem = f"memorisation_{_slug(result.generator)}_{tag}"
    png_path, json_path = folder / f"{stem}.png", folder / f"{stem}.json"

    near_j = stats.to_train_k_index[c.indices][:, :neighbours]
    near_d = stats.to_train_k[c.indices][:, :neighbours]
    files = list(getattr(ref, "training_files_", []) or [])
    uniq, inverse = np.unique(near_j, return_inverse=True)
    # The reconstructions the distances were measured to (``Evaluator.reconstruction_features``).
    with torch.no_grad():
        train_u8 = quantize(ref.decode(ref.model_.training_latents(torch.as_tensor(uniq)), progress=False))
    inverse = inverse.reshape(near_j.shape)
    thr = stats.threshold
    q_pct = f"{100 * stats.quantile:g}"
    flags = c.distances < thr

    def sources(i: int) -> list[tuple[int, float]]:
        if c.provenance is None:
            return []
        return provenance_shares(c.provenance[i])

    rows, records = [], []
    for r, (face, dist) in enumerate(zip(c.indices, c.distances)):
        src = sources(r)
        share_of = dict(src)
        top = f"most from #{src[0][0]} ({_pct(src[0][1])})" if src else ""
        row = [Tile(c.images[r], [f"face {int(face)}", f"d = {dist:.2f}",
                                 ("near copy", RED) if flags[r] else top], frame=RED if flags[r] else None)]
        for k in range(near_j.shape[1]):
            j = int(near_j[r, k])
            gave = share_of.get(j)
            name = Path(files[j]).name if j < len(files) else ""
            row.append(Tile(train_u8[inverse[r, k]], [f"#{j} {name}".strip(), f"d = {near_d[r, k]:.2f}",
                                                      f"gave {_pct(gave)} of its pixels" if gave else ""]))
        rows.append(row)
        records.append({
            "rank": r, "face": int(face), "chunk_seed": c.chunks[r][0] if c.chunks else None,
            "index_in_chunk": c.chunks[r][1] if c.chunks else None, "distance": float(dist),
            "near_copy": bool(flags[r]),
            "provenance_sources": [{"index": j, "file": files[j] if j < len(files) else None, "share": round(sh, 6)}
                                   for j, sh in src[:neighbours]] if c.provenance is not None else None,
            "nearest_training": [
                {"rank": k, "index": int(near_j[r, k]), "file": files[int(near_j[r, k])] if int(near_j[r, k]) < len(files) else None,
                 "distance": float(near_d[r, k])} for k in range(near_j.shape[1])],
        })
    n_below = int(flags.sum())
    title = (f"{result.generator}: the {len(rows)} of {result.n} generated faces closest to the training set in "
             f"{space_title} (seed {result.seed}), nearest first; beside each, its {near_j.shape[1]} nearest training "
             f"faces as decoded training reconstructions (what the distances compare). d: Euclidean distance in "
             f"{space_title}. Red frame: a near copy, closer to a training face than {100 - 100 * stats.quantile:g} % of "
             f"the {stats.heldout_to_train.size} held-out photos are (d < {thr:.2f}); "
             f"{int(stats.near_copies.sum())} of {result.n} faces are.")
    rule = (f"near-copy threshold d = {thr:.2f} (held-out {q_pct} % quantile): "
            f"{n_below} near cop{'y' if n_below == 1 else 'ies'} above this line")
    layout = tile_rows(rows, png_path, title=title, rules={n_below: rule}, column_gaps={1: 14})
    for rec, boxes in zip(records, layout.boxes):
        rec["box"] = list(boxes[0])
        for nb, box in zip(rec["nearest_training"], boxes[1:]):
            nb["box"] = list(box)
    doc = {
        "format": "lrgmm-memorisation-figure",
        "generator": result.generator,
        "seed": result.seed,
        "n_generated": result.n,
        "n_train": result.n_train,
        "n_heldout": int(stats.heldout_to_train.size),
        "space": c.space,
        "space_description": space_desc,
        "distance": "Euclidean",
        "training_faces": "decoded training reconstructions decode(P0*(code)), as the evaluation compares them",
        "near_copy_quantile": stats.quantile,
        "near_copy_threshold": thr,
        "near_copy_threshold_strict": stats.strict_threshold,
        "near_copies_total": int(stats.near_copies.sum()),
        "near_copies_shown": n_below,
        "figure": png_path.name,
        "image_size": list(layout.size),
        "faces": records,
    }
    atomic_write_json(json_path, doc)
    return png_path, json_path
