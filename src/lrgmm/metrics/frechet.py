"""Fréchet Inception Distance (Heusel et al. 2017) from features, in float64.

FID = |mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr((S1 S2)^(1/2)).

From statistics (``frechet_distance``), tr((S1 S2)^(1/2)) is the sum of square roots of the
eigenvalues of the symmetric positive semi-definite S1^(1/2) S2 S1^(1/2), which has the same
eigenvalues as S1 S2: two symmetric eigendecompositions, no complex arithmetic, and no failure
when the covariances are singular. From features (``fid``) with fewer samples than dimensions
(the usual case: a few hundred faces, 2,048 features), it is exactly the sum of the singular
values of A1 A2^T / sqrt((n1 - 1)(n2 - 1)), A_i the centred (n_i, d) features, since
S_i = A_i^T A_i / (n_i - 1): an n1 x n2 problem instead of two d x d ones.

FID is biased upwards at small sample sizes (the bias falls roughly like 1/n): compare FIDs
only at the same n, and read KID (unbiased) beside it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["FeatureStats", "feature_stats", "fid", "frechet_distance"]


@dataclass(frozen=True)
class FeatureStats:
    """Mean (d,) and covariance (d, d) of a feature set, float64, and its size n."""

    mu: np.ndarray
    sigma: np.ndarray
    n: int


def _as_2d(features) -> np.ndarray:
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"features must be a 2-D (n, d) array, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("features contain NaN or infinite values")
    return x


def feature_stats(features) -> FeatureStats:
    """Mean and unbiased covariance (divisor n - 1) of (n, d) features; n >= 2."""
    x = _as_2d(features)
    n = x.shape[0]
    if n < 2:
        raise ValueError(f"FID needs at least 2 feature vectors per set, got {n}")
    mu = x.mean(axis=0)
    xc = x - mu
    sigma = xc.T @ xc / (n - 1)
    return FeatureStats(mu, sigma, n)


def _sqrt_psd(s: np.ndarray) -> np.ndarray:
    evals, evecs = np.linalg.eigh((s + s.T) / 2)
    return (evecs * np.sqrt(np.clip(evals, 0.0, None))) @ evecs.T


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2) (the FID formula)."""
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    s1, s2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != (mu1.size, mu1.size):
        raise ValueError(f"shape mismatch: mu {mu1.shape} vs {mu2.shape}, sigma {s1.shape} vs {s2.shape}")
    r1 = _sqrt_psd(s1)
    m = r1 @ s2 @ r1
    evals = np.linalg.eigvalsh((m + m.T) / 2)
    tr_covmean = float(np.sqrt(np.clip(evals, 0.0, None)).sum())
    diff = mu1 - mu2
    value = float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * tr_covmean)
    # Rounding can leave a tiny negative number for identical sets.
    return max(value, 0.0)


def _fid_small(x: np.ndarray, y: np.ndarray) -> float:
    n1, n2 = x.shape[0], y.shape[0]
    if n1 < 2 or n2 < 2:
        raise ValueError(f"FID needs at least 2 feature vectors per set, got {n1} and {n2}")
    mu1, mu2 = x.mean(axis=0), y.mean(axis=0)
    a, b = x - mu1, y - mu2
    c1, c2 = n1 - 1, n2 - 1
    tr_covmean = float(np.linalg.svd(a @ b.T, compute_uv=False).sum()) / np.sqrt(c1 * c2)
    diff = mu1 - mu2
    value = float(diff @ diff + (a * a).sum() / c1 + (b * b).sum() / c2 - 2.0 * tr_covmean)
    return max(value, 0.0)


def fid(features_a, features_b) -> float:
    """FID between two (n, d) feature sets (any extractor; Inception pool3 by convention), or
    two ``FeatureStats``."""
    if not isinstance(features_a, FeatureStats) and not isinstance(features_b, FeatureStats):
        x, y = _as_2d(features_a), _as_2d(features_b)
        if x.shape[1] != y.shape[1]:
            raise ValueError(f"feature dimensions differ: {x.shape[1]} and {y.shape[1]}")
        if min(x.shape[0], y.shape[0]) <= x.shape[1]:
            return _fid_small(x, y)
        features_a, features_b = x, y
    a = features_a if isinstance(features_a, FeatureStats) else feature_stats(features_a)
    b = features_b if isinstance(features_b, FeatureStats) else feature_stats(features_b)
    return frechet_distance(a.mu, a.sigma, b.mu, b.sigma)
