"""Small autoencoders for the backend tests, built and saved the way their owners do it.

- A VQGAN made with taming-transformers' own modules (PyPI ``taming-transformers-rom1504``:
  ``Encoder``, ``Decoder``, ``VectorQuantizer2``, wired as taming's ``VQModel`` wires them), saved
  as taming's Lightning checkpoints are: ``{"state_dict": ..., "callbacks": {ModelCheckpoint: ...},
  "optimizer_states": ...}`` with the training-only ``loss.*`` keys, plus its YAML config. The
  ``ModelCheckpoint`` class lives in a stand-in ``pytorch_lightning`` module that exists only
  while saving, so loading proves Lightning is not needed.
- A diffusers ``AutoencoderKL`` and ``VQModel`` saved with ``save_pretrained``.

Weights are random (fixed seeds), with GroupNorm affine parameters and the codebook perturbed
so that no layer is an identity and re-quantisation really changes latents.
"""

from __future__ import annotations

import contextlib
import shutil
import sys
import types
from pathlib import Path

import torch
from torch import nn

N_FACES_SMALL = 16
# Working resolution of the end-to-end tests: small latents keep them fast.
RESOLUTION = 32

# taming's layout (configs/*.yaml), scaled down: f = 4, attention at two levels (16 and 8 px),
# two ResnetBlocks per level so block indices, shortcuts and attention lists are all exercised.
SMALL_VQGAN_CONFIG = {
    "model": {
        "base_learning_rate": 4.5e-6,
        "target": "taming.models.vqgan.VQModel",
        "params": {
            "embed_dim": 8,
            "n_embed": 64,
            "ddconfig": {
                "double_z": False,
                "z_channels": 16,
                "resolution": 32,
                "in_channels": 3,
                "out_ch": 3,
                "ch": 32,
                "ch_mult": [1, 2, 2],
                "num_res_blocks": 2,
                "attn_resolutions": [16, 8],
                "dropout": 0.0,
            },
            "lossconfig": {
                "target": "taming.modules.losses.vqperceptual.VQLPIPSWithDiscriminator",
                "params": {"disc_conditional": False, "disc_in_channels": 3, "disc_start": 10000},
            },
        },
    }
}


def small_faces(utkface_images: list[Path], dest: Path, n: int = N_FACES_SMALL) -> Path:
    """Copies of ``n`` faces spread evenly over the sorted folder, in ``dest``."""
    dest.mkdir(parents=True, exist_ok=True)
    step = len(utkface_images) / n
    for i in range(n):
        p = utkface_images[int(i * step)]
        shutil.copyfile(p, dest / p.name)
    return dest


def _perturb(module: nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if "norm" in name:  # GroupNorm weight 1 / bias 0 by default
                p.add_(0.2 * torch.randn(p.shape, generator=g))


# --------------------------------------------------------------------------------------------
# taming VQGAN


class TamingVQ(nn.Module):
    """taming's ``VQModel`` minus Lightning and the loss: the same submodules under the same
    attribute names, so ``state_dict()`` keys are taming's."""

    def __init__(self, params: dict):
        from taming.modules.diffusionmodules.model import Decoder, Encoder
        from taming.modules.vqvae.quantize import VectorQuantizer2

        super().__init__()
        dd = params["ddconfig"]
        with contextlib.redirect_stdout(None):  # taming's Decoder prints the z shape
            self.encoder = Encoder(**dd)
            self.decoder = Decoder(**dd)
        self.quantize = VectorQuantizer2(params["n_embed"], params["embed_dim"], beta=0.25)
        self.quant_conv = nn.Conv2d(dd["z_channels"], params["embed_dim"], 1)
        self.post_quant_conv = nn.Conv2d(params["embed_dim"], dd["z_channels"], 1)

    # taming.models.vqgan.VQModel.encode / decode, images in [-1, 1]
    def encode_pre_quant(self, x: torch.Tensor) -> torch.Tensor:
        return self.quant_conv(self.encoder(x))

    def decode(self, z: torch.Tensor, requantize: bool) -> torch.Tensor:
        if requantize:
            z = self.quantize(z)[0]
        return self.decoder(self.post_quant_conv(z))


def build_taming_vqgan(config: dict = SMALL_VQGAN_CONFIG, seed: int = 0) -> TamingVQ:
    torch.manual_seed(seed)
    model = TamingVQ(config["model"]["params"]).eval()
    _perturb(model, seed)
    with torch.no_grad():  # taming initialises the codebook in +-1/n_embed: spread it out
        model.quantize.embedding.weight.normal_(0, 0.5, generator=torch.Generator().manual_seed(seed + 2))
    return model


@contextlib.contextmanager
def fake_lightning():
    """A stand-in ``pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint`` importable only
    inside the block (pickle must find the class to save it); removed afterwards."""
    names = ["pytorch_lightning", "pytorch_lightning.callbacks", "pytorch_lightning.callbacks.model_checkpoint"]
    saved = {n: sys.modules.get(n) for n in names}
    mods = {n: types.ModuleType(n) for n in names}

    class ModelCheckpoint:
        def __init__(self):
            self.monitor = "val/rec_loss"
            self.best_model_score = torch.tensor(0.123)
            self.best_model_path = "logs/checkpoints/last.ckpt"

    ModelCheckpoint.__module__ = names[-1]
    ModelCheckpoint.__qualname__ = "ModelCheckpoint"
    mods[names[-1]].ModelCheckpoint = ModelCheckpoint
    sys.modules.update(mods)
    try:
        yield ModelCheckpoint
    finally:
        for n, m in saved.items():
            if m is None:
                sys.modules.pop(n, None)
            else:
                sys.modules[n] = m


def taming_state_dict(model: TamingVQ, seed: int = 0) -> dict[str, torch.Tensor]:
    """The model's keys plus training-only ``loss.*`` keys, as in a real taming checkpoint."""
    g = torch.Generator().manual_seed(seed + 3)
    sd = dict(model.state_dict())
    sd["loss.discriminator.main.0.weight"] = torch.randn(64, 3, 4, 4, generator=g)
    sd["loss.discriminator.main.0.bias"] = torch.randn(64, generator=g)
    sd["loss.perceptual_loss.lin0.model.1.weight"] = torch.randn(1, 64, 1, 1, generator=g)
    sd["loss.logvar"] = torch.zeros(())
    return sd


def save_lightning_checkpoint(state: dict, path: Path, extra: dict | None = None) -> Path:
    """``state`` saved the way PyTorch Lightning 1.x saved taming's checkpoints."""
    import numpy as np

    with fake_lightning() as ModelCheckpoint:
        ckpt = {
            "epoch": 12,
            "global_step": 34567,
            "pytorch-lightning_version": "1.0.8",
            # Lightning 1.0 keyed callback states by the callback's class
            "callbacks": {ModelCheckpoint: {"best_model_score": np.float64(0.123), "dirpath": "logs"}},
            "checkpoint_callback": ModelCheckpoint(),
            "optimizer_states": [{"state": {0: {"step": 10, "exp_avg": torch.zeros(3)}}, "param_groups": [{"lr": 4.5e-6}]}],
            "lr_schedulers": [],
            "state_dict": state,
            **(extra or {}),
        }
        torch.save(ckpt, path)
    return path


def write_yaml(config: dict, path: Path) -> Path:
    import yaml

    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


# A function a malicious checkpoint asks the unpickler to call: it must never run.
MARKER_NAME = "code_ran.txt"


def leave_marker(folder: str) -> None:
    Path(folder, MARKER_NAME).write_text("the checkpoint ran code")


class RunsCodeWhenUnpickled:
    """Pickles as ``leave_marker(folder)``: loading it the ordinary way would call it."""

    def __init__(self, folder: Path):
        self.folder = str(folder)

    def __reduce__(self):
        return (leave_marker, (self.folder,))


# --------------------------------------------------------------------------------------------
# diffusers models

SMALL_KL_KWARGS = {
    "down_block_types": ("DownEncoderBlock2D", "DownEncoderBlock2D"),
    "up_block_types": ("UpDecoderBlock2D", "UpDecoderBlock2D"),
    "block_out_channels": (32, 64),
    "layers_per_block": 1,
    "latent_channels": 4,
    "sample_size": 32,
    "scaling_factor": 0.5,
    "shift_factor": 0.1,
}

SMALL_VQ_KWARGS = {
    "down_block_types": ("DownEncoderBlock2D", "AttnDownEncoderBlock2D"),
    "up_block_types": ("AttnUpDecoderBlock2D", "UpDecoderBlock2D"),
    "block_out_channels": (32, 64),
    "layers_per_block": 1,
    "latent_channels": 8,
    "vq_embed_dim": 6,
    "num_vq_embeddings": 32,
    "sample_size": 32,
    "scaling_factor": 2.0,
}


def save_small_kl(folder: Path, seed: int = 0, **overrides):
    """A random small ``AutoencoderKL`` saved with ``save_pretrained``; returns the model."""
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    vae = AutoencoderKL(**{**SMALL_KL_KWARGS, **overrides}).eval()
    _perturb(vae, seed)
    vae.save_pretrained(str(folder))
    return vae


def save_small_vq(folder: Path, seed: int = 0):
    from diffusers import VQModel

    torch.manual_seed(seed)
    vq = VQModel(**SMALL_VQ_KWARGS).eval()
    _perturb(vq, seed)
    with torch.no_grad():
        vq.quantize.embedding.weight.normal_(0, 0.5, generator=torch.Generator().manual_seed(seed + 2))
    vq.save_pretrained(str(folder))
    return vq
