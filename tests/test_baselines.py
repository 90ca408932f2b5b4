"""The paper's baselines (``lrgmm.baselines``) on the session's 64 real faces through the real
TAEF2: shapes, determinism, provenance that really names the copied training pixels, the full
Gaussian's covariance, the full-rank GMM and the LatentPatch-style copying."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
import torch.nn.functional as F

from lrgmm.baselines import (
    BASELINES,
    FullGaussian,
    FullGMM,
    LatentPatch,
    NNFromRandom,
    RandomTrainingPixels,
    make_generator,
)
from lrgmm.errors import NotFittedError
from lrgmm.core.nn_projection import gather_pixels
from lrgmm.pipeline import FacePipeline


@pytest.fixture(scope="module")
def gens(fitted64):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the 10-component GMM loses small components on 64 faces
        return {name: make_generator(name, fitted64) for name in BASELINES}


def test_registry_names_every_generator():
    assert set(BASELINES) == {"normal", "random-pixels", "nn-from-random", "gaussian", "gmm10", "lrgmm", "lrgmm-nn",
                              "latentpatch"}
    for name, cls in BASELINES.items():
        assert cls.name == name and cls.__doc__ and cls.reproduces and cls.label
    assert "re-implementation" in BASELINES["latentpatch"].label


@pytest.mark.parametrize("name", sorted(BASELINES))
def test_generates_finite_faces_deterministically(gens, fitted64, name):
    gen = gens[name]
    assert gen.pipeline is fitted64 and gen.fit_seconds_ is not None
    a, b = gen.sample(6, seed=3), gen.sample(6, seed=3)
    q, h, w = fitted64.model_.codes_.shape[1:]
    assert a.codes.shape == (6, q, h, w) and a.latents.shape[0] == 6 and a.components.shape == (6,)
    assert torch.equal(a.codes, b.codes) and torch.equal(a.latents, b.latents)
    assert torch.isfinite(a.latents).all()
    assert not torch.equal(a.codes, gen.sample(6, seed=4).codes)
    assert (a.provenance is not None) == gen.copies
    out = gen.generate(2, seed=3)
    assert out.images.shape == (2, 3, 128, 128) and torch.isfinite(out.images).all()
    assert float(out.images.min()) >= 0 and float(out.images.max()) <= 1
    assert torch.equal(out.images, gen.generate(2, seed=3).images)
    assert gen.sample(0, seed=1).codes.shape == (0, q, h, w)


@pytest.mark.parametrize("name", ["random-pixels", "nn-from-random", "latentpatch", "lrgmm-nn"])
def test_provenance_names_the_copied_training_pixels(gens, fitted64, name):
    s = gens[name].sample(8, seed=11)
    mem = fitted64.model_.codes_
    assert s.provenance.shape == (8, *mem.shape[2:]) and s.provenance.dtype == torch.long
    assert int(s.provenance.min()) >= 0 and int(s.provenance.max()) < mem.shape[0]
    assert torch.equal(gather_pixels(mem, s.provenance), s.codes)


def test_random_pixels_are_independent_per_position(gens, fitted64):
    prov = gens["random-pixels"].sample(64, seed=0).provenance
    n_train = fitted64.model_.codes_.shape[0]
    assert torch.unique(prov).numel() == n_train  # 16k uniform draws over 64 images cover all
    distinct = torch.tensor([torch.unique(p).numel() for p in prov])
    assert distinct.min() > 40  # 256 positions per face: almost every image appears


def _patches(x: torch.Tensor, omega: int) -> torch.Tensor:
    """(n, q, h, w) -> (n, q*omega^2, h*w) zero-padded patches around every position."""
    return F.unfold(x, omega, padding=omega // 2)


def test_nn_from_random_picks_the_nearest_patch(fitted64):
    """Brute force: the provenance of the NN step from a random start is the training code
    whose omega x omega patch at the same position is nearest to the start's."""
    gen = NNFromRandom(fitted64, iterations=1).fit()
    mem = fitted64.model_.codes_
    n = 3
    s = gen.sample(n, seed=7)
    start = torch.randn(n, *mem.shape[1:], generator=torch.Generator().manual_seed(7))  # the same first draw
    pq, pm = _patches(start, gen.patch_size), _patches(mem, gen.patch_size)  # (n, D, P), (N, D, P)
    d = ((pq[:, None] - pm[None]) ** 2).sum(2)  # (n, N, P)
    expected = d.argmin(1).reshape(n, *mem.shape[2:])
    assert (expected == s.provenance).float().mean() > 0.999  # float ties aside
    assert torch.equal(gather_pixels(mem, s.provenance), s.codes)


def test_full_gaussian_covariance(fitted64):
    x = fitted64.model_.codes_.reshape(fitted64.model_.codes_.shape[0], -1).double()
    reg = 1e-3
    g = FullGaussian(fitted64, reg=reg).fit()
    assert g.method_ == "gram"  # 63 < d0 = 4096
    expected = torch.cov(x.T)
    expected.diagonal().add_(reg)
    cov = g.covariance()
    assert torch.allclose(cov, expected, atol=1e-8 * float(expected.abs().max()))
    chol = FullGaussian(fitted64, reg=reg, method="cholesky").fit()
    assert chol.method_ == "cholesky"
    assert torch.allclose(chol.covariance(), expected, atol=1e-8 * float(expected.abs().max()))

    # Sample moments against the fitted ones: the leading directions of Sigma and random ones.
    n = 4000
    z = g.sample(n, seed=0).codes.reshape(n, -1).double()
    top = torch.nn.functional.normalize(g.factor_[:, -10:], dim=0)  # leading eigenvectors of Sigma (ascending)
    dirs = torch.cat([top, torch.nn.functional.normalize(torch.randn(x.shape[1], 5,
                      generator=torch.Generator().manual_seed(1), dtype=torch.float64), dim=0)], 1)
    want = (dirs * (cov @ dirs)).sum(0)
    got = ((z - z.mean(0)) @ dirs).var(0)
    assert torch.all((got / want - 1).abs() < 0.12), (got / want)
    assert float((z.mean(0) - x.mean(0)).norm()) < 4 * math.sqrt(float(cov.diagonal().sum()) / n)
    zc = chol.sample(1000, seed=0).codes.reshape(1000, -1).double()
    got_c = ((zc - zc.mean(0)) @ dirs[:, -1:]).var(0)
    assert abs(float(got_c / want[-1:]) - 1) < 0.2


def test_full_gmm_is_full_rank(gens):
    g = gens["gmm10"]
    mix = g.mixture_
    assert 1 <= g.n_components_ <= 10
    counts = torch.bincount(mix.labels_, minlength=mix.n_components_)
    # every component keeps all the directions its samples span (no low rank)
    assert torch.equal(mix.ranks_, (counts - 1).clamp(min=0))
    s = g.sample(50, seed=0)
    assert s.components.min() >= 0 and s.components.max() < g.n_components_


def test_latentpatch_copies_blocks_and_keeps_coarse_maps(fitted64):
    gen = LatentPatch(fitted64).fit()
    s = gen.sample(5, seed=2)
    h, w = s.provenance.shape[1:]
    # the finest level copies 2x2 blocks: one source per block
    blocks = s.provenance[:, ::2, ::2].repeat_interleave(2, 1).repeat_interleave(2, 2)
    assert torch.equal(blocks, s.provenance)
    assert [tuple(p.shape[1:]) for p in gen.coarse_provenance] == [(h // 4, w // 4), (h // 2, w // 2)]


def test_latentpatch_with_top1_copies_one_whole_training_code(fitted64):
    """With k = 1 the choice is the nearest only; the causal context of an exact copy matches
    its own source exactly, so the whole code comes from the first (random) source."""
    gen = LatentPatch(fitted64, top_k=1).fit()
    s = gen.sample(4, seed=5)
    mem = fitted64.model_.codes_
    for i in range(4):
        src = int(s.provenance[i, 0, 0])
        assert torch.all(s.provenance[i] == src)
        assert torch.equal(s.codes[i], mem[src])


def test_bad_arguments(fitted64):
    with pytest.raises(ValueError, match="unknown generator"):
        make_generator("vqgan-transformer", fitted64)
    with pytest.raises(NotFittedError, match="FacePipeline is not fitted"):
        RandomTrainingPixels(FacePipeline())
    with pytest.raises(NotFittedError, match="RandomTrainingPixels is not fitted"):
        RandomTrainingPixels(fitted64).sample(2)
    with pytest.raises(ValueError):
        LatentPatch(fitted64, levels=6)
    with pytest.raises(ValueError):
        LatentPatch(fitted64, block_sizes=(1, 3, 2))
    with pytest.raises(ValueError):
        NNFromRandom(fitted64, start="uniform")
    with pytest.raises(ValueError):
        FullGaussian(fitted64, reg=0)
