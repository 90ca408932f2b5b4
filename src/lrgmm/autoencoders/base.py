"""The small interface every autoencoder backend implements.

A backend maps RGB images in [0, 1] (float32 tensors of shape (n, 3, H, W)) to spatial latents
(n, c, h, w) and back. The pipeline only ever talks to this interface, so a new backend (a VQGAN,
a diffusers VAE) plugs in without touching the rest of the package.
"""

from __future__ import annotations

import abc

import torch

DIFFUSERS_EXTRA = "pip install 'lrgmm[diffusers]'"


class Autoencoder(abc.ABC):
    """A frozen, pretrained image autoencoder.

    Attributes every backend sets:
        name: registry name of the backend, e.g. ``"taef2"``.
        weights_sha256: sha256 of the weight files, joined, so a model file can refuse to run
            with other weights than the ones it was fitted with.
        preferred_q: number of projector channels the backend works well with (SPEC.md).
    """

    name: str
    weights_sha256: str
    preferred_q: int

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

    @abc.abstractmethod
    def latent_shape(self, resolution: int) -> tuple[int, int, int]:
        """The latent shape ``(c, h, w)`` for square images of side ``resolution``."""

    @abc.abstractmethod
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Encode ``(n, 3, H, W)`` float32 RGB in [0, 1] to ``(n, c, h, w)`` float32 latents."""

    @abc.abstractmethod
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Decode ``(n, c, h, w)`` latents to ``(n, 3, H, W)`` float32 RGB clamped to [0, 1]."""
