import pytest
import torch

from lrgmm.core.projector import PixelPCA


def _latents(n=20, c=8, h=4, w=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(c, c, generator=g) * torch.linspace(3, 0.1, c)
    y = torch.randn(n, h, w, c, generator=g) @ mix + torch.randn(c, generator=g)
    return y.permute(0, 3, 1, 2).contiguous()


def test_round_trip_exact_when_q_equals_c():
    y = _latents()
    p = PixelPCA(n_channels=8).fit(y)
    back = p.inverse_transform(p.transform(y))
    assert torch.allclose(back, y, atol=1e-5, rtol=0)
    assert p.explained_variance_ratio_ == pytest.approx(1.0)


def test_codes_are_whitened_and_centred():
    y = _latents(n=200)
    z = PixelPCA(n_channels=3).fit(y).transform(y)
    pix = z.permute(0, 2, 3, 1).reshape(-1, 3).double()
    assert torch.allclose(pix.mean(0), torch.zeros(3, dtype=torch.float64), atol=1e-5)
    assert torch.allclose(torch.cov(pix.T), torch.eye(3, dtype=torch.float64), atol=1e-4)


def test_truncated_round_trip_error_is_the_discarded_variance():
    y = _latents(n=200)
    for q in (2, 4, 6):
        p = PixelPCA(n_channels=q).fit(y)
        back = p.inverse_transform(p.transform(y))
        pix = (back - y).permute(0, 2, 3, 1).reshape(-1, 8).double()
        total = torch.linalg.eigvalsh(torch.cov(y.permute(0, 2, 3, 1).reshape(-1, 8).double().T))
        discarded = total.flip(0)[q:].sum()
        # Mean squared reconstruction error per pixel equals the sum of the discarded eigenvalues.
        mse = (pix * pix).sum(1).mean() * (pix.shape[0] / (pix.shape[0] - 1))
        assert float(mse) == pytest.approx(float(discarded), rel=1e-4)
        assert p.explained_variance_ratio_ == pytest.approx(1 - float(discarded / total.sum()), rel=1e-6)


def test_rejects_bad_q_and_nonfinite():
    y = _latents()
    with pytest.raises(ValueError, match="n_channels"):
        PixelPCA(n_channels=9).fit(y)
    y[0, 0, 0, 0] = float("nan")
    from lrgmm.errors import FitError

    with pytest.raises(FitError, match="NaN"):
        PixelPCA(n_channels=4).fit(y)


def test_transform_checks_channels():
    p = PixelPCA(n_channels=4).fit(_latents())
    with pytest.raises(ValueError, match="8-channel"):
        p.transform(torch.zeros(1, 7, 4, 5))
    assert p.n_parameters() == 8 + 4 * 8 + 4
