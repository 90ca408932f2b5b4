"""One entry point to measure a face generator: ``evaluate(model, real=FOLDER, n=..., seed=...)``.

    from lrgmm.evaluation import evaluate
    res = evaluate("faces.lrgmm", real="heldout/", n=1000, seed=0)
    print(res.table()); res.to_json("eval.json")

What it does:

1. loads the held-out real faces of ``real`` at the model's resolution (centre crop, Lanczos,
   as for fitting), drops any that are also training images (same file bytes), and takes their
   Inception features;
2. for memorisation, takes the latent codes of the training faces (stored in the model) and of
   the held-out faces (P0 of their cached latents), and the Inception features of both sets
   *through the autoencoder* (decode(P0*(codes))), so that generated faces, which are decoder
   outputs, are compared with the closest thing to a copy a generator can output (see
   ``Evaluator``); no training image is needed on disk;
3. generates ``n`` faces in chunks (progress bar), keeping per face only its features, its
   latent code and its provenance map;
4. computes FID, KID, improved precision/recall (k = 3, on Inception features: no VGG16 weights
   are available) against the held-out photos, the memorisation statistics in both spaces
   (``lrgmm.metrics.memorisation``), the data-copying test C_T and the authenticity share in the
   same spaces (``lrgmm.metrics.copying``), and provenance statistics.

Every feature set is cached on disk (``lrgmm.metrics.features``): evaluating a second generator
against the same folders only pays for its own faces.

**The memorisation figure.** ``memorisation_figure(result, reference, folder)`` (``lrgmm eval
--figures DIR``, ``evaluate(figures=DIR)``) draws the 16 generated faces closest to the training
set, each beside its 3 nearest training faces with the distances, and the held-out near-copy
threshold: the usual way of showing copying (Carlini et al., USENIX Security 2023, fig. 1;
Somepalli et al., CVPR 2023, fig. 1), calibrated here by fresh photos. The evaluation keeps
what it needs as the faces stream by: every face's 3 nearest training faces in the figure's
space (Inception when memorisation is on, else latent codes) and the pixels of the 16 closest
faces seen so far, never all n images.

**Generators.** Anything with ``generate(n, seed=None, **kwargs)`` returning an object with
``.images`` (n, 3, R, R) in [0, 1] and optionally ``.samples`` with ``.codes`` (P0 codes, the
model's (q, h, w) shape) or ``.latents`` (autoencoder latents; P0 is applied) and
``.provenance`` (n, h, w) is a ``Generator``: a ``FacePipeline`` is one, and baselines plug in
the same way. The training set, projector and autoencoder they are compared against come from a
fitted ``FacePipeline``, the ``reference``: the generator itself when it is one, else
``reference=`` or the generator's ``pipeline`` attribute. ``Evaluator`` prepares the real and
training features once for several generators.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import secrets
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from tqdm.auto import tqdm

from .errors import EvalWarning, FigureError, ParameterError  # noqa: F401  (re-exported)
from .io.atomic import atomic_write_bytes, atomic_write_json, jsonable
from .io.images import InputReport, iter_images, load_images
from .metrics.copying import DEFAULT_MIN_PER_CELL, CopyingReference, CopyingStats
from .metrics.features import InceptionExtractor, quantize
from .metrics.frechet import fid
from .metrics.kernel_distance import KIDResult, kid
from .metrics.memorisation import (
    DEFAULT_QUANTILE,
    MemorisationStats,
    memorisation,
    nearest_k,
    provenance_statistics,
)
from .metrics.precision_recall import FEATURE_NOTE, PrecisionRecall, precision_recall
from .pipeline.face_pipeline import FacePipeline

__all__ = [
    "ClosestFaces", "EvalResult", "EvalWarning", "Evaluator", "FigureError", "Generator", "evaluate",
    "memorisation_figure", "reconstruction_features",
]

FIGURE_FACES = 16  # generated faces in the memorisation figure (the closest to the training set)


@runtime_checkable
class Generator(Protocol):
    """What ``evaluate`` can measure: ``generate(n, seed)`` -> object with ``.images``."""

    def generate(self, n: int, seed: int | None = None, **kwargs: Any) -> Any: ...


@dataclass
class ClosestFaces:
    """The generated faces closest to the training set in one space, kept for the memorisation
    figure while the faces stream by (the rest of the pixels are not kept).

    space: "inception" or "latent_codes". indices: (k,) positions among the n generated faces,
    nearest first (ties: lower position first); distances: (k,) their distance to their nearest
    training face. images: (k, 3, R, R) uint8, the pixels the features were taken from.
    provenance: (k, h, w) training indices per latent pixel, or None. chunks: per face, the seed
    of its chunk and its position there (``generate(chunk_size, seed)[position]``).
    training: fingerprint of the training set they were compared with.
    """

    space: str
    indices: np.ndarray
    distances: np.ndarray
    images: torch.Tensor
    provenance: torch.Tensor | None = None
    chunks: list[tuple[int, int]] = field(default_factory=list)
    training: str = ""


class _RunningClosest:
    """The ``k`` smallest distances seen so far, with their faces' pixels: a running top-k over
    the chunks, so that memory holds k images, not n."""

    def __init__(self, k: int):
        self.k = k
        self.dist = np.zeros(0)
        self.idx = np.zeros(0, dtype=np.int64)
        self.images: torch.Tensor | None = None

    def push(self, dist: np.ndarray, offset: int, images) -> None:
        m = len(self.dist)
        all_d = np.concatenate([self.dist, np.asarray(dist, dtype=np.float64)])
        all_i = np.concatenate([self.idx, offset + np.arange(len(dist), dtype=np.int64)])
        order = np.lexsort((all_i, all_d))[: self.k]  # by distance, then by position
        new = np.sort(order[order >= m]) - m
        fresh = quantize(images[torch.as_tensor(new)] if isinstance(images, torch.Tensor) else np.asarray(images)[new])
        pool = fresh if self.images is None else torch.cat([self.images, fresh])
        where = np.where(order < m, order, m + np.searchsorted(new, order - m))
        self.dist, self.idx, self.images = all_d[order], all_i[order], pool[torch.as_tensor(where)]


def _training_fingerprint(pipe: FacePipeline) -> str:
    """Identifies a reference's training set: its files' sha256 in order and its codes' shape."""
    h = hashlib.sha256(repr(tuple(pipe.model_.codes_.shape)).encode())
    for x in getattr(pipe, "training_hashes_", None) or []:
        h.update(x.encode() + b"\n")
    return h.hexdigest()


@dataclass
class EvalResult:
    """Everything ``evaluate`` measured. ``table()`` for people, ``to_json()`` for files.

    fid: FID against the held-out real faces. fid_training_reconstructions: FID of the training
    faces taken through the autoencoder and projector against the same held-out faces, what a
    generator that returns its training faces scores (a reference at its own sample sizes).
    kid: ``KIDResult`` (mean, std over subsets). pr: ``PrecisionRecall``.
    memorisation: ``MemorisationStats`` per space ("inception", "latent_codes").
    copying: ``CopyingStats`` per space (the same spaces): C_T and the authenticity share.
    provenance: ``provenance_statistics`` of the faces (None without NN provenance).
    generated_features: (n, 2048) Inception features of the faces (not written to JSON).
    closest: ``ClosestFaces``, the 16 faces closest to the training set (for the memorisation
    figure; None without memorisation). files: files written besides (the figure and its JSON).
    """

    generator: str
    n: int
    seed: int
    n_real: int
    n_train: int
    resolution: int
    fid: float
    kid: KIDResult
    pr: PrecisionRecall
    fid_training_reconstructions: float | None = None
    memorisation: dict[str, MemorisationStats] = field(default_factory=dict)
    copying: dict[str, CopyingStats] = field(default_factory=dict)
    provenance: dict | None = None
    timings: dict[str, float] = field(default_factory=dict)
    settings: dict = field(default_factory=dict)
    extractor: str = ""
    notes: list[str] = field(default_factory=list)
    generated_features: np.ndarray | None = field(default=None, repr=False)
    closest: ClosestFaces | None = field(default=None, repr=False)
    files: list[Path] = field(default_factory=list)

    # ------------------------------------------------------------------ output
    def to_dict(self, per_face: bool = False) -> dict:
        d = {
            "generator": self.generator,
            "n_generated": self.n,
            "seed": self.seed,
            "n_real_heldout": self.n_real,
            "n_train": self.n_train,
            "resolution": self.resolution,
            "features": self.extractor,
            "fid": self.fid,
            "fid_training_reconstructions": self.fid_training_reconstructions,
            "kid": {"mean": self.kid.mean, "std": self.kid.std, "subset_size": self.kid.subset_size, "subsets": self.kid.subsets},
            "precision": self.pr.precision,
            "recall": self.pr.recall,
            "precision_recall_k": self.pr.k,
            "precision_recall_features": "inception-v3 pool3 (VGG16 weights not available)",
            "memorisation": {k: v.summary() for k, v in self.memorisation.items()},
            "copying": {k: v.summary() for k, v in self.copying.items()},
            "provenance": self.provenance,
            "timings_s": self.timings,
            "settings": self.settings,
            "notes": self.notes,
        }
        if self.files:
            d["files"] = [str(f) for f in self.files]
        if per_face:
            d["per_face"] = {
                k: {"to_train": v.to_train, "to_train_index": v.to_train_index, "to_heldout": v.to_heldout,
                    "near_copy": v.near_copies.astype(int),
                    **({"nearest_train_index": v.to_train_k_index, "nearest_train_distance": v.to_train_k}
                       if v.to_train_k is not None else {})}
                for k, v in self.memorisation.items()
            }
            for k, c in self.copying.items():
                d["per_face"].setdefault(k, {})["authentic"] = c.authentic.astype(int)
        return jsonable(d)

    def to_json(self, path: str | os.PathLike | None = None, per_face: bool = False) -> str:
        """The result as JSON text (non-finite numbers as null); written atomically to ``path``
        when given."""
        text = json.dumps(self.to_dict(per_face=per_face), indent=1, allow_nan=False)
        if path is not None:
            atomic_write_bytes(path, (text + "\n").encode())
        return text

    def table(self) -> str:
        """A plain-text table of the numbers, with what each means."""
        rows: list[tuple[str, str, str]] = []

        def add(name, value, note=""):
            rows.append((name, value, note))

        add("FID", f"{self.fid:.2f}", "biased upwards at small n: compare at equal n")
        if self.fid_training_reconstructions is not None:
            add("FID, training reconstructions", f"{self.fid_training_reconstructions:.2f}",
                "training faces through the autoencoder: what copying them scores")
        add("KID x 1e3", f"{1e3 * self.kid.mean:.2f} +- {1e3 * self.kid.std:.2f}",
            f"unbiased; {self.kid.subsets} subsets of {self.kid.subset_size}")
        add(f"precision (k={self.pr.k})", f"{self.pr.precision:.3f}", FEATURE_NOTE)
        add(f"recall (k={self.pr.k})", f"{self.pr.recall:.3f}", FEATURE_NOTE)
        for space, m in self.memorisation.items():
            label = {"inception": "Inception", "latent_codes": "latent codes"}.get(space, space)
            q = f"{100 * m.quantile:g}"
            add(f"near copies, {label}", f"{100 * m.near_copy_share:.1f} %",
                f"closer to a training face than {q} % of held-out faces are (fresh faces: ~{q} %)")
            add(f"near copies strict, {label}", f"{100 * m.near_copy_share_strict:.1f} %",
                "closer than every held-out face")
            add(f"NN distance ratio, {label}", f"{m.median_ratio:.3f}",
                "median generated->train / held-out->train (< 1: closer than new photos)")
        for space, c in self.copying.items():
            label = {"inception": "Inception", "latent_codes": "latent codes"}.get(space, space)
            if math.isfinite(c.c_t):
                add(f"data-copying C_T, {label}", f"{c.c_t:.2f}",
                    f"<< 0 copying (< -3: beyond fresh faces), ~0 like new photos, >> 0 underfit; "
                    f"{c.n_cells_used} of {c.n_cells} cells")
            else:
                add(f"data-copying C_T, {label}", "n/a",
                    f"no k-means cell holds {c.min_generated} generated faces and a held-out face: generate more")
            add(f"authentic faces, {label}", f"{100 * c.authenticity:.1f} %",
                f"farther from their nearest training face than its own neighbour (held-out photos: "
                f"{100 * c.authenticity_heldout:.1f} %)")
        p = self.provenance
        if p:
            dt = p["distinct_training_images"]
            ls = p["largest_share"]
            add("training images per face", f"{dt['median']:g}", f"median (p5 {dt['p5']:g}, p95 {dt['p95']:g}, min {dt['min']})")
            add("largest single-image share", f"{100 * ls['median']:.1f} %", f"median (p95 {100 * ls['p95']:.1f} %, max {100 * ls['max']:.1f} %)")
            add("whole-face copies", f"{100 * p['whole_face_copies']:.1f} %", "faces whose every latent pixel is from one image")
        w0 = max(len(r[0]) for r in rows)
        w1 = max(len(r[1]) for r in rows)
        head = (f"{self.generator}: {self.n} faces (seed {self.seed}) vs {self.n_real} held-out real faces; "
                f"{self.n_train} training faces; {self.resolution} px")
        lines = [head, ""]
        lines += [f"{a:<{w0}}  {b:>{w1}}  {c}".rstrip() for a, b, c in rows]
        t = self.timings
        if t:
            lines += ["", "time: " + ", ".join(f"{k} {v:.1f} s" for k, v in t.items())]
        lines.append(f"features: {self.extractor}")
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)


# ---------------------------------------------------------------------------------- helpers


def _hashes_only(source, resolution: int) -> tuple[list[str], list[str], InputReport]:
    """Paths and file sha256 of the usable, distinct images of ``source`` (headers only)."""
    report = InputReport()
    items = list(iter_images(source, resolution, report=report, decode=lambda h: False))
    report.error_if_empty()
    return [it.path for it in items], [it.sha256 for it in items], report


def _chunk_seeds(seed: int, n_chunks: int) -> list[int]:
    """Chunk 0 uses ``seed`` itself (so a one-chunk run is ``generate(n, seed)``, the faces
    ``lrgmm sample -n N --seed S`` writes); later chunks get independent seeds from it."""
    out = [seed]
    for i in range(1, n_chunks):
        out.append(int(np.random.SeedSequence([seed, i]).generate_state(1)[0] & 0x7FFFFFFF))
    return out


def _resolve(generator, reference, progress: bool):
    if isinstance(generator, (str, os.PathLike)):
        pipe = FacePipeline.load(generator, progress=progress)
        return pipe, pipe, Path(generator).name
    if reference is None:
        if isinstance(generator, FacePipeline):
            reference = generator
        elif isinstance(getattr(generator, "pipeline", None), FacePipeline):
            reference = generator.pipeline
    if isinstance(reference, (str, os.PathLike)):
        reference = FacePipeline.load(reference, progress=progress)
    if reference is None:
        raise ValueError(
            "evaluate needs a fitted FacePipeline as reference (training set, projector, autoencoder): "
            "pass reference=..., or give the generator a `pipeline` attribute"
        )
    reference.check_is_fitted()
    name = getattr(generator, "name", None) or type(generator).__name__
    return generator, reference, str(name)


def reconstruction_key(pipe: FacePipeline, codes: torch.Tensor) -> str:
    """Identifies decode(P0*(codes)): autoencoder weights, resolution, projector, codes (the
    feature cache key of ``reconstruction_features``)."""
    ae = pipe.autoencoder_
    pr = pipe.model_.projector_
    h = hashlib.sha256()
    h.update(f"{ae.id}|{ae.weights_sha256}|{pipe.resolution}|{tuple(codes.shape)}".encode())
    for t in (pr.mean_, pr.components_, pr.eigenvalues_, codes):
        h.update(t.detach().to("cpu").contiguous().numpy().tobytes())
    return "recon-" + h.hexdigest()


def reconstruction_features(pipe: FacePipeline, codes: torch.Tensor, extractor: InceptionExtractor,
                            desc: str = "Inception features (reconstructions)", chunk: int = 256,
                            on_chunk=None) -> np.ndarray:
    """Inception features of decode(P0*(codes)) for a fitted ``pipe``, decoded and measured
    ``chunk`` codes at a time, cached on disk under ``reconstruction_key`` (the evaluation and
    the studio share the cache). ``on_chunk(done, total)`` is called before each chunk is
    decoded (progress; it may raise to stop)."""
    projector = pipe.model_.projector_
    n = int(codes.shape[0])

    def batches():
        for s in range(0, n, chunk):
            if on_chunk is not None:
                on_chunk(s, n)
            with torch.no_grad():
                yield pipe.decode(projector.inverse_transform(codes[s : s + chunk]), progress=False)
        if on_chunk is not None:
            on_chunk(n, n)

    return extractor.keyed_features(reconstruction_key(pipe, codes), batches, desc, {"kind": "reconstructions"})


# ---------------------------------------------------------------------------------- Evaluator


class Evaluator:
    """The real and training sides of an evaluation, prepared once for several generators.

    Parameters
    ----------
    reference : fitted ``FacePipeline`` or model file: training codes, projector, autoencoder.
    real : folder, file or list of held-out real faces (not training images: overlaps are
        dropped with a warning).
    memorisation : compute the nearest-neighbour statistics: True (Inception features and latent
        codes), ``"codes"`` (latent codes only: skips decoding every training code and taking its
        Inception features, the costly part for large training sets: ~0.14 s per training face on
        2 CPU cores), False (none).
    near_copy_quantile : quantile of held-out-to-training distances below which a generated face
        is a near copy (``lrgmm.metrics.memorisation``).
    copying_cells : k-means cells of the data-copying test C_T (``lrgmm.metrics.copying``); None:
        min(50, n_train // 50, n_heldout // 50, n // 50), at least 1. C_T and the authenticity share are
        computed wherever memorisation is (Inception space, latent codes), with the same
        training and held-out sets, on k-means cells of a fixed seed (0), the same for every
        generator.
    kid_subsets, kid_subset_size : KID's subsets; the size is capped at the smaller set.
    pr_k : k of improved precision/recall.
    batch_size : Inception batch size.
    cache : cache features (and latents) on disk.
    progress : progress bars.
    extractor : an ``InceptionExtractor`` to use instead of the default one.

    Memorisation in Inception space compares like with like: generated faces are decoder
    outputs, so the training and held-out faces are taken *through the same autoencoder and
    projector* too (decode(P0*(P0(encode(x))))), the closest a generator can get to a training
    face. Otherwise the decoder's own blur would count as novelty: on 48 training faces, 2 of 12
    training faces passed through the autoencoder were not flagged as copies when compared with
    the raw photos. This needs no training image on disk (the codes are in the model).
    ``fid_training_reconstructions`` is the FID of those training reconstructions against the
    held-out photos: what a generator that returns its training faces would score.

    Reading the latent-code space: the NN step puts every latent pixel of an LR-GMM-NN face on
    a training pixel, so such faces sit closer to the training codes than new photos do by
    construction (on 48 faces, all 16 generated faces were "near copies" in code space, 2 in
    Inception space). The Inception space says whether the *picture* is a copy; the code space
    compares generators that copy latents with those that do not.
    """

    def __init__(
        self,
        reference: FacePipeline | str | os.PathLike,
        real,
        *,
        memorisation: bool | str = True,
        near_copy_quantile: float = DEFAULT_QUANTILE,
        copying_cells: int | None = None,
        kid_subsets: int = 100,
        kid_subset_size: int = 1000,
        pr_k: int = 3,
        batch_size: int = 32,
        cache: bool = True,
        progress: bool = True,
        extractor: InceptionExtractor | None = None,
    ):
        if memorisation not in (True, False, "codes"):
            raise ParameterError(f"memorisation must be True, False or 'codes', got {memorisation!r}")
        if isinstance(reference, (str, os.PathLike)):
            reference = FacePipeline.load(reference, progress=progress)
        reference.check_is_fitted()
        if not 0.0 <= near_copy_quantile < 1.0:
            raise ParameterError(f"near_copy_quantile must be in [0, 1), got {near_copy_quantile}")
        n_train = int(reference.model_.codes_.shape[0])
        if copying_cells is not None and not 1 <= copying_cells <= n_train:
            raise ParameterError(f"copying_cells must be in [1, {n_train}] (the training faces), got {copying_cells}")
        self.reference = reference
        self.real_source = real
        self.do_memorisation = bool(memorisation)
        self.inception_memorisation = memorisation is True
        self.near_copy_quantile = near_copy_quantile
        self.copying_cells = copying_cells
        self._copying_refs: dict[str, CopyingReference] = {}
        self.kid_subsets = kid_subsets
        self.kid_subset_size = kid_subset_size
        self.pr_k = pr_k
        self.progress = progress
        self.extractor = extractor or InceptionExtractor(batch_size=batch_size, cache=cache, progress=progress)
        self.notes: list[str] = []
        self._fid_floor: float | None = None
        start = time.perf_counter()
        self._prepare_real()
        self._prepare_train()
        self.prepare_seconds = time.perf_counter() - start

    def _note(self, msg: str) -> None:
        self.notes.append(msg)
        warnings.warn(msg, EvalWarning, stacklevel=3)

    # ------------------------------------------------------- reconstructions
    def _codes_key(self, codes: torch.Tensor) -> str:
        """Identifies decode(P0*(codes)) (``reconstruction_key``)."""
        return reconstruction_key(self.reference, codes)

    def reconstruction_features(self, codes: torch.Tensor, desc: str) -> np.ndarray:
        """Inception features of decode(P0*(codes)), decoded and measured in chunks, cached
        under a key of the codes, projector and autoencoder (``reconstruction_features``)."""
        return reconstruction_features(self.reference, codes, self.extractor, desc)

    # -------------------------------------------------------------- real side
    def _prepare_real(self) -> None:
        ref = self.reference
        res = ref.resolution
        paths, hashes, report = _hashes_only(self.real_source, res)
        train = set(getattr(ref, "training_hashes_", []) or [])
        keep = [i for i, h in enumerate(hashes) if h not in train]
        if len(keep) < len(hashes):
            self._note(f"{len(hashes) - len(keep)} of the {len(hashes)} real images are training images "
                       "(same file bytes) and were left out of the held-out set")
        paths = [paths[i] for i in keep]
        hashes = [hashes[i] for i in keep]
        if len(paths) <= self.pr_k:
            raise ParameterError(f"need more than {self.pr_k} held-out real images that are not training images, got {len(paths)}")
        self.real_paths, self.real_hashes, self.real_report = paths, hashes, report

        def load():
            li = load_images(paths, res)
            if li.hashes != hashes:
                raise RuntimeError("the real images changed while they were being read")
            return li.images

        self.real_features = self.extractor.file_features(paths, hashes, res, load, desc="Inception features (real)")
        self.real_codes = None
        self.real_recon_features = None
        if self.do_memorisation:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # already reported by the listing above
                enc = ref.encode(paths)
            sel = {h: i for i, h in enumerate(enc.hashes)}
            idx = [sel[h] for h in hashes if h in sel]
            if len(idx) < len(hashes):
                self._note(f"{len(hashes) - len(idx)} held-out image(s) could not be encoded and are left out of memorisation")
            latents = enc.latents if idx == list(range(len(enc.hashes))) else enc.latents[idx]
            self.real_codes = ref.model_.projector_.transform(latents)
            if self.inception_memorisation:
                self.real_recon_features = self.reconstruction_features(
                    self.real_codes, "Inception features (held-out reconstructions)")

    # ---------------------------------------------------------- training side
    def _prepare_train(self) -> None:
        ref = self.reference
        self.train_codes = ref.model_.codes_
        self.n_train = int(self.train_codes.shape[0])
        self.train_recon_features = None
        if self.inception_memorisation:
            self.train_recon_features = self.reconstruction_features(
                self.train_codes, "Inception features (training reconstructions)")

    def _copying(self, space: str, train, heldout, generated) -> CopyingStats:
        """C_T and authenticity in ``space``; the training side is prepared once per space."""
        ref = self._copying_refs.get(space)
        if ref is None:
            ref = self._copying_refs[space] = CopyingReference(train, heldout, space, seed=0)
        return ref.measure(generated, self.copying_cells)

    # ------------------------------------------------------------- measuring
    def evaluate(
        self,
        generator: Generator | None = None,
        n: int = 1000,
        seed: int | None = None,
        *,
        name: str | None = None,
        chunk_size: int = 1000,
        generate_kwargs: dict | None = None,
    ) -> EvalResult:
        """Generate ``n`` faces with ``generator`` (default: the reference pipeline) and measure
        them. ``seed`` None draws a fresh one (recorded in the result)."""
        gen = self.reference if generator is None else generator
        if not isinstance(gen, Generator):
            raise TypeError(f"{type(gen).__name__} has no generate(n, seed) method")
        if n <= self.pr_k:
            raise ParameterError(f"n must be more than {self.pr_k} (precision/recall's k), got {n}")
        if chunk_size < 1:
            raise ParameterError(f"chunk_size must be >= 1, got {chunk_size}")
        # Features of generated faces are cached only for an explicit seed (a run that can be
        # repeated); fresh-seed runs would only fill the cache.
        cache_generated = seed is not None
        seed = secrets.randbelow(2**31) if seed is None else int(seed)
        kwargs = dict(generate_kwargs or {})
        label = name or (getattr(gen, "name", None) if gen is not self.reference else None) or (
            "FacePipeline" if gen is self.reference else type(gen).__name__)
        ref = self.reference
        projector = ref.model_.projector_
        code_shape = tuple(self.train_codes.shape[1:])

        sizes = [min(chunk_size, n - s) for s in range(0, n, chunk_size)]
        seeds = _chunk_seeds(seed, len(sizes))
        feats, codes, provs = [], [], []
        # The memorisation figure's space: each face's nearest training faces are found as its
        # chunk arrives, and only the FIGURE_FACES closest faces keep their pixels.
        fig_space = "inception" if self.inception_memorisation else "latent_codes" if self.do_memorisation else None
        fig_train = self.train_recon_features if fig_space == "inception" else self.train_codes
        fig_near: list[tuple[np.ndarray, np.ndarray]] = []
        running = _RunningClosest(FIGURE_FACES) if fig_space else None
        t_gen = t_feat = t_near = 0.0
        ex = self.extractor
        saved_progress = ex.progress
        ex.progress = False
        try:
            with tqdm(total=n, desc=f"evaluating {label}", unit="face", disable=not self.progress) as bar:
                offset = 0
                for m, s in zip(sizes, seeds):
                    t0 = time.perf_counter()
                    out = gen.generate(m, seed=s, **kwargs)
                    t1 = time.perf_counter()
                    images = out.images if hasattr(out, "images") else out
                    if images.ndim != 4 or images.shape[0] != m or images.shape[1] != 3:
                        raise ValueError(f"{label}.generate({m}) returned images of shape {tuple(images.shape)}")
                    f = ex.features(images, cache=cache_generated)
                    feats.append(f)
                    t_feat += time.perf_counter() - t1
                    t_gen += t1 - t0
                    samples = getattr(out, "samples", None)
                    c = None
                    if samples is not None:
                        c = getattr(samples, "codes", None)
                        if c is None or tuple(c.shape[1:]) != code_shape:
                            lat = getattr(samples, "latents", None)
                            c = projector.transform(lat) if lat is not None else None
                    codes.append(c)
                    provs.append(getattr(samples, "provenance", None) if samples is not None else None)
                    if running is not None:
                        query = f if fig_space == "inception" else c
                        if query is None:  # no codes from this generator: no figure in code space
                            running = None
                        else:
                            t2 = time.perf_counter()
                            d, j = nearest_k(query, fig_train)
                            fig_near.append((d, j))
                            running.push(d[:, 0], offset, images)
                            t_near += time.perf_counter() - t2
                    offset += m
                    bar.update(m)
        finally:
            ex.progress = saved_progress

        t0 = time.perf_counter()
        gf = np.concatenate(feats)
        fid_value = fid(gf, self.real_features)
        if self._fid_floor is None and self.train_recon_features is not None and self.train_recon_features.shape[0] >= 2:
            self._fid_floor = fid(self.train_recon_features, self.real_features)
        fid_floor = self._fid_floor
        kid_value = kid(gf, self.real_features, subsets=self.kid_subsets, subset_size=self.kid_subset_size, seed=seed)
        pr = precision_recall(gf, self.real_features, k=self.pr_k)

        notes = list(self.notes)
        mem: dict[str, MemorisationStats] = {}
        cop: dict[str, CopyingStats] = {}
        known = {}
        if running is not None:
            known[fig_space] = (np.concatenate([d for d, _ in fig_near]), np.concatenate([j for _, j in fig_near]))
        if self.inception_memorisation:
            mem["inception"] = memorisation(gf, self.train_recon_features, self.real_recon_features,
                                            self.near_copy_quantile, "inception", known.get("inception"))
            cop["inception"] = self._copying("inception", self.train_recon_features, self.real_recon_features, gf)
        if self.do_memorisation:
            if all(c is not None for c in codes) and self.real_codes is not None:
                gc = torch.cat(codes)
                mem["latent_codes"] = memorisation(gc, self.train_codes, self.real_codes, self.near_copy_quantile,
                                                   "latent_codes", known.get("latent_codes"))
                cop["latent_codes"] = self._copying("latent_codes", self.train_codes, self.real_codes, gc)
            else:
                notes.append("the generator returned no latent codes: memorisation in latent space is skipped")
        all_prov = torch.cat(provs) if provs and all(p is not None for p in provs) else None
        prov = provenance_statistics(all_prov) if all_prov is not None else None
        closest = None
        if running is not None and fig_space in mem:
            starts = np.cumsum([0] + sizes[:-1])
            which = np.searchsorted(starts, running.idx, side="right") - 1
            closest = ClosestFaces(
                space=fig_space, indices=running.idx.copy(), distances=running.dist.copy(), images=running.images,
                provenance=all_prov[torch.as_tensor(running.idx)] if all_prov is not None else None,
                chunks=[(int(seeds[w]), int(i - starts[w])) for w, i in zip(which, running.idx)],
                training=_training_fingerprint(ref),
            )
        t_metrics = time.perf_counter() - t0 + t_near

        settings = {
            "generate_kwargs": kwargs,
            "chunk_size": chunk_size,
            "chunk_seeds": seeds if len(seeds) <= 64 else seeds[:64] + ["..."],
            "near_copy_quantile": self.near_copy_quantile,
            "copying_cells": self.copying_cells,
            "copying_min_generated_per_cell": DEFAULT_MIN_PER_CELL,
            "copying_kmeans_seed": 0,
            "kid_subsets": self.kid_subsets,
            "kid_subset_size": self.kid_subset_size,
            "precision_recall_k": self.pr_k,
            "real": [str(p) for p in self.real_paths[:1]] + (["..."] if len(self.real_paths) > 1 else []),
            "real_source": str(self.real_source) if isinstance(self.real_source, (str, os.PathLike)) else None,
            "latent_code_space": f"P0 codes {list(code_shape)} (whitened projector channels)",
        }
        if isinstance(gen, FacePipeline):
            settings["model"] = {k: v for k, v in gen.model_.get_params().items() if k != "verbose"}
        return EvalResult(
            generator=label,
            n=n,
            seed=seed,
            n_real=len(self.real_paths),
            n_train=self.n_train,
            resolution=ref.resolution,
            fid=fid_value,
            kid=kid_value,
            pr=pr,
            fid_training_reconstructions=fid_floor,
            memorisation=mem,
            copying=cop,
            provenance=prov,
            timings={"generation": t_gen, "features": t_feat, "metrics": t_metrics},
            settings=settings,
            extractor=self.extractor.description,
            notes=notes,
            generated_features=gf,
            closest=closest,
        )

    def memorisation_figure(self, result: EvalResult, folder: str | os.PathLike) -> tuple[Path, Path]:
        """The memorisation figure of a result of this evaluator (``memorisation_figure``)."""
        return memorisation_figure(result, self.reference, folder)


_SPACE_TEXT = {
    "inception": ("Inception space", "inception", "Inception-v3 pool3 features (2048-d), as for FID"),
    "latent_codes": ("latent-code space", "codes", "the model's P0 latent codes (whitened projector channels)"),
}


def _pct(share: float) -> str:
    return f"{100 * share:.0f} %" if share >= 0.01 else f"{100 * share:.1f} %"


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "generator"


def memorisation_figure(result: EvalResult, reference: FacePipeline | Evaluator | str | os.PathLike,
                        folder: str | os.PathLike, *, neighbours: int = 3) -> tuple[Path, Path]:
    """Draw the memorisation figure of ``result`` into ``folder``; returns (PNG, JSON) paths.

    One row per face among the (up to) 16 generated faces closest to the training set, nearest
    first: the face, then its ``neighbours`` nearest training faces, each with its distance
    written under it. Training faces are *decoded training reconstructions*,
    decode(P0*(code)), what the distances were measured on (see ``Evaluator``). The space is
    Inception features when the evaluation measured them, else latent codes; the file names and
    the title say which (``memorisation_<generator>_inception.png`` / ``..._codes.png``). A red
    frame marks a near copy (closer than the held-out near-copy threshold), and a red dashed line
    separates the rows below the threshold from the others. A training face that gave latent
    pixels to the face (its provenance, for LR-GMM-NN and LatentPatch) says what share.

    The JSON lists, per row, the face's position among the n generated faces (and its chunk seed
    and position: ``generate(chunk_size, seed)[position]`` gives it back), its distance,
    whether it is a near copy, its largest provenance sources, its nearest training faces
    (index into the model's training files, file, distance) and every tile's pixel box.

    ``reference``: the ``FacePipeline`` (or ``Evaluator``, or model file) the result was
    measured against; another training set is refused.
    """
    from .figures import RED, Tile, tile_rows

    ref = reference.reference if isinstance(reference, Evaluator) else reference
    if isinstance(ref, (str, os.PathLike)):
        ref = FacePipeline.load(ref, progress=False)
    c = result.closest
    if c is None:
        raise FigureError(
            f"no memorisation figure for {result.generator}: the evaluation kept no nearest training faces "
            "(memorisation was off, or the generator returned no latent codes with memorisation='codes')")
    stats = result.memorisation.get(c.space)
    if stats is None or stats.to_train_k_index is None:
        raise FigureError(f"no memorisation figure for {result.generator}: no nearest training faces in {c.space}")
    if _training_fingerprint(ref) != c.training:
        raise FigureError(f"the memorisation figure of {result.generator} needs the model it was measured against "
                          f"({result.n_train} training faces); this reference has another training set")
    if neighbours < 1:
        raise ParameterError(f"neighbours must be at least 1, got {neighbours}")
    space_title, tag, space_desc = _SPACE_TEXT.get(c.space, (c.space, _slug(c.space), c.space))
    folder = Path(folder)
    stem = f"memorisation_{_slug(result.generator)}_{tag}"
    png_path, json_path = folder / f"{stem}.png", folder / f"{stem}.json"

    near_j = stats.to_train_k_index[c.indices][:, :neighbours]
    near_d = stats.to_train_k[c.indices][:, :neighbours]
    files = list(getattr(ref, "training_files_", []) or [])
    uniq, inverse = np.unique(near_j, return_inverse=True)
    projector = ref.model_.projector_
    with torch.no_grad():
        train_u8 = quantize(ref.decode(projector.inverse_transform(ref.model_.codes_[torch.as_tensor(uniq)]),
                                       progress=False))
    inverse = inverse.reshape(near_j.shape)
    thr = stats.threshold
    q_pct = f"{100 * stats.quantile:g}"
    flags = c.distances < thr

    def sources(i: int) -> list[tuple[int, float]]:
        if c.provenance is None:
            return []
        from .core.provenance import provenance_shares

        return [(j, sh) for j, sh in provenance_shares(c.provenance[i]) if j >= 0]

    rows, records = [], []
    for r, (face, dist) in enumerate(zip(c.indices, c.distances)):
        src = sources(r)
        share_of = dict(src)
        top = f"most from #{src[0][0]} ({_pct(src[0][1])})" if src else ""
        row = [Tile(c.images[r], [f"face {int(face)}", f"d = {dist:.2f}",
                                 ("near copy", RED) if flags[r] else top], frame=RED if flags[r] else None)]
        for k in range(near_j.shape[1]):
            j = int(near_j[r, k])
            gave = share_of.get(j)
            name = Path(files[j]).name if j < len(files) else ""
            row.append(Tile(train_u8[inverse[r, k]], [f"#{j} {name}".strip(), f"d = {near_d[r, k]:.2f}",
                                                      f"gave {_pct(gave)} of its pixels" if gave else ""]))
        rows.append(row)
        records.append({
            "rank": r, "face": int(face), "chunk_seed": c.chunks[r][0] if c.chunks else None,
            "index_in_chunk": c.chunks[r][1] if c.chunks else None, "distance": float(dist),
            "near_copy": bool(flags[r]),
            "provenance_sources": [{"index": j, "file": files[j] if j < len(files) else None, "share": round(sh, 6)}
                                   for j, sh in src[:neighbours]] if c.provenance is not None else None,
            "nearest_training": [
                {"rank": k, "index": int(near_j[r, k]), "file": files[int(near_j[r, k])] if int(near_j[r, k]) < len(files) else None,
                 "distance": float(near_d[r, k])} for k in range(near_j.shape[1])],
        })
    n_below = int(flags.sum())
    title = (f"{result.generator}: the {len(rows)} of {result.n} generated faces closest to the training set in "
             f"{space_title} (seed {result.seed}), nearest first; beside each, its {near_j.shape[1]} nearest training "
             f"faces as decoded training reconstructions (what the distances compare). d: Euclidean distance in "
             f"{space_title}. Red frame: a near copy, closer to a training face than {100 - 100 * stats.quantile:g} % of "
             f"the {stats.heldout_to_train.size} held-out photos are (d < {thr:.2f}); "
             f"{int(stats.near_copies.sum())} of {result.n} faces are.")
    rule = (f"near-copy threshold d = {thr:.2f} (held-out {q_pct} % quantile): "
            f"{n_below} near cop{'y' if n_below == 1 else 'ies'} above this line")
    layout = tile_rows(rows, png_path, title=title, rules={n_below: rule}, column_gaps={1: 14})
    for rec, boxes in zip(records, layout.boxes):
        rec["box"] = list(boxes[0])
        for nb, box in zip(rec["nearest_training"], boxes[1:]):
            nb["box"] = list(box)
    doc = {
        "format": "lrgmm-memorisation-figure",
        "generator": result.generator,
        "seed": result.seed,
        "n_generated": result.n,
        "n_train": result.n_train,
        "n_heldout": int(stats.heldout_to_train.size),
        "space": c.space,
        "space_description": space_desc,
        "distance": "Euclidean",
        "training_faces": "decoded training reconstructions decode(P0*(code)), as the evaluation compares them",
        "near_copy_quantile": stats.quantile,
        "near_copy_threshold": thr,
        "near_copy_threshold_strict": stats.strict_threshold,
        "near_copies_total": int(stats.near_copies.sum()),
        "near_copies_shown": n_below,
        "figure": png_path.name,
        "image_size": list(layout.size),
        "faces": records,
    }
    atomic_write_json(json_path, doc)
    return png_path, json_path


def evaluate(
    generator: FacePipeline | Generator | str | os.PathLike,
    real,
    n: int = 1000,
    seed: int | None = None,
    *,
    reference: FacePipeline | str | os.PathLike | None = None,
    name: str | None = None,
    generate_kwargs: dict | None = None,
    memorisation: bool | str = True,
    near_copy_quantile: float = DEFAULT_QUANTILE,
    copying_cells: int | None = None,
    kid_subsets: int = 100,
    kid_subset_size: int = 1000,
    pr_k: int = 3,
    batch_size: int = 32,
    chunk_size: int = 1000,
    cache: bool = True,
    progress: bool = True,
    extractor: InceptionExtractor | None = None,
    figures: str | os.PathLike | None = None,
) -> EvalResult:
    """Measure a generator against held-out real faces (see the module docstring).

    generator: a model file path, a fitted ``FacePipeline``, or any ``Generator`` (then
        ``reference`` or ``generator.pipeline`` gives the fitted pipeline it is compared with).
    real: folder, file or list of held-out real face images.
    n: faces to generate. seed: their seed (None: a fresh one, recorded in the result).
    generate_kwargs: passed to ``generate`` (e.g. ``{"nn": False}`` for plain LR-GMM).
    figures: a folder for the memorisation figure and its JSON (``memorisation_figure``; listed in
        ``result.files``); needs memorisation.
    The other parameters are those of ``Evaluator`` and ``Evaluator.evaluate``.
    """
    if figures is not None:
        if not memorisation:
            raise FigureError("the memorisation figure needs memorisation: drop memorisation=False (--memorisation none)")
        from .io.atomic import check_writable_target

        check_writable_target(Path(figures) / "memorisation.png")  # a bad folder fails now, not after the work
    gen, ref, default_name = _resolve(generator, reference, progress)
    ev = Evaluator(
        ref, real, memorisation=memorisation, near_copy_quantile=near_copy_quantile, copying_cells=copying_cells,
        kid_subsets=kid_subsets,
        kid_subset_size=kid_subset_size, pr_k=pr_k, batch_size=batch_size, cache=cache, progress=progress,
        extractor=extractor,
    )
    result = ev.evaluate(gen, n, seed, name=name or default_name, chunk_size=chunk_size, generate_kwargs=generate_kwargs)
    result.timings = {"preparation": ev.prepare_seconds, **result.timings}
    if figures is not None:
        try:
            result.files = list(memorisation_figure(result, ref, figures))
        except FigureError as exc:  # (a generator without codes, in code space) keep the measurements
            result.notes.append(str(exc))
            warnings.warn(str(exc), EvalWarning, stacklevel=2)
    return result
