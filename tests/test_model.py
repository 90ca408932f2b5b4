import pytest
import torch

from lrgmm.errors import FitError, NotFittedError, ParameterError
from lrgmm.core.model import LRGMM, default_n_components


def _latents(n=40, c=8, h=6, w=6, seed=0):
    """Two groups of structured synthetic latents (low rank + noise)."""
    g = torch.Generator().manual_seed(seed)
    basis = torch.randn(2, 5, c * h * w, generator=g)
    group = torch.arange(n) % 2
    y = torch.randn(n, 5, generator=g)[:, None, :] @ basis[group]
    y = y.squeeze(1) + 10 * group[:, None] + 0.1 * torch.randn(n, c * h * w, generator=g)
    return y.reshape(n, c, h, w)


def test_default_k_follows_the_paper():
    assert default_n_components(32) == 1
    assert default_n_components(1023) == 8 and default_n_components(1024) == 8
    assert default_n_components(8192) == 64 and default_n_components(16384) == 128
    assert default_n_components(18917) == 128 and default_n_components(28000) == 128  # capped
    assert default_n_components(2) == 1


def test_sample_shapes_provenance_and_determinism():
    y = _latents()
    m = LRGMM(n_channels=4, n_components=2, patch_size=3).fit(y)
    s = m.sample(10, seed=3)
    assert s.latents.shape == (10, 8, 6, 6) and s.codes.shape == (10, 4, 6, 6)
    assert s.provenance.shape == (10, 6, 6) and s.components.shape == (10,)
    # Provenance points at training codes of the sample's own component, pixel for pixel.
    n, q, h, w = s.codes.shape
    flat_mem = m.codes_.permute(0, 2, 3, 1).reshape(len(y), h * w, q)
    copied = flat_mem[s.provenance.reshape(n, -1), torch.arange(h * w)].reshape(n, h, w, q).permute(0, 3, 1, 2)
    assert torch.equal(copied, s.codes)
    assert bool((m.labels_[s.provenance] == s.components[:, None, None]).all())
    # The decoder's latents are the copied training pixels themselves, all c channels: not their
    # projection P0*(codes), which loses the channels the projector drops.
    full = y[s.provenance.reshape(n, -1), :, torch.arange(h).repeat_interleave(w), torch.arange(w).repeat(h)]
    assert torch.equal(s.latents, full.permute(0, 2, 1).reshape(n, 8, h, w))
    assert (s.latents - m.projector_.inverse_transform(s.codes)).abs().max() > 0.01
    again = m.sample(10, seed=3)
    assert torch.equal(again.latents, s.latents) and torch.equal(again.provenance, s.provenance)
    assert not torch.equal(m.sample(10, seed=4).latents, s.latents)


def test_decoder_latents_copy_only_where_there_is_a_source():
    """Positions with provenance -1 (nothing copied: a completion's observed part) decode
    P0*(code); the others take the training latent pixel; no provenance: P0*(codes) throughout;
    a model without training latents (an old model file) decodes P0*(codes) everywhere."""
    y = _latents()
    m = LRGMM(n_channels=4, n_components=2, patch_size=3).fit(y)
    codes = m.codes_[[3, 7]].clone()
    prov = torch.full((2, 6, 6), -1, dtype=torch.long)
    prov[0, 2, 4], prov[1, 0, 0] = 11, 5
    out = m.decoder_latents(codes, prov)
    plain = m.projector_.inverse_transform(codes)
    assert torch.equal(out[0, :, 2, 4], y[11, :, 2, 4]) and torch.equal(out[1, :, 0, 0], y[5, :, 0, 0])
    keep = prov[:, None].expand_as(out) < 0
    assert torch.equal(out[keep], plain[keep])
    assert torch.equal(m.decoder_latents(codes), plain)
    m.latents_ = None
    assert torch.equal(m.decoder_latents(codes, prov), plain)


def test_plain_lr_gmm_and_lower_temperature():
    y = _latents()
    m = LRGMM(n_channels=4, n_components=2, temperature=0.1, patch_size=3).fit(y)
    plain = m.sample(6, seed=0, nn=False)
    assert plain.provenance is None
    # A lower temperature samples in fewer directions: each code lies in the span of the first
    # d_k' eigenvectors of its component.
    low = m.sample(50, seed=0, nn=False, temperature=0.01)
    mix = m.mixture_
    dims = torch.clamp(torch.floor(0.01 * mix.weights_.double() * mix.means_.shape[1]).long(), min=1)
    flat = low.codes.reshape(50, -1)
    for k in range(2):
        rows = low.components == k
        v = mix.eigenvectors_[k, : int(dims[k])]
        resid = (flat[rows] - mix.means_[k]) - (flat[rows] - mix.means_[k]) @ v.T @ v
        assert resid.abs().max() < 1e-3
    with pytest.warns(UserWarning, match="refit"):
        m.sample(2, seed=0, temperature=0.9)


def test_spread_widens_the_draws_around_their_component_mean():
    y = _latents()
    m = LRGMM(n_channels=4, n_components=2, patch_size=3, spread=1.0).fit(y)  # the paper's eq. 4
    base = m.sample(12, seed=4, nn=False)
    wide = m.sample(12, seed=4, nn=False, spread=1.5)
    assert torch.equal(wide.components, base.components)  # same draws, scaled
    mu = m.mixture_.means_[base.components].reshape(base.codes.shape)
    torch.testing.assert_close(wide.codes - mu, 1.5 * (base.codes - mu), rtol=1e-5, atol=1e-5)
    # as the model's default, and through the NN step: the same faces as asking for it
    m2 = LRGMM(n_channels=4, n_components=2, patch_size=3, spread=1.5).fit(y)
    assert torch.equal(m2.sample(12, seed=4).provenance, m.sample(12, seed=4, spread=1.5).provenance)
    assert torch.equal(m2.sample(12, seed=4, spread=1.0).codes, m.sample(12, seed=4).codes)
    # without the NN step the draws are the fitted density's (psi = 1) unless psi is asked for
    torch.testing.assert_close(m2.sample(12, seed=4, nn=False).codes, base.codes)
    torch.testing.assert_close(m2.sample(12, seed=4, nn=False, spread=1.5).codes, wide.codes)
    for bad in (0, -1.5, float("inf"), "wide", True):
        with pytest.raises(ParameterError, match="spread"):
            m.sample(2, seed=0, spread=bad)
    with pytest.raises(ParameterError, match="spread"):
        LRGMM(n_channels=4, spread=0).fit(y)


def test_fit_errors_and_unfitted():
    with pytest.raises(NotFittedError, match="not fitted"):
        LRGMM().sample(1)
    y = _latents()
    y[7, 0, 0, 0] = float("inf")
    with pytest.raises(FitError, match=r"\[7\]"):
        LRGMM(n_channels=4).fit(y)
    with pytest.raises(FitError, match="40 training codes cannot fit 30 components"):
        LRGMM(n_channels=4, n_components=30).fit(_latents())
    with pytest.raises(ValueError, match="odd"):
        LRGMM(n_channels=4, patch_size=4).fit(_latents())


def test_zero_samples():
    m = LRGMM(n_channels=4, n_components=2, patch_size=3).fit(_latents())
    s = m.sample(0, seed=0)
    assert s.latents.shape == (0, 8, 6, 6) and s.provenance.shape == (0, 6, 6)
    assert m.sample(0, seed=0, nn=False).provenance is None


def test_nn_projection_does_not_modify_its_input():
    from lrgmm.core.nn_projection import nn_project

    mem = torch.randn(10, 2, 4, 4)
    codes = torch.randn(3, 2, 4, 4)
    before = codes.clone()
    nn_project(codes, torch.zeros(3, dtype=torch.long), mem, torch.zeros(10, dtype=torch.long), 3)
    assert torch.equal(codes, before)


def _largest_counts(provenance: torch.Tensor, n_train: int) -> torch.Tensor:
    """Per face, the most latent positions taken from one training code."""
    n = provenance.shape[0]
    flat = provenance.reshape(n, -1)
    counts = torch.zeros(n, n_train, dtype=torch.long).scatter_add_(1, flat, torch.ones_like(flat))
    return counts.max(1).values


def test_copy_budget_in_sample_and_as_model_default():
    y = _latents(n=40)
    m = LRGMM(n_channels=4, n_components=2, patch_size=3, max_share=None).fit(y)
    plain = m.sample(60, seed=4)
    assert int(_largest_counts(plain.provenance, 40).max()) > 9  # without a budget some face exceeds 0.25
    s = m.sample(60, seed=4, max_share=0.25)
    assert int(_largest_counts(s.provenance, 40).max()) <= 9  # floor(0.25 * 36)
    assert torch.equal(s.components, plain.components)  # the draw is the same, only the NN step differs
    assert torch.equal(m.sample(60, seed=4, max_share=0.25).codes, s.codes)  # deterministic for a seed
    assert bool((m.labels_[s.provenance] == s.components[:, None, None]).all())
    # Off: None and 1 give today's faces bit for bit.
    assert torch.equal(m.sample(60, seed=4, max_share=1.0).codes, plain.codes)
    # The constructor's max_share is the default of sample; 1 turns it off there.
    d = LRGMM(n_channels=4, n_components=2, patch_size=3, max_share=0.25).fit(y)
    assert d.get_params()["max_share"] == 0.25
    assert torch.equal(d.sample(60, seed=4).provenance, s.provenance)
    assert torch.equal(d.sample(60, seed=4, max_share=1).provenance, plain.provenance)
    # Batches give the same faces, and the budget holds with several NN iterations.
    batches = list(d.iter_samples(60, 4, batch_size=7))
    assert torch.equal(torch.cat([b.provenance for b in batches]), s.provenance)
    s3 = m.sample(60, seed=4, max_share=0.2, nn_iterations=3)
    assert int(_largest_counts(s3.provenance, 40).max()) <= 7


def test_nn_order_in_sample_and_as_model_default():
    from lrgmm.errors import ParameterError
    from lrgmm.core.nn_projection import nn_project

    y = _latents(n=40)
    m = LRGMM(n_channels=4, n_components=2, patch_size=3, nn_order="parallel", max_share=None).fit(y)
    plain = m.sample(30, seed=5)
    raster = m.sample(30, seed=5, nn_order="raster")
    assert torch.equal(raster.components, plain.components)
    assert not torch.equal(raster.provenance, plain.provenance)  # the order changes what is copied
    # The raster faces are nn_project's raster order applied to the same draws.
    draws = m.sample(30, seed=5, nn=False, spread=m.spread).codes  # the draws the NN step starts from
    ref, ref_prov = nn_project(draws, plain.components, m.codes_, m.labels_, patch_size=3, order="raster")
    assert torch.equal(nn_project(draws, plain.components, m.codes_, m.labels_, patch_size=3)[1], plain.provenance)
    assert torch.equal(raster.provenance, ref_prov) and torch.equal(raster.codes, ref)
    # The constructor's nn_order is the default of sample, is kept by get_params, and is checked by fit.
    d = LRGMM(n_channels=4, n_components=2, patch_size=3, nn_order="raster", max_share=None).fit(y)
    assert d.get_params()["nn_order"] == "raster"
    assert torch.equal(d.sample(30, seed=5).provenance, raster.provenance)
    assert torch.equal(d.sample(30, seed=5, nn_order="parallel").provenance, plain.provenance)
    with pytest.raises(ParameterError, match="nn_order"):
        LRGMM(n_channels=4, nn_order="spiral").fit(y)
    with pytest.raises(ParameterError, match="nn_order"):
        m.sample(3, seed=0, nn_order="spiral")


def test_copy_budget_checks():
    from lrgmm.errors import BudgetError

    y = _latents(n=40)
    m = LRGMM(n_channels=4, n_components=2, patch_size=3).fit(y)
    assert m.labels_.bincount().tolist() == [20, 20]
    assert m.min_max_share() == 2 / 36  # ceil(36 / 20) positions of 36
    for bad in (0, 1.01, float("nan"), "a"):
        with pytest.raises(BudgetError, match="max_share"):
            m.sample(4, seed=0, max_share=bad)
    with pytest.raises(BudgetError, match=r"max_share >= 0\.0556"):
        m.sample(4, seed=0, max_share=0.05)
    assert m.sample(4, seed=0, max_share=0.0556).provenance is not None
    # Restricted memory (attribute sampling): 5 allowed faces of each cluster need ceil(36 / 5) / 36.
    allowed = torch.cat([(m.labels_ == 0).nonzero()[:5, 0], (m.labels_ == 1).nonzero()[:5, 0]])
    assert m.min_max_share(allowed=allowed) == 8 / 36
    with pytest.raises(BudgetError, match=r"allowed faces.*>= 0\.2223"):
        m.sample(4, 0, weights=m.mixture_.weights_, allowed=allowed, max_share=0.2)
    s = m.sample(30, 0, weights=m.mixture_.weights_, allowed=allowed, max_share=0.2223)
    assert bool(torch.isin(s.provenance, allowed).all()) and int(_largest_counts(s.provenance, 40).max()) <= 8
    # Without the NN step there is nothing to budget, so nothing to refuse.
    assert m.sample(4, seed=0, nn=False, max_share=0.05).provenance is None
    with pytest.raises(BudgetError, match="max_share"):
        LRGMM(n_components=2, max_share=2).fit(y)
    # A model's *default* budget never makes sampling fail: where a cluster (or its allowed
    # faces) cannot meet it, each photo gives at most the even split ceil(36 / m).
    d = LRGMM(n_channels=4, n_components=2, patch_size=3, max_share=0.05).fit(y)
    assert int(_largest_counts(d.sample(30, seed=0).provenance, 40).max()) <= 2  # ceil(36 / 20)
    r = d.sample(30, 0, weights=d.mixture_.weights_, allowed=allowed)
    assert bool(torch.isin(r.provenance, allowed).all()) and int(_largest_counts(r.provenance, 40).max()) <= 8
    with pytest.raises(BudgetError, match=r"max_share >= 0\.0556"):
        d.sample(4, seed=0, max_share=0.05)  # asked for explicitly: refused
