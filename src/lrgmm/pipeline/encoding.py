"""Photos in, latents out: :func:`encode_images` encodes what the latent cache
(``lrgmm.io.latent_cache``) does not hold yet, batch by batch, and stores each batch as soon as
it is encoded, so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from ..autoencoders.base import Autoencoder
from ..errors import ImageInputError, LatentCacheWarning
from ..io.images import InputReport, LoadedImage, Source, iter_images, list_images, prepare_image
from ..io.latent_cache import LatentCache


@dataclass
class EncodedSet:
    """The latents of the usable, distinct images of a source.

    Attributes:
        latents: float32 CPU tensor (N, c, h, w).
        paths: file of each latent.
        hashes: sha256 of each file's bytes.
        report: skipped files (including "non-finite latent"), duplicates, upsampled images.
        resolution: image side the latents were encoded at.
        autoencoder_id: ``Autoencoder.id`` of the encoder.
        n_encoded: images encoded in this call; n_cached: images read from the cache.
        precision: the encoder's arithmetic, "fp32" or "bf16" (part of the cache key).
    """

    latents: torch.Tensor
    paths: list[str]
    hashes: list[str]
    report: InputReport
    resolution: int
    autoencoder_id: str
    n_encoded: int = 0
    n_cached: int = 0
    precision: str = "fp32"

    def __len__(self) -> int:
        return len(self.paths)


def _resolve_cache(cache: bool | LatentCache | None) -> LatentCache | None:
    if cache is True:
        return LatentCache()
    if cache is None or cache is False:
        return None
    if isinstance(cache, LatentCache):
        return cache
    raise TypeError(f"cache must be True, False, None or a LatentCache, got {cache!r}")


def encode_images(
    source: Source,
    autoencoder: Autoencoder,
    resolution: int = 128,
    batch_size: int = 8,
    cache: bool | LatentCache | None = True,
    progress: bool = True,
    *,
    workers: int | None = None,
) -> EncodedSet:
    """List, load and encode the images of ``source`` (folder, file or list of them), reusing
    cached latents and encoding only the missing images, in batches of ``batch_size``.

    Each encoded batch goes to the cache at once, so an interrupted run resumes where it
    stopped. Images whose latents are not finite are skipped ("non-finite latent") and not
    cached. The result keeps the listing order.

    Raises:
        ImageInputError: a path does not exist, or no image is usable.
    """
    if int(resolution) != resolution or resolution < 1:
        raise ValueError(f"resolution must be a positive integer, got {resolution!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    store = _resolve_cache(cache)
    ae_id = autoencoder.id
    # bf16 latents are cached apart from fp32 ones (``Autoencoder.latent_key``).
    ns = {"autoencoder_id": autoencoder.latent_key, "resolution": resolution}
    images = list_images(source)
    report = InputReport()
    known = store.known(**ns) if store is not None else set()

    latents: dict[str, np.ndarray] = {}
    nonfinite: set[str] = set()
    kept: list[LoadedImage] = []  # usable images in listing order (pixels dropped once encoded)
    from_cache: list[LoadedImage] = []
    pending: list[LoadedImage] = []
    counts = {"encoded": 0, "cached": 0}

    def flush() -> None:
        if not pending:
            return
        x = torch.from_numpy(np.stack([p.array for p in pending]))
        with torch.no_grad():
            z = autoencoder.encode(x)
        z = z.detach().to("cpu", torch.float32).numpy()
        if z.ndim != 4 or z.shape[0] != len(pending):
            raise RuntimeError(f"{ae_id} returned latents of shape {z.shape} for {len(pending)} images")
        finite = np.isfinite(z.reshape(len(z), -1)).all(axis=1)
        for p, zi, ok in zip(pending, z, finite):
            if ok:
                latents[p.sha256] = zi
            else:
                nonfinite.add(p.sha256)
        if store is not None and finite.any():
            store.put([p.sha256 for p, ok in zip(pending, finite) if ok], z[finite], **ns)
        counts["encoded"] += len(pending)
        for p in pending:
            p.array = None  # only the latent is needed from now on; keeps memory flat
        pending.clear()

    with tqdm(total=len(images), desc="encoding", unit="img", disable=not progress) as bar:

        def advance() -> None:
            done = report.n_used + len(report.skipped) + len(report.duplicates) - len(pending)
            bar.update(done - bar.n)

        for item in iter_images(images, resolution, report=report, decode=lambda h: h not in known,
                                workers=workers):
            kept.append(item)
            if item.array is None:
                from_cache.append(item)
            else:
                pending.append(item)
                if len(pending) == batch_size:
                    flush()
                    bar.set_postfix(cached=len(from_cache), encoded=counts["encoded"], refresh=False)
            advance()
        flush()
        advance()

        # Cached entries are read at the end, shard by shard. Any that vanished or turned out
        # unreadable since the index was built are decoded and encoded after all.
        if store is not None:
            got = store.get([it.sha256 for it in from_cache], **ns)
            expected = tuple(autoencoder.latent_shape(resolution))
            wrong = [h for h, z in got.items() if tuple(z.shape) != expected]
            if wrong:
                warnings.warn(f"{len(wrong)} cached latent(s) in {store.folder(autoencoder.latent_key, resolution)} have "
                              f"shape {tuple(got[wrong[0]].shape)}, expected {expected}; encoding again",
                              LatentCacheWarning, stacklevel=2)
            for h in wrong:
                del got[h]
            latents.update(got)
            counts["cached"] = len(got)
            for it in from_cache:
                if it.sha256 not in latents:
                    try:
                        it.array = prepare_image(it.path, resolution).array
                    except ImageInputError as e:  # e.g. the file changed since it was hashed
                        report.skipped.append((it.path, str(e).split(": ", 1)[-1]))
                        report.n_used -= 1
                        continue
                    pending.append(it)
                    if len(pending) == batch_size:
                        flush()
            flush()
        bar.set_postfix(cached=counts["cached"], encoded=counts["encoded"])

    out_z, out_paths, out_hashes = [], [], []
    for it in kept:
        if it.sha256 in nonfinite:
            report.skipped.append((it.path, "non-finite latent"))
            report.n_used -= 1
        elif it.sha256 in latents:
            out_z.append(latents[it.sha256])
            out_paths.append(it.path)
            out_hashes.append(it.sha256)
    report.error_if_empty()
    return EncodedSet(
        latents=torch.from_numpy(np.stack(out_z).astype(np.float32, copy=False)),
        paths=out_paths,
        hashes=out_hashes,
        report=report,
        resolution=resolution,
        autoencoder_id=ae_id,
        n_encoded=counts["encoded"],
        n_cached=counts["cached"],
        precision=autoencoder.precision,
    )
