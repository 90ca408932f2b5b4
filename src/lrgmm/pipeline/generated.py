"""Faces a pipeline generated, and how they are written: PNGs, provenance maps and lists.

``Generated`` holds a batch of faces with the latent samples they were decoded from;
``FaceWriter`` writes faces batch by batch in bounded memory (each file atomically) and the
grids and ``samples.json`` at the end. It writes on a thread of its own, so the PNG and JSON
encoding of one batch overlaps the drawing and decoding of the next (zlib and file writes
release the GIL); a bounded queue keeps memory flat when the disk is the slow side.
"""

from __future__ import annotations

import json
import queue
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..io.atomic import atomic_write, atomic_write_bytes
from ..io.images import make_grid, save_png
from ..limits import GRID_FACES
from ..core.model import LatentSamples
from ..core.provenance import provenance_image, provenance_record

__all__ = ["FaceWriter", "FilePaths", "Generated"]


@dataclass
class Generated:
    """Faces made by ``FacePipeline.generate``.

    images: (n, 3, H, W) float32 RGB in [0, 1].
    samples: the latent samples (codes, components, provenance) they were decoded from.
    training_files: the model's training files; provenance indices point into this list.
    seed: the seed they were drawn with (None: drawn with the model's ``random_state``).
    """

    images: torch.Tensor
    samples: LatentSamples
    training_files: list[str]
    seed: int | None = None
    settings: dict = field(default_factory=dict)
    start: int = 0  # index of the first face, for batches from ``FacePipeline.generate_batches``

    def __len__(self) -> int:
        return self.images.shape[0]

    def save(self, out_dir: str | Path, prefix: str = "face", progress: bool = False) -> dict[str, Sequence[Path]]:
        """Write every face as a PNG, its colour-coded provenance map beside it
        (``<prefix>_0000_provenance.png``) with the list of training files used and their
        share of latent pixels (``..._provenance.json``), plus ``grid.png`` and
        ``provenance_grid.png`` (the first 64 faces) and ``samples.json``. Each file is written
        atomically. ``FacePipeline.generate_to`` writes the same files batch by batch."""
        writer = FaceWriter(out_dir, prefix, total=len(self), progress=progress, desc="writing", background=False)
        writer.write(self)
        return writer.close(self.seed, self.settings)


class _FileNames(list):
    """``prefix_0000<suffix>``, ... for n faces, made while iterating: ``samples.json`` lists
    every file without a million names in memory (json's encoder only iterates lists)."""

    def __init__(self, prefix: str, suffix: str, n: int):
        super().__init__()
        self.prefix, self.suffix, self.n = prefix, suffix, n

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        return (f"{self.prefix}_{i:04d}{self.suffix}" for i in range(self.n))


class FilePaths(Sequence):
    """The paths of one kind of file written for n faces (``folder/prefix_0000<suffix>`` ...),
    computed on access rather than stored."""

    def __init__(self, folder: Path, names: Sequence[str] | _FileNames):
        self.folder, self.names = folder, names

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(i)
        if isinstance(self.names, _FileNames):
            return self.folder / f"{self.names.prefix}_{i:04d}{self.names.suffix}"
        return self.folder / self.names[i]

    def __iter__(self):
        return (self.folder / name for name in self.names)

    def __repr__(self) -> str:
        return f"FilePaths({self.folder}, {len(self)} files)"


class FaceWriter:
    """Writes generated faces as they come, batch by batch, in memory bounded whatever n.

    ``write(generated)`` hands a batch over; each of its faces is written (PNG, provenance map
    PNG and JSON, atomically) under its global index (``generated.start`` is ignored: faces are
    numbered in the order handed over), and the first ``GRID_FACES`` faces and maps are kept for
    the grids. ``close(seed, settings)`` waits for the faces, writes ``grid.png``,
    ``provenance_grid.png`` and ``samples.json`` and returns the written files per kind. A run
    stopped before ``close`` leaves the faces written so far and no ``samples.json``; used as a
    context manager, an exception inside the block stops the writer after the file it is writing.

    ``background`` (default True): write on a thread, at most ``max_pending`` batches waiting
    (``write`` blocks beyond that); False writes inside ``write``. A write error (disk full, a
    folder removed) is raised by the next ``write`` or by ``close``.
    """

    def __init__(self, out_dir: str | Path, prefix: str = "face", total: int | None = None,
                 progress: bool = False, desc: str = "sampling", *, background: bool = True, max_pending: int = 2):
        self.out, self.prefix, self.n = Path(out_dir), prefix, 0
        self.out.mkdir(parents=True, exist_ok=True)
        self.with_provenance: bool | None = None
        self._tiles: list[torch.Tensor] = []
        self._maps: list[torch.Tensor] = []
        self._bar = tqdm(total=total, desc=desc, unit="face", disable=not progress)
        self._error: BaseException | None = None
        self._stop = threading.Event()
        self._queue: queue.Queue | None = None
        self._thread: threading.Thread | None = None
        if background:
            self._queue = queue.Queue(maxsize=max(1, int(max_pending)))
            self._thread = threading.Thread(target=self._drain, name="lrgmm-face-writer", daemon=True)
            self._thread.start()

    def __enter__(self) -> "FaceWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()

    def write(self, gen: "Generated") -> None:
        has_prov = gen.samples.provenance is not None
        if self.with_provenance is None:
            self.with_provenance = has_prov
        elif self.with_provenance != has_prov:
            raise ValueError("every batch must have provenance maps, or none")
        self._raise_error()
        if self._stop.is_set():
            raise RuntimeError("this FaceWriter was aborted; start a new one")
        if self._queue is None:
            self._write_batch(gen)
            return
        while True:  # a bounded put that notices a writer which died meanwhile
            try:
                self._queue.put(gen, timeout=0.2)
                return
            except queue.Full:
                self._raise_error()

    def _drain(self) -> None:
        while True:
            gen = self._queue.get()
            if gen is None or self._stop.is_set():
                return
            try:
                self._write_batch(gen)
            except BaseException as exc:  # handed to the caller's next write() or close()
                self._error = exc
                return

    def _raise_error(self) -> None:
        if self._error is not None:
            raise self._error

    def _finish(self) -> None:
        """Wait until every batch handed over is written (or the writer failed)."""
        if self._thread is not None:
            while self._thread.is_alive():
                try:
                    self._queue.put(None, timeout=0.2)
                    break
                except queue.Full:
                    continue
            self._thread.join()
            self._thread = None
        self._raise_error()

    def abort(self) -> None:
        """Stop after the file being written; batches still waiting are dropped."""
        self._stop.set()
        if self._thread is not None:
            while True:  # empty the queue so the sentinel fits
                try:
                    self._queue.get_nowait()
                except queue.Empty:
                    break
            self._queue.put(None)
            self._thread.join()
            self._thread = None
        self._bar.close()

    def _write_batch(self, gen: "Generated") -> None:
        prov = gen.samples.provenance
        has_prov = prov is not None
        size = gen.images.shape[-1]
        for i in range(len(gen)):
            if self._stop.is_set():
                return
            stem = f"{self.prefix}_{self.n:04d}"
            save_png(gen.images[i], self.out / f"{stem}.png")
            keep = len(self._tiles) < GRID_FACES
            if keep:
                self._tiles.append(gen.images[i].clone())
            if has_prov:
                m = provenance_image(prov[i], size)
                if keep:
                    self._maps.append(m)
                save_png(m, self.out / f"{stem}_provenance.png")
                record = {
                    "face": f"{stem}.png",
                    "component": int(gen.samples.components[i]),
                    **provenance_record(prov[i], gen.training_files),
                }
                atomic_write_bytes(self.out / f"{stem}_provenance.json", json.dumps(record, indent=1).encode())
            self.n += 1
            self._bar.update(1)

    def close(self, seed: int | None, settings: dict) -> dict[str, Sequence[Path]]:
        try:
            self._finish()
        finally:
            self._bar.close()
        n, prov = self.n, bool(self.with_provenance)
        names = {
            "faces": _FileNames(self.prefix, ".png", n),
            "provenance_maps": _FileNames(self.prefix, "_provenance.png", n if prov else 0),
            "provenance_json": _FileNames(self.prefix, "_provenance.json", n if prov else 0),
            "grids": [],
        }
        if self._tiles:
            save_png(make_grid(torch.stack(self._tiles)), self.out / "grid.png")
            names["grids"].append("grid.png")
            if self._maps:
                save_png(make_grid(torch.stack(self._maps)), self.out / "provenance_grid.png")
                names["grids"].append("provenance_grid.png")
        self._tiles, self._maps = [], []
        summary = {"n": n, "seed": seed, "settings": settings, "files": names}

        def dump(tmp: str) -> None:
            with open(tmp, "w") as f:
                for chunk in json.JSONEncoder(indent=1).iterencode(summary):
                    f.write(chunk)

        atomic_write(self.out / "samples.json", dump)
        return {k: FilePaths(self.out, v) for k, v in names.items()}
