"""Per-latent-pixel PCA projector P0 and its adjoint P0* (paper eq. 1 and 2).

Every latent pixel y(p) in R^c of every training image is one PCA sample, so the projector is
fitted on N*h*w vectors and applied position by position:

    P0 (y(p)) = diag(s0)^(-1/2) V0 (y(p) - ybar)          (eq. 1)
    P0*(z(p)) = V0^T diag(s0)^(+1/2) z(p) + ybar          (eq. 2)

so the projected channels are whitened (unit variance over the training pixels). P0* o P0 is the
orthogonal projection onto the q leading principal directions: exact when q = c.
"""

from __future__ import annotations

import torch

from ..errors import FitError, ParameterError


# Latent pixels converted to float64 at a time (64 MiB): fit and transform never hold a float64
# copy of every pixel (1.2 GB for the whole 19k-photo training split).
_CHUNK_PIXELS = 1 << 20


def _pixels(latents: torch.Tensor) -> torch.Tensor:
    """(n, c, h, w) -> (n*h*w, c): one row per latent pixel."""
    n, c, h, w = latents.shape
    return latents.permute(0, 2, 3, 1).reshape(n * h * w, c)


def _chunks(latents: torch.Tensor):
    """Consecutive image slices of about ``_CHUNK_PIXELS`` latent pixels, as (rows, c) float64."""
    n, _, h, w = latents.shape
    step = max(1, _CHUNK_PIXELS // (h * w))
    for i in range(0, n, step):
        yield _pixels(latents[i : i + step]).to(torch.float64)


class PixelPCA:
    """PCA on latent pixels, used as the projector P0 of the paper.

    Parameters
    ----------
    n_channels : int
        q, the number of principal directions kept (1 <= q <= c).

    Attributes
    ----------
    mean_ : (c,) float64 tensor, ybar.
    components_ : (q, c) float64 tensor, V0 (rows are orthonormal eigenvectors).
    eigenvalues_ : (q,) float64 tensor, s0 (descending).
    explained_variance_ratio_ : float, share of the latent-pixel variance kept.
    """

    def __init__(self, n_channels: int = 16):
        self.n_channels = n_channels

    def fit(self, latents: torch.Tensor) -> "PixelPCA":
        """Fit on latents of shape (N, c, h, w)."""
        if latents.ndim != 4:
            raise ValueError(f"latents must have shape (N, c, h, w), got {tuple(latents.shape)}")
        c = latents.shape[1]
        q = int(self.n_channels)
        if not 1 <= q <= c:
            raise ParameterError(f"n_channels (q) must be in [1, {c}] for {c}-channel latents, got {q}")
        if not torch.isfinite(latents).all():
            raise FitError("latents contain NaN or inf; re-encode the images or drop the bad ones")
        # float64: the covariance of ~10^5..10^7 pixels is summed, and its small eigenvalues are
        # inverted by eq. 1. Two passes over chunks (mean, then centred scatter).
        n_pix = latents.shape[0] * latents.shape[2] * latents.shape[3]
        mean = sum(x.sum(0) for x in _chunks(latents)) / n_pix
        cov = torch.zeros(c, c, dtype=torch.float64)
        for x in _chunks(latents):
            xc = x - mean
            cov += xc.T @ xc
        cov /= max(n_pix - 1, 1)
        evals, evecs = torch.linalg.eigh(cov)
        evals, evecs = evals.flip(0), evecs.flip(1)
        total = evals.clamp_min(0).sum()
        # A direction with (numerically) zero variance cannot be whitened; floor it so P0 stays
        # finite. Only degenerate inputs (constant channels) reach the floor.
        floor = max(float(total) * 1e-12, 1e-30)
        self.mean_ = mean
        self.components_ = evecs[:, :q].T.contiguous()
        self.eigenvalues_ = evals[:q].clamp_min(floor)
        self.explained_variance_ratio_ = float(evals[:q].clamp_min(0).sum() / total) if total > 0 else 1.0
        return self

    @property
    def in_channels(self) -> int:
        return self.components_.shape[1]

    def transform(self, latents: torch.Tensor) -> torch.Tensor:
        """P0 (eq. 1): (n, c, h, w) latents -> (n, q, h, w) float32 codes."""
        n, c, h, w = latents.shape
        if c != self.in_channels:
            raise ValueError(f"projector was fitted on {self.in_channels}-channel latents, got {c}")
        q = self.components_.shape[0]
        scale = self.components_.T / self.eigenvalues_.sqrt()  # (c, q)
        out = torch.empty(n, q, h, w, dtype=torch.float32)
        start = 0
        for x in _chunks(latents):
            m = x.shape[0] // (h * w)
            z = (x - self.mean_) @ scale
            out[start : start + m] = z.reshape(m, h, w, q).permute(0, 3, 1, 2)
            start += m
        return out

    def inverse_transform(self, codes: torch.Tensor) -> torch.Tensor:
        """P0* (eq. 2): (n, q, h, w) codes -> (n, c, h, w) float32 latents."""
        n, q, h, w = codes.shape
        if q != self.components_.shape[0]:
            raise ValueError(f"projector has q={self.components_.shape[0]} channels, got codes with {q}")
        z = _pixels(codes).to(torch.float64) * self.eigenvalues_.sqrt()
        y = z @ self.components_ + self.mean_
        return y.reshape(n, h, w, self.in_channels).permute(0, 3, 1, 2).to(torch.float32).contiguous()

    def n_parameters(self) -> int:
        """Mean plus q eigenvectors of size c plus q eigenvalues."""
        q, c = self.components_.shape
        return c + q * c + q
