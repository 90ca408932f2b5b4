"""The studio's state, independent of HTTP: ``Studio`` holds the models, data folders, uploads
(``uploads``), fit jobs (``jobs``), generated grids (``grids``) and nearest training faces
(``neighbours``), and runs the CPU-bound work in bounded worker pools (``pools``).

Paths: the server reads images only from (a) the data folders given at start-up, listed by the
server itself and chosen by the client by *name* from that list, (b) the upload folders it created
under its own temporary directory (one per upload, owned by the session that sent it), and (c) the
training files recorded in a loaded model, addressed by index. No request can name a path, and
nothing sent back names one either: provenance and job reports name files relative to their data
folder (``utkface/images/x.jpg``) or by file name (``Studio.display_name``, ``Studio.public``).
"""

from __future__ import annotations

import asyncio
import importlib.util
import math
import os
import re
import shutil
import tempfile
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..core.model import resolve_spread
from ..data.masks import box_mask
from ..editing import AttributeEdit
from ..errors import ImageInputError, NotAvailableError, NotFoundError, StudioError
from ..io.images import list_images, prepare_image, to_uint8_hwc
from ..pipeline.conditional import N_COMPLETIONS
from ..pipeline.face_pipeline import FacePipeline
from .grids import Grid, GridCache, decode_grid, png_bytes, provenance_png, provenance_record, tile_png
from .jobs import FitJob, FitJobs
from .limits import Limits
from .names import new_id, quote
from .neighbours import NeighbourIndex, Neighbours
from .pools import WorkPool
from .uploads import Upload, UploadStore


@dataclass
class ModelEntry:
    id: str
    name: str
    pipeline: FacePipeline
    origin: str  # "file" or "fit"
    created: float = field(default_factory=time.time)

    def info(self) -> dict:
        pipe = self.pipeline
        m = pipe.model_
        return {
            "id": self.id,
            "name": self.name,
            "origin": self.origin,
            "n_images": len(pipe.training_files_),
            "n_components": int(m.n_components_),
            "n_channels": int(m.codes_.shape[1]),
            "latent_grid": list(m.codes_.shape[2:]),
            "resolution": pipe.resolution,
            "temperature": float(m.temperature_),
            "spread": float(m.spread),  # psi of the draws (the model's; not a studio control)
            "nn_iterations": int(m.nn_iterations),
            "patch_size": int(m.patch_size),
            "nn_order": m.nn_order,
            "max_share": m.max_share,  # the model's default copy budget (None: none)
            "min_max_share": m.min_max_share(),  # the smallest budget its clusters can meet
            "autoencoder": pipe.autoencoder_.id,
            "precision": pipe.autoencoder_.precision,  # the decoder's arithmetic (serve --precision)
        }


class Studio:
    """Models, data folders, uploads, fit jobs and generated grids of one studio server.

    Parameters
    ----------
    models : model files to load at start-up (``lrgmm serve MODEL...``).
    data : folders of face photos the page may fit from (each folder and its sub-folders that hold
        images are offered by name).
    workers : decoding threads (the grid work); sampling and fitting have one thread each.
    limits : ``Limits``.
    pipeline_options : extra ``FacePipeline`` arguments for models fitted in the studio (tests pass
        ``autoencoder=`` an already-loaded TAEF2).
    """

    def __init__(self, models=(), data=(), workers: int = 1, limits: Limits | None = None,
                 pipeline_options: dict | None = None):
        self.limits = limits or Limits()
        self.pipeline_options = dict(pipeline_options or {})
        self.models: OrderedDict[str, ModelEntry] = OrderedDict()
        self.grids = GridCache(self.limits.max_cached_faces)
        self.decode_pool = WorkPool("decode", max(1, int(workers)), self.limits.max_queue)
        self.sample_pool = WorkPool("sample", 1, self.limits.max_queue)
        self.fit_pool = WorkPool("fit", 1, 4)
        self.fit_jobs = FitJobs(self.fit_pool, self.limits, self.pipeline_options,
                                lambda name, pipe: self._add_model(name, pipe, "fit").id, self.public)
        self.neighbours = Neighbours(self.limits, self.fit_pool, self.decode_pool, self.display_name, self.public)
        self._lock = threading.Lock()
        self._thumbs: OrderedDict[tuple, bytes] = OrderedDict()
        self._edits: OrderedDict[tuple, object] = OrderedDict()
        self._tmp = Path(tempfile.mkdtemp(prefix="lrgmm-studio-"))
        self.upload_store = UploadStore(self._tmp, self.limits)
        try:  # a bad --data folder or model file must not leave the temporary folder behind
            self.data_roots = [Path(d).resolve() for d in data]
            for root in self.data_roots:
                if not root.is_dir():
                    raise ImageInputError(f"--data {root}: not a folder; pass a folder of face photos")
            self.folders = self._list_folders()
            for path in models:
                self.load_model(path)
        except BaseException:
            self.close()
            raise

    # ---------------------------------------------------------------- features
    @staticmethod
    def features() -> dict:
        """Which panels the page shows. Completion needs nothing optional; the edit panel fits a
        Wasserstein edit (``AttributeEdit``'s default method), which needs GeomLoss (``lrgmm[edit]``)."""
        return {"edit": importlib.util.find_spec("geomloss") is not None, "complete": True}

    def status(self) -> dict:
        return {
            "models": len(self.models),
            "features": self.features(),
            "queues": {p.name: p.state() for p in (self.sample_pool, self.decode_pool, self.fit_pool)},
            "cache": {"grids": len(self.grids), "faces": self.grids.n_faces(),
                      "max_faces": self.limits.max_cached_faces},
            "limits": {
                "max_faces": self.limits.max_faces,
                "max_nn_iterations": self.limits.max_nn_iterations,
                "max_upload_files": self.limits.max_upload_files,
                "max_upload_bytes": self.limits.max_upload_bytes,
                "max_fit_images": self.limits.max_fit_images,
            },
        }

    def close(self) -> None:
        """Stop the pools and remove the temporary folder (uploads); safe to call twice."""
        self.neighbours.close()  # a running feature computation stops at its next chunk
        for pool in (self.sample_pool, self.decode_pool, self.fit_pool):
            pool.shutdown()
        shutil.rmtree(self._tmp, ignore_errors=True)

    # ------------------------------------------------------------ public names
    def display_name(self, path) -> str:
        """How a file is named to clients: relative to its data folder, prefixed with the folder's
        name as /api/folders lists it (``utkface/images/x.jpg``), else by its file name alone
        (uploads, training files of a loaded model): never an absolute server path."""
        p = Path(path)
        for root in self.data_roots:
            try:
                return f"{root.name}/{p.relative_to(root).as_posix()}"
            except ValueError:
                continue
        return p.name

    def public(self, text: str) -> str:
        """``text`` (a job report, an error) with the server's folders replaced by the names
        clients see: data folders by their name, the upload folders removed."""
        text = re.sub(re.escape(str(self._tmp) + os.sep) + r"[A-Za-z0-9_-]+" + re.escape(os.sep), "", text)
        for root in sorted(self.data_roots, key=lambda r: -len(str(r))):
            if root.name:  # (a data folder "/" has no name to show)
                text = text.replace(str(root), root.name)
        return text

    # ------------------------------------------------------------------ models
    def load_model(self, path) -> ModelEntry:
        run = {k: v for k, v in self.pipeline_options.items() if k in ("precision", "batch_size")}
        pipe = FacePipeline.load(path, progress=False, **run)
        name = Path(path).name
        return self._add_model(name, pipe, "file")

    def _add_model(self, name: str, pipe: FacePipeline, origin: str) -> ModelEntry:
        with self._lock:
            entry = ModelEntry(new_id("m"), name, pipe, origin)
            self.models[entry.id] = entry
            fitted = [k for k, e in self.models.items() if e.origin == "fit"]
            while len(fitted) > self.limits.max_models:
                del self.models[fitted.pop(0)]
            return entry

    def model(self, model_id: str) -> ModelEntry:
        entry = self.models.get(model_id) if isinstance(model_id, str) else None
        if entry is None:
            known = ", ".join(self.models) or "none loaded yet: fit one"
            raise NotFoundError(f"unknown model id {quote(model_id)} (known: {known})")
        return entry

    def training_thumbnail(self, model_id: str, index: int, size: int = 64) -> bytes:
        """One training face of a model, by index into its training files, as a PNG."""
        entry = self.model(model_id)
        files = entry.pipeline.training_files_
        if not 0 <= index < len(files):
            raise NotFoundError(f"training index {index} out of range: model {model_id} has {len(files)} training faces (0..{len(files) - 1})")
        if size not in (32, 64, 128, 256):
            raise StudioError(f"thumbnail size must be one of 32, 64, 128, 256, got {size}")
        key = (model_id, index, size)
        with self._lock:
            if key in self._thumbs:
                self._thumbs.move_to_end(key)
                return self._thumbs[key]
        try:
            arr = prepare_image(files[index], size).array
        except ImageInputError as exc:
            reason = str(exc).replace(str(files[index]), self.display_name(files[index]))
            raise NotFoundError(f"training face {index} cannot be shown: {self.public(reason)}") from None
        png = png_bytes(to_uint8_hwc(arr))
        with self._lock:
            self._thumbs[key] = png
            while len(self._thumbs) > self.limits.thumbnail_cache:
                self._thumbs.popitem(last=False)
        return png

    # ----------------------------------------------------------------- folders
    def _list_folders(self) -> dict[str, Path]:
        """Each data root and its sub-folders (two levels) that hold images, by display name."""
        out: dict[str, Path] = {}
        for root in self.data_roots:
            cands = [root] + sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
            cands += sorted(q for p in cands[1:] for q in p.iterdir() if q.is_dir() and not q.name.startswith("."))
            for folder in cands:
                rel = folder.relative_to(root)
                name = root.name if str(rel) == "." else f"{root.name}/{rel.as_posix()}"
                if any(f.is_file() and f.suffix.lower() in {".jpg", ".jpeg", ".png", ".webp"} for f in folder.iterdir()):
                    out[name] = folder
        return out

    def folder_list(self) -> list[dict]:
        return [{"name": name} for name in self.folders]

    # ----------------------------------------------------------------- uploads
    @property
    def uploads(self) -> dict[str, Upload]:
        """Uploads by id (``UploadStore.uploads``)."""
        return self.upload_store.uploads

    def save_upload(self, session: str, files: list[tuple[str, bytes]]) -> Upload:
        """Check and store uploaded images in a new folder of the temporary directory, owned by
        ``session`` (``UploadStore.save``: all or nothing, bounded per session and in all)."""
        return self.upload_store.save(session, files)

    # -------------------------------------------------------------------- fits
    @property
    def jobs(self) -> dict[str, FitJob]:
        """Fit jobs by id (``FitJobs.jobs``)."""
        return self.fit_jobs.jobs

    def start_fit(self, *, folder: str | None = None, upload: str | None = None, session: str = "",
                  n_images: int | None = None, seed: int = 0, n_components: int | None = None,
                  temperature: float | None = None) -> FitJob:
        """Queue a fit from a named data folder or from one of this session's uploads."""
        if (folder is None) == (upload is None):
            raise StudioError("give exactly one of 'folder' (a name from /api/folders) or 'upload' (an id from /api/uploads)")
        if folder is not None:
            if folder not in self.folders:
                names = ", ".join(self.folders) or "none: start the server with --data FOLDER"
                raise NotFoundError(f"unknown data folder {quote(folder)}; choose one of the listed names ({names})")
            paths = list_images(self.folders[folder]).paths
            source = folder
        else:
            up = self.upload_store.use(upload, session)
            paths = sorted(up.folder / f for f in up.files)
            source = f"upload {upload} ({len(paths)} files)"
        return self.fit_jobs.start(source, paths, n_images, seed, n_components, temperature)

    def job(self, job_id: str) -> FitJob:
        return self.fit_jobs.get(job_id)

    # ---------------------------------------------------------------- generate
    def check_generate(self, n: int, temperature: float | None, nn_iterations: int | None, entry: ModelEntry,
                       max_share: float | None = None) -> None:
        lim = self.limits
        if not 1 <= n <= lim.max_faces:
            raise StudioError(f"n must be between 1 and {lim.max_faces}, got {n}")
        fitted = entry.pipeline.model_.temperature_
        if temperature is not None and not (0 < temperature <= fitted and math.isfinite(temperature)):
            raise StudioError(f"temperature (lambda) must be in (0, {fitted}] for this model (its fitted lambda), got {temperature}")
        if nn_iterations is not None and not 1 <= nn_iterations <= lim.max_nn_iterations:
            raise StudioError(f"nn_iterations must be between 1 and {lim.max_nn_iterations}, got {nn_iterations}")
        if max_share is not None:
            need = entry.pipeline.model_.min_max_share()
            if not (math.isfinite(max_share) and need <= max_share <= 1):
                raise StudioError(f"max_share must be in [{math.ceil(need * 1e4 - 1e-9) / 1e4:g}, 1] for this model "
                                  f"(the smallest share its training clusters can meet; 1 = no budget), got {max_share}")

    async def generate(self, model_id: str, n: int, seed: int, nn: bool = True, temperature: float | None = None,
                       nn_iterations: int | None = None, replaces: str | None = None,
                       max_share: float | None = None, nn_order: str | None = None) -> Grid:
        """Sample n latents at once (milliseconds), then queue their decoding in small batches;
        returns the grid at once, its faces become ready one batch at a time."""
        entry = self.model(model_id)
        self.check_generate(n, temperature, nn_iterations, entry, max_share)
        if replaces:  # the page moved on: stop decoding the grid it replaces
            try:
                self.grids.get(replaces).cancelled = True
            except NotFoundError:
                pass
        pipe = entry.pipeline
        samples = await self.sample_pool.run(
            lambda: pipe.model_.sample(n, seed, nn=nn, temperature=temperature, nn_iterations=nn_iterations,
                                       max_share=max_share, nn_order=nn_order)
        )
        share = pipe.model_.max_share if max_share is None else max_share
        settings = {"seed": seed, "nn": nn, "n": n,
                    "temperature": pipe.model_.temperature_ if temperature is None else temperature,
                    "spread": resolve_spread(pipe.model_.spread, None, nn),
                    "nn_iterations": (pipe.model_.nn_iterations if nn_iterations is None else nn_iterations) if nn else 0,
                    "max_share": share if nn and share is not None and share < 1 else None,
                    "nn_order": (pipe.model_.nn_order if nn_order is None else nn_order) if nn else None,
                    "precision": pipe.autoencoder_.precision}
        grid = self.grids.new(model_id, "generate", settings, n, samples.latents, samples.provenance, samples.components)
        self.decode_pool.submit(decode_grid, grid, pipe, asyncio.get_running_loop(), self.decode_pool,
                                self.limits.decode_batch)
        return grid

    async def face(self, grid_id: str, index: int, timeout: float = 120.0) -> bytes:
        """Face ``index`` of a grid as PNG bytes, waiting for its batch to be decoded."""
        return await self.grids.get(grid_id).face(index, timeout)

    async def face_array(self, grid_id: str, index: int) -> np.ndarray:
        """Face ``index`` as (R, R, 3) uint8 (what the page shows, the input of edit / complete)."""
        return await self.grids.get(grid_id).face_array(index)

    async def grid_png(self, grid_id: str) -> bytes:
        """All faces of a grid tiled into one PNG (composed in a thread, off the event loop)."""
        grid = self.grids.get(grid_id)
        faces = [await self.face(grid_id, i) for i in range(grid.n)]
        return await asyncio.to_thread(tile_png, faces)

    def provenance(self, grid_id: str, index: int) -> dict:
        """Which training face each latent pixel of face ``index`` came from, and their shares.
        Indices -1 mark positions that were not generated (observed pixels of a completion)."""
        grid = self.grids.get(grid_id)
        grid.provenance_of(index)  # checks, before the model is looked up
        files = self.model(grid.model_id).pipeline.training_files_
        return provenance_record(grid, index, files, self.display_name)

    def provenance_png(self, grid_id: str, index: int) -> bytes:
        """The colour-coded map of face ``index`` at the image's size; RGBA with observed
        positions transparent when there are any."""
        grid = self.grids.get(grid_id)
        prov = grid.provenance_of(index)  # checks, before the model is looked up
        return provenance_png(prov, self.model(grid.model_id).pipeline.resolution)

    # ------------------------------------------------- nearest training faces
    def neighbour_index(self, model_id: str) -> NeighbourIndex:
        """The model's ``NeighbourIndex``, its computation queued in the fit pool on first request
        (``Neighbours.index``)."""
        entry = self.model(model_id)
        return self.neighbours.index(entry.id, entry.pipeline)

    async def nearest(self, grid_id: str, index: int) -> tuple[int, dict]:
        """(HTTP status, body): 200 with face ``index``'s 3 nearest training faces in Inception
        space, nearest first, or 202 with the progress while the model's training features are
        computed (the page polls)."""
        grid = self.grids.get(grid_id)
        grid.check_index(index)
        entry = self.model(grid.model_id)
        return await self.neighbours.nearest(grid, index, entry.id, entry.pipeline)

    # ------------------------------------------------------------ edit / complete
    async def edit(self, grid_id: str, index: int, attribute: str, alphas: list[float], nn: bool = True,
                   seed: int = 0, negative: str | None = None, positive: str | None = None) -> Grid:
        """Edit one face along an attribute (``FacePipeline.edit``; the edit is fitted once per model,
        attribute and categories, and kept): a new grid with one face per alpha."""
        if not self.features()["edit"]:
            raise NotAvailableError("editing is not available in this installation: it needs GeomLoss "
                                    "(pip install 'lrgmm[edit]')")
        if not 1 <= len(alphas) <= 9 or not all(math.isfinite(a) and abs(a) <= 5 for a in alphas):
            raise StudioError(f"alphas: 1 to 9 values in [-5, 5], got {quote(alphas)}")
        face = await self.face_array(grid_id, index)
        grid = self.grids.get(grid_id)
        entry = self.model(grid.model_id)
        pipe = entry.pipeline

        def work():
            key = (entry.id, attribute, negative, positive)
            with self._lock:
                edit = self._edits.get(key)
            if edit is None:
                edit = _quiet(AttributeEdit).fit(pipe, attribute=attribute, negative=negative, positive=positive)
                with self._lock:
                    self._edits[key] = edit
                    while len(self._edits) > 16:
                        self._edits.popitem(last=False)
            x = torch.from_numpy(face.transpose(2, 0, 1).astype(np.float32) / 255.0)[None]
            return pipe.edit(x, edit, alphas=tuple(alphas), nn=nn, seed=seed)

        # Fitting an edit can take a while: the fit pool, so that generating stays responsive.
        out = await self.fit_pool.run(work)
        images = out.images[0]
        prov = out.provenance  # (n_inputs, n_alphas, h, w) when the NN step ran, else None
        settings = {"attribute": attribute, "alphas": list(alphas), "negative": negative, "positive": positive,
                    "source": {"grid": grid_id, "face": index}, "nn": nn, "seed": seed}
        return self.grids.filled(grid.model_id, "edit", settings, images, None if prov is None else prov[0], None,
                                 labels=[f"alpha {a:g}" for a in alphas])

    async def complete(self, grid_id: str, index: int, box: list[int], n: int = N_COMPLETIONS, seed: int = 0) -> Grid:
        """Fill a box of one face with n completions (``FacePipeline.complete``); the completions
        keep their provenance (-1 at observed positions)."""
        if not 1 <= n <= 16:
            raise StudioError(f"n must be between 1 and 16 completions, got {n}")
        grid = self.grids.get(grid_id)
        entry = self.model(grid.model_id)
        pipe = entry.pipeline
        r = pipe.resolution
        if len(box) != 4 or not (0 <= box[0] < box[2] <= r and 0 <= box[1] < box[3] <= r):
            raise StudioError(f"box must be [x0, y0, x1, y1] with 0 <= x0 < x1 <= {r} and 0 <= y0 < y1 <= {r}, got {quote(box)}")
        face = await self.face_array(grid_id, index)

        def work():
            mask = box_mask(r, *box)
            x = torch.from_numpy(face.transpose(2, 0, 1).astype(np.float32) / 255.0)
            return pipe.complete(x, mask, n=n, seed=seed)

        out = await self.fit_pool.run(work)  # encode + condition + decode: off the sampling thread
        settings = {"box": list(box), "n": n, "seed": seed, "source": {"grid": grid_id, "face": index}}
        return self.grids.filled(grid.model_id, "complete", settings, out.images,
                                out.samples.provenance, out.samples.components)


def _quiet(cls):
    """An instance of ``cls`` without progress bars (on the server's terminal) when it takes
    ``progress``, else with its defaults."""
    import inspect

    return cls(progress=False) if "progress" in inspect.signature(cls).parameters else cls()
