"""Nearest training faces: for a clicked face, its 3 nearest training faces in Inception space,
measured against the model's training faces as decoded training reconstructions, as ``lrgmm
eval`` does. Their features are computed once per model, lazily on the first request, in the fit
pool (about 0.1 s per training face on 2 cores), and kept in the feature cache on disk
(``lrgmm.metrics.features``, the same entry ``lrgmm eval`` uses); until then the endpoint answers
202 with the progress."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..core.provenance import provenance_shares
from ..errors import FailedError, NotAvailableError, StudioError
from .grids import Grid
from .limits import Limits
from .pools import WorkPool


@dataclass
class NeighbourIndex:
    """Inception features of one model's training faces (decoded training reconstructions),
    computed once in the fit pool: ``state`` computing (``done`` of ``total``), ready
    (``features`` (N, 2048); ``typical``: median distance from a training face to its nearest
    other training face, on up to 256 of them) or error (``error``, ``status``)."""

    model_id: str
    state: str = "computing"
    done: int = 0
    total: int = 0
    features: np.ndarray | None = None
    typical: float | None = None
    error: str | None = None
    status: int = 500
    seconds: float | None = None


class _Stopped(Exception):
    """The studio closed while a computation ran."""


@dataclass(eq=False)
class Neighbours:
    """The models' ``NeighbourIndex`` by model id (``indices``) and the Inception extractor.

    Features are computed in ``fit_pool``, a face's own in ``decode_pool``; ``limits``: the
    studio's ``Limits`` (``max_neighbour_models``, ``neighbour_chunk``); ``display_name(path)``
    names a training file to clients, ``public(text)`` an error message."""

    limits: Limits
    fit_pool: WorkPool
    decode_pool: WorkPool
    display_name: Callable[[str | Path], str]
    public: Callable[[str], str]
    indices: OrderedDict[str, NeighbourIndex] = field(default_factory=OrderedDict, init=False)
    _extractor: Any = field(default=None, init=False, repr=False)
    _closed: bool = field(default=False, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def close(self) -> None:
        """A running feature computation stops at its next chunk."""
        self._closed = True

    def _inception(self):
        """The Inception extractor (loaded once, on first use), with the on-disk feature cache."""
        from ..metrics.features import InceptionExtractor, MissingExtractorError

        with self._lock:
            if self._extractor is None:
                try:
                    self._extractor = InceptionExtractor(cache=True, progress=False)
                except MissingExtractorError as exc:
                    raise NotAvailableError(f"nearest training faces need the Inception network: {exc}") from None
            return self._extractor

    def index(self, model_id: str, pipeline) -> NeighbourIndex:
        """The ``NeighbourIndex`` of model ``model_id`` (its fitted ``pipeline``), its computation
        queued in the fit pool on first request. At most ``max_neighbour_models`` are kept (least
        recently used finished ones dropped); a failed one is forgotten once reported, so the next
        request tries again."""
        with self._lock:
            ni = self.indices.get(model_id)
            if ni is not None:
                self.indices.move_to_end(model_id)
                return ni
            ni = NeighbourIndex(model_id, total=int(pipeline.model_.codes_.shape[0]))
            self.fit_pool.submit(self._compute, pipeline, ni)  # BusyError: nothing registered
            self.indices[model_id] = ni
            done = [k for k, v in self.indices.items() if v.state != "computing" and k != model_id]
            while len(self.indices) > self.limits.max_neighbour_models and done:
                del self.indices[done.pop(0)]
            return ni

    def _compute(self, pipe, ni: NeighbourIndex) -> None:
        from ..evaluation import reconstruction_features
        from ..metrics.memorisation import nearest_k

        start = time.perf_counter()

        def progress(done: int, total: int) -> None:
            if self._closed:
                raise _Stopped()
            ni.done, ni.total = done, total

        try:
            ex = self._inception()
            # the photos' own reconstructions where the model keeps its latents (what faces copy from)
            feats = reconstruction_features(pipe, pipe.model_.codes_, ex, "Inception features (studio)",
                                            chunk=self.limits.neighbour_chunk, on_chunk=progress,
                                            latents=pipe.model_.latents_)
            n = feats.shape[0]
            if n >= 2:  # the scale of a distance: how far training faces are from each other
                pick = np.random.default_rng(0).choice(n, size=min(256, n), replace=False)
                d, _ = nearest_k(feats[pick], feats, k=2)
                ni.typical = float(np.median(d[:, 1]))
            ni.features, ni.done, ni.state = feats, n, "ready"
        except StudioError as exc:
            ni.error, ni.status, ni.state = str(exc), exc.status, "error"
        except _Stopped:
            ni.error, ni.state = "the studio stopped", "error"
        except Exception as exc:  # noqa: BLE001  (reported to the page; the server goes on)
            ni.error, ni.state = self.public(f"computing the training faces' features failed: {type(exc).__name__}: {exc}"), "error"
        finally:
            ni.seconds = round(time.perf_counter() - start, 3)

    async def nearest(self, grid: Grid, index: int, model_id: str, pipeline) -> tuple[int, dict]:
        """(HTTP status, body): 200 with face ``index`` of ``grid``'s 3 nearest training faces of
        model ``model_id`` (its fitted ``pipeline``), nearest first, or 202 with the progress while
        the model's training features are computed (the page polls)."""
        ni = self.index(model_id, pipeline)
        if ni.state == "computing":
            return 202, {"state": "computing", "grid": grid.id, "face": index, "model": model_id,
                         "done": ni.done, "total": ni.total,
                         "message": f"computing the Inception features of the model's {ni.total} training faces "
                                    "(once per model, kept on disk)"}
        if ni.state == "error":
            with self._lock:
                if self.indices.get(model_id) is ni:
                    del self.indices[model_id]
            raise (NotAvailableError if ni.status == 501 else FailedError)(ni.error)
        feats = grid.features.get(index)
        if feats is None:
            face = await grid.face_array(index)
            x = torch.from_numpy(np.ascontiguousarray(face.transpose(2, 0, 1)))[None]
            feats = await self.decode_pool.run(lambda: self._inception().features(x, cache=False))
            grid.features[index] = feats
        from ..metrics.memorisation import nearest_k

        dist, idx = nearest_k(feats, ni.features, k=3)
        shares = {}
        if grid.provenance is not None:
            shares = {i: s for i, s in provenance_shares(grid.provenance[index])}
        files = pipeline.training_files_
        return 200, {
            "state": "ready", "grid": grid.id, "face": index, "model": model_id, "space": "inception",
            "training_faces": "decoded training reconstructions (what the distances compare; thumbnails show the photos)",
            "typical_distance": ni.typical,
            "nearest": [
                {"rank": r, "index": int(j), "file": self.display_name(files[j]), "name": Path(files[j]).name,
                 "distance": round(float(d), 4), "share": round(shares[int(j)], 6) if int(j) in shares else None,
                 "thumbnail": f"/api/models/{model_id}/training/{int(j)}.png"}
                for r, (j, d) in enumerate(zip(idx[0], dist[0]))
            ],
        }
