"""Copying measured as the literature measures it: the data-copying test C_T and the authenticity
share, from three feature sets (training T, held-out real P_n, generated Q_m).

**C_T** (Meehan, Chaudhuri & Dasgupta, "A Non-Parametric Test to Detect Data-Copying in Generative
Models", AISTATS 2020). Data copying is generated samples that are *closer to the
training samples than fresh samples from the same distribution are*. The space is cut into cells
by k-means on the training features; in each cell pi the distances from the held-out samples and
from the generated samples to their nearest training sample of the cell, L_pi(P_n) and L_pi(Q_m),
are compared with the Mann-Whitney U test, Z-scored under the null (both sets distributed alike):

    Z_U(pi) = (U - m n / 2) / sqrt(m n / 12 * (N + 1 - sum_ties (t^3 - t) / (N (N - 1)))),

U counting the pairs (generated, held-out) where the generated distance is the larger (ties one
half), m and n the cell's generated and held-out counts, N = m + n. C_T is their average weighted
by the held-out share of each cell, P_n(pi), over the cells Pi_tau that hold at least
``min_generated`` = 21 generated samples (the paper's Q_m(pi) > tau with tau = 20 / m, the value
of the authors' public MNIST experiments: more than 20):

    C_T = sum_{pi in Pi_tau} P_n(pi) Z_U(pi) / sum_{pi in Pi_tau} P_n(pi).

C_T << 0: generated samples sit closer to the training set than new real samples do (copying;
C_T < -3 is far outside what a fresh sample gives). C_T ~ 0: as close as new samples. C_T >> 0:
farther (underfitting: over-dispersed or off-manifold samples). Cells (not one global test)
because a model can copy in one region and underfit in another, which would cancel globally.

What we implement, and where it differs from the authors' code (read, not copied): distances to
the nearest training sample *of the same cell* and cells from k-means on T with every set
assigned to the nearest centre, as there; the variance has the tie correction (exact copies give
tied zero distances) and no continuity correction (their code shifts the mean by 0.5); cells
without a held-out sample carry no weight and are left out rather than raising an error; the
k-means is ``lrgmm.core.mixture``'s seeded k-means++ with Lloyd iterations, on the features as given
(no PCA to 64 dimensions as some later re-implementations do). Default cell count:
min(50, n_train // 50, n_heldout // 50, n_generated // 50), at least 1: about 50 samples of each
set per cell on average, so that most cells clear the 21-sample bar (with 20 on average about
half of them fail it), and the 50 cells of the authors' MNIST experiments at most.

**Authenticity** (Alaa, van Breugel, Saveliev & van der Schaar, "How Faithful is your Synthetic
Data? Sample-level Metrics for Evaluating and Auditing Generative Models", ICML 2022; the
per-sample rule). A generated sample is *unauthentic* when it is closer to its nearest
training sample x_i* than any other training sample is to x_i*:

    authentic(g) = d(g, x_i*) > min_{j != i*} d(x_j, x_i*),   i* = argmin_i d(g, x_i).

We report the share of authentic generated samples, with the basic nearest-neighbour rule on the
given features (no embedding is trained, no hypothesis-test calibration). Its value for fresh
samples is not 1: a new sample and its nearest training sample are often each other's nearest
neighbours. So the same rule is applied to the held-out samples, whose share is what a generator
that does not copy scores (``authenticity_heldout``); exact copies score 0. (The public code of
the paper computes a different per-real-sample quantity; we follow the paper's definition.)

Distances are Euclidean, in float64: the nearest neighbour is found from Gram-matrix distances
(fast matrix products) and its distance then recomputed from the exact difference, so exact
copies are at distance 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

__all__ = [
    "CellPartition",
    "CopyingReference",
    "CopyingStats",
    "DEFAULT_MAX_CELLS",
    "DEFAULT_MIN_PER_CELL",
    "copying",
    "default_cells",
    "fit_cells",
    "grouped_mann_whitney",
    "mann_whitney_u",
    "training_radii",
]

DEFAULT_MAX_CELLS = 50
DEFAULT_MIN_PER_CELL = 21  # generated samples a cell needs to enter C_T (Q_m(pi) > tau = 20 / m)
DEFAULT_SAMPLES_PER_CELL = 50  # the default cell count aims at this many samples per cell

_GRAM_ELEMENTS = 1 << 22  # query rows per chunk x reference rows (32 MiB of float64 distances)


# ------------------------------------------------------------------------- Mann-Whitney U


def grouped_mann_whitney(values, groups, is_x, n_groups: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Mann-Whitney U of x against y within each group, all groups at once, and its tie-corrected
    Z score under the null (normal approximation, no continuity correction).

    values: (N,) numbers; groups: (N,) group index in [0, n_groups); is_x: (N,) True for the x
    sample, False for y. Returns (U, Z), each (n_groups,): U counts the pairs (x, y) of a group
    with x > y, ties counting one half; Z = (U - m n / 2) / sigma. Z is NaN in a group lacking
    either sample, and 0 when every value of the group is tied (sigma = 0).
    """
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    g = np.asarray(groups, dtype=np.int64).reshape(-1)
    x = np.asarray(is_x, dtype=bool).reshape(-1)
    if not (v.shape == g.shape == x.shape):
        raise ValueError(f"values, groups and is_x must have the same length, got {v.size}, {g.size}, {x.size}")
    if not np.isfinite(v).all():
        raise ValueError("Mann-Whitney U needs finite values")
    k = int(g.max()) + 1 if n_groups is None and g.size else int(n_groups or 0)
    if g.size and (g.min() < 0 or g.max() >= k):
        raise ValueError(f"group indices must be in [0, {k}), got [{g.min()}, {g.max()}]")
    order = np.lexsort((v, g))
    v, g, x = v[order], g[order], x[order]
    n_all = v.size
    # Runs of equal values within a group share their average rank.
    new = np.ones(n_all, dtype=bool)
    new[1:] = (g[1:] != g[:-1]) | (v[1:] != v[:-1])
    starts = np.flatnonzero(new)
    lengths = np.diff(np.append(starts, n_all))
    run = np.cumsum(new) - 1
    group_first = np.searchsorted(g, np.arange(k))
    rank = (starts[run] - group_first[g]) + (lengths[run] + 1) / 2.0  # 1-based within the group
    m = np.bincount(g[x], minlength=k).astype(np.float64)
    n = np.bincount(g[~x], minlength=k).astype(np.float64)
    u = np.bincount(g[x], weights=rank[x], minlength=k) - m * (m + 1) / 2
    ties = np.bincount(g[starts], weights=lengths.astype(np.float64) ** 3 - lengths, minlength=k)
    total = m + n
    with np.errstate(divide="ignore", invalid="ignore"):
        var = m * n / 12.0 * ((total + 1) - ties / (total * (total - 1)))
        z = np.where(var > 0, (u - m * n / 2) / np.sqrt(np.where(var > 0, var, 1.0)), 0.0)
    z[(m == 0) | (n == 0)] = np.nan
    return u, z


def mann_whitney_u(x, y) -> tuple[float, float]:
    """U of sample ``x`` against ``y`` (pairs with x > y, ties one half) and its tie-corrected
    Z score (``grouped_mann_whitney`` with one group): Z < 0 when x tends to be smaller."""
    x = np.asarray(x, dtype=np.float64).reshape(-1)
    y = np.asarray(y, dtype=np.float64).reshape(-1)
    if x.size == 0 or y.size == 0:
        raise ValueError(f"Mann-Whitney U needs two non-empty samples, got {x.size} and {y.size} values")
    u, z = grouped_mann_whitney(np.concatenate([x, y]), np.zeros(x.size + y.size, dtype=np.int64),
                                np.arange(x.size + y.size) < x.size, 1)
    return float(u[0]), float(z[0])


# ------------------------------------------------------------------------ nearest neighbours


def _flat(x, what: str = "features") -> torch.Tensor:
    """(n, ...) features as a float64 (n, d) tensor; an error for no rows or non-finite values."""
    a = np.asarray(x.detach().cpu() if isinstance(x, torch.Tensor) else x, dtype=np.float64)
    if a.ndim < 2 or a.shape[0] == 0:
        raise ValueError(f"no {what} to measure: expected an (n, ...) array with n >= 1, got shape {a.shape}")
    if not np.isfinite(a).all():
        raise ValueError(f"the {what} hold non-finite values")
    return torch.from_numpy(np.ascontiguousarray(a.reshape(a.shape[0], -1)))


def _nearest(query: torch.Tensor, ref: torch.Tensor, *, query_cells=None, ref_cells=None,
             self_index=None, with_overall: bool = False) -> tuple[np.ndarray, ...]:
    """Distance to and index of each query row's nearest ``ref`` row, float64; among the rows of
    the same cell when cells are given (then, with ``with_overall``, also the overall nearest,
    from the same distances: four arrays); never ref row ``self_index[i]`` for query row i when
    given (the query rows are ref rows). The neighbour comes from Gram distances, its distance
    from the exact difference."""
    nq, nr = query.shape[0], ref.shape[0]
    ref_sq = (ref * ref).sum(1)
    chunk = max(1, _GRAM_ELEMENTS // max(nr, 1))
    idx = torch.empty(nq, dtype=torch.long)
    idx_all = torch.empty(nq, dtype=torch.long) if with_overall else None
    qc = rc = None
    own = None if self_index is None else torch.as_tensor(self_index, dtype=torch.long)
    if query_cells is not None:
        qc = torch.as_tensor(query_cells, dtype=torch.long)
        rc = torch.as_tensor(ref_cells, dtype=torch.long)
    for s in range(0, nq, chunk):
        q = query[s : s + chunk]
        d2 = (q * q).sum(1, keepdim=True) - 2.0 * (q @ ref.T) + ref_sq
        if own is not None:
            d2[torch.arange(q.shape[0]), own[s : s + chunk]] = math.inf
        if idx_all is not None:
            idx_all[s : s + chunk] = d2.argmin(1)
        if qc is not None:
            d2.masked_fill_(qc[s : s + chunk, None] != rc[None, :], math.inf)
        idx[s : s + chunk] = d2.argmin(1)
    out = (torch.linalg.vector_norm(query - ref[idx], dim=1).numpy(), idx.numpy())
    if idx_all is not None:
        out += (torch.linalg.vector_norm(query - ref[idx_all], dim=1).numpy(), idx_all.numpy())
    return out


def training_radii(train) -> np.ndarray:
    """Distance from each training row to its nearest *other* training row (n_train,): the
    authenticity threshold of Alaa et al. (duplicated training rows have radius 0)."""
    t = _flat(train)
    if t.shape[0] < 2:
        raise ValueError(f"authenticity needs at least 2 training samples, got {t.shape[0]}")
    return _nearest(t, t, self_index=np.arange(t.shape[0]))[0]


# ---------------------------------------------------------------------------------- cells


@dataclass
class CellPartition:
    """k-means cells of the training set: ``centres`` (k, d) float64 and each training row's cell.
    Every set is assigned to its nearest centre (Voronoi cells); every cell holds training rows."""

    centres: torch.Tensor
    train_cells: np.ndarray
    seed: int

    @property
    def n_cells(self) -> int:
        return int(self.centres.shape[0])

    def assign(self, x) -> np.ndarray:
        """Cell of each row of ``x`` (n,): its nearest centre."""
        t = _flat(x)
        if t.shape[1] != self.centres.shape[1]:
            raise ValueError(f"feature sizes differ: {t.shape[1]} and the cells' {self.centres.shape[1]}")
        return _assign(t, self.centres)


def _assign(x: torch.Tensor, centres: torch.Tensor) -> np.ndarray:
    d2 = (centres * centres).sum(1)[None, :] - 2.0 * (x @ centres.T)  # + |x|^2, the same per row
    return d2.argmin(1).numpy()


def fit_cells(train, n_cells: int, seed: int = 0) -> CellPartition:
    """Cells from k-means on the training rows (seeded k-means++ and Lloyd iterations, the
    initialisation ``lrgmm.core.mixture`` uses for EM). Centres left without a training row are
    dropped, so the partition may hold fewer than ``n_cells`` cells."""
    from ..core.mixture import _kmeans_labels

    t = _flat(train)
    if not 1 <= n_cells <= t.shape[0]:
        raise ValueError(f"n_cells must be in [1, {t.shape[0]}] (the training samples), got {n_cells}")
    gen = torch.Generator().manual_seed(int(seed))
    labels = _kmeans_labels(t.to(torch.float32), int(n_cells), gen)
    counts = torch.bincount(labels, minlength=n_cells)
    sums = torch.zeros(n_cells, t.shape[1], dtype=torch.float64).index_add_(0, labels, t)
    centres = sums[counts > 0] / counts[counts > 0, None].to(torch.float64)
    cells = _assign(t, centres)
    # A centre that is no training row's nearest is dropped; that moves no other row.
    kept = np.unique(cells)
    if kept.size < centres.shape[0]:
        centres = centres[torch.as_tensor(kept)]
        cells = np.searchsorted(kept, cells)
    return CellPartition(centres=centres, train_cells=cells, seed=int(seed))


def default_cells(n_train: int, n_heldout: int, n_generated: int, max_cells: int = DEFAULT_MAX_CELLS,
                  per_cell: int = DEFAULT_SAMPLES_PER_CELL) -> int:
    """min(max_cells, n_train // per_cell, n_heldout // per_cell, n_generated // per_cell), at
    least 1: about ``per_cell`` samples of every set per cell on average."""
    return max(1, min(max_cells, n_train // per_cell, n_heldout // per_cell, n_generated // per_cell))


# --------------------------------------------------------------------------------- results


@dataclass
class CopyingStats:
    """The data-copying test and the authenticity share in one feature space.

    space: name of the feature space ("inception", "latent_codes").
    c_t: the C_T statistic (NaN when no cell holds ``min_generated`` generated samples and a
        held-out sample). n_cells: cells of the partition; n_cells_used: cells in C_T.
    heldout_share_used: share of the held-out samples in the cells used (the weight C_T covers).
    cell_z, cell_heldout, cell_generated: per cell, Z_U (NaN when not used) and the counts.
    heldout_to_train, generated_to_train: nearest-training-sample distances within the cell.
    authenticity: share of authentic generated samples; authenticity_heldout: the same rule on
        the held-out samples (what fresh samples score). authentic: per generated sample.
    """

    space: str
    c_t: float
    n_cells: int
    n_cells_used: int
    heldout_share_used: float
    min_generated: int
    cell_z: np.ndarray
    cell_heldout: np.ndarray
    cell_generated: np.ndarray
    authenticity: float
    authenticity_heldout: float
    seed: int
    authentic: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0, dtype=bool))
    heldout_to_train: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0))
    generated_to_train: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0))

    def summary(self) -> dict:
        used = ~np.isnan(self.cell_z)
        return {
            "space": self.space,
            "c_t": self.c_t,
            "c_t_cells": self.n_cells,
            "c_t_cells_used": self.n_cells_used,
            "c_t_heldout_share_used": self.heldout_share_used,
            "c_t_min_generated_per_cell": self.min_generated,
            "c_t_cell_z_min": float(self.cell_z[used].min()) if used.any() else None,
            "c_t_cell_z_max": float(self.cell_z[used].max()) if used.any() else None,
            "kmeans_seed": self.seed,
            "authenticity": self.authenticity,
            "authenticity_heldout": self.authenticity_heldout,
            "n_generated": int(self.cell_generated.sum()),
            "n_heldout": int(self.cell_heldout.sum()),
        }


class CopyingReference:
    """The training and held-out sides of C_T and authenticity in one feature space, prepared
    once for several generated sets: the held-out samples' authenticity, per cell count the
    k-means cells and the held-out distances within them, and the training radii (computed only
    for training rows that are some sample's nearest, and kept: authenticity never needs the
    others; for 19k training faces and 1,000 each of generated and held-out faces, all radii
    would cost about 10x more).

    train, heldout: (n, ...) features (flattened, float64). space: a name for the results.
    seed: seed of the k-means (fixed, so that generators are compared on the same cells).
    """

    def __init__(self, train, heldout, space: str = "features", seed: int = 0):
        self.train = _flat(train, "training features")
        self.heldout = _flat(heldout, "held-out features")
        if self.train.shape[1] != self.heldout.shape[1]:
            raise ValueError(f"feature sizes differ: {self.train.shape[1]} and {self.heldout.shape[1]}")
        if self.train.shape[0] < 2 or self.heldout.shape[0] < 1:
            raise ValueError(f"copying needs at least 2 training and 1 held-out samples, got "
                             f"{self.train.shape[0]} and {self.heldout.shape[0]}")
        self.space = space
        self.seed = int(seed)
        self._radii = np.full(self.n_train, np.nan)
        self._heldout_authentic: np.ndarray | None = None
        self._cells: dict[int, tuple[CellPartition, np.ndarray, np.ndarray]] = {}

    @property
    def n_train(self) -> int:
        return int(self.train.shape[0])

    @property
    def n_heldout(self) -> int:
        return int(self.heldout.shape[0])

    def radii(self, index) -> np.ndarray:
        """Distance from training rows ``index`` to their nearest other training row."""
        index = np.asarray(index, dtype=np.int64)
        todo = np.unique(index[np.isnan(self._radii[index])])
        if todo.size:
            self._radii[todo] = _nearest(self.train[torch.as_tensor(todo)], self.train, self_index=todo)[0]
        return self._radii[index]

    def _authentic(self, to_train: np.ndarray, index: np.ndarray) -> np.ndarray:
        """Alaa et al.'s rule from each sample's nearest training row (distance, index)."""
        return to_train > self.radii(index)

    @property
    def heldout_authentic(self) -> np.ndarray:
        """Authenticity of each held-out sample (what fresh samples score)."""
        if self._heldout_authentic is None:
            self._heldout_authentic = self._authentic(*_nearest(self.heldout, self.train))
        return self._heldout_authentic

    def cells(self, n_cells: int) -> tuple[CellPartition, np.ndarray, np.ndarray]:
        """The partition with ``n_cells`` k-means cells, the held-out samples' cells and their
        distances to the nearest training sample of their cell (cached per count)."""
        if n_cells not in self._cells:
            part = fit_cells(self.train, n_cells, self.seed)
            hc = _assign(self.heldout, part.centres)
            hd, _ = _nearest(self.heldout, self.train, query_cells=hc, ref_cells=part.train_cells)
            self._cells[n_cells] = (part, hc, hd)
        return self._cells[n_cells]

    def measure(self, generated, n_cells: int | None = None, min_generated: int = DEFAULT_MIN_PER_CELL) -> CopyingStats:
        """C_T and authenticity of ``generated`` (m, ...) against this training and held-out set.
        n_cells: k-means cells (None: ``default_cells``, capped at the training set size)."""
        g = _flat(generated, "generated features")
        if g.shape[1] != self.train.shape[1]:
            raise ValueError(f"feature sizes differ: {g.shape[1]} and the training set's {self.train.shape[1]}")
        m = int(g.shape[0])
        if min_generated < 1:
            raise ValueError(f"min_generated must be >= 1, got {min_generated}")
        if n_cells is None:
            n_cells = default_cells(self.n_train, self.n_heldout, m)
        part, hc, hd = self.cells(int(n_cells))
        k = part.n_cells
        gc = _assign(g, part.centres)
        gd, _, g_all, g_idx = _nearest(g, self.train, query_cells=gc, ref_cells=part.train_cells, with_overall=True)

        # Z_U per cell: generated distances (x) against held-out distances (y).
        _, z = grouped_mann_whitney(np.concatenate([gd, hd]), np.concatenate([gc, hc]),
                                    np.arange(m + hd.size) < m, k)
        n_gen = np.bincount(gc, minlength=k)
        n_held = np.bincount(hc, minlength=k)
        used = (n_gen >= min_generated) & (n_held > 0)
        weight = n_held / self.n_heldout
        z = np.where(used, z, np.nan)
        c_t = float(np.dot(weight[used], z[used]) / weight[used].sum()) if used.any() else float("nan")

        authentic = self._authentic(g_all, g_idx)
        return CopyingStats(
            space=self.space,
            c_t=c_t,
            n_cells=k,
            n_cells_used=int(used.sum()),
            heldout_share_used=float(weight[used].sum()),
            min_generated=int(min_generated),
            cell_z=z,
            cell_heldout=n_held,
            cell_generated=n_gen,
            authenticity=float(authentic.mean()),
            authenticity_heldout=float(self.heldout_authentic.mean()),
            seed=self.seed,
            authentic=authentic,
            heldout_to_train=hd,
            generated_to_train=gd,
        )


def copying(generated, train, heldout, space: str = "features", n_cells: int | None = None,
            min_generated: int = DEFAULT_MIN_PER_CELL, seed: int = 0) -> CopyingStats:
    """C_T (Meehan et al. 2020) and the authenticity share (Alaa et al. 2022) of ``generated``
    against ``train`` and ``heldout``, every set (n, ...) features (flattened); see the module
    docstring. ``CopyingReference`` prepares the training side once for several generators."""
    return CopyingReference(train, heldout, space, seed).measure(generated, n_cells, min_generated)
