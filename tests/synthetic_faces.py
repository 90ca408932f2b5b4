"""Synthetic face-like photos for tests that run without the shared UTKFace folder.

Each image is a cartoon face drawn from a seeded generator: a background, hair, an oval face, two
eyes, brows and a mouth, with positions, sizes and colours jittered, plus mild noise, saved as a
JPEG. The background is one of four scenes; the look follows labels drawn with it (skin tone by race, hair length by gender, grey hair
for seniors, a smaller face for children), and the labels are written into a UTKFace-style file
name (``age_gender_race_stamp.jpg.chip.jpg``), so attribute sampling and edits have something to
find. Same seed, same bytes (Pillow's JPEG encoder is deterministic).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

SIZE = 128
# With this seed, the 64 faces the fixtures take (every other one of 128) fit K = 4 clusters of
# 11 to 19 faces through the fake autoencoder, none removed as too small, as the real faces do.
SEED = 6
# Backgrounds: four distinct scenes (dark, bright, warm, cool), as photo sets have a few lighting
# and background types; they give the mixture clusters to find.
SCENES = np.array([[0.12, 0.12, 0.15], [0.92, 0.92, 0.88], [0.85, 0.45, 0.20], [0.25, 0.45, 0.80]])
SKIN = np.array([  # by UTKFace race code: white, black, asian, indian, other
    [0.93, 0.78, 0.68], [0.45, 0.30, 0.22], [0.90, 0.76, 0.60], [0.70, 0.52, 0.40], [0.80, 0.63, 0.50],
])


def _ellipse(yy, xx, cy, cx, ry, rx) -> np.ndarray:
    return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0


def draw_face(rng: np.random.Generator, age: int, gender: int, race: int, size: int = SIZE) -> np.ndarray:
    """One (size, size, 3) uint8 face-like image (see the module docstring)."""
    s = size / 128
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    bg = np.clip(SCENES[rng.integers(len(SCENES))] + rng.normal(0, 0.06, 3), 0, 1)
    img = np.empty((size, size, 3))
    img[:] = bg * (0.85 + 0.15 * yy[..., None] / size)  # a soft vertical gradient
    scale = (0.8 if age < 18 else 1.0) * rng.uniform(0.92, 1.08)
    cy, cx = size / 2 + rng.normal(0, 3) * s, size / 2 + rng.normal(0, 3) * s
    ry, rx = 40 * s * scale, 31 * s * scale
    hair = np.array([0.75, 0.75, 0.75]) if age >= 60 else rng.uniform(0.05, 0.45) * np.array([1.0, 0.8, 0.6])
    # Hair: a larger oval behind the head; long hair (gender 1) reaches below the chin.
    long_hair = gender == 1
    hair_mask = _ellipse(yy, xx, cy - 6 * s, cx, ry + 10 * s, rx + 9 * s)
    if long_hair:
        hair_mask |= (np.abs(xx - cx) <= rx + 9 * s) & (yy >= cy - 6 * s) & (yy <= cy + ry + 12 * s)
    img[hair_mask] = hair
    skin = np.clip(SKIN[race] + rng.normal(0, 0.03, 3), 0, 1)
    face = _ellipse(yy, xx, cy + 4 * s, cx, ry, rx)
    img[face] = skin
    fringe = _ellipse(yy, xx, cy - ry + 6 * s, cx, 14 * s, rx + 2 * s) & face
    img[fringe] = hair
    eye_y, eye_dx = cy - 2 * s + rng.normal(0, 1) * s, (12 + rng.normal(0, 1)) * s
    iris = rng.uniform(0.05, 0.5) * np.array([0.6, 0.8, 1.0])
    for side in (-1, 1):
        ex = cx + side * eye_dx
        img[_ellipse(yy, xx, eye_y, ex, 3.2 * s, 6 * s)] = (0.97, 0.97, 0.97)
        img[_ellipse(yy, xx, eye_y, ex, 2.6 * s, 2.6 * s)] = iris
        img[_ellipse(yy, xx, eye_y - 7 * s, ex, 1.4 * s, 6.5 * s)] = hair * 0.8
    nose = _ellipse(yy, xx, cy + 10 * s, cx, 5 * s, 2.5 * s)
    img[nose] = skin * 0.85
    mouth_w = (9 + rng.normal(0, 1.5)) * s
    lips = np.array([0.75, 0.30, 0.32]) if gender == 1 else skin * np.array([0.85, 0.6, 0.6])
    img[_ellipse(yy, xx, cy + 24 * s, cx, 2.5 * s, mouth_w)] = lips
    img += rng.normal(0, 0.02, img.shape)
    return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)


def make_synthetic_faces(folder: Path, n: int = 128, seed: int = SEED, size: int = SIZE) -> list[Path]:
    """Write ``n`` synthetic faces as JPEGs into ``folder`` (created); returns their paths, sorted.
    File names are UTKFace-style and distinct; labels are drawn with ``seed``."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        age = int(rng.integers(1, 91))
        gender, race = int(rng.integers(0, 2)), int(rng.integers(0, 5))
        pixels = draw_face(rng, age, gender, race, size)
        path = folder / f"{age}_{gender}_{race}_2017{i:011d}.jpg.chip.jpg"
        Image.fromarray(pixels).save(path, quality=92)
        paths.append(path)
    return sorted(paths)
