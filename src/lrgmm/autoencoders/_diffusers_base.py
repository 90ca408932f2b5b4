"""Plumbing shared by the backends that run a diffusers model (``vqgan``, ``diffusers``).

diffusers is an optional dependency (``pip install 'lrgmm[diffusers]'``): it is imported only
when such a backend is built, so ``import lrgmm`` and the TAEF2 backend never need it, and a
missing install is an :class:`OptionalDependencyError` that names the extra.
"""

from __future__ import annotations

import torch
from torch import nn

from lrgmm.autoencoders.base import DIFFUSERS_EXTRA, Autoencoder
from lrgmm.errors import OptionalDependencyError

# Inputs may carry rounding noise from resizing; anything further out of [0, 1] is a caller bug.
_RANGE_TOL = 1e-3


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


def check_positive_int(value, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{what} must be a positive integer, got {value!r}")
    return value


class DiffusersBackend(Autoencoder):
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

    def _setup_run(self, device, batch_size) -> None:
        self.batch_size = check_positive_int(batch_size, "batch_size")
        self.device = torch.device(device)

    def _finish_model(self, model: nn.Module) -> nn.Module:
        # float32 already (built so, or loaded with torch_dtype=float32): only move it, as
        # diffusers warns about casting models with .to(dtype).
        model = model.to(self.device)
        model.eval().requires_grad_(False)
        return model

    # -- shapes -------------------------------------------------------------------------------

    def latent_shape(self, resolution: int) -> tuple[int, int, int]:
        if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution <= 0:
            raise ValueError(f"resolution must be a positive integer, got {resolution!r}")
        f = self.downscale
        if resolution % f:
            raise ValueError(
                f"{self.name} ({self.id}) needs image sides that are multiples of {f}, got "
                f"{resolution}; use e.g. {max(f, resolution // f * f)}"
            )
        return (self.latent_channels, resolution // f, resolution // f)

    # -- validation ---------------------------------------------------------------------------

    @staticmethod
    def _check_tensor(x: object, what: str, channels: int) -> torch.Tensor:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{what} must be a torch.Tensor, got {type(x).__name__}")
        if x.dim() != 4 or x.shape[1] != channels:
            raise ValueError(f"{what} must have shape (n, {channels}, H, W), got {tuple(x.shape)}")
        if not x.is_floating_point():
            raise TypeError(
                f"{what} must be floating point, got {x.dtype}"
                + (" (divide uint8 images by 255)" if x.dtype == torch.uint8 else "")
            )
        x = x.to(torch.float32)
        if x.numel() and not bool(torch.isfinite(x).all()):
            raise ValueError(f"{what} contain NaN or infinite values")
        return x

    def _check_images(self, images: object) -> torch.Tensor:
        x = self._check_tensor(images, "images", 3)
        h, w = x.shape[-2:]
        f = self.downscale
        if h % f or w % f or h == 0 or w == 0:
            raise ValueError(f"image height and width must be positive multiples of {f}, got {h}x{w}")
        if x.numel():
            lo, hi = float(x.min()), float(x.max())
            if lo < -_RANGE_TOL or hi > 1 + _RANGE_TOL:
                raise ValueError(
                    f"images must be RGB in [0, 1], got values in [{lo:.4g}, {hi:.4g}] "
                    f"(scale [0, 255] images by 1/255, [-1, 1] images by (x + 1) / 2)"
                )
            x = x.clamp(0, 1)
        return x

    def _check_latents(self, latents: object) -> torch.Tensor:
        z = self._check_tensor(latents, "latents", self.latent_channels)
        if z.shape[-2] == 0 or z.shape[-1] == 0:
            raise ValueError(f"latents must have a positive spatial size, got {tuple(z.shape)}")
        return z

    # -- running ------------------------------------------------------------------------------

    def _encode_batch(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _decode_batch(self, z: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _run(self, fn, x: torch.Tensor, out_shape: tuple[int, ...]) -> torch.Tensor:
        out = torch.empty(out_shape, dtype=torch.float32, device=x.device)
        with torch.inference_mode():
            for i in range(0, x.shape[0], self.batch_size):
                chunk = x[i : i + self.batch_size].to(self.device)
                out[i : i + chunk.shape[0]] = fn(chunk).to(device=out.device, dtype=torch.float32)
        return out

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
