"""Forgetting photos: the model refitted without them, as if they had never been in the folder.

Someone whose photo is in a training set may ask for it to be taken out. In LR-GMM-NN a training
photo is in the model in two ways: its latent shaped the projector P0 and the mixture (eq. 1-4),
and its code z_i = P0(y_i) sits in the NN memory that generated faces copy latent pixels from
(eq. 5, 6). Deleting its row from the memory would remove the second and keep the first, so
``forget`` refits the whole model on the other photos, with the model's own settings.

The result is the model ``lrgmm fit`` gives on the folder without those photos, tensor for tensor
(tests/test_forget.py fits 64 faces, forgets one and compares every tensor with a fresh fit on the
63 with ``torch.equal``). That holds because every input of the fit is the same:

- *Which photos.* Photos are matched by the sha256 of their bytes, the hash the model records per
  training file and the latent cache is keyed by: a renamed or moved copy is found, an edited one
  is not (it is another photo). A folder argument stands for every image in it (walked as
  ``lrgmm fit`` walks it); a 64-digit hexadecimal argument that is not a file is taken as a hash
  (``lrgmm info --files`` lists them), for a photo whose file is gone. A photo that is not in the
  model is an error naming it, and nothing is written: a typo must not pass for a removal.
- *Their latents.* Read from the latent cache by hash, bit for bit what ``lrgmm fit`` reads;
  only photos the cache lacks are encoded again, from the file recorded in the model, which must
  still hold the same bytes (in other batches than the fit's, so equal to the encoder's rounding:
  the test allows 1e-4 on every tensor). The latents found must give back the model's own codes through its
  projector (to float32 rounding), or the refit is refused: the model was not fitted on them.
- *Their order.* ``lrgmm fit`` lists each folder recursively in sorted order (``list_images``),
  drops unreadable files and repeated contents (the first is kept) and records the order it used.
  Deleting photos from a folder deletes them from that listing and keeps the others' relative
  order, so the recorded order minus the forgotten photos is the order a fit on the folder without
  them produces. The mixture's k-means++ start and EM see the codes in that order.
- *The settings.* The model's hyperparameters and ``random_state``, and K as it was asked for
  (``fit.n_components_requested``: None means K from N, which may change with N; files written
  before that field existed refit with the K they hold).

Checks before anything is written (``forget_report_["verification"]``): the forgotten hashes are
absent from the new training list; no code of the new NN memory is, to float32 rounding, the code
of a forgotten photo under the new projector (when its latent is cached); and ``check_faces``
faces drawn from the new model (latents only, no decoding) have provenance maps that never point
at a forgotten photo. The first two hold by construction; they are checked because a privacy
promise should be checked, and they are cheap.

What forgetting does not touch: the old model file (``lrgmm forget`` writes a new one; write over
the old with ``-o`` the same path), faces generated from the old model, and the latent cache, which
still holds the photos' latents keyed by their hashes while the photos themselves are on disk.

``lrgmm forget`` (``lrgmm.pipeline.forget_file.forget_model_file``) wraps this in files: it reads the model
file, writes the new one and a JSON record. The new pipeline is built with the class of the one
given (``FacePipeline`` imports this module for its ``forget`` method).
"""

from __future__ import annotations

import hashlib
import os
import re
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from ..errors import FitError, ForgetError, ImageInputError, ParameterError
from ..io.images import InputReport, list_images
from ..io.latent_cache import LatentCache
from .encoding import EncodedSet, encode_images

CHECK_FACES = 256  # faces drawn to check provenance: latents only, well under a second on 1,024 photos
_HEX64 = re.compile(r"[0-9a-fA-F]{64}")
_LISTED = 10  # names listed in an error message


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 of a file's bytes, read in 1 MiB blocks (the hash ``lrgmm fit`` records)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _names(items: Sequence[str]) -> str:
    shown = ", ".join(str(x) for x in items[:_LISTED])
    return shown + (f" and {len(items) - _LISTED} more" if len(items) > _LISTED else "")


def photo_hashes(photos) -> dict[str, list[str]]:
    """The content hashes of the photos to forget, each with the arguments that gave it, in the
    order given. ``photos``: a path or a list of paths; a file is hashed whatever its name, a
    folder stands for the images in it (``list_images``), and a 64-digit hexadecimal string that is
    no file is a hash. The same photo given twice (or as two copies) counts once.

    Raises ``ImageInputError`` for a path that does not exist or a folder with no image, and
    ``ForgetError`` when nothing is given."""
    items = [photos] if isinstance(photos, (str, os.PathLike)) else list(photos)
    if not items:
        raise ForgetError("no photo given to forget: pass image files, folders or sha256 hashes")
    out: dict[str, list[str]] = {}
    for item in items:
        text = os.fspath(item)
        p = Path(text)
        if p.is_dir():
            files = [str(f) for f in list_images(p).paths]  # ImageInputError: no image in it
        elif p.exists():
            files = [text]
        elif _HEX64.fullmatch(text):
            out.setdefault(text.lower(), []).append(text)
            continue
        else:
            raise ImageInputError(f"photo to forget does not exist: {text} (give an image file, a folder, "
                                  "or the photo's sha256 as `lrgmm info MODEL --files` lists it)")
        for f in files:
            try:
                h = file_sha256(f)
            except OSError as e:
                raise ImageInputError(f"{f}: cannot read the photo to forget ({e.strerror or e})") from None
            names = out.setdefault(h, [])
            if f not in names:
                names.append(f)
    return out


def _training_latents(pipe, hashes: list[str], paths: list[str], progress: bool) -> tuple[torch.Tensor, dict]:
    """The (n, c, h, w) latents of the training photos ``hashes`` (recorded at ``paths``), in
    that order: from the latent cache, encoding only those it lacks from their recorded files."""
    ae = pipe.training_encoder()  # the precision the model's latents were encoded in
    ns = {"autoencoder_id": ae.latent_key, "resolution": pipe.resolution}
    found: dict[str, np.ndarray] = {}
    if pipe.cache:
        found = LatentCache().get(hashes, **ns)
        shape = tuple(ae.latent_shape(pipe.resolution))
        found = {h: z for h, z in found.items() if tuple(z.shape) == shape}
    missing = [(h, p) for h, p in zip(hashes, paths) if h not in found]
    n_cached = len(hashes) - len(missing)
    if missing:
        gone = [p for _, p in missing if not Path(p).is_file()]
        if gone:
            raise ForgetError(
                f"{len(gone)} training photo(s) to keep are neither in the latent cache nor at their recorded "
                f"path: {_names(gone)}; restore them there (paths are relative to the folder `lrgmm fit` ran "
                "in), or point LRGMM_CACHE_DIR at the cache the model was fitted with"
            )
        try:
            enc = encode_images([p for _, p in missing], ae, pipe.resolution, pipe.batch_size, pipe.cache, progress)
        except ImageInputError as e:
            raise ForgetError(f"the training photos to keep that are not in the latent cache cannot be encoded: {e}") from None
        got = dict(zip(enc.hashes, enc.latents.numpy()))
        found.update(got)
        bad = [p for h, p in missing if h not in got]
        if bad:
            raise ForgetError(
                f"{len(bad)} training photo(s) to keep are not in the latent cache and their files no longer "
                f"hold the bytes the model was fitted on (changed or unreadable): {_names(bad)}; restore the "
                "original files, or refit with `lrgmm fit`"
            )
    z = torch.from_numpy(np.stack([found[h] for h in hashes]).astype(np.float32, copy=False))
    return z, {"from_cache": n_cached, "encoded": len(missing)}


def _check_codes(pipe, latents: torch.Tensor, rows: list[int], chunk: int = 512) -> None:
    """The latents must give the model's own NN memory rows ``rows`` through its projector (to
    float32 rounding of a float64 product): otherwise they are not what it was fitted on."""
    model = pipe.model_
    worst = 0.0
    for s in range(0, len(rows), chunk):
        got = model.projector_.transform(latents[s : s + chunk])
        ref = model.codes_[rows[s : s + chunk]]
        worst = max(worst, float((got - ref).abs().max() / ref.abs().max().clamp_min(1e-30)))
    if worst > 1e-5:
        raise ForgetError(
            f"the latents found for the training photos to keep do not give the model's codes (relative "
            f"difference {worst:.2g}): the model was not fitted on these latents with this autoencoder; "
            "refit it with `lrgmm fit`"
        )


def _memory_holds(memory: torch.Tensor, codes: torch.Tensor, chunk: int = 4096) -> list[bool]:
    """For each row of ``codes`` (k, d), whether ``memory`` (N, d) holds it to float32 rounding:
    nearest row by a chunked ||a||^2 + ||b||^2 - 2ab, then its exact largest difference."""
    if codes.shape[0] == 0 or memory.shape[0] == 0:
        return [False] * codes.shape[0]
    a = codes.to(torch.float64)
    best_d = torch.full((a.shape[0],), float("inf"), dtype=torch.float64)
    best_i = torch.zeros(a.shape[0], dtype=torch.long)
    a2 = (a * a).sum(1)
    for s in range(0, memory.shape[0], chunk):
        m = memory[s : s + chunk].to(torch.float64)
        d = a2[:, None] + (m * m).sum(1)[None] - 2 * a @ m.T
        v, i = d.min(1)
        better = v < best_d
        best_d, best_i = torch.where(better, v, best_d), torch.where(better, i + s, best_i)
    diff = (memory[best_i].to(torch.float64) - a).abs().amax(1)
    scale = a.abs().amax(1).clamp_min(1e-30)
    return (diff <= 1e-5 * scale).tolist()


def _verify(new, removed: list[str], removed_latents: dict[str, np.ndarray], check_faces: int, seed: int) -> dict:
    """The checks of the module docstring, on the refitted pipeline; ``ForgetError`` if one fails."""
    gone = set(removed)
    in_list = sorted(gone & set(new.training_hashes_))
    if in_list:
        raise ForgetError(f"internal check failed: forgotten photo(s) {_names(in_list)} still in the training list")
    checked = [h for h in removed if h in removed_latents]
    held = []
    if checked:
        z = torch.from_numpy(np.stack([removed_latents[h] for h in checked]))
        codes = new.model_.projector_.transform(z).reshape(len(checked), -1)
        held = [h for h, hit in zip(checked, _memory_holds(new.model_.codes_.reshape(new.model_.codes_.shape[0], -1), codes)) if hit]
    if held:
        raise ForgetError(f"internal check failed: the new NN memory holds the code of forgotten photo(s) {_names(held)}")
    named = 0
    if check_faces > 0:
        # Latents only, in bounded batches, under the model's own budget: a default budget never
        # fails (a cluster the forgetting left too small for it gets the even split).
        batches = new.model_.iter_samples(check_faces, seed)
        n_train = len(new.training_hashes_)
        for s in batches:
            sources = torch.unique(s.provenance).tolist()
            if sources[0] < 0 or sources[-1] >= n_train:
                raise ForgetError(f"internal check failed: provenance index outside the {n_train} training photos")
            named += int(sum(new.training_hashes_[i] in gone for i in sources))
        if named:
            raise ForgetError(f"internal check failed: faces drawn from the new model copy from {named} forgotten photo(s)")
    return {
        "passed": True,
        "absent_from_training_files": True,
        "memory_codes_checked": len(checked),  # forgotten photos whose latent was cached
        "memory_holds_forgotten": 0,
        "faces_drawn": int(check_faces),
        "faces_seed": int(seed),
        "faces_naming_forgotten": named,
    }


def forget(pipe, photos, *, check_faces: int = CHECK_FACES, seed: int = 0, progress: bool | None = None):
    """``FacePipeline.forget``: a new fitted pipeline without ``photos`` (see the module docstring);
    ``pipe`` is left as it was. The new pipeline's ``forget_report_`` says what was removed, how
    the latents were found and what was checked."""
    pipe.check_is_fitted()
    progress = pipe.progress if progress is None else progress
    if isinstance(check_faces, bool) or int(check_faces) != check_faces or check_faces < 0:
        raise ParameterError(f"check_faces must be an integer >= 0, got {check_faces!r}")
    wanted = photo_hashes(photos)
    index = {h: i for i, h in enumerate(pipe.training_hashes_)}
    unknown = [names[0] for h, names in wanted.items() if h not in index]
    n = len(pipe.training_hashes_)
    if unknown:
        raise ForgetError(
            f"{len(unknown)} photo(s) to forget are not among the model's {n} training photos (matched by "
            f"content): {_names(unknown)}; nothing was written (`lrgmm info MODEL --files` lists them)"
        )
    removed = list(wanted)
    gone = set(removed)
    keep = [i for i, h in enumerate(pipe.training_hashes_) if h not in gone]
    if not keep:
        raise FitError(f"forgetting all {n} training photos leaves nothing to fit; delete the model file instead")
    hashes = [pipe.training_hashes_[i] for i in keep]
    paths = [pipe.training_files_[i] for i in keep]
    start = time.perf_counter()
    latents, sources = _training_latents(pipe, hashes, paths, progress)
    _check_codes(pipe, latents, keep)
    removed_latents = {}
    if pipe.cache:
        removed_latents = LatentCache().get(removed, autoencoder_id=pipe.training_encoder().latent_key,
                                            resolution=pipe.resolution)

    # The model's own settings; K as asked (the model's LRGMM keeps it: fit.n_components_requested).
    own = pipe.model_.get_params()
    params = {**pipe.get_params(), **{k: v for k, v in own.items() if k in pipe.get_params()}}
    params.update(autoencoder=pipe.autoencoder_, progress=progress)
    new = type(pipe)(**params)  # the FacePipeline class, which imports this module

    report = InputReport(n_found=len(keep), n_used=len(keep), resolution=pipe.resolution)
    encoded = EncodedSet(latents, paths, hashes, report, pipe.resolution, pipe.autoencoder_.id,
                         n_encoded=sources["encoded"], n_cached=sources["from_cache"],
                         precision=pipe.training_encoder().precision)
    try:
        new.fit(encoded)
    except FitError as e:
        raise FitError(
            f"after forgetting {len(removed)} of {n} training photos, the {len(keep)} left cannot be fitted with "
            f"the model's settings: {e}"
        ) from None
    verification = _verify(new, removed, removed_latents, int(check_faces), seed)
    new.forget_report_ = {
        "removed": [
            {"sha256": h, "training_file": pipe.training_files_[index[h]], "given": wanted[h]} for h in removed
        ],
        "n_images_before": n,
        "n_images_after": len(keep),
        "latents": sources,
        "hyperparameters": {k: v for k, v in own.items() if k != "verbose"},
        "seconds": round(time.perf_counter() - start, 3),
        "verification": verification,
    }
    return new
