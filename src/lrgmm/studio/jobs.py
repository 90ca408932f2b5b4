"""Fit jobs: a list of image files encoded (with progress) and fitted into a new model in the fit
pool; the jobs are kept by id, the finished ones bounded."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..data.splits import seeded_subset
from ..errors import ImageInputError, LrgmmError, NotFoundError, StudioError
from ..io.images import InputReport
from ..pipeline.encoding import EncodedSet, encode_images
from ..pipeline.face_pipeline import FacePipeline
from .names import new_id, quote
from .limits import Limits
from .pools import WorkPool
from .uploads import oversized_images


@dataclass
class FitJob:
    id: str
    source: str
    n_images: int
    state: str = "queued"  # queued, encoding, fitting, done, error
    done: int = 0
    total: int = 0
    message: str = ""
    model_id: str | None = None
    error: str | None = None
    report: str | None = None
    created: float = field(default_factory=time.time)
    seconds: float | None = None

    @property
    def finished(self) -> bool:
        return self.state in ("done", "error")

    def info(self) -> dict:
        return {
            "id": self.id,
            "source": self.source,
            "state": self.state,
            "progress": {"done": self.done, "total": self.total},
            "message": self.message,
            "model": self.model_id,
            "error": self.error,
            "report": self.report,
            "seconds": self.seconds,
        }


def encode_in_chunks(paths: list[Path], autoencoder, resolution: int, batch_size: int, cache, job: FitJob,
                     chunk: int = 16, skipped: list[tuple[str, str]] = ()) -> EncodedSet:
    """``encode_images`` over chunks of ``paths`` so ``job.done`` advances as faces are encoded;
    the chunks' results are joined into one ``EncodedSet`` (duplicates across chunks kept once).
    ``skipped``: (path, reason) of files left out beforehand, counted and listed in the report."""
    latents, out_paths, hashes = [], [], []
    report = InputReport(resolution=resolution, n_found=len(skipped), skipped=list(skipped))
    seen: dict[str, str] = {}
    n_encoded = n_cached = 0
    job.total = len(paths)
    for start in range(0, len(paths), chunk):
        part = paths[start : start + chunk]
        try:
            enc = encode_images(part, autoencoder, resolution, batch_size, cache, progress=False)
        except ImageInputError as exc:  # nothing usable in this chunk: keep going
            report.n_found += len(part)
            report.skipped.extend((str(p), str(exc).splitlines()[0]) for p in part)
            job.done = min(len(paths), start + chunk)
            continue
        r = enc.report
        report.n_found += r.n_found
        report.skipped += r.skipped
        report.duplicates += r.duplicates
        report.upsampled += r.upsampled
        for z, p, h in zip(enc.latents, enc.paths, enc.hashes):
            if h in seen:
                report.duplicates.append((str(p), seen[h]))
                continue
            seen[h] = str(p)
            latents.append(z)
            out_paths.append(p)
            hashes.append(h)
        n_encoded += enc.n_encoded
        n_cached += enc.n_cached
        job.done = min(len(paths), start + chunk)
    report.n_used = len(out_paths)
    report.error_if_empty()
    return EncodedSet(torch.stack(latents), out_paths, hashes, report, resolution, autoencoder.id, n_encoded, n_cached)


@dataclass(eq=False)
class FitJobs:
    """Fit jobs by id (``jobs``), run one at a time in ``pool``.

    ``limits``: the studio's ``Limits`` (``max_fit_images``, ``max_jobs``, ``max_data_pixels``);
    ``pipeline_options``: extra ``FacePipeline`` arguments; ``add_model(name, pipeline)``
    registers a fitted pipeline and returns its model id; ``public(text)`` is a report or error
    as clients may see it (no server path)."""

    pool: WorkPool
    limits: Limits
    pipeline_options: dict
    add_model: Callable[[str, FacePipeline], str]
    public: Callable[[str], str]
    jobs: OrderedDict[str, FitJob] = field(default_factory=OrderedDict, init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def start(self, source: str, paths: list[Path], n_images: int | None = None, seed: int = 0,
              n_components: int | None = None, temperature: float | None = None) -> FitJob:
        """Queue a fit on ``n_images`` of ``paths`` (all of them by default; else a seeded random
        pick), ``source`` naming them to clients."""
        if len(paths) < 2:
            raise StudioError(f"{source}: {len(paths)} image(s); a fit needs at least 2")
        n = len(paths) if n_images is None else n_images
        if not 2 <= n <= min(len(paths), self.limits.max_fit_images):
            raise StudioError(
                f"n_images must be between 2 and {min(len(paths), self.limits.max_fit_images)} for {source} "
                f"({len(paths)} images, at most {self.limits.max_fit_images} per fit), got {n}"
            )
        if n < len(paths):
            paths = seeded_subset(paths, n, seed)
        job = FitJob(new_id("j"), source, n, total=n)
        options = {"random_state": seed, "n_components": n_components, "progress": False, **self.pipeline_options}
        if temperature is not None:
            options["temperature"] = temperature
        with self._lock:
            # Registered only once the pool has taken it (a refused fit raises BusyError here and
            # leaves no trace), and only finished jobs make room: a queued or running one stays
            # visible. Unfinished jobs are bounded by the pool (one running, a few waiting).
            self.pool.submit(self._run, job, paths, options)
            self.jobs[job.id] = job
            finished = [k for k, j in self.jobs.items() if j.finished]
            while len(self.jobs) > self.limits.max_jobs and finished:
                del self.jobs[finished.pop(0)]
        return job

    def get(self, job_id: str) -> FitJob:
        job = self.jobs.get(job_id) if isinstance(job_id, str) else None
        if job is None:
            raise NotFoundError(f"unknown job {quote(job_id)}")
        return job

    def _run(self, job: FitJob, paths: list[Path], options: dict) -> None:
        start = time.perf_counter()
        try:
            pipe = FacePipeline(**options)
            job.state, job.message = "encoding", "loading the autoencoder"
            ae = pipe._resolve_autoencoder()
            pipe.autoencoder = ae
            job.message = "checking image sizes"
            paths, too_large = oversized_images(paths, self.limits.max_data_pixels)
            job.message = "encoding faces (cached ones are read back)"
            encoded = encode_in_chunks(paths, ae, pipe.resolution, pipe.batch_size, pipe.cache, job,
                                       skipped=too_large)
            job.state, job.message = "fitting", f"fitting the LR-GMM on {len(encoded)} faces"
            pipe.fit(encoded)
            job.model_id = self.add_model(f"fit: {job.source}, {len(encoded)} faces", pipe)
            job.report = self.public(encoded.report.summary())
            job.state, job.message = "done", f"fitted in {pipe.fit_seconds_:.2f} s after encoding"
        except Exception as exc:  # noqa: BLE001  (any failure is reported to the page; the server goes on)
            msg = str(exc) if isinstance(exc, LrgmmError | ValueError) else f"{type(exc).__name__}: {exc}"
            job.state, job.error = "error", self.public(msg)
        finally:
            job.seconds = round(time.perf_counter() - start, 3)
