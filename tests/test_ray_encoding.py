"""Encoding on a local Ray (``lrgmm.pipeline.ray_encoding``): the same latents, report and model as
the in-process path, through the same latent cache."""

from __future__ import annotations

import shutil

import pytest
import torch

from lrgmm.cli import main
from lrgmm.io.latent_cache import LatentCache
from lrgmm.pipeline import FacePipeline
from lrgmm.pipeline.encoding import encode_images

ray = pytest.importorskip("ray", reason="the [ray] extra is not installed")
from lrgmm.pipeline.ray_encoding import encode_on_ray  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def local_ray():
    yield
    if ray.is_initialized():
        ray.shutdown()


@pytest.fixture(scope="module")
def photo_dir(faces64, tmp_path_factory):
    """The 64 faces and one file that is not an image."""
    folder = tmp_path_factory.mktemp("ray_photos")
    for p in faces64:
        shutil.copy(p, folder / p.name)
    (folder / "broken.jpg").write_bytes(b"not an image")
    return folder


@pytest.fixture(scope="module")
def on_ray(local_ray, ae, photo_dir, tmp_path_factory):
    cache = LatentCache(tmp_path_factory.mktemp("ray_cache"))
    report = encode_on_ray(photo_dir, ae.name, cache=cache, workers=2, batch_size=8, progress=False)
    return cache, report


def test_ray_workers_fill_the_cache_with_the_in_process_latents(ae, photo_dir, on_ray):
    cache, report = on_ray
    assert report.encoded == 64 and report.cached == 0 and report.workers == 2
    assert [p.rsplit("/", 1)[-1] for p, _ in report.failed] == ["broken.jpg"]
    read_back = encode_images(photo_dir, ae, cache=cache, progress=False)
    local = encode_images(photo_dir, ae, cache=False, progress=False)
    assert read_back.n_cached == 64 and read_back.n_encoded == 0  # nothing left for this process
    assert read_back.paths == local.paths and read_back.hashes == local.hashes
    assert (read_back.latents - local.latents).abs().max() <= 1e-5
    # bad files are reported as the in-process path reports them
    assert read_back.report.skipped == local.report.skipped
    assert [r for _, r in report.failed] == [r for _, r in local.report.skipped]


def test_a_fit_on_ray_latents_is_the_in_process_fit(ae, photo_dir, on_ray):
    cache, _ = on_ray
    ray_fit = FacePipeline(autoencoder=ae, n_components=4, progress=False).fit(
        encode_images(photo_dir, ae, cache=cache, progress=False))
    local_fit = FacePipeline(autoencoder=ae, n_components=4, progress=False).fit(
        encode_images(photo_dir, ae, cache=False, progress=False))
    a, b = ray_fit.model_, local_fit.model_
    assert torch.equal(a.labels_, b.labels_)
    assert torch.allclose(a.mixture_.weights_, b.mixture_.weights_)
    assert torch.allclose(a.mixture_.means_, b.mixture_.means_, atol=1e-4)
    assert torch.equal(ray_fit.generate(4, seed=0).samples.provenance, local_fit.generate(4, seed=0).samples.provenance)


def test_a_second_run_finds_everything_cached(ae, photo_dir, on_ray):
    cache, _ = on_ray
    again = encode_on_ray(photo_dir, ae.name, cache=cache, workers=1, progress=False)
    assert again.encoded == 0 and again.cached == 64 and len(again.failed) == 1


def test_engine_options_are_checked_before_anything_runs(photo_dir, capsys):
    assert main(["encode", str(photo_dir), "--workers", "2"]) != 0
    assert "--engine ray" in capsys.readouterr().err
    assert main(["fit", str(photo_dir), "-o", "x.lrgmm", "--engine", "ray", "--no-cache"]) != 0
    assert "drop --no-cache" in capsys.readouterr().err
