"""Full-reference image quality for completions: PSNR and SSIM, batched over images.

- PSNR = 10 log10(1 / MSE) for images in [0, 1] (over all pixels and channels).
- SSIM (Wang et al., 2004): Gaussian window of 11 pixels and sigma 1.5, K1 = 0.01, K2 = 0.03,
  data range 1, computed per channel on the valid (unpadded) windows and averaged, the usual
  settings of scikit-image's ``structural_similarity(..., gaussian_weights=True)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """PSNR in dB of (..., 3, H, W) images in [0, 1]; one value per image (inf when equal)."""
    mse = ((a.double() - b.double()) ** 2).flatten(-3).mean(-1)
    return 10 * torch.log10(1.0 / mse)


def _gaussian_1d(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(x * x) / (2 * sigma * sigma))
    return g / g.sum()


def ssim(a: torch.Tensor, b: torch.Tensor, size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Mean SSIM of (n, C, H, W) (or (C, H, W)) images in [0, 1]; one value per image.
    The Gaussian window is separable: two 1-D passes (float64) instead of one 2-D one."""
    single = a.ndim == 3
    if single:
        a, b = a[None], b[None]
    n, c, h, w = a.shape
    if min(h, w) < size:
        raise ValueError(f"SSIM needs images of at least {size} px, got {h}x{w}")
    g = _gaussian_1d(size, sigma)
    gv, gh = g.view(1, 1, size, 1), g.view(1, 1, 1, size)
    x, y = a.double(), b.double()

    def filt(t):
        t = t.reshape(n * c, 1, h, w)
        t = F.conv2d(F.conv2d(t, gv), gh)
        return t.reshape(n, c, *t.shape[-2:])

    mx, my = filt(x), filt(y)
    sxx = filt(x * x) - mx * mx
    syy = filt(y * y) - my * my
    sxy = filt(x * y) - mx * my
    c1, c2 = 0.01**2, 0.03**2
    s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))
    out = s.flatten(1).mean(1)
    return out[0] if single else out
