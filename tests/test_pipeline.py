"""FacePipeline on 64 faces through the session's autoencoder (the real TAEF2 and UTKFace photos
with the shared folder, else the fake autoencoder and synthetic faces): provenance, outputs, and
every bad input.

The 64 faces are encoded once per session (``conftest.faces64_encoded``) into a private latent
cache; fits on small folders reuse those latents, so only new images are encoded.
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
from conftest import N_FACES, TAEF2_WEIGHTS_DIR, as_taef2_model
from PIL import Image

from lrgmm.io import weights
from lrgmm.errors import FitError, ImageInputError, NotFittedError, WeightsError
from lrgmm.io.images import to_uint8_hwc
from lrgmm.core.model import LRGMM
from lrgmm.errors import InputWarning
from lrgmm.pipeline import FacePipeline
from lrgmm.core.provenance import index_colors


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
    # The decoder got exactly the training latents' pixels named by the map, all 32 channels.
    assert torch.equal(s.latents, _gather(model.latents_, prov))
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
    assert a.settings == {"nn": True, "temperature": 1.0, "spread": 1.5, "nn_iterations": 1, "patch_size": 5,
                          "nn_order": "raster", "max_share": 0.2, "precision": "fp32"}
    assert torch.equal(fitted64.generate(4, seed=3).images, a.images)
    r = fitted64.generate(4, seed=3, nn_order="raster")  # a sampling-time override of the model's order
    assert r.settings["nn_order"] == "raster"
    assert torch.equal(r.samples.provenance, fitted64.model_.sample(4, 3, nn_order="raster").provenance)
    # No seed: a fresh one, recorded, and the faces are those of that seed.
    fresh = fitted64.generate(2)
    assert isinstance(fresh.seed, int) and 0 <= fresh.seed < 2**31
    assert torch.equal(fresh.images, fitted64.generate(2, seed=fresh.seed).images)

    plain = fitted64.generate(4, seed=3, nn=False)
    assert plain.samples.provenance is None and plain.settings["nn"] is False
    assert torch.equal(plain.samples.components, a.samples.components)  # same draw before the NN step
    assert not torch.equal(plain.samples.codes, a.samples.codes)


def test_a_fresh_seed_is_recorded_where_the_faces_are_written(fitted64, tmp_path):
    """seed=None is a fresh seed (lrgmm.core.randomness), and samples.json records it: the
    recorded seed makes the same faces again."""
    import json

    fitted64.generate_to(tmp_path / "a", 2, progress=False)
    seed = json.loads((tmp_path / "a" / "samples.json").read_text())["seed"]
    assert isinstance(seed, int) and 0 <= seed < 2**31
    again = fitted64.generate(2, seed=seed)
    batches = list(fitted64.generate_batches(2))
    assert isinstance(batches[0].seed, int)
    assert torch.equal(batches[0].images, fitted64.generate(2, seed=batches[0].seed).images)
    from lrgmm.io.images import load_image

    first = sorted((tmp_path / "a").glob("face_*.png"))[0]
    assert abs(load_image(first, 128) - again.images[0].numpy()).max() <= 1 / 255 + 1e-6


def test_generate_needs_a_fitted_pipeline():
    with pytest.raises(NotFittedError, match="not fitted"):
        FacePipeline().generate(1, seed=0)


def test_fit_refuses_latents_from_another_resolution(ae, faces64_encoded):
    with pytest.raises(ValueError, match=rf"encoded with {ae.name}:.* at 128px, this pipeline uses .* at 64px"):
        FacePipeline(autoencoder=ae, resolution=64).fit(faces64_encoded)


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


def test_empty_folder(ae, tmp_path, lrgmm_cache):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ImageInputError, match=r"no image files found in .*empty"):
        FacePipeline(autoencoder=ae, progress=False).fit(tmp_path / "empty")


def test_folder_without_images(ae, tmp_path, lrgmm_cache):
    d = tmp_path / "docs"
    d.mkdir()
    (d / "notes.txt").write_text("hello")
    (d / "data.csv").write_text("a,b\n1,2\n")
    with pytest.raises(ImageInputError, match=r"no image files found .*\(2 other file\(s\) ignored\)"):
        FacePipeline(autoencoder=ae, progress=False).fit(d)


def test_only_unreadable_images(ae, tmp_path, lrgmm_cache):
    d = tmp_path / "bad"
    d.mkdir()
    (d / "a.jpg").write_bytes(b"not a jpeg at all")
    (d / "b.png").write_bytes(b"")
    with pytest.raises(ImageInputError, match=r"no usable image among 2 image file\(s\)"):
        FacePipeline(autoencoder=ae, progress=False).fit(d)


def test_corrupt_jpeg_among_good_ones(ae, faces64, tmp_path, lrgmm_cache):
    d = tmp_path / "mixed"
    good = _copy_faces(faces64[:6], d)
    data = faces64[6].read_bytes()
    (d / "zz_truncated.jpg").write_bytes(data[: len(data) // 2])
    (d / "zz_fake.jpg").write_bytes(b"<html>404 not found</html>")
    (d / "readme.txt").write_text("not an image")
    with pytest.warns(InputWarning, match=r"(?s)6 of 8 image file\(s\) used.*skipped: 2.*zz_fake\.jpg.*zz_truncated\.jpg"):
        pipe = FacePipeline(autoencoder=ae, progress=False).fit(d)
    assert pipe.training_files_ == [str(p) for p in good]
    assert pipe.model_.codes_.shape[0] == 6
    skipped = dict(pipe.report_.skipped)
    assert set(skipped) == {str(d / "zz_truncated.jpg"), str(d / "zz_fake.jpg")}
    assert "truncated" in skipped[str(d / "zz_truncated.jpg")]
    assert pipe.report_.n_ignored == 1
    assert pipe.generate(1, seed=0).images.shape == (1, 3, 128, 128)


def test_small_images_are_upsampled_and_reported(ae, faces64, tmp_path, lrgmm_cache):
    d = tmp_path / "small"
    _copy_faces(faces64[:4], d)
    for p in faces64[4:8]:
        with Image.open(p) as im:
            im.convert("RGB").resize((48, 40)).save(d / f"small_{p.stem}.png")
    with pytest.warns(InputWarning, match=r"(?s)smaller than 128px, upsampled.*small_.*\(48x40\)"):
        pipe = FacePipeline(autoencoder=ae, progress=False).fit(d)
    assert pipe.model_.codes_.shape[0] == 8  # used, not dropped
    ups = dict(pipe.report_.upsampled)
    assert len(ups) == 4 and set(ups.values()) == {(48, 40)}
    assert all(Path(p).name.startswith("small_") for p in ups)


def test_duplicates_are_used_once(ae, faces64, tmp_path, lrgmm_cache):
    d = tmp_path / "dups"
    orig = _copy_faces(faces64[:5], d)
    shutil.copyfile(orig[0], d / "zz_copy_of_first.jpg")
    (d / "sub").mkdir()
    shutil.copyfile(orig[3], d / "sub" / "again.jpg")
    with pytest.warns(InputWarning, match=r"(?s)duplicates \(kept once\): 2"):
        pipe = FacePipeline(autoencoder=ae, progress=False).fit(d)
    assert pipe.training_files_ == [str(p) for p in orig]
    assert len(set(pipe.training_hashes_)) == 5
    assert sorted(pipe.report_.duplicates) == sorted(
        [(str(d / "zz_copy_of_first.jpg"), str(orig[0])), (str(d / "sub" / "again.jpg"), str(orig[3]))]
    )


def test_clean_input_gives_no_warning(ae, faces64, tmp_path, lrgmm_cache, recwarn):
    _copy_faces(faces64[:4], tmp_path / "ok")
    FacePipeline(autoencoder=ae, progress=False).fit(tmp_path / "ok")
    assert not [w for w in recwarn if issubclass(w.category, InputWarning)]


def test_fewer_images_than_components(ae, faces64, tmp_path, lrgmm_cache):
    _copy_faces(faces64[:5], tmp_path / "five")
    with pytest.raises(FitError, match=r"5 training codes cannot fit 8 components.*n_components <= 1"):
        FacePipeline(autoencoder=ae, n_components=8, progress=False).fit(tmp_path / "five")
    _copy_faces(faces64[:1], tmp_path / "one")
    with pytest.raises(FitError, match="need at least 2 training images, got 1"):
        FacePipeline(autoencoder=ae, progress=False).fit(tmp_path / "one")


def test_non_finite_latents(faces64_encoded, ae):
    z = faces64_encoded.latents.clone()
    z[3, 5, 2, 7] = float("nan")
    z[17, 0, 0, 0] = float("inf")
    z[40, 31, 15, 15] = -float("inf")
    with pytest.raises(FitError, match=r"training images \[3, 17, 40\] contain NaN or inf"):
        LRGMM().fit(z)
    bad = dataclasses.replace(faces64_encoded, latents=z)
    with pytest.raises(FitError, match=r"\[3, 17, 40\]"):
        FacePipeline(autoencoder=ae, progress=False).fit(bad)


@pytest.fixture
def no_weights(tmp_path, monkeypatch) -> Path:
    """A machine where the TAEF2 weights are nowhere: private HOME, caches, no shared folder."""
    monkeypatch.delenv(weights.ENV_WEIGHTS, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("LRGMM_CACHE_DIR", str(tmp_path / "cache"))
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
        FacePipeline.load(as_taef2_model(model64_file, no_weights / "taef2.lrgmm"))


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


# ---------------------------------------------------------------- many faces, in bounded batches


def test_sampling_draws_as_before_and_in_any_batches(fitted64):
    """``LRGMM.sample`` consumes the seed's stream as it always has (all component draws, then
    one (n, r_max) normal draw, then the NN step), so a seed gives the faces it gave before; and
    ``iter_samples`` gives those same faces whatever the batch size (with the NN step every
    latent pixel is a copied training pixel: bit for bit)."""
    from lrgmm.core.nn_projection import nn_project
    from lrgmm.core.sampling import sample_components, sample_low_rank

    m = fitted64.model_
    mix, (q, h, w) = m.mixture_, m.codes_.shape[1:]
    for n in (1, 64, 150):
        gen = torch.Generator().manual_seed(7)
        comps = sample_components(mix.weights_, n, gen)
        flat = sample_low_rank(mix.means_, mix.eigenvectors_, mix.eigenvalues_, mix.ranks_, comps, gen, m.spread)
        codes, prov = nn_project(flat.reshape(n, q, h, w), comps, m.codes_, m.labels_, m.patch_size, m.nn_iterations,
                                 m.max_share, order=m.nn_order, strict=False)  # the model's default budget and order
        s = m.sample(n, seed=7)
        assert torch.equal(s.components, comps) and torch.equal(s.codes, codes) and torch.equal(s.provenance, prov)
        for batch in (1, 17, 64, 200):
            parts = list(m.iter_samples(n, 7, batch_size=batch))
            assert [len(p.components) for p in parts][:-1] == [batch] * (len(parts) - 1)
            for name in ("latents", "codes", "components", "provenance"):
                assert torch.equal(torch.cat([getattr(p, name) for p in parts]), getattr(s, name)), (n, batch, name)
    # Without the NN step the codes are the low-rank products themselves, whose float rounding
    # can depend on how many faces share one matrix product: same draws, same faces to ~1e-6.
    plain, one = list(m.iter_samples(20, 3, batch_size=8, nn=False)), m.sample(20, 3, nn=False)
    assert all(p.provenance is None for p in plain)
    assert torch.equal(torch.cat([p.components for p in plain]), one.components)
    assert torch.allclose(torch.cat([p.codes for p in plain]), one.codes, rtol=0, atol=1e-5)


def test_generate_batches_give_the_faces_of_generate(fitted64):
    full = fitted64.generate(40, seed=5)
    batches = list(fitted64.generate_batches(40, 5, batch_size=20))  # rounded up to 24 (decoder batches of 8)
    assert [b.start for b in batches] == [0, 24] and [len(b) for b in batches] == [24, 16]
    assert torch.equal(torch.cat([b.images for b in batches]), full.images)
    assert torch.equal(torch.cat([b.samples.provenance for b in batches]), full.samples.provenance)
    assert all(b.settings == full.settings and b.seed == 5 for b in batches)
    # Attribute sampling too: the weights and the allowed memory are set once, then batch by batch.
    where = fitted64.generate(20, seed=1, where=["gender=female"])
    parts = list(fitted64.generate_batches(20, 1, batch_size=16, where=["gender=female"]))
    assert torch.equal(torch.cat([b.images for b in parts]), where.images)
    assert parts[0].settings == where.settings


def test_generate_to_writes_what_save_writes(fitted64, tmp_path):
    fitted64.generate(20, seed=2).save(tmp_path / "saved")
    written = fitted64.generate_to(tmp_path / "streamed", 20, 2, batch_size=16, progress=False)
    names = sorted(p.name for p in (tmp_path / "saved").iterdir())
    assert names == sorted(p.name for p in (tmp_path / "streamed").iterdir())
    for name in names:  # samples.json included: same settings, same file lists
        assert (tmp_path / "saved" / name).read_bytes() == (tmp_path / "streamed" / name).read_bytes(), name
    assert [p.name for p in written["faces"]] == [f"face_{i:04d}.png" for i in range(20)]
    assert written["faces"][-1] == tmp_path / "streamed" / "face_0019.png" and len(written["provenance_json"]) == 20


def test_limits_are_checked_before_any_work(fitted64, tmp_path):
    from lrgmm.errors import LimitError
    from lrgmm.limits import MAX_NN_ITERATIONS, MAX_SAMPLES

    with pytest.raises(LimitError, match=f"at most {MAX_NN_ITERATIONS}, got 101"):
        fitted64.model_.sample(1, 0, nn_iterations=MAX_NN_ITERATIONS + 1)
    with pytest.raises(LimitError, match="at most 1,000,000, got 1,000,001"):
        fitted64.generate_batches(MAX_SAMPLES + 1, 0)
    with pytest.raises(LimitError, match="at most 1,000,000"):
        fitted64.generate_to(tmp_path / "never", MAX_SAMPLES + 1, 0)
    with pytest.raises(ValueError, match="positive odd integer, got 4"):
        fitted64.generate_to(tmp_path / "never", 3, 0, patch_size=4)
    assert not (tmp_path / "never").exists()
    with pytest.raises(LimitError, match=r"seed must be an integer in \[0, 2\*\*63"):
        fitted64.model_.sample(1, 2**64)  # was torch's "Overflow when unpacking long long"


def test_baseline_batches_start_with_generate(fitted64):
    from lrgmm.baselines import make_generator

    gen = make_generator("normal", fitted64)
    parts = list(gen.generate_batches(20, 4, batch_size=16))
    assert [len(p) for p in parts] == [16, 4]
    assert torch.equal(parts[0].images, gen.generate(16, 4).images)
    again = list(gen.generate_batches(20, 4, batch_size=16))
    assert torch.equal(torch.cat([p.images for p in again]), torch.cat([p.images for p in parts]))


def _largest_share(provenance: torch.Tensor) -> float:
    """The largest share of a face's latent pixels taken from one training photo, over faces."""
    flat = provenance.reshape(provenance.shape[0], -1)
    return max(float(torch.bincount(f).max()) / f.numel() for f in flat)


def test_generate_with_a_copy_budget(fitted64, tmp_path):
    m = fitted64.model_
    share = max(0.25, m.min_max_share())
    plain = fitted64.generate(8, seed=3, max_share=1)  # the default budget off
    assert _largest_share(plain.samples.provenance) > share  # without it, some face takes more
    a = fitted64.generate(8, seed=3, max_share=share)
    assert a.settings["max_share"] == share and _largest_share(a.samples.provenance) <= share
    assert torch.equal(a.samples.components, plain.samples.components)
    assert torch.equal(a.samples.codes, _gather(m.codes_, a.samples.provenance))
    assert torch.equal(fitted64.generate(8, seed=3, max_share=share).images, a.images)  # same seed, same faces
    batches = list(fitted64.generate_batches(8, 3, batch_size=4, max_share=share))
    assert torch.equal(torch.cat([b.images for b in batches]), a.images)
    assert all(b.settings == a.settings for b in batches)
    fitted64.generate_to(tmp_path / "out", 8, 3, batch_size=4, progress=False, max_share=share)
    summary = json.loads((tmp_path / "out" / "samples.json").read_text())
    assert summary["settings"]["max_share"] == share
    for i in range(8):
        record = json.loads((tmp_path / "out" / f"face_{i:04d}_provenance.json").read_text())
        assert record["largest_share"] <= share
    # Attribute sampling goes through the same budget, over the labelled faces of each cluster:
    # with one face labelled female, its cluster holds one, so no budget can be met and the
    # error says so.
    from lrgmm.pipeline.conditional import where_weights
    from lrgmm.errors import BudgetError

    labels = tmp_path / "one_female.csv"
    labels.write_text(f"file,gender\n{Path(fitted64.training_files_[5]).name},female\n")
    weights, allowed, _ = where_weights(fitted64, ["gender=female"], labels)
    assert allowed.tolist() == [5] and m.min_max_share(weights, allowed) == 1.0
    with pytest.raises(BudgetError, match=r"has only 1 training photo.*no budget below 1 can be met"):
        fitted64.generate(6, seed=1, where=["gender=female"], labels_csv=labels, max_share=0.5)


def test_copy_budget_as_a_model_default_survives_the_model_file(ae, faces64_encoded, tmp_path):
    from lrgmm.errors import BudgetError
    from lrgmm.io.model_file import read_metadata

    with pytest.raises(BudgetError, match="max_share"):
        FacePipeline(autoencoder=ae, max_share=0, progress=False).fit(faces64_encoded)
    pipe = FacePipeline(autoencoder=ae, n_components=1, max_share=0.2, progress=False).fit(faces64_encoded)
    assert pipe.model_.max_share == 0.2
    path = pipe.save(tmp_path / "budget.lrgmm")
    assert read_metadata(path)["hyperparameters"]["max_share"] == 0.2
    loaded = FacePipeline.load(path, autoencoder=ae, progress=False)
    assert loaded.max_share == 0.2 and loaded.model_.max_share == 0.2
    s = loaded.model_.sample(16, seed=2)
    assert _largest_share(s.provenance) <= 0.2
    assert torch.equal(s.provenance, pipe.model_.sample(16, seed=2).provenance)
    off = loaded.model_.sample(16, seed=2, max_share=1.0)  # 1 turns the default off
    assert _largest_share(off.provenance) > 0.2
    loaded.model_.max_share = None
    assert torch.equal(loaded.model_.sample(16, seed=2).provenance, off.provenance)
