"""Improved precision and recall (Kynkäänniemi et al. 2019) from features.

Each set's support is estimated as the union of balls around its points, the radius of each
ball being the distance to its k-th nearest neighbour within the set (k = 3; the point itself is
not counted). Precision is the share of generated points inside the real support; recall, the
share of real points inside the generated support. A point on a ball's boundary counts as inside
(as in torch-fidelity and the paper's code).

The paper uses VGG16 features; no VGG16 weights can be had here, so lrgmm computes them on the
Inception-v3 pool features: numbers are comparable with each other, not with published VGG16
values.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["PrecisionRecall", "kth_neighbour_radii", "pairwise_distances", "precision_recall"]

FEATURE_NOTE = "on Inception-v3 features (no VGG16 weights available)"


@dataclass(frozen=True)
class PrecisionRecall:
    precision: float
    recall: float
    k: int

    @property
    def f_score(self) -> float:
        s = self.precision + self.recall
        return 2 * self.precision * self.recall / s if s > 0 else 0.0


def _t(x) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(x, dtype=np.float64))
    if t.ndim != 2:
        raise ValueError(f"features must be a 2-D (n, d) array, got shape {tuple(t.shape)}")
    return t


def pairwise_distances(x, y, chunk: int = 2048) -> torch.Tensor:
    """Euclidean distances (n, m), float64, computed in row chunks (exact differences, not the
    |x|^2 + |y|^2 - 2 x.y expansion, so duplicates are at distance exactly 0)."""
    x, y = _t(x), _t(y)
    rows = [torch.cdist(x[i : i + chunk], y, compute_mode="donot_use_mm_for_euclid_dist") for i in range(0, x.shape[0], chunk)]
    return torch.cat(rows) if rows else torch.zeros(0, y.shape[0], dtype=torch.float64)


def kth_neighbour_radii(x, k: int = 3, chunk: int = 2048) -> torch.Tensor:
    """Distance from each point of x to its k-th nearest other point of x (n,)."""
    x = _t(x)
    n = x.shape[0]
    if n <= k:
        raise ValueError(f"precision/recall with k={k} needs more than {k} points per set, got {n}")
    out = []
    for i in range(0, n, chunk):
        d = torch.cdist(x[i : i + chunk], x, compute_mode="donot_use_mm_for_euclid_dist")
        out.append(d.kthvalue(k + 1, dim=1).values)  # the point itself is the first (distance 0)
    return torch.cat(out)


def _coverage(query: torch.Tensor, centres: torch.Tensor, radii: torch.Tensor, chunk: int) -> float:
    inside = []
    for i in range(0, query.shape[0], chunk):
        d = torch.cdist(query[i : i + chunk], centres, compute_mode="donot_use_mm_for_euclid_dist")
        inside.append((d <= radii.unsqueeze(0)).any(dim=1))
    return float(torch.cat(inside).to(torch.float64).mean())


def precision_recall(generated, real, k: int = 3, chunk: int = 2048) -> PrecisionRecall:
    """Improved precision and recall of ``generated`` (n, d) against ``real`` (m, d)."""
    g, r = _t(generated), _t(real)
    if g.shape[1] != r.shape[1]:
        raise ValueError(f"feature dimensions differ: {g.shape[1]} and {r.shape[1]}")
    precision = _coverage(g, r, kth_neighbour_radii(r, k, chunk), chunk)
    recall = _coverage(r, g, kth_neighbour_radii(g, k, chunk), chunk)
    return PrecisionRecall(precision, recall, k)
