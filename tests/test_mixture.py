import math

import pytest
import torch

from lrgmm.errors import FitError
from lrgmm.core.mixture import LowRankGaussianMixture, default_temperature, low_rank_dims


def _planted_mixture(n_per=150, d=60, k=3, rank=3, seed=0):
    """k well separated low-rank-plus-noise Gaussians in d dimensions."""
    g = torch.Generator().manual_seed(seed)
    xs, labels, truth = [], [], []
    for j in range(k):
        mean = torch.randn(d, generator=g) * 6
        basis, _ = torch.linalg.qr(torch.randn(d, rank, generator=g, dtype=torch.float64))
        scales = torch.tensor([4.0, 2.5, 1.5][:rank], dtype=torch.float64)
        lat = torch.randn(n_per, rank, generator=g, dtype=torch.float64) * scales
        x = mean.double() + lat @ basis.T + 0.3 * torch.randn(n_per, d, generator=g, dtype=torch.float64)
        xs.append(x)
        labels.append(torch.full((n_per,), j))
        truth.append((mean, basis, scales**2))
    return torch.cat(xs).float(), torch.cat(labels), truth


def _same_partition(a, b):
    # Labels are defined up to a permutation: compare the co-membership matrices.
    return torch.equal(a[:, None] == a[None, :], b[:, None] == b[None, :])


def test_em_recovers_planted_mixture():
    x, labels, truth = _planted_mixture()
    gmm = LowRankGaussianMixture(n_components=3, temperature=3 * 3 / 60 * 1.01, density_rank=3, random_state=0).fit(x)
    assert gmm.converged_
    assert _same_partition(gmm.labels_, labels)
    assert torch.allclose(gmm.weights_, torch.full((3,), 1 / 3), atol=1e-6)
    for k in range(3):
        j = int(labels[gmm.labels_ == k][0])
        mean, basis, var = truth[j]
        assert (gmm.means_[k] - mean).norm() / mean.norm() < 0.05
        r = int(gmm.ranks_[k])
        assert r == 3  # floor(lambda * 1/3 * 60) = 3
        # The fitted subspace is the planted one: principal angles near zero.
        cos = torch.linalg.svdvals(gmm.eigenvectors_[k, :r].double() @ basis)
        assert cos.min() > 0.97
        # Eigenvalues = planted variances + noise variance, within sampling error.
        assert torch.allclose(gmm.eigenvalues_[k, :r].double(), var + 0.09, rtol=0.35)
        assert float(gmm.noise_variance_[k]) == pytest.approx(0.09, rel=0.25)


def test_score_matches_dense_gaussian_density():
    x, _, _ = _planted_mixture(n_per=80, d=20, k=2, rank=2)
    gmm = LowRankGaussianMixture(n_components=2, temperature=0.2, random_state=1).fit(x)
    dense = []
    for k in range(2):
        mvn = torch.distributions.MultivariateNormal(gmm.means_[k].double(), covariance_matrix=gmm.covariance(k))
        dense.append(mvn.log_prob(x.double()) + gmm.weights_[k].double().log())
    expected = torch.logsumexp(torch.stack(dense, 1), 1)
    # Parameters are stored in float32, so V V^T = I holds to ~1e-7: log-densities agree to 1e-4.
    assert torch.allclose(gmm.score_samples(x), expected, rtol=0, atol=1e-4)
    proba = gmm.predict_proba(x)
    assert torch.allclose(proba.sum(1), torch.ones(x.shape[0], dtype=torch.float64))


def test_gram_and_covariance_paths_agree():
    # d < m takes the d x d covariance path, d > m the Gram path: same eigenpairs.
    from lrgmm.core.mixture import _top_eigen

    g = torch.Generator().manual_seed(3)
    a = torch.randn(30, 12, generator=g, dtype=torch.float64) * torch.linspace(5, 0.5, 12, dtype=torch.float64)
    v1, u1 = _top_eigen(a, 5)
    v2, u2 = _top_eigen(a.T.contiguous() @ torch.eye(30, dtype=torch.float64)[:, :30], 5)  # m=12 < d=30
    ref = torch.linalg.eigvalsh(a.T @ a).flip(0)[:5]
    assert torch.allclose(v1, ref)
    # a.T's scatter a a^T shares its nonzero spectrum with a^T a.
    assert torch.allclose(v2, ref)
    assert torch.allclose((u1 @ u1.T), torch.eye(5, dtype=torch.float64), atol=1e-10)


def test_rank_follows_temperature_and_sample_count():
    w = torch.tensor([0.5, 0.25, 0.25])
    assert low_rank_dims(w, 4096, 0.12).tolist() == [245, 122, 122]
    assert low_rank_dims(torch.tensor([1e-6, 1.0]), 100, 0.12).tolist() == [1, 12]
    with pytest.raises(ValueError):
        low_rank_dims(w, 10, 0.0)
    # K = 1 on 10 samples: d_k would be 0.12*1000 = 120 but 10 samples span only 9 directions.
    x = torch.randn(10, 1000, generator=torch.Generator().manual_seed(0))
    gmm = LowRankGaussianMixture(n_components=1).fit(x)
    assert int(gmm.ranks_[0]) == 9
    assert float(gmm.noise_variance_[0]) == pytest.approx(gmm.reg_covar)
    assert gmm.labels_.tolist() == [0] * 10


def test_default_temperature_keeps_directions_per_component():
    # The paper's 0.12 up to K = 8, then 0.12 K / 8, capped at 1.
    assert [default_temperature(k) for k in (1, 2, 8)] == [0.12, 0.12, 0.12]
    assert default_temperature(16) == pytest.approx(0.24) and default_temperature(64) == pytest.approx(0.96)
    assert default_temperature(67) == 1.0 and default_temperature(500) == 1.0
    # Equal weights: every component samples in floor(0.12 d0 / 8) directions at any K from 8 to
    # 66 (within one of it: 0.12 K / 8 * (1 / K) rounds), where the paper's fixed lambda gives
    # each 0.12 d0 / K.
    for k in range(8, 67):
        dims = low_rank_dims(torch.full((k,), 1 / k), 4096, default_temperature(k))
        assert set(dims.tolist()) <= {60, 61}, (k, dims.unique())
    assert low_rank_dims(torch.full((64,), 1 / 64), 4096, 0.12).unique().tolist() == [7]


def test_temperature_none_is_resolved_at_fit():
    x, labels = _planted_high_dim([120] * 12, d=800, rank=3, seed=3)
    gmm = LowRankGaussianMixture(n_components=12, temperature=None, density_rank=4, random_state=0).fit(x)
    assert gmm.temperature is None and gmm.temperature_ == pytest.approx(0.18)  # 0.12 * 12 / 8
    want = low_rank_dims(gmm.weights_, 800, 0.18)
    assert torch.equal(gmm.ranks_, torch.minimum(want, gmm.counts_ - 1))
    explicit = LowRankGaussianMixture(n_components=12, temperature=0.18, density_rank=4, random_state=0).fit(x)
    assert torch.equal(explicit.ranks_, gmm.ranks_) and torch.equal(explicit.eigenvectors_, gmm.eigenvectors_)


def test_deterministic_for_a_seed():
    x, _, _ = _planted_mixture(seed=4)
    a = LowRankGaussianMixture(n_components=3, random_state=7).fit(x)
    b = LowRankGaussianMixture(n_components=3, random_state=7).fit(x)
    assert torch.equal(a.means_, b.means_) and torch.equal(a.eigenvectors_, b.eigenvectors_)


def test_bad_input():
    with pytest.raises(FitError, match="10 training codes cannot fit 8 components.*at least 4.*<= 2"):
        LowRankGaussianMixture(n_components=8).fit(torch.randn(10, 5))
    with pytest.raises(FitError, match="at least 2 samples"):
        LowRankGaussianMixture(n_components=1).fit(torch.randn(1, 5))
    x = torch.randn(20, 5)
    x[3, 1] = math.inf
    with pytest.raises(FitError, match="NaN or inf"):
        LowRankGaussianMixture(n_components=2).fit(x)
    with pytest.raises(ValueError, match="shape"):
        LowRankGaussianMixture(n_components=2).fit(torch.randn(20))


def test_beats_full_covariance_em_that_sticks_at_init():
    """The documented reason for the PPCA regulariser: with d0 >> n_k, a full covariance with a
    small floor keeps every point in its initial cluster. Our fit on the same data separates the
    planted clusters."""
    sklearn = pytest.importorskip("sklearn.mixture")
    x, labels, _ = _planted_mixture(n_per=40, d=200, k=3, rank=3, seed=5)
    ours = LowRankGaussianMixture(n_components=3, temperature=0.05, random_state=0).fit(x)
    assert _same_partition(ours.labels_, labels)
    ref = sklearn.GaussianMixture(3, covariance_type="full", reg_covar=1e-3, random_state=0).fit(x.numpy())
    assert ref.n_iter_ <= 3  # the degenerate fit stops almost at once


def test_tiny_components_are_removed_so_no_sample_copies_a_training_code():
    """An outlier that k-means++ seeds alone would make a rank-0 component whose every draw is
    that training code. It must be removed (with a warning) and its sample reassigned."""
    from lrgmm.core.sampling import sample_components, sample_low_rank

    x, labels, _ = _planted_mixture(n_per=30, d=40, k=3, rank=2, seed=2)
    outlier = torch.full((1, 40), 200.0)
    x = torch.cat([x, outlier])
    with pytest.warns(UserWarning, match="1 of 4 mixture components held fewer than 4"):
        gmm = LowRankGaussianMixture(n_components=4, temperature=0.2, random_state=0).fit(x)
    assert gmm.n_components_ == 3 and gmm.n_removed_ == 1
    counts = torch.bincount(gmm.labels_, minlength=3)
    assert int(counts.min()) >= 4 and int(counts.sum()) == 91
    assert bool((gmm.ranks_ >= 1).all())
    gen = torch.Generator().manual_seed(0)
    comps = sample_components(gmm.weights_, 500, gen)
    z = sample_low_rank(gmm.means_, gmm.eigenvectors_, gmm.eigenvalues_, gmm.ranks_, comps, gen)
    dist = torch.cdist(z, x).min(1).values
    assert float(dist.min()) > 1e-3


def _planted_high_dim(sizes, d, rank=4, sep=2.0, noise=1.0, seed=0):
    """Planted low-rank Gaussians in d dimensions with n_k < d samples each (the regime of real
    codes: d0 = 4,096 and a few hundred faces per component)."""
    g = torch.Generator().manual_seed(seed)
    xs, labels = [], []
    for j, n_k in enumerate(sizes):
        mean = torch.randn(d, generator=g) * sep
        basis, _ = torch.linalg.qr(torch.randn(d, rank, generator=g))
        lat = torch.randn(n_k, rank, generator=g) * torch.linspace(3.0, 1.5, rank)
        xs.append(mean + lat @ basis.T + noise * torch.randn(n_k, d, generator=g))
        labels.append(torch.full((n_k,), j))
    return torch.cat(xs), torch.cat(labels)


def test_unequal_weights_recovered_in_high_dimension():
    x, labels = _planted_high_dim([500, 300, 200], d=1200, seed=1)
    gmm = LowRankGaussianMixture(n_components=3, density_rank=8, n_init=2, random_state=0, temperature=0.12).fit(x)
    assert _same_partition(gmm.labels_, labels)
    assert sorted(gmm.weights_.tolist()) == pytest.approx([0.2, 0.3, 0.5], abs=1e-6)
    assert sorted(gmm.counts_.tolist()) == [200, 300, 500]
    # The density rank is the same for every component; eq. 4's sampling rank follows pi_k.
    assert gmm.density_ranks_.tolist() == [8, 8, 8]
    order = gmm.weights_.argsort()
    assert gmm.ranks_[order].tolist() == [int(0.12 * w * 1200) for w in (0.2, 0.3, 0.5)]
    assert gmm.hard_assignment_ == 1.0


@pytest.mark.slow
def test_no_collapse_with_64_equal_components_at_n_20k():
    x, labels = _planted_high_dim([320] * 64, d=512, rank=4, seed=2)
    gmm = LowRankGaussianMixture(n_components=64, density_rank=4, random_state=0).fit(x)
    assert gmm.n_components_ == 64
    # Each planted component holds 1/64 = 0.016; k-means++ merges a few and splits others (the
    # seed-0 start leaves one component with four planted ones), which EM cannot undo.
    assert float(gmm.weights_.max()) <= 4 / 64 + 1e-6
    agree = sum(int(torch.bincount(labels[gmm.labels_ == k]).max()) for k in range(64) if (gmm.labels_ == k).any())
    assert agree / x.shape[0] > 0.8


@pytest.mark.filterwarnings("ignore:EM did not converge")
def test_no_collapse_on_one_broad_population():
    """The large-N failure in miniature: codes from one broad Gaussian with a decaying spectrum
    (no planted clusters, like faces). When the density's rank followed pi_k inside EM, the
    largest component gained directions and swallowed the rest (measured on this data with the
    previous estimator: 1 component left, weight 1.0, after 8 iterations). With one rank for all,
    the k-means partition stays a partition."""
    g = torch.Generator().manual_seed(0)
    scales = (1.0 / torch.arange(1, 513).float()).sqrt() * 3
    x = torch.randn(2000, 512, generator=g) * scales
    gmm = LowRankGaussianMixture(n_components=8, density_rank=8, max_iter=30, random_state=0).fit(x)
    assert gmm.n_components_ == 8
    assert float(gmm.weights_.max()) < 0.25


def test_em_log_likelihood_never_decreases_with_soft_responsibilities():
    # Overlapping clusters in low dimension: responsibilities are soft, so this is exact EM.
    g = torch.Generator().manual_seed(5)
    x = torch.cat([torch.randn(300, 6, generator=g), torch.randn(300, 6, generator=g) + 1.2, torch.randn(200, 6, generator=g) * 2])
    gmm = LowRankGaussianMixture(n_components=3, density_rank=2, tol=1e-7, max_iter=300, random_state=0).fit(x)
    assert gmm.hard_assignment_ < 0.5  # the regime where EM, not classification, runs
    h = torch.tensor(gmm.lower_bound_history_, dtype=torch.float64)
    assert len(h) > 5 and not gmm.pruned_at_
    assert bool((h[1:] - h[:-1] >= -1e-9).all()), h.tolist()


def test_n_init_keeps_the_most_likely_start():
    x, _ = _planted_high_dim([60, 60, 60, 60], d=300, seed=3, sep=0.15)
    one = LowRankGaussianMixture(n_components=4, density_rank=4, n_init=1, random_state=0).fit(x)
    many = LowRankGaussianMixture(n_components=4, density_rank=4, n_init=4, random_state=0).fit(x)
    assert len(many.lower_bounds_) == 4 and many.lower_bounds_[0] == pytest.approx(one.lower_bound_)
    assert many.lower_bound_ == max(many.lower_bounds_)
    again = LowRankGaussianMixture(n_components=4, density_rank=4, n_init=4, random_state=0).fit(x)
    assert torch.equal(many.means_, again.means_) and torch.equal(many.labels_, again.labels_)


def test_sampling_ranks_and_density_ranks_are_stored_together():
    x, _ = _planted_high_dim([80, 40], d=400, seed=4)
    gmm = LowRankGaussianMixture(n_components=2, density_rank=3, temperature=0.5, random_state=0).fit(x)
    stored = (gmm.eigenvalues_ > 0).sum(1)
    assert bool((stored >= torch.maximum(gmm.ranks_, gmm.density_ranks_)).all())
    # eq. 4 at lambda = 0.5, capped at n_k - 1: 0.5 * 2/3 * 400 = 133 -> 79; 0.5 * 1/3 * 400 = 66 -> 39.
    assert sorted(gmm.ranks_.tolist()) == [39, 79]
    summary = gmm.components_summary()
    assert [c["density_rank"] for c in summary] == [3, 3] and sum(c["n_train"] for c in summary) == 120


@pytest.mark.parametrize("bad", [float("inf"), float("nan"), 0.0, -0.1])
def test_temperature_must_be_finite_and_positive(bad):
    with pytest.raises(ValueError, match="temperature"):
        LowRankGaussianMixture(n_components=1, temperature=bad).fit(torch.randn(10, 4))
