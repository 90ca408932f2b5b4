"""Kernel Inception Distance (Binkowski et al. 2018): the unbiased MMD^2 estimate with the cubic
polynomial kernel k(x, y) = (x.y / d + 1)^3, averaged over random subsets.

Per subset pair (X from one set, Y from the other, m each):

    MMD^2_u = sum_{i != j} k(x_i, x_j) / (m (m - 1)) + sum_{i != j} k(y_i, y_j) / (m (m - 1))
              - 2 sum_{i, j} k(x_i, y_j) / m^2

(as torch-fidelity's ``mmd2(..., mmd_est="unbiased")``). The estimate is unbiased at any m, so
KID can be compared across sample sizes, unlike FID; it can be slightly negative when the two
sets come from the same distribution. The subset size adapts to small sets: min(1000, n1, n2).
Kernel matrices are computed once for all points (float64) when the sets are small enough and
the subsets index into them; otherwise per subset.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import ParameterError

__all__ = ["KIDResult", "kid", "mmd2_unbiased", "polynomial_kernel"]

_FULL_GRAM_LIMIT = 12_000  # n1 + n2 up to this: precompute the kernel matrices once


@dataclass(frozen=True)
class KIDResult:
    mean: float
    std: float
    subset_size: int
    subsets: int


def polynomial_kernel(x: np.ndarray, y: np.ndarray, degree: int = 3, coef0: float = 1.0) -> np.ndarray:
    """(x y^T / d + coef0) ** degree for (n, d) and (m, d) float64 arrays."""
    d = x.shape[1]
    return (x @ y.T / d + coef0) ** degree


def mmd2_unbiased(kxx: np.ndarray, kxy: np.ndarray, kyy: np.ndarray) -> float:
    """Unbiased MMD^2 from the kernel matrices of one subset pair of equal size m >= 2."""
    m = kxx.shape[0]
    sxx = (kxx.sum() - np.trace(kxx)) / (m * (m - 1))
    syy = (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
    return float(sxx + syy - 2.0 * kxy.sum() / (m * m))


def kid(
    features_a,
    features_b,
    subsets: int = 100,
    subset_size: int = 1000,
    seed: int = 0,
    degree: int = 3,
) -> KIDResult:
    """KID between two (n, d) feature sets: mean and standard deviation of the unbiased MMD^2
    over ``subsets`` random subset pairs of size min(subset_size, n_a, n_b) (>= 2), drawn without
    replacement with a fixed ``seed``."""
    a = np.asarray(features_a, dtype=np.float64)
    b = np.asarray(features_b, dtype=np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"features must be (n, d) arrays of one d, got {a.shape} and {b.shape}")
    m = int(min(subset_size, a.shape[0], b.shape[0]))
    if m < 2:
        raise ParameterError(f"KID needs at least 2 feature vectors per set, got {a.shape[0]} and {b.shape[0]}"
                             f" (subset size {subset_size})")
    if subsets < 1:
        raise ParameterError(f"subsets must be >= 1, got {subsets}")
    rng = np.random.default_rng(seed)
    full = a.shape[0] + b.shape[0] <= _FULL_GRAM_LIMIT
    if full:
        kaa = polynomial_kernel(a, a, degree)
        kbb = polynomial_kernel(b, b, degree)
        kab = polynomial_kernel(a, b, degree)
    values = np.empty(subsets)
    for s in range(subsets):
        ia = rng.choice(a.shape[0], m, replace=False)
        ib = rng.choice(b.shape[0], m, replace=False)
        if full:
            values[s] = mmd2_unbiased(kaa[np.ix_(ia, ia)], kab[np.ix_(ia, ib)], kbb[np.ix_(ib, ib)])
        else:
            x, y = a[ia], b[ib]
            values[s] = mmd2_unbiased(
                polynomial_kernel(x, x, degree), polynomial_kernel(x, y, degree), polynomial_kernel(y, y, degree)
            )
    return KIDResult(float(values.mean()), float(values.std()), m, int(subsets))
