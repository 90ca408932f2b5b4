"""Finding, verifying and (only on request) downloading autoencoder weight files.

Weights never ship inside the package and are never fetched behind the user's back: lookup only
reads local files, and :func:`download_weights` is the single function that touches the network,
called explicitly (``lrgmm weights download taef2``). Every file is checked against the sha256
recorded here, so a model fitted with one set of weights cannot silently run with another.
"""

from __future__ import annotations

import hashlib
import os
import sys
import tempfile
import threading
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from lrgmm.errors import ParameterError, WeightsError
from lrgmm.io.paths import cache_dir

__all__ = [
    "WeightFile",
    "REGISTRY",
    "known_backends",
    "weight_files",
    "cache_dir",
    "weights_cache_dir",
    "sha256_file",
    "find_weights",
    "download_weights",
    "DOWNLOAD_COMMAND",
]

# Env var naming a directory of weights, checked before the per-user cache.
ENV_WEIGHTS = "LRGMM_WEIGHTS"
# Env var naming the root of the whole lrgmm cache (weights live under <root>/weights/<backend>).

_CHUNK = 1 << 20  # 1 MiB: big enough to hash fast, small enough to never hold a file in memory.

_TAESD_COMMIT = "5cccb12dc72074a4be35680c3b108548a7c69978"
_TAESD_RAW = f"https://raw.githubusercontent.com/madebyollin/taesd/{_TAESD_COMMIT}"


@dataclass(frozen=True)
class WeightFile:
    """One known weight file: where it belongs, what it must hash to, where it comes from."""

    backend: str
    filename: str
    sha256: str
    url: str


# Backend name (also the folder name under every weights directory) -> its files.
# URLs pin a commit so the bytes behind them cannot change under the recorded sha256.
REGISTRY: dict[str, tuple[WeightFile, ...]] = {
    "taef2": (
        WeightFile(
            "taef2",
            "taef2_encoder.pth",
            "10a4e1021e89d7551eaf161352da8dbd0b1aa83872ae28b150c1df1ce2f147b6",
            f"{_TAESD_RAW}/taef2_encoder.pth",
        ),
        WeightFile(
            "taef2",
            "taef2_decoder.pth",
            "0a44a31e1ae59eb9dbf9359d24942fd3ef5928162c1800d97a28c61d51be0ab5",
            f"{_TAESD_RAW}/taef2_decoder.pth",
        ),
    ),
}


def download_command(backend: str) -> str:
    """The command line that fetches a backend's weights (quoted in error messages)."""
    return f"lrgmm weights download {backend}"


DOWNLOAD_COMMAND = download_command("taef2")


def known_backends() -> list[str]:
    """Names of the backends whose weight files are known."""
    return sorted(REGISTRY)


def weight_files(backend: str) -> tuple[WeightFile, ...]:
    """The known files of ``backend``; ValueError naming the known backends otherwise."""
    try:
        return REGISTRY[backend]
    except KeyError:
        raise ParameterError(
            f"unknown weights backend {backend!r}; known backends: {', '.join(known_backends())}"
        ) from None


def _weight_file(backend: str, filename: str) -> WeightFile:
    for wf in weight_files(backend):
        if wf.filename == filename:
            return wf
    names = ", ".join(wf.filename for wf in weight_files(backend))
    raise ValueError(f"unknown weight file {filename!r} for backend {backend!r}; known: {names}")


# ---------------------------------------------------------------------------------------------
# Directories


def weights_cache_dir(backend: str) -> Path:
    """Per-user folder holding ``backend``'s weights: ``cache_dir()/weights/<backend>``."""
    return cache_dir() / "weights" / backend


def _shared_search_starts() -> list[Path]:
    """Folders from which to walk up looking for a checkout's ``shared/`` folder.

    A function (not a constant) so tests can point it elsewhere and prove the fallbacks.
    """
    return [Path(__file__).resolve().parent, Path.cwd().resolve()]


def shared_candidates(*parts: str) -> Iterator[Path]:
    """``<A>/shared/<parts>`` and ``<A>/../shared/<parts>`` for every ancestor A of the search
    starts: where a checkout finds the project's shared folder (weights, data) beside it."""
    seen: set[Path] = set()
    for start in _shared_search_starts():
        for ancestor in (start, *start.parents):
            for root in (ancestor / "shared", ancestor.parent / "shared"):
                cand = root.joinpath(*parts)
                if cand not in seen:
                    seen.add(cand)
                    yield cand


def _shared_candidates(backend: str, filename: str) -> Iterator[Path]:
    return shared_candidates("weights", backend, filename)


# ---------------------------------------------------------------------------------------------
# Hashing

_hash_cache: dict[tuple[str, int, int], str] = {}
_hash_lock = threading.Lock()


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file, streamed in chunks.

    Digests are remembered per (path, size, mtime) for the life of the process, so building
    several autoencoders does not re-hash megabytes each time, while an edited file is re-hashed.
    """
    p = Path(path).resolve()
    st = p.stat()
    key = (str(p), st.st_size, st.st_mtime_ns)
    with _hash_lock:
        cached = _hash_cache.get(key)
    if cached is not None:
        return cached
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
    digest = h.hexdigest()
    with _hash_lock:
        _hash_cache[key] = digest
    return digest


def _check_hash(path: Path, wf: WeightFile) -> Path:
    try:
        actual = sha256_file(path)
    except OSError as e:
        raise WeightsError(f"cannot read weight file {path}: {e}") from e
    if actual != wf.sha256:
        raise WeightsError(
            f"weight file {path} has the wrong sha256.\n"
            f"  expected: {wf.sha256}\n"
            f"  actual:   {actual}\n"
            f"The file is truncated, corrupted or a different version of {wf.filename}. Delete it "
            f"and fetch the right one with `{download_command(wf.backend)}`, or download "
            f"{wf.url} by hand."
        )
    return path


# ---------------------------------------------------------------------------------------------
# Lookup


def _candidates(backend: str, filename: str) -> Iterator[tuple[str, Path]]:
    """(origin, path) pairs in lookup order, after the explicit path (handled by the caller)."""
    env = os.environ.get(ENV_WEIGHTS)
    if env:
        d = Path(env).expanduser()
        yield f"${ENV_WEIGHTS}", d / backend / filename
        yield f"${ENV_WEIGHTS}", d / filename
    yield "user cache", weights_cache_dir(backend) / filename
    for cand in _shared_candidates(backend, filename):
        yield "shared folder", cand


def find_weights(backend: str, filename: str, path: str | Path | None = None) -> Path:
    """Locate and sha256-verify one weight file; return its path.

    Lookup order: (1) ``path`` (a file, or a directory holding the file or ``<backend>/<file>``);
    an explicit path that does not hold the file is an error, never a silent fallback;
    (2) ``$LRGMM_WEIGHTS/<backend>/<file>`` then ``$LRGMM_WEIGHTS/<file>``; (3) the per-user cache
    :func:`weights_cache_dir`; (4) ``shared/weights/<backend>/<file>`` in or beside any ancestor
    of this module and of the current directory (a development checkout).

    The first file found is checked: a wrong sha256 raises :class:`WeightsError` instead of
    trying further places, because a bad file where the user put it is a mistake worth seeing.
    """
    wf = _weight_file(backend, filename)

    if path is not None:
        p = Path(path).expanduser()
        if p.is_dir():
            for cand in (p / filename, p / backend / filename):
                if cand.is_file():
                    return _check_hash(cand, wf)
            raise WeightsError(
                f"{filename} is not in the directory {p} (nor in {p / backend}).\n"
                f"Put {filename} (sha256 {wf.sha256}) there, or run `{download_command(backend)}` "
                f"and drop the explicit path to use the per-user cache."
            )
        if p.is_file():
            return _check_hash(p, wf)
        raise WeightsError(
            f"weight file {p} does not exist (expected {filename}, sha256 {wf.sha256}).\n"
            f"Fix the path, or run `{download_command(backend)}` and drop the explicit path."
        )

    looked: list[str] = []
    for origin, cand in _candidates(backend, filename):
        if cand.is_file():
            return _check_hash(cand, wf)
        looked.append(f"  - {cand}  ({origin})")

    if not os.environ.get(ENV_WEIGHTS):
        looked.insert(0, f"  - ${ENV_WEIGHTS}/{backend}/{filename}  (${ENV_WEIGHTS} not set)")
    raise WeightsError(
        f"cannot find the {backend} weight file {filename} (sha256 {wf.sha256}).\n"
        f"Looked in:\n" + "\n".join(looked) + "\n"
        f"To fix it, do one of:\n"
        f"  - run `{download_command(backend)}` (downloads into {weights_cache_dir(backend)});\n"
        f"  - download {wf.url} by hand into {weights_cache_dir(backend)};\n"
        f"  - put {filename} in a directory DIR and set {ENV_WEIGHTS}=DIR (or DIR/{backend})."
    )


# ---------------------------------------------------------------------------------------------
# Download


def _progress_bar(total: int | None, desc: str, enabled: bool):
    """A tqdm bar on stderr, or a no-op object when disabled or tqdm is unusable."""

    class _Null:
        def update(self, n: int) -> None:
            pass

        def close(self) -> None:
            pass

    if not enabled:
        return _Null()
    try:
        from tqdm import tqdm
    except ImportError:  # tqdm is a dependency, but a bar is not worth failing a download for
        return _Null()
    return tqdm(total=total, unit="B", unit_scale=True, desc=desc, file=sys.stderr, leave=False)


def _fetch(url: str, dest: Path, wf: WeightFile, progress: bool, timeout: float) -> Path:
    """Stream ``url`` to a temp file beside ``dest``, verify, then atomically rename."""
    tmp_fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{wf.filename}.", suffix=".part")
    tmp = Path(tmp_name)
    try:
        h = hashlib.sha256()
        with os.fdopen(tmp_fd, "wb") as out:
            try:
                req = urllib.request.Request(url, headers={"User-Agent": "lrgmm"})
                with urllib.request.urlopen(req, timeout=timeout) as resp:
                    length = resp.headers.get("Content-Length")
                    bar = _progress_bar(int(length) if length else None, wf.filename, progress)
                    try:
                        for chunk in iter(lambda: resp.read(_CHUNK), b""):
                            h.update(chunk)
                            out.write(chunk)
                            bar.update(len(chunk))
                    finally:
                        bar.close()
            except (urllib.error.URLError, OSError, ValueError) as e:
                # URLError covers HTTP errors and refused connections; OSError covers timeouts
                # and resets mid-stream; ValueError a malformed URL.
                raise WeightsError(
                    f"could not download {url}: {e}\n"
                    f"Check the network (or --base-url), or download the file by hand into "
                    f"{dest.parent} (sha256 {wf.sha256})."
                ) from e
            out.flush()
            os.fsync(out.fileno())
        actual = h.hexdigest()
        if actual != wf.sha256:
            raise WeightsError(
                f"downloaded {url} has the wrong sha256.\n"
                f"  expected: {wf.sha256}\n"
                f"  actual:   {actual}\n"
                f"Nothing was saved. The server sent different bytes than the pinned file; "
                f"retry, or download {wf.url} by hand into {dest.parent}."
            )
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; weights are not secret
        os.replace(tmp, dest)
        return dest
    finally:
        if tmp.exists():
            tmp.unlink()


def download_weights(
    backend: str,
    dest_dir: str | Path | None = None,
    base_url: str | None = None,
    progress: bool = True,
    timeout: float = 60.0,
) -> list[Path]:
    """Download every weight file of ``backend`` into ``dest_dir``; return their paths.

    The only function in lrgmm that uses the network. ``dest_dir`` defaults to the per-user
    cache (:func:`weights_cache_dir`), where :func:`find_weights` looks. ``base_url`` replaces
    the pinned upstream location (``<base_url>/<filename>``), e.g. for a mirror. Files already
    present with the right sha256 are kept; each new file is streamed to a temp file in
    ``dest_dir``, checked, then renamed into place, so a failed or corrupt download never
    leaves a partial file under the final name.
    """
    files = weight_files(backend)
    dest = Path(dest_dir).expanduser() if dest_dir is not None else weights_cache_dir(backend)
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise WeightsError(f"cannot create the weights directory {dest}: {e}") from e

    paths: list[Path] = []
    for wf in files:
        target = dest / wf.filename
        if target.is_file():
            try:
                if sha256_file(target) == wf.sha256:
                    paths.append(target)
                    continue
            except OSError:
                pass  # unreadable: download over it
        url = f"{base_url.rstrip('/')}/{wf.filename}" if base_url else wf.url
        if progress:
            print(f"downloading {url} -> {target}", file=sys.stderr)
        paths.append(_fetch(url, target, wf, progress, timeout))
    return paths

