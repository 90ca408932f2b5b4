"""Completing masked photos and sampling faces with given attributes: images and labels in,
faces and provenance out (``FacePipeline.complete`` and ``FacePipeline.generate(where=...)``).

The maths is in ``lrgmm.core.conditioning``; the masks and the blend in ``lrgmm.data.masks``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from ..core.conditioning import attribute_weights, complete_codes, unknown_positions
from ..core.model import LatentSamples
from ..core.nn_projection import budget_in_force
from ..core.provenance import provenance_image, provenance_record
from ..core.randomness import as_generator, resolve_seed
from ..data.labels import LabelError, LabelTable, parse_conditions
from ..data.masks import blend, check_mask, feathered_alpha, fill_masked, load_mask
from ..errors import MaskError, ParameterError
from ..io.atomic import atomic_write_bytes
from ..io.images import make_grid, prepare_image, prepare_tensor, save_png

N_COMPLETIONS = 8  # completions of one photo when the caller does not say (API, CLI and studio)


@dataclass
class Completions:
    """n completions of one masked photo (``FacePipeline.complete``).

    images: (n, 3, R, R) the decoded completions blended with the original (module docstring).
    raw: (n, 3, R, R) the decoded completions before blending.
    original: (3, R, R) the prepared photo; mask: (R, R) bool, True = missing.
    alpha: (R, R) blend weight; unknown: (h, w) bool latent positions that were generated.
    samples: ``LatentSamples`` (latents, codes, components, provenance with -1 at observed
        positions; None without the NN step).
    training_files: provenance indices point into this list.
    """

    images: torch.Tensor
    raw: torch.Tensor
    original: torch.Tensor
    mask: torch.Tensor
    alpha: torch.Tensor
    unknown: torch.Tensor
    samples: object
    training_files: list[str]
    seed: int | None = None
    settings: dict | None = None

    def __len__(self) -> int:
        return self.images.shape[0]

    def masked_input(self) -> torch.Tensor:
        """The photo with the hole shown in mid grey, (3, R, R)."""
        return torch.where(self.mask[None], torch.full_like(self.original, 0.5), self.original)

    def provenance_map(self, i: int) -> torch.Tensor:
        """Colour-coded provenance of completion i (3, R, R): one colour per training photo in the
        filled region, the faded original at observed positions."""
        return provenance_image(self.samples.provenance[i], self.images.shape[-1], background=self.original)

    def provenance_record(self, i: int) -> dict:
        """The filled region's sources: training files and their share of the unknown positions."""
        record = provenance_record(self.samples.provenance[i], self.training_files)
        return {"filled_positions": record["copied_positions"], "component": int(self.samples.components[i]), **record}

    def save(self, out_dir, prefix: str = "completion") -> dict[str, list]:
        """Write ``input.png`` (the photo), ``masked.png``, ``mask.png``, ``<prefix>_0000.png``
        ... (blended), ``<prefix>_0000_raw.png``, provenance maps and JSON per completion, and
        ``grid.png`` (masked input, then the completions; a second row of provenance maps), plus
        ``completions.json`` (seed, settings). Every file is written atomically; everything is
        computed before the first file is written."""
        out = Path(out_dir)
        prov = self.samples.provenance
        maps = [self.provenance_map(i) for i in range(len(self))] if prov is not None else []
        records = [self.provenance_record(i) for i in range(len(self))] if prov is not None else []
        tiles = [self.masked_input(), *self.images]
        if maps:
            tiles += [self.original, *maps]
        grid = make_grid(torch.stack(tiles), ncols=len(self) + 1)
        out.mkdir(parents=True, exist_ok=True)
        written: dict[str, list] = {"completions": [], "raw": [], "provenance_maps": [], "provenance_json": [], "other": []}
        written["other"].append(save_png(self.original, out / "input.png"))
        written["other"].append(save_png(self.masked_input(), out / "masked.png"))
        written["other"].append(save_png(self.mask[None].float(), out / "mask.png"))
        for i in range(len(self)):
            stem = f"{prefix}_{i:04d}"
            written["completions"].append(save_png(self.images[i], out / f"{stem}.png"))
            written["raw"].append(save_png(self.raw[i], out / f"{stem}_raw.png"))
            if maps:
                written["provenance_maps"].append(save_png(maps[i], out / f"{stem}_provenance.png"))
                path = out / f"{stem}_provenance.json"
                atomic_write_bytes(path, json.dumps({"completion": f"{stem}.png", **records[i]}, indent=1).encode())
                written["provenance_json"].append(path)
        written["other"].append(save_png(grid, out / "grid.png"))
        summary = {
            "n": len(self),
            "seed": self.seed,
            "settings": self.settings,
            "masked_pixels": int(self.mask.sum()),
            "unknown_latent_positions": int(self.unknown.sum()),
            "files": {k: [Path(p).name for p in v] for k, v in written.items()},
        }
        atomic_write_bytes(out / "completions.json", json.dumps(summary, indent=1).encode())
        return written


def prepare_input(pipe, image, mask) -> tuple[torch.Tensor, torch.Tensor, str]:
    """(original (3, R, R), mask (R, R) bool, name) from a path or tensor and a path or array."""
    R = pipe.resolution
    source_size = None
    if isinstance(image, (str, Path)):
        prep = prepare_image(image, R)
        original = torch.from_numpy(prep.array)
        source_size = prep.original_size
        name = str(image)
    else:
        original = torch.as_tensor(image, dtype=torch.float32)
        if original.ndim == 4 and original.shape[0] == 1:
            original = original[0]
        if original.ndim != 3 or original.shape[0] != 3:
            raise ValueError(f"image must be a path or a (3, H, W) tensor in [0, 1], got shape {tuple(original.shape)}")
        if tuple(original.shape[1:]) != (R, R):
            source_size = (original.shape[2], original.shape[1])
        original = prepare_tensor(original, R)[0]
        name = "image"
    if isinstance(mask, (str, Path)):
        m = load_mask(mask, R, source_size=source_size)
    else:
        m = check_mask(mask, R, source_size=source_size)
    return original.contiguous(), m, name


def complete_image(
    pipe,
    image,
    mask,
    n: int = N_COMPLETIONS,
    seed: int | torch.Generator | None = None,
    *,
    nn: bool = True,
    temperature: float | None = None,
    noise: bool = True,
    patch_size: int | None = None,
    nn_iterations: int | None = None,
    threshold: float = 0.0,
    feather: int = 4,
    max_share: float | None = None,
) -> Completions:
    """``FacePipeline.complete``: encode the photo with the hole filled (``fill_masked``), find
    the unknown latent positions (``unknown_positions`` with ``threshold``), draw n completions
    (``complete_codes``), decode them with the input's own latents at observed positions, and
    blend with ``feather`` (module docstring). Same pipeline, input, mask and seed give
    bit-identical images. ``max_share`` (default: the model's): copy budget over the generated
    positions (``nn_project_unknown``)."""
    pipe.check_is_fitted()
    if n < 1:
        raise ParameterError(f"n must be at least 1, got {n}")
    model = pipe.model_
    seed = resolve_seed(seed)
    original, m, _ = prepare_input(pipe, image, mask)
    h, w = model.codes_.shape[2:]
    unknown = unknown_positions(m, (h, w), threshold)
    if not bool(unknown.any()):
        raise MaskError(f"the mask hides no latent position (threshold {threshold}); use a larger mask or threshold 0")
    if bool(unknown.all()):
        raise MaskError("the mask touches every latent position: nothing is observed to condition on")
    latent = pipe.autoencoder_.encode(fill_masked(original, m)[None])
    code = model.projector_.transform(latent)[0]
    gen = as_generator(seed)
    comp = complete_codes(
        model, code, unknown, n, gen, nn=nn, temperature=temperature, noise=noise,
        patch_size=patch_size, nn_iterations=nn_iterations, max_share=max_share,
    )
    latents = model.decoder_latents(comp.codes, comp.provenance)
    latents = torch.where(unknown, latents, latent)  # observed positions: the input's own latent
    raw = pipe.decode(latents).clamp(0, 1)
    alpha = feathered_alpha(m, feather)
    images = blend(raw, original[None], alpha)
    settings = {
        "nn": nn,
        "temperature": model.temperature_ if temperature is None else temperature,
        "noise": noise,
        "patch_size": model.patch_size if patch_size is None else patch_size,
        "nn_iterations": model.nn_iterations if nn_iterations is None else nn_iterations,
        "nn_order": model.nn_order,
        "max_share": budget_in_force(getattr(model, "max_share", None) if max_share is None else max_share),
        "threshold": threshold,
        "feather": feather,
        "component_probabilities": [round(float(p), 6) for p in comp.conditional.log_weights.exp()],
    }
    samples = LatentSamples(latents, comp.codes, comp.components, comp.provenance)
    return Completions(
        images=images, raw=raw, original=original, mask=m, alpha=alpha, unknown=unknown, samples=samples,
        training_files=list(pipe.training_files_), seed=seed if isinstance(seed, int) else None, settings=settings,
    )


def labelled_subset(pipe, where, labels_csv=None) -> tuple[dict[str, str], torch.Tensor]:
    """(parsed conditions, indices of the training faces carrying all of them); a clear error
    when a label is unknown or no training face carries the combination."""
    conditions = parse_conditions(where)
    if not conditions:
        raise LabelError("no condition given; use e.g. gender=female age=senior")
    table = LabelTable.from_files(pipe.training_files_, labels_csv)
    keep = torch.from_numpy(table.mask(conditions))
    if not bool(keep.any()):
        counts = "; ".join(f"{a}: {table.counts(a)}" for a in conditions)
        wanted = " and ".join(f"{a}={c}" for a, c in conditions.items())
        raise LabelError(
            f"no training face of this model has {wanted} (training labels from {table.source}: {counts}); "
            f"drop a condition or fit on faces that have it"
        )
    return conditions, keep.nonzero().squeeze(1)


def generate_where(
    pipe,
    n: int,
    seed: int | torch.Generator | None,
    where,
    labels_csv=None,
    *,
    nn: bool = True,
    temperature: float | None = None,
    nn_iterations: int | None = None,
    patch_size: int | None = None,
    max_share: float | None = None,
    nn_order: str | None = None,
    spread: float | None = None,
):
    """Attribute-conditional latents for ``FacePipeline.generate(where=...)``: the component
    weights given the labels (``attribute_weights``), eq. 4 draws, and the NN step over the
    labelled training faces only (``LRGMM.sample(weights=..., allowed=...)``). Returns (LatentSamples, info dict)."""
    weights, allowed, info = where_weights(pipe, where, labels_csv)
    model = pipe.model_
    gen = as_generator(seed)
    samples = model.sample(
        n, gen, weights=weights, allowed=allowed, nn=nn, temperature=temperature,
        patch_size=patch_size, nn_iterations=nn_iterations, max_share=max_share, nn_order=nn_order, spread=spread,
    )
    return samples, info


def where_weights(pipe, where, labels_csv=None):
    """(component weights, allowed training indices, info dict) for ``where`` (``generate_where``;
    ``FacePipeline.generate_batches`` draws with them batch by batch)."""
    model = pipe.model_
    conditions, allowed = labelled_subset(pipe, where, labels_csv)
    weights = attribute_weights(model.mixture_, model.codes_[allowed].reshape(allowed.numel(), -1))
    info = {
        "where": conditions,
        "labelled_training_faces": int(allowed.numel()),
        "component_weights": [round(float(x), 6) for x in weights],
    }
    return weights, allowed, info
