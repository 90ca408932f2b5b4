"""A fake autoencoder for tests: fixed linear maps, no weight file, same interface as TAEF2.

It lets the pipeline, model files, the command line and the studio run where the TAEF2 weights
are not available (a fresh clone, CI without the shared folder), and it is small enough to reason
about exactly.

Encoder: each 8x8 RGB patch (192 values, centred on 0.5) is projected on 32 orthonormal patch
patterns: the lowest 2-D DCT-II frequencies (the order JPEG uses), 20 of the luma and 6 of each
chroma axis of an orthonormal colour basis, then mixed by a fixed Householder reflection drawn
from a seeded generator, so that latent channels are not sorted by variance as a real encoder's
are not. The patch grid is (H/8, W/8) with 32 channels: TAEF2's latent shape.

Decoder: the transpose, i.e. the same patterns put back, plus 0.5, clamped to [0, 1]. As the 32
patterns are orthonormal, ``encode(decode(z)) == z`` (up to float rounding) whenever the decoded
image is inside [0, 1], and ``decode(encode(x))`` is the orthogonal projection of every patch on
the patterns: a blurred copy of the photo. Built from cosines and one seeded draw, the
same on every run.

Not a model of faces: faces generated through it are blurry. Use it to test code paths, not
image quality.
"""

from __future__ import annotations

import hashlib
import math

import torch

from lrgmm.autoencoders.base import BatchedAutoencoder

__all__ = ["FakeAutoencoder", "patch_patterns"]

BACKEND = "fake"
LATENT_CHANNELS = 32
DOWNSCALE = 8
LUMA, CHROMA = 20, 6  # DCT frequencies kept per colour axis: 20 + 6 + 6 = 32
MIX_SEED = 0  # seed of the Householder vector that mixes the channels
# Bump when the patterns change: it is part of the backend's id, so old cached latents and model
# files made with other patterns are refused instead of being silently misread.
VERSION = "fake-dct-v1"


def _dct_frequencies(count: int, size: int = DOWNSCALE) -> list[tuple[int, int]]:
    """The ``count`` lowest (u, v) frequencies in zigzag order: by u + v, then by u."""
    pairs = [(u, v) for u in range(size) for v in range(size)]
    return sorted(pairs, key=lambda uv: (uv[0] + uv[1], uv[0]))[:count]


def _dct_basis(u: int, v: int, size: int = DOWNSCALE) -> torch.Tensor:
    """The orthonormal 2-D DCT-II pattern (size, size) of frequency (u, v), float64."""
    k = torch.arange(size, dtype=torch.float64)

    def axis(f: int) -> torch.Tensor:
        scale = math.sqrt((1 if f == 0 else 2) / size)
        return scale * torch.cos(math.pi * (2 * k + 1) * f / (2 * size))

    return torch.outer(axis(u), axis(v))


def patch_patterns(seed: int = MIX_SEED) -> torch.Tensor:
    """The encoder's (32, 3 * 8 * 8) matrix, float64, with orthonormal rows (module docstring).

    Rows before mixing: for each colour axis (luma (1, 1, 1)/sqrt 3, then (1, -1, 0)/sqrt 2 and
    (1, 1, -2)/sqrt 6), its kept DCT patterns; a row is the outer product of the colour axis and
    the pattern, flattened as (channel, y, x). The Householder reflection I - 2 v v^T / v^T v is
    orthogonal, so the mixed rows stay orthonormal."""
    colours = torch.tensor(
        [[1, 1, 1], [1, -1, 0], [1, 1, -2]], dtype=torch.float64
    ) / torch.tensor([math.sqrt(3), math.sqrt(2), math.sqrt(6)], dtype=torch.float64)[:, None]
    rows = []
    for colour, count in zip(colours, (LUMA, CHROMA, CHROMA)):
        for u, v in _dct_frequencies(count):
            rows.append((colour[:, None, None] * _dct_basis(u, v)).reshape(-1))
    basis = torch.stack(rows)  # (32, 192)
    v = torch.randn(LATENT_CHANNELS, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    householder = torch.eye(LATENT_CHANNELS, dtype=torch.float64) - 2 * torch.outer(v, v) / (v @ v)
    return householder @ basis


class FakeAutoencoder(BatchedAutoencoder):
    """The ``fake`` backend: RGB in [0, 1] <-> 32 x H/8 x W/8 latents through fixed orthonormal
    patch patterns (module docstring). Deterministic, no weights, no download.

    ``weights_sha256`` hashes the pattern version and mixing seed, so the id (``fake:...``) is
    the same on every machine and changes when the patterns do.
    """

    name = BACKEND
    preferred_q = 16
    latent_channels = LATENT_CHANNELS
    downscale = DOWNSCALE

    def __init__(self, device: str | torch.device = "cpu", batch_size: int = 8, precision: str = "fp32") -> None:
        self._setup_run(device, batch_size, precision)
        self.patterns = patch_patterns().to(torch.float32)  # (32, 192), orthonormal rows
        self.weights_sha256 = hashlib.sha256(f"{VERSION}:seed={MIX_SEED}".encode("ascii")).hexdigest()

    def __repr__(self) -> str:
        return f"FakeAutoencoder(id={self.id!r}, batch_size={self.batch_size})"

    def _encode(self, x: torch.Tensor) -> torch.Tensor:
        n, _, H, W = x.shape
        f = DOWNSCALE
        patches = (x - 0.5).reshape(n, 3, H // f, f, W // f, f).permute(0, 2, 4, 1, 3, 5)
        patches = patches.reshape(n, H // f, W // f, 3 * f * f)
        return (patches @ self.patterns.to(x.device).T).permute(0, 3, 1, 2)

    def _decode(self, z: torch.Tensor) -> torch.Tensor:
        n, _, h, w = z.shape
        f = DOWNSCALE
        patches = z.permute(0, 2, 3, 1) @ self.patterns.to(z.device)  # (n, h, w, 192)
        x = patches.reshape(n, h, w, 3, f, f).permute(0, 3, 1, 4, 2, 5).reshape(n, 3, h * f, w * f)
        return x + 0.5

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        x = self._check_images(images)
        n, _, h, w = x.shape
        return self._run(self._encode, x, (n, LATENT_CHANNELS, h // DOWNSCALE, w // DOWNSCALE))

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        z = self._check_latents(latents)
        n, _, h, w = z.shape
        return self._run(self._decode, z, (n, 3, h * DOWNSCALE, w * DOWNSCALE)).clamp_(0, 1)
