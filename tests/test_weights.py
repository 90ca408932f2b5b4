"""Weight lookup order, sha256 checks and the opt-in download, on copies of the real files.

Every test runs with HOME, XDG_CACHE_HOME and the lrgmm env vars pointed into a tmp dir and the
shared-folder walk pointed at a tmp tree, so nothing reads or writes the real user cache. The
only network used is a loopback HTTP server.
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import shutil
import socket
import threading
from pathlib import Path

import pytest
from conftest import TAEF2_WEIGHTS_DIR

from lrgmm.io import weights
from lrgmm.errors import WeightsError
from lrgmm.io.weights import (
    cache_dir,
    download_weights,
    find_weights,
    sha256_file,
    weights_cache_dir,
)

ENC = "taef2_encoder.pth"
DEC = "taef2_decoder.pth"
FILES = (ENC, DEC)
SHA = {wf.filename: wf.sha256 for wf in weights.weight_files("taef2")}


@pytest.fixture(scope="module")
def real_dir() -> Path:
    if not all((TAEF2_WEIGHTS_DIR / f).is_file() for f in FILES):
        pytest.skip(f"real TAEF2 weights not found in {TAEF2_WEIGHTS_DIR}")
    return TAEF2_WEIGHTS_DIR


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch) -> Path:
    """A private HOME/XDG cache, no lrgmm env vars, and a shared-folder walk that finds nothing."""
    monkeypatch.delenv(weights.ENV_WEIGHTS, raising=False)
    monkeypatch.delenv("LRGMM_CACHE_DIR", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    start = tmp_path / "checkout" / "main" / "src" / "lrgmm"
    start.mkdir(parents=True)
    monkeypatch.setattr(weights, "_shared_search_starts", lambda: [start])
    return tmp_path


def put(real_dir: Path, dest: Path, *names: str) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    for name in names or FILES:
        shutil.copyfile(real_dir / name, dest / name)
    return dest


# -- directories ---------------------------------------------------------------------------


def test_cache_dir_env_precedence(isolated, monkeypatch):
    assert cache_dir() == isolated / "xdg" / "lrgmm"
    assert weights_cache_dir("taef2") == isolated / "xdg" / "lrgmm" / "weights" / "taef2"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert cache_dir() == isolated / "home" / ".cache" / "lrgmm"
    monkeypatch.setenv("LRGMM_CACHE_DIR", str(isolated / "mycache"))
    assert weights_cache_dir("taef2") == isolated / "mycache" / "weights" / "taef2"


# -- lookup --------------------------------------------------------------------------------


def test_lookup_order(real_dir, isolated, monkeypatch):
    explicit = put(real_dir, isolated / "explicit")
    env = put(real_dir, isolated / "env")
    cache = put(real_dir, weights_cache_dir("taef2"))
    shared = put(real_dir, isolated / "checkout" / "shared" / "weights" / "taef2")
    monkeypatch.setenv(weights.ENV_WEIGHTS, str(env))

    # (1) explicit path beats everything, as a file or as a directory.
    assert find_weights("taef2", ENC, explicit / ENC) == explicit / ENC
    assert find_weights("taef2", ENC, explicit) == explicit / ENC
    # (2) $LRGMM_WEIGHTS: <dir>/<backend>/<file> before <dir>/<file>.
    assert find_weights("taef2", ENC) == env / ENC
    put(real_dir, env / "taef2", ENC)
    assert find_weights("taef2", ENC) == env / "taef2" / ENC
    # (3) the per-user cache.
    monkeypatch.delenv(weights.ENV_WEIGHTS)
    assert find_weights("taef2", ENC) == cache / ENC
    # (4) the shared folder beside the checkout (<ancestor>/../shared/weights/<backend>).
    (cache / ENC).unlink()
    assert find_weights("taef2", ENC) == shared / ENC
    assert find_weights("taef2", DEC) == cache / DEC


def test_shared_folder_found_from_cwd(real_dir, isolated, monkeypatch):
    """The real walk starts from the module and the cwd; a project run from its checkout finds
    ``shared/`` even when the package is installed elsewhere."""
    shared = put(real_dir, isolated / "proj" / "shared" / "weights" / "taef2", ENC)
    cwd = isolated / "proj" / "main" / "sub"
    cwd.mkdir(parents=True)
    monkeypatch.chdir(cwd)
    monkeypatch.setattr(weights, "_shared_search_starts", lambda: [Path.cwd().resolve()])
    assert find_weights("taef2", ENC).resolve() == (shared / ENC).resolve()


def test_missing_weights_message(isolated):
    with pytest.raises(WeightsError) as info:
        find_weights("taef2", ENC)
    msg = str(info.value)
    assert ENC in msg
    assert "lrgmm weights download taef2" in msg
    assert str(weights_cache_dir("taef2") / ENC) in msg  # names the places looked
    assert "LRGMM_WEIGHTS" in msg
    assert SHA[ENC] in msg


def test_missing_explicit_path_does_not_fall_back(real_dir, isolated):
    put(real_dir, weights_cache_dir("taef2"))
    with pytest.raises(WeightsError, match="does not exist"):
        find_weights("taef2", ENC, isolated / "nope" / ENC)
    empty = isolated / "empty"
    empty.mkdir()
    with pytest.raises(WeightsError, match=ENC):
        find_weights("taef2", ENC, empty)


def test_wrong_hash_is_refused(real_dir, isolated, monkeypatch):
    bad_dir = isolated / "bad"
    bad_dir.mkdir()
    data = (real_dir / ENC).read_bytes()[:1000]  # a truncated copy
    (bad_dir / ENC).write_bytes(data)
    actual = hashlib.sha256(data).hexdigest()
    for call in (
        lambda: find_weights("taef2", ENC, bad_dir / ENC),  # explicit path
        lambda: find_weights("taef2", ENC),  # found through the env var
    ):
        monkeypatch.setenv(weights.ENV_WEIGHTS, str(bad_dir))
        with pytest.raises(WeightsError) as info:
            call()
        msg = str(info.value)
        assert SHA[ENC] in msg and actual in msg and str(bad_dir / ENC) in msg
        assert "lrgmm weights download taef2" in msg


def test_a_bad_file_is_not_skipped_for_a_later_good_one(real_dir, isolated, monkeypatch):
    put(real_dir, weights_cache_dir("taef2"))
    env = isolated / "env"
    env.mkdir()
    (env / ENC).write_bytes(b"not weights")
    monkeypatch.setenv(weights.ENV_WEIGHTS, str(env))
    with pytest.raises(WeightsError, match="wrong sha256"):
        find_weights("taef2", ENC)


def test_unknown_backend_or_file():
    with pytest.raises(ValueError, match="taef2"):
        find_weights("nope", ENC)
    with pytest.raises(ValueError, match=ENC):
        find_weights("taef2", "other.pth")


def test_sha256_cached_per_path_size_mtime(isolated):
    f = isolated / "x.bin"
    f.write_bytes(b"abc")
    assert sha256_file(f) == hashlib.sha256(b"abc").hexdigest()
    assert any(k[0] == str(f.resolve()) for k in weights._hash_cache)
    f.write_bytes(b"abcd")  # new size (and mtime): must be re-hashed, not served stale
    assert sha256_file(f) == hashlib.sha256(b"abcd").hexdigest()


def test_taef2_never_downloads(isolated, monkeypatch):
    from lrgmm.autoencoders import TAEF2

    def no_network(*args, **kwargs):
        raise AssertionError("TAEF2() tried to use the network")

    monkeypatch.setattr(weights.urllib.request, "urlopen", no_network)
    with pytest.raises(WeightsError, match="lrgmm weights download taef2"):
        TAEF2()


def test_taef2_uses_weights_dir(real_dir, isolated):
    from lrgmm.autoencoders import TAEF2

    d = put(real_dir, isolated / "w")
    ae = TAEF2(weights_dir=d)
    assert ae.encoder_path == d / ENC and ae.decoder_path == d / DEC


# -- download ------------------------------------------------------------------------------


class _Server:
    """A loopback HTTP server over a directory, counting GET requests."""

    def __init__(self, root: Path) -> None:
        self.requests: list[str] = []
        server = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (stdlib name)
                server.requests.append(self.path)
                super().do_GET()

            def log_message(self, *args):  # keep test output clean
                pass

        handler = functools.partial(Handler, directory=str(root))
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


@pytest.fixture
def serve():
    servers: list[_Server] = []

    def start(root: Path) -> _Server:
        servers.append(_Server(root))
        return servers[-1]

    yield start
    for s in servers:
        s.close()


def test_download_from_loopback(real_dir, isolated, serve):
    srv = serve(put(real_dir, isolated / "served"))
    dest = isolated / "dest"
    paths = download_weights("taef2", dest_dir=dest, base_url=srv.url + "/", progress=False)
    assert paths == [dest / ENC, dest / DEC]
    for p in paths:
        assert sha256_file(p) == SHA[p.name]
    assert sorted(x.name for x in dest.iterdir()) == sorted(FILES)  # no temp files left
    assert len(srv.requests) == 2
    # Present and correct: skipped, no new request.
    assert download_weights("taef2", dest_dir=dest, base_url=srv.url, progress=False) == paths
    assert len(srv.requests) == 2


def test_download_default_dest_is_user_cache(real_dir, isolated, serve):
    srv = serve(put(real_dir, isolated / "served"))
    paths = download_weights("taef2", base_url=srv.url, progress=True)
    assert [p.parent for p in paths] == [weights_cache_dir("taef2")] * 2
    assert find_weights("taef2", ENC) == weights_cache_dir("taef2") / ENC


def test_download_replaces_a_corrupt_file(real_dir, isolated, serve):
    srv = serve(put(real_dir, isolated / "served"))
    dest = isolated / "dest"
    dest.mkdir()
    (dest / ENC).write_bytes(b"garbage")
    download_weights("taef2", dest_dir=dest, base_url=srv.url, progress=False)
    assert sha256_file(dest / ENC) == SHA[ENC]


def test_download_wrong_content(real_dir, isolated, serve):
    served = isolated / "served"
    served.mkdir()
    (served / ENC).write_bytes((real_dir / ENC).read_bytes()[:-10])
    (served / DEC).write_bytes((real_dir / DEC).read_bytes())
    srv = serve(served)
    dest = isolated / "dest"
    with pytest.raises(WeightsError) as info:
        download_weights("taef2", dest_dir=dest, base_url=srv.url, progress=False)
    msg = str(info.value)
    assert "wrong sha256" in msg and SHA[ENC] in msg and srv.url in msg
    assert list(dest.iterdir()) == []  # neither the bad file nor its temp file remains


def test_download_http_error(isolated, serve):
    empty = isolated / "served"
    empty.mkdir()
    srv = serve(empty)
    with pytest.raises(WeightsError, match=f"{srv.url}/{ENC}"):
        download_weights("taef2", dest_dir=isolated / "dest", base_url=srv.url, progress=False)
    assert list((isolated / "dest").iterdir()) == []


def test_download_unreachable(isolated):
    # A loopback port that was free a moment ago: connection refused, no outside network.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    with pytest.raises(WeightsError, match=f"could not download {url}/{ENC}"):
        download_weights("taef2", dest_dir=isolated / "dest", base_url=url, progress=False)
    assert list((isolated / "dest").iterdir()) == []
