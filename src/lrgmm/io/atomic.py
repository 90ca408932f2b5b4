"""Atomic file writes: readers see the old file or the whole new one, never half a file.

Every file lrgmm writes (model and edit files, cache shards, PNGs, JSON) goes through here: write
a hidden temporary file in the destination folder, flush it to disk, give it its permissions,
``os.replace`` it onto the name, then flush the folder so the new name itself survives a power
cut. A crash, Ctrl-C or SIGTERM at any point leaves no partial file behind.

What may sit at the output path (``check_writable_target``). A rename replaces whatever has the
name, so without a check ``-o /dev/null`` run as root replaced the machine's /dev/null with a
model file, and a FIFO, a socket or a symbolic link would be swapped for a regular file. Only a
regular file is replaced; anything else is refused with ``OutputPathError``:

- a folder, a device, a FIFO or a socket: never ours to replace;
- a symbolic link: replacing it would silently cut the link, writing through it would write
  somewhere the user did not name; refusing is the one answer that surprises nobody (give the
  real path, or remove the link);
- a read-only regular file: someone protected it;
- an empty name, or a name ending in a path separator (it names a folder).

Missing folders on the way are created (as ``lrgmm sample -o new/`` always did), so the folder
check is on the nearest existing ancestor: it must be a folder this process can write in.
Commands call the check before any work (``lrgmm fit`` before encoding), and ``atomic_write``
runs it again at the start and just before the rename: a file swapped in meanwhile is refused,
not replaced.

Permissions. A replaced file keeps its permission bits (a 0600 model file holding training codes
stays 0600) and, where allowed, its owner and group. A new file gets the usual
``0666 & ~umask``: the temporary file is created with mode 0666 and the kernel applies the
umask, so the umask is never read (reading it means setting it, which races with other threads).

SIGTERM. Its default action kills the process without running cleanup, which would leave the
hidden ``.tmp`` file. While a write runs in the main thread and SIGTERM still has its default
action, a handler turns it into ``SystemExit(143)``, so the temporary file is removed and the
process still ends with the status of a SIGTERM; the previous handler is restored afterwards. A
program that installed its own SIGTERM handler (a web server) keeps it; other threads cannot
install handlers at all.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import secrets
import signal
import stat
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from ..errors import OutputPathError

_KINDS = {
    stat.S_ISDIR: "folder",
    stat.S_ISCHR: "character device",
    stat.S_ISBLK: "block device",
    stat.S_ISFIFO: "FIFO (named pipe)",
    stat.S_ISSOCK: "socket",
}


def _existing(path: Path) -> os.stat_result | None:
    """``lstat`` of what sits at ``path``; None when nothing does, or when the folder cannot be
    searched (the folder check reports that)."""
    try:
        st = os.lstat(path)
    except OSError:
        return None
    if stat.S_ISLNK(st.st_mode):
        try:
            target = f" (to {os.readlink(path)})"
        except OSError:
            target = ""
        raise OutputPathError(
            f"output path {path} is a symbolic link{target}; lrgmm does not replace links or write "
            "through them: give the path of the file itself, or remove the link"
        )
    for test, kind in _KINDS.items():
        if test(st.st_mode):
            extra = "; give a file name inside it" if kind == "folder" else ""
            raise OutputPathError(
                f"output path {path} is a {kind}, not a regular file; lrgmm only replaces regular files{extra}"
            )
    if not stat.S_ISREG(st.st_mode):
        raise OutputPathError(f"output path {path} is not a regular file; choose another output path")
    if not os.access(path, os.W_OK):
        raise OutputPathError(
            f"output path {path} is read-only; make it writable (chmod u+w) or choose another output path"
        )
    return st


def check_writable_target(path: str | os.PathLike) -> Path:
    """Raise ``OutputPathError`` unless ``atomic_write`` may write ``path``: nothing or a writable
    regular file sits there, and the nearest existing folder above it is a folder this process
    can write in (missing folders are created by the write). Touches nothing; returns the path.
    Call it before long work, so that a bad ``-o`` fails in a second, not after the work."""
    text = os.fspath(path)
    if isinstance(text, bytes):
        text = os.fsdecode(text)
    if not text.strip():
        raise OutputPathError(f"no output file name given ({text!r}); give a file name, e.g. -o faces.lrgmm")
    if text.endswith(os.sep) or (os.altsep and text.endswith(os.altsep)):
        raise OutputPathError(f"output path {text} ends with {os.sep!r}, so it names a folder; give a file name")
    p = Path(text)
    _existing(p)
    folder = p.parent
    while not os.path.exists(folder) and folder.parent != folder:
        folder = folder.parent
    if not os.path.isdir(folder):
        raise OutputPathError(
            f"cannot write {p}: {folder} is {'a file' if os.path.exists(folder) else 'missing'}, not a folder"
        )
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputPathError(f"cannot write {p}: no permission to write in the folder {folder}")
    return p


@contextlib.contextmanager
def _sigterm_raises() -> Iterator[None]:
    """For the duration of the block, SIGTERM raises SystemExit(143) instead of killing the
    process outright, when it is safe to change: main thread, default action."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    try:
        previous = signal.getsignal(signal.SIGTERM)
    except (ValueError, AttributeError):  # no SIGTERM on this platform
        previous = None
    if previous is not signal.SIG_DFL:
        yield
        return

    def terminate(signum, frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _create_temp(folder: Path, name: str) -> str:
    """A new hidden file beside the target, created with mode 0666 so the umask applies."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOFOLLOW", 0)
    for _ in range(100):
        # Name cut to 100 characters: the temporary name must fit where the target's name fits.
        tmp = str(folder / f".{name[:100]}.{secrets.token_hex(4)}.tmp")
        try:
            os.close(os.open(tmp, flags, 0o666))
        except FileExistsError:
            continue
        return tmp
    raise FileExistsError(f"could not create a temporary file in {folder}")


def _fsync_folder(folder: Path) -> None:
    """Flush a folder's entries (the rename) to disk; some file systems cannot, and say so."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> Path:
    """Call ``write(tmp_path)`` to fill a temporary file, then move it onto ``path``.

    Raises ``OutputPathError`` (before calling ``write``, and again before the rename) when
    something other than a writable regular file sits at ``path``; see the module docstring."""
    path = check_writable_target(path)
    with _sigterm_raises():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = None
        try:
            tmp = _create_temp(path.parent, path.name)
            mode = os.stat(tmp).st_mode & 0o777  # 0666 & ~umask, as the kernel made it
            write(tmp)
            fd = os.open(tmp, os.O_RDONLY)
            try:
                # On disk before the rename, or a power cut could leave an empty file under the name.
                os.fsync(fd)
                old = _existing(path)
                if old is not None:
                    mode = old.st_mode & 0o777
                    if hasattr(os, "fchown") and (old.st_uid, old.st_gid) != (os.getuid(), os.getgid()):
                        with contextlib.suppress(OSError):  # allowed for root (and the group's members)
                            os.fchown(fd, old.st_uid, old.st_gid)
                os.fchmod(fd, mode)
            finally:
                os.close(fd)
            os.replace(tmp, path)
            tmp = None
        except BaseException:
            if tmp is not None:
                Path(tmp).unlink(missing_ok=True)
            raise
        _fsync_folder(path.parent)
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically."""
    return atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))


def jsonable(obj):
    """``obj`` with what ``json`` cannot write turned into what it can: NumPy scalars and arrays
    into numbers and lists, paths into strings, dict keys into strings, and non-finite floats
    into None (JSON has no NaN or infinity)."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if isinstance(obj, (np.floating, float)):
        return float(obj) if math.isfinite(float(obj)) else None
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, Path):
        return str(obj)
    return obj


def atomic_write_json(path: str | os.PathLike, obj, indent: int | None = 1) -> Path:
    """``jsonable(obj)`` as JSON (UTF-8, newline-terminated), written atomically."""
    return atomic_write_bytes(path, (json.dumps(jsonable(obj), indent=indent) + "\n").encode())
