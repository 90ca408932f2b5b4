"""Encoding a photo folder on Ray: many workers fill the latent cache that ``fit`` reads.

Encoding is the slow part of a fit (about 50 ms a photo on two cores), so a 100k-photo folder
is spread over a Ray cluster, or over the local cores when no cluster is given. Ray Data reads
the image files; one actor per worker holds the autoencoder (built once, not per batch) and, for
each batch of files, hashes the bytes, skips what the cache already holds, prepares the rest
exactly as the in-process path does (``lrgmm.io.images.prepare_image``), encodes them and writes
one cache shard (``lrgmm.io.latent_cache``: content-named shards written atomically, so workers
never write the same file). The driver then runs the in-process ``encode_images`` over the same
source: it lists, orders, deduplicates and reports exactly as a local run does, and finds every
latent in the cache. A file that failed on a worker is tried once more there and reported as
skipped with the local path's message, so the two engines report bad files alike.

On a cluster, the photos and the cache folder must be on storage every node sees (the same
path), and every node needs lrgmm and the autoencoder weights installed.
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..autoencoders.base import check_positive_int
from ..errors import ImageInputError, OptionalDependencyError
from ..io.images import Source, list_images, prepare_image
from ..io.latent_cache import LatentCache

RAY_EXTRA = "pip install 'lrgmm[ray]'"
ENGINES = ("local", "ray")


def _import_ray():
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as exc:
        raise OptionalDependencyError(f"--engine ray needs Ray Data ({exc.name} is missing): {RAY_EXTRA}") from None
    return ray


@dataclass
class RayEncodeReport:
    """What the Ray workers did: files encoded, found in the cache, and failed (path, reason);
    ``workers`` actors of ``threads`` torch threads each; wall-clock ``seconds``."""

    encoded: int = 0
    cached: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    workers: int = 0
    threads: int = 0
    seconds: float = 0.0

    @property
    def photos_per_second(self) -> float:
        done = self.encoded + self.cached + len(self.failed)
        return done / self.seconds if self.seconds > 0 else float("nan")


class _EncodeActor:
    """A Ray Data actor: holds one autoencoder and turns batches of file bytes into cache shards."""

    def __init__(self, backend: str, options: dict, precision: str, resolution: int, cache_root: str, threads: int):
        import torch

        from ..autoencoders import get_autoencoder

        torch.set_num_threads(threads)
        self.ae = get_autoencoder(backend, precision=precision, **options)
        self.resolution = resolution
        self.store = LatentCache(cache_root)
        self.ns = {"autoencoder_id": self.ae.latent_key, "resolution": resolution}
        self.known = self.store.known(**self.ns)

    def __call__(self, batch: dict) -> dict:
        paths, shas, status, reasons = [], [], [], []
        todo, arrays = [], []
        for data, path in zip(batch["bytes"], batch["path"]):
            data = bytes(data)
            sha = hashlib.sha256(data).hexdigest()
            paths.append(str(path))
            shas.append(sha)
            if sha in self.known:
                status.append("cached")
                reasons.append("")
                continue
            try:
                arrays.append(prepare_image(data, self.resolution).array)
            except ImageInputError as exc:
                status.append("failed")
                reasons.append(str(exc).split(": ", 1)[-1])
                continue
            todo.append(len(status))
            status.append("encoded")
            reasons.append("")
        if todo:
            import torch

            z = self.ae.encode(torch.from_numpy(np.stack(arrays))).numpy()
            finite = np.isfinite(z.reshape(len(z), -1)).all(axis=1)
            keep = [shas[i] for i, ok in zip(todo, finite) if ok]
            if keep:
                self.store.put(keep, z[finite], **self.ns)
                self.known.update(keep)
            for i, ok in zip(todo, finite):
                if not ok:
                    status[i], reasons[i] = "failed", "non-finite latent"
        return {"path": paths, "sha256": shas, "status": status, "reason": reasons}


def _start_ray(ray, address: str | None) -> None:
    import logging

    # Ray Data's own progress log would interleave with ours (a tqdm bar over the files).
    logging.getLogger("ray.data").setLevel(logging.ERROR)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    if ray.is_initialized():
        return
    kwargs = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
    if address is None:
        # One logical CPU more than the machine has: Ray Data's file-reading tasks are I/O, and
        # without the extra slot the encoding actors would hold every CPU and starve them.
        ray.init(num_cpus=(os.cpu_count() or 1) + 1, **kwargs)
    else:
        ray.init(address=address, **kwargs)


def encode_on_ray(
    source: Source,
    autoencoder: str = "taef2",
    *,
    resolution: int = 128,
    batch_size: int = 8,
    precision: str = "fp32",
    cache: LatentCache | None = None,
    address: str | None = None,
    workers: int | None = None,
    threads: int | None = None,
    autoencoder_options: dict | None = None,
    progress: bool = True,
) -> RayEncodeReport:
    """Encode the images of ``source`` on Ray into the latent ``cache`` (default: the per-user
    one). ``address``: a Ray cluster to join (None: start a local Ray on this machine).
    ``workers`` actors (default: the cluster's CPUs // ``threads``), each with ``threads`` torch
    threads (default 1 on a local Ray, 2 on a cluster). ``batch_size`` files per actor call. The
    files are listed as the in-process path lists them. Returns what the workers did; the latents
    are read back with ``encode_images(source, ..., cache=cache)`` (``FacePipeline.encode`` /
    ``fit`` with the same settings do that).

    Raises:
        OptionalDependencyError: Ray Data is not installed.
        ImageInputError: ``source`` does not exist or lists no image.
    """
    ray = _import_ray()
    check_positive_int(batch_size, "batch_size")
    for name, value in (("workers", workers), ("threads", threads)):
        if value is not None:
            check_positive_int(value, name)
    from ..autoencoders import get_autoencoder

    options = dict(autoencoder_options or {})
    probe = get_autoencoder(autoencoder, precision=precision, **options)  # fails here, not on a worker
    probe.latent_shape(resolution)
    store = cache if cache is not None else LatentCache()
    files = [str(Path(p).resolve()) for p in list_images(source).paths]
    if not files:
        raise ImageInputError(f"{source}: no image files to encode")
    _start_ray(ray, address)
    cpus = int(ray.cluster_resources().get("CPU", 1))
    threads = threads or (1 if address is None else 2)
    workers = workers or max(1, (cpus - (1 if address is None else 0)) // threads)
    report = RayEncodeReport(workers=workers, threads=threads)
    start = time.perf_counter()
    ds = ray.data.read_binary_files(files, include_paths=True, num_cpus=0.25)
    ds = ds.map_batches(
        _EncodeActor,
        fn_constructor_kwargs={"backend": autoencoder, "options": options, "precision": probe.precision,
                               "resolution": int(resolution), "cache_root": str(store.root), "threads": threads},
        batch_size=batch_size,
        compute=ray.data.ActorPoolStrategy(size=workers),
        num_cpus=threads,
        batch_format="numpy",
    )
    from tqdm.auto import tqdm

    with tqdm(total=len(files), desc=f"encoding on Ray ({workers} workers)", unit="img", disable=not progress) as bar:
        for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
            for path, status, reason in zip(batch["path"], batch["status"], batch["reason"]):
                if status == "encoded":
                    report.encoded += 1
                elif status == "cached":
                    report.cached += 1
                else:
                    report.failed.append((str(path), str(reason)))
            bar.update(len(batch["path"]))
    report.seconds = time.perf_counter() - start
    return report


__all__ = ["ENGINES", "RayEncodeReport", "encode_on_ray"]
