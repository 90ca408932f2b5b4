"""FacePipeline on real faces through the real TAEF2: provenance, outputs, and every bad input.

The 64 shared faces are encoded once per session (``conftest.faces64_encoded``) into a private
latent cache; fits on small folders reuse those latents, so only new images are encoded.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import N_FACES, TAEF2_WEIGHTS_DIR
from PIL import Image

from lrgmm import weights
from lrgmm.errors import FitError, ImageInputError, WeightsError
from lrgmm.io.images import to_uint8_hwc
from lrgmm.model import LRGMM
from lrgmm.pipeline import FacePipeline, InputWarning
from lrgmm.provenance import index_colors


def _gather(memory: torch.Tensor, prov: torch.Tensor) -> torch.Tensor:
    """memory[prov[s, y, x], :, y, x] for every s, y, x, as (n, q, h, w): vectorised."""
    _, h, w = prov.shape
    ys = torch.arange(h).view(1, h, 1)
    xs = torch.arange(w).view(1, 1, w)
    return memory[prov, :, ys, xs].permute(0, 3, 1, 2)  # advanced indices first: (n, h, w, q)


def _copy_faces(faces: list[Path], dest: Path) -> list[Path]:
    dest.mkdir(parents=True, exist_ok=True)
    return [Path(shutil.copyfile(p, dest / p.name)) for p in faces]


# ---------------------------------------------------------------------------- provenance


def test_provenance_names_the_copied_training_pixels(fitted64):
    model = fitted64.model_
    out = fitted64.generate(16, seed=7)
    s = out.samples
    prov = s.provenance
    assert prov.shape == (16, 16, 16) and prov.dtype == torch.int64
    assert int(prov.min()) >= 0 and int(prov.max()) < N_FACES
    # Every latent pixel of every sample is the training code's pixel named by the map, at the
    # same position, bit for bit...
    assert torch.equal(s.codes, _gather(model.codes_, prov))
    # ... taken from a training image of the sample's own cluster.
    assert torch.equal(model.labels_[prov], s.components.view(-1, 1, 1).expand_as(prov))
    # The decoder got exactly P0* of those codes.
    assert torch.equal(s.latents, model.projector_.inverse_transform(s.codes))
    # K = 4 on 64 faces: the draw used more than one cluster, and faces mix several sources.
    assert len(set(s.components.tolist())) > 1
    assert max(len(torch.unique(p)) for p in prov) > 1


@pytest.mark.parametrize("iters, omega", [(2, 5), (1, 3), (3, 1)])
def test_provenance_with_other_nn_settings(fitted64, iters, omega):
    model = fitted64.model_
    s = model.sample(32, seed=11, nn_iterations=iters, patch_size=omega)
    assert torch.equal(s.codes, _gather(model.codes_, s.provenance))
    assert torch.equal(model.labels_[s.provenance], s.components.view(-1, 1, 1).expand_as(s.provenance))


def test_generate(fitted64):
    a = fitted64.generate(4, seed=3)
    assert a.images.shape == (4, 3, 128, 128) and a.images.dtype == torch.float32
    assert float(a.images.min()) >= 0.0 and float(a.images.max()) <= 1.0
    assert float(a.images.std()) > 0.05  # faces, not a flat image
    assert a.seed == 3 and len(a) == 4
    assert a.settings == {"nn": True, "temperature": 0.12, "nn_iterations": 1, "patch_size": 5}
    assert torch.equal(fitted64.generate(4, seed=3).images, a.images)
    # No seed: the model's random_state (0) seeds the draw, as in scikit-learn.
    assert torch.equal(fitted64.generate(1).samples.codes, fitted64.generate(1, seed=0).samples.codes)

    plain = fitted64.generate(4, seed=3, nn=False)
    assert plain.samples.provenance is None and plain.settings["nn"] is False
    assert torch.equal(plain.samples.components, a.samples.components)  # same draw before the NN step
    assert not torch.equal(plain.samples.codes, a.samples.codes)


def test_generate_needs_a_fitted_pipeline():
    with pytest.raises(RuntimeError, match="not fitted"):
        FacePipeline().generate(1, seed=0)


def test_fit_refuses_latents_from_another_resolution(taef2, faces64_encoded):
    with pytest.raises(ValueError, match="encoded with taef2:.* at 128px, this pipeline uses .* at 64px"):
        FacePipeline(autoencoder=taef2, resolution=64).fit(faces64_encoded)


def test_save_writes_faces_maps_and_lists(fitted64, tmp_path):
    out = fitted64.generate(4, seed=3)
    written = out.save(tmp_path / "out")
    d = tmp_path / "out"
    names = sorted(p.name for p in d.iterdir())
    assert names == sorted(
        [f"face_{i:04d}{s}" for i in range(4) for s in (".png", "_provenance.png", "_provenance.json")]
        + ["grid.png", "provenance_grid.png", "samples.json"]
    )
    assert [p.name for p in written["faces"]] == [f"face_{i:04d}.png" for i in range(4)]
    prov = out.samples.provenance
    for i in range(4):
        # The PNG is the generated image, losslessly (8-bit rounding only).
        png = np.asarray(Image.open(d / f"face_{i:04d}.png"))
        assert np.array_equal(png, to_uint8_hwc(out.images[i]))
        # The map: one 8x8 block per latent pixel, coloured by the training index.
        pmap = np.asarray(Image.open(d / f"face_{i:04d}_provenance.png"))
        assert pmap.shape == (128, 128, 3)
        expected = to_uint8_hwc(index_colors(prov[i]).permute(2, 0, 1))  # (16, 16, 3)
        assert np.array_equal(pmap[4::8, 4::8], expected)
        assert np.array_equal(pmap, expected.repeat(8, 0).repeat(8, 1))
        rec = json.loads((d / f"face_{i:04d}_provenance.json").read_text())
        assert rec["face"] == f"face_{i:04d}.png"
        assert rec["component"] == int(out.samples.components[i])
        assert rec["map"] == prov[i].tolist()
        idx, counts = torch.unique(prov[i], return_counts=True)
        by_index = {s["index"]: s for s in rec["sources"]}
        assert sorted(by_index) == idx.tolist()
        for j, c in zip(idx.tolist(), counts.tolist()):
            assert by_index[j]["file"] == fitted64.training_files_[j]
            assert by_index[j]["share"] == pytest.approx(c / 256, abs=1e-6)
        assert rec["distinct_training_images"] == len(idx)
    grid = Image.open(d / "grid.png")
    assert grid.size == (2 + 2 * 130, 2 + 2 * 130)  # 2x2 tiles of 128 px, 2 px padding
    summary = json.loads((d / "samples.json").read_text())
    assert summary["n"] == 4 and summary["seed"] == 3 and summary["settings"]["nn"] is True


# ------------------------------------------------------------------------------ bad input


def test_empty_folder(taef2, tmp_path, lrgmm_cache):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ImageInputError, match=r"no image files found in .*empty"):
        FacePipeline(autoencoder=taef2, progress=False).fit(tmp_path / "empty")


def test_folder_without_images(taef2, tmp_path, lrgmm_cache):
    d = tmp_path / "docs"
    d.mkdir()
    (d / "notes.txt").write_text("hello")
    (d / "data.csv").write_text("a,b\n1,2\n")
    with pytest.raises(ImageInputError, match=r"no image files found .*\(2 other file\(s\) ignored\)"):
        FacePipeline(autoencoder=taef2, progress=False).fit(d)


def test_only_unreadable_images(taef2, tmp_path, lrgmm_cache):
    d = tmp_path / "bad"
    d.mkdir()
    (d / "a.jpg").write_bytes(b"not a jpeg at all")
    (d / "b.png").write_bytes(b"")
    with pytest.raises(ImageInputError, match=r"no usable image among 2 image file\(s\)"):
        FacePipeline(autoencoder=taef2, progress=False).fit(d)


def test_corrupt_jpeg_among_good_ones(taef2, faces64, tmp_path, lrgmm_cache):
    d = tmp_path / "mixed"
    good = _copy_faces(faces64[:6], d)
    data = faces64[6].read_bytes()
    (d / "zz_truncated.jpg").write_bytes(data[: len(data) // 2])
    (d / "zz_fake.jpg").write_bytes(b"<html>404 not found</html>")
    (d / "readme.txt").write_text("not an image")
    with pytest.warns(InputWarning, match=r"(?s)6 of 8 image file\(s\) used.*skipped: 2.*zz_fake\.jpg.*zz_truncated\.jpg"):
        pipe = FacePipeline(autoencoder=taef2, progress=False).fit(d)
    assert pipe.training_files_ == [str(p) for p in good]
    assert pipe.model_.codes_.shape[0] == 6
    skipped = dict(pipe.report_.skipped)
    assert set(skipped) == {str(d / "zz_truncated.jpg"), str(d / "zz_fake.jpg")}
    assert "truncated" in skipped[str(d / "zz_truncated.jpg")]
    assert pipe.report_.n_ignored == 1
    assert pipe.generate(1, seed=0).images.shape == (1, 3, 128, 128)


def test_small_images_are_upsampled_and_reported(taef2, faces64, tmp_path, lrgmm_cache):
    d = tmp_path / "small"
    _copy_faces(faces64[:4], d)
    for p in faces64[4:8]:
        with Image.open(p) as im:
            im.convert("RGB").resize((48, 40)).save(d / f"small_{p.stem}.png")
    with pytest.warns(InputWarning, match=r"(?s)smaller than 128px, upsampled.*small_.*\(48x40\)"):
        pipe = FacePipeline(autoencoder=taef2, progress=False).fit(d)
    assert pipe.model_.codes_.shape[0] == 8  # used, not dropped
    ups = dict(pipe.report_.upsampled)
    assert len(ups) == 4 and set(ups.values()) == {(48, 40)}
    assert all(Path(p).name.startswith("small_") for p in ups)


def test_duplicates_are_used_once(taef2, faces64, tmp_path, lrgmm_cache):
    d = tmp_path / "dups"
    orig = _copy_faces(faces64[:5], d)
    shutil.copyfile(orig[0], d / "zz_copy_of_first.jpg")
    (d / "sub").mkdir()
    shutil.copyfile(orig[3], d / "sub" / "again.jpg")
    with pytest.warns(InputWarning, match=r"(?s)duplicates \(kept once\): 2"):
        pipe = FacePipeline(autoencoder=taef2, progress=False).fit(d)
    assert pipe.training_files_ == [str(p) for p in orig]
    assert len(set(pipe.training_hashes_)) == 5
    assert sorted(pipe.report_.duplicates) == sorted(
        [(str(d / "zz_copy_of_first.jpg"), str(orig[0])), (str(d / "sub" / "again.jpg"), str(orig[3]))]
    )


def test_clean_input_gives_no_warning(taef2, faces64, tmp_path, lrgmm_cache, recwarn):
    _copy_faces(faces64[:4], tmp_path / "ok")
    FacePipeline(autoencoder=taef2, progress=False).fit(tmp_path / "ok")
    assert not [w for w in recwarn if issubclass(w.category, InputWarning)]


def test_fewer_images_than_components(taef2, faces64, tmp_path, lrgmm_cache):
    _copy_faces(faces64[:5], tmp_path / "five")
    with pytest.raises(FitError, match=r"5 training codes cannot fit 8 components.*n_components <= 1"):
        FacePipeline(autoencoder=taef2, n_components=8, progress=False).fit(tmp_path / "five")
    _copy_faces(faces64[:1], tmp_path / "one")
    with pytest.raises(FitError, match="need at least 2 training images, got 1"):
        FacePipeline(autoencoder=taef2, progress=False).fit(tmp_path / "one")


def test_non_finite_latents(faces64_encoded, taef2):
    z = faces64_encoded.latents.clone()
    z[3, 5, 2, 7] = float("nan")
    z[17, 0, 0, 0] = float("inf")
    z[40, 31, 15, 15] = -float("inf")
    with pytest.raises(FitError, match=r"training images \[3, 17, 40\] contain NaN or inf"):
        LRGMM().fit(z)
    bad = dataclasses.replace(faces64_encoded, latents=z)
    with pytest.raises(FitError, match=r"\[3, 17, 40\]"):
        FacePipeline(autoencoder=taef2, progress=False).fit(bad)


@pytest.fixture
def no_weights(tmp_path, monkeypatch) -> Path:
    """A machine where the TAEF2 weights are nowhere: private HOME, caches, no shared folder."""
    monkeypatch.delenv(weights.ENV_WEIGHTS, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv(weights.ENV_CACHE_DIR, str(tmp_path / "cache"))
    start = tmp_path / "checkout" / "main" / "src" / "lrgmm"
    start.mkdir(parents=True)
    monkeypatch.setattr(weights, "_shared_search_starts", lambda: [start])
    return tmp_path


def test_missing_weights(no_weights, faces64, model64_file):
    _copy_faces(faces64[:4], no_weights / "faces")
    msg = r"(?s)cannot find the taef2 weight file taef2_encoder\.pth.*`lrgmm weights download taef2`"
    with pytest.raises(WeightsError, match=msg):
        FacePipeline(progress=False).fit(no_weights / "faces")
    with pytest.raises(WeightsError, match=msg):
        FacePipeline.load(model64_file)


@pytest.fixture
def bad_weights(tmp_path, monkeypatch) -> Path:
    """$LRGMM_WEIGHTS holding the real decoder and an encoder with one byte changed."""
    d = tmp_path / "w"
    d.mkdir()
    for name in ("taef2_encoder.pth", "taef2_decoder.pth"):
        src = TAEF2_WEIGHTS_DIR / name
        if not src.is_file():
            pytest.skip(f"real TAEF2 weights not found in {TAEF2_WEIGHTS_DIR}")
        shutil.copyfile(src, d / name)
    data = bytearray((d / "taef2_encoder.pth").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (d / "taef2_encoder.pth").write_bytes(bytes(data))
    monkeypatch.setenv(weights.ENV_WEIGHTS, str(d))
    return d


def test_weights_with_wrong_hash(bad_weights, faces64, tmp_path, lrgmm_cache):
    _copy_faces(faces64[:4], tmp_path / "faces")
    actual = hashlib.sha256((bad_weights / "taef2_encoder.pth").read_bytes()).hexdigest()
    with pytest.raises(WeightsError, match=rf"(?s)taef2_encoder\.pth has the wrong sha256.*actual:   {actual}.*lrgmm weights download taef2"):
        FacePipeline(progress=False).fit(tmp_path / "faces")
