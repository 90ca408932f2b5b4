"""Forgetting photos (``lrgmm forget``, ``FacePipeline.forget``) on the session's 64 faces.

The promise: the new model is the model ``lrgmm fit`` gives on the folder without those photos,
tensor for tensor, and nothing drawn from it copies from them. Tests compare with a fresh fit on
the folder minus the photos (``torch.equal`` on every tensor of the model file), find renamed
copies, refuse unknown photos without writing anything, and check the CLI's exit codes, messages
and record.
"""

from __future__ import annotations

import copy
import hashlib
import inspect
import json
import re
import shutil
from pathlib import Path

import pytest
import torch
from conftest import N_FACES, REAL_DATA, rewrite_model_metadata, utkface_images

from lrgmm import __version__
from lrgmm.defaults import DEFAULTS
from lrgmm.cli import build_parser, main
from lrgmm.errors import FitError, ForgetError, ImageInputError
from lrgmm.pipeline.forget import CHECK_FACES, _memory_holds, photo_hashes
from lrgmm.io.latent_cache import LatentCache
from lrgmm.io.model_file import load_model_file, model_tensors, read_metadata
from lrgmm.pipeline import FacePipeline


def sha(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def link_folder(files, folder: Path) -> Path:
    """A folder of symbolic links to ``files`` (a training folder without copying photos)."""
    folder.mkdir(parents=True)
    for f in files:
        (folder / Path(f).name).symlink_to(f)
    return folder


def assert_same_model(a: FacePipeline, b: FacePipeline) -> None:
    """Every tensor of the model file bit for bit, the settings, and the training photos in order."""
    ta, tb = model_tensors(a.model_), model_tensors(b.model_)
    assert set(ta) == set(tb)
    for name in ta:
        assert ta[name].dtype == tb[name].dtype and torch.equal(ta[name], tb[name]), name
    assert a.model_.get_params() == b.model_.get_params()
    assert a.training_hashes_ == b.training_hashes_
    assert [Path(p).name for p in a.training_files_] == [Path(p).name for p in b.training_files_]


AE = ["--autoencoder", "taef2" if REAL_DATA else "fake"]  # the session's autoencoder, for `lrgmm fit`


def run(capsys, *argv) -> tuple[int, str, str]:
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def assert_clean_error(rc, err, pattern) -> None:
    assert rc == 2, err
    assert err.startswith("error: ") and "Traceback" not in err, err
    assert re.search(pattern, err, re.S), err


# ----------------------------------------------------------------------- the Python API


@pytest.mark.parametrize("drop", [[10], [0, 31, 63]], ids=["one", "first-middle-last"])
def test_forget_equals_a_fresh_fit_without_the_photos(fitted64, ae, faces64_dir, lrgmm_cache, tmp_path, drop):
    files = list(fitted64.training_files_)
    gone = [files[i] for i in drop]
    new = fitted64.forget(gone)

    # The fit `lrgmm fit` runs on the folder without those photos (same K = 4 as fitted64).
    folder = link_folder([f for f in files if f not in gone], tmp_path / "kept")
    fresh = FacePipeline(autoencoder=ae, n_components=4, progress=False).fit(folder)
    assert_same_model(new, fresh)
    # The recorded order minus the forgotten photos is the folder's own listing order.
    assert [Path(p).name for p in new.training_files_] == sorted(p.name for p in folder.iterdir())
    assert new.training_files_ == [f for f in files if f not in gone]

    assert new.model_.codes_.shape[0] == N_FACES - len(drop)
    assert len(fitted64.training_files_) == N_FACES  # the pipeline forgotten from is left alone
    rep = new.forget_report_
    assert [r["training_file"] for r in rep["removed"]] == gone
    assert [r["sha256"] for r in rep["removed"]] == [sha(f) for f in gone]
    assert rep["n_images_before"] == N_FACES and rep["n_images_after"] == N_FACES - len(drop)
    assert rep["latents"] == {"from_cache": N_FACES - len(drop), "encoded": 0}
    assert rep["verification"]["passed"] and rep["verification"]["memory_codes_checked"] == len(drop)


def test_renamed_copy_and_hash_are_found(fitted64, lrgmm_cache, tmp_path):
    target = fitted64.training_files_[5]
    copy = tmp_path / "nobody.bak"  # another name, another extension: the bytes decide
    shutil.copyfile(target, copy)
    by_copy = fitted64.forget(copy, check_faces=0)
    assert sha(target) not in by_copy.training_hashes_
    assert by_copy.forget_report_["removed"] == [{"sha256": sha(target), "training_file": target, "given": [str(copy)]}]
    # The hash alone (a photo whose file is gone), in capitals too: the same model.
    by_hash = fitted64.forget([sha(target).upper()], check_faces=0)
    assert_same_model(by_copy, by_hash)


def test_same_photo_twice_counts_once(fitted64, lrgmm_cache, tmp_path):
    target = fitted64.training_files_[7]
    copy = tmp_path / "copy.jpg"
    shutil.copyfile(target, copy)
    hashes = photo_hashes([target, copy, target, sha(target)])
    assert hashes == {sha(target): [target, str(copy), sha(target)]}
    new = fitted64.forget([target, copy, target], check_faces=0)
    assert new.forget_report_["n_images_after"] == N_FACES - 1
    assert new.forget_report_["removed"][0]["given"] == [target, str(copy)]


def test_unknown_photo_is_refused(fitted64, faces_dir, lrgmm_cache, tmp_path):
    stranger = next(p for p in utkface_images(faces_dir) if sha(p) not in set(fitted64.training_hashes_))
    with pytest.raises(ForgetError, match=r"1 photo\(s\) to forget are not among the model's 64 training photos.*"
                                        + re.escape(str(stranger))):
        fitted64.forget([fitted64.training_files_[0], stranger])
    with pytest.raises(ImageInputError, match="photo to forget does not exist: .*nothing.jpg"):
        fitted64.forget(tmp_path / "nothing.jpg")
    with pytest.raises(ForgetError, match="no photo given"):
        fitted64.forget([])
    # An edited photo is another photo: one changed byte and it is not found.
    edited = tmp_path / "edited.jpg"
    data = bytearray(Path(fitted64.training_files_[0]).read_bytes())
    data[-3] ^= 1
    edited.write_bytes(bytes(data))
    with pytest.raises(ForgetError, match="edited.jpg"):
        fitted64.forget(edited)


def test_too_few_photos_left(fitted64, faces64_dir, lrgmm_cache):
    with pytest.raises(FitError, match="forgetting all 64 training photos leaves nothing to fit"):
        fitted64.forget(faces64_dir)  # a folder: every image in it
    with pytest.raises(FitError, match=r"after forgetting 50 of 64 training photos, the 14 left cannot be fitted.*"
                                       r"cannot fit 4 components"):
        fitted64.forget(fitted64.training_files_[:50])


def test_a_thousand_faces_never_copy_the_forgotten_photo(fitted64, lrgmm_cache):
    target = fitted64.training_files_[20]
    h = sha(target)
    new = fitted64.forget(target)

    def sources(pipe, seed):
        s = pipe.model_.sample(1000, seed=seed)
        # Every latent pixel is the code of the training photo its provenance names, at that
        # position: the map is the whole story of where the face came from.
        mem = pipe.model_.codes_
        n, q, hh, ww = s.codes.shape
        ys, xs = torch.meshgrid(torch.arange(hh), torch.arange(ww), indexing="ij")
        copied = mem[s.provenance, :, ys, xs]  # (n, h, w, q)
        assert torch.equal(copied.permute(0, 3, 1, 2), s.codes)
        return {pipe.training_hashes_[i] for i in torch.unique(s.provenance).tolist()}

    assert h in sources(fitted64, 1)  # the old model does copy from it (so the test can fail)
    for seed in (1, 2):
        assert h not in sources(new, seed)
    # Nor is its code in the new memory (its latent through the new projector).
    z = torch.from_numpy(LatentCache().get([h], autoencoder_id=new.autoencoder_.id, resolution=128)[h])[None]
    code = new.model_.projector_.transform(z).reshape(1, -1)
    assert _memory_holds(new.model_.codes_.reshape(N_FACES - 1, -1), code) == [False]
    old_code = fitted64.model_.projector_.transform(z).reshape(1, -1)
    assert _memory_holds(fitted64.model_.codes_.reshape(N_FACES, -1), old_code) == [True]


def test_uncached_photos_are_encoded_from_their_files(fitted64, faces64_encoded, latent_cache_dir, tmp_path,
                                                      monkeypatch):
    """A cache without two of the kept photos: those two are encoded from the recorded files."""
    monkeypatch.setenv("LRGMM_CACHE_DIR", str(tmp_path / "cache"))
    enc = faces64_encoded
    lacking = {enc.hashes[3], enc.hashes[40]}
    keep = [i for i, h in enumerate(enc.hashes) if h not in lacking]
    LatentCache().put([enc.hashes[i] for i in keep], enc.latents[keep], autoencoder_id=enc.autoencoder_id, resolution=128)
    new = fitted64.forget(fitted64.training_files_[0], check_faces=0)
    assert new.forget_report_["latents"] == {"from_cache": N_FACES - 3, "encoded": 2}
    assert lacking <= LatentCache().known(autoencoder_id=enc.autoencoder_id, resolution=128)  # now cached
    again = fitted64.forget(fitted64.training_files_[0], check_faces=0)
    assert again.forget_report_["latents"] == {"from_cache": N_FACES - 1, "encoded": 0}  # cached by the first
    monkeypatch.setenv("LRGMM_CACHE_DIR", str(latent_cache_dir))  # the latents the model was fitted on
    ref = fitted64.forget(fitted64.training_files_[0], check_faces=0)
    for name, t in model_tensors(new.model_).items():  # encoded again: equal up to the encoder's rounding
        assert torch.allclose(t.double(), model_tensors(ref.model_)[name].double(), rtol=1e-4, atol=1e-4), name


def test_uncached_and_missing_file_is_named(fitted64, faces64_encoded, tmp_path, monkeypatch):
    monkeypatch.setenv("LRGMM_CACHE_DIR", str(tmp_path / "empty-cache"))
    moved = tmp_path / "moved"
    files = [Path(f) for f in fitted64.training_files_]
    pipe = FacePipeline.load(fitted64.save(tmp_path / "m.lrgmm"), autoencoder=fitted64.autoencoder_, progress=False)
    pipe.training_files_ = [str(moved / f.name) for f in files]  # as if the folder had moved
    with pytest.raises(ForgetError, match=r"63 training photo\(s\) to keep are neither in the latent cache nor at "
                                          r"their recorded path: .*moved/" + re.escape(files[1].name)):
        pipe.forget(files[0])


def test_latents_that_are_not_the_models_are_refused(fitted64, faces64_encoded, tmp_path, monkeypatch):
    """A cache whose latents do not give the model's codes (another model fitted on them)."""
    monkeypatch.setenv("LRGMM_CACHE_DIR", str(tmp_path / "cache"))
    enc = faces64_encoded
    LatentCache().put(enc.hashes, enc.latents.flip(0), autoencoder_id=enc.autoencoder_id, resolution=128)
    with pytest.raises(ForgetError, match="do not give the model's codes"):
        fitted64.forget(fitted64.training_files_[0])


def test_a_copy_budget_the_new_model_cannot_meet(fitted64, lrgmm_cache):
    """The model's budget is kept (as `lrgmm fit --max-share` keeps it); where its smallest
    cluster cannot meet it, the faces are checked under the even split (a default budget never
    fails), and none names the forgotten photo."""
    import warnings

    pipe = copy.copy(fitted64)
    pipe.model_ = copy.copy(fitted64.model_)
    pipe.model_.max_share = 1 / 256  # one latent pixel per photo: no cluster of 64 photos can meet it
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=r"(?i).*(budget|max.share)", category=UserWarning)
        new = pipe.forget(fitted64.training_files_[0], check_faces=32)
    assert new.model_.max_share == 1 / 256 and fitted64.model_.max_share == DEFAULTS["max_share"]
    v = new.forget_report_["verification"]
    assert v["passed"] and v["faces_drawn"] == 32 and "note" not in v


def test_memory_holds_finds_rows_to_rounding():
    g = torch.Generator().manual_seed(0)
    memory = torch.randn(300, 64, generator=g)
    rows = torch.stack([memory[5], memory[299] * (1 + 1e-7), memory[7] + 1e-2, torch.randn(64, generator=g)])
    assert _memory_holds(memory, rows, chunk=100) == [True, True, False, False]
    assert _memory_holds(memory[:0], rows) == [False] * 4


# --------------------------------------------------------------------------- model files


def test_requested_k_is_recorded_and_used(fitted64, ae, faces64_encoded, lrgmm_cache, tmp_path):
    """K from N (None) is recorded as asked; a file without the field refits with its fitted K."""
    auto = FacePipeline(autoencoder=ae, progress=False).fit(faces64_encoded)  # K = round(64 / 128) -> 1
    path = auto.save(tmp_path / "auto.lrgmm")
    meta = read_metadata(path)
    assert meta["fit"]["n_components_requested"] is None and meta["hyperparameters"]["n_components"] == 1
    assert load_model_file(path)[0].n_components is None
    assert read_metadata(fitted64.save(tmp_path / "k4.lrgmm"))["fit"]["n_components_requested"] == 4

    def drop(m):
        del m["fit"]["n_components_requested"]
        return m

    old = rewrite_model_metadata(path, tmp_path / "old.lrgmm", drop)
    assert load_model_file(old)[0].n_components == 1  # the K it holds
    new = FacePipeline.load(old, autoencoder=ae, progress=False).forget(fitted64.training_files_[0], check_faces=0)
    assert new.forget_report_["hyperparameters"]["n_components"] == 1


# ----------------------------------------------------------------------- the command line


@pytest.fixture
def cli_setup(faces64, faces64_encoded, lrgmm_cache, tmp_path, monkeypatch):
    """A working folder with photos/ (links to the 64 faces) and `lrgmm fit photos/ -o faces.lrgmm`
    with the default settings (K from N), run there: recorded paths are relative, as for a user."""
    monkeypatch.chdir(tmp_path)
    link_folder(faces64, tmp_path / "photos")
    assert main(["fit", "photos", "-o", "faces.lrgmm", "--quiet", *AE]) == 0
    return tmp_path


def test_cli_forget_a_folder_of_renamed_copies(cli_setup, faces64, capsys):
    names = sorted(p.name for p in faces64)
    person = cli_setup / "person"
    person.mkdir()
    for i, k in enumerate((3, 30, 60)):
        shutil.copyfile(cli_setup / "photos" / names[k], person / f"me_{i}.png")
    capsys.readouterr()
    rc, out, err = run(capsys, "forget", "faces.lrgmm", "person", "-o", "new.lrgmm", "--quiet")
    assert rc == 0, err
    assert f"forgot photos/{names[3]} (given as person/me_0.png)" in out
    assert "refitted on 61 of 64 training photos with the model's own settings (61 latents from the cache" in out
    assert "256 faces drawn (seed 0) copy no latent pixel from them" in out
    assert "record written to new.lrgmm.forget.json" in out
    assert "note: faces.lrgmm still holds the forgotten photos" in out

    # The model `lrgmm fit` gives on the folder without them, file names included.
    for k in (3, 30, 60):
        (cli_setup / "photos" / names[k]).unlink()
    assert main(["fit", "photos", "-o", "fresh.lrgmm", "--quiet", *AE]) == 0
    new, new_meta = load_model_file("new.lrgmm")
    fresh, fresh_meta = load_model_file("fresh.lrgmm")
    for name, t in model_tensors(new).items():
        assert torch.equal(t, model_tensors(fresh)[name]), name
    assert new_meta["training_files"] == fresh_meta["training_files"]
    assert new_meta["hyperparameters"] == fresh_meta["hyperparameters"]

    # The record.
    rec = json.loads(Path("new.lrgmm.forget.json").read_text())
    assert rec["format"] == "lrgmm-forget-record" and rec["lrgmm_version"] == __version__
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d{4}", rec["time"])
    assert rec["model"] == {"path": "faces.lrgmm", "sha256": sha("faces.lrgmm"), "n_images": 64}
    assert rec["new_model"] == {"path": "new.lrgmm", "sha256": sha("new.lrgmm"), "n_images": 61}
    assert rec["n_removed"] == 3 and rec["n_images_before"] == 64 and rec["n_images_after"] == 61
    assert rec["removed"] == [
        {"sha256": sha(person / f"me_{i}.png"), "training_file": f"photos/{names[k]}", "given": [f"person/me_{i}.png"]}
        for i, k in enumerate((3, 30, 60))
    ]
    assert rec["hyperparameters"]["n_components"] is None and rec["hyperparameters"]["random_state"] == 0
    assert rec["verification"] == {"passed": True, "absent_from_training_files": True, "memory_codes_checked": 3,
                                   "memory_holds_forgotten": 0, "faces_drawn": 256, "faces_seed": 0,
                                   "faces_naming_forgotten": 0}
    assert sorted(p.name for p in cli_setup.iterdir() if p.name.startswith(".")) == []  # no temporary file left


def test_cli_forget_in_place(cli_setup, faces64, capsys):
    photo = cli_setup / "photos" / sorted(p.name for p in faces64)[0]
    old = sha("faces.lrgmm")
    rc, out, err = run(capsys, "forget", "faces.lrgmm", photo, "-o", "faces.lrgmm", "--quiet", "--check-faces", "0")
    assert rc == 0, err
    assert "still holds" not in out and "faces drawn" not in out
    rec = json.loads(Path("faces.lrgmm.forget.json").read_text())
    assert rec["model"]["sha256"] == old != rec["new_model"]["sha256"] == sha("faces.lrgmm")
    assert read_metadata("faces.lrgmm")["fit"]["n_images"] == 63
    assert rec["verification"]["faces_drawn"] == 0
    # Forgotten already: a second time it is not in the model.
    rc, out, err = run(capsys, "forget", "faces.lrgmm", photo, "-o", "again.lrgmm")
    assert_clean_error(rc, err, r"not among the model's 63 training photos.*" + re.escape(str(photo)))


def test_cli_errors_write_nothing(cli_setup, faces64, faces_dir, capsys):
    before = sorted(p.name for p in cli_setup.iterdir())
    known = cli_setup / "photos" / faces64[0].name
    hashes = {sha(p) for p in faces64}
    stranger = next(p for p in utkface_images(faces_dir) if sha(p) not in hashes)
    cases = [
        (["faces.lrgmm", known, stranger, "-o", "new.lrgmm"], re.escape(str(stranger)) + ".*nothing was written"),
        (["faces.lrgmm", "photos", "-o", "new.lrgmm"], "forgetting all 64 training photos leaves nothing to fit"),
        (["faces.lrgmm", "nothing.jpg", "-o", "new.lrgmm"], "photo to forget does not exist: nothing.jpg"),
        (["faces.lrgmm", known, "-o", "photos"], "output path photos is a folder"),
        (["faces.lrgmm", known, "-o", "new.lrgmm", "--record", "photos"], "output path photos is a folder"),
        (["faces.lrgmm", known, "-o", "new.lrgmm", "--record", "faces.lrgmm"], "would overwrite a model file"),
        (["missing.lrgmm", known, "-o", "new.lrgmm"], "model file missing.lrgmm does not exist"),
    ]
    for argv, pattern in cases:
        rc, out, err = run(capsys, "forget", *argv, "--quiet")
        assert_clean_error(rc, err, pattern)
        assert sorted(p.name for p in cli_setup.iterdir()) == before, argv
    # K from N with 3 photos left is K = 1: fitted (no "too many components" with the default K).
    rc, out, err = run(capsys, "forget", "faces.lrgmm", *[cli_setup / "photos" / p.name for p in faces64[3:]],
                       "-o", "three.lrgmm", "--quiet")
    assert rc == 0, err
    assert read_metadata("three.lrgmm")["fit"]["n_images"] == 3
    assert out.count("\nforgot ") == 9 and "... and 51 more (all listed in the record)" in out


def test_cli_forget_parses():
    args = build_parser().parse_args(["forget", "m.lrgmm", "a.jpg", "b/", "-o", "n.lrgmm"])
    assert args.photos == ["a.jpg", "b/"] and args.output == "n.lrgmm" and args.record is None
    assert args.check_faces == 256 and args.seed == 0
    api = inspect.signature(FacePipeline.forget).parameters
    assert (api["check_faces"].default, api["seed"].default) == (args.check_faces, args.seed) == (CHECK_FACES, 0)
    for bad in (["--check-faces", "-1"], ["--check-faces", "x"], ["--check-seed", "-1"], ["-o", ""]):
        with pytest.raises(SystemExit):
            build_parser().parse_args(["forget", "m.lrgmm", "a.jpg", "-o", "n.lrgmm", *bad])
    with pytest.raises(SystemExit):
        build_parser().parse_args(["forget", "m.lrgmm", "-o", "n.lrgmm"])  # no photo


def test_file_hashes_are_the_models(fitted64):
    """The hash of a file is the one `fit` recorded for it."""
    assert photo_hashes(fitted64.training_files_[:3]) == {
        h: [f] for f, h in zip(fitted64.training_files_[:3], fitted64.training_hashes_[:3])
    }
