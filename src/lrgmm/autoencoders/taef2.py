"""TAEF2: the tiny autoencoder distilled from the FLUX.2 VAE (madebyollin/taesd, MIT).

8x spatial down-sampling to 32 latent channels with 1.3M parameters per half, so it runs on a
laptop CPU. The networks are written here from the state-dict layout in
``shared/weights/taef2/SOURCE.md``; module indices inside the ``nn.Sequential`` containers are
what make the stored keys (``3.conv.0.weight``, ``11.pool.1.bias``...) line up, so the order of
layers below must not change.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from torch import nn

from lrgmm.autoencoders.base import BatchedAutoencoder
from lrgmm.errors import WeightsError
from lrgmm.io.weights import find_weights, sha256_file

__all__ = ["TAEF2", "build_encoder", "build_decoder"]

BACKEND = "taef2"
ENCODER_FILE = "taef2_encoder.pth"
DECODER_FILE = "taef2_decoder.pth"
LATENT_CHANNELS = 32
DOWNSCALE = 8


def _conv(a: int, b: int, **kwargs) -> nn.Conv2d:
    return nn.Conv2d(a, b, 3, padding=1, **kwargs)


class _Clamp(nn.Module):
    """Soft clamp of latents to (-3, 3): keeps decoding sane for sampled, out-of-range latents."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(x / 3) * 3


class _Block(nn.Module):
    """Residual block; with ``pool=True`` the TAEF2 mid-block that first adds a 1x1 MLP branch."""

    def __init__(self, n_in: int, n_out: int, pool: bool = False) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            _conv(n_in, n_out), nn.ReLU(), _conv(n_out, n_out), nn.ReLU(), _conv(n_out, n_out)
        )
        # Registered only when used so the state-dict keys match the stored ones exactly.
        self.pool = (
            nn.Sequential(
                nn.Conv2d(n_in, 4 * n_in, 1, bias=False),
                nn.GroupNorm(4, 4 * n_in),
                nn.ReLU(),
                nn.Conv2d(4 * n_in, n_in, 1, bias=False),
            )
            if pool
            else None
        )
        self.skip = nn.Conv2d(n_in, n_out, 1, bias=False) if n_in != n_out else nn.Identity()
        self.fuse = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pool is not None:
            x = x + self.pool(x)
        return self.fuse(self.conv(x) + self.skip(x))


def build_encoder() -> nn.Sequential:
    """Encoder: (n, 3, H, W) in [0, 1] -> (n, 32, H/8, W/8)."""
    c = 64
    return nn.Sequential(
        _conv(3, c), _Block(c, c),                                                  # 0-1
        _conv(c, c, stride=2, bias=False), _Block(c, c), _Block(c, c), _Block(c, c),  # 2-5
        _conv(c, c, stride=2, bias=False), _Block(c, c), _Block(c, c), _Block(c, c),  # 6-9
        _conv(c, c, stride=2, bias=False),                                          # 10
        _Block(c, c, pool=True), _Block(c, c, pool=True), _Block(c, c, pool=True),  # 11-13
        _conv(c, LATENT_CHANNELS),                                                  # 14
    )  # fmt: skip


def build_decoder() -> nn.Sequential:
    """Decoder: (n, 32, h, w) -> (n, 3, 8h, 8w), roughly in [0, 1] (clamped by the caller)."""
    c = 64
    return nn.Sequential(
        _Clamp(), _conv(LATENT_CHANNELS, c), nn.ReLU(),                             # 0-2
        _Block(c, c, pool=True), _Block(c, c, pool=True), _Block(c, c, pool=True),  # 3-5
        nn.Upsample(scale_factor=2), _conv(c, c, bias=False),                       # 6-7
        _Block(c, c), _Block(c, c), _Block(c, c),                                   # 8-10
        nn.Upsample(scale_factor=2), _conv(c, c, bias=False),                       # 11-12
        _Block(c, c), _Block(c, c), _Block(c, c),                                   # 13-15
        nn.Upsample(scale_factor=2), _conv(c, c, bias=False),                       # 16-17
        _Block(c, c), _conv(c, 3),                                                  # 18-19
    )  # fmt: skip


def _load_into(module: nn.Module, path: Path) -> None:
    """Load an fp16 state dict into a float32 module; strict so a layout slip fails loudly."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a zip/pickle error in a file whose hash matched: disk trouble
        raise WeightsError(f"cannot read weight file {path}: {e}") from e
    state = {k: v.float() for k, v in state.items()}
    module.load_state_dict(state, strict=True)


class TAEF2(BatchedAutoencoder):
    """The TAEF2 backend: RGB in [0, 1] <-> 32 x H/8 x W/8 latents, eval mode, no gradients.

    Weights are located with :func:`lrgmm.io.weights.find_weights` (explicit path, then
    ``$LRGMM_WEIGHTS``, the per-user cache, a checkout's ``shared/`` folder) and sha256-checked;
    nothing is downloaded here.

    ``weights_sha256`` is ``sha256(encoder_hex + decoder_hex)`` over the two files' hex digests
    as ASCII, so it changes if either half changes and does not depend on file paths.

    Results are deterministic on CPU for a given input (fixed weights, no dropout, no sampling);
    the network has no batch-coupled layers (GroupNorm is per sample), so splitting into batches
    of ``batch_size`` changes results only by float rounding.
    """

    name = BACKEND
    preferred_q = 16
    channels_last = True
    latent_channels = LATENT_CHANNELS
    downscale = DOWNSCALE
    # command-line option -> keyword argument (see lrgmm.autoencoders.backend_options)
    option_names = {"weights": "weights_dir"}

    def __init__(
        self,
        encoder_path: str | Path | None = None,
        decoder_path: str | Path | None = None,
        weights_dir: str | Path | None = None,
        device: str | torch.device = "cpu",
        batch_size: int = 8,
        precision: str = "fp32",
    ) -> None:
        self._setup_run(device, batch_size, precision)

        enc_file = find_weights(BACKEND, ENCODER_FILE, encoder_path or weights_dir)
        dec_file = find_weights(BACKEND, DECODER_FILE, decoder_path or weights_dir)
        self.encoder_path, self.decoder_path = enc_file, dec_file
        joined = sha256_file(enc_file) + sha256_file(dec_file)
        self.weights_sha256 = hashlib.sha256(joined.encode("ascii")).hexdigest()

        self.encoder = build_encoder()
        self.decoder = build_decoder()
        _load_into(self.encoder, enc_file)
        _load_into(self.decoder, dec_file)
        for net in (self.encoder, self.decoder):
            net.eval().requires_grad_(False).to(self.device, memory_format=torch.channels_last)

    def __repr__(self) -> str:
        return (f"TAEF2(id={self.id!r}, device={str(self.device)!r}, batch_size={self.batch_size}, "
                f"precision={self.precision!r})")

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        x = self._check_images(images)
        n, _, h, w = x.shape
        return self._run(self.encoder, x, (n, LATENT_CHANNELS, h // DOWNSCALE, w // DOWNSCALE))

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        z = self._check_latents(latents)
        n, _, h, w = z.shape
        out = self._run(self.decoder, z, (n, 3, h * DOWNSCALE, w * DOWNSCALE))
        return out.clamp_(0, 1)
