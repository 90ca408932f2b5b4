"""Image input and output: find image files, decode them robustly, and write PNGs atomically.

Input images come from users' folders, so anything can be in there: photos from phones (EXIF
rotation, CMYK, 16-bit PNGs), transparent logos, truncated downloads, files that only pretend to
be JPEGs, copies of the same photo. Nothing here raises a traceback for one bad file: every file
that cannot be used is recorded with its path and the reason in an :class:`InputReport`, and only
"no usable image at all" (or a path that does not exist) is an error.
"""

from __future__ import annotations

import hashlib
import io
import math
import os
import warnings
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from lrgmm.errors import ImageInputError, ImageTooLargeError
from lrgmm.io.atomic import atomic_write_bytes

IMAGE_EXTENSIONS: frozenset[str] = frozenset({".jpg", ".jpeg", ".png", ".webp"})
"""File suffixes treated as images (compared lower-cased)."""

# Largest image decoded (4096 x 4096), checked from the header: a 17 KB PNG can claim 12,000^2 pixels.
MAX_IMAGE_PIXELS = 16_777_216

PathLike = Union[str, "os.PathLike[str]"]
Source = Union[PathLike, Sequence[PathLike], "ImageList"]

_MAX_LISTED = 10  # paths listed per category in InputReport.summary()


# --------------------------------------------------------------------------------------------
# Listing


@dataclass
class ImageList:
    """Image files found under the sources, in a deterministic order.

    Attributes:
        paths: image files (by extension), sorted within each folder source, in source order.
        ignored: files skipped because their extension is not an image type.
        hidden: hidden entries (name starting with ".") skipped while walking folders; their
            contents are not walked (``.git``, ``.thumbnails``, macOS ``._x.jpg`` stubs).
        searched: the sources as given, for messages.
        unreadable: (folder, reason) for folders that could not be listed (permissions...):
            whatever they hold is missing from ``paths``, so it is reported, not silently lost.
    """

    paths: list[Path]
    ignored: list[Path] = field(default_factory=list)
    hidden: list[Path] = field(default_factory=list)
    searched: list[str] = field(default_factory=list)
    unreadable: list[tuple[Path, str]] = field(default_factory=list)

    @property
    def n_ignored(self) -> int:
        return len(self.ignored)

    def __len__(self) -> int:
        return len(self.paths)

    def __iter__(self) -> Iterator[Path]:
        return iter(self.paths)


def _is_image_name(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def _walk_folder(folder: Path, out: ImageList) -> None:
    """Recursive walk with sorted names so the order (and thus results) never depends on the
    file system's listing order. Folders that cannot be listed are recorded in ``out.unreadable``
    (``os.walk`` would skip them without a word)."""

    def unreadable(err: OSError) -> None:
        out.unreadable.append((Path(err.filename) if err.filename else folder, f"cannot read folder ({err.strerror or err})"))

    for dirpath, dirnames, filenames in os.walk(folder, onerror=unreadable):
        base = Path(dirpath)
        for d in sorted(dirnames):
            if d.startswith("."):
                out.hidden.append(base / d)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            p = base / name
            if name.startswith("."):
                out.hidden.append(p)
            elif _is_image_name(name):
                out.paths.append(p)
            else:
                out.ignored.append(p)


def _accepted() -> str:
    return ", ".join(sorted(IMAGE_EXTENSIONS))


def list_images(source: Source) -> ImageList:
    """List the image files of ``source``: a folder (walked recursively), a file, or a list of
    files and folders. A path listed twice (or reached twice) is kept once.

    Raises:
        ImageInputError: a path does not exist, or no image file was found.
    """
    if isinstance(source, ImageList):
        return source
    if isinstance(source, (str, os.PathLike)):
        sources = [source]
    else:
        sources = list(source)
        if not sources:
            raise ImageInputError("no input given: pass a folder, an image file, or a list of them")
    out = ImageList(paths=[], searched=[str(s) for s in sources])
    for s in sources:
        p = Path(s)
        if not p.exists():
            raise ImageInputError(f"input path does not exist: {p}")
        if p.is_dir():
            _walk_folder(p, out)
        elif _is_image_name(p.name):
            out.paths.append(p)
        else:
            out.ignored.append(p)

    # Drop repeats of the same file (e.g. a folder and a file inside it both given).
    seen: set[str] = set()
    unique = []
    for p in out.paths:
        key = os.path.realpath(p)
        if key not in seen:
            seen.add(key)
            unique.append(p)
    out.paths = unique

    if not out.paths:
        where = ", ".join(out.searched)
        extra = f" ({out.n_ignored} other file(s) ignored)" if out.ignored else ""
        if out.unreadable:
            extra += "; " + "; ".join(f"{d}: {r}" for d, r in out.unreadable[:_MAX_LISTED])
        raise ImageInputError(
            f"no image files found in {where}{extra}; accepted extensions: {_accepted()} "
            "(folders are searched recursively)"
        )
    return out


# --------------------------------------------------------------------------------------------
# Decoding one image


@dataclass
class PreparedImage:
    """One decoded image and what the caller needs to warn about it.

    Attributes:
        array: float32 (3, R, R) RGB in [0, 1].
        original_size: (width, height) of the file's image, after EXIF rotation.
        upsampled: the short side was smaller than R, so the image was enlarged (blurry).
    """

    array: np.ndarray
    original_size: tuple[int, int]
    upsampled: bool


_ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})  # not "LAB": its "A" is a colour axis


def _to_float_rgb_or_pil(img: Image.Image) -> Image.Image | np.ndarray:
    """Bring any PIL mode to either an 8-bit RGB PIL image (the fast, common path) or a float32
    (H, W, C) array in [0, 1] with C in {1, 3} for high-bit-depth images, whose precision (and
    range: PIL clips I;16 to 255 when converting) an 8-bit conversion would destroy."""
    mode = img.mode
    if mode.startswith("I;16") or mode in ("I", "F"):
        a = np.asarray(img)
        if a.dtype.byteorder not in ("=", "|"):
            a = a.astype(a.dtype.newbyteorder("="))
        a = a.astype(np.float64)
        if mode.startswith("I;16"):
            a = a / 65535.0
        elif mode == "I":
            lo, hi = float(a.min()), float(a.max())
            # 16-bit PNGs and TIFFs often arrive as mode "I" with values in 0..65535; treat those
            # as 16-bit. Anything else has no known nominal range: stretch its actual range.
            if lo >= 0 and hi <= 65535:
                a = a / 65535.0
            else:
                a = (a - lo) / (hi - lo) if hi > lo else np.zeros_like(a)
        else:  # "F": keep [0, 1] data as is, otherwise stretch the finite range
            a = np.nan_to_num(a, nan=0.0, posinf=0.0, neginf=0.0)
            lo, hi = float(a.min()), float(a.max())
            if lo < 0 or hi > 1:
                a = (a - lo) / (hi - lo) if hi > lo else np.zeros_like(a)
        return np.clip(a, 0.0, 1.0).astype(np.float32)[:, :, None]

    has_alpha = mode in _ALPHA_MODES or (mode in ("1", "L", "P", "RGB") and "transparency" in img.info)
    if has_alpha:
        # Composite over white before any resampling (resizing un-premultiplied RGBA would
        # bleed the colour of invisible pixels into the edges).
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    if mode != "RGB":
        return img.convert("RGB")  # L, P, 1, CMYK, YCbCr, LAB, HSV
    return img


def _resize_float(a: np.ndarray, resolution: int) -> np.ndarray:
    """Lanczos-resize a float (H, W, C) array channel by channel through PIL's "F" mode."""
    chans = [
        np.asarray(Image.fromarray(np.ascontiguousarray(a[:, :, c])).resize(
            (resolution, resolution), Image.Resampling.LANCZOS))
        for c in range(a.shape[2])
    ]
    return np.stack(chans, axis=-1)


def open_image(fp) -> Image.Image:
    """``Image.open`` (reads the header only) and the ``MAX_IMAGE_PIXELS`` check, before any
    pixel is decoded; raises ``ImageTooLargeError``. Pillow's own bomb warning is silenced here
    (our limit is lower and says more); its ``DecompressionBombError``, for images past twice
    its limit, comes out of ``Image.open`` (``_describe_error`` words it)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        img = Image.open(fp)
    try:
        _check_pixels(img.size)
    except ImageTooLargeError:
        img.close()
        raise
    return img


def _check_pixels(size: tuple[int, int]) -> None:
    w, h = size
    if w * h > MAX_IMAGE_PIXELS:
        raise ImageTooLargeError(
            f"too large: {w}x{h} = {w * h:,} pixels, over the limit of {MAX_IMAGE_PIXELS:,} (4096x4096); "
            "downscale it to use it"
        )


def _decode(fp, resolution: int) -> PreparedImage:
    img = open_image(fp)
    w0, h0 = img.size
    # Size as the user sees it: EXIF orientations 5..8 rotate by 90 degrees.
    orig = (h0, w0) if img.getexif().get(0x0112, 1) in (5, 6, 7, 8) else (w0, h0)
    if min(orig) == 0:
        raise ValueError("image has zero width or height")
    # JPEG can decode at 1/2, 1/4, 1/8 scale for almost nothing: a big photo then costs a
    # fraction of a full decode. Keep at least 2x the target on the short side so the final
    # Lanczos step still does the antialiasing.
    if img.format == "JPEG" and min(w0, h0) > 4 * resolution:
        s = 2 * resolution / min(w0, h0)
        img.draft(img.mode, (math.ceil(w0 * s), math.ceil(h0 * s)))
    img = ImageOps.exif_transpose(img)  # decodes the pixels: truncation errors surface here
    img.load()
    ow, oh = img.size

    conv = _to_float_rgb_or_pil(img)
    side = min(ow, oh)
    left, top = (ow - side) // 2, (oh - side) // 2
    if isinstance(conv, Image.Image):
        sq = conv.crop((left, top, left + side, top + side))
        if side != resolution:
            sq = sq.resize((resolution, resolution), Image.Resampling.LANCZOS)
        arr = np.asarray(sq, dtype=np.float32) / 255.0
    else:
        sq = conv[top:top + side, left:left + side]
        arr = sq if side == resolution else np.clip(_resize_float(sq, resolution), 0.0, 1.0)
        if arr.shape[2] == 1:
            arr = np.repeat(arr, 3, axis=2)
    arr = np.ascontiguousarray(arr.transpose(2, 0, 1), dtype=np.float32)
    return PreparedImage(arr, orig, min(orig) < resolution)


def _describe_error(e: BaseException) -> str:
    """A one-line, human reason for a file that could not be decoded."""
    if isinstance(e, UnidentifiedImageError):
        return "not a recognised image (unknown or corrupt format)"
    if isinstance(e, ImageTooLargeError):
        return str(e)
    if isinstance(e, (Image.DecompressionBombError, Image.DecompressionBombWarning)):
        return f"too large to decode safely ({e}); lrgmm's limit is {MAX_IMAGE_PIXELS:,} pixels (4096x4096)"
    msg = str(e).strip() or type(e).__name__
    if isinstance(e, (OSError, SyntaxError, EOFError)):
        return f"corrupt or truncated image data ({msg})"
    return f"cannot decode ({type(e).__name__}: {msg})"


def prepare_image(source: PathLike | bytes, resolution: int) -> PreparedImage:
    """Decode a file (or its bytes) to a centre-cropped, Lanczos-resized (3, R, R) image.

    EXIF orientation is applied; grey, palette, CMYK and alpha images become RGB (alpha over
    white); 16-bit images are scaled from their 0..65535 range. The short side decides the
    crop, so faces centred in a portrait photo stay centred.

    Raises:
        ImageInputError: the file is missing, empty or cannot be decoded (message names it).
    """
    if resolution < 1:
        raise ValueError(f"resolution must be a positive integer, got {resolution}")
    name = "<bytes>" if isinstance(source, bytes) else str(source)
    if not isinstance(source, bytes):
        try:
            source = Path(source).read_bytes()
        except OSError as e:
            raise ImageInputError(f"{name}: cannot read file ({e.strerror or e})") from None
    if len(source) == 0:
        raise ImageInputError(f"{name}: empty file (0 bytes)")
    try:
        return _decode(io.BytesIO(source), resolution)
    except Exception as e:  # any decoder failure is a property of the file, not a bug here
        raise ImageInputError(f"{name}: {_describe_error(e)}") from None


def load_image(path: PathLike, resolution: int) -> np.ndarray:
    """Load one image as float32 (3, R, R) RGB in [0, 1]; see :func:`prepare_image`.

    Use :func:`prepare_image` to also learn whether the image had to be upsampled.
    """
    return prepare_image(path, resolution).array


# --------------------------------------------------------------------------------------------
# Loading many images, with a report


@dataclass
class InputReport:
    """What happened to the input files, for the user.

    Attributes:
        n_found: image files listed (by extension).
        n_used: images that made it into the result.
        skipped: (path, reason) for every image file that was not used.
        duplicates: (path, duplicate_of) for files with the same bytes as an earlier file.
        upsampled: (path, (width, height)) of images smaller than the resolution.
        n_ignored: files that were not of an image type.
        n_hidden: hidden files/folders not looked into.
        resolution: the working resolution.
        skipped_folders: (folder, reason) for folders that could not be listed.
    """

    n_found: int = 0
    n_used: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)
    duplicates: list[tuple[str, str]] = field(default_factory=list)
    upsampled: list[tuple[str, tuple[int, int]]] = field(default_factory=list)
    n_ignored: int = 0
    n_hidden: int = 0
    resolution: int | None = None
    skipped_folders: list[tuple[str, str]] = field(default_factory=list)

    def summary(self) -> str:
        """A few lines for humans: counts, then at most ~10 paths per category."""
        lines = [f"{self.n_used} of {self.n_found} image file(s) used"]
        if self.n_ignored:
            lines.append(f"{self.n_ignored} file(s) ignored (not an image type; accepted: {_accepted()})")
        if self.n_hidden:
            lines.append(f"{self.n_hidden} hidden file(s)/folder(s) not searched")

        def block(title: str, rows: list[str]) -> None:
            if not rows:
                return
            lines.append(f"{title}: {len(rows)}")
            lines.extend(f"  {r}" for r in rows[:_MAX_LISTED])
            if len(rows) > _MAX_LISTED:
                lines.append(f"  ... and {len(rows) - _MAX_LISTED} more")

        block("skipped", [f"{p}: {r}" for p, r in self.skipped_folders + self.skipped])
        block("duplicates (kept once)", [f"{p} (same as {q})" for p, q in self.duplicates])
        res = f" {self.resolution}px" if self.resolution else " the resolution"
        block(f"smaller than{res}, upsampled (may look blurry)",
              [f"{p} ({w}x{h})" for p, (w, h) in self.upsampled])
        return "\n".join(lines)

    def error_if_empty(self) -> None:
        """Raise :class:`ImageInputError` with the first reasons when nothing is usable."""
        if self.n_used > 0:
            return
        msg = f"no usable image among {self.n_found} image file(s)"
        skipped = self.skipped_folders + self.skipped
        if skipped:
            msg += ":\n" + "\n".join(f"  {p}: {r}" for p, r in skipped[:5])
            if len(skipped) > 5:
                msg += f"\n  ... and {len(skipped) - 5} more"
        raise ImageInputError(msg)


@dataclass
class LoadedImage:
    """One kept input file.

    Attributes:
        path: the file, as listed.
        sha256: hex sha256 of the file's bytes (the cache key).
        array: float32 (3, R, R), or None when the caller asked not to decode it.
        original_size: (width, height) of the image.
        upsampled: original short side < R.
    """

    path: str
    sha256: str
    array: np.ndarray | None
    original_size: tuple[int, int]
    upsampled: bool


@dataclass
class _FileResult:
    path: str
    sha256: str | None
    prepared: PreparedImage | None = None
    size: tuple[int, int] | None = None
    error: str | None = None


def _process_file(path: Path, resolution: int, decode: Callable[[str], bool] | None) -> _FileResult:
    """Read a file once, hash the bytes, and decode them unless ``decode(sha)`` says no (then
    only the header is read, for the size)."""
    p = str(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        return _FileResult(p, None, error=f"cannot read file ({e.strerror or e})")
    if not data:
        return _FileResult(p, None, error="empty file (0 bytes)")
    sha = hashlib.sha256(data).hexdigest()
    if decode is not None and not decode(sha):
        # These bytes decoded fine before (e.g. their latents are cached): the header is enough
        # to know the size, for the "upsampled" report.
        try:
            with open_image(io.BytesIO(data)) as im:
                size = im.size
                if im.getexif().get(0x0112, 1) in (5, 6, 7, 8):  # EXIF rotations by 90 degrees
                    size = (size[1], size[0])
        except Exception as e:
            return _FileResult(p, sha, error=_describe_error(e))
        return _FileResult(p, sha, size=size)
    try:
        prep = _decode(io.BytesIO(data), resolution)
    except Exception as e:
        return _FileResult(p, sha, error=_describe_error(e))
    return _FileResult(p, sha, prepared=prep, size=prep.original_size)


def _ordered_map(fn: Callable, items: Iterable, workers: int, ahead: int) -> Iterator:
    """``map`` on a thread pool that keeps the input order and at most ``ahead`` results in
    flight, so decoding overlaps encoding without holding a whole data set in memory.
    (Pillow releases the GIL while decoding and resizing.)"""
    if workers <= 1:
        yield from map(fn, items)
        return
    it = iter(items)
    with ThreadPoolExecutor(max_workers=workers) as ex:
        pending: deque = deque()
        for item in it:
            pending.append(ex.submit(fn, item))
            if len(pending) >= ahead:
                break
        while pending:
            fut = pending.popleft()
            for item in it:
                pending.append(ex.submit(fn, item))
                break
            yield fut.result()


def _default_workers() -> int:
    return max(1, min(8, os.cpu_count() or 1))


def iter_images(
    source: Source,
    resolution: int,
    *,
    report: InputReport | None = None,
    decode: Callable[[str], bool] | None = None,
    workers: int | None = None,
    on_file: Callable[[], None] | None = None,
) -> Iterator[LoadedImage]:
    """Yield the usable, distinct images of ``source`` in listing order, recording every
    skipped file, duplicate and small image in ``report`` (created if not given).

    Args:
        decode: called with a file's sha256; when it returns False the pixels are not decoded
            (``array`` is None). The latent cache uses this to skip images it already knows.
        workers: decoding threads (default: up to 8).
        on_file: called once per listed file, e.g. to advance a progress bar.

    ``report.n_used`` counts the yielded images. Raises ImageInputError only from listing.
    """
    if int(resolution) != resolution or resolution < 1:
        raise ValueError(f"resolution must be a positive integer, got {resolution!r}")
    images = list_images(source)
    if report is None:
        report = InputReport()
    report.n_found += len(images.paths)
    report.n_ignored += images.n_ignored
    report.n_hidden += len(images.hidden)
    report.skipped_folders.extend((str(d), r) for d, r in images.unreadable)
    report.resolution = resolution
    workers = _default_workers() if workers is None else workers
    first_by_hash: dict[str, str] = {}
    results = _ordered_map(lambda p: _process_file(p, resolution, decode), images.paths,
                           workers, ahead=4 * max(1, workers))
    for r in results:
        if on_file is not None:
            on_file()
        if r.sha256 is not None and r.sha256 in first_by_hash:
            # Checked before errors: a copy of a bad file is still just a copy.
            report.duplicates.append((r.path, first_by_hash[r.sha256]))
            continue
        if r.sha256 is not None:
            first_by_hash[r.sha256] = r.path
        if r.error is not None:
            report.skipped.append((r.path, r.error))
            continue
        assert r.size is not None and r.sha256 is not None
        upsampled = min(r.size) < resolution
        if upsampled:
            report.upsampled.append((r.path, r.size))
        report.n_used += 1
        yield LoadedImage(r.path, r.sha256, r.prepared.array if r.prepared else None, r.size, upsampled)


@dataclass
class LoadedImages:
    """All usable images of a source, stacked.

    Attributes:
        images: float32 (N, 3, R, R) in [0, 1].
        paths: file of each image.
        hashes: sha256 of each file's bytes.
        report: what was skipped, deduplicated, upsampled.
        resolution: R.
    """

    images: np.ndarray
    paths: list[str]
    hashes: list[str]
    report: InputReport
    resolution: int

    def __len__(self) -> int:
        return len(self.paths)


def load_images(source: Source, resolution: int, *, workers: int | None = None) -> LoadedImages:
    """Load every usable, distinct image of ``source`` (see :func:`iter_images`).

    Raises:
        ImageInputError: a path does not exist, or no image is usable (with the first reasons).
    """
    report = InputReport()
    items = list(iter_images(source, resolution, report=report, workers=workers))
    report.error_if_empty()
    arr = np.stack([it.array for it in items]).astype(np.float32, copy=False)
    return LoadedImages(arr, [it.path for it in items], [it.sha256 for it in items], report, resolution)


def prepare_tensor(images, resolution: int):
    """(n, 3, H, W) or (3, H, W) RGB tensors in [0, 1] at the working resolution, as
    ``prepare_image`` treats files: centre-cropped to a square, then resized (bilinear with
    antialiasing); (n, 3, R, R) float32, clamped to [0, 1]."""
    import torch
    import torch.nn.functional as F

    x = torch.as_tensor(images, dtype=torch.float32)
    if x.ndim == 3:
        x = x[None]
    if x.ndim != 4 or x.shape[1] != 3:
        raise ImageInputError(f"image tensors must be (n, 3, H, W) or (3, H, W) RGB in [0, 1], got shape {tuple(x.shape)}")
    h, w = x.shape[-2:]
    if (h, w) == (resolution, resolution):
        return x.clamp(0, 1)
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    x = x[:, :, top : top + side, left : left + side]
    return F.interpolate(x, size=(resolution, resolution), mode="bilinear", antialias=True, align_corners=False).clamp(0, 1)


# --------------------------------------------------------------------------------------------
# Output


def _as_chw_numpy(image) -> np.ndarray:
    if hasattr(image, "detach"):  # torch tensor, without importing torch here
        image = image.detach().to("cpu").float().numpy()
    a = np.asarray(image, dtype=np.float32)
    if a.ndim == 2:
        a = a[None]
    if a.ndim != 3 or a.shape[0] not in (1, 3):
        raise ValueError(f"expected a (3, H, W) or (1, H, W) image, got shape {a.shape}")
    return a


def to_uint8_hwc(image) -> np.ndarray:
    """(3, H, W) float in [0, 1] -> (H, W, 3) uint8, rounding; NaN becomes 0."""
    a = _as_chw_numpy(image)
    if a.shape[0] == 1:
        a = np.repeat(a, 3, axis=0)
    a = np.nan_to_num(a, nan=0.0, posinf=1.0, neginf=0.0)
    return (np.clip(a, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8).transpose(1, 2, 0)


def save_png(image, path: PathLike) -> Path:
    """Save a (3, H, W) float image in [0, 1] (numpy or torch) as an 8-bit RGB PNG, atomically.
    Values outside [0, 1] are clipped. Returns the path."""
    buf = io.BytesIO()
    Image.fromarray(to_uint8_hwc(image), "RGB").save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())
    return Path(path)


def make_grid(images, ncols: int | None = None, padding: int = 2, pad_value: float = 1.0) -> np.ndarray:
    """Tile (N, 3, H, W) images (array, tensor or list of (3, H, W)) into one (3, H', W') image,
    row by row, with ``padding`` pixels of ``pad_value`` around and between the tiles.
    ``ncols`` defaults to a near-square layout."""
    if hasattr(images, "detach") or isinstance(images, np.ndarray):
        tiles = [_as_chw_numpy(im) for im in images]
    else:
        tiles = [_as_chw_numpy(im) for im in list(images)]
    if not tiles:
        raise ValueError("make_grid needs at least one image")
    tiles = [np.repeat(t, 3, axis=0) if t.shape[0] == 1 else t for t in tiles]
    h, w = tiles[0].shape[1:]
    if any(t.shape[1:] != (h, w) for t in tiles):
        raise ValueError("make_grid needs images of one size")
    n = len(tiles)
    ncols = max(1, min(n, ncols if ncols else math.ceil(math.sqrt(n))))
    nrows = math.ceil(n / ncols)
    grid = np.full((3, padding + nrows * (h + padding), padding + ncols * (w + padding)),
                   pad_value, dtype=np.float32)
    for i, t in enumerate(tiles):
        r, c = divmod(i, ncols)
        y, x = padding + r * (h + padding), padding + c * (w + padding)
        grid[:, y:y + h, x:x + w] = t
    return grid
