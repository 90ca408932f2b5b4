"""The studio's HTTP API (lrgmm.studio), through httpx's in-process client, on the session's 64
faces and autoencoder (real faces and TAEF2 with the shared folder, synthetic faces and the fake
autoencoder without): generated faces and provenance agree with the Python API, bad requests get
clear 4xx JSON errors and the server keeps answering, uploads are checked and confined, the face
cache is bounded, and the edit and complete panels give what FacePipeline.edit / .complete give."""

from __future__ import annotations

import io
import re
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("fastapi", reason="the studio extra is not installed: pip install 'lrgmm[studio]'")
pytest.importorskip("httpx", reason="the studio tests need httpx: pip install 'lrgmm[studio-test]'")

from fastapi.testclient import TestClient

from lrgmm.pipeline import FacePipeline
from lrgmm.studio.app import create_app
from lrgmm.studio.limits import Limits
from lrgmm.studio.service import Studio
from lrgmm.studio.uploads import sanitize_filename


BASE = "http://127.0.0.1"  # the studio answers only to the host names it serves (not "testserver")


def _png_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def _decode_png(data: bytes) -> np.ndarray:
    img = Image.open(io.BytesIO(data))
    assert img.format == "PNG"
    return np.asarray(img.convert("RGB"))


@pytest.fixture
def studio_env(fitted64, faces64_dir, lrgmm_cache, request):
    """A studio holding ``fitted64`` (no model file reloading) with the 64 faces' folder as data."""
    limits = getattr(request, "param", None) or Limits()
    studio = Studio(data=[faces64_dir], limits=limits, pipeline_options={"autoencoder": fitted64.autoencoder_})
    entry = studio._add_model("faces64", fitted64, "file")
    with TestClient(create_app(studio), base_url=BASE) as client:
        yield client, studio, entry.id


def _error(resp, status: int, *words: str) -> str:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert body["status"] == status and isinstance(body["error"], str) and body["error"]
    for w in words:
        assert w in body["error"], (w, body["error"])
    return body["error"]


def _generate(client, model, **kw) -> dict:
    r = client.post("/api/generate", json={"model": model, **kw})
    assert r.status_code == 200, r.text
    return r.json()


def _faces(client, grid) -> np.ndarray:
    out = []
    for f in grid["faces"]:
        r = client.get(f["url"])
        assert r.status_code == 200 and r.headers["content-type"] == "image/png"
        out.append(_decode_png(r.content))
    return np.stack(out)


def test_generate_matches_the_python_api(studio_env, fitted64, faces64_dir):
    client, _studio, mid = studio_env
    grid = _generate(client, mid, n=6, seed=5)
    assert grid["n"] == 6 and grid["has_provenance"] and grid["settings"]["nn_iterations"] == 1
    faces = _faces(client, grid)
    ref = fitted64.generate(6, seed=5)
    ref_u8 = (ref.images.clamp(0, 1) * 255 + 0.5).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    # Same latents, decoded in batches of 4 instead of 16: equal up to one 8-bit level.
    assert faces.shape == ref_u8.shape == (6, 128, 128, 3)
    assert np.abs(faces.astype(int) - ref_u8.astype(int)).max() <= 1
    # Provenance: the exact map of the Python API, sources with shares that add up to 1.
    for i in range(6):
        rec = client.get(f"/api/grids/{grid['id']}/faces/{i}/provenance.json").json()
        assert rec["map"] == ref.samples.provenance[i].tolist()
        assert rec["component"] == int(ref.samples.components[i])
        assert abs(sum(s["share"] for s in rec["sources"]) - 1) < 1e-5
        counts = torch.bincount(ref.samples.provenance[i].reshape(-1), minlength=64)
        for s in rec["sources"]:
            # Named relative to the data folder, never by the server's absolute path.
            name = Path(fitted64.training_files_[s["index"]]).name
            assert s["name"] == name and s["file"] == f"{faces64_dir.name}/{name}"
            assert s["share"] == pytest.approx(counts[s["index"]].item() / 256, abs=1e-6)
        shares = [s["share"] for s in rec["sources"]]
        assert shares == sorted(shares, reverse=True) and rec["largest_share"] == shares[0]
    # The same request again gives the same bytes; another seed other faces.
    again = _faces(client, _generate(client, mid, n=6, seed=5))
    assert np.array_equal(again, faces)
    other = _faces(client, _generate(client, mid, n=6, seed=6))
    assert not np.array_equal(other, faces)
    # The grid PNG tiles the same faces (2 px padding, 3 columns).
    g = _decode_png(client.get(grid["grid_url"]).content)
    assert g.shape == (2 + 2 * 130, 2 + 3 * 130, 3)
    assert np.array_equal(g[2:130, 132:260], faces[1])
    # The provenance map picture: one colour per training index, 8x8 pixel blocks.
    pm = _decode_png(client.get(f"/api/grids/{grid['id']}/faces/0/provenance.png").content)
    assert pm.shape == (128, 128, 3) and np.array_equal(pm[::8, ::8].reshape(-1, 3)[:1], pm[:1, :1].reshape(1, 3))


def test_settings_reach_the_sampler(studio_env, fitted64):
    client, _studio, mid = studio_env
    plain = _generate(client, mid, n=4, seed=2, nn=False, temperature=0.05)
    assert not plain["has_provenance"] and plain["settings"]["temperature"] == 0.05
    ref = fitted64.generate(4, seed=2, nn=False, temperature=0.05)
    ref_u8 = (ref.images.clamp(0, 1) * 255 + 0.5).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    assert np.abs(_faces(client, plain).astype(int) - ref_u8.astype(int)).max() <= 1
    _error(client.get(f"/api/grids/{plain['id']}/faces/0/provenance.json"), 404, "no provenance")
    two = _generate(client, mid, n=3, seed=2, nn_iterations=2)
    rec = client.get(f"/api/grids/{two['id']}/faces/0/provenance.json").json()
    assert rec["map"] == fitted64.generate(3, seed=2, nn_iterations=2).samples.provenance[0].tolist()


def test_generate_in_raster_order(studio_env, fitted64):
    client, _studio, mid = studio_env
    info = next(m for m in client.get("/api/models").json() if m["id"] == mid)
    assert info["nn_order"] == fitted64.model_.nn_order == "raster"
    grid = _generate(client, mid, n=4, seed=6, nn_order="parallel")
    assert grid["settings"]["nn_order"] == "parallel"
    ref = fitted64.model_.sample(4, 6, nn_order="parallel").provenance
    assert not torch.equal(ref, fitted64.model_.sample(4, 6).provenance)  # the order matters here
    for i in range(4):
        assert client.get(f"/api/grids/{grid['id']}/faces/{i}/provenance.json").json()["map"] == ref[i].tolist()
    assert _generate(client, mid, n=2, seed=6)["settings"]["nn_order"] == "raster"  # the model's
    r = client.post("/api/generate", json={"model": mid, "n": 2, "nn_order": "zigzag"})
    assert r.status_code == 422 and "nn_order" in r.text


def test_generate_respects_max_share(studio_env, fitted64):
    client, _studio, mid = studio_env
    info = next(m for m in client.get("/api/models").json() if m["id"] == mid)
    assert info["max_share"] == 0.2 and info["spread"] == 1.5 and info["min_max_share"] == fitted64.model_.min_max_share()  # the default
    share = max(0.25, info["min_max_share"])
    plain = fitted64.model_.sample(6, 5, max_share=1).provenance
    assert max(int(torch.bincount(p.reshape(-1)).max()) for p in plain) > share * 256  # it binds here
    grid = _generate(client, mid, n=6, seed=5, max_share=share)
    assert grid["settings"]["max_share"] == share
    ref = fitted64.model_.sample(6, 5, max_share=share).provenance
    for i in range(6):
        rec = client.get(f"/api/grids/{grid['id']}/faces/{i}/provenance.json").json()
        assert rec["map"] == ref[i].tolist()
        assert rec["largest_share"] <= share and max(s["share"] for s in rec["sources"]) <= share
    assert _faces(client, grid).shape == (6, 128, 128, 3)  # and the faces decode
    off = _generate(client, mid, n=6, seed=5, max_share=1)  # 1 = no budget: the plain faces
    assert off["settings"]["max_share"] is None
    assert client.get(f"/api/grids/{off['id']}/faces/0/provenance.json").json()["map"] == plain[0].tolist()


def test_training_thumbnails_by_index_only(studio_env, fitted64):
    client, _studio, mid = studio_env
    r = client.get(f"/api/models/{mid}/training/3.png?size=32")
    assert r.status_code == 200
    thumb = _decode_png(r.content)
    assert thumb.shape == (32, 32, 3)
    # It is that training file, prepared as the pipeline prepares images.
    from lrgmm.io.images import load_image, to_uint8_hwc

    assert np.array_equal(thumb, to_uint8_hwc(load_image(fitted64.training_files_[3], 32)))
    _error(client.get(f"/api/models/{mid}/training/64.png"), 404, "out of range", "64 training faces")
    _error(client.get(f"/api/models/{mid}/training/-1.png"), 404, "out of range")
    _error(client.get(f"/api/models/{mid}/training/3.png?size=4096"), 400, "size")
    _error(client.get(f"/api/models/{mid}/training/abc.png"), 422, "index")
    _error(client.get(f"/api/models/{mid}/training/..%2F..%2Fetc%2Fpasswd.png"), 404, "no such endpoint")
    _error(client.get("/api/models/..%2F..%2Fetc/training/0.png"), 404)


@pytest.mark.parametrize(
    ("change", "status", "words"),
    [
        ({"model": "nope"}, 404, ["unknown model id 'nope'"]),
        ({"model": "../../etc/passwd"}, 404, ["unknown model id"]),
        ({"n": 0}, 400, ["n must be between 1 and 64", "got 0"]),
        ({"n": 65}, 400, ["n must be between 1 and 64"]),
        ({"n": "many"}, 422, ["n:"]),
        ({"seed": -1}, 422, ["seed"]),
        ({"temperature": 1.5}, 400, ["temperature", "(0, 1.0]", "got 1.5"]),
        ({"temperature": -0.1}, 400, ["temperature"]),
        ({"nn_iterations": 0}, 400, ["nn_iterations"]),
        ({"nn_iterations": 99}, 400, ["nn_iterations", "between 1 and 5"]),
        ({"max_share": 0}, 422, ["max_share"]),
        ({"max_share": 1.5}, 422, ["max_share"]),
        ({"max_share": "a lot"}, 422, ["max_share"]),
        ({"max_share": 0.001}, 400, ["max_share must be in [", "for this model", "got 0.001"]),
    ],
)
def test_bad_generate_requests(studio_env, change, status, words):
    client, _studio, mid = studio_env
    _error(client.post("/api/generate", json={"model": mid, "n": 4, **change}), status, *words)
    assert client.get("/api/status").status_code == 200


def test_bad_ids_and_bodies(studio_env):
    client, _studio, mid = studio_env
    grid = _generate(client, mid, n=2, seed=1)
    _error(client.get(f"/api/grids/{grid['id']}/faces/2.png"), 404, "out of range", "0..1")
    _error(client.get("/api/grids/gdeadbeef/faces/0.png"), 404, "unknown grid")
    _error(client.get("/api/jobs/j0"), 404, "unknown job")
    _error(client.post("/api/generate", content=b"{not json", headers={"content-type": "application/json"}), 422)
    _error(client.post("/api/generate", json={}), 422, "model")
    _error(client.get("/api/nothing/here"), 404, "no such endpoint")
    # Fits name a listed folder, never a path.
    for folder in ("../..", "/etc", "faces64/../../..", str(Path.home())):
        _error(client.post("/api/fit", json={"folder": folder}), 404, "unknown data folder")
    name = client.get("/api/folders").json()[0]["name"]
    _error(client.post("/api/fit", json={"folder": name, "n_images": 1}), 400, "n_images", "between 2 and 64")
    _error(client.post("/api/fit", json={"folder": name, "n_images": 10_000}), 400, "n_images")
    _error(client.post("/api/fit", json={"folder": name, "upload": "u1"}), 400, "exactly one")
    _error(client.post("/api/fit", json={"upload": "u123"}), 404, "unknown upload")
    assert client.get("/api/status").json()["models"] == 1


def _face_file_bytes(path: Path) -> bytes:
    return path.read_bytes()


@pytest.mark.parametrize("studio_env", [Limits(max_upload_bytes=60_000, max_upload_files=10)], indirect=True)
def test_uploads_are_checked_and_confined(studio_env, faces64):
    client, studio, _mid = studio_env
    # Not an image, whatever its name says.
    _error(client.post("/api/uploads", files=[("files", ("face.jpg", b"GIF89a not really" * 10, "image/jpeg"))]),
           415, "'face.jpg'", "not a readable image")
    _error(client.post("/api/uploads", files=[("files", ("notes.txt", b"hello", "text/plain"))]), 415, "notes.txt")
    # Too large (noise does not compress: ~200 KB as PNG) and too many files.
    noise = np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8)
    _error(client.post("/api/uploads", files=[("files", ("big.png", _png_bytes(noise), "image/png"))]), 413, "big.png", "at most")
    small = _png_bytes(noise[:32, :32])
    _error(client.post("/api/uploads", files=[("files", (f"f{i}.png", small, "image/png")) for i in range(11)]), 413, "10")
    _error(client.post("/api/uploads"), 400)
    # A small file holding a huge flat image (a decompression bomb) is refused before decoding.
    buf = io.BytesIO()
    Image.new("L", (8000, 6000)).save(buf, format="PNG")
    assert len(buf.getvalue()) < 60_000
    _error(client.post("/api/uploads", files=[("files", ("flat.png", buf.getvalue(), "image/png"))]), 413, "8000x6000")
    # One bad file rejects the whole request: nothing is stored.
    good = _face_file_bytes(faces64[0])
    _error(client.post("/api/uploads", files=[("files", ("a.jpg", good, "image/jpeg")),
                                              ("files", ("b.jpg", b"\xff\xd8 broken", "image/jpeg"))]), 415, "b.jpg")
    assert not any(p.is_file() for p in studio._tmp.rglob("*"))
    # Path-like and odd names are reduced to a plain name inside this session's folder; the stored
    # extension follows the content (a JPEG sent as .png is stored as .jpg).
    files = [("files", (name, _face_file_bytes(p), "image/jpeg"))
             for name, p in zip(["../../evil.jpg", "/etc/passwd", "..\\win.png", "ok face (1).JPG"], faces64[:4])]
    r = client.post("/api/uploads", files=files)
    assert r.status_code == 200, r.text
    up = r.json()
    assert up["files"] == ["evil.jpg", "passwd.jpg", "win.jpg", "ok_face_1_.jpg"]
    stored = sorted(p for p in studio._tmp.rglob("*") if p.is_file())
    assert len(stored) == 4 and all(p.parent.parent == studio._tmp for p in stored)
    assert sorted(p.read_bytes() for p in stored) == sorted(_face_file_bytes(p) for p in faces64[:4])
    # Another session cannot fit from this upload.
    with TestClient(client.app, base_url=BASE) as other:
        _error(other.post("/api/fit", json={"upload": up["upload"]}), 404, "unknown upload")
    assert client.get("/api/status").status_code == 200


def test_sanitize_filename():
    assert sanitize_filename("../../a b.jpg", 0) == "a_b"
    assert sanitize_filename("C:\\x\\..\\y.png", 0) == "y"
    assert sanitize_filename("...", 3) == "upload_0003"
    assert sanitize_filename(".hidden.jpg", 0) == "hidden"
    assert len(sanitize_filename("x" * 500 + ".jpg", 0)) <= 80


def _wait_job(client, job_id, timeout=180):
    deadline = time.monotonic() + timeout
    seen = []
    while time.monotonic() < deadline:
        job = client.get(f"/api/jobs/{job_id}").json()
        seen.append((job["state"], job["progress"]["done"]))
        if job["state"] in ("done", "error"):
            return job, seen
        time.sleep(0.1)
    raise AssertionError(f"fit job {job_id} did not finish in {timeout} s: {seen[-1]}")


def test_fit_from_folder_and_from_uploads(studio_env, faces64):
    client, studio, _mid = studio_env
    name = client.get("/api/folders").json()[0]["name"]
    job = client.post("/api/fit", json={"folder": name, "n_images": 20, "seed": 3}).json()
    assert job["progress"]["total"] == 20
    job, _seen = _wait_job(client, job["id"])
    assert job["state"] == "done", job
    assert job["progress"] == {"done": 20, "total": 20} and "20 of 20" in job["report"]
    info = client.get(f"/api/models/{job['model']}").json()
    assert info["n_images"] == 20 and info["origin"] == "fit"
    # The subset is the seeded one, from the listed folder only.
    files = studio.model(job["model"]).pipeline.training_files_
    folder = studio.folders[name]
    assert all(Path(f).parent == folder for f in files) and len(set(files)) == 20
    # Uploads: 8 faces, fitted, their training files are the stored uploads.
    up = client.post("/api/uploads", files=[("files", (p.name, p.read_bytes(), "image/jpeg")) for p in faces64[:8]]).json()
    job, _ = _wait_job(client, client.post("/api/fit", json={"upload": up["upload"]}).json()["id"])
    assert job["state"] == "done", job
    pipe = studio.model(job["model"]).pipeline
    assert [Path(f).name for f in pipe.training_files_] == sorted(up["files"])
    assert all(Path(f).is_relative_to(studio._tmp) for f in pipe.training_files_)
    grid = _generate(client, job["model"], n=2, seed=0)
    assert _faces(client, grid).shape == (2, 128, 128, 3)
    names = {s["name"] for s in client.get(f"/api/grids/{grid['id']}/faces/0/provenance.json").json()["sources"]}
    assert names <= set(up["files"])


@pytest.mark.parametrize("studio_env", [Limits(max_cached_faces=8, decode_batch=2)], indirect=True)
def test_face_cache_is_bounded(studio_env):
    client, studio, mid = studio_env
    grids = [_generate(client, mid, n=4, seed=s) for s in range(3)]
    for g in grids[1:]:
        _faces(client, g)
    assert studio.grids.n_faces() == 8 and len(studio.grids) == 2
    _error(client.get(grids[0]["faces"][0]["url"]), 404, "dropped")
    assert client.get("/api/status").json()["cache"] == {"grids": 2, "faces": 8, "max_faces": 8}


def test_slow_work_does_not_block_the_page(studio_env):
    client, _studio, mid = studio_env
    big = _generate(client, mid, n=64, seed=9)  # ~64 decodes queued in the worker pool
    start = time.perf_counter()
    status = client.get("/api/status").json()
    page = client.get("/")
    elapsed = time.perf_counter() - start
    assert page.status_code == 200 and "lrgmm studio" in page.text
    assert elapsed < 1.0, f"status and page took {elapsed:.2f} s while decoding"
    assert status["queues"]["decode"]["running"] + status["queues"]["decode"]["waiting"] == 1
    # A replacing request cancels the remaining decoding of the grid it replaces.
    newer = _generate(client, mid, n=2, seed=10, replaces=big["id"])
    assert _faces(client, newer).shape[0] == 2
    info = client.get(f"/api/grids/{big['id']}").json()
    assert info["cancelled"] and info["decoded"] < 64
    _error(client.get(big["faces"][63]["url"]), 409, "replaced")


def test_openapi_documents_the_api(studio_env):
    client, _studio, _mid = studio_env
    spec = client.get("/openapi.json").json()
    for path in ("/api/generate", "/api/fit", "/api/uploads", "/api/jobs/{job_id}",
                 "/api/grids/{grid_id}/faces/{index}/provenance.json", "/api/models/{model_id}/training/{index}.png",
                 "/api/grids/{grid_id}/faces/{index}/nearest"):
        assert path in spec["paths"], path
    assert client.get("/static/studio.js").status_code == 200


# ------------------------------------------------------------------ nearest training faces


def _inception_or_skip():
    from lrgmm.metrics import MissingExtractorError, find_inception_file

    try:
        find_inception_file()
    except MissingExtractorError as e:
        pytest.skip(str(e))


def _nearest(client, grid_id, index, timeout=300.0) -> tuple[dict, list]:
    """Poll the nearest endpoint until it answers other than 202; (body, the 202 bodies seen)."""
    seen = []
    deadline = time.monotonic() + timeout
    while True:
        r = client.get(f"/api/grids/{grid_id}/faces/{index}/nearest")
        if r.status_code in (200, 202):
            assert r.headers["cache-control"] == "no-store"
        if r.status_code != 202:
            return r, seen
        body = r.json()
        assert body["state"] == "computing" and 0 <= body["done"] <= body["total"] == 64
        seen.append(body)
        assert time.monotonic() < deadline, "the training features took too long"
        time.sleep(0.2)


@pytest.mark.parametrize("studio_env", [Limits(max_neighbour_models=1)], indirect=True)
def test_nearest_training_faces(studio_env, fitted64, faces64_dir, lrgmm_cache):
    """A face's 3 nearest training faces in Inception space: computed lazily per model (202 with
    progress, then cached on disk), equal to brute force over the training reconstructions'
    features; a planted copy of a training face finds that face."""
    _inception_or_skip()
    from lrgmm.evaluation import reconstruction_features, reconstruction_key
    from lrgmm.metrics import InceptionExtractor
    from lrgmm.studio.neighbours import NeighbourIndex

    client, studio, mid = studio_env
    ex = InceptionExtractor(cache=True, progress=False)
    lat = fitted64.model_.latents_  # the photos' own reconstructions: what generated faces copy from
    key = reconstruction_key(fitted64, fitted64.model_.codes_, lat)
    cached_before = ex.cache.path(ex.id, key).is_file()
    grid = _generate(client, mid, n=3, seed=4)
    r, computing = _nearest(client, grid["id"], 1)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["state"] == "ready" and body["space"] == "inception" and body["face"] == 1
    # Computed lazily, with progress (unless an earlier test of this session left them on disk)...
    assert computing or cached_before
    done = [c["done"] for c in computing]
    assert done == sorted(done)
    # ... once, into the on-disk feature cache, under the key lrgmm eval uses for the same
    # model's training reconstructions.
    assert ex.cache.path(ex.id, key).is_file()
    train = reconstruction_features(fitted64, fitted64.model_.codes_, ex, latents=lat).astype(np.float64)  # a cache hit
    face = _decode_png(client.get(grid["faces"][1]["url"]).content)
    f = ex.features(torch.from_numpy(face.transpose(2, 0, 1).copy())[None], cache=False).astype(np.float64)
    full = np.linalg.norm(train - f, axis=1)
    near = body["nearest"]
    assert [x["index"] for x in near] == np.argsort(full)[:3].tolist()
    np.testing.assert_allclose([x["distance"] for x in near], np.sort(full)[:3], rtol=1e-4)
    prov = client.get(f"/api/grids/{grid['id']}/faces/1/provenance.json").json()
    shares = {s["index"]: s["share"] for s in prov["sources"]}
    for x in near:  # named as provenance names files, with the provenance share when it is a source
        name = Path(fitted64.training_files_[x["index"]]).name
        assert x["name"] == name and x["file"] == f"{faces64_dir.name}/{name}"
        assert x["share"] == shares.get(x["index"])
        assert client.get(x["thumbnail"]).status_code == 200
    pairwise = np.linalg.norm(train[:, None] - train[None], axis=-1) + np.diag(np.full(64, np.inf))
    assert body["typical_distance"] == pytest.approx(np.median(pairwise.min(1)), rel=1e-4)  # 64 <= 256: all

    # A planted copy (a decoded training reconstruction) finds its training face, far closer
    # than training faces are to each other; a second request for the model computes nothing.
    copies = fitted64.decode(lat[[5, 9]])
    planted = studio.grids.filled(mid, "generate", {"seed": None}, copies, None, None)
    for i, j in enumerate((5, 9)):
        r, computing = _nearest(client, planted.id, i)
        assert r.status_code == 200 and not computing
        first = r.json()["nearest"][0]
        assert first["index"] == j and first["distance"] < 0.1 * body["typical_distance"] and first["share"] is None

    # Bounded: with max_neighbour_models=1, a second model's features replace the first's.
    other = studio._add_model("again", fitted64, "file")
    g2 = _generate(client, other.id, n=1, seed=0)
    assert _nearest(client, g2["id"], 0)[0].status_code == 200
    assert list(studio.neighbours.indices) == [other.id] and isinstance(studio.neighbours.indices[other.id], NeighbourIndex)

    _error(client.get(f"/api/grids/{grid['id']}/faces/3/nearest"), 404, "out of range")
    _error(client.get("/api/grids/nope/faces/0/nearest"), 404, "unknown grid")
    _error(client.get(f"/api/grids/{grid['id']}/faces/x/nearest"), 422, "index")


def test_nearest_without_the_inception_network_is_501(studio_env, monkeypatch):
    from lrgmm.metrics import MissingExtractorError
    from lrgmm.metrics import features as features_mod

    client, studio, mid = studio_env

    def missing():
        raise MissingExtractorError("the Inception-v3 FID network is not installed: run `pip install x`")

    monkeypatch.setattr(features_mod, "find_inception_file", missing)
    grid = _generate(client, mid, n=1, seed=0)
    r, _ = _nearest(client, grid["id"], 0)
    _error(r, 501, "nearest training faces need the Inception network", "not installed")
    monkeypatch.undo()  # a failure is forgotten once reported: the next request tries again
    _inception_or_skip()
    r = client.get(f"/api/grids/{grid['id']}/faces/0/nearest")
    assert r.status_code in (200, 202) and studio.neighbours.indices[mid].state in ("computing", "ready")


# ------------------------------------------------------------------------- edit / complete


def _face_tensor(face: np.ndarray) -> torch.Tensor:
    """A face PNG as the studio reads it: (1, 3, H, W) float in [0, 1]."""
    return torch.from_numpy(face.transpose(2, 0, 1).astype(np.float32) / 255.0)[None]


def _u8(images: torch.Tensor) -> np.ndarray:
    from lrgmm.io.images import to_uint8_hwc

    return np.stack([to_uint8_hwc(x) for x in images])


def test_edit_is_the_python_api_edit(studio_env, fitted64):
    """``/api/edit`` runs the real ``FacePipeline.edit`` with an ``AttributeEdit`` fitted on the
    model (kept for the next request): its faces and provenance maps are the Python API's."""
    pytest.importorskip("geomloss", reason="the edit panel needs GeomLoss: pip install 'lrgmm[edit]'")
    from lrgmm.editing import AttributeEdit

    client, studio, mid = studio_env
    assert client.get("/api/status").json()["features"] == {"edit": True, "complete": True}
    grid = _generate(client, mid, n=2, seed=4)
    face1 = _faces(client, grid)[1]
    r = client.post("/api/edit", json={"grid": grid["id"], "face": 1, "attribute": "gender", "negative": "male",
                                       "positive": "female", "alphas": [-1, 0, 1], "seed": 7})
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["kind"] == "edit" and out["n"] == 3 and out["has_provenance"]
    assert [f["label"] for f in out["faces"]] == ["alpha -1", "alpha 0", "alpha 1"]
    assert out["settings"]["source"] == {"grid": grid["id"], "face": 1}

    edit = AttributeEdit(progress=False).fit(fitted64, attribute="gender", negative="male", positive="female")
    ref = fitted64.edit(_face_tensor(face1), edit, alphas=(-1, 0, 1), nn=True, seed=7)
    assert np.abs(_faces(client, out).astype(int) - _u8(ref.images[0]).astype(int)).max() <= 1
    assert not np.array_equal(_faces(client, out)[0], _faces(client, out)[2])  # alpha moves the face
    for k in range(3):
        rec = client.get(f"/api/grids/{out['id']}/faces/{k}/provenance.json").json()
        assert rec["map"] == ref.provenance[0, k].tolist()
        if k == 1:  # alpha 0 moves nothing: nothing copied, the input's own reconstruction
            assert rec["sources"] == [] and rec["observed_share"] == 1.0
        else:
            assert abs(sum(src["share"] for src in rec["sources"]) - 1) < 1e-5
    assert list(studio._edits) == [(mid, "gender", "male", "female")]  # fitted once, kept

    plain = client.post("/api/edit", json={"grid": grid["id"], "face": 1, "alphas": [1], "nn": False,
                                           "negative": "male", "positive": "female"}).json()
    assert not plain["has_provenance"] and plain["n"] == 1
    ref = fitted64.edit(_face_tensor(face1), edit, alphas=(1,), nn=False)
    assert np.abs(_faces(client, plain).astype(int) - _u8(ref.images[0]).astype(int)).max() <= 1
    assert len(studio._edits) == 1
    _error(client.post("/api/edit", json={"grid": grid["id"], "face": 1, "alphas": [100]}), 400, "alphas")
    _error(client.post("/api/edit", json={"grid": grid["id"], "face": 1, "attribute": "shoe size"}), 400, "shoe size")


def test_edit_without_geomloss_is_501(studio_env, monkeypatch):
    import importlib.util

    client, _studio, mid = studio_env
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "geomloss" else find_spec(name, *a))
    assert client.get("/api/status").json()["features"] == {"edit": False, "complete": True}
    grid = _generate(client, mid, n=1, seed=0)
    _error(client.post("/api/edit", json={"grid": grid["id"], "face": 0}), 501, "editing", "lrgmm[edit]")


def test_complete_is_the_python_api_completion(studio_env, fitted64):
    """``/api/complete`` runs the real ``FacePipeline.complete`` on a box: its faces are the
    Python API's, pixels away from the box are the input's, and the provenance maps name training
    faces on the generated positions and none (-1, transparent) on the observed ones."""
    from lrgmm.data.masks import box_mask
    from lrgmm.core.provenance import index_colors

    client, _studio, mid = studio_env
    grid = _generate(client, mid, n=2, seed=4)
    face1 = _faces(client, grid)[1]
    box = [32, 40, 96, 88]
    r = client.post("/api/complete", json={"grid": grid["id"], "face": 1, "box": box, "n": 3, "seed": 2})
    assert r.status_code == 200, r.text
    done = r.json()
    assert done["kind"] == "complete" and done["n"] == 3 and done["settings"]["box"] == box
    ref = fitted64.complete(_face_tensor(face1)[0], box_mask(128, *box), n=3, seed=2)
    faces = _faces(client, done)
    assert np.abs(faces.astype(int) - _u8(ref.images).astype(int)).max() <= 1
    feather = ref.settings["feather"]
    assert np.array_equal(faces[:, : 40 - feather - 1], np.broadcast_to(face1[: 40 - feather - 1], faces[:, : 40 - feather - 1].shape))
    assert not np.array_equal(faces[0][40:88, 32:96], faces[1][40:88, 32:96])  # n different fillings
    prov = ref.samples.provenance
    for i in range(3):
        rec = client.get(f"/api/grids/{done['id']}/faces/{i}/provenance.json").json()
        assert rec["map"] == prov[i].tolist()
        generated = prov[i] >= 0
        assert torch.equal(generated, ref.unknown)  # the box's latent positions, and only those
        assert rec["observed_share"] == pytest.approx(1 - float(generated.float().mean()), abs=1e-6)
        assert {s["index"] for s in rec["sources"]} == set(prov[i][generated].tolist())
        assert abs(sum(s["share"] for s in rec["sources"]) - 1) < 1e-5  # shares of the generated positions
    # Its provenance picture: each training face's colour on the generated positions, transparent elsewhere.
    pm = np.asarray(Image.open(io.BytesIO(client.get(f"/api/grids/{done['id']}/faces/0/provenance.png").content)))
    assert pm.shape == (128, 128, 4)
    cells = pm[4::8, 4::8]  # one pixel per latent position
    assert np.array_equal(cells[..., 3] == 255, ref.unknown.numpy()) and (cells[~ref.unknown.numpy(), 3] == 0).all()
    expected = np.round(index_colors(prov[0].clamp(min=0)).numpy() * 255).astype(int)
    known = ref.unknown.numpy()
    assert (np.abs(cells[known][:, :3].astype(int) - expected[known]) <= 1).all()
    for bad in ([0, 0, 0, 10], [10, 10, 5, 20], [0, 0, 129, 10], [1, 2, 3]):
        _error(client.post("/api/complete", json={"grid": grid["id"], "face": 1, "box": bad}), 400, "box")
    _error(client.post("/api/complete", json={"grid": grid["id"], "face": 1, "box": [0, 0, 8, 8], "n": 99}), 400, "n must")


@pytest.mark.parametrize("studio_env", [Limits(max_uploads=2)], indirect=True)
def test_old_uploads_are_removed(studio_env, faces64):
    client, studio, _mid = studio_env
    ids = []
    for p in faces64[:3]:
        r = client.post("/api/uploads", files=[("files", (p.name, p.read_bytes(), "image/jpeg"))])
        ids.append(r.json()["upload"])
    assert list(studio.uploads) == ids[1:]
    assert len([p for p in studio._tmp.rglob("*") if p.is_file()]) == 2
    _error(client.post("/api/fit", json={"upload": ids[0]}), 404, "unknown upload")


def test_serve_binds_loopback_and_prints_the_url(monkeypatch, capsys, faces64_dir):
    import uvicorn

    from lrgmm.cli import main

    seen = {}
    monkeypatch.setattr(uvicorn.Server, "run", lambda self: seen.update(host=self.config.host, port=self.config.port))
    assert main(["serve", "--data", str(faces64_dir), "--port", "8123"]) == 0
    out = capsys.readouterr()
    assert seen == {"host": "127.0.0.1", "port": 8123}
    assert "http://127.0.0.1:8123/" in out.out and "1 data folder(s)" in out.out and "warning" not in out.err
    assert main(["serve", "--host", "0.0.0.0", "--port", "8124"]) == 0
    out = capsys.readouterr()
    assert seen["host"] == "0.0.0.0" and "warning: serving on 0.0.0.0" in out.err and "no authentication" in out.err
    assert main(["serve", "--data", str(faces64_dir / "nope")]) == 2
    assert "not a folder" in capsys.readouterr().err
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["serve", "--port", str(port)]) == 2
    err = capsys.readouterr().err
    assert f"cannot listen on 127.0.0.1 port {port}" in err and "choose another --port" in err


# ------------------------------------------------------------------ hardening (issue 11)
# These use a studio without a model (no autoencoder is loaded): fast, and the guard answers
# before any route anyway.


@pytest.fixture
def bare(tmp_path, request):
    """(client, studio) for a studio with a small data folder of three 32x32 PNGs and no model."""
    data = tmp_path / "photos"
    data.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        (data / f"p{i}.png").write_bytes(_png_bytes(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)))
    studio = Studio(data=[data], limits=getattr(request, "param", None) or Limits())
    with TestClient(create_app(studio), base_url=BASE) as client:
        yield client, studio


def _tiny_png(seed: int = 0) -> bytes:
    return _png_bytes(np.random.default_rng(seed).integers(0, 256, (16, 16, 3), dtype=np.uint8))


def _upload(client, seed: int = 0, **kw):
    return client.post("/api/uploads", files=[("files", (f"f{seed}.png", _tiny_png(seed), "image/png"))], **kw)


def _stored(studio) -> list[Path]:
    return [p for p in studio._tmp.rglob("*") if p.is_file()]


def test_requests_for_other_hosts_are_refused(bare):
    """DNS rebinding: a page of evil.example whose name now resolves to 127.0.0.1 sends
    Host: evil.example; the studio must not answer it (page, API, uploads)."""
    client, studio = bare
    for host in ("evil.example", "evil.example:8765", "127.0.0.1.nip.io", "localhost.evil.example", ""):
        for path in ("/", "/api/status", "/api/models/m1/training/0.png", "/static/studio.js", "/openapi.json"):
            _error(client.get(path, headers={"Host": host}), 400, "does not answer to host")
        _error(_upload(client, headers={"Host": host}), 400, "host")
        _error(client.post("/api/generate", json={"model": "m1"}, headers={"Host": host}), 400, "host")
    assert not _stored(studio) and not studio.uploads
    for host in ("127.0.0.1", "127.0.0.1:8765", "localhost", "LOCALHOST:1", "[::1]", "[::1]:8765"):
        assert client.get("/api/status", headers={"Host": host}).status_code == 200, host
    # The --host the server binds is accepted too; any IP address only when bound to all interfaces.
    named = TestClient(create_app(studio, allowed_hosts=["studio.lan"]), base_url="http://studio.lan:8765")
    assert named.get("/api/status").status_code == 200
    _error(named.get("/api/status", headers={"Host": "192.168.1.5:8765"}), 400, "host")
    wild = TestClient(create_app(studio, allowed_hosts=["0.0.0.0"], any_ip=True), base_url="http://192.168.1.5:8765")
    assert wild.get("/api/status").status_code == 200
    _error(wild.get("/api/status", headers={"Host": "evil.example"}), 400, "host")


def test_cross_origin_posts_are_refused(studio_env):
    """Another site's page can post a multipart upload or a JSON generate without asking (the
    browser sends its Origin); only the studio's own origin may change state."""
    client, studio, mid = studio_env
    for headers in ({"Origin": "http://evil.example"}, {"Origin": "null"}, {"Origin": "http://127.0.0.1:9999"},
                    {"Origin": "https://127.0.0.1.evil.example"}, {"Referer": "http://evil.example/page.html"}):
        _error(_upload(client, headers=headers), 403, "another site")
        _error(client.post("/api/generate", json={"model": mid, "n": 1}, headers=headers), 403, "another site")
        _error(client.post("/api/fit", json={"folder": "x"}, headers=headers), 403)
    assert not _stored(studio) and not studio.uploads and len(studio.grids) == 0
    # The studio's own page (its Origin or Referer), and programs that send neither, are served;
    # reading is not restricted by Origin (the browser keeps other sites from seeing the answer).
    for headers in ({"Origin": BASE}, {"Referer": BASE + "/"}, {}):
        assert _upload(client, headers=headers).status_code == 200
        assert client.post("/api/generate", json={"model": mid, "n": 1}, headers=headers).status_code == 200
    assert client.get("/api/status", headers={"Origin": "http://evil.example"}).status_code == 200
    assert len(studio.uploads) == 3 and len(studio.grids) == 3


@pytest.mark.parametrize("bare", [Limits(max_request_bytes=2**20)], indirect=True)
def test_chunked_upload_over_the_limit_is_refused_as_it_arrives(bare):
    client, studio = bare
    # A real 2.1 MB PNG (noise does not compress), sent chunked: there is no Content-Length.
    big = _png_bytes(np.random.default_rng(1).integers(0, 256, (840, 840, 3), dtype=np.uint8))
    assert 2**20 < len(big) < Limits().max_upload_bytes
    boundary = "lrgmmtestboundary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"big.png\"\r\n"
            f"Content-Type: image/png\r\n\r\n").encode() + big + f"\r\n--{boundary}--\r\n".encode()

    def chunks():
        for i in range(0, len(body), 65536):
            yield body[i:i + 65536]

    r = client.post("/api/uploads", content=chunks(), headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert "content-length" not in {k.lower() for k in r.request.headers}
    _error(r, 413, "at most 1.0 MiB")
    assert not _stored(studio) and not studio.uploads
    # The same with a Content-Length is refused before the body is read.
    _error(client.post("/api/uploads", content=body, headers={"Content-Type": f"multipart/form-data; boundary={boundary}"}),
           413, "at most 1.0 MiB", f"{len(body):,} bytes")
    # JSON requests are capped at 64 KiB, chunked or not.
    huge = b'{"model": "' + b"x" * 70_000 + b'"}'
    _error(client.post("/api/generate", content=huge, headers={"Content-Type": "application/json"}), 413, "64.0 KiB")
    _error(client.post("/api/generate", content=iter([huge[:40_000], huge[40_000:]]),
                       headers={"Content-Type": "application/json"}), 413, "64.0 KiB")
    assert not _stored(studio)
    assert _upload(client).status_code == 200  # a small upload still works


@pytest.mark.parametrize("bare", [Limits(max_jobs=2)], indirect=True)
def test_a_flood_of_fits_does_not_push_out_running_jobs(bare, monkeypatch):
    client, studio = bare
    release = threading.Event()

    def slow_fit(job, paths, options):  # stands in for encoding + EM: runs until released
        job.state = "fitting"
        release.wait(30)
        job.state = "done"

    monkeypatch.setattr(studio.fit_jobs, "_run", slow_fit)
    folder = client.get("/api/folders").json()[0]["name"]
    first = client.post("/api/fit", json={"folder": folder}).json()["id"]
    deadline = time.monotonic() + 10
    while client.get(f"/api/jobs/{first}").json()["state"] != "fitting":
        assert time.monotonic() < deadline
        time.sleep(0.01)
    try:
        answers = [client.post("/api/fit", json={"folder": folder, "seed": i}) for i in range(40)]
        accepted = [r.json()["id"] for r in answers if r.status_code == 200]
        refused = [r for r in answers if r.status_code != 200]
        assert len(accepted) == studio.fit_pool.max_queue and len(refused) == 40 - len(accepted)
        for r in refused:
            _error(r, 503, "queue is full")
        # The running job and the queued ones stay visible (more than max_jobs: none is finished);
        # refused fits left no trace.
        assert client.get(f"/api/jobs/{first}").json()["state"] == "fitting"
        assert list(studio.jobs) == [first, *accepted]
    finally:
        release.set()
    deadline = time.monotonic() + 10
    while not all(j.finished for j in list(studio.jobs.values())):
        assert time.monotonic() < deadline
        time.sleep(0.01)
    # Once finished, the oldest make room for new ones.
    last = client.post("/api/fit", json={"folder": folder}).json()["id"]
    assert len(studio.jobs) == 2 and last in studio.jobs and first not in studio.jobs


def test_bad_values_are_quoted_short(bare):
    client, _studio = bare
    cases = [
        client.post("/api/generate", json={"model": "y" * 20_000}),
        client.post("/api/fit", json={"folder": "f" * 20_000}),
        client.post("/api/fit", json={"upload": "u" * 20_000}),
        client.get("/api/jobs/" + "j" * 5_000),
        client.get("/api/grids/" + "g" * 5_000),
        client.get("/api/" + "z" * 5_000),
        client.post("/api/uploads", files=[("files", ("n" * 300 + ".jpg", b"not an image", "image/jpeg"))]),
    ]
    for r in cases:
        assert 400 <= r.status_code < 500, r.text[:200]
        msg = r.json()["error"]
        assert len(msg) < 400 and len(r.content) < 600, msg
        assert "characters)" in msg, msg  # the value is named: its first characters and its length


def test_security_headers_on_every_response(studio_env):
    client, studio, mid = studio_env
    responses = [client.get("/"), client.get("/static/studio.js"), client.get("/static/studio.css"),
                 client.get("/api/status"), client.get(f"/api/models/{mid}/training/0.png"), client.get("/nothing"),
                 client.get("/api/status", headers={"Host": "evil.example"}),
                 client.post("/api/generate", json={"model": mid}, headers={"Origin": "http://evil.example"}),
                 client.post("/api/generate", content=b"x" * 70_000)]
    with TestClient(client.app, base_url=BASE, raise_server_exceptions=False) as crashing:
        original = studio.status
        studio.status = lambda: 1 / 0
        try:
            responses.append(crashing.get("/api/status"))
        finally:
            studio.status = original
    assert [r.status_code for r in responses] == [200, 200, 200, 200, 200, 404, 400, 403, 413, 500]
    for r in responses:
        assert r.headers["x-frame-options"] == "DENY", r.url
        assert r.headers["x-content-type-options"] == "nosniff", r.url
        csp = r.headers["content-security-policy"]
        assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp, r.url
        assert "unsafe-inline" not in csp and "http" not in csp
    # The page works under that policy: no inline script or style, nothing from elsewhere.
    html = client.get("/").text
    assert "<style" not in html and " style=" not in html
    assert re.findall(r"<script[^>]*>", html) == ['<script src="/static/studio.js">']
    assert not re.search(r"<[^>]+\son[a-z]+\s*=", html)  # no inline event handlers
    js = client.get("/static/studio.js").text
    assert "style=" not in js and "eval(" not in js


def test_docs_pages_that_load_a_cdn_are_off(bare):
    client, _studio = bare
    _error(client.get("/docs"), 404, "no such endpoint")
    _error(client.get("/redoc"), 404)
    assert "/api/generate" in client.get("/openapi.json").json()["paths"]
    for name in ("index.html", "studio.js", "studio.css"):
        text = client.get("/" if name == "index.html" else f"/static/{name}").text
        assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}/", text), name  # no script, style or font from elsewhere


def test_session_ids_are_issued_by_the_server(bare):
    client, studio = bare
    for chosen in ("a" * 32, "b" * 56, "0123456789abcdef" * 2):
        client.cookies.clear()
        client.cookies.set("lrgmm_session", chosen)
        r = _upload(client)
        assert r.status_code == 200, r.text
        issued = r.cookies.get("lrgmm_session")
        assert issued and issued != chosen
        assert studio.uploads[r.json()["upload"]].session == issued
        assert not any(chosen in str(p) for p in _stored(studio))
        # The issued id is kept: no new cookie, same session.
        client.cookies.clear()
        client.cookies.set("lrgmm_session", issued)
        again = _upload(client, seed=1)
        assert "lrgmm_session" not in again.cookies and studio.uploads[again.json()["upload"]].session == issued


@pytest.mark.parametrize("bare", [Limits(max_uploads=2, max_total_uploads=4)], indirect=True)
def test_upload_limits_are_per_session(bare):
    client, studio = bare
    mine = _upload(client).json()["upload"]
    # Cookie-less posts (a new session each) fill the global room, then are refused: mine stays.
    answers = [_upload(TestClient(client.app, base_url=BASE), seed=i) for i in range(16)]
    assert [r.status_code for r in answers] == [200] * 3 + [503] * 13
    _error(answers[-1], 503, "other sessions", "try again later")
    assert mine in studio.uploads and len(studio.uploads) == 4 and len(_stored(studio)) == 4
    _error(_upload(client, seed=99), 503)  # full for everyone...
    assert mine in studio.uploads
    # ...until uploads have sat unused long enough (upload_idle_s): the oldest idle one makes room.
    idle = [u for u in studio.uploads.values() if u.id != mine]
    for u in idle:
        u.used -= Limits().upload_idle_s + 1
    assert _upload(client, seed=100).status_code == 200
    assert mine in studio.uploads and idle[0].id not in studio.uploads and not idle[0].folder.exists()
    # Within a session, its own oldest upload makes room (max_uploads=2 per session).
    third = _upload(client, seed=101)
    assert third.status_code == 200 and mine not in studio.uploads and len(studio.uploads) == 4


def test_upload_size_messages_say_the_real_sizes(bare):
    client, studio = bare
    data = b"\x89PNG" + bytes(9_000_000 - 4)
    _error(client.post("/api/uploads", files=[("files", ("big.png", data, "image/png"))]), 413,
           "'big.png' is 8.6 MiB (9,000,000 bytes)", "at most 8.0 MiB (8,388,608 bytes)")
    assert not _stored(studio)


def test_one_pixel_limit_for_uploads(bare):
    from lrgmm.io.images import MAX_IMAGE_PIXELS
    from lrgmm.errors import TooLargeError
    from lrgmm.studio.uploads import check_image_bytes

    client, studio = bare
    assert MAX_IMAGE_PIXELS == 4096**2 and Limits().max_upload_pixels == Limits().max_data_pixels == MAX_IMAGE_PIXELS
    buf = io.BytesIO()
    Image.new("L", (4097, 4096)).save(buf, format="PNG")
    _error(client.post("/api/uploads", files=[("files", ("wide.png", buf.getvalue(), "image/png"))]), 413,
           "4097x4096 pixels", "16,777,216 pixels per image (4096x4096)")
    with pytest.raises(TooLargeError, match="4097x4096"):
        check_image_bytes(buf.getvalue(), "wide.png")
    small = io.BytesIO()
    Image.new("L", (64, 48)).save(small, format="PNG")
    assert check_image_bytes(small.getvalue(), "ok.png") == "PNG"
    assert not _stored(studio)


def test_data_folder_images_over_the_pixel_limit_are_skipped(fitted64, faces64, lrgmm_cache, tmp_path):
    """A --data folder's images are checked from their header before encoding; the fit report
    names the skipped file relative to the data folder, not by its server path."""
    import shutil

    data = tmp_path / "mixed"
    data.mkdir()
    for p in faces64[:4]:
        shutil.copyfile(p, data / p.name)
    Image.new("L", (5000, 4000)).save(data / "huge.png")  # 20 Mpx: under Pillow's own bomb limit
    studio = Studio(data=[data], pipeline_options={"autoencoder": fitted64.autoencoder_})
    with TestClient(create_app(studio), base_url=BASE) as client:
        job = client.post("/api/fit", json={"folder": "mixed"}).json()
        job, _ = _wait_job(client, job["id"])
    assert job["state"] == "done", job
    assert "4 of 5 image file(s) used" in job["report"]
    assert "mixed/huge.png: 5000x4000 pixels; at most 16,777,216 pixels per image" in job["report"]
    assert str(tmp_path) not in job["report"]
    files = studio.model(job["model"]).pipeline.training_files_
    assert sorted(Path(f).name for f in files) == sorted(p.name for p in faces64[:4])


def test_serve_removes_its_temporary_folder_when_it_cannot_start(monkeypatch, capsys, tmp_path):
    import socket
    import tempfile

    import uvicorn

    from lrgmm.cli import main

    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))  # where Studio makes lrgmm-studio-*
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = str(s.getsockname()[1])
    bad = tmp_path / "bad.lrgmm"
    bad.write_bytes(b"not a model file")
    assert main(["serve", str(bad), "--port", port]) == 2
    assert str(bad.name) in capsys.readouterr().err
    assert list(tmp.iterdir()) == []

    def fail_to_bind(self):
        raise OSError(98, "Address already in use")

    monkeypatch.setattr(uvicorn.Server, "run", fail_to_bind)
    assert main(["serve", "--port", port]) == 1
    assert list(tmp.iterdir()) == []

    def exits(self):  # uvicorn exits this way when its own bind fails
        raise SystemExit(1)

    monkeypatch.setattr(uvicorn.Server, "run", exits)
    with pytest.raises(SystemExit):
        main(["serve", "--port", port])
    assert list(tmp.iterdir()) == []


@pytest.mark.parametrize("port", ["99999", "0", "-1", "65536", "http"])
def test_serve_port_is_checked_while_parsing(port, monkeypatch, capsys):
    from lrgmm.cli import main
    from lrgmm.studio import server

    import functools

    @functools.wraps(server.serve)  # (same signature: the parser reads serve's defaults)
    def must_not_run(*a, **k):
        raise AssertionError("serve ran with a bad port")

    monkeypatch.setattr(server, "serve", must_not_run)
    with pytest.raises(SystemExit) as exc:
        main(["serve", "--port", port])
    assert exc.value.code == 2
    out = capsys.readouterr()
    assert out.out == "" and "--port" in out.err and "between 1 and 65535" in out.err and "Traceback" not in out.err
    from lrgmm.errors import LrgmmError

    with pytest.raises(LrgmmError, match="between 1 and 65535"):
        server.check_port(99999)


def test_serve_precision_reaches_the_models_it_loads(model64_file):
    """`lrgmm serve --precision bf16`: models loaded from files decode in bf16, and say so."""
    studio = Studio(models=[model64_file], pipeline_options={"precision": "bf16"})
    try:
        (entry,) = studio.models.values()
        assert entry.pipeline.autoencoder_.precision == "bf16"
        assert entry.info()["precision"] == "bf16"
    finally:
        studio.close()
