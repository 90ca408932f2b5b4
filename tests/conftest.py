"""Shared test fixtures: the face photos and the autoencoder, real when the shared folder is
there, synthetic and fake when it is not.

Real data is never copied into the repository (UTKFace terms); tests read it from the shared
folder beside the checkout, ``<repo>/../shared``. Without it (a fresh clone, CI without the
data), or with ``LRGMM_TEST_FAKE=1``, the generic fixtures fall back to 128 synthetic face-like
JPEGs (``synthetic_faces.py``) and the weightless ``FakeAutoencoder``, so the pipeline, model
file, command line and studio tests still run:

- ``faces_dir``, ``faces64``, ``faces64_dir``, ``ae``, ``faces64_encoded``, ``fitted64``,
  ``model64_file``: real or synthetic/fake, whichever this run has.
- ``utkface_dir``, ``taef2``: the real ones only; tests that take them are marked ``shared``
  and skip without the shared folder.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_DIR = REPO_ROOT.parent / "shared"
UTKFACE_DIR = SHARED_DIR / "data" / "utkface"
TAEF2_WEIGHTS_DIR = SHARED_DIR / "weights" / "taef2"
FAKE_ENV = "LRGMM_TEST_FAKE"  # set to 1: synthetic faces and the fake autoencoder even with shared/
N_SYNTHETIC = 128  # synthetic faces: 64 for training fixtures, the others held out


def utkface_images(utkface_dir: Path) -> list[Path]:
    """The face JPEGs of a UTKFace folder, sorted by name so tests pick the same ones each run."""
    return sorted(p for p in (utkface_dir / "images").iterdir() if p.suffix.lower() == ".jpg")


def _real_data_reason() -> str | None:
    """None when the real faces and TAEF2 weights are usable here, else why not."""
    if os.environ.get(FAKE_ENV, "") not in ("", "0"):
        return f"${FAKE_ENV} is set: the tests use synthetic faces and the fake autoencoder"
    images = UTKFACE_DIR / "images"
    if not images.is_dir() or not any(images.glob("*.jpg")):
        return f"real face data not found: expected UTKFace JPEGs in {images} (the shared folder beside the checkout)"
    from lrgmm.errors import WeightsError
    from lrgmm.io.weights import find_weights

    try:
        for name in ("taef2_encoder.pth", "taef2_decoder.pth"):
            find_weights("taef2", name)
    except WeightsError as e:
        return f"TAEF2 weights unavailable: {e}"
    return None


REAL_DATA_MISSING = _real_data_reason()
REAL_DATA = REAL_DATA_MISSING is None


def pytest_configure(config):
    config.addinivalue_line("markers", "shared: needs the shared folder (real UTKFace faces, TAEF2 weights)")


def pytest_collection_modifyitems(config, items):
    """Mark every test that takes the real-only fixtures ``shared``, so ``-m "not shared"`` selects
    what a clone without the shared folder runs."""
    for item in items:
        if {"taef2", "utkface_dir"} & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.shared)


@pytest.fixture(scope="session", autouse=True)
def _hide_shared_when_faking():
    """With ``$LRGMM_TEST_FAKE`` set, the package cannot find the shared folder either (its weights
    lookup walks up from the package and the current folder): the run is what a clone without
    the shared folder beside it gets."""
    if REAL_DATA or not os.environ.get(FAKE_ENV):
        yield
        return
    from lrgmm.io import weights

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(weights, "_shared_search_starts", lambda: [Path("/nonexistent/lrgmm-test/checkout")])
        mp.delenv(weights.ENV_WEIGHTS, raising=False)
        yield


@pytest.fixture(scope="session")
def utkface_dir() -> Path:
    """``<repo>/../shared/data/utkface`` (images under ``images/``); skip when absent."""
    if not REAL_DATA:
        pytest.skip(REAL_DATA_MISSING)
    return UTKFACE_DIR


@pytest.fixture(scope="session")
def taef2():
    """One TAEF2 instance for the session (weights via the normal lookup); skip without weights."""
    if not REAL_DATA:
        pytest.skip(REAL_DATA_MISSING)
    from lrgmm.autoencoders import TAEF2

    return TAEF2()


@pytest.fixture(scope="session")
def faces_dir(tmp_path_factory) -> Path:
    """A face folder laid out as UTKFace's (photos under ``images/``, UTKFace file names): the
    shared UTKFace folder, or ``N_SYNTHETIC`` synthetic faces without it."""
    if REAL_DATA:
        return UTKFACE_DIR
    from synthetic_faces import make_synthetic_faces

    root = tmp_path_factory.mktemp("synthetic_utkface")
    make_synthetic_faces(root / "images", N_SYNTHETIC)
    return root


@pytest.fixture(scope="session")
def ae(request):
    """The session's autoencoder: the real TAEF2 with the shared folder, else ``FakeAutoencoder``."""
    if REAL_DATA:
        return request.getfixturevalue("taef2")
    from lrgmm.autoencoders import FakeAutoencoder

    return FakeAutoencoder()


# --------------------------------------------------------------------------------------------
# 64 faces (real or synthetic), encoded once per session through ``ae`` into a private latent cache.

N_FACES = 64


def rewrite_model_metadata(src: Path, dst: Path, change) -> Path:
    """Copy the model file ``src`` to ``dst`` with its JSON metadata passed through
    ``change(meta) -> meta`` (tensors unchanged): how tests make files from a "newer version"
    or "another autoencoder"."""
    import json

    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(src), framework="pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
        meta = json.loads(f.metadata()["lrgmm"])
    save_file(tensors, str(dst), metadata={"lrgmm": json.dumps(change(meta))})
    return dst


def taef2_record() -> dict:
    """The autoencoder record a model fitted with the real TAEF2 holds, computed as ``TAEF2`` does
    from the two files' sha256 in ``lrgmm.io.weights.REGISTRY`` (no weights needed)."""
    import hashlib

    from lrgmm.io.weights import REGISTRY

    sha = hashlib.sha256("".join(w.sha256 for w in REGISTRY["taef2"]).encode("ascii")).hexdigest()
    return {"name": "taef2", "id": f"taef2:{sha[:16]}", "weights_sha256": sha}


def as_taef2_model(src: Path, dst: Path) -> Path:
    """``src`` rewritten to say it was fitted with the real TAEF2: a model file whose loading needs
    the TAEF2 weights, whatever autoencoder the session has."""
    return rewrite_model_metadata(src, dst, lambda m: {**m, "autoencoder": taef2_record()})


@pytest.fixture(scope="session")
def faces64(faces_dir) -> list[Path]:
    """64 faces spread evenly over the sorted folder (all ages, not just the first)."""
    paths = utkface_images(faces_dir)
    step = len(paths) / N_FACES
    return [paths[int(i * step)] for i in range(N_FACES)]


@pytest.fixture(scope="session")
def faces64_dir(faces64, tmp_path_factory) -> Path:
    """A folder holding copies of the 64 faces (tests write beside them, never in shared/)."""
    import shutil

    d = tmp_path_factory.mktemp("faces64")
    for p in faces64:
        shutil.copyfile(p, d / p.name)
    return d


@pytest.fixture(scope="session")
def latent_cache_dir(tmp_path_factory) -> Path:
    """The session's private lrgmm cache root (``$LRGMM_CACHE_DIR``), shared by all tests so
    the 64 faces are encoded once."""
    return tmp_path_factory.mktemp("lrgmm_cache")


@pytest.fixture
def lrgmm_cache(latent_cache_dir, monkeypatch) -> Path:
    """Point ``$LRGMM_CACHE_DIR`` at the session cache for one test (never the user's cache)."""
    monkeypatch.setenv("LRGMM_CACHE_DIR", str(latent_cache_dir))
    return latent_cache_dir


@pytest.fixture(scope="session")
def faces64_encoded(ae, faces64_dir, latent_cache_dir):
    """``EncodedSet`` of the 64 faces through ``ae`` (fills the session cache)."""
    from lrgmm.pipeline import FacePipeline

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LRGMM_CACHE_DIR", str(latent_cache_dir))
        encoded = FacePipeline(autoencoder=ae, progress=False).encode(faces64_dir)
    assert len(encoded) == N_FACES and encoded.n_encoded + encoded.n_cached == N_FACES
    return encoded


@pytest.fixture(scope="session")
def fitted64(ae, faces64_encoded):
    """A ``FacePipeline`` fitted on the 64 faces with K = 4 (so clusters matter). Read only."""
    from lrgmm.pipeline import FacePipeline

    return FacePipeline(autoencoder=ae, n_components=4, progress=False).fit(faces64_encoded)


@pytest.fixture(scope="session")
def model64_file(fitted64, tmp_path_factory) -> Path:
    """``fitted64`` saved once. Read only: tests that damage a model copy it first."""
    return fitted64.save(tmp_path_factory.mktemp("model64") / "faces64.lrgmm")
