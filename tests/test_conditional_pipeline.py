"""Completion and attribute-conditional sampling on real faces through the real TAEF2, and the
``lrgmm complete`` / ``lrgmm sample --where`` command lines (errors: nothing written)."""

from __future__ import annotations

import itertools
import json
import re

import numpy as np
import pytest
import torch
from conftest import utkface_images
from PIL import Image

from lrgmm.cli import main
from lrgmm.data.masks import box_mask, centre_box, fill_masked
from lrgmm.core.conditioning import unknown_positions
from lrgmm.io.images import load_image
from lrgmm.data.labels import LabelError, LabelTable


@pytest.fixture(scope="module")
def heldout_face(faces_dir, faces64):
    """A face of the folder that is not one of the 64 training faces."""
    train = {p.name for p in faces64}
    return next(p for p in utkface_images(faces_dir)[1:] if p.name not in train)


@pytest.fixture(scope="module")
def completions(fitted64, heldout_face):
    mask = box_mask(128, *centre_box(128, 0.25))
    return fitted64.complete(heldout_face, mask, n=3, seed=0), mask


def test_completion_preserves_observed_region(fitted64, completions, heldout_face):
    out, mask = completions
    model = fitted64.model_
    original = torch.from_numpy(load_image(heldout_face, 128))
    assert torch.equal(out.original, original) and torch.equal(out.mask, mask)
    assert out.images.shape == (3, 3, 128, 128) and out.raw.shape == (3, 3, 128, 128)
    # pixels whose blend weight is 0 are the original's, bit for bit; the hole is the decoded face
    far = out.alpha == 0
    assert int(far.sum()) > 128 * 128 // 2
    assert torch.equal(out.images[:, :, far], original[None].expand(3, -1, -1, -1)[:, :, far])
    assert torch.equal(out.images[:, :, mask], out.raw[:, :, mask])
    # the 25 % centre box covers latent rows/columns 4..11
    expect = torch.zeros(16, 16, dtype=torch.bool)
    expect[4:12, 4:12] = True
    assert torch.equal(out.unknown, expect)
    # observed latent positions: the encoder's latent of the photo with the hole filled, unchanged
    latent = fitted64.autoencoder_.encode(fill_masked(original, mask)[None])
    obs = ~out.unknown
    assert torch.equal(out.samples.latents[:, :, obs], latent.expand(3, -1, -1, -1)[:, :, obs])
    code = model.projector_.transform(latent)
    assert torch.equal(out.samples.codes[:, :, obs], code.expand(3, -1, -1, -1)[:, :, obs])
    # provenance: -1 observed; at unknown positions, the copied training latent pixel exactly
    prov = out.samples.provenance
    assert bool((prov[:, obs] == -1).all()) and bool((prov[:, out.unknown] >= 0).all())
    s, y, x = torch.nonzero(out.unknown.expand(3, 16, 16), as_tuple=True)
    assert torch.equal(out.samples.codes[s, :, y, x], model.codes_[prov[s, y, x], :, y, x])
    assert torch.equal(model.labels_[prov[s, y, x]], out.samples.components[s])
    # ... and the decoder got that training photo's own latent pixel there, all 32 channels
    assert torch.equal(out.samples.latents[s, :, y, x], model.latents_[prov[s, y, x], :, y, x])
    # completions differ from one another inside the hole (other training pixels copied: few
    # on this 64-face model, whose clusters hold ~16 faces; reports/conditional.md measures the
    # diversity on 1,024), and fill it with a face, not the grey fill
    assert bool((prov[0] != prov[1])[out.unknown].any()) or bool((prov[0] != prov[2])[out.unknown].any())
    assert float((out.images[0] - out.images[1])[:, mask].abs().mean()) > 1e-3
    assert float((out.images[:, :, mask] - 0.5).abs().mean()) > 0.05


def test_completion_is_deterministic(fitted64, completions, heldout_face):
    out, mask = completions
    again = fitted64.complete(heldout_face, mask.numpy(), n=3, seed=0)
    assert torch.equal(again.images, out.images) and torch.equal(again.samples.provenance, out.samples.provenance)
    other = fitted64.complete(str(heldout_face), mask, n=3, seed=1)
    assert not torch.equal(other.images, out.images)


def test_completion_without_nn_and_at_photo_size(fitted64, heldout_face):
    img = Image.open(heldout_face)
    w, h = img.size
    big = np.zeros((h, w), dtype=np.uint8)
    big[h // 4 : h // 2, w // 4 : w // 2] = 255
    out = fitted64.complete(heldout_face, big, n=2, seed=3, nn=False)
    assert out.samples.provenance is None
    # a quarter-side square at the photo's size is a quarter-side square at 128 px
    assert int(out.mask.sum()) == pytest.approx((128 // 4) ** 2, rel=0.15)
    assert torch.equal(out.unknown, unknown_positions(out.mask, (16, 16)))


def test_completion_with_a_copy_budget(fitted64, heldout_face):
    mask = box_mask(128, *centre_box(128, 0.25))
    plain = fitted64.complete(heldout_face, mask, n=2, seed=0, max_share=1)  # the default budget off
    unknown = plain.unknown
    n_unknown = int(unknown.sum())
    share = max(0.25, fitted64.model_.min_max_share())
    out = fitted64.complete(heldout_face, mask, n=2, seed=0, max_share=share)
    assert out.settings["max_share"] == share and plain.settings["max_share"] is None
    for i in range(2):
        rec = out.provenance_record(i)
        assert rec["filled_positions"] == n_unknown and max(s["share"] for s in rec["sources"]) <= share
    assert torch.equal(out.samples.provenance[:, ~unknown], plain.samples.provenance[:, ~unknown])  # -1: observed
    assert torch.equal(out.samples.components, plain.samples.components)


def test_completions_save(completions, tmp_path, fitted64):
    out, _ = completions
    written = out.save(tmp_path / "c")
    assert len(written["completions"]) == 3 and (tmp_path / "c" / "grid.png").is_file()
    rec = json.loads((tmp_path / "c" / "completion_0001_provenance.json").read_text())
    assert rec["filled_positions"] == 64 and abs(sum(s["share"] for s in rec["sources"]) - 1) < 1e-5
    assert all(s["file"] == fitted64.training_files_[s["index"]] for s in rec["sources"])
    grid = np.asarray(Image.open(tmp_path / "c" / "grid.png"))
    assert grid.shape[0] == 2 + 2 * 130 and grid.shape[1] == 2 + 4 * 130


def test_generate_where(fitted64):
    table = LabelTable.from_files(fitted64.training_files_)
    female = np.array([v == "female" for v in table.column("gender")])
    out = fitted64.generate(4, seed=0, where=["gender=1"])
    assert out.settings["where"] == {"gender": "female"}
    assert out.settings["labelled_training_faces"] == int(female.sum())
    used = out.samples.provenance.unique().numpy()
    assert female[used].all()
    again = fitted64.generate(4, seed=0, where={"gender": "female"})
    assert torch.equal(out.images, again.images)
    # the component weights given the labels are the labelled faces' cluster shares (hard labels)
    labels = fitted64.model_.labels_.numpy()[female]
    shares = np.bincount(labels, minlength=fitted64.model_.n_components_) / female.sum()
    assert np.allclose(out.settings["component_weights"], shares, atol=1e-5)


def test_generate_where_errors(fitted64):
    with pytest.raises(LabelError, match="unknown attribute 'hair'"):
        fitted64.generate(2, seed=0, where=["hair=red"])
    with pytest.raises(LabelError, match="unknown gender value"):
        fitted64.generate(2, seed=0, where=["gender=robot"])
    table = LabelTable.from_files(fitted64.training_files_)
    combos = itertools.product(table.categories("age"), table.categories("race"), table.categories("gender"))
    age, race, gender = next(c for c in combos if not table.mask({"age": c[0], "race": c[1], "gender": c[2]}).any())
    with pytest.raises(LabelError, match=f"no training face of this model has age={age} and race={race}"):
        fitted64.generate(2, seed=0, where={"age": age, "race": race, "gender": gender})


def run(capsys, *argv):
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.mark.slow
def test_cli_complete_and_sample_where(model64_file, heldout_face, tmp_path, capsys, lrgmm_cache):
    rc, out, err = run(capsys, "complete", model64_file, heldout_face, "--box", 40, 40, 90, 80, "-n", 2,
                       "--seed", 4, "-o", tmp_path / "box", "--quiet")
    assert rc == 0, err
    assert "2 completions (seed 4)" in out
    names = {p.name for p in (tmp_path / "box").iterdir()}
    assert {"grid.png", "input.png", "mask.png", "completion_0001.png", "completion_0001_provenance.json"} <= names
    mask = np.zeros((128, 128), dtype=np.uint8)
    mask[40:80, 40:90] = 255
    Image.fromarray(mask).save(tmp_path / "mask.png")
    rc, out, err = run(capsys, "complete", model64_file, heldout_face, "--mask", tmp_path / "mask.png", "-n", 2,
                       "--seed", 4, "-o", tmp_path / "png", "--quiet")
    assert rc == 0, err
    a = np.asarray(Image.open(tmp_path / "box" / "completion_0001.png"))
    b = np.asarray(Image.open(tmp_path / "png" / "completion_0001.png"))
    assert np.array_equal(a, b)
    rc, out, err = run(capsys, "sample", model64_file, "-n", 3, "--seed", 0, "--where", "gender=female", "age=adult",
                       "-o", tmp_path / "where", "--quiet")
    assert rc == 0, err
    assert "labelled training faces" in out
    meta = json.loads((tmp_path / "where" / "samples.json").read_text())
    assert meta["settings"]["where"] == {"gender": "female", "age": "adult"}


@pytest.mark.parametrize(
    "args, pattern",
    [
        (["--box", 0, 0, 200, 50], r"box .* not inside the 128x128 image"),
        (["--box", 50, 50, 50, 60], r"not inside"),
        (["--mask", "{wrong}"], r"is 100x90 pixels; it must be 128x128"),
        (["--mask", "{empty}"], r"hides no pixel"),
        (["--mask", "{full}"], r"hides every pixel"),
        (["--mask", "{missing}"], r"cannot read the mask"),
    ],
)
def test_cli_complete_bad_input(args, pattern, model64_file, heldout_face, tmp_path, capsys, lrgmm_cache):
    files = {"wrong": np.zeros((90, 100)), "empty": np.zeros((128, 128)), "full": np.full((128, 128), 255)}
    for name, a in files.items():
        Image.fromarray(a.astype(np.uint8)).save(tmp_path / f"{name}.png")
    args = [str(a).format(wrong=tmp_path / "wrong.png", empty=tmp_path / "empty.png", full=tmp_path / "full.png",
                          missing=tmp_path / "nope.png") for a in args]
    rc, _out, err = run(capsys, "complete", model64_file, heldout_face, *args, "-o", tmp_path / "out", "--quiet")
    assert rc == 2 and "Traceback" not in err and re.search(pattern, err), err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "where, pattern",
    [(["hair=red"], r"unknown attribute 'hair'"), (["age=ancient"], r"unknown age value"), (["gender"], r"not ATTRIBUTE=VALUE")],
)
def test_cli_sample_where_bad_labels(where, pattern, model64_file, tmp_path, capsys, lrgmm_cache):
    rc, _out, err = run(capsys, "sample", model64_file, "-n", 2, "--where", *where, "-o", tmp_path / "out", "--quiet")
    assert rc == 2 and re.search(pattern, err), err
    assert not (tmp_path / "out").exists()


def test_complete_cli_defaults_are_the_api_defaults():
    import inspect

    from lrgmm.cli import build_parser
    from lrgmm.pipeline.conditional import complete_image

    api = inspect.signature(complete_image).parameters
    args = build_parser().parse_args(["complete", "m.lrgmm", "photo.jpg", "--box", "1", "2", "3", "4", "-o", "out"])
    for name in ("n", "nn", "noise", "threshold", "feather"):
        assert getattr(args, name) == api[name].default, name
    for name in ("temperature", "nn_iterations", "patch_size"):
        assert getattr(args, name) is None and api[name].default is None
    assert args.box == [1, 2, 3, 4] and args.mask is None
    from lrgmm.pipeline import FacePipeline

    assert inspect.signature(FacePipeline.complete).parameters["n"].default == api["n"].default


def test_sample_where_needs_an_lrgmm_method(model64_file, tmp_path, capsys, lrgmm_cache):
    rc, _out, err = run(capsys, "sample", model64_file, "-n", 2, "--where", "gender=female", "--method", "nn-from-random",
                        "-o", tmp_path / "out", "--quiet")
    assert rc == 2 and "--where works with the LR-GMM methods" in err, err
    assert not (tmp_path / "out").exists()


def test_a_completion_without_seed_records_the_fresh_one(fitted64, heldout_face):
    mask = box_mask(128, 40, 40, 88, 88)
    out = fitted64.complete(heldout_face, mask, n=2)
    assert isinstance(out.seed, int) and 0 <= out.seed < 2**31
    assert torch.equal(out.images, fitted64.complete(heldout_face, mask, n=2, seed=out.seed).images)
