"""Uploaded images: checked by content (JPEG, PNG or WebP, at most a pixel bound, read from the
header), renamed to safe names and stored one folder per upload, bounded per session and across
sessions (``UploadStore``); the same pixel bound for the files of the ``--data`` folders."""

from __future__ import annotations

import io
import math
import re
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError

from ..errors import BusyError, NotFoundError, StudioError, TooLargeError, UnsupportedMediaError
from ..io.images import MAX_IMAGE_PIXELS
from .names import new_id, quote, size_text

_SAFE = re.compile(r"[^A-Za-z0-9._-]+")
_FORMATS = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp"}
_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


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


@dataclass(eq=False)
class UploadStore:
    """Uploads by id (``uploads``), each in its own folder under ``root``, owned by the session
    that sent it; ``limits``: the studio's ``Limits`` (the ``max_upload*`` and
    ``max_total_upload*`` bounds, ``upload_idle_s``)."""

    root: Path
    limits: Any
    uploads: dict[str, Upload] = field(default_factory=dict, init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def save(self, session: str, files: list[tuple[str, bytes]]) -> Upload:
        """Check and store uploaded images in a new folder under ``root``, owned by ``session``.
        All or nothing: one bad file rejects the request and nothing is kept.

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
        upload_id = new_id("u")
        # The folder is named by the upload id alone: the session id (the cookie) is in no path.
        up = Upload(upload_id, session, self.root / upload_id, [f for f, _ in checked], n_bytes)
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

    def use(self, upload_id: str, session: str) -> Upload:
        """``session``'s upload ``upload_id`` (``NotFoundError`` for anyone else's), marked as used now."""
        up = self.uploads.get(upload_id) if isinstance(upload_id, str) else None
        if up is None or up.session != session:
            raise NotFoundError(f"unknown upload {quote(upload_id)} for this session; upload images first")
        up.used = time.monotonic()
        return up
