"""Memorisation: how close generated faces come to the training faces, against fresh faces.

For each generated face, the distance to its nearest training face and to its nearest held-out
real face, in a feature space (Inception-v3 features, or the model's latent codes). Fresh real
faces (the held-out set) calibrate what "close" means: the distance from each held-out face to
its nearest training face is what a face that was *not* copied looks like.

**Near copies.** A generated face is a near copy when its nearest training face is closer than
a threshold calibrated on the held-out faces:

- ``near_copy_share`` uses the ``quantile`` (default 0.05) of the held-out-to-training nearest
  distances: by construction about 5 % of fresh faces fall below it, so a generator that does
  not copy scores about 0.05, and a share well above that means copying. A quantile rather than
  the minimum, so that one held-out face that happens to be a near duplicate of a training face
  (same person, same shoot) does not blind the detector.
- ``near_copy_share_strict`` uses the minimum (the issue's wording: closer to a training face
  than *any* held-out face is to the training set); fresh faces score about 1 / (m + 1) for m
  held-out faces.

**Nearest training faces.** Each generated face keeps its ``k`` (3) nearest training faces and
their distances (``to_train_k``, ``to_train_k_index``, nearest first): what the memorisation
figure (``lrgmm.evaluation.memorisation_figure``) shows beside the face, the usual way of
showing copying (e.g. Carlini et al., "Extracting training data from diffusion models", USENIX
Security 2023, fig. 1; Somepalli et al., CVPR 2023). The nearest one is ``to_train``.

``median_ratio`` = median generated-to-training distance / median held-out-to-training distance:
about 1 or above when generated faces are no closer to the training set than new photos are,
below 1 when they sit on the training faces.

Provenance statistics (LR-GMM-NN only) say how many training images each face's latent pixels
were copied from, and the largest share of the face that one training image provides.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from ..core.provenance import provenance_shares

__all__ = [
    "MemorisationStats", "memorisation", "near_copy_threshold", "nearest", "nearest_k", "provenance_statistics",
]

DEFAULT_QUANTILE = 0.05
NEAREST_K = 3  # training neighbours kept per generated face (the memorisation figure shows 3)


def _flat(x) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(x.detach().cpu() if isinstance(x, torch.Tensor) else x, dtype=np.float64))
    return t.reshape(t.shape[0], math.prod(t.shape[1:]))  # (not -1: a set may be empty)


def nearest(query, reference, chunk: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """For each row of ``query`` (n, ...), the Euclidean distance to the nearest row of
    ``reference`` (m, ...) and its index; float64, flattened features, row chunks."""
    q, r = _flat(query), _flat(reference)
    if q.shape[1] != r.shape[1]:
        raise ValueError(f"feature sizes differ: {q.shape[1]} and {r.shape[1]}")
    if r.shape[0] == 0:
        raise ValueError("the reference set is empty")
    dists, idx = [], []
    for i in range(0, q.shape[0], chunk):
        d = torch.cdist(q[i : i + chunk], r, compute_mode="donot_use_mm_for_euclid_dist")
        v, j = d.min(dim=1)
        dists.append(v)
        idx.append(j)
    if not dists:
        return np.zeros(0), np.zeros(0, dtype=np.int64)
    return torch.cat(dists).numpy(), torch.cat(idx).numpy()


def nearest_k(query, reference, k: int = NEAREST_K, chunk: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """For each row of ``query`` (n, ...), the Euclidean distances to its ``k`` nearest rows of
    ``reference`` (m, ...) and their indices, nearest first: (n, min(k, m)) float64 and int64.
    Same distances as ``nearest`` (float64, direct differences, not the |a|^2 + |b|^2 - 2ab
    expansion, which loses digits for near copies); row chunks bound the memory."""
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    q, r = _flat(query), _flat(reference)
    if q.shape[1] != r.shape[1]:
        raise ValueError(f"feature sizes differ: {q.shape[1]} and {r.shape[1]}")
    if r.shape[0] == 0:
        raise ValueError("the reference set is empty")
    k = min(int(k), r.shape[0])
    dists, idx = [], []
    for i in range(0, q.shape[0], chunk):
        d = torch.cdist(q[i : i + chunk], r, compute_mode="donot_use_mm_for_euclid_dist")
        v, j = torch.topk(d, k, dim=1, largest=False, sorted=True)
        dists.append(v)
        idx.append(j)
    if not dists:
        return np.zeros((0, k)), np.zeros((0, k), dtype=np.int64)
    return torch.cat(dists).numpy(), torch.cat(idx).numpy()


def near_copy_threshold(heldout_to_train, quantile: float = DEFAULT_QUANTILE) -> float:
    """The ``quantile`` of held-out faces' nearest-training distances (0: their minimum)."""
    d = np.asarray(heldout_to_train, dtype=np.float64)
    if d.size == 0:
        raise ValueError("no held-out distances to calibrate the near-copy threshold on")
    if not 0.0 <= quantile < 1.0:
        raise ValueError(f"quantile must be in [0, 1), got {quantile}")
    return float(np.quantile(d, quantile))


def _summary(d: np.ndarray) -> dict:
    if d.size == 0:
        return {}
    return {
        "median": float(np.median(d)),
        "p5": float(np.quantile(d, 0.05)),
        "min": float(d.min()),
        "mean": float(d.mean()),
    }


@dataclass
class MemorisationStats:
    """Nearest-neighbour distances in one feature space and what they say about copying.

    space: name of the feature space ("inception", "latent_codes").
    to_train, to_train_index: per generated face, distance to / index of its nearest training face.
    to_heldout: per generated face, distance to its nearest held-out real face.
    heldout_to_train: per held-out face, distance to its nearest training face (calibration).
    quantile, threshold, near_copy_share: the calibrated detector (see the module docstring).
    strict_threshold, near_copy_share_strict: the same with the held-out minimum.
    to_train_k, to_train_k_index: per generated face, the distances to / indices of its ``k``
    nearest training faces, nearest first ((n, k); column 0 is ``to_train`` / ``to_train_index``).
    """

    space: str
    to_train: np.ndarray
    to_train_index: np.ndarray
    to_heldout: np.ndarray
    heldout_to_train: np.ndarray
    quantile: float
    threshold: float
    near_copy_share: float
    strict_threshold: float
    near_copy_share_strict: float
    near_copies: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0, dtype=bool))
    to_train_k: np.ndarray | None = field(repr=False, default=None)
    to_train_k_index: np.ndarray | None = field(repr=False, default=None)

    @property
    def median_ratio(self) -> float:
        base = float(np.median(self.heldout_to_train))
        return float(np.median(self.to_train)) / base if base > 0 else float("inf")

    def summary(self) -> dict:
        return {
            "space": self.space,
            "generated_to_train": _summary(self.to_train),
            "generated_to_heldout": _summary(self.to_heldout),
            "heldout_to_train": _summary(self.heldout_to_train),
            "median_ratio": self.median_ratio,
            "near_copy_quantile": self.quantile,
            "near_copy_threshold": self.threshold,
            "near_copy_share": self.near_copy_share,
            "near_copy_threshold_strict": self.strict_threshold,
            "near_copy_share_strict": self.near_copy_share_strict,
            "n_generated": int(self.to_train.size),
            "n_heldout": int(self.heldout_to_train.size),
        }


def memorisation(generated, train, heldout, quantile: float = DEFAULT_QUANTILE, space: str = "features",
                 nearest_train: tuple[np.ndarray, np.ndarray] | None = None) -> MemorisationStats:
    """Nearest-training and nearest-held-out distances of ``generated`` faces and the near-copy
    shares, every set given as (n, ...) features (flattened). ``nearest_train``: the
    generated faces' ``nearest_k(generated, train)`` when already computed (the evaluation
    computes it chunk by chunk as faces are generated), so it is not computed twice."""
    if nearest_train is None:
        nearest_train = nearest_k(generated, train)
    dk, jk = (np.asarray(a) for a in nearest_train)
    n = _flat(generated).shape[0]
    if dk.ndim != 2 or dk.shape != jk.shape or dk.shape[0] != n:
        raise ValueError(f"nearest_train must be two (n, k) arrays for the {n} generated faces, got {dk.shape} and {jk.shape}")
    to_train, idx = dk[:, 0].copy(), jk[:, 0].copy()
    to_heldout, _ = nearest(generated, heldout)
    h2t, _ = nearest(heldout, train)
    thr = near_copy_threshold(h2t, quantile)
    strict = float(h2t.min())
    flags = to_train < thr
    return MemorisationStats(
        space=space,
        to_train=to_train,
        to_train_index=idx,
        to_heldout=to_heldout,
        heldout_to_train=h2t,
        quantile=float(quantile),
        threshold=thr,
        near_copy_share=float(flags.mean()) if flags.size else 0.0,
        strict_threshold=strict,
        near_copy_share_strict=float((to_train < strict).mean()) if to_train.size else 0.0,
        near_copies=flags,
        to_train_k=dk,
        to_train_k_index=jk,
    )


def provenance_statistics(provenance: torch.Tensor) -> dict:
    """Per-face provenance summary over (n, h, w) maps of training indices: the number of
    distinct training images a face's latent pixels come from and the largest share one image
    provides (``lrgmm.core.provenance.provenance_shares``), as distributions over faces."""
    if provenance is None or len(provenance) == 0:
        return {}
    distinct = np.empty(len(provenance), dtype=np.int64)
    largest = np.empty(len(provenance), dtype=np.float64)
    for i, p in enumerate(provenance):
        shares = provenance_shares(p)
        distinct[i] = len(shares)
        largest[i] = shares[0][1]
    q = lambda a, v: float(np.quantile(a, v))
    return {
        "n_faces": len(provenance),
        "latent_pixels_per_face": int(provenance[0].numel()),
        "distinct_training_images": {
            "median": float(np.median(distinct)), "mean": float(distinct.mean()),
            "min": int(distinct.min()), "p5": q(distinct, 0.05), "p95": q(distinct, 0.95), "max": int(distinct.max()),
        },
        "largest_share": {
            "median": float(np.median(largest)), "mean": float(largest.mean()),
            "p95": q(largest, 0.95), "max": float(largest.max()),
        },
        "whole_face_copies": float((largest >= 1.0).mean()),
        "faces_half_from_one_image": float((largest >= 0.5).mean()),
        "training_images_used": int(torch.unique(provenance.reshape(-1)).numel()),
    }
