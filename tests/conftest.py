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
