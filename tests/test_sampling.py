import pytest
import torch

from lrgmm.core.sampling import sample_components, sample_low_rank


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


def test_spread_scales_every_deviation_from_the_mean_exactly():
    means, vecs, vals = _component_params()
    comps = torch.tensor([0, 1, 1, 0, 1])
    dims = torch.tensor([4, 2])
    base = sample_low_rank(means, vecs, vals, dims, comps, torch.Generator().manual_seed(3))
    for psi in (0.5, 1.5, 2.0):
        z = sample_low_rank(means, vecs, vals, dims, comps, torch.Generator().manual_seed(3), spread=psi)
        # same eps, so z - c_k is psi times the psi = 1 deviation (covariance psi^2 V^T diag(s) V)
        torch.testing.assert_close(z - means[comps], psi * (base - means[comps]), rtol=1e-12, atol=1e-12)
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="spread"):
            sample_low_rank(means, vecs, vals, dims, comps, torch.Generator(), spread=bad)


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


# ------------------------------------------------------------------ noise drawn batch by batch


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_normal_stream_is_one_randn_call_whatever_the_pieces(dtype):
    """Batched sampling hands out the noise of one big ``randn`` in pieces: every split (pieces
    of 1, 3, 17, 64 rows of r values, random ones, totals under 16) gives that call bit for bit,
    and leaves the generator where the call leaves it."""
    import random

    from lrgmm.core.sampling import NormalStream

    rnd = random.Random(0)
    for r in (1, 3, 7, 16, 33):
        for n in (1, 2, 5, 17, 130):
            for rows in (1, 3, 17, 64, None):
                g = torch.Generator().manual_seed(11)
                full = torch.randn(n, r, generator=g, dtype=dtype)
                g_stream = torch.Generator().manual_seed(11)
                stream = NormalStream(n * r, g_stream, dtype)
                parts, left = [], n
                while left:
                    k = min(left, rows if rows else rnd.randint(1, 40))
                    parts.append(stream.take(k * r).reshape(k, r))
                    left -= k
                assert torch.equal(torch.cat(parts), full), (r, n, rows)
                assert torch.equal(g_stream.get_state(), g.get_state()), (r, n, rows)
    with pytest.raises(ValueError, match="left in the stream"):
        NormalStream(4, torch.Generator(), dtype).take(5)
