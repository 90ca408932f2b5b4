import pytest
import torch

from lrgmm.errors import FitError
from lrgmm.model import LRGMM, default_n_components


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
    assert default_n_components(28000) == 64
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
    # The latents are P0* of the codes.
    assert torch.allclose(s.latents, m.projector_.inverse_transform(s.codes))
    again = m.sample(10, seed=3)
    assert torch.equal(again.latents, s.latents) and torch.equal(again.provenance, s.provenance)
    assert not torch.equal(m.sample(10, seed=4).latents, s.latents)


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


def test_fit_errors_and_unfitted():
    with pytest.raises(RuntimeError, match="not fitted"):
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
    from lrgmm.nn_projection import nn_project

    mem = torch.randn(10, 2, 4, 4)
    codes = torch.randn(3, 2, 4, 4)
    before = codes.clone()
    nn_project(codes, torch.zeros(3, dtype=torch.long), mem, torch.zeros(10, dtype=torch.long), 3)
    assert torch.equal(codes, before)
