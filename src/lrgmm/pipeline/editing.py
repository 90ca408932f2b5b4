"""Editing faces with an attribute edit: photos, tensors or generated faces in, strips of edited
faces (one per alpha) and their provenance out (``FacePipeline.edit``).

The edit itself (the map H and how it is fitted) is ``lrgmm.editing``; this module encodes the
inputs, applies H at every alpha, runs the NN step towards the edit's target side, and decodes.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..core.conditioning import nn_project_unknown
from ..core.nn_projection import check_max_share, nn_project
from ..core.provenance import provenance_image, provenance_shares
from ..editing.attribute_edit import AttributeEdit, load_edit
from ..errors import EditError, ImageInputError
from ..io.atomic import atomic_write_bytes
from ..io.images import make_grid, prepare_image, prepare_tensor, save_png
from .generated import Generated


@dataclass
class EditedFaces:
    """What ``FacePipeline.edit`` returns.

    images: (n_inputs, n_alphas, 3, R, R) float32 in [0, 1], the edited faces.
    alphas: the alphas, one per column.
    originals: (n_inputs, 3, R, R) the inputs as given (photos prepared at R, or generated faces).
    codes: (n_inputs, n_alphas, q, h, w) the edited codes (after the NN step when it ran).
    provenance: (n_inputs, n_alphas, h, w) int64 indices into ``training_files`` (NN step), or None.
    training_files: the model's training files. inputs: a name per input. edit: a description.
    """

    images: torch.Tensor
    alphas: list[float]
    originals: torch.Tensor
    codes: torch.Tensor
    provenance: torch.Tensor | None
    training_files: list[str]
    inputs: list[str]
    edit: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return self.images.shape[0]

    def save(self, out_dir: str | Path, prefix: str = "edit") -> dict[str, list[Path]]:
        """Write one strip PNG per input (``<prefix>_0000.png``: the input, then one face per
        alpha), the strip of provenance maps beside it when the NN step ran
        (``..._provenance.png``), ``grid.png`` (all strips) and ``edits.json`` (alphas, edit,
        inputs, per-face provenance summary). Each file is written atomically."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        n_a = len(self.alphas)
        written: dict[str, list[Path]] = {"strips": [], "provenance_strips": [], "grids": []}
        size = self.images.shape[-1]
        records = []
        for i in range(len(self)):
            stem = f"{prefix}_{i:04d}"
            tiles = torch.cat([self.originals[i : i + 1], self.images[i]])
            written["strips"].append(save_png(make_grid(tiles, ncols=n_a + 1), out / f"{stem}.png"))
            rec = {"input": self.inputs[i], "strip": f"{stem}.png", "columns": ["input"] + [f"alpha={a:g}" for a in self.alphas]}
            if self.provenance is not None:
                maps = torch.stack([provenance_image(self.provenance[i, j], size) for j in range(n_a)])
                maps = torch.cat([torch.ones(1, 3, size, size), maps])
                written["provenance_strips"].append(save_png(make_grid(maps, ncols=n_a + 1), out / f"{stem}_provenance.png"))
                rec["provenance"] = []
                for j in range(n_a):
                    shares = provenance_shares(self.provenance[i, j])
                    rec["provenance"].append({
                        "alpha": self.alphas[j],
                        "distinct_training_images": len(shares),
                        "largest_share": shares[0][1] if shares else 0.0,
                        "map": self.provenance[i, j].tolist(),
                    })
            records.append(rec)
        if len(self):
            rows = torch.cat([torch.cat([self.originals[i : i + 1], self.images[i]]) for i in range(len(self))])
            written["grids"].append(save_png(make_grid(rows, ncols=n_a + 1), out / "grid.png"))
        summary = {"alphas": self.alphas, "edit": self.edit, "training_files": self.training_files if self.provenance is not None else None,
                   "faces": records}
        atomic_write_bytes(out / "edits.json", json.dumps(summary, indent=1).encode())
        return written


def _input_images(pipe, inputs) -> tuple[torch.Tensor, list[str]]:
    """(n, 3, R, R) images in [0, 1] and names, from paths or a tensor."""
    R = pipe.resolution
    if isinstance(inputs, torch.Tensor):
        x = prepare_tensor(inputs, R)
        return x, [f"tensor[{i}]" for i in range(x.shape[0])]
    paths = [inputs] if isinstance(inputs, (str, Path)) else list(inputs)
    if not paths:
        raise ImageInputError("no input image given to edit")
    arrays = []
    for p in paths:
        if Path(p).is_dir():
            raise ImageInputError(f"{p} is a folder; give image files to edit")
        arrays.append(torch.from_numpy(prepare_image(p, R).array))
    return torch.stack(arrays), [str(p) for p in paths]


def edit_faces(pipe, inputs, edit, alphas=(-2, -1, 0, 1, 2), nn: bool = True, seed: int | None = None,
               max_share: float | None = None) -> EditedFaces:
    """``FacePipeline.edit``: apply ``edit`` (an ``AttributeEdit`` or an edit file) at every
    alpha to the inputs' codes, optionally NN-project, and decode.

    inputs: image paths, an (n, 3, H, W) tensor in [0, 1] (resized to R when needed), a
        ``Generated``, or an int n (n faces generated with ``seed`` first).
    nn: after the edit, replace every latent pixel the edit moved by the same-position pixel of
        the nearest training code (omega x omega patch, eq. 5) of the target side: the positives
        for alpha > 0, the negatives for alpha < 0. Provenance maps index
        ``pipe.training_files_``; -1 marks a position the edit did not move.
    A latent pixel the edit did not move (all of them at alpha = 0) keeps the input's own latent,
    not its rank-q code, as a completion keeps its observed part: alpha = 0 gives back the plain
    reconstruction of a photo (or the generated face), with or without the NN step. Without the
    NN step a moved pixel is the input's own latent plus P0* of the edit's change, so the edit is
    continuous in alpha; with it, the copied training photo's own latent pixel.
    seed: only used when ``inputs`` is an int; the edit itself is deterministic.
    max_share: copy budget of that NN step (``lrgmm.core.nn_projection``; default: the model's, None
        there: no budget); the memory of each side must be able to meet it.
    """
    pipe.check_is_fitted()
    path = None
    if not isinstance(edit, AttributeEdit):
        path = edit
        edit = load_edit(edit)
    edit.check_model(pipe, path)
    alphas = [float(a) for a in (alphas if isinstance(alphas, (list, tuple)) else [alphas])]
    if not alphas or not all(math.isfinite(a) for a in alphas):
        raise EditError(f"alphas must be finite numbers, got {alphas}")
    model = pipe.model_
    share = check_max_share(getattr(model, "max_share", None) if max_share is None else max_share)
    if isinstance(inputs, int) and not isinstance(inputs, bool):
        inputs = pipe.generate(inputs, seed, max_share=max_share)
    if isinstance(inputs, Generated):
        codes, originals = inputs.samples.codes, inputs.images
        names = [f"generated[{i}] (seed {inputs.seed})" for i in range(len(inputs))]
    else:
        originals, names = _input_images(pipe, inputs)
        with torch.no_grad():
            latents = torch.cat([pipe.autoencoder_.encode(originals[s : s + pipe.batch_size])
                                 for s in range(0, len(originals), max(1, pipe.batch_size))])
        codes = model.projector_.transform(latents.to(torch.float32))
    if isinstance(inputs, Generated):
        latents = inputs.samples.latents
    n, n_a = codes.shape[0], len(alphas)
    edited = torch.stack([edit.transform(codes, a) for a in alphas], 1)  # (n, A, q, h, w)
    moved = _moved_positions(codes, edited).reshape(n * n_a, *codes.shape[2:])  # (n A, h, w)
    flat = edited.reshape(n * n_a, *edited.shape[2:])
    provenance = None
    if nn:
        flat, provenance = _nn_on_moved(flat, moved, torch.tensor([1 if a > 0 else 0 for a in alphas]).repeat(n),
                                        model, edit.memory_side_.to(torch.long), share, strict=max_share is not None)
    own = latents.to(torch.float32).repeat_interleave(n_a, 0)  # each input's latent, once per alpha
    if provenance is None:
        # Without the NN step the edit's change in code space is added to the input's own latent,
        # so the channels the projector drops stay the input's and a small alpha gives a small change.
        p0 = model.projector_
        new = own + p0.inverse_transform(flat) - p0.inverse_transform(codes.repeat_interleave(n_a, 0))
    else:
        new = model.decoder_latents(flat, provenance)  # copied positions: the training photo's own latent
    images = pipe.decode(torch.where(moved[:, None], new, own))
    desc = {"method": edit.method, "attribute": edit.attribute_, "negative": edit.negative_, "positive": edit.positive_,
            "file": str(path) if path else None, "nn": nn, "n_parameters": edit.n_parameters(),
            "max_share": share if nn else None}
    return EditedFaces(
        images=images.reshape(n, n_a, *images.shape[1:]),
        alphas=alphas,
        originals=originals.to(torch.float32),
        codes=flat.reshape(n, n_a, *flat.shape[1:]),
        provenance=None if provenance is None else provenance.reshape(n, n_a, *provenance.shape[1:]),
        training_files=list(pipe.training_files_),
        inputs=names,
        edit=desc,
    )


def _moved_positions(codes: torch.Tensor, edited: torch.Tensor) -> torch.Tensor:
    """(n, A, h, w) bool: latent positions where the edited codes (n, A, q, h, w) differ from the
    input codes (n, q, h, w) by more than float rounding (relative 1e-6)."""
    scale = 1 + codes.abs().amax(1)  # (n, h, w)
    return (edited - codes[:, None]).abs().amax(2) > 1e-6 * scale[:, None]


def _nn_on_moved(codes, moved, sides, model, memory_side, share, strict):
    """The NN step (eq. 5) on the moved positions of each edited code (n, q, h, w), copying from
    the training codes of its target side (``sides`` (n,) against ``memory_side``); unmoved
    positions keep their code and get provenance -1, as a completion's observed positions do
    (``nn_project_unknown``). The copy budget counts the moved positions."""
    out = codes.clone()
    provenance = torch.full((codes.shape[0], *codes.shape[2:]), -1, dtype=torch.long)
    options = {"patch_size": model.patch_size, "iterations": model.nn_iterations, "max_share": share,
               "strict": strict, "order": model.nn_order}
    everywhere = moved.all(2).all(1)
    rows = everywhere.nonzero().squeeze(1)
    if rows.numel():  # the usual case: an edit moves every position
        out[rows], provenance[rows] = nn_project(codes[rows], sides[rows], model.codes_, memory_side, **options)
    for r in (moved.any(2).any(1) & ~everywhere).nonzero().squeeze(1).tolist():
        out[r : r + 1], provenance[r : r + 1] = nn_project_unknown(
            codes[r : r + 1], sides[r : r + 1], model.codes_, memory_side, moved[r], codes[r], **options)
    return out, provenance
