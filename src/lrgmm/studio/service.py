"""The studio's state and work, independent of HTTP: models, fit jobs, generated grids, uploads.

Everything CPU-bound (encoding, fitting, sampling, decoding) runs in bounded worker pools
(``WorkPool``), never on the event loop; each pool reports how many tasks run and wait, and
refuses new work past a bounded queue. Generated faces are kept in a bounded LRU cache
(``GridCache``): the server's memory does not grow with the number of requests.

Paths: the server reads images only from (a) the data folders given at start-up, listed by the
server itself and chosen by the client by *name* from that list, (b) the upload folders it created
under its own temporary directory (one per upload, owned by the session that sent it), and (c) the
training files recorded in a loaded model, addressed by index. No request can name a path, and
nothing sent back names one either: provenance and job reports name files relative to their data
folder (``utkface/images/x.jpg``) or by file name (``Studio.display_name``, ``Studio.public``).

Nearest training faces: for a clicked face, its 3 nearest training faces in Inception space
(``Studio.nearest``), measured against the model's training faces as decoded training
reconstructions, as ``lrgmm eval`` does. Their features are computed once per model, lazily on the
first request, in the fit pool (about 0.1 s per training face on 2 cores), and kept in the feature
cache on disk (``lrgmm.metrics.features``, the same entry ``lrgmm eval`` uses); until then the
endpoint answers 202 with the progress.

Clients' values are quoted in messages by ``quote``: at most a short prefix, so that a huge bad
value is not echoed back whole.

Uploads are bounded per session (its oldest upload is removed for a new one) and across sessions;
the global bound refuses new uploads (503) instead of removing another session's, except uploads
left untouched for ``Limits.upload_idle_s``. Images are refused from their header when they have
more than ``MAX_IMAGE_PIXELS`` pixels, both uploads and the files of the ``--data`` folders.
"""

from __future__ import annotations

import asyncio
import importlib.util
import io
import math
import os
import re
import secrets
import shutil
import tempfile
import threading
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from ..data.masks import box_mask
from ..editing.attribute_edit import AttributeEdit
from ..errors import (  # noqa: F401  (re-exported)
    BusyError, ConflictError, FailedError, ImageInputError, LrgmmError, NotAvailableError, NotFoundError,
    OriginError, StudioError, TooLargeError, UnsupportedMediaError,
)
from ..io.images import MAX_IMAGE_PIXELS, InputReport, list_images, prepare_image, to_uint8_hwc
from ..io.latent_cache import EncodedSet, encode_images
from ..pipeline.face_pipeline import FacePipeline
from ..core.provenance import provenance_image, provenance_shares

# The studio's errors (``StudioError`` and its subclasses, each with the HTTP status the API
# answers with) are defined in ``lrgmm.errors``.

# --------------------------------------------------------------------------------------------
# Messages


def quote(value, limit: int = 48) -> str:
    """``repr`` of a client's value for an error message, cut to its first ``limit`` characters
    (with the full length) so that a huge bad value is never echoed back whole."""
    text = value if isinstance(value, str) else str(value)
    if len(text) <= limit:
        return repr(value) if isinstance(value, str) else text
    return f"{text[:limit]!r}... ({len(text):,} characters)"


def size_text(n: int) -> str:
    """A byte count for people: ``8.6 MiB (9,000,000 bytes)``."""
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit} ({n:,} bytes)"
    return f"{n:,} bytes"


# --------------------------------------------------------------------------------------------
# Limits


@dataclass(frozen=True)
class Limits:
    """Bounds on requests and on what the server keeps in memory."""

    max_faces: int = 64  # faces per generate request
    max_cached_faces: int = 512  # decoded faces kept across all grids (oldest grids dropped)
    decode_batch: int = 4  # faces decoded per step: the first faces show after one small batch
    max_nn_iterations: int = 5
    max_upload_files: int = 256
    max_upload_bytes: int = 8 * 2**20  # per file
    max_upload_pixels: int = MAX_IMAGE_PIXELS  # per image (a small file can hold a huge, flat image)
    max_request_bytes: int = 256 * 2**20  # per upload request, counted as the bytes arrive
    max_json_bytes: int = 64 * 2**10  # per request other than uploads (JSON bodies are small)
    max_uploads: int = 4  # upload folders kept per session (its oldest removed for a new one)
    max_total_uploads: int = 64  # upload folders across sessions: beyond, new uploads are refused (503)
    max_total_upload_bytes: int = 2 * 2**30  # bytes of uploads across sessions: beyond, refused (503)
    upload_idle_s: float = 3600.0  # an upload unused this long may be removed to make room for others
    max_data_pixels: int = MAX_IMAGE_PIXELS  # per image of a --data folder (larger ones are skipped)
    max_fit_images: int = 4096
    max_models: int = 8  # models fitted in the studio (oldest dropped); loaded models stay
    max_queue: int = 64  # tasks waiting per pool before new work is refused (503)
    max_jobs: int = 32  # finished fit jobs remembered
    thumbnail_cache: int = 256
    max_neighbour_models: int = 4  # models whose training faces' Inception features are kept in memory
    neighbour_chunk: int = 32  # training faces decoded and measured per step (the progress granularity)


# --------------------------------------------------------------------------------------------
# Worker pools


class WorkPool:
    """At most ``workers`` tasks run at once in threads; the rest wait in order, up to
    ``max_queue`` of them (beyond that, ``BusyError``). ``state()`` is what the page shows."""

    def __init__(self, name: str, workers: int, max_queue: int):
        self.name = name
        self.workers = workers
        self.max_queue = max_queue
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"studio-{name}")
        self._lock = threading.Lock()
        self.running = 0
        self.waiting = 0
        self.done = 0

    def submit(self, fn, *args):
        """Queue ``fn(*args)``; returns a ``concurrent.futures.Future``."""
        with self._lock:
            if self.waiting >= self.max_queue:
                raise BusyError(
                    f"the {self.name} queue is full ({self.waiting} tasks waiting); try again in a moment"
                )
            self.waiting += 1

        def task():
            with self._lock:
                self.waiting -= 1
                self.running += 1
            try:
                return fn(*args)
            finally:
                with self._lock:
                    self.running -= 1
                    self.done += 1

        return self._executor.submit(task)

    async def run(self, fn, *args):
        """Run ``fn(*args)`` in the pool and await its result without blocking the event loop."""
        return await asyncio.wrap_future(self.submit(fn, *args))

    def state(self) -> dict:
        with self._lock:
            return {"workers": self.workers, "running": self.running, "waiting": self.waiting, "done": self.done}

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


# --------------------------------------------------------------------------------------------
# Models


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
            "temperature": float(m.temperature),
            "nn_iterations": int(m.nn_iterations),
            "patch_size": int(m.patch_size),
            "max_share": m.max_share,  # the model's default copy budget (None: none)
            "min_max_share": m.min_max_share(),  # the smallest budget its clusters can meet
            "autoencoder": pipe.autoencoder_.id,
        }


# --------------------------------------------------------------------------------------------
# Generated grids


@dataclass
class Grid:
    """n faces generated (or edited / completed) together. Faces are decoded in small batches;
    ``ready[i]`` is set on the event loop once face i is decoded (or the grid failed or was
    cancelled). ``images[i]``: PNG bytes of face i; ``provenance``: (n, h, w) int64 or None."""

    id: str
    model_id: str
    kind: str
    settings: dict
    n: int
    latents: torch.Tensor | None
    provenance: torch.Tensor | None
    components: torch.Tensor | None
    images: list
    ready: list  # asyncio.Event per face
    labels: list[str] | None = None  # per-face caption (e.g. the edit's alpha)
    features: dict = field(default_factory=dict)  # face index -> its Inception features (nearest faces)
    error: str | None = None
    cancelled: bool = False
    decoded: int = 0
    created: float = field(default_factory=time.time)

    def info(self) -> dict:
        return {
            "id": self.id,
            "model": self.model_id,
            "kind": self.kind,
            "n": self.n,
            "settings": self.settings,
            "decoded": self.decoded,
            "cancelled": self.cancelled,
            "error": self.error,
            "has_provenance": self.provenance is not None,
            "faces": [
                {"index": i, "url": f"/api/grids/{self.id}/faces/{i}.png",
                 **({"label": self.labels[i]} if self.labels else {})}
                for i in range(self.n)
            ],
            "grid_url": f"/api/grids/{self.id}/grid.png",
        }


class GridCache:
    """Grids by id, least recently used dropped first once more than ``max_faces`` faces are held."""

    def __init__(self, max_faces: int):
        self.max_faces = max_faces
        self._grids: OrderedDict[str, Grid] = OrderedDict()
        self._lock = threading.Lock()

    def add(self, grid: Grid) -> None:
        with self._lock:
            self._grids[grid.id] = grid
            total = sum(g.n for g in self._grids.values())
            while total > self.max_faces and len(self._grids) > 1:
                _, old = self._grids.popitem(last=False)
                old.cancelled = True  # stops its decoding if still running
                total -= old.n

    def get(self, grid_id: str) -> Grid:
        with self._lock:
            grid = self._grids.get(grid_id)
            if grid is None:
                raise NotFoundError(
                    f"unknown grid {quote(grid_id)}: it never existed or was dropped from the cache "
                    f"(the server keeps the latest {self.max_faces} faces); generate again"
                )
            self._grids.move_to_end(grid_id)
            return grid

    def __len__(self) -> int:
        return len(self._grids)

    def n_faces(self) -> int:
        with self._lock:
            return sum(g.n for g in self._grids.values())


# --------------------------------------------------------------------------------------------
# Nearest training faces


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


# --------------------------------------------------------------------------------------------
# Fit jobs


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


# --------------------------------------------------------------------------------------------
# Uploads

_SAFE = re.compile(r"[^A-Za-z0-9._-]+")
_FORMATS = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp"}


def sanitize_filename(name: str, index: int) -> str:
    """A safe file name from a client's: no folders, only [A-Za-z0-9._-], no leading dots, at
    most 80 characters; ``upload_<index>`` when nothing is left."""
    base = re.split(r"[\\/]", name or "")[-1]
    base = _SAFE.sub("_", base).lstrip("._")[:80]
    stem = base.rsplit(".", 1)[0] if "." in base else base
    return stem or f"upload_{index:04d}"


def _pixel_limit_text(max_pixels: int) -> str:
    side = math.isqrt(max_pixels)
    return f"at most {max_pixels:,} pixels per image" + (f" ({side}x{side})" if side * side == max_pixels else "")


def check_image_bytes(data: bytes, name: str, max_pixels: int = MAX_IMAGE_PIXELS) -> str:
    """The image format of ``data`` (JPEG, PNG or WebP) from its content, never its name.

    The size is read from the header (``Image.open`` decodes no pixel) and checked before
    anything is decoded. Raises ``UnsupportedMediaError`` naming the file when Pillow cannot read
    it as one of them, ``TooLargeError`` when it has more than ``max_pixels`` pixels."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            fmt = img.format
            w, h = img.size
            if w * h > max_pixels:
                raise TooLargeError(f"{quote(name)} is {w}x{h} pixels; {_pixel_limit_text(max_pixels)}")
            img.verify()
    except Image.DecompressionBombError:  # Pillow's own bound, far above ours: too large as well
        raise TooLargeError(f"{quote(name)} has too many pixels; {_pixel_limit_text(max_pixels)}") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise UnsupportedMediaError(
            f"{quote(name)} is not a readable image ({type(exc).__name__}); upload JPEG, PNG or WebP files"
        ) from None
    if fmt not in _FORMATS:
        raise UnsupportedMediaError(f"{quote(name)} is a {fmt} image; upload JPEG, PNG or WebP files")
    return fmt


def oversized_images(paths: list[Path], max_pixels: int) -> tuple[list[Path], list[tuple[str, str]]]:
    """``paths`` split into those within ``max_pixels`` and ``(path, reason)`` for the others,
    from each file's header only. Files Pillow cannot open are kept: the encoder reports them."""
    kept, skipped = [], []
    for p in paths:
        try:
            with Image.open(p) as img:
                w, h = img.size
        except Image.DecompressionBombError:
            skipped.append((str(p), f"too many pixels; {_pixel_limit_text(max_pixels)} in the studio"))
            continue
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
            kept.append(p)
            continue
        if w * h > max_pixels:
            skipped.append((str(p), f"{w}x{h} pixels; {_pixel_limit_text(max_pixels)} in the studio: downscale it"))
        else:
            kept.append(p)
    return kept, skipped


@dataclass
class Upload:
    id: str
    session: str
    folder: Path
    files: list[str]
    n_bytes: int = 0
    used: float = field(default_factory=time.monotonic)  # last stored or fitted from


# --------------------------------------------------------------------------------------------
# The studio


def _png_bytes(hwc_uint8: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(hwc_uint8, "RGB").save(buf, format="PNG")
    return buf.getvalue()


def _new_id(prefix: str) -> str:
    return f"{prefix}{secrets.token_hex(6)}"


_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


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
        self.jobs: OrderedDict[str, FitJob] = OrderedDict()
        self.uploads: dict[str, Upload] = {}
        self.grids = GridCache(self.limits.max_cached_faces)
        self.decode_pool = WorkPool("decode", max(1, int(workers)), self.limits.max_queue)
        self.sample_pool = WorkPool("sample", 1, self.limits.max_queue)
        self.fit_pool = WorkPool("fit", 1, 4)
        self._lock = threading.Lock()
        self._thumbs: OrderedDict[tuple, bytes] = OrderedDict()
        self._edits: OrderedDict[tuple, object] = OrderedDict()
        self._neighbours: OrderedDict[str, NeighbourIndex] = OrderedDict()
        self._extractor = None
        self._closed = False
        self._tmp = Path(tempfile.mkdtemp(prefix="lrgmm-studio-"))
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
        self._closed = True  # a running feature computation stops at its next chunk
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
        pipe = FacePipeline.load(path, progress=False)
        name = Path(path).name
        return self._add_model(name, pipe, "file")

    def _add_model(self, name: str, pipe: FacePipeline, origin: str) -> ModelEntry:
        with self._lock:
            entry = ModelEntry(_new_id("m"), name, pipe, origin)
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
        png = _png_bytes(to_uint8_hwc(arr))
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
    def save_upload(self, session: str, files: list[tuple[str, bytes]]) -> Upload:
        """Check and store uploaded images in a new folder of the temporary directory, owned by
        ``session``. All or nothing: one bad file rejects the request and nothing is kept.

        A session keeps at most ``max_uploads`` uploads (its oldest is removed for a new one).
        Across sessions at most ``max_total_uploads`` folders and ``max_total_upload_bytes``
        bytes are kept: past them a new upload is refused (``BusyError``), after removing
        uploads unused for ``upload_idle_s``; another session's recent upload is never removed."""
        lim = self.limits
        if not files:
            raise StudioError("no files in the upload; send images as multipart field 'files'")
        if len(files) > lim.max_upload_files:
            raise TooLargeError(f"{len(files)} files uploaded, at most {lim.max_upload_files} per request")
        if not _ID.match(session):
            raise StudioError("bad session id")
        checked = []
        used: set[str] = set()
        for i, (name, data) in enumerate(files):
            if len(data) > lim.max_upload_bytes:
                raise TooLargeError(
                    f"{quote(name)} is {size_text(len(data))}; each image must be at most {size_text(lim.max_upload_bytes)}"
                )
            fmt = check_image_bytes(data, name, lim.max_upload_pixels)
            stem = sanitize_filename(name, i)
            final = stem + _FORMATS[fmt]
            k = 1
            while final in used:
                final = f"{stem}_{k}{_FORMATS[fmt]}"
                k += 1
            used.add(final)
            checked.append((final, data))
        n_bytes = sum(len(d) for _, d in checked)
        upload_id = _new_id("u")
        # The folder is named by the upload id alone: the session id (the cookie) is in no path.
        up = Upload(upload_id, session, self._tmp / upload_id, [f for f, _ in checked], n_bytes)
        with self._lock:  # room is made (or refused) and reserved before anything is written
            removed = self._make_room_locked(up)
            self.uploads[upload_id] = up
        for old in removed:
            shutil.rmtree(old.folder, ignore_errors=True)
        try:
            up.folder.mkdir(parents=True)
            for final, data in checked:
                (up.folder / final).write_bytes(data)
        except BaseException:
            with self._lock:
                self.uploads.pop(upload_id, None)
            shutil.rmtree(up.folder, ignore_errors=True)
            raise
        return up

    def _make_room_locked(self, new: Upload) -> list[Upload]:
        """Unregister what must go for ``new`` to fit the limits (the caller removes the folders),
        or raise ``BusyError`` when only other sessions' recent uploads stand in the way."""
        lim = self.limits
        before = dict(self.uploads)
        removed = []
        own = [u for u in self.uploads.values() if u.session == new.session]
        while len(own) >= lim.max_uploads:
            removed.append(self.uploads.pop(own.pop(0).id))

        def over() -> bool:
            total = sum(u.n_bytes for u in self.uploads.values()) + new.n_bytes
            return len(self.uploads) + 1 > lim.max_total_uploads or total > lim.max_total_upload_bytes

        now = time.monotonic()
        for u in sorted(self.uploads.values(), key=lambda u: u.used):
            if not over():
                break
            if now - u.used >= lim.upload_idle_s:
                removed.append(self.uploads.pop(u.id))
        if over():
            self.uploads.clear()  # nothing is removed when the upload is refused
            self.uploads.update(before)
            raise BusyError(
                f"the studio already keeps {len(self.uploads)} uploads ({size_text(sum(u.n_bytes for u in self.uploads.values()))}) "
                f"of other sessions, its limit (at most {lim.max_total_uploads} uploads, {size_text(lim.max_total_upload_bytes)}); "
                "try again later or fit from a data folder"
            )
        return removed

    # -------------------------------------------------------------------- fits
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
            up = self.uploads.get(upload) if isinstance(upload, str) else None
            if up is None or up.session != session:
                raise NotFoundError(f"unknown upload {quote(upload)} for this session; upload images first")
            up.used = time.monotonic()
            paths = sorted(up.folder / f for f in up.files)
            source = f"upload {upload} ({len(paths)} files)"
        if len(paths) < 2:
            raise StudioError(f"{source}: {len(paths)} image(s); a fit needs at least 2")
        n = len(paths) if n_images is None else n_images
        if not 2 <= n <= min(len(paths), self.limits.max_fit_images):
            raise StudioError(
                f"n_images must be between 2 and {min(len(paths), self.limits.max_fit_images)} for {source} "
                f"({len(paths)} images, at most {self.limits.max_fit_images} per fit), got {n}"
            )
        if n < len(paths):
            pick = torch.randperm(len(paths), generator=torch.Generator().manual_seed(seed))[:n]
            paths = [paths[i] for i in sorted(pick.tolist())]
        job = FitJob(_new_id("j"), source, n, total=n)
        options = {"random_state": seed, "n_components": n_components, "progress": False, **self.pipeline_options}
        if temperature is not None:
            options["temperature"] = temperature
        with self._lock:
            # Registered only once the pool has taken it (a refused fit raises BusyError here and
            # leaves no trace), and only finished jobs make room: a queued or running one stays
            # visible. Unfinished jobs are bounded by the pool (one running, a few waiting).
            self.fit_pool.submit(self._run_fit, job, paths, options)
            self.jobs[job.id] = job
            finished = [k for k, j in self.jobs.items() if j.finished]
            while len(self.jobs) > self.limits.max_jobs and finished:
                del self.jobs[finished.pop(0)]
        return job

    def job(self, job_id: str) -> FitJob:
        job = self.jobs.get(job_id) if isinstance(job_id, str) else None
        if job is None:
            raise NotFoundError(f"unknown job {quote(job_id)}")
        return job

    def _run_fit(self, job: FitJob, paths: list[Path], options: dict) -> None:
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
            entry = self._add_model(f"fit: {job.source}, {len(encoded)} faces", pipe, "fit")
            job.model_id = entry.id
            job.report = self.public(encoded.report.summary())
            job.state, job.message = "done", f"fitted in {pipe.fit_seconds_:.2f} s after encoding"
        except Exception as exc:  # noqa: BLE001  (any failure is reported to the page; the server goes on)
            msg = str(exc) if isinstance(exc, LrgmmError | ValueError) else f"{type(exc).__name__}: {exc}"
            job.state, job.error = "error", self.public(msg)
        finally:
            job.seconds = round(time.perf_counter() - start, 3)

    # ---------------------------------------------------------------- generate
    def check_generate(self, n: int, temperature: float | None, nn_iterations: int | None, entry: ModelEntry,
                       max_share: float | None = None) -> None:
        lim = self.limits
        if not 1 <= n <= lim.max_faces:
            raise StudioError(f"n must be between 1 and {lim.max_faces}, got {n}")
        fitted = entry.pipeline.model_.temperature
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
                       max_share: float | None = None) -> Grid:
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
                                       max_share=max_share)
        )
        share = pipe.model_.max_share if max_share is None else max_share
        settings = {"seed": seed, "nn": nn, "n": n,
                    "temperature": pipe.model_.temperature if temperature is None else temperature,
                    "nn_iterations": (pipe.model_.nn_iterations if nn_iterations is None else nn_iterations) if nn else 0,
                    "max_share": share if nn and share is not None and share < 1 else None}
        grid = self._new_grid(model_id, "generate", settings, n, samples.latents, samples.provenance, samples.components)
        self.decode_pool.submit(self._decode_grid, grid, pipe, asyncio.get_running_loop())
        return grid

    def _new_grid(self, model_id, kind, settings, n, latents, provenance, components, labels=None) -> Grid:
        grid = Grid(_new_id("g"), model_id, kind, settings, n, latents, provenance, components,
                    images=[None] * n, ready=[asyncio.Event() for _ in range(n)], labels=labels)
        self.grids.add(grid)
        return grid

    def _decode_grid(self, grid: Grid, pipe: FacePipeline, loop: asyncio.AbstractEventLoop, start: int = 0) -> None:
        """Decode one batch of ``grid`` (faces ``start`` to ``start + decode_batch``), then queue
        the next batch at the back of the pool: concurrent grids take turns batch by batch, so
        every client sees its first faces early instead of waiting for whole grids ahead of it."""
        stop = min(grid.n, start + self.limits.decode_batch)
        finished = True
        try:
            if not grid.cancelled:
                with torch.no_grad():
                    imgs = pipe.autoencoder_.decode(grid.latents[start:stop])
                for i in range(start, stop):
                    grid.images[i] = _png_bytes(to_uint8_hwc(imgs[i - start]))
                grid.decoded = stop
                for i in range(start, stop):
                    loop.call_soon_threadsafe(grid.ready[i].set)
                if stop < grid.n and not grid.cancelled:
                    self.decode_pool.submit(self._decode_grid, grid, pipe, loop, stop)
                    finished = False
        except Exception as exc:  # noqa: BLE001  (reported with the grid; the server goes on)
            grid.error = f"decoding failed: {type(exc).__name__}: {exc}"
        finally:
            if finished:
                grid.latents = None  # only the PNGs are needed from now on
                try:
                    for ev in grid.ready:
                        loop.call_soon_threadsafe(ev.set)
                except RuntimeError:  # the server is shutting down and its loop is closed
                    pass

    async def face(self, grid_id: str, index: int, timeout: float = 120.0) -> bytes:
        """Face ``index`` of a grid as PNG bytes, waiting for its batch to be decoded."""
        grid = self.grids.get(grid_id)
        if not 0 <= index < grid.n:
            raise NotFoundError(f"face {index} out of range: grid {grid_id} has {grid.n} faces (0..{grid.n - 1})")
        try:
            await asyncio.wait_for(grid.ready[index].wait(), timeout)
        except asyncio.TimeoutError:
            raise BusyError(f"face {index} of grid {grid_id} is not decoded yet (server busy); retry") from None
        if grid.images[index] is None:
            if grid.error:
                raise StudioError(grid.error)
            raise ConflictError(f"grid {grid_id} was replaced or dropped before face {index} was decoded; generate again")
        return grid.images[index]

    async def face_array(self, grid_id: str, index: int) -> np.ndarray:
        """Face ``index`` as (R, R, 3) uint8 (what the page shows, the input of edit / complete)."""
        with Image.open(io.BytesIO(await self.face(grid_id, index))) as img:
            return np.asarray(img.convert("RGB"))

    async def grid_png(self, grid_id: str) -> bytes:
        """All faces of a grid tiled into one PNG (composed in a thread, off the event loop)."""
        from ..io.images import make_grid

        grid = self.grids.get(grid_id)
        faces = [await self.face(grid_id, i) for i in range(grid.n)]

        def compose():
            arrays = [np.asarray(Image.open(io.BytesIO(f)).convert("RGB")) for f in faces]
            chw = np.stack([a.transpose(2, 0, 1) for a in arrays]).astype(np.float32) / 255.0
            return _png_bytes(to_uint8_hwc(make_grid(chw)))

        return await asyncio.to_thread(compose)

    def provenance(self, grid_id: str, index: int) -> dict:
        """Which training face each latent pixel of face ``index`` came from, and their shares.
        Indices -1 mark positions that were not generated (observed pixels of a completion)."""
        grid = self.grids.get(grid_id)
        if not 0 <= index < grid.n:
            raise NotFoundError(f"face {index} out of range: grid {grid_id} has {grid.n} faces (0..{grid.n - 1})")
        if grid.provenance is None:
            raise NotFoundError(f"grid {grid_id} has no provenance map (generated without the NN step, or an edit)")
        entry = self.model(grid.model_id)
        files = entry.pipeline.training_files_
        prov = grid.provenance[index]
        shares = provenance_shares(prov)
        sources = [
            {"index": i, "file": self.display_name(files[i]), "name": Path(files[i]).name, "share": round(s, 6),
             "thumbnail": f"/api/models/{grid.model_id}/training/{i}.png"}
            for i, s in shares if i >= 0
        ]
        observed = sum(s for i, s in shares if i < 0)
        return {
            "grid": grid_id,
            "face": index,
            "model": grid.model_id,
            "component": int(grid.components[index]) if grid.components is not None else None,
            "settings": grid.settings,
            "latent_grid": list(prov.shape),
            "distinct_training_images": len(sources),
            "largest_share": sources[0]["share"] if sources else 0.0,
            "observed_share": round(observed, 6),
            "map": prov.tolist(),
            "sources": sources,
        }

    def provenance_png(self, grid_id: str, index: int) -> bytes:
        """The colour-coded map (``lrgmm.core.provenance.provenance_image``) at the image's size; RGBA
        with observed positions transparent when there are any."""
        grid = self.grids.get(grid_id)
        rec = self.provenance(grid_id, index)  # checks
        prov = grid.provenance[index]
        size = self.model(rec["model"]).pipeline.resolution
        rgb = to_uint8_hwc(provenance_image(prov.clamp(min=0), size))
        observed = prov < 0  # not generated (a completion's kept pixels): transparent
        if not bool(observed.any()):
            return _png_bytes(rgb)
        k = size // prov.shape[0]
        alpha = np.where(observed.repeat_interleave(k, 0).repeat_interleave(k, 1).numpy(), 0, 255).astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(np.dstack([rgb, alpha]), "RGBA").save(buf, format="PNG")
        return buf.getvalue()

    # ------------------------------------------------- nearest training faces
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

    def neighbour_index(self, model_id: str) -> NeighbourIndex:
        """The model's ``NeighbourIndex``, its computation queued in the fit pool on first request.
        At most ``max_neighbour_models`` are kept (least recently used finished ones dropped);
        a failed one is forgotten once reported, so the next request tries again."""
        entry = self.model(model_id)
        with self._lock:
            ni = self._neighbours.get(model_id)
            if ni is not None:
                self._neighbours.move_to_end(model_id)
                return ni
            ni = NeighbourIndex(model_id, total=int(entry.pipeline.model_.codes_.shape[0]))
            self.fit_pool.submit(self._compute_neighbours, entry, ni)  # BusyError: nothing registered
            self._neighbours[model_id] = ni
            done = [k for k, v in self._neighbours.items() if v.state != "computing" and k != model_id]
            while len(self._neighbours) > self.limits.max_neighbour_models and done:
                del self._neighbours[done.pop(0)]
            return ni

    def _compute_neighbours(self, entry: ModelEntry, ni: NeighbourIndex) -> None:
        from ..evaluation import reconstruction_features
        from ..metrics.memorisation import nearest_k

        start = time.perf_counter()
        pipe = entry.pipeline

        def progress(done: int, total: int) -> None:
            if self._closed:
                raise _Stopped()
            ni.done, ni.total = done, total

        try:
            ex = self._inception()
            feats = reconstruction_features(pipe, pipe.model_.codes_, ex, "Inception features (studio)",
                                            chunk=self.limits.neighbour_chunk, on_chunk=progress)
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

    async def nearest(self, grid_id: str, index: int) -> tuple[int, dict]:
        """(HTTP status, body): 200 with face ``index``'s 3 nearest training faces in Inception
        space, nearest first, or 202 with the progress while the model's training features are
        computed (the page polls)."""
        grid = self.grids.get(grid_id)
        if not 0 <= index < grid.n:
            raise NotFoundError(f"face {index} out of range: grid {grid_id} has {grid.n} faces (0..{grid.n - 1})")
        entry = self.model(grid.model_id)
        ni = self.neighbour_index(entry.id)
        if ni.state == "computing":
            return 202, {"state": "computing", "grid": grid_id, "face": index, "model": entry.id,
                         "done": ni.done, "total": ni.total,
                         "message": f"computing the Inception features of the model's {ni.total} training faces "
                                    "(once per model, kept on disk)"}
        if ni.state == "error":
            with self._lock:
                if self._neighbours.get(entry.id) is ni:
                    del self._neighbours[entry.id]
            raise (NotAvailableError if ni.status == 501 else FailedError)(ni.error)
        feats = grid.features.get(index)
        if feats is None:
            face = await self.face_array(grid_id, index)
            x = torch.from_numpy(np.ascontiguousarray(face.transpose(2, 0, 1)))[None]
            feats = await self.decode_pool.run(lambda: self._inception().features(x, cache=False))
            grid.features[index] = feats
        from ..metrics.memorisation import nearest_k

        dist, idx = nearest_k(feats, ni.features, k=3)
        shares = {}
        if grid.provenance is not None:
            shares = {i: s for i, s in provenance_shares(grid.provenance[index]) if i >= 0}
        files = entry.pipeline.training_files_
        return 200, {
            "state": "ready", "grid": grid_id, "face": index, "model": entry.id, "space": "inception",
            "training_faces": "decoded training reconstructions (what the distances compare; thumbnails show the photos)",
            "typical_distance": ni.typical,
            "nearest": [
                {"rank": r, "index": int(j), "file": self.display_name(files[j]), "name": Path(files[j]).name,
                 "distance": round(float(d), 4), "share": round(shares[int(j)], 6) if int(j) in shares else None,
                 "thumbnail": f"/api/models/{entry.id}/training/{int(j)}.png"}
                for r, (j, d) in enumerate(zip(idx[0], dist[0]))
            ],
        }

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
        return self._filled_grid(grid.model_id, "edit", settings, images, None if prov is None else prov[0], None,
                                 labels=[f"alpha {a:g}" for a in alphas])

    async def complete(self, grid_id: str, index: int, box: list[int], n: int = 4, seed: int = 0) -> Grid:
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
        return self._filled_grid(grid.model_id, "complete", settings, out.images,
                                 out.samples.provenance, out.samples.components)

    def _filled_grid(self, model_id, kind, settings, images, provenance, components, labels=None) -> Grid:
        n = images.shape[0]
        grid = self._new_grid(model_id, kind, settings, n, None, provenance, components, labels)
        for i in range(n):
            grid.images[i] = _png_bytes(to_uint8_hwc(images[i]))
            grid.ready[i].set()
        grid.decoded = n
        return grid


def _quiet(cls):
    """An instance of ``cls`` without progress bars (on the server's terminal) when it takes
    ``progress``, else with its defaults."""
    import inspect

    return cls(progress=False) if "progress" in inspect.signature(cls).parameters else cls()


# --------------------------------------------------------------------------------------------
# Encoding with progress


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
