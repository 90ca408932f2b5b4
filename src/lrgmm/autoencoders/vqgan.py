"""VQGAN checkpoints from taming-transformers (the paper's autoencoder), run with diffusers.

The paper encodes faces with the taming-transformers VQGAN trained on FFHQ
(``configs/faceshq_vqgan.yaml``: f16, embed_dim 256, n_embed 1024, ch 128, ch_mult [1,1,2,2,4],
attention at resolution 16), so a 256 px face becomes a 256 x 16 x 16 latent. This backend reads
such a checkpoint and its YAML config without the authors' training stack (no
taming-transformers, no pytorch-lightning, no omegaconf): the network is diffusers' ``VQModel``,
the same architecture, and the checkpoint's tensors are renamed onto it.

Latents are the *pre-quantisation* ones, ``quant_conv(encoder(x))``: the continuous vectors the
LR-GMM models. Decoding is ``decoder(post_quant_conv(z))``; with ``requantize=True`` every latent
pixel is first snapped to its nearest codebook vector (what the VQGAN decoder was trained on; the
paper's appendix idea). The choice is part of :meth:`VQGAN.config`, so a model file records it.

Images: taming VQGANs take RGB in [-1, 1]; the backend converts from and to lrgmm's [0, 1].

Key mapping, taming ``VQModel`` state dict -> diffusers ``VQModel`` (L = len(ch_mult)):

=================================================  =================================================
taming                                             diffusers
=================================================  =================================================
encoder.conv_in / conv_out                         encoder.conv_in / conv_out
encoder.norm_out                                   encoder.conv_norm_out
encoder.down.{i}.block.{j}.*                       encoder.down_blocks.{i}.resnets.{j}.*
encoder.down.{i}.attn.{j}.*                        encoder.down_blocks.{i}.attentions.{j}.*
encoder.down.{i}.downsample.conv                   encoder.down_blocks.{i}.downsamplers.0.conv
{encoder,decoder}.mid.block_1 / block_2            {...}.mid_block.resnets.0 / resnets.1
{encoder,decoder}.mid.attn_1                       {...}.mid_block.attentions.0
decoder.conv_in / conv_out, norm_out               decoder.conv_in / conv_out, conv_norm_out
decoder.up.{i}.block.{j}.*                         decoder.up_blocks.{L-1-i}.resnets.{j}.*
decoder.up.{i}.attn.{j}.*                          decoder.up_blocks.{L-1-i}.attentions.{j}.*
decoder.up.{i}.upsample.conv                       decoder.up_blocks.{L-1-i}.upsamplers.0.conv
quant_conv, post_quant_conv                        quant_conv, post_quant_conv
quantize.embedding.weight                          quantize.embedding.weight
=================================================  =================================================

Inside a ResnetBlock: ``norm1, conv1, norm2, conv2`` keep their names, ``nin_shortcut`` becomes
``conv_shortcut``. Inside an AttnBlock: ``norm -> group_norm``, ``q, k, v -> to_q, to_k, to_v``,
``proj_out -> to_out.0``, and the 1x1 convolution weights ``(c, c, 1, 1)`` become linear weights
``(c, c)``. taming decoder levels count from the highest resolution (``up.0`` is the last one
run), diffusers' ``up_blocks`` in running order, hence ``L-1-i``. A level ``i`` has attention
when ``resolution / 2**i`` is in ``attn_resolutions`` (``AttnDownEncoderBlock2D`` /
``AttnUpDecoderBlock2D``; otherwise ``DownEncoderBlock2D`` / ``UpDecoderBlock2D``).

Keys outside the autoencoder (``loss.*``: the discriminator and LPIPS used in training) and
taming's ``quantize.used`` (an index remapping, irrelevant to the vectors) are ignored; any other
key under ``encoder.``, ``decoder.``, ``quant_conv.``, ``post_quant_conv.`` or ``quantize.`` that
does not fit the config, a missing key and a shape mismatch are errors naming the keys.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from lrgmm.autoencoders._diffusers_base import DiffusersBackend, import_diffusers
from lrgmm.autoencoders.base import DIFFUSERS_EXTRA
from lrgmm.autoencoders.checkpoints import load_state_dict
from lrgmm.errors import OptionalDependencyError, ParameterError, WeightsError
from lrgmm.io.weights import sha256_file

__all__ = [
    "VQGAN",
    "VQGANConfig",
    "read_vqgan_config",
    "taming_to_diffusers_key",
    "diffusers_to_taming_key",
    "convert_taming_state_dict",
]

BACKEND = "vqgan"
# taming builds every GroupNorm with 32 groups; diffusers' VQModel takes it as norm_num_groups.
_GROUPS = 32
# The paper projects the 256 VQGAN channels on q = 8 (SPEC.md).
PAPER_Q = 8
_AE_PREFIXES = ("encoder.", "decoder.", "quant_conv.", "post_quant_conv.", "quantize.")
_IGNORED_AE_KEYS = ("quantize.used",)
_USAGE = (
    "the vqgan backend needs a taming-transformers checkpoint and its YAML config: "
    "VQGAN(checkpoint='last.ckpt', config='model.yaml') "
    "(command line: --autoencoder vqgan --ae-weights last.ckpt --ae-config model.yaml)"
)


# ---------------------------------------------------------------------------------------------
# Config


@dataclass(frozen=True)
class VQGANConfig:
    """The architecture of a taming ``VQModel``: ``embed_dim``, ``n_embed`` and its ``ddconfig``."""

    embed_dim: int
    n_embed: int
    ch: int
    ch_mult: tuple[int, ...]
    num_res_blocks: int
    attn_resolutions: tuple[int, ...]
    z_channels: int
    resolution: int
    in_channels: int = 3
    out_ch: int = 3

    @property
    def downscale(self) -> int:
        return 2 ** (len(self.ch_mult) - 1)

    def to_dict(self) -> dict:
        """JSON-able, in taming's layout (``{embed_dim, n_embed, ddconfig: {...}}``)."""
        d = asdict(self)
        top = {"embed_dim": d.pop("embed_dim"), "n_embed": d.pop("n_embed")}
        d["ch_mult"] = list(d["ch_mult"])
        d["attn_resolutions"] = list(d["attn_resolutions"])
        d["double_z"] = False
        return {**top, "ddconfig": d}

    def level_has_attention(self, level: int) -> bool:
        return (self.resolution // 2**level) in self.attn_resolutions

    def diffusers_kwargs(self) -> dict:
        levels = range(len(self.ch_mult))
        down = ["AttnDownEncoderBlock2D" if self.level_has_attention(i) else "DownEncoderBlock2D" for i in levels]
        up = ["AttnUpDecoderBlock2D" if self.level_has_attention(i) else "UpDecoderBlock2D" for i in levels][::-1]
        return dict(
            in_channels=self.in_channels,
            out_channels=self.out_ch,
            down_block_types=tuple(down),
            up_block_types=tuple(up),
            block_out_channels=tuple(self.ch * m for m in self.ch_mult),
            layers_per_block=self.num_res_blocks,
            act_fn="silu",
            latent_channels=self.z_channels,
            sample_size=self.resolution,
            num_vq_embeddings=self.n_embed,
            norm_num_groups=_GROUPS,
            vq_embed_dim=self.embed_dim,
            scaling_factor=1.0,
            norm_type="group",
            mid_block_add_attention=True,
        )


def _load_config_file(path: Path):
    if not path.is_file():
        raise WeightsError(f"VQGAN config {path} does not exist; {_USAGE}")
    text = path.read_text(encoding="utf-8", errors="replace")
    if path.suffix.lower() == ".json":
        try:
            return json.loads(text)
        except json.JSONDecodeError as e:
            raise WeightsError(f"VQGAN config {path} is not valid JSON: {e}") from None
    try:
        import yaml
    except ImportError:
        raise OptionalDependencyError(
            f"reading the YAML config {path} needs PyYAML, which is not installed; install it "
            f"with: {DIFFUSERS_EXTRA} (or give the config as a JSON file or a dict)"
        ) from None
    try:
        return yaml.safe_load(text)  # safe_load: plain data only, never Python objects
    except yaml.YAMLError as e:
        raise WeightsError(f"VQGAN config {path} is not valid YAML: {e}") from None


def read_vqgan_config(source: str | Path | dict) -> VQGANConfig:
    """Parse a taming config: a YAML/JSON file or a dict, either the whole training config
    (``model: {target, params: {embed_dim, n_embed, ddconfig, lossconfig}}``), its ``params``,
    or :meth:`VQGANConfig.to_dict` output. Raises :class:`WeightsError` naming what is wrong."""
    where = "VQGAN config"
    if isinstance(source, (str, Path)):
        where = f"VQGAN config {source}"
        raw = _load_config_file(Path(source).expanduser())
    elif isinstance(source, dict):
        raw = source
    else:
        raise TypeError(f"config must be a path or a dict, got {type(source).__name__}")
    if not isinstance(raw, dict):
        raise WeightsError(f"{where}: expected a mapping at the top level, got {type(raw).__name__}")

    node = raw.get("model", raw)
    if not isinstance(node, dict):
        raise WeightsError(f"{where}: 'model' must be a mapping")
    target = node.get("target")
    if isinstance(target, str) and "gumbel" in target.lower():
        raise WeightsError(
            f"{where}: {target} is a Gumbel-softmax VQGAN, which this backend does not support "
            f"(only taming's VQModel with a nearest-neighbour codebook)"
        )
    params = node.get("params", node)
    if not isinstance(params, dict) or "ddconfig" not in params:
        raise WeightsError(
            f"{where}: no 'ddconfig' found (expected model.params.ddconfig as in taming's "
            f"configs/*.yaml, e.g. configs/faceshq_vqgan.yaml)"
        )
    dd = params["ddconfig"]
    if not isinstance(dd, dict):
        raise WeightsError(f"{where}: 'ddconfig' must be a mapping")

    def need(d: dict, key: str, prefix: str = ""):
        if key not in d:
            raise WeightsError(f"{where}: missing '{prefix}{key}'")
        return d[key]

    def pos_int(value, key: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise WeightsError(f"{where}: '{key}' must be a positive integer, got {value!r}")
        return value

    def int_list(value, key: str, allow_empty: bool) -> tuple[int, ...]:
        if not isinstance(value, (list, tuple)) or (not value and not allow_empty):
            raise WeightsError(f"{where}: '{key}' must be a list of positive integers, got {value!r}")
        return tuple(pos_int(v, key) for v in value)

    if dd.get("double_z", False):
        raise WeightsError(
            f"{where}: ddconfig.double_z is true; a VQGAN encoder outputs z_channels, not a "
            f"Gaussian's mean and variance (is this a KL autoencoder? use the 'diffusers' backend)"
        )
    if not dd.get("resamp_with_conv", True):
        raise WeightsError(f"{where}: ddconfig.resamp_with_conv false (average-pool resampling) is not supported")

    cfg = VQGANConfig(
        embed_dim=pos_int(need(params, "embed_dim"), "embed_dim"),
        n_embed=pos_int(need(params, "n_embed"), "n_embed"),
        ch=pos_int(need(dd, "ch", "ddconfig."), "ddconfig.ch"),
        ch_mult=int_list(need(dd, "ch_mult", "ddconfig."), "ddconfig.ch_mult", allow_empty=False),
        num_res_blocks=pos_int(need(dd, "num_res_blocks", "ddconfig."), "ddconfig.num_res_blocks"),
        attn_resolutions=int_list(dd.get("attn_resolutions", []), "ddconfig.attn_resolutions", allow_empty=True),
        z_channels=pos_int(need(dd, "z_channels", "ddconfig."), "ddconfig.z_channels"),
        resolution=pos_int(need(dd, "resolution", "ddconfig."), "ddconfig.resolution"),
        in_channels=pos_int(dd.get("in_channels", 3), "ddconfig.in_channels"),
        out_ch=pos_int(dd.get("out_ch", 3), "ddconfig.out_ch"),
    )
    if cfg.in_channels != 3 or cfg.out_ch != 3:
        raise WeightsError(
            f"{where}: in_channels={cfg.in_channels}, out_ch={cfg.out_ch}; lrgmm needs an RGB "
            f"autoencoder (3 and 3)"
        )
    bad = [cfg.ch * m for m in cfg.ch_mult if (cfg.ch * m) % _GROUPS]
    if bad:
        raise WeightsError(
            f"{where}: channel counts {bad} (ch x ch_mult) are not multiples of {_GROUPS}, the "
            f"GroupNorm group count taming uses; this is not a taming VQGAN config"
        )
    return cfg


# ---------------------------------------------------------------------------------------------
# Key mapping

_RESNET_T2D = {"nin_shortcut": "conv_shortcut"}
_RESNET_D2T = {v: k for k, v in _RESNET_T2D.items()}
_ATTN_T2D = {"norm": "group_norm", "q": "to_q", "k": "to_k", "v": "to_v", "proj_out": "to_out.0"}
_ATTN_D2T = {v: k for k, v in _ATTN_T2D.items()}


def _rename_head(rest: str, table: dict[str, str]) -> str:
    """Rename the leading module of ``rest`` (``"q.weight"``, ``"to_out.0.bias"``) by ``table``."""
    for old in sorted(table, key=len, reverse=True):  # longest first: "to_out.0" before "to_out"
        if rest.startswith(old + "."):
            return table[old] + rest[len(old):]
    return rest


def taming_to_diffusers_key(key: str, n_levels: int) -> str | None:
    """The diffusers ``VQModel`` name of a taming ``VQModel`` key; None when it has none."""
    m = re.fullmatch(r"(quant_conv|post_quant_conv)\.(weight|bias)|quantize\.embedding\.weight", key)
    if m:
        return key
    m = re.fullmatch(r"(encoder|decoder)\.(conv_in|conv_out)\.(weight|bias)", key)
    if m:
        return key
    m = re.fullmatch(r"(encoder|decoder)\.norm_out\.(weight|bias)", key)
    if m:
        return f"{m[1]}.conv_norm_out.{m[2]}"
    m = re.fullmatch(r"(encoder|decoder)\.mid\.block_([12])\.(.+)", key)
    if m:
        return f"{m[1]}.mid_block.resnets.{int(m[2]) - 1}.{_rename_head(m[3], _RESNET_T2D)}"
    m = re.fullmatch(r"(encoder|decoder)\.mid\.attn_1\.(.+)", key)
    if m:
        return f"{m[1]}.mid_block.attentions.0.{_rename_head(m[2], _ATTN_T2D)}"
    m = re.fullmatch(r"encoder\.down\.(\d+)\.(block|attn)\.(\d+)\.(.+)", key)
    if m:
        sub, table = ("resnets", _RESNET_T2D) if m[2] == "block" else ("attentions", _ATTN_T2D)
        return f"encoder.down_blocks.{m[1]}.{sub}.{m[3]}.{_rename_head(m[4], table)}"
    m = re.fullmatch(r"encoder\.down\.(\d+)\.downsample\.conv\.(weight|bias)", key)
    if m:
        return f"encoder.down_blocks.{m[1]}.downsamplers.0.conv.{m[2]}"
    m = re.fullmatch(r"decoder\.up\.(\d+)\.(block|attn)\.(\d+)\.(.+)", key)
    if m and int(m[1]) < n_levels:
        sub, table = ("resnets", _RESNET_T2D) if m[2] == "block" else ("attentions", _ATTN_T2D)
        return f"decoder.up_blocks.{n_levels - 1 - int(m[1])}.{sub}.{m[3]}.{_rename_head(m[4], table)}"
    m = re.fullmatch(r"decoder\.up\.(\d+)\.upsample\.conv\.(weight|bias)", key)
    if m and int(m[1]) < n_levels:
        return f"decoder.up_blocks.{n_levels - 1 - int(m[1])}.upsamplers.0.conv.{m[2]}"
    return None


def diffusers_to_taming_key(key: str, n_levels: int) -> str | None:
    """The inverse of :func:`taming_to_diffusers_key` (used to name missing keys in errors)."""
    m = re.fullmatch(r"(quant_conv|post_quant_conv)\.(weight|bias)|quantize\.embedding\.weight", key)
    if m:
        return key
    m = re.fullmatch(r"(encoder|decoder)\.(conv_in|conv_out)\.(weight|bias)", key)
    if m:
        return key
    m = re.fullmatch(r"(encoder|decoder)\.conv_norm_out\.(weight|bias)", key)
    if m:
        return f"{m[1]}.norm_out.{m[2]}"
    m = re.fullmatch(r"(encoder|decoder)\.mid_block\.resnets\.([01])\.(.+)", key)
    if m:
        return f"{m[1]}.mid.block_{int(m[2]) + 1}.{_rename_head(m[3], _RESNET_D2T)}"
    m = re.fullmatch(r"(encoder|decoder)\.mid_block\.attentions\.0\.(.+)", key)
    if m:
        return f"{m[1]}.mid.attn_1.{_rename_head(m[2], _ATTN_D2T)}"
    m = re.fullmatch(r"encoder\.down_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)", key)
    if m:
        sub, table = ("block", _RESNET_D2T) if m[2] == "resnets" else ("attn", _ATTN_D2T)
        return f"encoder.down.{m[1]}.{sub}.{m[3]}.{_rename_head(m[4], table)}"
    m = re.fullmatch(r"encoder\.down_blocks\.(\d+)\.downsamplers\.0\.conv\.(weight|bias)", key)
    if m:
        return f"encoder.down.{m[1]}.downsample.conv.{m[2]}"
    m = re.fullmatch(r"decoder\.up_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)", key)
    if m and int(m[1]) < n_levels:
        sub, table = ("block", _RESNET_D2T) if m[2] == "resnets" else ("attn", _ATTN_D2T)
        return f"decoder.up.{n_levels - 1 - int(m[1])}.{sub}.{m[3]}.{_rename_head(m[4], table)}"
    m = re.fullmatch(r"decoder\.up_blocks\.(\d+)\.upsamplers\.0\.conv\.(weight|bias)", key)
    if m and int(m[1]) < n_levels:
        return f"decoder.up.{n_levels - 1 - int(m[1])}.upsample.conv.{m[2]}"
    return None


def _is_attn_linear(diffusers_key: str) -> bool:
    return bool(re.search(r"\.attentions\.\d+\.(to_q|to_k|to_v|to_out\.0)\.weight$", diffusers_key))


def _list(keys, n: int = 8) -> str:
    keys = list(keys)
    return ", ".join(keys[:n]) + (f" ... ({len(keys)} in all)" if len(keys) > n else "")


def convert_taming_state_dict(
    state: dict[str, torch.Tensor],
    expected: dict[str, torch.Size],
    n_levels: int,
    where: str = "checkpoint",
) -> dict[str, torch.Tensor]:
    """Rename and reshape a taming ``VQModel`` state dict onto diffusers' ``VQModel``.

    ``expected`` maps every diffusers key to its shape (``model.state_dict()``). Keys outside
    the autoencoder are ignored; everything else must match exactly: a missing key, a key that
    fits no diffusers parameter, or a shape mismatch raise :class:`WeightsError` naming the
    taming keys and saying the config and the checkpoint disagree. Tensors come out float32.
    """
    converted: dict[str, torch.Tensor] = {}
    unexpected: list[str] = []
    mismatched: list[str] = []
    for key, value in state.items():
        if not key.startswith(_AE_PREFIXES) or key in _IGNORED_AE_KEYS:
            continue  # loss.* (discriminator, LPIPS) and other training-only entries
        new = taming_to_diffusers_key(key, n_levels)
        if new is None or new not in expected:
            unexpected.append(key)
            continue
        t = value.to(torch.float32)
        want = tuple(expected[new])
        if _is_attn_linear(new) and t.dim() == 4 and t.shape[2:] == (1, 1):
            t = t[:, :, 0, 0]
        if tuple(t.shape) != want:
            shown = want + (1, 1) if _is_attn_linear(new) else want
            mismatched.append(f"{key}: checkpoint {tuple(value.shape)}, config {shown}")
            continue
        converted[new] = t.contiguous()
    missing = [diffusers_to_taming_key(k, n_levels) or k for k in expected if k not in converted]
    missing = [k for k in missing if k not in {m.split(":")[0] for m in mismatched}]
    problems = []
    if mismatched:
        problems.append(f"{len(mismatched)} shape mismatches: " + "; ".join(mismatched[:6]) + (" ..." if len(mismatched) > 6 else ""))
    if missing:
        problems.append(f"{len(missing)} missing keys: {_list(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} keys the config has no place for: {_list(unexpected)}")
    if problems:
        raise WeightsError(
            f"{where} does not fit the VQGAN config ("
            + "; ".join(problems)
            + "). Use the YAML config the checkpoint was trained with (ddconfig ch, ch_mult, "
            "num_res_blocks, attn_resolutions, resolution, z_channels; embed_dim, n_embed)."
        )
    return converted


# ---------------------------------------------------------------------------------------------
# Backend


class VQGAN(DiffusersBackend):
    """A taming-transformers VQGAN: RGB in [0, 1] <-> ``embed_dim x H/f x W/f`` latents,
    ``f = 2**(len(ch_mult) - 1)``.

    Parameters
    ----------
    checkpoint : path
        taming's Lightning ``.ckpt`` (its ``state_dict`` is used; callbacks and other training
        objects are never unpickled, see :mod:`lrgmm.autoencoders.checkpoints`), a plain state
        dict saved with ``torch.save``, or a ``.safetensors`` file, with taming's key names.
    config : path or dict
        The model's YAML config (``configs/faceshq_vqgan.yaml``...), or its content as a dict.
    requantize : bool
        Snap latents to the nearest codebook vector before decoding (default: decode the
        continuous latent as it is).
    device, batch_size
        Where to run, and how many images per forward pass.

    ``weights_sha256`` is the sha256 of the checkpoint file. :meth:`config` records the
    checkpoint path, the config's content and ``requantize``, which is enough to rebuild the
    backend when the YAML file is gone.
    """

    name = BACKEND
    location_keys = ("checkpoint",)
    # command-line option -> keyword argument (see lrgmm.autoencoders.backend_options)
    option_names = {"weights": "checkpoint", "config": "config", "requantize": "requantize"}

    def __init__(
        self,
        checkpoint: str | Path | None = None,
        config: str | Path | dict | None = None,
        requantize: bool = False,
        device: str | torch.device = "cpu",
        batch_size: int = 16,
        precision: str = "fp32",
    ) -> None:
        if checkpoint is None or config is None:
            missing = " and ".join(n for n, v in (("checkpoint", checkpoint), ("config", config)) if v is None)
            raise ParameterError(f"no VQGAN {missing} given; {_USAGE}")
        if not isinstance(requantize, bool):
            raise TypeError(f"requantize must be True or False, got {requantize!r}")
        self._setup_run(device, batch_size, precision)
        self.requantize = requantize
        self.vq_config = read_vqgan_config(config)
        path = Path(checkpoint).expanduser()
        if not path.is_file():
            raise WeightsError(f"VQGAN checkpoint {path} does not exist; {_USAGE}")
        self.checkpoint = path.resolve()
        diffusers = import_diffusers(BACKEND)

        self.latent_channels = self.vq_config.embed_dim
        self.downscale = self.vq_config.downscale
        self.preferred_q = min(PAPER_Q, self.latent_channels)
        self.weights_sha256 = sha256_file(self.checkpoint)

        state, self.skipped_objects = load_state_dict(self.checkpoint)
        model = diffusers.VQModel(**self.vq_config.diffusers_kwargs())
        expected = {k: v.shape for k, v in model.state_dict().items()}
        converted = convert_taming_state_dict(
            state, expected, len(self.vq_config.ch_mult), where=f"VQGAN checkpoint {self.checkpoint}"
        )
        model.load_state_dict(converted, strict=True)
        self.model = self._finish_model(model)

    def config(self) -> dict:
        return {
            "checkpoint": str(self.checkpoint),
            "config": self.vq_config.to_dict(),
            "requantize": self.requantize,
        }

    def __repr__(self) -> str:
        c = self.vq_config
        return (
            f"VQGAN(id={self.id!r}, f={self.downscale}, embed_dim={c.embed_dim}, n_embed={c.n_embed}, "
            f"requantize={self.requantize}, device={str(self.device)!r}, batch_size={self.batch_size})"
        )

    def _encode_batch(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.encode(x).latents  # quant_conv(encoder(x)), before quantisation

    def _decode_batch(self, z: torch.Tensor) -> torch.Tensor:
        return self.model.decode(z, force_not_quantize=not self.requantize).sample

    def quantize(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents snapped to their nearest codebook vectors (what ``requantize`` decodes)."""
        z = self._check_latents(latents)
        with torch.inference_mode():
            return self.model.quantize(z.to(self.device))[0].to(device=z.device, dtype=torch.float32)
