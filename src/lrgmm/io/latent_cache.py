"""On-disk cache of encoded latents (``lrgmm.pipeline.encoding`` encodes through it).

Encoding is the slow part of every run, and users rerun on the same folders with a few images
added. Latents are therefore cached by the sha256 of the image file's bytes (renaming or moving a
file keeps its cache entry; editing it does not), per autoencoder id and resolution.

Storage is a folder of safetensors shards (never pickle: a cache folder must not be able to run
code), one per encoded batch, each holding one float32 tensor ``latents`` (n, c, h, w) and, as JSON
in the header metadata, the n content hashes and the n checksums of the rows (version 2).
Shards are written atomically as soon as a batch is encoded, so an interrupted run loses at most
the batch in flight and the next run resumes. Only the headers are read to build the index; a
shard that cannot be read is reported and ignored.

Checksums. A cache is trusted by every later fit, so damage must not pass silently: 4 KiB of a
shard overwritten with finite values was used as it was (codes off by up to 36.6), and NaN there
made every later fit fail until ``--no-cache``. Each row (one image's latent) is stored with the
BLAKE2b-128 of its float32 little-endian bytes; every row of a shard is checked when the shard is
read (microseconds per row against milliseconds of encoding). A shard with failing (or
non-finite) rows is repaired: a warning names the file, the intact rows go to a new shard, the
damaged file is deleted, and the failed images are encoded again like any missing image.

Shards of version 1 (before checksums) are upgraded in place the first time a run sees them, with
one warning per folder: their finite rows are rewritten with checksums, non-finite rows are dropped
and encoded again. Damage older than the upgrade cannot be detected (verifying would need the
encoder), but re-encoding a whole cache of tens of thousands of photos on every upgrade would cost
the user most of an hour; from then on every row is verified.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import warnings
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.numpy import save as _st_save

from lrgmm.errors import LatentCacheWarning
from lrgmm.io.atomic import atomic_write_bytes
from lrgmm.io.paths import cache_dir

_FORMAT = "lrgmm-latents"
_VERSION = "2"  # 2: per-row checksums; 1: none (deleted on sight, see the module docstring)
_TENSOR = "latents"
_SUFFIX = ".safetensors"


def _row_checksum(row: np.ndarray) -> str:
    """BLAKE2b-128 of one latent's float32 little-endian bytes."""
    return hashlib.blake2b(np.ascontiguousarray(row, dtype="<f4").tobytes(), digest_size=16).hexdigest()


class _Unverifiable(Exception):
    """A shard of the checksum-less version 1."""


def _write_shard(folder: Path, hashes: list[str], z: np.ndarray, autoencoder_id: str, resolution) -> tuple[str, list[str]]:
    """Write one shard (version 2) atomically; returns its file name and row checksums."""
    sums = [_row_checksum(zi) for zi in z]
    meta = {
        "format": _FORMAT,
        "version": _VERSION,
        "autoencoder_id": autoencoder_id,
        "resolution": str(int(resolution)),
        "hashes": json.dumps(hashes),
        "checksums": json.dumps(sums),
    }
    # Named after its content, so writing the same batch twice just replaces the file.
    name = hashlib.sha256("\n".join(hashes).encode()).hexdigest()[:32] + _SUFFIX
    atomic_write_bytes(folder / name, _st_save({_TENSOR: z}, metadata=meta))
    return name, sums


def default_cache_root() -> Path:
    """``cache_dir() / "latents"`` (``lrgmm.io.paths``)."""
    return cache_dir() / "latents"


def _folder_name(autoencoder_id: str) -> str:
    """A file-system safe folder name for an id. A short hash of the raw id keeps two ids that
    sanitise to the same text apart."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", autoencoder_id).strip("._") or "autoencoder"
    return f"{safe[:80]}-{hashlib.sha256(autoencoder_id.encode()).hexdigest()[:8]}"


class _Index:
    """Where each hash lives in one namespace folder, built from shard headers only."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.shards: dict[str, list[str] | None] = {}  # file name -> hashes; None = unusable
        self.checksums: dict[str, list[str]] = {}  # file name -> checksum of each row
        self.where: dict[str, tuple[str, int]] = {}  # hash -> (file name, row)

    def refresh(self, autoencoder_id: str) -> None:
        """Read the headers of shards not seen yet (cheap: a listdir when nothing changed)."""
        try:
            names = sorted(n for n in os.listdir(self.folder) if n.endswith(_SUFFIX))
        except FileNotFoundError:
            names = []
        old = []
        for name in names:
            if name in self.shards:
                continue
            try:
                hashes = self._read_header(self.folder / name, autoencoder_id)
            except _Unverifiable:
                self.shards[name] = None
                old.append(name)
                continue
            self.shards[name] = hashes
            for row, h in enumerate(hashes or ()):
                self.where.setdefault(h, (name, row))
        if old:
            upgraded, dropped = 0, 0
            for name in old:
                try:
                    new_name, hashes, sums, n_bad = self._upgrade(name, autoencoder_id)
                except Exception as e:  # unreadable or read-only: ignored, its images re-encoded
                    self.forget(name, f"{e}")
                    continue
                self.shards[new_name], self.checksums[new_name] = hashes, sums
                for row, h in enumerate(hashes):
                    self.where.setdefault(h, (new_name, row))
                upgraded, dropped = upgraded + 1, dropped + n_bad
            warnings.warn(
                f"upgraded {upgraded} of {len(old)} latent cache shard(s) in {self.folder} written by an older "
                "lrgmm without checksums: their rows get checksums from now on"
                + (f"; {dropped} non-finite row(s) were dropped and will be encoded again" if dropped else ""),
                LatentCacheWarning,
                stacklevel=4,
            )

    def _upgrade(self, name: str, autoencoder_id: str) -> tuple[str, list[str], list[str], int]:
        """Rewrite a version 1 shard as version 2: its finite rows with checksums from now on
        (a damage older than the upgrade cannot be detected, but non-finite rows are dropped)."""
        path = self.folder / name
        with safe_open(str(path), framework="np") as f:
            meta = f.metadata() or {}
            hashes = json.loads(meta["hashes"])
            z = f.get_tensor(_TENSOR)
        if z.dtype != np.float32 or z.ndim != 4 or not isinstance(hashes, list) or len(hashes) != len(z):
            raise ValueError(f"unexpected version 1 shard {z.dtype} {z.shape}")
        finite = np.isfinite(z.reshape(len(z), -1)).all(1)
        keep = [str(h) for h, ok in zip(hashes, finite) if ok]
        new_name, sums = _write_shard(self.folder, keep, np.ascontiguousarray(z[finite]), autoencoder_id,
                                      meta.get("resolution", "0"))
        if new_name != name:
            path.unlink()
        return new_name, keep, sums, int((~finite).sum())

    def _read_header(self, path: Path, autoencoder_id: str) -> list[str] | None:
        try:
            with safe_open(str(path), framework="np") as f:
                meta = f.metadata() or {}
                if meta.get("format") != _FORMAT or _TENSOR not in f.keys():
                    raise ValueError("not an lrgmm latent shard")
                if meta.get("autoencoder_id") != autoencoder_id:
                    raise ValueError(f"written for autoencoder {meta.get('autoencoder_id')!r}")
                if meta.get("version") == "1":
                    raise _Unverifiable
                if meta.get("version") != _VERSION:
                    raise ValueError(f"shard version {meta.get('version')!r}, this lrgmm reads {_VERSION}")
                hashes = json.loads(meta["hashes"])
                sums = json.loads(meta["checksums"])
                n = f.get_slice(_TENSOR).get_shape()[0]
            if not isinstance(hashes, list) or len(hashes) != n or not all(isinstance(h, str) for h in hashes):
                raise ValueError("hash list does not match the tensor")
            if not isinstance(sums, list) or len(sums) != n or not all(isinstance(h, str) for h in sums):
                raise ValueError("checksum list does not match the tensor")
            self.checksums[path.name] = sums
            return hashes
        except _Unverifiable:
            raise
        except Exception as e:  # any unreadable shard is skipped, never fatal
            self.forget(path.name, f"{e}")
            return None

    def forget(self, name: str, reason: str) -> None:
        """Drop a shard from the index, warning once."""
        warnings.warn(
            f"ignoring unreadable latent cache shard {self.folder / name}: {reason} "
            "(its images will be encoded again; the file can be deleted)",
            LatentCacheWarning,
            stacklevel=4,
        )
        old = self.shards.get(name) or []
        self.shards[name] = None
        self.checksums.pop(name, None)
        for h in old:
            if self.where.get(h, (None,))[0] == name:
                del self.where[h]


class LatentCache:
    """Latents keyed by image content hash, namespaced by autoencoder id and resolution.

    Args:
        root: cache folder; default :func:`default_cache_root`.
    """

    def __init__(self, root: str | os.PathLike[str] | None = None):
        self.root = Path(root).expanduser() if root is not None else default_cache_root()
        self._indexes: dict[tuple[str, int], _Index] = {}

    def __repr__(self) -> str:
        return f"LatentCache({str(self.root)!r})"

    def folder(self, autoencoder_id: str, resolution: int) -> Path:
        """The namespace folder holding the shards of one autoencoder at one resolution."""
        return self.root / _folder_name(autoencoder_id) / f"res{int(resolution)}"

    def _index(self, autoencoder_id: str, resolution: int) -> _Index:
        key = (autoencoder_id, int(resolution))
        if key not in self._indexes:
            self._indexes[key] = _Index(self.folder(autoencoder_id, resolution))
        idx = self._indexes[key]
        idx.refresh(autoencoder_id)
        return idx

    def known(self, *, autoencoder_id: str, resolution: int) -> set[str]:
        """The hashes the cache holds for this namespace (from headers only)."""
        return set(self._index(autoencoder_id, resolution).where)

    def get(self, hashes, *, autoencoder_id: str, resolution: int) -> dict[str, np.ndarray]:
        """The cached float32 (c, h, w) latents of those ``hashes`` that are present."""
        idx = self._index(autoencoder_id, resolution)
        by_shard: dict[str, list[tuple[str, int]]] = {}
        for h in dict.fromkeys(hashes):
            if h in idx.where:
                name, row = idx.where[h]
                by_shard.setdefault(name, []).append((h, row))
        out: dict[str, np.ndarray] = {}
        for name, rows in by_shard.items():
            hashes, sums = idx.shards.get(name), idx.checksums.get(name)
            try:
                with safe_open(str(idx.folder / name), framework="np") as f:
                    z = f.get_tensor(_TENSOR)
                if z.dtype != np.float32 or z.ndim != 4 or hashes is None or sums is None or len(z) != len(hashes):
                    raise ValueError(f"unexpected tensor {z.dtype} {z.shape}")
            except Exception as e:
                idx.forget(name, str(e))
                continue
            ok = [_row_checksum(zi) == s and bool(np.isfinite(zi).all()) for zi, s in zip(z, sums)]
            if not all(ok):
                self._repair(idx, name, hashes, z, ok, autoencoder_id, resolution)
            for h, row in rows:
                if ok[row]:
                    out[h] = z[row]
        return out

    def _repair(self, idx: _Index, name: str, hashes: list[str], z: np.ndarray, ok: list[bool],
                autoencoder_id: str, resolution: int) -> None:
        """Replace a shard with damaged rows by a shard of its intact rows, so the damage is
        reported once and the damaged rows are encoded again (they are no longer indexed)."""
        path = idx.folder / name
        warnings.warn(
            f"latent cache shard {path}: {ok.count(False)} of {len(ok)} cached latent(s) fail their checksum "
            "(the file was damaged); those images are encoded again and the shard is rewritten without them",
            LatentCacheWarning,
            stacklevel=4,
        )
        keep = [i for i, good in enumerate(ok) if good]
        with contextlib.suppress(OSError):  # a read-only cache: the damage is reported again next time
            if keep:
                self.put([hashes[i] for i in keep], z[keep], autoencoder_id=autoencoder_id, resolution=resolution)
            path.unlink()
        idx.shards[name] = None
        idx.checksums.pop(name, None)
        for h in hashes:
            if idx.where.get(h, (None,))[0] == name:
                del idx.where[h]

    def put(self, hashes, latents, *, autoencoder_id: str, resolution: int) -> Path | None:
        """Store ``latents`` (n, c, h, w) for ``hashes`` as one new shard, atomically.
        Returns the shard path (None when there is nothing to store)."""
        hashes = [str(h) for h in hashes]
        if isinstance(latents, torch.Tensor):
            latents = latents.detach().to("cpu", torch.float32).numpy()
        z = np.ascontiguousarray(latents, dtype=np.float32)
        if z.ndim != 4 or len(hashes) != z.shape[0]:
            raise ValueError(f"need (n, c, h, w) latents for {len(hashes)} hashes, got {z.shape}")
        if not hashes:
            return None
        folder = self.folder(autoencoder_id, resolution)
        name, sums = _write_shard(folder, hashes, z, autoencoder_id, resolution)
        path = folder / name
        idx = self._indexes.get((autoencoder_id, int(resolution)))
        if idx is not None:  # keep a loaded index current without rereading the header
            idx.shards[name] = hashes
            idx.checksums[name] = sums
            for row, h in enumerate(hashes):
                idx.where[h] = (name, row)
        return path
