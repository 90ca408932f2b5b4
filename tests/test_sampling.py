import torch

from lrgmm.sampling import sample_components, sample_low_rank


def _component_params(d=12, r=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(2, d, generator=g, dtype=torch.float64) * 5
    vecs = torch.zeros(2, r, d, dtype=torch.float64)
    vals = torch.zeros(2, r, dtype=torch.float64)
    for k in range(2):
        q, _ = torch.linalg.qr(torch.randn(d, r, generator=g, dtype=torch.float64))
        vecs[k] = q.T
        vals[k] = torch.tensor([4.0, 2.0, 1.0, 0.5], dtype=torch.float64)
    return means, vecs, vals


def test_empirical_covariance_matches_low_rank_model():
    means, vecs, vals = _component_params()
    dims = torch.tensor([4, 2])
    n = 200_000
    comps = torch.cat([torch.zeros(n, dtype=torch.long), torch.ones(n, dtype=torch.long)])
    z = sample_low_rank(means, vecs, vals, dims, comps, torch.Generator().manual_seed(1))
    for k in range(2):
        zk = z[comps == k]
        d = int(dims[k])
        expected = vecs[k, :d].T @ torch.diag(vals[k, :d]) @ vecs[k, :d]
        assert torch.allclose(zk.mean(0), means[k], atol=0.02)
        # Monte Carlo error of a covariance entry ~ sqrt(2/n) * scale (~0.01 here).
        assert (torch.cov(zk.T) - expected).abs().max() < 0.04
        # Samples stay in the span of the d_k leading eigenvectors: rank d_k exactly.
        resid = (zk - means[k]) - (zk - means[k]) @ vecs[k, :d].T @ vecs[k, :d]
        assert resid.abs().max() < 1e-9


def test_components_follow_weights_and_seed():
    w = torch.tensor([0.7, 0.2, 0.1])
    c = sample_components(w, 100_000, torch.Generator().manual_seed(0))
    freq = torch.bincount(c, minlength=3).double() / c.numel()
    assert torch.allclose(freq, w.double(), atol=0.01)
    c2 = sample_components(w, 100_000, torch.Generator().manual_seed(0))
    assert torch.equal(c, c2)
    assert sample_components(w, 0, torch.Generator()).numel() == 0


def test_same_seed_same_codes_and_dims_checked():
    means, vecs, vals = _component_params()
    comps = torch.tensor([0, 1, 1, 0])
    a = sample_low_rank(means, vecs, vals, torch.tensor([3, 3]), comps, torch.Generator().manual_seed(5))
    b = sample_low_rank(means, vecs, vals, torch.tensor([3, 3]), comps, torch.Generator().manual_seed(5))
    assert torch.equal(a, b)
    import pytest

    with pytest.raises(ValueError, match="exceed"):
        sample_low_rank(means, vecs, vals, torch.tensor([5, 3]), comps, torch.Generator())
