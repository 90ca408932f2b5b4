"""Plumbing shared by the backends that run a diffusers model (``vqgan``, ``diffusers``).

diffusers is an optional dependency (``pip install 'lrgmm[diffusers]'``): it is imported only
when such a backend is built, so ``import lrgmm`` and the TAEF2 backend never need it, and a
missing install is an :class:`OptionalDependencyError` that names the extra.
"""

from __future__ import annotations

import torch
from torch import nn

from lrgmm.autoencoders.base import DIFFUSERS_EXTRA, BatchedAutoencoder
from lrgmm.errors import OptionalDependencyError

# Inputs may carry rounding noise from resizing; anything further out of [0, 1] is a caller bug.


def import_diffusers(backend: str):
    """The ``diffusers`` module, or an :class:`OptionalDependencyError` naming the extra."""
    try:
        import diffusers
    except ImportError as e:
        raise OptionalDependencyError(
            f"the {backend!r} autoencoder backend needs the diffusers package, which is not "
            f"installed ({e}); install it with: {DIFFUSERS_EXTRA}"
        ) from None
    return diffusers



class DiffusersBackend(BatchedAutoencoder):
    """An :class:`Autoencoder` around a diffusers model working on images in [-1, 1].

    Subclasses set ``self.model`` (eval mode, no gradients, on ``self.device``),
    ``self.latent_channels`` and ``self.downscale``, and implement ``_encode_batch`` (images in
    [-1, 1] -> latents) and ``_decode_batch`` (latents -> images in about [-1, 1]). This class
    checks inputs, converts [0, 1] <-> [-1, 1], batches, and clamps the output to [0, 1].

    Deterministic for a given input on a given device: no sampling anywhere, eval mode, and
    GroupNorm/attention are per sample, so batching changes results only by float rounding.
    """

    model: nn.Module
    latent_channels: int
    downscale: int

    def _finish_model(self, model: nn.Module) -> nn.Module:
        # float32 already (built so, or loaded with torch_dtype=float32): only move it, as
        # diffusers warns about casting models with .to(dtype).
        model = model.to(self.device)
        model.eval().requires_grad_(False)
        return model

    # -- running ------------------------------------------------------------------------------

    def _encode_batch(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _decode_batch(self, z: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        x = self._check_images(images)
        n, _, h, w = x.shape
        f = self.downscale
        return self._run(
            lambda c: self._encode_batch(c * 2 - 1), x, (n, self.latent_channels, h // f, w // f)
        )

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        z = self._check_latents(latents)
        n, _, h, w = z.shape
        f = self.downscale
        out = self._run(self._decode_batch, z, (n, 3, h * f, w * f))
        return out.add_(1).mul_(0.5).clamp_(0, 1)
