"""Shared test fixtures: where the real data and weights live, and one TAEF2 per session.

Real data is never copied into the repository (UTKFace terms); tests read it from the shared
folder beside the checkout, ``<repo>/../shared``, and skip with a clear message without it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_DIR = REPO_ROOT.parent / "shared"
UTKFACE_DIR = SHARED_DIR / "data" / "utkface"
TAEF2_WEIGHTS_DIR = SHARED_DIR / "weights" / "taef2"


def utkface_images(utkface_dir: Path) -> list[Path]:
    """The face JPEGs of a UTKFace folder, sorted by name so tests pick the same ones each run."""
    return sorted(p for p in (utkface_dir / "images").iterdir() if p.suffix.lower() == ".jpg")


@pytest.fixture(scope="session")
def utkface_dir() -> Path:
    """``<repo>/../shared/data/utkface`` (images under ``images/``); skip when absent."""
    images = UTKFACE_DIR / "images"
    if not images.is_dir() or not any(images.glob("*.jpg")):
        pytest.skip(
            f"real face data not found: expected UTKFace JPEGs in {images} "
            f"(the shared folder beside the checkout)"
        )
    return UTKFACE_DIR


@pytest.fixture(scope="session")
def taef2():
    """One TAEF2 instance for the session (weights via the normal lookup); skip without weights."""
    from lrgmm.autoencoders import TAEF2
    from lrgmm.errors import WeightsError

    try:
        return TAEF2()
    except WeightsError as e:
        pytest.skip(f"TAEF2 weights unavailable: {e}")


# --------------------------------------------------------------------------------------------
# 64 real faces, encoded once per session through the real TAEF2 into a private latent cache.

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


@pytest.fixture(scope="session")
def faces64(utkface_dir) -> list[Path]:
    """64 shared faces spread evenly over the sorted folder (all ages, not just the first)."""
    paths = utkface_images(utkface_dir)
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
def faces64_encoded(taef2, faces64_dir, latent_cache_dir):
    """``EncodedSet`` of the 64 faces through the real TAEF2 (fills the session cache)."""
    from lrgmm.pipeline import FacePipeline

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LRGMM_CACHE_DIR", str(latent_cache_dir))
        encoded = FacePipeline(autoencoder=taef2, progress=False).encode(faces64_dir)
    assert len(encoded) == N_FACES and encoded.n_encoded + encoded.n_cached == N_FACES
    return encoded


@pytest.fixture(scope="session")
def fitted64(taef2, faces64_encoded):
    """A ``FacePipeline`` fitted on the 64 faces with K = 4 (so clusters matter). Read only."""
    from lrgmm.pipeline import FacePipeline

    return FacePipeline(autoencoder=taef2, n_components=4, progress=False).fit(faces64_encoded)


@pytest.fixture(scope="session")
def model64_file(fitted64, tmp_path_factory) -> Path:
    """``fitted64`` saved once. Read only: tests that damage a model copy it first."""
    return fitted64.save(tmp_path_factory.mktemp("model64") / "faces64.lrgmm")
