"""Attribute edits (lrgmm.editing, lrgmm.pipeline.editing): the affine map, the Gaussian OT map, the Wasserstein fit,
edit files, FacePipeline.edit with the NN step, the command line and bad input."""

from __future__ import annotations

import csv
import json

import pytest
import torch

from lrgmm.cli import main
from lrgmm.editing import AttributeEdit, load_edit, model_fingerprint
from lrgmm.editing.maps import apply_affine, gaussian_ot_matrix
from lrgmm.errors import EditError, EditFileError
from lrgmm.data.labels import LabelError

pytest.importorskip("geomloss")


def _spd(q, gen, scale=1.0):
    m = torch.randn(q, q, generator=gen, dtype=torch.float64)
    return scale * (m @ m.T / q + 0.2 * torch.eye(q, dtype=torch.float64))


def _dense(linear, bias, left, right, q, h, w):
    """The d0 x d0 matrix and d0 offset of H, built entry by entry from its definition."""
    d0 = q * h * w
    M = torch.zeros(d0, d0, dtype=torch.float64)
    idx = torch.arange(d0).reshape(q, h, w)
    for i in range(q):
        for j in range(q):
            M[idx[i].reshape(-1), idx[j].reshape(-1)] = linear[i, j].item()
    if left is not None:
        M = M + left.double() @ right.double().T
    return M, bias.double().reshape(-1)


def test_affine_map_matches_its_dense_matrix():
    gen = torch.Generator().manual_seed(0)
    q, h, w, r = 3, 2, 2, 2
    d0 = q * h * w
    A = torch.randn(q, q, generator=gen)
    b = torch.randn(q, h, w, generator=gen)
    U, V = torch.randn(d0, r, generator=gen), torch.randn(d0, r, generator=gen)
    z = torch.randn(5, q, h, w, generator=gen)
    M, off = _dense(A, b, U, V, q, h, w)
    for alpha in (-2.0, 0.0, 0.5, 1.0):
        want = z.double().reshape(5, -1) + alpha * (z.double().reshape(5, -1) @ M.T + off)
        got = apply_affine(z, alpha, A, b, U, V).double().reshape(5, -1)
        assert torch.allclose(got, want, atol=1e-5)
    # alpha = 0 is the identity; the map is affine in alpha: z(a) = z + a (z(1) - z).
    assert torch.equal(apply_affine(z, 0.0, A, b, U, V), z)
    z1 = apply_affine(z, 1.0, A, b)
    assert torch.allclose(apply_affine(z, -1.5, A, b), z - 1.5 * (z1 - z), atol=1e-5)


def test_gaussian_ot_matrix_is_the_closed_form():
    gen = torch.Generator().manual_seed(1)
    s1, s2 = _spd(6, gen), _spd(6, gen, 3.0)
    A = gaussian_ot_matrix(s1, s2)
    assert A.dtype == torch.float64
    assert torch.allclose(A, A.T, atol=1e-12)
    assert bool((torch.linalg.eigvalsh(A) > 0).all())
    assert torch.allclose(A @ s1 @ A, s2, atol=1e-10)  # pushes N(., S1) onto N(., S2) exactly
    # Identity between equal covariances; a scaled covariance gives the scalar sqrt.
    assert torch.allclose(gaussian_ot_matrix(s1, s1), torch.eye(6, dtype=torch.float64), atol=1e-10)
    assert torch.allclose(gaussian_ot_matrix(s1, 4 * s1), 2 * torch.eye(6, dtype=torch.float64), atol=1e-10)


def test_gaussian_ot_edit_maps_gaussian_samples_onto_the_target():
    gen = torch.Generator().manual_seed(2)
    q = 4
    m1, m2 = torch.randn(q, generator=gen, dtype=torch.float64), 3 + torch.randn(q, generator=gen, dtype=torch.float64)
    s1, s2 = _spd(q, gen), _spd(q, gen, 2.0)

    def draw(m, s, n):
        L = torch.linalg.cholesky(s)
        return (m + torch.randn(n, q, generator=gen, dtype=torch.float64) @ L.T).float().reshape(n, q, 1, 1)

    neg, pos = draw(m1, s1, 20000), draw(m2, s2, 20000)
    edit = AttributeEdit(method="gaussian_ot").fit_codes(neg, pos)
    # On the fitted samples the empirical moments are matched exactly (closed form).
    out = edit.transform(neg, 1.0).double().reshape(-1, q)
    assert torch.allclose(out.mean(0), pos.double().reshape(-1, q).mean(0), atol=1e-4)
    assert torch.allclose(torch.cov(out.T), torch.cov(pos.double().reshape(-1, q).T), atol=1e-4)
    # Fresh N(m1, S1) samples land on N(m2, S2) up to sampling error.
    fresh = edit.transform(draw(m1, s1, 20000), 1.0).double().reshape(-1, q)
    assert torch.allclose(fresh.mean(0), m2, atol=0.06)
    assert torch.allclose(torch.cov(fresh.T), s2, atol=0.12)
    assert edit.n_parameters() == q * q + q


def _planted(seed=3, n=64, q=4, h=3, w=3):
    gen = torch.Generator().manual_seed(seed)
    shift = 2 * torch.randn(q, h, w, generator=gen)
    neg = torch.randn(n, q, h, w, generator=gen)
    pos = torch.randn(n, q, h, w, generator=gen) + shift
    return neg, pos, shift


def test_wasserstein_learns_a_planted_shift_and_is_deterministic():
    neg, pos, shift = _planted()
    kw = {"preservation": 0.0, "learning_rate": 0.15, "max_epochs": 25, "patience": 25, "min_examples": 8, "progress": False, "random_state": 0}
    edit = AttributeEdit(**kw).fit_codes(neg, pos)
    hist = [h["validation"] for h in edit.history_]
    assert min(hist) < 0.4 * hist[0]  # the Sinkhorn divergence on held-out codes falls
    assert edit.info_["best_validation_loss"] == min(hist)
    cos = torch.nn.functional.cosine_similarity(edit.bias_.reshape(1, -1), shift.reshape(1, -1)).item()
    assert cos > 0.9
    moved = edit.transform(neg, 1.0).mean(0) - neg.mean(0)
    assert (moved - shift).norm() < 0.3 * shift.norm()
    short = {**kw, "max_epochs": 4}
    once, again = AttributeEdit(**short).fit_codes(neg, pos), AttributeEdit(**short).fit_codes(neg, pos)
    assert torch.equal(again.linear_, once.linear_) and torch.equal(again.bias_, once.bias_)
    other = AttributeEdit(**{**short, "random_state": 1}).fit_codes(neg, pos)
    assert not torch.equal(other.bias_, once.bias_)


def test_pixel_cost_learns_the_planted_shift():
    neg, pos, shift = _planted(n=48)
    edit = AttributeEdit(cost="pixels", preservation=0.0, learning_rate=0.1, max_epochs=25, patience=25,
                         progress=False).fit_codes(neg, pos)
    hist = [h["validation"] for h in edit.history_]
    assert min(hist) < 0.5 * hist[0]
    moved = edit.transform(neg, 1.0).mean(0) - neg.mean(0)
    assert (moved - shift).norm() < 0.35 * shift.norm()
    with pytest.raises(EditError, match="cost must be"):
        AttributeEdit(cost="nope", max_epochs=1, progress=False).fit_codes(neg, pos)


def test_parameter_counts():
    neg, pos, _ = _planted(n=32)
    q, h, w = neg.shape[1:]
    d0 = q * h * w
    for method in ("mean_difference", "classifier", "gaussian_ot"):
        assert AttributeEdit(method=method).fit_codes(neg, pos).n_parameters() == q * q + d0
    e = AttributeEdit(rank=2, preservation=0, max_epochs=2, progress=False).fit_codes(neg, pos)
    assert e.n_parameters() == q * q + d0 + 2 * 2 * d0
    rep = e.parameter_report()
    assert rep["full_matrix"] == d0 * d0 + d0 and rep["share_of_full"] == pytest.approx(e.n_parameters() / (d0 * d0 + d0))


def test_mean_difference_and_classifier_move_the_mean():
    neg, pos, _shift = _planted(n=48)
    md = AttributeEdit(method="mean_difference").fit_codes(neg, pos)
    assert torch.allclose(md.transform(neg, 1.0).mean(0), pos.mean(0), atol=1e-5)
    cl = AttributeEdit(method="classifier").fit_codes(neg, pos)
    w = cl.bias_.reshape(-1) / cl.bias_.norm()
    # alpha = 1 moves the negatives' mean projection onto the positives' along the normal.
    assert float(cl.transform(neg, 1.0).mean(0).reshape(-1) @ w) == pytest.approx(float(pos.mean(0).reshape(-1) @ w), abs=1e-4)


# ------------------------------------------------------------------------ on the real model
@pytest.fixture(scope="module")
def gender_edit(fitted64):
    return AttributeEdit(max_epochs=6, patience=6, progress=False).fit(fitted64, attribute="gender")


def test_fit_on_model_labels_and_round_trip(fitted64, gender_edit, tmp_path):
    e = gender_edit
    assert (e.attribute_, e.negative_, e.positive_) == ("gender", "male", "female")
    sides = e.memory_side_
    names = [p.split("/")[-1] for p in fitted64.training_files_]
    assert sides.shape == (len(names),)
    for name, s in zip(names, sides.tolist()):
        g = name.split("_")[1]
        assert s == (1 if g == "1" else 0 if g == "0" else -1)
    assert e.n_negative_ == int((sides == 0).sum()) and e.n_positive_ == int((sides == 1).sum())
    assert set(e.info_["preserved_attributes"]) == {"age", "race"}
    path = e.save(tmp_path / "g.edit")
    back = load_edit(path)
    for name in ("linear_", "bias_", "memory_side_"):
        assert torch.equal(getattr(back, name), getattr(e, name))
    z = fitted64.model_.codes_[:3]
    assert torch.equal(back.transform(z, 1.5), e.transform(z, 1.5))
    assert back.model_fingerprint_ == model_fingerprint(fitted64)
    back.check_model(fitted64)
    meta = json.loads(json.dumps(back.metadata()))
    assert meta["parameters"]["n_parameters"] == 16 * 16 + 16 * 16 * 16


def test_edit_refused_by_another_model(fitted64, faces64_encoded, gender_edit, tmp_path):
    from lrgmm.pipeline.encoding import EncodedSet
    from lrgmm.pipeline import FacePipeline

    e = faces64_encoded
    sub = EncodedSet(e.latents[:48], e.paths[:48], e.hashes[:48], e.report, e.resolution, e.autoencoder_id)
    other = FacePipeline(autoencoder=fitted64.autoencoder_, n_components=2, progress=False).fit(sub)
    path = gender_edit.save(tmp_path / "g.edit")
    with pytest.raises(EditFileError, match="another model"):
        other.edit([fitted64.training_files_[0]], path, alphas=(1,))
    # A refit of the mixture alone (same projector and training files) accepts it.
    same = FacePipeline(autoencoder=fitted64.autoencoder_, n_components=2, progress=False).fit(e)
    assert model_fingerprint(same) == model_fingerprint(fitted64)


def test_edit_with_nn_copies_target_side_training_pixels(fitted64, gender_edit, tmp_path):
    from lrgmm.core.nn_projection import gather_pixels

    files = fitted64.training_files_[:2]
    out = fitted64.edit(files, gender_edit, alphas=(-1, 0, 1), nn=True)
    R = fitted64.resolution
    assert out.images.shape == (2, 3, 3, R, R) and out.originals.shape == (2, 3, R, R)
    mem, side = fitted64.model_.codes_, gender_edit.memory_side_
    prov = out.provenance
    assert prov.shape == (2, 3, 16, 16)
    assert bool((side[prov[:, 0]] == 0).all())  # alpha < 0: male training pixels
    assert bool((side[prov[:, 2]] == 1).all())  # alpha > 0: female training pixels
    for j in (0, 2):  # every latent pixel is a real training latent pixel at its position
        assert torch.equal(out.codes[:, j], gather_pixels(mem, prov[:, j]))
    # ... and is decoded from that photo's own latent pixel, all 32 channels, not from its code
    full = fitted64.decode(gather_pixels(fitted64.model_.latents_, prov[:, 2]))
    assert torch.allclose(out.images[:, 2], full, atol=1e-4)
    assert not torch.allclose(out.images[:, 2], fitted64.decode(fitted64.model_.projector_.inverse_transform(out.codes[:, 2])), atol=1e-2)
    # alpha = 0 moves nothing: no copy, and the face is the input's plain reconstruction.
    assert bool((prov[:, 1] == -1).all())
    from lrgmm.io.images import prepare_image

    photos = torch.stack([torch.from_numpy(prepare_image(f, R).array) for f in files])
    reconstruction = fitted64.decode(fitted64.autoencoder_.encode(photos))
    assert torch.equal(out.images[:, 1], reconstruction)
    plain = fitted64.edit(files, gender_edit, alphas=(0, 1e-3, 1), nn=False)
    assert plain.provenance is None
    assert torch.allclose(plain.codes[:, 2], gender_edit.transform(plain.codes[:, 0], 1.0), atol=1e-5)
    # Without the NN step the edit is continuous in alpha: a tiny alpha barely moves the face
    # (the projector's dropped channels stay the input's), a full one moves it.
    assert float((plain.images[:, 1] - plain.images[:, 0]).abs().max()) < 0.02
    assert float((plain.images[:, 2] - plain.images[:, 0]).abs().mean()) > 0.01
    written = out.save(tmp_path / "out")
    assert len(written["strips"]) == 2 and len(written["provenance_strips"]) == 2
    from PIL import Image

    assert Image.open(written["strips"][0]).size == (2 + 4 * (R + 2), R + 4)
    rec = json.loads((tmp_path / "out" / "edits.json").read_text())
    assert rec["alphas"] == [-1.0, 0.0, 1.0] and rec["faces"][0]["provenance"][2]["alpha"] == 1.0
    assert rec["faces"][0]["provenance"][1]["distinct_training_images"] == 0  # alpha = 0 copied nothing


def test_an_edit_that_moves_some_positions_copies_only_there(fitted64, gender_edit):
    """A partial edit (a bias on a few positions, no linear part) runs the NN step on the moved
    positions only: the others keep the input's code and get provenance -1."""
    import copy

    from lrgmm.core.nn_projection import gather_pixels

    local = copy.copy(gender_edit)
    local.linear_ = torch.zeros_like(gender_edit.linear_)
    local.left_ = local.right_ = None
    local.bias_ = torch.zeros_like(gender_edit.bias_)
    local.bias_[:, 4:8, 5:9] = gender_edit.bias_[:, 4:8, 5:9] + 0.5
    files = fitted64.training_files_[:2]
    out = fitted64.edit(files, local, alphas=(1,), nn=True)
    prov = out.provenance[:, 0]
    box = torch.zeros(16, 16, dtype=torch.bool)
    box[4:8, 5:9] = True
    assert bool((prov[:, box] >= 0).all()) and bool((prov[:, ~box] == -1).all())
    plain = fitted64.edit(files, local, alphas=(0,), nn=False)
    kept = out.codes[:, 0][:, :, ~box]
    assert torch.equal(kept, plain.codes[:, 0][:, :, ~box])
    copied = gather_pixels(fitted64.model_.codes_, prov.clamp_min(0))
    assert torch.equal(out.codes[:, 0][:, :, box], copied[:, :, box])
    assert bool((gender_edit.memory_side_[prov[:, box]] == 1).all())


def test_edit_with_a_copy_budget(fitted64, gender_edit):
    from lrgmm.core.nn_projection import gather_pixels

    files = fitted64.training_files_[:2]
    out = fitted64.edit(files, gender_edit, alphas=(-1, 1), nn=True, max_share=0.25)
    side = gender_edit.memory_side_
    assert bool((side[out.provenance[:, 0]] == 0).all()) and bool((side[out.provenance[:, 1]] == 1).all())
    for j in range(2):
        assert torch.equal(out.codes[:, j], gather_pixels(fitted64.model_.codes_, out.provenance[:, j]))
    flat = out.provenance.reshape(4, -1)
    assert max(int(torch.bincount(f).max()) for f in flat) <= 64  # floor(0.25 * 256)
    plain = fitted64.edit(files, gender_edit, alphas=(-1, 1), nn=True, max_share=1).provenance.reshape(4, -1)
    assert max(int(torch.bincount(f).max()) for f in plain) > 64  # without it, more from one photo
    assert out.edit["max_share"] == 0.25


def test_bad_input_errors(fitted64, tmp_path):
    with pytest.raises(LabelError, match="unknown attribute 'smile'"):
        AttributeEdit(method="mean_difference").fit(fitted64, attribute="smile")
    with pytest.raises(EditError, match="categories .*child, adult, senior"):
        AttributeEdit(method="mean_difference").fit(fitted64, attribute="age")
    with pytest.raises(EditError, match="at least 1000 per side"):
        AttributeEdit(method="mean_difference", min_examples=1000).fit(fitted64, attribute="gender")
    with pytest.raises(LabelError, match="unknown gender value 'robot'"):
        AttributeEdit(method="mean_difference").fit(fitted64, attribute="gender", positive="robot")
    bad = tmp_path / "labels.csv"
    bad.write_text("name,smile\na.jpg,1\n")
    with pytest.raises(LabelError, match="no 'file' column"):
        AttributeEdit(method="mean_difference").fit(fitted64, attribute="smile", labels_csv=bad)
    with pytest.raises(EditError, match="unknown edit method"):
        AttributeEdit(method="magic").fit(fitted64)
    garbage = tmp_path / "x.edit"
    garbage.write_bytes(b"not a safetensors file")
    with pytest.raises(EditFileError, match="not a readable edit file"):
        load_edit(garbage)


def test_csv_attribute_and_age_sides(fitted64, tmp_path):
    names = [p.split("/")[-1] for p in fitted64.training_files_]
    path = tmp_path / "smile.csv"
    with path.open("w", newline="") as f:
        wr = csv.writer(f)
        wr.writerow(["file", "smile"])
        for i, n in enumerate(names):
            wr.writerow([n, "yes" if i % 2 else "no"])
    e = AttributeEdit(method="mean_difference").fit(fitted64, attribute="smile", labels_csv=path)
    assert (e.negative_, e.positive_) == ("no", "yes") and e.n_positive_ == len(names) // 2
    a = AttributeEdit(method="gaussian_ot", min_examples=4).fit(fitted64, attribute="age", negative="adult", positive="child")
    assert (a.negative_, a.positive_) == ("adult", "child")


@pytest.mark.slow
def test_cli_end_to_end(model64_file, fitted64, faces64_encoded, tmp_path, lrgmm_cache):
    edit_path = tmp_path / "gender.edit"
    rc = main(["edit-fit", str(model64_file), "--attribute", "gender", "--max-epochs", "3", "--quiet", "-o", str(edit_path)])
    assert rc == 0 and edit_path.is_file()
    assert load_edit(edit_path).method == "wasserstein"
    imgs = [str(p) for p in faces64_encoded.paths[:2]]
    out = tmp_path / "out"
    assert main(["edit", str(model64_file), str(edit_path), *imgs, "--alpha", "-1", "1", "-o", str(out), "--quiet"]) == 0
    assert sorted(p.name for p in out.glob("edit_*.png")) == [
        "edit_0000.png", "edit_0000_provenance.png", "edit_0001.png", "edit_0001_provenance.png"]
    s_out = tmp_path / "sampled"
    assert main(["sample", str(model64_file), "-n", "2", "--seed", "0", "--edit", str(edit_path), "--alpha", "1.5",
                 "-o", str(s_out), "--quiet"]) == 0
    assert json.loads((s_out / "edits.json").read_text())["alphas"] == [1.5]
    # Bad input: clear error, exit code 2, nothing written.
    for argv in (
        ["edit-fit", str(model64_file), "--attribute", "smile", "-o", str(tmp_path / "a.edit")],
        ["edit-fit", str(model64_file), "--attribute", "gender", "--min-examples", "999", "-o", str(tmp_path / "a.edit")],
        ["edit-fit", str(tmp_path), "--attribute", "gender", "-o", str(tmp_path / "a.edit")],
    ):
        assert main(argv + ["--quiet"]) == 2
        assert not (tmp_path / "a.edit").exists()
    from lrgmm.pipeline.encoding import EncodedSet
    from lrgmm.pipeline import FacePipeline

    e = faces64_encoded
    sub = EncodedSet(e.latents[:40], e.paths[:40], e.hashes[:40], e.report, e.resolution, e.autoencoder_id)
    other = FacePipeline(autoencoder=fitted64.autoencoder_, n_components=2, progress=False).fit(sub).save(tmp_path / "other.lrgmm")
    bad_out = tmp_path / "bad_out"
    assert main(["edit", str(other), str(edit_path), imgs[0], "-o", str(bad_out), "--quiet"]) == 2
    assert main(["sample", str(other), "-n", "2", "--edit", str(edit_path), "-o", str(bad_out), "--quiet"]) == 2
    assert not bad_out.exists()
