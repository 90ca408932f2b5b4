"""The small interface every autoencoder backend implements.

A backend maps RGB images in [0, 1] (float32 tensors of shape (n, 3, H, W)) to spatial latents
(n, c, h, w) and back. The pipeline only ever talks to this interface, so a new backend (a VQGAN,
a diffusers VAE) plugs in without touching the rest of the package.
"""

from __future__ import annotations

import abc

import torch

from lrgmm.autoencoders.precision import autocast, resolve_precision
from lrgmm.errors import ParameterError

DIFFUSERS_EXTRA = "pip install 'lrgmm[diffusers]'"

# Inputs may carry rounding noise from resizing; anything further out of [0, 1] is a caller bug
# (e.g. images in [0, 255] or [-1, 1]) and is refused rather than silently clamped.
_RANGE_TOL = 1e-3


def check_positive_int(value, what: str) -> int:
    """``value`` if it is an int >= 1 (not a bool), else a ParameterError naming ``what``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ParameterError(f"{what} must be a positive integer, got {value!r}")
    return value


class Autoencoder(abc.ABC):
    """A frozen, pretrained image autoencoder.

    Attributes every backend sets:
        name: registry name of the backend, e.g. ``"taef2"``.
        weights_sha256: sha256 of the weight files, joined, so a model file can refuse to run
            with other weights than the ones it was fitted with.
        preferred_q: number of projector channels the backend works well with (SPEC.md).
        precision: the arithmetic it runs in, ``"fp32"`` or ``"bf16"``
            (``lrgmm.autoencoders.precision``; "auto" is resolved when the backend is built).
    """

    name: str
    weights_sha256: str
    preferred_q: int
    precision: str = "fp32"

    # Keys of ``config()`` that say where the weights are (paths), not how the backend behaves:
    # a model loaded with an explicitly given backend may differ from the recorded one there.
    location_keys: tuple[str, ...] = ()
    # The command line's generic options this backend takes -> its keyword arguments, e.g.
    # {"weights": "checkpoint"} (see lrgmm.autoencoders.backend_options).
    option_names: dict[str, str] = {}

    def config(self) -> dict:
        """JSON-able keyword arguments that rebuild this backend:
        ``get_autoencoder(self.name, **self.config())`` gives the same encoder and decoder.

        Recorded in model files, so ``FacePipeline.load`` can rebuild a backend that needs more
        than its name (a checkpoint path, a config, decoding options). The default, ``{}``,
        suits backends that find their weights themselves (TAEF2)."""
        return {}

    @property
    def id(self) -> str:
        """A stable identifier of backend + weights, used in cache keys and model files."""
        return f"{self.name}:{self.weights_sha256[:16]}"

    @property
    def latent_key(self) -> str:
        """The latent cache's key for this encoder: ``id``, plus ``+bf16`` when it encodes in
        bf16, so latents of the two precisions are never mixed (fp32 keys are plain ``id``s)."""
        return self.id if self.precision == "fp32" else f"{self.id}+{self.precision}"

    @abc.abstractmethod
    def latent_shape(self, resolution: int) -> tuple[int, int, int]:
        """The latent shape ``(c, h, w)`` for square images of side ``resolution``."""

    @abc.abstractmethod
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Encode ``(n, 3, H, W)`` float32 RGB in [0, 1] to ``(n, c, h, w)`` float32 latents."""

    @abc.abstractmethod
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Decode ``(n, c, h, w)`` latents to ``(n, 3, H, W)`` float32 RGB clamped to [0, 1]."""


class BatchedAutoencoder(Autoencoder):
    """An autoencoder with a fixed down-sampling factor and latent channel count, run in batches.

    Subclasses set ``latent_channels`` and ``downscale`` and call ``_setup_run`` (device, batch
    size, precision); this class gives them the latent shape, the input checks (clear errors for
    wrong shapes, dtypes, ranges and non-finite values) and the batched, gradient-free loop, run
    in the backend's precision. A backend whose networks are convolutional sets
    ``channels_last``: its batches then go in NHWC, which oneDNN's convolutions run about 1.6x
    faster on CPU than NCHW at the same fp32 result up to rounding (BENCHMARKS.md).
    """

    latent_channels: int
    downscale: int
    batch_size: int
    device: torch.device
    channels_last: bool = False

    def _setup_run(self, device, batch_size, precision) -> None:
        """Check and store the run options every backend takes."""
        self.batch_size = check_positive_int(batch_size, "batch_size")
        self.device = torch.device(device)
        self.precision = resolve_precision(precision, self.device)

    def latent_shape(self, resolution: int) -> tuple[int, int, int]:
        if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution <= 0:
            raise ParameterError(f"resolution must be a positive integer, got {resolution!r}")
        f = self.downscale
        if resolution % f:
            raise ParameterError(
                f"{self.name} ({self.id}) needs image sides that are multiples of {f}, got "
                f"{resolution}; use e.g. {max(f, resolution // f * f)}"
            )
        return (self.latent_channels, resolution // f, resolution // f)

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

    def _run(self, fn, x: torch.Tensor, out_shape: tuple[int, ...]) -> torch.Tensor:
        """Apply ``fn`` in batches of ``batch_size`` on ``device`` in the backend's precision;
        float32 result on x's device."""
        out = torch.empty(out_shape, dtype=torch.float32, device=x.device)
        layout = torch.channels_last if self.channels_last else torch.contiguous_format
        with torch.inference_mode(), autocast(self.precision, self.device):
            for i in range(0, x.shape[0], self.batch_size):
                chunk = x[i : i + self.batch_size].to(self.device).contiguous(memory_format=layout)
                out[i : i + chunk.shape[0]] = fn(chunk).to(device=out.device, dtype=torch.float32)
        return out
