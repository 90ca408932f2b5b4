"""Generated grids: faces kept as PNG bytes in a bounded LRU cache (the server's memory does not
grow with the number of requests), decoded batch by batch in the decode pool; a face's
provenance as JSON and as a colour-coded PNG."""

from __future__ import annotations

import asyncio
import io
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..core.provenance import provenance_image
from ..core.provenance import provenance_record as face_provenance
from ..errors import BusyError, ConflictError, NotFoundError, StudioError
from ..io.images import make_grid, to_uint8_hwc
from .names import new_id, quote


def png_bytes(hwc_uint8: np.ndarray, mode: str = "RGB") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(hwc_uint8, mode).save(buf, format="PNG")
    return buf.getvalue()


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

    def check_index(self, index: int) -> None:
        if not 0 <= index < self.n:
            raise NotFoundError(f"face {index} out of range: grid {self.id} has {self.n} faces (0..{self.n - 1})")

    def provenance_of(self, index: int) -> torch.Tensor:
        """Face ``index``'s provenance map (``NotFoundError`` when out of range or there is none)."""
        self.check_index(index)
        if self.provenance is None:
            raise NotFoundError(f"grid {self.id} has no provenance map (generated without the NN step, or an edit)")
        return self.provenance[index]

    async def face(self, index: int, timeout: float = 120.0) -> bytes:
        """Face ``index`` as PNG bytes, waiting for its batch to be decoded."""
        self.check_index(index)
        try:
            await asyncio.wait_for(self.ready[index].wait(), timeout)
        except asyncio.TimeoutError:
            raise BusyError(f"face {index} of grid {self.id} is not decoded yet (server busy); retry") from None
        if self.images[index] is None:
            if self.error:
                raise StudioError(self.error)
            raise ConflictError(f"grid {self.id} was replaced or dropped before face {index} was decoded; generate again")
        return self.images[index]

    async def face_array(self, index: int) -> np.ndarray:
        """Face ``index`` as (R, R, 3) uint8 (what the page shows, the input of edit / complete)."""
        with Image.open(io.BytesIO(await self.face(index))) as img:
            return np.asarray(img.convert("RGB"))


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

    def new(self, model_id, kind, settings, n, latents, provenance, components, labels=None) -> Grid:
        """A new grid of ``n`` faces still to decode, added to the cache."""
        grid = Grid(new_id("g"), model_id, kind, settings, n, latents, provenance, components,
                    images=[None] * n, ready=[asyncio.Event() for _ in range(n)], labels=labels)
        self.add(grid)
        return grid

    def filled(self, model_id, kind, settings, images, provenance, components, labels=None) -> Grid:
        """A new grid of already decoded ``images`` (n, 3, R, R), added to the cache."""
        n = images.shape[0]
        grid = self.new(model_id, kind, settings, n, None, provenance, components, labels)
        for i in range(n):
            grid.images[i] = png_bytes(to_uint8_hwc(images[i]))
            grid.ready[i].set()
        grid.decoded = n
        return grid

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


def tile_png(faces: list[bytes]) -> bytes:
    """PNG faces tiled into one PNG (``lrgmm.io.images.make_grid``)."""
    arrays = [np.asarray(Image.open(io.BytesIO(f)).convert("RGB")) for f in faces]
    chw = np.stack([a.transpose(2, 0, 1) for a in arrays]).astype(np.float32) / 255.0
    return png_bytes(to_uint8_hwc(make_grid(chw)))


def decode_grid(grid: Grid, pipe, loop: asyncio.AbstractEventLoop, pool, batch: int, start: int = 0) -> None:
    """Decode one batch of ``grid`` (faces ``start`` to ``start + batch``) with ``pipe``'s
    autoencoder, then queue the next batch at the back of ``pool`` (a ``WorkPool``): concurrent
    grids take turns batch by batch, so every client sees its first faces early instead of waiting
    for whole grids ahead of it."""
    stop = min(grid.n, start + batch)
    finished = True
    try:
        if not grid.cancelled:
            with torch.no_grad():
                imgs = pipe.autoencoder_.decode(grid.latents[start:stop])
            for i in range(start, stop):
                grid.images[i] = png_bytes(to_uint8_hwc(imgs[i - start]))
            grid.decoded = stop
            for i in range(start, stop):
                loop.call_soon_threadsafe(grid.ready[i].set)
            if stop < grid.n and not grid.cancelled:
                pool.submit(decode_grid, grid, pipe, loop, pool, batch, stop)
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


def provenance_record(grid: Grid, index: int, files: list, display_name) -> dict:
    """Which training face (of ``files``, named to clients by ``display_name``) each latent pixel
    of face ``index`` came from, and their shares of the copied positions
    (``lrgmm.core.provenance.provenance_record``); -1 marks positions that were not generated."""
    prov = grid.provenance_of(index)
    record = face_provenance(prov, files)
    sources = [
        {**s, "file": display_name(files[s["index"]]), "name": Path(files[s["index"]]).name,
         "thumbnail": f"/api/models/{grid.model_id}/training/{s['index']}.png"}
        for s in record["sources"]
    ]
    return {
        "grid": grid.id,
        "face": index,
        "model": grid.model_id,
        "component": int(grid.components[index]) if grid.components is not None else None,
        "settings": grid.settings,
        **record,
        "observed_share": round(1 - record["copied_positions"] / prov.numel(), 6),
        "sources": sources,
    }


def provenance_png(prov: torch.Tensor, size: int) -> bytes:
    """The colour-coded map (``lrgmm.core.provenance.provenance_image``) of one face's provenance
    ``prov`` at ``size`` pixels; RGBA with observed positions transparent when there are any."""
    rgb = to_uint8_hwc(provenance_image(prov, size))
    observed = prov < 0  # not generated (a completion's kept pixels): transparent
    if not bool(observed.any()):
        return png_bytes(rgb)
    k = size // prov.shape[0]
    alpha = np.where(observed.repeat_interleave(k, 0).repeat_interleave(k, 1).numpy(), 0, 255).astype(np.uint8)
    return png_bytes(np.dstack([rgb, alpha]), "RGBA")
