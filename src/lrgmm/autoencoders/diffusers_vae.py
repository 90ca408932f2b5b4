"""Autoencoders saved as diffusers model folders: ``AutoencoderKL`` (Stable Diffusion style VAEs)
and ``VQModel``.

A folder written by ``save_pretrained`` (``config.json`` + ``diffusion_pytorch_model.safetensors``)
is loaded with ``from_pretrained(folder, local_files_only=True)``: never anything from the
network. A whole pipeline folder works too: its ``vae/`` (or ``vqvae/``) subfolder is used.

Latents are deterministic and on the scale the diffusion models use:

- ``AutoencoderKL``: the posterior *mean* (no sampling), then ``(mean - shift) * scaling_factor``
  with the config's ``scaling_factor`` and ``shift_factor`` (0 when absent), or
  ``(mean - latents_mean) * scaling_factor / latents_std`` per channel when the config has
  ``latents_mean`` and ``latents_std``. Decoding inverts it.
- ``VQModel``: the pre-quantisation latent ``quant_conv(encoder(x))``, scaled the same way;
  decoding optionally re-quantises to the codebook first (``requantize``).

Images are converted between lrgmm's [0, 1] and diffusers' [-1, 1].
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from lrgmm.autoencoders._diffusers_base import DiffusersBackend, import_diffusers
from lrgmm.errors import ParameterError, WeightsError
from lrgmm.io.weights import sha256_file

__all__ = ["DiffusersVAE", "SUPPORTED_CLASSES"]

BACKEND = "diffusers"
SUPPORTED_CLASSES = ("AutoencoderKL", "VQModel")
_WEIGHT_PREFIX = "diffusion_pytorch_model"
_SUBFOLDERS = ("vae", "vqvae")
# TAEF2 works best with 16 of its 32 channels (SPEC.md); small latents (4 for SD) keep them all.
_MAX_PREFERRED_Q = 16
_USAGE = (
    "the diffusers backend needs a local diffusers model folder (config.json + "
    "diffusion_pytorch_model.safetensors): DiffusersVAE(path='sd-vae/') "
    "(command line: --autoencoder diffusers --ae-weights sd-vae/)"
)


def _model_folder(path: Path, subfolder: str | None) -> Path:
    if not path.is_dir():
        raise WeightsError(f"diffusers model folder {path} does not exist (or is not a folder); {_USAGE}")
    if subfolder:
        folder = path / subfolder
        if not (folder / "config.json").is_file():
            raise WeightsError(f"{folder} has no config.json; {_USAGE}")
        return folder
    if (path / "config.json").is_file():
        return path
    for sub in _SUBFOLDERS:
        if (path / sub / "config.json").is_file():
            return path / sub
    raise WeightsError(
        f"{path} has no config.json (nor {' or '.join(s + '/config.json' for s in _SUBFOLDERS)}); {_USAGE}"
    )


def _weight_files(folder: Path) -> list[Path]:
    files = sorted(
        p for p in folder.iterdir()
        if p.is_file() and p.name.startswith(_WEIGHT_PREFIX) and p.suffix in (".safetensors", ".bin", ".json")
    )
    if not any(p.suffix in (".safetensors", ".bin") for p in files):
        raise WeightsError(
            f"{folder} has no weights ({_WEIGHT_PREFIX}.safetensors or .bin); save the model with "
            f"save_pretrained(folder)"
        )
    return files


def _folder_sha256(folder: Path, files: list[Path]) -> str:
    """sha256 over ``name:sha256`` lines of config.json and the weight files, sorted by name."""
    lines = [f"{p.name}:{sha256_file(p)}" for p in [folder / "config.json", *files]]
    return hashlib.sha256("\n".join(sorted(lines)).encode()).hexdigest()


class DiffusersVAE(DiffusersBackend):
    """A diffusers ``AutoencoderKL`` or ``VQModel`` from a local folder.

    Parameters
    ----------
    path : path
        A ``save_pretrained`` folder, or a pipeline folder with a ``vae/`` or ``vqvae/`` subfolder.
    subfolder : str, optional
        The subfolder to use explicitly.
    requantize : bool
        ``VQModel`` only: snap latents to the codebook before decoding.
    device, batch_size
        Where to run, and how many images per forward pass.

    ``weights_sha256`` covers ``config.json`` and every ``diffusion_pytorch_model*`` file (see
    :func:`_folder_sha256`), so a changed scaling factor is another autoencoder too.
    """

    name = BACKEND
    location_keys = ("path",)
    # command-line option -> keyword argument (see lrgmm.autoencoders.backend_options)
    option_names = {"weights": "path", "subfolder": "subfolder", "requantize": "requantize"}

    def __init__(
        self,
        path: str | Path | None = None,
        subfolder: str | None = None,
        requantize: bool = False,
        device: str | torch.device = "cpu",
        batch_size: int = 16,
        precision: str = "fp32",
    ) -> None:
        if path is None:
            raise ParameterError(f"no diffusers model folder given; {_USAGE}")
        if not isinstance(requantize, bool):
            raise TypeError(f"requantize must be True or False, got {requantize!r}")
        self._setup_run(device, batch_size, precision)
        root = Path(path).expanduser().resolve()
        self.folder = _model_folder(root, subfolder)
        self.path = root
        self.subfolder = None if self.folder == root else self.folder.relative_to(root).as_posix()
        try:
            cfg = json.loads((self.folder / "config.json").read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as e:
            raise WeightsError(f"cannot read {self.folder / 'config.json'}: {e}") from None
        cls_name = cfg.get("_class_name") if isinstance(cfg, dict) else None
        if cls_name not in SUPPORTED_CLASSES:
            raise WeightsError(
                f"{self.folder} holds a {cls_name or 'model without _class_name'}; the diffusers "
                f"backend supports {', '.join(SUPPORTED_CLASSES)}"
            )
        if requantize and cls_name != "VQModel":
            raise ParameterError(f"requantize=True needs a VQModel; {self.folder} holds a {cls_name}")
        self.class_name = cls_name
        self.requantize = requantize
        files = _weight_files(self.folder)
        self.weights_sha256 = _folder_sha256(self.folder, files)

        diffusers = import_diffusers(BACKEND)
        model_cls = getattr(diffusers, cls_name)
        log = diffusers.utils.logging
        verbosity = log.get_verbosity()
        log.set_verbosity_error()  # its notes (no `accelerate`, ...) are noise; problems are checked below
        try:
            model, info = model_cls.from_pretrained(
                str(self.folder), local_files_only=True, torch_dtype=torch.float32, output_loading_info=True
            )
        except Exception as e:  # diffusers reports bad folders as OSError, ValueError, RuntimeError
            lines = str(e).strip().splitlines()
            text = "\n".join(lines[:6]) + ("\n..." if len(lines) > 6 else "")
            raise WeightsError(
                f"cannot load the {cls_name} in {self.folder} (do its weights fit its config.json?): "
                f"{type(e).__name__}: {text}"
            ) from None
        finally:
            log.set_verbosity(verbosity)
        problems = {k: list(info.get(k) or []) for k in ("missing_keys", "unexpected_keys", "mismatched_keys")}
        problems = {k: v for k, v in problems.items() if v}
        if problems or info.get("error_msgs"):
            shown = "; ".join(f"{k.replace('_', ' ')}: {', '.join(map(str, v[:6]))}" for k, v in problems.items())
            raise WeightsError(
                f"the weights in {self.folder} do not fit its config.json ({shown or info.get('error_msgs')}); "
                f"the folder is inconsistent, re-save it with save_pretrained"
            )

        c = model.config
        self.latent_channels = int(c.vq_embed_dim or c.latent_channels) if cls_name == "VQModel" else int(c.latent_channels)
        self.downscale = 2 ** (len(c.block_out_channels) - 1)
        self.preferred_q = min(self.latent_channels, _MAX_PREFERRED_Q)
        self.scaling_factor = float(getattr(c, "scaling_factor", 1.0) or 1.0)
        self.shift_factor = float(getattr(c, "shift_factor", None) or 0.0)
        mean, std = getattr(c, "latents_mean", None), getattr(c, "latents_std", None)
        if mean is not None and std is not None:
            self._mean = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
            self._std = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
            if self._mean.shape[1] != self.latent_channels or self._std.shape[1] != self.latent_channels:
                raise WeightsError(
                    f"{self.folder}: latents_mean/latents_std have {self._mean.shape[1]}/{self._std.shape[1]} "
                    f"values for {self.latent_channels} latent channels"
                )
        else:
            self._mean = self._std = None
        self.model = self._finish_model(model)

    def config(self) -> dict:
        return {"path": str(self.path), "subfolder": self.subfolder, "requantize": self.requantize}

    def __repr__(self) -> str:
        return (
            f"DiffusersVAE(id={self.id!r}, class={self.class_name}, f={self.downscale}, "
            f"channels={self.latent_channels}, scaling_factor={self.scaling_factor}, "
            f"shift_factor={self.shift_factor}, device={str(self.device)!r}, batch_size={self.batch_size})"
        )

    # -- scaling ------------------------------------------------------------------------------

    def _scale(self, z: torch.Tensor) -> torch.Tensor:
        if self._mean is not None:
            return (z - self._mean.to(z)) * self.scaling_factor / self._std.to(z)
        return (z - self.shift_factor) * self.scaling_factor

    def _unscale(self, z: torch.Tensor) -> torch.Tensor:
        if self._mean is not None:
            return z * self._std.to(z) / self.scaling_factor + self._mean.to(z)
        return z / self.scaling_factor + self.shift_factor

    def _encode_batch(self, x: torch.Tensor) -> torch.Tensor:
        if self.class_name == "VQModel":
            z = self.model.encode(x).latents
        else:
            z = self.model.encode(x).latent_dist.mean  # deterministic: the mean, never a sample
        return self._scale(z)

    def _decode_batch(self, z: torch.Tensor) -> torch.Tensor:
        z = self._unscale(z)
        if self.class_name == "VQModel":
            return self.model.decode(z, force_not_quantize=not self.requantize).sample
        return self.model.decode(z).sample
