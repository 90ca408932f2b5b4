"""The measuring: ``Evaluator`` prepares the real and training sides once (held-out photos,
training codes, their decoded reconstructions and Inception features), then generates a
generator's faces in chunks and computes FID, KID, precision/recall, memorisation, data-copying
and provenance statistics on them, into an ``EvalResult``.

For the memorisation figure, the evaluation keeps what it needs as the faces stream by: every
face's 3 nearest training faces in the figure's space (Inception when memorisation is on, else
latent codes) and the pixels of the 16 closest faces seen so far (``_RunningClosest``), never
all n images.

Also here: ``Generator`` (what can be measured), ``reconstruction_key`` and
``reconstruction_features`` (Inception features of decoded training reconstructions, a disk
cache the studio shares) and the chunk seeds.
"""

from __future__ import annotations

import hashlib
import os
import time
import warnings
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from tqdm.auto import tqdm

from ..core.randomness import resolve_seed
from ..errors import EvalWarning, ParameterError
from ..io.images import InputReport, iter_images, load_images
from ..metrics.copying import DEFAULT_MIN_PER_CELL, CopyingReference, CopyingStats
from ..metrics.features import InceptionExtractor, quantize
from ..metrics.frechet import fid
from ..metrics.kernel_distance import kid
from ..metrics.memorisation import (
    DEFAULT_QUANTILE,
    MemorisationStats,
    memorisation,
    nearest_k,
    provenance_statistics,
)
from ..metrics.precision_recall import precision_recall
from ..pipeline.face_pipeline import FacePipeline
from .figure import draw_memorisation_figure
from .result import ClosestFaces, EvalResult, training_fingerprint

__all__ = ["Evaluator", "Generator", "reconstruction_features", "reconstruction_key"]

FIGURE_FACES = 16  # generated faces in the memorisation figure (the closest to the training set)


@runtime_checkable
class Generator(Protocol):
    """What ``evaluate`` can measure: ``generate(n, seed)`` -> object with ``.images``."""

    def generate(self, n: int, seed: int | None = None, **kwargs: Any) -> Any: ...


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


def reconstruction_key(pipe: FacePipeline, codes: torch.Tensor, latents: torch.Tensor | None = None) -> str:
    """Identifies decode(P0*(codes)), or decode(latents) when ``latents`` are given: autoencoder
    weights and precision, resolution, projector, codes or latents (the feature cache key of
    ``reconstruction_features``)."""
    ae = pipe.autoencoder_
    pr = pipe.model_.projector_
    h = hashlib.sha256()
    # latent_key is the plain id in fp32 (keys made before precisions existed stay valid) and
    # says "+bf16" otherwise: bf16 decodes are other images.
    if latents is not None:
        h.update(f"{ae.latent_key}|{ae.weights_sha256}|{pipe.resolution}|{tuple(latents.shape)}|full".encode())
        h.update(latents.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
        return "recon-full-" + h.hexdigest()
    h.update(f"{ae.latent_key}|{ae.weights_sha256}|{pipe.resolution}|{tuple(codes.shape)}".encode())
    for t in (pr.mean_, pr.components_, pr.eigenvalues_, codes):
        h.update(t.detach().to("cpu").contiguous().numpy().tobytes())
    return "recon-" + h.hexdigest()


def reconstruction_features(pipe: FacePipeline, codes: torch.Tensor, extractor: InceptionExtractor,
                            desc: str = "Inception features (reconstructions)", chunk: int = 256,
                            on_chunk=None, latents: torch.Tensor | None = None) -> np.ndarray:
    """Inception features of decode(P0*(codes)) for a fitted ``pipe`` or, when ``latents`` (the
    same images' full latents) are given, of decode(latents), the photos' own reconstructions:
    decoded and measured ``chunk`` images at a time, cached on disk under ``reconstruction_key``
    (the evaluation and the studio share the cache). ``on_chunk(done, total)`` is called before
    each chunk is decoded (progress; it may raise to stop)."""
    projector = pipe.model_.projector_
    n = int(codes.shape[0])

    def batches():
        for s in range(0, n, chunk):
            if on_chunk is not None:
                on_chunk(s, n)
            with torch.no_grad():
                x = latents[s : s + chunk].to(torch.float32) if latents is not None else projector.inverse_transform(codes[s : s + chunk])
                yield pipe.decode(x, progress=False)
        if on_chunk is not None:
            on_chunk(n, n)

    return extractor.keyed_features(reconstruction_key(pipe, codes, latents), batches, desc, {"kind": "reconstructions"})


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

    def reconstruction_features(self, codes: torch.Tensor, desc: str, latents: torch.Tensor | None = None) -> np.ndarray:
        """Inception features of the reconstructions: decode(latents) when the model keeps its
        training latents (its NN step copies full latent pixels, so a copy is measured against the
        photo's own reconstruction), decode(P0*(codes)) for a model without (format 2 files).
        Decoded and measured in chunks, cached (``reconstruction_features``)."""
        full = self.reference.model_.latents_ is not None
        return reconstruction_features(self.reference, codes, self.extractor, desc, latents=latents if full else None)

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
                    self.real_codes, "Inception features (held-out reconstructions)", latents)

    # ---------------------------------------------------------- training side
    def _prepare_train(self) -> None:
        ref = self.reference
        self.train_codes = ref.model_.codes_
        self.n_train = int(self.train_codes.shape[0])
        self.train_recon_features = None
        if self.inception_memorisation:
            self.train_recon_features = self.reconstruction_features(
                self.train_codes, "Inception features (training reconstructions)", ref.model_.latents_)

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
        seed = resolve_seed(seed)
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
                training=training_fingerprint(ref),
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
        return draw_memorisation_figure(result, self.reference, folder)
