"""Conditioning maths of lrgmm.core.conditioning against dense float64 formulas, masks, blend, NN step."""

from __future__ import annotations

import math

import pytest
import torch

from lrgmm.errors import MaskError

from lrgmm.data.masks import blend, box_mask, centre_box, check_mask, feathered_alpha

from lrgmm.core.conditioning import (

    component_factors,

    condition_low_rank,

    nn_project_unknown,

    position_coordinates,

    sample_conditional,

    unknown_positions,

)
from lrgmm.core.mixture import LowRankGaussianMixture


@pytest.fixture(scope="module")
def ppca():
    """A fitted 3-component PPCA mixture on d0 = 30 synthetic data with planted structure."""
    g = torch.Generator().manual_seed(0)
    d, n_per = 30, 60
    xs = []
    for k in range(3):
        basis = torch.randn(4, d, generator=g, dtype=torch.float64)
        a = torch.randn(n_per, 4, generator=g, dtype=torch.float64) * torch.tensor([3.0, 2.0, 1.5, 1.0], dtype=torch.float64)
        xs.append(12.0 * torch.randn(d, generator=g, dtype=torch.float64) + a @ basis + 0.3 * torch.randn(n_per, d, generator=g, dtype=torch.float64))
    x = torch.cat(xs).float()
    # density_rank = eq. 4's d_k = floor(0.45 * 1/3 * 30) = 4: the conditioned PPCA (sampling
    # ranks) is then the density whose dense covariance ``mix.covariance`` gives.
    mix = LowRankGaussianMixture(n_components=3, temperature=0.45, density_rank=4, random_state=0).fit(x)
    assert bool((mix.ranks_ >= 2).all()) and torch.equal(mix.ranks_, mix.density_ranks_)
    return mix


def dense_cov(mix, k, dims):
    """Sigma_k(lambda) = V_d^T diag(s_d) V_d + sigma^2 (I - V_d^T V_d), dense float64."""
    r = int(dims[k])
    v = mix.eigenvectors_[k, :r].double()
    s = mix.eigenvalues_[k, :r].double()
    s2 = float(mix.noise_variance_[k])
    d = v.shape[1]
    return v.T @ torch.diag(s - s2) @ v + s2 * torch.eye(d, dtype=torch.float64)


def _args(mix, dims):
    return (mix.weights_, mix.means_, mix.eigenvectors_, mix.eigenvalues_, mix.noise_variance_, dims)


@pytest.mark.parametrize("lower_dims", [False, True])
def test_conditioning_matches_dense_formulas(ppca, lower_dims):
    mix = ppca
    dims = mix.ranks_ - 1 if lower_dims else mix.ranks_
    d0 = mix.means_.shape[1]
    g = torch.Generator().manual_seed(1)
    obs = torch.randperm(d0, generator=g)[:18].sort().values
    unk = torch.tensor(sorted(set(range(d0)) - set(obs.tolist())))
    x = mix.means_[1].double() + torch.randn(d0, generator=g, dtype=torch.float64)
    cond = condition_low_rank(*_args(mix, dims), x[obs].float(), obs)
    assert torch.equal(cond.unknown_index, unk)
    joint = []
    for k in range(3):
        S = dense_cov(mix, k, dims)
        assert torch.allclose(component_factors(*_args(mix, dims)[2:])[k].T @ component_factors(*_args(mix, dims)[2:])[k]
                              + float(mix.noise_variance_[k]) * torch.eye(d0, dtype=torch.float64), S, atol=1e-10)
        mu = mix.means_[k].double()
        xo = x[obs].float().double()
        Soo, Suo, Suu = S[obs][:, obs], S[unk][:, obs], S[unk][:, unk]
        mean = mu[unk] + Suo @ torch.linalg.solve(Soo, xo - mu[obs])
        cov = Suu - Suo @ torch.linalg.solve(Soo, Suo.T)
        assert torch.allclose(cond.mean(k), mean, rtol=1e-9, atol=1e-9)
        assert torch.allclose(cond.covariance(k), cov, rtol=1e-8, atol=1e-9)
        ref = torch.distributions.MultivariateNormal(mu[obs], covariance_matrix=Soo).log_prob(xo)
        assert float(cond.log_marginal[k]) == pytest.approx(float(ref), rel=1e-10, abs=1e-8)
        joint.append(math.log(float(mix.weights_[k])) + float(ref))
    post = torch.tensor(joint, dtype=torch.float64).softmax(0)
    assert torch.allclose(cond.log_weights.exp(), post, atol=1e-12)


def test_full_observation_of_nothing_is_the_prior(ppca):
    """With no observed coordinate the weights are pi and the covariance is Sigma_k."""
    mix = ppca
    cond = condition_low_rank(*_args(mix, mix.ranks_), torch.zeros(0), torch.zeros(0, dtype=torch.long))
    assert torch.allclose(cond.log_weights.exp(), mix.weights_.double(), atol=1e-7)
    assert torch.allclose(cond.covariance(0), mix.covariance(0), atol=1e-6)
    assert torch.allclose(cond.mean(2), mix.means_[2].double())


def test_sampling_matches_conditional_moments(ppca):
    mix = ppca
    d0 = mix.means_.shape[1]
    obs = torch.arange(0, d0, 2)
    x = mix.means_[0].double() + 0.5
    # Equalise the weights so every component is drawn often enough to check its moments.
    cond = condition_low_rank(*_args(mix, mix.ranks_), x[obs].float(), obs)
    cond.log_weights = torch.full((3,), -math.log(3), dtype=torch.float64)
    for noise in (False, True):
        comps, z = sample_conditional(cond, 60000, torch.Generator().manual_seed(2), noise=noise)
        for k in range(3):
            zk = z[comps == k]
            assert zk.shape[0] > 15000
            cov = cond.covariance(k, noise=noise)
            scale = cov.diagonal().max().sqrt()
            assert torch.allclose(zk.mean(0), cond.mean(k), atol=float(5 * scale / math.sqrt(zk.shape[0])) + 1e-9)
            emp = torch.cov(zk.T)
            assert float((emp - cov).abs().max()) < 0.05 * float(cov.diagonal().max())
    # Deterministic for a fixed generator seed; component shares follow the weights.
    a = sample_conditional(cond, 50, torch.Generator().manual_seed(5))
    b = sample_conditional(cond, 50, torch.Generator().manual_seed(5))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_noise_free_draw_without_observation_is_low_rank(ppca):
    mix = ppca
    cond = condition_low_rank(*_args(mix, mix.ranks_), torch.zeros(0), torch.zeros(0, dtype=torch.long))
    comps, z = sample_conditional(cond, 200, torch.Generator().manual_seed(0), noise=False)
    for k in torch.unique(comps).tolist():
        zk = z[comps == k] - mix.means_[k].double()
        assert torch.linalg.matrix_rank(zk, rtol=1e-6) == int(mix.ranks_[k])


def test_masks_and_positions():
    m = box_mask(128, 40, 8, 72, 30)
    assert m.shape == (128, 128) and int(m.sum()) == 32 * 22 and bool(m[8, 40]) and not bool(m[30, 40])
    unk = unknown_positions(m, (16, 16))
    # rows 8..29 -> latent rows 1..3; columns 40..71 -> latent columns 5..8
    expect = torch.zeros(16, 16, dtype=torch.bool)
    expect[1:4, 5:9] = True
    assert torch.equal(unk, expect)
    # "mostly masked": row block 3 (pixels 24..31) is 6/8 masked, kept; a 2/8 sliver is not
    assert torch.equal(unknown_positions(m, (16, 16), threshold=0.5), expect)
    m2 = box_mask(128, 40, 8, 72, 26)
    assert torch.equal(unknown_positions(m2, (16, 16)), expect)
    assert torch.equal(unknown_positions(m2, (16, 16), threshold=0.5)[3], torch.zeros(16, dtype=torch.bool))
    idx = position_coordinates(expect, 3)
    assert idx.numel() == 3 * 12 and int(idx[0]) == 1 * 16 + 5 and int(idx[-1]) == 2 * 256 + 3 * 16 + 8
    assert centre_box(128, 0.25) == (32, 32, 96, 96)
    for bad in [(-1, 0, 10, 10), (0, 0, 129, 10), (10, 10, 10, 20)]:
        with pytest.raises(MaskError, match="not inside"):
            box_mask(128, *bad)
    with pytest.raises(MaskError, match="hides no pixel"):
        check_mask(torch.zeros(128, 128), 128)
    with pytest.raises(MaskError, match="hides every pixel"):
        check_mask(torch.ones(128, 128), 128)
    with pytest.raises(MaskError, match="120x100"):
        check_mask(torch.ones(100, 120), 128)
    photo = torch.zeros(100, 120)
    photo[10:20, 0:10] = 1  # inside the crop's left margin: cropped away
    with pytest.raises(MaskError, match="hides no pixel"):
        check_mask(photo, 50, source_size=(120, 100))
    photo[50, 60] = 1
    cropped = check_mask(photo, 50, source_size=(120, 100))
    assert int(cropped.sum()) == 1 and bool(cropped[25, 25])
    big = torch.zeros(256, 256, dtype=torch.bool)
    big[3, 5] = True
    small = check_mask(big, 128)
    assert int(small.sum()) == 1 and bool(small[1, 2])


def test_feathered_blend_keeps_far_pixels():
    m = box_mask(32, 10, 10, 20, 20)
    a = feathered_alpha(m, feather=3)
    assert float(a[15, 15]) == 1.0 and float(a[10, 9]) == pytest.approx(0.75) and float(a[10, 7]) == pytest.approx(0.25)
    assert float(a[10, 6]) == 0.0 and float(a[5, 5]) == 0.0
    g = torch.Generator().manual_seed(0)
    orig, dec = torch.rand(3, 32, 32, generator=g), torch.rand(3, 32, 32, generator=g)
    out = blend(dec, orig, a)
    assert torch.equal(out[:, a == 0], orig[:, a == 0]) and torch.equal(out[:, a == 1], dec[:, a == 1])


def test_nn_project_unknown_keeps_observed_and_copies_pixels():
    g = torch.Generator().manual_seed(0)
    memory = torch.randn(20, 4, 6, 6, generator=g)
    labels = torch.arange(20) % 2
    observed = torch.randn(4, 6, 6, generator=g)
    unk = torch.zeros(6, 6, dtype=torch.bool)
    unk[2:4, 1:5] = True
    codes = torch.randn(5, 4, 6, 6, generator=g)
    comps = torch.tensor([0, 1, 0, 1, 1])
    allowed = torch.tensor([1, 2, 3, 5, 8, 11, 13, 16])
    out, prov = nn_project_unknown(codes, comps, memory, labels, unk, observed, patch_size=3, iterations=2, allowed=allowed)
    assert torch.equal(out[:, :, ~unk], observed[None].expand(5, -1, -1, -1)[:, :, ~unk])
    assert bool((prov[:, ~unk] == -1).all()) and bool((prov[:, unk] >= 0).all())
    s, y, x = torch.nonzero(unk.expand(5, 6, 6), as_tuple=True)
    assert torch.equal(out[s, :, y, x], memory[prov[s, y, x], :, y, x])
    assert set(prov[:, unk].unique().tolist()) <= set(allowed.tolist())
    # same cluster as the draw
    assert torch.equal(labels[prov[s, y, x]], comps[s])


def test_nn_project_unknown_with_a_copy_budget_counts_the_unknown_positions():
    from lrgmm.errors import BudgetError

    g = torch.Generator().manual_seed(1)
    memory = torch.randn(20, 4, 6, 6, generator=g)
    labels = torch.arange(20) % 2
    observed = torch.randn(4, 6, 6, generator=g)
    unk = torch.zeros(6, 6, dtype=torch.bool)
    unk[2:4, 1:5] = True  # 8 unknown positions
    comps = torch.tensor([0, 1, 0, 1, 1, 0])
    allowed = torch.tensor([1, 2, 3, 5, 8, 11, 13, 16])  # cluster 0: 3 photos, cluster 1: 5
    codes = memory[[2, 3, 8, 5, 5, 16]] + 0.2 * torch.randn(6, 4, 6, 6, generator=g)  # near one photo each
    plain = nn_project_unknown(codes, comps, memory, labels, unk, observed, 3, 2, allowed)[1]
    out, prov = nn_project_unknown(codes, comps, memory, labels, unk, observed, 3, 2, allowed, max_share=0.375)
    assert torch.equal(out[:, :, ~unk], observed[None].expand(6, -1, -1, -1)[:, :, ~unk])
    assert bool((prov[:, ~unk] == -1).all())
    s, y, x = torch.nonzero(unk.expand(6, 6, 6), as_tuple=True)
    assert torch.equal(out[s, :, y, x], memory[prov[s, y, x], :, y, x])
    assert torch.equal(labels[prov[s, y, x]], comps[s]) and set(prov[:, unk].unique().tolist()) <= set(allowed.tolist())
    most = [int(torch.bincount(prov[i][unk]).max()) for i in range(6)]
    assert max(most) <= 3  # floor(0.375 * 8): counted over the unknown positions only
    assert max(int(torch.bincount(plain[i][unk]).max()) for i in range(6)) > 3  # it did bind
    # Cluster 0 has 3 allowed photos: 8 positions need 3 each, a share of 3 / 8.
    with pytest.raises(BudgetError, match=r"cluster 0 has only 3 training photo.*max_share >= 0\.375"):
        nn_project_unknown(codes, comps, memory, labels, unk, observed, 3, 1, allowed, max_share=0.3)


def test_psnr_and_ssim_closed_forms():
    from lrgmm.metrics.image_quality import psnr, ssim

    g = torch.Generator().manual_seed(0)
    a = torch.rand(2, 3, 32, 32, generator=g)
    assert float(psnr(a, a + 0.1)[0]) == pytest.approx(20.0, abs=1e-4)  # MSE = 0.01
    assert torch.allclose(ssim(a, a), torch.ones(2, dtype=torch.float64))
    # constant images: SSIM = (2 m1 m2 + C1) / (m1^2 + m2^2 + C1) (no variance term)
    c1 = 0.01**2
    expect = (2 * 0.3 * 0.6 + c1) / (0.3**2 + 0.6**2 + c1)
    assert float(ssim(torch.full((3, 20, 20), 0.3), torch.full((3, 20, 20), 0.6))) == pytest.approx(expect, rel=1e-9)
    noisy = (a + 0.2 * torch.randn(a.shape, generator=g)).clamp(0, 1)
    s = ssim(a, noisy)
    assert bool((s < 0.9).all()) and bool((s > 0).all())


def test_ssim_matches_the_2d_gaussian_window_formula():
    """The separable filter equals the direct 2-D Gaussian-window SSIM (Wang et al. 2004)."""
    import torch.nn.functional as F

    from lrgmm.metrics.image_quality import ssim

    g = torch.Generator().manual_seed(3)
    a, b = torch.rand(2, 3, 24, 24, generator=g, dtype=torch.float64), torch.rand(2, 3, 24, 24, generator=g, dtype=torch.float64)
    x1 = torch.arange(11, dtype=torch.float64) - 5
    g1 = torch.exp(-x1 * x1 / (2 * 1.5**2))
    win = (g1[:, None] * g1[None, :]) / g1.sum() ** 2
    win = win[None, None].expand(3, 1, 11, 11)

    def filt(t):
        return F.conv2d(t, win, groups=3)

    mx, my = filt(a), filt(b)
    sxx, syy, sxy = filt(a * a) - mx**2, filt(b * b) - my**2, filt(a * b) - mx * my
    ref = ((2 * mx * my + 1e-4) * (2 * sxy + 9e-4)) / ((mx**2 + my**2 + 1e-4) * (sxx + syy + 9e-4))
    assert torch.allclose(ssim(a, b), ref.flatten(1).mean(1), atol=1e-12)


def test_report_pairwise_diversity():
    import numpy as np
    from scipy.spatial.distance import pdist

    from experiments.conditional_report import _pairwise_mean

    x = np.random.default_rng(0).normal(size=(5, 7))
    assert _pairwise_mean(x) == pytest.approx(pdist(x).mean(), rel=1e-12)
    assert math.isnan(_pairwise_mean(x[:1]))
