"""What an evaluation measured, as a record: ``EvalResult`` (its plain-text table and its JSON)
and ``ClosestFaces`` (the generated faces closest to the training set, kept for the
memorisation figure), with the fingerprint that ties them to the training set they were
measured against.

Nothing here measures or draws: ``lrgmm.evaluation.evaluator`` fills these records and
``lrgmm.evaluation.figure`` draws from them.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..io.atomic import atomic_write_bytes, jsonable
from ..metrics.copying import CopyingStats
from ..metrics.kernel_distance import KIDResult
from ..metrics.memorisation import MemorisationStats
from ..metrics.precision_recall import FEATURE_NOTE, PrecisionRecall
from ..pipeline.face_pipeline import FacePipeline

__all__ = ["ClosestFaces", "EvalResult", "training_fingerprint"]


@dataclass
class ClosestFaces:
    """The generated faces closest to the training set in one space, kept for the memorisation
    figure while the faces stream by (the rest of the pixels are not kept).

    space: "inception" or "latent_codes". indices: (k,) positions among the n generated faces,
    nearest first (ties: lower position first); distances: (k,) their distance to their nearest
    training face. images: (k, 3, R, R) uint8, the pixels the features were taken from.
    provenance: (k, h, w) training indices per latent pixel, or None. chunks: per face, the seed
    of its chunk and its position there (``generate(chunk_size, seed)[position]``).
    training: fingerprint of the training set they were compared with.
    """

    space: str
    indices: np.ndarray
    distances: np.ndarray
    images: torch.Tensor
    provenance: torch.Tensor | None = None
    chunks: list[tuple[int, int]] = field(default_factory=list)
    training: str = ""



def training_fingerprint(pipe: FacePipeline) -> str:
    """Identifies a reference's training set: its files' sha256 in order and its codes' shape."""
    h = hashlib.sha256(repr(tuple(pipe.model_.codes_.shape)).encode())
    for x in getattr(pipe, "training_hashes_", None) or []:
        h.update(x.encode() + b"\n")
    return h.hexdigest()


@dataclass
class EvalResult:
    """Everything ``evaluate`` measured. ``table()`` for people, ``to_json()`` for files.

    fid: FID against the held-out real faces. fid_training_reconstructions: FID of the training
    faces taken through the autoencoder and projector against the same held-out faces, what a
    generator that returns its training faces scores (a reference at its own sample sizes).
    kid: ``KIDResult`` (mean, std over subsets). pr: ``PrecisionRecall``.
    memorisation: ``MemorisationStats`` per space ("inception", "latent_codes").
    copying: ``CopyingStats`` per space (the same spaces): C_T and the authenticity share.
    provenance: ``provenance_statistics`` of the faces (None without NN provenance).
    generated_features: (n, 2048) Inception features of the faces (not written to JSON).
    closest: ``ClosestFaces``, the 16 faces closest to the training set (for the memorisation
    figure; None without memorisation). files: files written besides (the figure and its JSON).
    """

    generator: str
    n: int
    seed: int
    n_real: int
    n_train: int
    resolution: int
    fid: float
    kid: KIDResult
    pr: PrecisionRecall
    fid_training_reconstructions: float | None = None
    memorisation: dict[str, MemorisationStats] = field(default_factory=dict)
    copying: dict[str, CopyingStats] = field(default_factory=dict)
    provenance: dict | None = None
    timings: dict[str, float] = field(default_factory=dict)
    settings: dict = field(default_factory=dict)
    extractor: str = ""
    notes: list[str] = field(default_factory=list)
    generated_features: np.ndarray | None = field(default=None, repr=False)
    closest: ClosestFaces | None = field(default=None, repr=False)
    files: list[Path] = field(default_factory=list)

    # ------------------------------------------------------------------ output
    def to_dict(self, per_face: bool = False) -> dict:
        d = {
            "generator": self.generator,
            "n_generated": self.n,
            "seed": self.seed,
            "n_real_heldout": self.n_real,
            "n_train": self.n_train,
            "resolution": self.resolution,
            "features": self.extractor,
            "fid": self.fid,
            "fid_training_reconstructions": self.fid_training_reconstructions,
            "kid": {"mean": self.kid.mean, "std": self.kid.std, "subset_size": self.kid.subset_size, "subsets": self.kid.subsets},
            "precision": self.pr.precision,
            "recall": self.pr.recall,
            "precision_recall_k": self.pr.k,
            "precision_recall_features": "inception-v3 pool3 (VGG16 weights not available)",
            "memorisation": {k: v.summary() for k, v in self.memorisation.items()},
            "copying": {k: v.summary() for k, v in self.copying.items()},
            "provenance": self.provenance,
            "timings_s": self.timings,
            "settings": self.settings,
            "notes": self.notes,
        }
        if self.files:
            d["files"] = [str(f) for f in self.files]
        if per_face:
            d["per_face"] = {
                k: {"to_train": v.to_train, "to_train_index": v.to_train_index, "to_heldout": v.to_heldout,
                    "near_copy": v.near_copies.astype(int),
                    **({"nearest_train_index": v.to_train_k_index, "nearest_train_distance": v.to_train_k}
                       if v.to_train_k is not None else {})}
                for k, v in self.memorisation.items()
            }
            for k, c in self.copying.items():
                d["per_face"].setdefault(k, {})["authentic"] = c.authentic.astype(int)
        return jsonable(d)

    def to_json(self, path: str | os.PathLike | None = None, per_face: bool = False) -> str:
        """The result as JSON text (non-finite numbers as null); written atomically to ``path``
        when given."""
        text = json.dumps(self.to_dict(per_face=per_face), indent=1, allow_nan=False)
        if path is not None:
            atomic_write_bytes(path, (text + "\n").encode())
        return text

    def table(self) -> str:
        """A plain-text table of the numbers, with what each means."""
        rows: list[tuple[str, str, str]] = []

        def add(name, value, note=""):
            rows.append((name, value, note))

        add("FID", f"{self.fid:.2f}", "biased upwards at small n: compare at equal n")
        if self.fid_training_reconstructions is not None:
            add("FID, training reconstructions", f"{self.fid_training_reconstructions:.2f}",
                "training faces through the autoencoder: what copying them scores")
        add("KID x 1e3", f"{1e3 * self.kid.mean:.2f} +- {1e3 * self.kid.std:.2f}",
            f"unbiased; {self.kid.subsets} subsets of {self.kid.subset_size}")
        add(f"precision (k={self.pr.k})", f"{self.pr.precision:.3f}", FEATURE_NOTE)
        add(f"recall (k={self.pr.k})", f"{self.pr.recall:.3f}", FEATURE_NOTE)
        for space, m in self.memorisation.items():
            label = {"inception": "Inception", "latent_codes": "latent codes"}.get(space, space)
            q = f"{100 * m.quantile:g}"
            add(f"near copies, {label}", f"{100 * m.near_copy_share:.1f} %",
                f"closer to a training face than {q} % of held-out faces are (fresh faces: ~{q} %)")
            add(f"near copies strict, {label}", f"{100 * m.near_copy_share_strict:.1f} %",
                "closer than every held-out face")
            add(f"NN distance ratio, {label}", f"{m.median_ratio:.3f}",
                "median generated->train / held-out->train (< 1: closer than new photos)")
        for space, c in self.copying.items():
            label = {"inception": "Inception", "latent_codes": "latent codes"}.get(space, space)
            if math.isfinite(c.c_t):
                add(f"data-copying C_T, {label}", f"{c.c_t:.2f}",
                    f"<< 0 copying (< -3: beyond fresh faces), ~0 like new photos, >> 0 underfit; "
                    f"{c.n_cells_used} of {c.n_cells} cells")
            else:
                add(f"data-copying C_T, {label}", "n/a",
                    f"no k-means cell holds {c.min_generated} generated faces and a held-out face: generate more")
            add(f"authentic faces, {label}", f"{100 * c.authenticity:.1f} %",
                f"farther from their nearest training face than its own neighbour (held-out photos: "
                f"{100 * c.authenticity_heldout:.1f} %)")
        p = self.provenance
        if p:
            dt = p["distinct_training_images"]
            ls = p["largest_share"]
            add("training images per face", f"{dt['median']:g}", f"median (p5 {dt['p5']:g}, p95 {dt['p95']:g}, min {dt['min']})")
            add("largest single-image share", f"{100 * ls['median']:.1f} %", f"median (p95 {100 * ls['p95']:.1f} %, max {100 * ls['max']:.1f} %)")
            add("whole-face copies", f"{100 * p['whole_face_copies']:.1f} %", "faces whose every latent pixel is from one image")
        w0 = max(len(r[0]) for r in rows)
        w1 = max(len(r[1]) for r in rows)
        head = (f"{self.generator}: {self.n} faces (seed {self.seed}) vs {self.n_real} held-out real faces; "
                f"{self.n_train} training faces; {self.resolution} px")
        lines = [head, ""]
        lines += [f"{a:<{w0}}  {b:>{w1}}  {c}".rstrip() for a, b, c in rows]
        t = self.timings
        if t:
            lines += ["", "time: " + ", ".join(f"{k} {v:.1f} s" for k, v in t.items())]
        lines.append(f"features: {self.extractor}")
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)
