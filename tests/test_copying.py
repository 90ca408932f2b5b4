"""``lrgmm.metrics.copying``: the data-copying test C_T (Meehan et al. 2020) and the authenticity
share (Alaa et al. 2022) on planted cases with synthetic features (Gaussian mixtures), the
Mann-Whitney statistic against scipy, and the nearest-neighbour parts against brute force."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lrgmm.metrics.copying import (
    CopyingReference,
    copying,
    default_cells,
    fit_cells,
    grouped_mann_whitney,
    mann_whitney_u,
    training_radii,
)

scipy_stats = pytest.importorskip("scipy.stats")


class Mixture:
    """K Gaussian blobs in d dimensions (unit noise, means ~3 noise widths apart per 64 dims)."""

    def __init__(self, d=64, k=5, seed=0):
        self.rng = np.random.default_rng(seed)
        self.means = self.rng.normal(size=(k, d)) * 3 * math.sqrt(64 / d)

    def draw(self, n, scale=1.0):
        """n samples; ``scale`` stretches (> 1) or shrinks (< 1) them about their blob's mean."""
        c = self.rng.integers(len(self.means), size=n)
        noise = self.rng.normal(size=(n, self.means.shape[1]))
        return (self.means[c] + scale * noise).astype(np.float32)

    def near_copies(self, train, n, noise=0.01):
        idx = self.rng.integers(len(train), size=n)
        return (train[idx] + noise * self.rng.normal(size=(n, train.shape[1]))).astype(np.float32)


@pytest.fixture(scope="module")
def mix():
    m = Mixture()
    return m, m.draw(1000), m.draw(500)  # mixture, training set, held-out set


# ---------------------------------------------------------------------------- Mann-Whitney U


def test_mann_whitney_u_matches_scipy():
    rng = np.random.default_rng(1)
    for trial in range(40):
        nx, ny = rng.integers(1, 60, size=2)
        if trial % 2:  # integers: many ties
            x, y = rng.integers(0, 6, size=nx).astype(float), rng.integers(0, 6, size=ny).astype(float)
        else:
            x, y = rng.normal(size=nx), rng.normal(0.4, 1.3, size=ny)
        u, z = mann_whitney_u(x, y)
        ref = scipy_stats.mannwhitneyu(x, y, alternative="two-sided", method="asymptotic", use_continuity=False)
        assert u == ref.statistic  # exact: counts of pairs and half ties
        if np.unique(np.concatenate([x, y])).size > 1:
            assert 2 * scipy_stats.norm.sf(abs(z)) == pytest.approx(ref.pvalue, rel=1e-9, abs=1e-300)
            assert (z < 0) == (u < nx * ny / 2)


def test_mann_whitney_u_closed_forms():
    x, y = np.arange(5.0), np.arange(10.0, 17.0)
    u, z = mann_whitney_u(x, y)  # every x below every y, no ties: U = 0
    assert u == 0 and z == pytest.approx(-math.sqrt(3 * 5 * 7 / 13))
    u2, z2 = mann_whitney_u(y, x)
    assert u2 == 35 and z2 == pytest.approx(-z)  # U_x + U_y = m n, Z antisymmetric
    assert mann_whitney_u(np.zeros(4), np.zeros(6)) == (12.0, 0.0)  # all tied: sigma 0, Z 0


def test_grouped_mann_whitney_is_one_test_per_group():
    rng = np.random.default_rng(2)
    for _ in range(10):
        k = int(rng.integers(1, 6))
        n = int(rng.integers(2, 200))
        values = rng.integers(0, 10, size=n).astype(float) + (rng.random(n) < 0.5) * rng.normal(size=n)
        groups = rng.integers(0, k, size=n)
        is_x = rng.random(n) < 0.4
        u, z = grouped_mann_whitney(values, groups, is_x, k + 1)  # group k is empty
        assert np.isnan(z[k]) and u[k] == 0
        for g in range(k):
            xs, ys = values[(groups == g) & is_x], values[(groups == g) & ~is_x]
            if xs.size == 0 or ys.size == 0:
                assert np.isnan(z[g])
                continue
            ug, zg = mann_whitney_u(xs, ys)
            assert u[g] == ug and z[g] == pytest.approx(zg, rel=1e-12, abs=1e-12)


# --------------------------------------------------------------------- C_T and authenticity


def test_planted_near_copies(mix):
    m, train, held = mix
    res = copying(m.near_copies(train, 500), train, held)
    assert res.c_t < -3, res.c_t
    assert res.authenticity < 0.2 and res.authenticity_heldout > 0.6
    assert res.n_cells == default_cells(1000, 500, 500) == 10
    assert res.n_cells_used >= 8 and (res.cell_z[~np.isnan(res.cell_z)] < 0).all()


def test_exact_copies_are_never_authentic(mix):
    m, train, held = mix
    res = copying(train[:300], train, held)
    assert res.authenticity == 0.0 and not res.authentic.any()
    assert (res.generated_to_train == 0).all()
    assert res.c_t < -3


def test_fresh_samples_score_like_held_out_ones(mix):
    m, train, held = mix
    ref = CopyingReference(train, held)
    c_ts = []
    for _ in range(6):
        res = ref.measure(m.draw(500))
        assert abs(res.c_t) < 2.5, res.c_t
        assert abs(res.authenticity - res.authenticity_heldout) < 0.08
        c_ts.append(res.c_t)
    assert abs(np.mean(c_ts)) < 1.0  # a weighted mean of N(0, 1) scores: variance <= 1 / 6


def test_over_dispersed_samples_underfit(mix):
    # Samples spread 1.3 times wider about their blob's mean (or a wide KDE: training point plus
    # twice the noise) sit farther from the training set than new samples: C_T >> 0.
    m, train, held = mix
    for gen in (m.draw(500, scale=1.3), m.near_copies(train, 500, noise=2.0)):
        res = copying(gen, train, held)
        assert res.c_t > 3, res.c_t
        assert res.authenticity > res.authenticity_heldout


def test_samples_shrunk_towards_the_means_read_as_copying(mix):
    # The test measures closeness to training samples, not copying as such: in many dimensions a
    # point pulled towards its blob's mean is closer to every training sample of the blob than a
    # new sample is (|0.7 z - z'|^2 ~ 1.49 d against 2 d), so a generator that blurs towards the
    # means scores C_T << 0 and low authenticity, like a copier. Read C_T beside the near-copy
    # shares and provenance (what was copied), not alone.
    m, train, held = mix
    res = copying(m.draw(500, scale=0.7), train, held)
    assert res.c_t < -3 and res.authenticity < 0.3


def test_a_partial_copier_is_between(mix):
    m, train, held = mix
    half = np.concatenate([m.near_copies(train, 250), m.draw(250)])
    full, part = copying(m.near_copies(train, 500), train, held), copying(half, train, held)
    assert full.c_t < part.c_t < -2
    assert 0.2 < part.authenticity < part.authenticity_heldout


def test_inception_sized_features():
    m = Mixture(d=2048, k=4, seed=3)
    train, held = m.draw(600), m.draw(300)
    ref = CopyingReference(train, held, "inception")
    copies, fresh = ref.measure(m.near_copies(train, 300)), ref.measure(m.draw(300))
    assert copies.c_t < -3 and copies.authenticity < 0.2
    assert abs(fresh.c_t) < 2 and abs(fresh.authenticity - fresh.authenticity_heldout) < 0.1
    assert copies.space == "inception" and copies.summary()["space"] == "inception"


def test_deterministic_for_a_seed(mix):
    m, train, held = mix
    gen = m.draw(400)
    a, b = copying(gen, train, held, seed=7), copying(gen, train, held, seed=7)
    assert a.c_t == b.c_t
    np.testing.assert_array_equal(a.cell_z, b.cell_z)
    np.testing.assert_array_equal(a.authentic, b.authentic)
    ref = CopyingReference(torch.as_tensor(train), held, seed=7)  # tensors or arrays, reused
    ref.measure(m.draw(400))
    c = ref.measure(gen)
    assert c.c_t == a.c_t and c.authenticity == a.authenticity


def test_c_t_is_the_held_out_weighted_mean_over_cells_with_enough_generated(mix):
    m, train, held = mix
    gen = m.draw(300)
    ref = CopyingReference(train, held, seed=0)
    res = ref.measure(gen, n_cells=12, min_generated=25)
    part, hc, hd = ref.cells(12)
    gc = part.assign(gen)
    used = []
    for cell in range(part.n_cells):
        g, h = res.generated_to_train[gc == cell], hd[hc == cell]
        if g.size >= 25 and h.size > 0:
            used.append((h.size / len(held), mann_whitney_u(g, h)[1]))
            assert res.cell_z[cell] == pytest.approx(used[-1][1], rel=1e-12)
        else:
            assert np.isnan(res.cell_z[cell])
    w = np.array([u[0] for u in used])
    assert 0 < len(used) < part.n_cells  # the bar leaves some cells out here
    assert res.n_cells_used == len(used) and res.heldout_share_used == pytest.approx(w.sum())
    assert res.c_t == pytest.approx(sum(a * b for a, b in used) / w.sum(), rel=1e-12)
    assert res.cell_generated.sum() == 300 and res.cell_heldout.sum() == 500


def test_too_few_generated_samples_give_no_c_t(mix):
    m, train, held = mix
    res = copying(m.draw(20), train, held)  # a cell needs more than 20 (Q_m(pi) > 20 / m)
    assert math.isnan(res.c_t) and res.n_cells == 1 and res.n_cells_used == 0
    assert 0 <= res.authenticity <= 1  # authenticity needs no cells
    s = res.summary()
    assert s["c_t_cell_z_min"] is None and s["n_generated"] == 20 and s["c_t_min_generated_per_cell"] == 21
    res = copying(m.draw(21), train, held)
    assert math.isfinite(res.c_t) and res.n_cells_used == 1 and res.heldout_share_used == 1.0


# ------------------------------------------------------------ neighbours and cells, brute force


def test_distances_and_flags_match_brute_force():
    rng = np.random.default_rng(4)
    train = rng.normal(size=(60, 5))
    train[7] = train[3]  # a duplicated training row: radius 0 for both
    held, gen = rng.normal(size=(40, 5)), rng.normal(size=(30, 5))
    gen[0] = train[7]
    d_tt = np.linalg.norm(train[:, None] - train[None], axis=2)
    np.fill_diagonal(d_tt, np.inf)
    radii = d_tt.min(1)
    np.testing.assert_allclose(training_radii(train), radii, rtol=1e-12)
    assert radii[3] == radii[7] == 0

    ref = CopyingReference(train, held)
    res = ref.measure(gen, n_cells=4, min_generated=1)
    part, hc, hd = ref.cells(4)
    centres = part.centres.numpy()
    for x, cells, dist in ((held, hc, hd), (gen, part.assign(gen), res.generated_to_train)):
        d_c = np.linalg.norm(x[:, None] - centres[None], axis=2)
        np.testing.assert_array_equal(cells, d_c.argmin(1))
        d_t = np.linalg.norm(x[:, None] - train[None], axis=2)
        in_cell = np.where(part.train_cells[None, :] == cells[:, None], d_t, np.inf).min(1)
        np.testing.assert_allclose(dist, in_cell, rtol=1e-12)
    d_gt = np.linalg.norm(gen[:, None] - train[None], axis=2)
    authentic = d_gt.min(1) > radii[d_gt.argmin(1)]
    np.testing.assert_array_equal(res.authentic, authentic)
    assert not res.authentic[0]  # a copy of a duplicated row: 0 > 0 is false
    np.testing.assert_allclose(ref.radii([7, 3, 59, 0]), radii[[7, 3, 59, 0]], rtol=1e-12)
    np.testing.assert_allclose(ref.radii(np.arange(60)), radii, rtol=1e-12)  # the rest, on demand
    d_ht = np.linalg.norm(held[:, None] - train[None], axis=2)
    assert res.authenticity_heldout == (d_ht.min(1) > radii[d_ht.argmin(1)]).mean()


def test_cells_are_the_voronoi_cells_of_their_centres():
    rng = np.random.default_rng(5)
    for trial in range(5):
        x = rng.normal(size=(int(rng.integers(20, 200)), 3)) + rng.integers(0, 3, size=(1, 3))
        k = int(rng.integers(1, 12))
        part = fit_cells(x, k, seed=trial)
        assert 1 <= part.n_cells <= k
        assert set(np.unique(part.train_cells)) == set(range(part.n_cells))  # no empty cell
        d = np.linalg.norm(x[:, None] - part.centres.numpy()[None], axis=2)
        np.testing.assert_array_equal(part.train_cells, d.argmin(1))


def test_default_cells():
    assert default_cells(19000, 3000, 1000) == 20
    assert default_cells(19000, 3000, 10000) == 50
    assert default_cells(48, 32, 16) == 1
    assert default_cells(120, 1000, 1000) == 2


def test_bad_input(mix):
    m, train, held = mix
    with pytest.raises(ValueError, match="feature sizes differ"):
        copying(np.zeros((30, 3)), train, held)
    with pytest.raises(ValueError, match="feature sizes differ"):
        CopyingReference(train, np.zeros((5, 3)))
    with pytest.raises(ValueError, match="n_cells must be in"):
        copying(m.draw(30), train[:10], held, n_cells=11)
    with pytest.raises(ValueError, match="at least 2 training"):
        copying(m.draw(30), train[:1], held)
    with pytest.raises(ValueError, match="no generated features"):
        copying(np.zeros((0, 64)), train, held)
    with pytest.raises(ValueError, match="non-finite"):
        copying(np.full((30, 64), np.nan), train, held)
    with pytest.raises(ValueError, match="non-empty"):
        mann_whitney_u([], [1.0])
    with pytest.raises(ValueError, match="finite"):
        mann_whitney_u([np.nan], [1.0])
