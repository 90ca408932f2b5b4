"""The ``lrgmm`` command line end to end on 64 faces (real faces through TAEF2 with the shared
folder, synthetic faces through the fake autoencoder without: ``--autoencoder`` says which), its
errors, and its defaults.

Commands run in-process through ``lrgmm.cli.main`` (fast); the installed console script is run
once through a subprocess to prove the entry point works.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import inspect
import io
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import N_FACES, REAL_DATA, TAEF2_WEIGHTS_DIR, as_taef2_model, rewrite_model_metadata, utkface_images
from PIL import Image

from lrgmm import __version__, cli
from lrgmm.io import weights
from lrgmm.cli import build_parser, main
from lrgmm.demo import run_demo
from lrgmm.errors import FitError
from lrgmm.io import tensor_file  # model files are written through it
from lrgmm.io.model_file import read_metadata
from lrgmm.pipeline import FacePipeline


# The session's autoencoder, by name: commands that fit take it (the default, taef2, with the
# shared folder; the weightless fake one without).
AE = ["--autoencoder", "taef2" if REAL_DATA else "fake"]


def run(capsys, *argv) -> tuple[int, str, str]:
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def assert_clean_error(rc: int, err: str, pattern: str = "", code: int = 2) -> None:
    """Exit code, one 'error:' message, no traceback."""
    assert rc == code
    assert err.startswith("error: ") or "\nerror: " in err, err
    assert "Traceback" not in err
    if pattern:
        assert re.search(pattern, err, re.S), err


@pytest.fixture(scope="module")
def cli_model(faces64_dir, faces64_encoded, latent_cache_dir, tmp_path_factory):
    """``lrgmm fit <64 faces> -o m.lrgmm`` run once; (model path, stdout)."""
    path = tmp_path_factory.mktemp("cli") / "m.lrgmm"
    out, err = io.StringIO(), io.StringIO()
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        mp.setenv("LRGMM_CACHE_DIR", str(latent_cache_dir))
        rc = main(["fit", str(faces64_dir), "-o", str(path), "--quiet", *AE])
    assert rc == 0, err.getvalue()
    return path, out.getvalue()


def _sample(capsys, model, out_dir, *extra):
    rc, out, err = run(capsys, "sample", model, "-o", out_dir, "--quiet", *extra)
    assert rc == 0, err
    return out


# ------------------------------------------------------------------------------ end to end


def test_fit(cli_model, faces64_dir):
    path, out = cli_model
    assert f"{N_FACES} of {N_FACES} image file(s) used" in out
    assert f"model written to {path}" in out
    # the summary is the file's: a fresh fit keeps the training latents it copies (format 3)
    assert f"+ the training latents it copies, {N_FACES * 8192:,}" in out and "format 2" not in out
    meta = read_metadata(path)
    assert meta["fit"]["n_images"] == N_FACES
    assert meta["hyperparameters"]["n_components"] == 1  # K from N = 64 (few-shot default)
    assert meta["hyperparameters"]["n_channels"] == 16
    assert [f["path"] for f in meta["training_files"]] == sorted(str(p) for p in faces64_dir.iterdir())
    assert sorted(p.name for p in path.parent.iterdir()) == ["m.lrgmm"]  # no temp file left


def test_sample_writes_faces_and_provenance(cli_model, tmp_path, capsys, lrgmm_cache):
    model, _ = cli_model
    out = _sample(capsys, model, tmp_path / "out", "-n", 8, "--seed", 1)
    assert "8 faces (seed 1) written" in out
    d = tmp_path / "out"
    for i in range(8):
        with Image.open(d / f"face_{i:04d}.png") as im:
            assert im.format == "PNG" and im.size == (128, 128) and im.mode == "RGB"
            im.load()
        with Image.open(d / f"face_{i:04d}_provenance.png") as im:
            assert im.size == (128, 128)
    assert len(list(d.glob("face_*_provenance.json"))) == 8
    assert len(list(d.glob("face_????.png"))) == 8
    for grid in ("grid.png", "provenance_grid.png"):
        with Image.open(d / grid) as im:
            assert im.size == (2 + 3 * 130, 2 + 3 * 130)  # 8 tiles in 3x3

    meta = read_metadata(model)
    sha_of = {f["path"]: f["sha256"] for f in meta["training_files"]}
    for i in range(8):
        rec = json.loads((d / f"face_{i:04d}_provenance.json").read_text())
        srcs = rec["sources"]
        assert sum(s["share"] for s in srcs) == pytest.approx(1.0, abs=1e-5)
        # The sources are real training files, named with their index in the model...
        for s in srcs:
            assert Path(s["file"]).is_file()
            assert meta["training_files"][s["index"]]["path"] == s["file"]
            assert hashlib.sha256(Path(s["file"]).read_bytes()).hexdigest() == sha_of[s["file"]]
        # ... and the map says the same: its indices and their pixel counts.
        flat = [j for row in rec["map"] for j in row]
        assert len(flat) == 256
        assert {s["index"] for s in srcs} == set(flat)
        for s in srcs:
            assert s["share"] == pytest.approx(flat.count(s["index"]) / 256, abs=1e-6)
        assert rec["component"] == 0  # K = 1

    # Same model, same seed: byte-identical files.
    _sample(capsys, model, tmp_path / "again", "-n", 8, "--seed", 1)
    for i in range(8):
        for suffix in (".png", "_provenance.png", "_provenance.json"):
            name = f"face_{i:04d}{suffix}"
            assert (d / name).read_bytes() == (tmp_path / "again" / name).read_bytes(), name

    # Another seed: other faces.
    _sample(capsys, model, tmp_path / "other", "-n", 2, "--seed", 2)
    assert (d / "face_0000.png").read_bytes() != (tmp_path / "other" / "face_0000.png").read_bytes()


def _largest_shares(folder: Path, n: int) -> list[float]:
    """Each face's largest share from one training photo, from its provenance JSON (the map
    itself, checked against the recorded value)."""
    shares = []
    for i in range(n):
        rec = json.loads((folder / f"face_{i:04d}_provenance.json").read_text())
        flat = [j for row in rec["map"] for j in row]
        largest = max(flat.count(j) for j in set(flat)) / len(flat)
        assert rec["largest_share"] == pytest.approx(largest, abs=1e-6)  # rounded to 6 decimals, as every share
        shares.append(largest)
    return shares


def test_sample_with_a_copy_budget(cli_model, tmp_path, capsys, lrgmm_cache):
    model, _ = cli_model
    _sample(capsys, model, tmp_path / "plain", "-n", 12, "--seed", 1, "--max-share", "1")  # the default budget off
    assert max(_largest_shares(tmp_path / "plain", 12)) > 0.25  # without a budget some face takes more
    out = _sample(capsys, model, tmp_path / "budget", "-n", 12, "--seed", 1, "--max-share", "0.25")
    assert "12 faces (seed 1) written" in out
    assert max(_largest_shares(tmp_path / "budget", 12)) <= 0.25
    assert json.loads((tmp_path / "budget" / "samples.json").read_text())["settings"]["max_share"] == 0.25
    assert json.loads((tmp_path / "plain" / "samples.json").read_text())["settings"]["max_share"] is None
    # A budget the 64 training photos cannot meet: 256 positions need 4 per photo at least.
    rc, _, err = run(capsys, "sample", model, "-o", tmp_path / "o", "-n", 1, "--quiet", "--max-share", "0.01")
    assert_clean_error(rc, err, r"max_share 0\.01 .* has only 64 training photo.*use max_share >= 0\.0157")
    assert not (tmp_path / "o").exists()
    rc, _, err = run(capsys, "sample", model, "-o", tmp_path / "o", "-n", 1, "--quiet", "--max-share", "0.25",
                     "--method", "normal")
    assert_clean_error(rc, err, r"--max-share works with the LR-GMM-NN method, not --method normal")


def test_fit_with_a_copy_budget_stores_the_default(faces64_dir, cli_model, tmp_path, capsys, lrgmm_cache):
    rc, out, err = _fit(capsys, faces64_dir, tmp_path / "b.lrgmm", "--max-share", "0.2")
    assert rc == 0, err
    assert "copy budget max_share = 0.2" in out
    assert read_metadata(tmp_path / "b.lrgmm")["hyperparameters"]["max_share"] == 0.2
    assert "copy budget max_share = 0.2" in run(capsys, "info", cli_model[0])[1]  # the default
    _sample(capsys, tmp_path / "b.lrgmm", tmp_path / "s", "-n", 6, "--seed", 3)
    assert max(_largest_shares(tmp_path / "s", 6)) <= 0.2
    assert json.loads((tmp_path / "s" / "samples.json").read_text())["settings"]["max_share"] == 0.2
    _sample(capsys, tmp_path / "b.lrgmm", tmp_path / "off", "-n", 6, "--seed", 3, "--max-share", "1")
    assert json.loads((tmp_path / "off" / "samples.json").read_text())["settings"]["max_share"] is None
    with pytest.raises(SystemExit) as e:
        _fit(capsys, faces64_dir, tmp_path / "c.lrgmm", "--max-share", "0")
    assert e.value.code == 2 and "argument --max-share: must be a number in (0, 1]" in capsys.readouterr().err


def test_spread_in_fit_and_sample(faces64_dir, cli_model, tmp_path, capsys, lrgmm_cache):
    model, _ = cli_model
    default = read_metadata(model)["hyperparameters"]["spread"]
    assert f"psi = {default:g}" in run(capsys, "info", model)[1]
    _sample(capsys, model, tmp_path / "wide", "-n", 4, "--seed", 1, "--spread", "2", "--no-nn")
    _sample(capsys, model, tmp_path / "same", "-n", 4, "--seed", 1, "--no-nn")
    wide = json.loads((tmp_path / "wide" / "samples.json").read_text())["settings"]
    assert wide["spread"] == 2.0
    assert json.loads((tmp_path / "same" / "samples.json").read_text())["settings"]["spread"] == 1.0  # no NN step
    assert (tmp_path / "wide" / "face_0000.png").read_bytes() != (tmp_path / "same" / "face_0000.png").read_bytes()
    rc, out, err = _fit(capsys, faces64_dir, tmp_path / "w.lrgmm", "--psi", "1.25")
    assert rc == 0, err
    assert read_metadata(tmp_path / "w.lrgmm")["hyperparameters"]["spread"] == 1.25
    for bad in ("0", "-1", "nan", "wide"):
        with pytest.raises(SystemExit) as e:
            run(capsys, "sample", model, "-o", tmp_path / "o", "-n", 1, "--spread", bad)
        assert e.value.code == 2 and "argument --spread/--psi: must be a finite number > 0" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
    rc, _, err = run(capsys, "sample", model, "-o", tmp_path / "o", "-n", 1, "--quiet", "--spread", "2",
                     "--method", "normal")
    assert_clean_error(rc, err, r"--spread works with the LR-GMM methods \(lrgmm-nn, lrgmm\), not --method normal")


def test_eval_passes_the_copy_budget(tmp_path, capsys, monkeypatch):
    import functools

    import lrgmm.evaluation

    seen = []

    class Result:
        def table(self):
            return "table"

    @functools.wraps(lrgmm.evaluation.evaluate)  # the parser reads its defaults from the signature
    def fake(generator, real, **kw):
        seen.append(kw["generate_kwargs"])
        return Result()

    monkeypatch.setattr(lrgmm.evaluation, "evaluate", fake)
    for extra, expected in ((["--max-share", "0.2"], {"max_share": 0.2}), ([], None), (["--no-nn"], {"nn": False}),
                            (["--no-nn", "--max-share", "0.3"], {"nn": False, "max_share": 0.3})):
        rc, out, err = run(capsys, "eval", tmp_path / "m.lrgmm", "--real", tmp_path, "-n", 2, "--quiet", *extra)
        assert rc == 0 and out.strip() == "table", err
        assert seen.pop() == expected, extra


def test_sample_without_nn(cli_model, tmp_path, capsys, lrgmm_cache):
    model, _ = cli_model
    out = _sample(capsys, model, tmp_path / "plain", "-n", 3, "--seed", 4, "--no-nn")
    assert "provenance" not in out
    names = sorted(p.name for p in (tmp_path / "plain").iterdir())
    assert names == ["face_0000.png", "face_0001.png", "face_0002.png", "grid.png", "samples.json"]
    summary = json.loads((tmp_path / "plain" / "samples.json").read_text())
    assert summary["seed"] == 4 and summary["settings"]["nn"] is False


def test_sample_with_a_baseline_method(cli_model, tmp_path, capsys, lrgmm_cache):
    model, _ = cli_model
    _sample(capsys, model, tmp_path / "lp", "-n", 2, "--seed", 4, "--method", "latentpatch")
    summary = json.loads((tmp_path / "lp" / "samples.json").read_text())
    assert summary["settings"]["method"] == "latentpatch"
    record = json.loads((tmp_path / "lp" / "face_0000_provenance.json").read_text())
    assert record["sources"][0]["file"] and record["distinct_training_images"] >= 1  # copying baselines have provenance
    _sample(capsys, model, tmp_path / "g", "-n", 2, "--seed", 4, "--method", "gaussian")
    assert not list((tmp_path / "g").glob("*_provenance.png"))
    again = tmp_path / "g2"
    _sample(capsys, model, again, "-n", 2, "--seed", 4, "--method", "gaussian")
    assert (again / "face_0001.png").read_bytes() == (tmp_path / "g" / "face_0001.png").read_bytes()


def test_sample_without_seed_prints_it(cli_model, tmp_path, capsys, lrgmm_cache):
    model, _ = cli_model
    out = _sample(capsys, model, tmp_path / "a", "-n", 1)
    seed = int(re.search(r"\(seed (\d+)\)", out).group(1))
    _sample(capsys, model, tmp_path / "b", "-n", 1, "--seed", seed)
    assert (tmp_path / "a" / "face_0000.png").read_bytes() == (tmp_path / "b" / "face_0000.png").read_bytes()


def test_info(cli_model, capsys, lrgmm_cache):
    model, _ = cli_model
    meta = read_metadata(model)
    rc, out, err = run(capsys, "info", model)
    assert rc == 0, err
    counts = meta["parameter_counts"]
    assert "K = 1," in out and "d0 = 4096" in out
    assert "lambda = 1," in out and "(from K)" not in out  # the default: lambda 1
    assert "q = 16 of 32 channels" in out
    assert f"d_k = {meta['fit']['ranks']}" in out
    assert meta["fit"]["ranks"] == [N_FACES - 1]  # floor(1 * 1 * 4096) capped at N - 1
    for key in ("projector", "mixture", "nn_memory"):
        assert f"{counts[key]:,}" in out
    assert counts["nn_memory"] == N_FACES * 4096
    assert f"+ the training latents it copies, {N_FACES * 8192:,} (N x 32 x 16 x 16)" in out
    assert f"training images  {N_FACES}" in out
    # One line per component: weight, eq. 4's d_k, the density's rank, noise variance, faces.
    fit = meta["fit"]
    assert "components         k  weight  d_k  density rank  noise variance  training faces" in out
    assert f"  0  {fit['weights'][0]:.4f}  {fit['ranks'][0]:>3}  {fit['density_ranks'][0]:>12}" in out
    assert fit["component_counts"] == [N_FACES] and f"{N_FACES:>14}" in out
    assert "100.0% of training faces assigned with responsibility 1" in out

    rc, out, err = run(capsys, "info", "--json", model)
    assert rc == 0, err
    parsed = json.loads(out)
    assert parsed["format_version"] == 3 and parsed["parameter_counts"] == counts
    assert "training_files" not in parsed
    rc, out, _ = run(capsys, "info", "--json", "--files", model)
    assert len(json.loads(out)["training_files"]) == N_FACES

    rc, out, _ = run(capsys, "info", "--files", model)
    assert rc == 0 and meta["training_files"][5]["path"] in out


def test_console_script(cli_model, tmp_path, capsys, lrgmm_cache):
    """The installed ``lrgmm`` entry point: version, a real command (whose faces are
    byte-identical to an in-process run with the same seed), and a clean error."""
    exe = shutil.which("lrgmm", path=str(Path(sys.executable).parent)) or shutil.which("lrgmm")
    assert exe, "the lrgmm console script is not installed"
    env = dict(os.environ)  # LRGMM_CACHE_DIR points at the session cache
    r = subprocess.run([exe, "--version"], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == f"lrgmm {__version__}"
    r = subprocess.run([exe, "sample", str(cli_model[0]), "-n", "2", "--seed", "5", "-o", str(tmp_path / "sub"), "--quiet"],
                       capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "2 faces (seed 5) written" in r.stdout
    _sample(capsys, cli_model[0], tmp_path / "inproc", "-n", 2, "--seed", 5)
    for name in ("face_0000.png", "face_0001.png", "face_0001_provenance.json"):
        assert (tmp_path / "sub" / name).read_bytes() == (tmp_path / "inproc" / name).read_bytes(), name
    r = subprocess.run([exe, "sample", str(tmp_path / "none.lrgmm"), "-o", str(tmp_path / "o")],
                       capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 2 and r.stderr.startswith("error: ") and "Traceback" not in r.stderr
    assert not (tmp_path / "o").exists()


# ----------------------------------------------------------------------- model file errors


def _truncated(src, dst):
    dst.write_bytes(src.read_bytes()[: src.stat().st_size // 2])


def _garbage(src, dst):
    dst.write_bytes(os.urandom(3000))


def _newer(src, dst):
    rewrite_model_metadata(src, dst, lambda m: {**m, "format_version": 999})


def _other_ae(src, dst):
    def change(m):
        m = copy.deepcopy(m)
        m["autoencoder"]["weights_sha256"] = "ab" * 32
        m["autoencoder"]["id"] = "taef2:abababababababab"
        return m

    rewrite_model_metadata(src, dst, change)


def _unknown_ae(src, dst):
    rewrite_model_metadata(src, dst, lambda m: {**m, "autoencoder": {"name": "vqgan", "id": "vqgan:00", "weights_sha256": "00"}})


def _missing(src, dst):
    pass


BAD_MODELS = {
    "truncated": (_truncated, r"not a readable lrgmm model file \(truncated or corrupt"),
    "garbage": (_garbage, "not a readable lrgmm model file"),
    "newer": (_newer, r"format version 999, newer than this lrgmm reads \(3\)"),
    "other-weights": (_other_ae, r"fitted with autoencoder 'taef2:abababababababab'.*same autoencoder weights"),
    "other-backend": (_unknown_ae, r"fitted with autoencoder 'vqgan', which is not available"),
    "missing": (_missing, r"does not exist; create one with `lrgmm fit"),
}


@pytest.mark.parametrize("kind", list(BAD_MODELS))
def test_bad_model_file(kind, cli_model, tmp_path, capsys, lrgmm_cache):
    make, pattern = BAD_MODELS[kind]
    bad = tmp_path / "bad.lrgmm"
    make(cli_model[0], bad)
    rc, out, err = run(capsys, "sample", bad, "-n", 2, "-o", tmp_path / "out", "--quiet")
    assert_clean_error(rc, err, pattern)
    assert not (tmp_path / "out").exists()  # nothing written
    rc, out, err = run(capsys, "info", bad)
    if kind in ("other-weights", "other-backend"):
        # `info` reads the metadata only: it describes a model made for other weights (without
        # needing them) and names the autoencoder it needs.
        assert rc == 0
        recorded = "taef2:abababababababab" if kind == "other-weights" else "vqgan:00"
        assert f"autoencoder      {recorded}" in out
        return
    assert_clean_error(rc, err, pattern)
    if kind in ("truncated", "garbage", "newer", "missing"):
        rc, out, err = run(capsys, "info", "--json", bad)
        assert_clean_error(rc, err, pattern)
        assert out == ""


# ------------------------------------------------------------------------- bad fit inputs


def _folder(tmp_path, faces, n, name="in") -> Path:
    d = tmp_path / name
    d.mkdir()
    for p in faces[:n]:
        shutil.copyfile(p, d / p.name)
    return d


def _fit(capsys, src, out_file, *extra):
    return run(capsys, "fit", src, "-o", out_file, "--quiet", *AE, *extra)


def _held_out(faces_dir: Path, train: list[Path], n: int = 12) -> list[Path]:
    """n faces of the folder that are not training faces (every 97th of the shared folder)."""
    paths = utkface_images(faces_dir)
    names = {p.name for p in train}
    return [p for p in paths[1 :: 97 if len(paths) > 97 * 2 * n else 1] if p.name not in names][:n]


@pytest.fixture
def demo_uses_ae(ae, monkeypatch):
    """`lrgmm demo` fits with the default autoencoder; without the shared folder, the fake one."""
    if ae.name != "taef2":
        import functools

        import lrgmm.demo

        monkeypatch.setattr(lrgmm.demo, "FacePipeline", functools.partial(FacePipeline, autoencoder=ae))


def test_fit_empty_folder(tmp_path, capsys, lrgmm_cache):
    (tmp_path / "empty").mkdir()
    rc, _, err = _fit(capsys, tmp_path / "empty", tmp_path / "m.lrgmm")
    assert_clean_error(rc, err, r"no image files found in .*empty")
    assert not (tmp_path / "m.lrgmm").exists()


def test_fit_folder_of_non_images(tmp_path, capsys, lrgmm_cache):
    d = tmp_path / "docs"
    d.mkdir()
    (d / "a.txt").write_text("x")
    (d / "b.pdf").write_bytes(b"%PDF-1.4")
    rc, _, err = _fit(capsys, d, tmp_path / "m.lrgmm")
    assert_clean_error(rc, err, r"no image files found .*2 other file\(s\) ignored.*accepted extensions")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["docs"]


def test_fit_missing_input_path(tmp_path, capsys, lrgmm_cache):
    rc, _, err = _fit(capsys, tmp_path / "nope", tmp_path / "m.lrgmm")
    assert_clean_error(rc, err, r"input path does not exist: .*nope")


def test_fit_reports_corrupt_small_and_duplicate_images(faces64, tmp_path, capsys, lrgmm_cache):
    d = _folder(tmp_path, faces64, 6)
    data = faces64[6].read_bytes()
    (d / "broken.jpg").write_bytes(data[: len(data) // 2])
    shutil.copyfile(faces64[0], d / "copy.jpg")
    with Image.open(faces64[7]) as im:
        im.convert("RGB").resize((50, 50)).save(d / "tiny.png")
    rc, out, err = _fit(capsys, d, tmp_path / "m.lrgmm")
    assert rc == 0, err
    assert "7 of 9 image file(s) used" in out
    assert "skipped: 1" in out and "broken.jpg: corrupt or truncated image data" in out
    assert "duplicates (kept once): 1" in out and f"copy.jpg (same as {d / faces64[0].name})" in out
    assert "smaller than 128px, upsampled" in out and "tiny.png (50x50)" in out
    meta = read_metadata(tmp_path / "m.lrgmm")
    used = [Path(f["path"]).name for f in meta["training_files"]]
    assert len(used) == 7 and "broken.jpg" not in used and "copy.jpg" not in used and "tiny.png" in used


def test_fit_output_is_a_folder(faces64, tmp_path, capsys, lrgmm_cache):
    d = _folder(tmp_path, faces64, 4)
    target = tmp_path / "out"
    target.mkdir()
    (target / "keep.txt").write_text("mine")
    rc, _, err = _fit(capsys, d, target)
    assert_clean_error(rc, err, r"out is a folder, not a regular file")  # refused before encoding
    assert sorted(p.name for p in target.iterdir()) == ["keep.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in", "out"]  # no temp file beside it


def test_fit_fewer_images_than_components(faces64, tmp_path, capsys, lrgmm_cache):
    d = _folder(tmp_path, faces64, 5)
    rc, _, err = _fit(capsys, d, tmp_path / "m.lrgmm", "-K", 8)
    assert_clean_error(rc, err, r"5 training codes cannot fit 8 components.*n_components <= 1")
    assert not (tmp_path / "m.lrgmm").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]


def test_fit_missing_weights(faces64, tmp_path, capsys, monkeypatch):
    d = _folder(tmp_path, faces64, 3)
    monkeypatch.delenv(weights.ENV_WEIGHTS, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("LRGMM_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(weights, "_shared_search_starts", lambda: [tmp_path / "nowhere"])
    rc, _, err = run(capsys, "fit", d, "-o", tmp_path / "out" / "m.lrgmm", "--quiet")  # the default: taef2
    assert_clean_error(rc, err, r"cannot find the taef2 weight file taef2_encoder\.pth.*`lrgmm weights download taef2`")
    assert not (tmp_path / "out").exists()


def test_info_needs_no_weights(cli_model, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv(weights.ENV_WEIGHTS, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("LRGMM_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(weights, "_shared_search_starts", lambda: [tmp_path / "nowhere"])
    rc, out, err = run(capsys, "info", cli_model[0], "--files")
    assert rc == 0, err
    assert "training images  64" in out and out.count("sha256 ") == 64
    # Sampling a TAEF2 model does need them, and says so.
    taef2_model = as_taef2_model(cli_model[0], tmp_path / "taef2.lrgmm")
    rc, _, err = run(capsys, "sample", taef2_model, "-n", 1, "-o", tmp_path / "o", "--quiet")
    assert_clean_error(rc, err, r"`lrgmm weights download taef2`")


def test_fit_weights_with_wrong_hash(faces64, tmp_path, capsys, monkeypatch, lrgmm_cache):
    d = _folder(tmp_path, faces64, 3)
    w = tmp_path / "w"
    w.mkdir()
    for name in ("taef2_encoder.pth", "taef2_decoder.pth"):
        if not (TAEF2_WEIGHTS_DIR / name).is_file():
            pytest.skip("real TAEF2 weights not found")
        shutil.copyfile(TAEF2_WEIGHTS_DIR / name, w / name)
    with open(w / "taef2_decoder.pth", "ab") as f:
        f.write(b"\0")
    monkeypatch.setenv(weights.ENV_WEIGHTS, str(w))
    rc, _, err = run(capsys, "fit", d, "-o", tmp_path / "m.lrgmm", "--quiet")  # the default: taef2
    assert_clean_error(rc, err, r"taef2_decoder\.pth has the wrong sha256.*lrgmm weights download taef2")
    assert not (tmp_path / "m.lrgmm").exists()


def test_fit_save_failure_leaves_nothing(faces64, tmp_path, capsys, monkeypatch, lrgmm_cache):
    d = _folder(tmp_path, faces64, 4)
    out_dir = tmp_path / "models"
    out_dir.mkdir()

    def broken(tensors, filename, metadata=None):
        Path(filename).write_bytes(b"\0" * 512)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(tensor_file, "save_file", broken)
    rc, _, err = _fit(capsys, d, out_dir / "m.lrgmm")
    assert_clean_error(rc, err, "No space left on device", code=1)
    assert list(out_dir.iterdir()) == []


@pytest.mark.parametrize(
    "args, pattern",
    [
        (["--patch-size", "4"], "positive odd integer, got 4"),
        (["--nn-iterations", "0"], "iterations must be >= 1"),
    ],
)
def test_sample_bad_option_values(args, pattern, cli_model, tmp_path, capsys, lrgmm_cache):
    rc, _, err = run(capsys, "sample", cli_model[0], "-o", tmp_path / "o", "--seed", 0, "-n", 1, "--quiet", *args)
    assert_clean_error(rc, err, pattern)
    assert not (tmp_path / "o").exists()


def test_sample_n_must_be_positive(cli_model, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["sample", str(cli_model[0]), "-o", str(tmp_path / "o"), "-n", "0"])
    assert e.value.code == 2
    assert "must be at least 1, got 0" in capsys.readouterr().err


def test_fit_bad_resolution(faces64, tmp_path, capsys, lrgmm_cache):
    d = _folder(tmp_path, faces64, 2)
    rc, _, err = _fit(capsys, d, tmp_path / "m.lrgmm", "--resolution", 100)
    assert_clean_error(rc, err, "100")
    assert not (tmp_path / "m.lrgmm").exists()


def test_interrupt_exits_130(capsys, monkeypatch, tmp_path):
    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "cmd_fit", interrupted)
    rc, _, err = run(capsys, "fit", tmp_path, "-o", tmp_path / "m.lrgmm")
    assert rc == 130 and "interrupted" in err and "Traceback" not in err


@pytest.mark.parametrize("exc", [ValueError("a bug"), TypeError("another bug"), KeyError("key"), RuntimeError("x")])
def test_a_bug_shows_its_traceback(exc, cli_model, tmp_path, capsys, monkeypatch):
    """Only the package's errors (``LrgmmError``) and ``OSError`` become one-line messages: any
    other exception is a bug, and leaves ``main`` with its traceback (no "error: ..." printed)."""
    import lrgmm.io.model_file

    def broken(*a, **kw):
        raise exc

    monkeypatch.setattr(lrgmm.io.model_file, "read_metadata", broken)
    with pytest.raises(type(exc), match=str(exc.args[0])):
        main(["info", str(cli_model[0])])
    assert capsys.readouterr().err == ""
    monkeypatch.setattr(FacePipeline, "generate_batches", broken)
    with pytest.raises(type(exc)):
        main(["sample", str(cli_model[0]), "-n", "1", "-o", str(tmp_path / "o"), "--quiet"])
    assert "error:" not in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv, pattern",
    [
        (["fit", "{faces}", "-o", "{tmp}/m.lrgmm", "-q", "99"], r"n_channels \(q\) must be in \[1, 32\] for 32-channel latents, got 99"),
        (["fit", "{faces}", "-o", "{tmp}/m.lrgmm", "--resolution", "100"], r"needs image sides that are multiples of 8, got 100"),
        (["fit", "{faces}", "-o", "{tmp}/m.lrgmm", "--patch-size", "4"], r"positive odd integer, got 4"),
        (["fit", "{faces}", "-o", "{tmp}/m.lrgmm", "--autoencoder", "nope"], r"unknown autoencoder 'nope'; available: .*fake"),
        (["fit", "{faces}", "-o", "{tmp}/m.lrgmm", "--ae-config", "c.yaml"], r"autoencoder does not take --ae-config"),
        (["fit", "{faces}", "-o", "{tmp}/m.lrgmm", "--batch-size", "0"], r"batch_size must be a positive integer, got 0"),
        (["sample", "{model}", "-o", "{tmp}/o", "-n", "1", "--labels", "l.csv"], r"--labels is used with --where"),
        (["sample", "{model}", "-o", "{tmp}/o", "-n", "1", "--alpha", "1"], r"--alpha needs --edit"),
        (["sample", "{model}", "-o", "{tmp}/o", "-n", "1", "--where", "gender=female", "--method", "normal"],
         r"--where works with the LR-GMM methods"),
        (["complete", "{model}", "{photo}", "--box", "0", "0", "64", "64", "-o", "{tmp}/o", "--feather", "-1"],
         r"feather must be >= 0, got -1"),
        (["eval", "{model}", "--real", "{faces}", "-n", "4", "--near-copy-quantile", "1.5"],
         r"near_copy_quantile must be in \[0, 1\), got 1\.5"),
        (["weights", "download", "nope", "--dest", "{tmp}/w"], r"unknown weights backend 'nope'; known backends: taef2"),
    ],
)
def test_user_errors_are_one_line(argv, pattern, cli_model, faces64, tmp_path, capsys, lrgmm_cache):
    """Values the user typed that the library refuses (each a ``ParameterError``, once a bare
    ``ValueError`` the command line caught along with every bug): one line, exit status 2,
    nothing written."""
    faces = _folder(tmp_path, faces64, 3, "faces")
    values = {"faces": faces, "tmp": tmp_path, "model": cli_model[0], "photo": faces64[0]}
    argv = [a.format(**values) for a in argv]
    if argv[0] == "fit" and "--autoencoder" not in argv:
        argv += AE
    rc, out, err = run(capsys, *argv, *(["--quiet"] if argv[0] != "weights" else []))
    assert_clean_error(rc, err, pattern)
    assert err.count("\n") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["faces"]


def test_main_leaves_warning_settings_alone(cli_model, capsys, lrgmm_cache):
    import warnings

    before = (warnings.formatwarning, warnings.showwarning, list(warnings.filters))
    assert run(capsys, "info", cli_model[0])[0] == 0
    assert (warnings.formatwarning, warnings.showwarning, list(warnings.filters)) == before


# ------------------------------------------------------------------------------- defaults


def _init_defaults() -> dict:
    return {n: p.default for n, p in inspect.signature(FacePipeline.__init__).parameters.items() if n != "self"}


def test_cli_defaults_are_the_api_defaults(tmp_path, capsys, monkeypatch):
    defaults = _init_defaults()
    args = build_parser().parse_args(["fit", "photos", "-o", "m.lrgmm"])
    exposed = [n for n in defaults if n in vars(args)]
    # Every model option except the two the CLI spells as flags is exposed, with the API default.
    assert set(defaults) - set(exposed) == {"cache", "progress"}
    for name in exposed:
        assert getattr(args, name) == defaults[name], name
    assert args.no_cache is False and args.quiet is False

    # What `lrgmm fit` actually builds: the pipeline of a plain FacePipeline() call.
    seen = {}

    def capture(self, source):
        seen.update(self.get_params(), source=source)
        raise FitError("stop here")

    monkeypatch.setattr(FacePipeline, "fit", capture)
    rc, _, err = run(capsys, "fit", "photos", "-o", tmp_path / "m.lrgmm")
    assert rc == 2 and "stop here" in err
    assert seen.pop("source") == "photos"
    assert seen == {**defaults, "progress": True, "cache": True} == FacePipeline().get_params()

    # Flags reach the pipeline under the right names.
    seen.clear()
    run(capsys, "fit", "a", "b", "-o", tmp_path / "m.lrgmm", "-K", 3, "-q", 8, "--lambda", 0.2, "--omega", 3,
        "--seed", 7, "--no-cache", "--quiet")
    assert seen["source"] == ["a", "b"]
    assert (seen["n_components"], seen["n_channels"], seen["temperature"], seen["patch_size"]) == (3, 8, 0.2, 3)
    assert (seen["random_state"], seen["cache"], seen["progress"]) == (7, False, False)


def test_sample_and_demo_defaults_are_the_api_defaults():
    gen = inspect.signature(FacePipeline.generate).parameters
    args = build_parser().parse_args(["sample", "m.lrgmm", "-o", "out"])
    assert args.nn is gen["nn"].default is True
    for name in ("temperature", "nn_iterations", "patch_size", "max_share"):
        assert getattr(args, name) is None and gen[name].default is None  # None: the model's value
    assert args.seed is None
    demo = inspect.signature(run_demo).parameters
    args = build_parser().parse_args(["demo"])
    for name in ("data", "n_train", "n_samples", "out_dir", "seed"):
        assert getattr(args, name) == demo[name].default, name
    assert (args.n_train, args.n_samples, args.seed) == (1024, 64, 0)


# ----------------------------------------------------------------------------------- demo


def test_demo_small(faces64_dir, tmp_path, capsys, lrgmm_cache, demo_uses_ae):
    out_dir = tmp_path / "demo"
    rc, out, err = run(capsys, "demo", "--data", faces64_dir, "--n-train", 48, "-n", 4, "-o", out_dir, "--quiet")
    assert rc == 0, err
    assert f"4 new faces written to {out_dir}/" in out
    assert "+ the training latents it copies" in out and "format 2" not in out  # the written file's summary
    assert str(out_dir / "grid.png") in out and str(out_dir / "demo.lrgmm") in out
    with Image.open(out_dir / "grid.png") as im:
        assert im.size == (2 + 2 * 130, 2 + 2 * 130)
    assert len(list(out_dir.glob("face_????.png"))) == 4
    assert (out_dir / "provenance_grid.png").is_file()
    meta = read_metadata(out_dir / "demo.lrgmm")
    assert meta["fit"]["n_images"] == 48
    assert all(Path(f["path"]).parent == faces64_dir for f in meta["training_files"])

    # The demo is reproducible: same data, same seed, same faces.
    rc, _, err = run(capsys, "demo", "--data", faces64_dir, "--n-train", 48, "-n", 4, "-o", tmp_path / "d2", "--quiet")
    assert rc == 0, err
    assert (out_dir / "grid.png").read_bytes() == (tmp_path / "d2" / "grid.png").read_bytes()


def test_demo_with_too_few_images(faces64_dir, tmp_path, capsys, lrgmm_cache):
    rc, _, err = run(capsys, "demo", "--data", faces64_dir, "--n-train", 100, "-o", tmp_path / "d", "--quiet")
    assert_clean_error(rc, err, rf"holds {N_FACES} images, fewer than the 100 asked for")
    assert not (tmp_path / "d").exists()


# ------------------------------------------------------------------------------------ eval


def test_eval_end_to_end(cli_model, faces_dir, faces64, tmp_path, capsys, lrgmm_cache):
    from lrgmm.metrics import MissingExtractorError, find_inception_file

    try:
        find_inception_file()
    except MissingExtractorError as e:
        pytest.skip(str(e))
    held = _held_out(faces_dir, faces64)
    real = tmp_path / "real"
    real.mkdir()
    for p in held:
        (real / p.name).write_bytes(p.read_bytes())
    out_json = tmp_path / "eval.json"
    argv = ["eval", cli_model[0], "--real", real, "-n", 6, "--seed", 3, "--kid-subsets", 10, "--quiet"]
    rc, out, err = run(capsys, *argv, "--json", out_json)
    assert rc == 0, err
    assert "6 faces (seed 3) vs 12 held-out real faces; 64 training faces" in out
    assert "VGG16" in out  # says precision/recall are on Inception features
    assert "data-copying C_T, Inception" in out and "authentic faces, latent codes" in out
    data = json.loads(out_json.read_text())
    assert np.isfinite(data["fid"]) and data["fid"] > 0
    assert 0 <= data["precision"] <= 1 and 0 <= data["recall"] <= 1 and data["seed"] == 3
    # The same seed measures the same faces: identical numbers on a second run (features cached).
    rc, out2, _ = run(capsys, *argv)
    assert rc == 0 and out2.splitlines()[2] == out.splitlines()[2]
    # A baseline, with memorisation in latent codes only.
    rc, _, err = run(capsys, *argv, "--method", "gaussian", "--memorisation", "codes", "--copying-cells", 2,
                     "--json", out_json)
    assert rc == 0, err
    data = json.loads(out_json.read_text())
    assert data["generator"] == "gaussian" and set(data["memorisation"]) == {"latent_codes"}
    assert set(data["copying"]) == {"latent_codes"} and data["copying"]["latent_codes"]["c_t_cells"] <= 2
    assert data["copying"]["latent_codes"]["c_t"] is None  # 6 faces: no cell holds more than 20
    rc, _, err = run(capsys, *argv, "--copying-cells", 65)
    assert_clean_error(rc, err, "copying_cells must be in")
    rc, _, err = run(capsys, "eval", cli_model[0], "--real", tmp_path / "nowhere", "-n", 2, "--quiet")
    assert_clean_error(rc, err, "nowhere")


def _figure(folder: Path, stem: str, n: int) -> dict:
    """The memorisation figure's JSON in ``folder``, checked against its PNG."""
    doc = json.loads((folder / f"{stem}.json").read_text())
    with Image.open(folder / f"{stem}.png") as im:
        assert list(im.size) == doc["image_size"] and doc["figure"] == f"{stem}.png"
    assert len(doc["faces"]) == min(16, n) and doc["n_generated"] == n
    d = [r["distance"] for r in doc["faces"]]
    assert d == sorted(d)
    for r in doc["faces"]:
        near = r["nearest_training"]
        assert len(near) == 3 and near[0]["distance"] == r["distance"]
        assert [x["distance"] for x in near] == sorted(x["distance"] for x in near)
        assert r["near_copy"] == (r["distance"] < doc["near_copy_threshold"])
    return doc


def test_eval_figures(cli_model, faces_dir, faces64, tmp_path, capsys, lrgmm_cache):
    """`lrgmm eval --figures DIR` for the model, for the LatentPatch baseline (faces with
    provenance), and in latent-code space; refused without memorisation or into a file."""
    from lrgmm.metrics import MissingExtractorError, find_inception_file

    try:
        find_inception_file()
    except MissingExtractorError as e:
        pytest.skip(str(e))
    model = cli_model[0]
    real = tmp_path / "real"
    real.mkdir()
    for p in _held_out(faces_dir, faces64):
        (real / p.name).write_bytes(p.read_bytes())
    argv = ["eval", model, "--real", real, "-n", 6, "--seed", 3, "--kid-subsets", 10, "--quiet"]
    rc, out, err = run(capsys, *argv, "--figures", tmp_path / "figs", "--json", tmp_path / "e.json")
    assert rc == 0, err
    stem = "memorisation_m.lrgmm_inception"
    assert f"memorisation figure: {tmp_path / 'figs' / stem}.png" in out
    doc = _figure(tmp_path / "figs", stem, 6)
    result = json.loads((tmp_path / "e.json").read_text())
    assert result["files"] == [str(tmp_path / "figs" / f"{stem}.{x}") for x in ("png", "json")]
    assert doc["near_copy_threshold"] == result["memorisation"]["inception"]["near_copy_threshold"]
    assert min(r["distance"] for r in doc["faces"]) == result["memorisation"]["inception"]["generated_to_train"]["min"]
    assert all(r["provenance_sources"] for r in doc["faces"])  # LR-GMM-NN faces say where they come from

    rc, out, err = run(capsys, *argv, "--method", "latentpatch", "--figures", tmp_path / "figs")
    assert rc == 0, err
    doc = _figure(tmp_path / "figs", "memorisation_latentpatch_inception", 6)
    for r in doc["faces"]:  # its faces have provenance in the model's training set
        assert r["provenance_sources"] and all(0 <= s["index"] < N_FACES for s in r["provenance_sources"])
        shares = [s["share"] for s in r["provenance_sources"]]
        assert shares == sorted(shares, reverse=True) and 0 < sum(shares) <= 1 + 1e-9

    rc, out, err = run(capsys, *argv, "--memorisation", "codes", "--figures", tmp_path / "figs")
    assert rc == 0, err
    assert _figure(tmp_path / "figs", "memorisation_m.lrgmm_codes", 6)["space"] == "latent_codes"

    rc, _, err = run(capsys, *argv, "--memorisation", "none", "--figures", tmp_path / "figs2")
    assert_clean_error(rc, err, "the memorisation figure needs memorisation")
    (tmp_path / "afile").write_text("x")
    rc, _, err = run(capsys, *argv, "--figures", tmp_path / "afile")
    assert_clean_error(rc, err, "afile")
    assert not (tmp_path / "figs2").exists()


# ------------------------------------------------------------------- many faces, bounded memory


def test_sample_many_faces_in_bounded_batches(cli_model, tmp_path, capsys, lrgmm_cache, monkeypatch):
    """130 faces are drawn, decoded and written 64 at a time (what keeps `-n 100000` at a flat
    memory); the grids show the first 64; the faces are those of one in-memory draw."""
    model, _ = cli_model
    sizes = []
    decode = FacePipeline.decode

    def spy(self, latents, *a, **kw):
        sizes.append(latents.shape[0])
        return decode(self, latents, *a, **kw)

    monkeypatch.setattr(FacePipeline, "decode", spy)
    out = _sample(capsys, model, tmp_path / "many", "-n", 130, "--seed", 5)
    assert "130 faces (seed 5) written" in out and "grid.png (the first 64)" in out
    assert sizes == [64, 64, 2]
    d = tmp_path / "many"
    assert len(list(d.glob("face_????.png"))) == 130 and len(list(d.glob("face_????_provenance.json"))) == 130
    for grid in ("grid.png", "provenance_grid.png"):
        with Image.open(d / grid) as im:
            assert im.size == (2 + 8 * 130, 2 + 8 * 130)  # 64 tiles, 8x8
    summary = json.loads((d / "samples.json").read_text())
    assert summary["n"] == 130 and summary["files"]["faces"][-1] == "face_0129.png"
    assert len(summary["files"]["provenance_json"]) == 130

    from lrgmm.io.images import to_uint8_hwc

    monkeypatch.setattr(FacePipeline, "decode", decode)
    ref = FacePipeline.load(model, progress=False).generate(130, seed=5)
    for i in (0, 63, 64, 129):
        with Image.open(d / f"face_{i:04d}.png") as im:
            assert np.array_equal(np.asarray(im), to_uint8_hwc(ref.images[i])), i


@pytest.mark.parametrize(
    "args, pattern",
    [
        (["-n", "1000001"], r"argument -n/--n: must be at most 1,000,000 faces, got 1,000,001"),
        (["--seed", str(2**64)], r"argument --seed: must be an integer in \[0, 2\*\*63 - 1"),
        (["--seed", "-1"], r"argument --seed: must be an integer in \[0, 2\*\*63 - 1"),
        (["-o", ""], r"argument -o/--output: the output path is empty"),
        (["--max-share", "0"], r"argument --max-share: must be a number in \(0, 1\], got '0'"),
        (["--max-share", "1.5"], r"argument --max-share: must be a number in \(0, 1\], got '1.5'"),
        (["--max-share", "nan"], r"argument --max-share: must be a number in \(0, 1\], got 'nan'"),
        (["--max-share", "a quarter"], r"argument --max-share: must be a number in \(0, 1\]"),
    ],
)
def test_sample_refuses_absurd_values_at_once(args, pattern, tmp_path, capsys, monkeypatch):
    def never(*a, **kw):
        raise AssertionError("the model was loaded: the value was not refused up front")

    monkeypatch.setattr(cli, "_load_pipeline", never)
    argv = ["sample", str(tmp_path / "m.lrgmm"), "-o", str(tmp_path / "o"), *args]
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert re.search(pattern, err), err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("value, pattern", [("101", "at most 100, got 101"), ("100000000", "at most 100, got 100,000,000")])
def test_nn_iterations_limit(value, pattern, tmp_path, capsys, monkeypatch):
    def never(*a, **kw):
        raise AssertionError("the model was loaded: the value was not refused up front")

    monkeypatch.setattr(cli, "_load_pipeline", never)
    rc, _, err = run(capsys, "sample", tmp_path / "m.lrgmm", "-o", tmp_path / "o", "--nn-iterations", value)
    assert_clean_error(rc, err, f"nn_iterations must be {pattern}")
    rc, _, err = run(capsys, "fit", tmp_path, "-o", tmp_path / "m.lrgmm", "--nn-iterations", value)
    assert_clean_error(rc, err, f"nn_iterations must be {pattern}")
    assert sorted(tmp_path.iterdir()) == []


def test_sample_edit_is_bounded(tmp_path, capsys):
    rc, _, err = run(capsys, "sample", tmp_path / "m.lrgmm", "-o", tmp_path / "o", "-n", 300, "--edit", tmp_path / "x.edit")
    assert_clean_error(rc, err, r"--edit .* at most 256 faces \(-n\), got 300")


# ------------------------------------------------------------------------------ seeds, paths

SEED_COMMANDS = {
    "fit": ["fit", "photos", "-o", "m.lrgmm"],
    "sample": ["sample", "m.lrgmm", "-o", "out"],
    "complete": ["complete", "m.lrgmm", "p.jpg", "--box", "0", "0", "8", "8", "-o", "out"],
    "demo": ["demo"],
    "eval": ["eval", "m.lrgmm", "--real", "held"],
    "edit-fit": ["edit-fit", "m.lrgmm", "-o", "g.edit"],
}


@pytest.mark.parametrize("command", list(SEED_COMMANDS))
def test_seed_range(command, capsys):
    parser = build_parser()
    assert parser.parse_args(SEED_COMMANDS[command] + ["--seed", str(2**63 - 1)]) is not None
    for bad in (str(2**63), str(2**64), "-1", "abc"):
        with pytest.raises(SystemExit):
            parser.parse_args(SEED_COMMANDS[command] + ["--seed", bad])
        err = capsys.readouterr().err
        assert "argument --seed: must be an integer in [0, 2**63 - 1" in err, err


OUTPUT_COMMANDS = {
    "fit": ["fit", "photos"],
    "sample": ["sample", "m.lrgmm"],
    "complete": ["complete", "m.lrgmm", "p.jpg", "--box", "0", "0", "8", "8"],
    "demo": ["demo"],
    "edit-fit": ["edit-fit", "m.lrgmm"],
    "edit": ["edit", "m.lrgmm", "g.edit", "p.jpg"],
}


@pytest.mark.parametrize("command", list(OUTPUT_COMMANDS))
def test_empty_output_path(command, capsys):
    """`-o ''` (an unset variable in a script) is refused with a message, on every command with -o."""
    for empty in ("", "  "):
        with pytest.raises(SystemExit) as e:
            build_parser().parse_args(OUTPUT_COMMANDS[command] + ["-o", empty])
        assert e.value.code == 2
        assert "argument -o/--output: the output path is empty: give a file or folder name" in capsys.readouterr().err


# ------------------------------------------------------------------------- output folders


@pytest.mark.parametrize("command", ["sample", "complete", "edit", "demo"])
def test_non_empty_output_folder_is_refused(command, tmp_path, capsys, monkeypatch):
    """An earlier run's folder is not mixed with a new run's files unless --overwrite is given;
    the refusal comes before anything is loaded, and the folder is left as it was."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "face_0063.png").write_bytes(b"old")
    argv = {
        "sample": ["sample", tmp_path / "m.lrgmm"],
        "complete": ["complete", tmp_path / "m.lrgmm", tmp_path / "p.jpg", "--box", 0, 0, 8, 8],
        "edit": ["edit", tmp_path / "m.lrgmm", tmp_path / "g.edit", tmp_path / "p.jpg"],
        "demo": ["demo", "--data", tmp_path],
    }[command]
    rc, _, err = run(capsys, *argv, "-o", out, "--quiet")
    assert_clean_error(rc, err, rf"output folder {out} is not empty \(face_0063.png\): choose a new or empty folder "
                                r"with -o, or pass --overwrite to replace lrgmm's own files there \(.*; anything else is kept\)")
    assert [p.name for p in out.iterdir()] == ["face_0063.png"]
    (tmp_path / "file").write_text("x")
    rc, _, err = run(capsys, *argv, "-o", tmp_path / "file", "--quiet")
    assert_clean_error(rc, err, "exists and is not a folder")


def test_sample_overwrite_replaces_only_its_own_files(cli_model, tmp_path, capsys, lrgmm_cache):
    model, _ = cli_model
    out = tmp_path / "out"
    _sample(capsys, model, out, "-n", 3, "--seed", 1)
    keep = {"notes.txt": "mine", "face_mom.png": "a photo", "grid.png.bak": "x"}
    for name, text in keep.items():
        (out / name).write_text(text)
    (out / ".face_0002.png.k3x9_a1.tmp").write_bytes(b"killed mid-write")
    (out / "sub").mkdir()
    (out / "sub" / "face_0000.png").write_bytes(b"not ours to remove")

    # A bad option with --overwrite: refused before anything is removed.
    rc, _, err = run(capsys, "sample", model, "-o", out, "--quiet", "--overwrite", "--nn-iterations", 1000)
    assert_clean_error(rc, err, "iterations")
    assert (out / "face_0002.png").exists() and (out / "samples.json").exists()

    _sample(capsys, model, out, "-n", 2, "--seed", 2, "--no-nn", "--overwrite")
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["face_0000.png", "face_0001.png", "grid.png", "samples.json", "sub", *keep])
    assert all((out / n).read_text() == t for n, t in keep.items())
    assert (out / "sub" / "face_0000.png").read_bytes() == b"not ours to remove"
    assert json.loads((out / "samples.json").read_text())["n"] == 2


def test_own_file_patterns_match_what_the_commands_write(cli_model, tmp_path, capsys, lrgmm_cache):
    """--overwrite removes exactly the kinds of files the commands write: every file of a real
    run matches its command's patterns, and nothing of a user's that merely looks alike."""
    from lrgmm.io.output_folder import COMPLETE_FILES, DEMO_FILES, EDIT_FILES, SAMPLE_FILES, _ours

    model, _ = cli_model
    _sample(capsys, model, tmp_path / "s", "-n", 2, "--seed", 0)
    assert all(_ours(p.name, SAMPLE_FILES) for p in (tmp_path / "s").iterdir())
    photo = read_metadata(model)["training_files"][0]["path"]
    rc, _, err = run(capsys, "complete", model, photo, "--box", 32, 32, 96, 96, "-n", 2, "--seed", 0, "-o",
                     tmp_path / "c", "--quiet")
    assert rc == 0, err
    written = sorted(p.name for p in (tmp_path / "c").iterdir())
    assert "completion_0001_raw.png" in written and all(_ours(n, COMPLETE_FILES) for n in written)
    for name in ("face_0000.png", "face_12345_provenance.json", "grid.png", "samples.json", "demo.lrgmm"):
        assert _ours(name, DEMO_FILES)
    for name in ("edit_0000.png", "edit_0003_provenance.png", "edits.json"):
        assert _ours(name, EDIT_FILES) and not _ours(name, SAMPLE_FILES)
    for name in ("face_mom.png", "face_01.png", "face_0000.jpg", "grid.png.bak", "my_samples.json", "photo.jpg"):
        assert not any(_ours(name, own) for own in (SAMPLE_FILES, EDIT_FILES, COMPLETE_FILES, DEMO_FILES)), name


# --------------------------------------------------------------------------- interruptions


def test_interrupt_says_cached_only_when_an_encoding_was_interrupted(faces64, tmp_path, capsys, monkeypatch, lrgmm_cache):
    from lrgmm.pipeline import face_pipeline as pipeline

    def interrupted_encoding(*a, **kw):
        raise KeyboardInterrupt

    monkeypatch.setattr(pipeline, "encode_images", interrupted_encoding)
    d = _folder(tmp_path, faces64, 4)
    rc, _, err = _fit(capsys, d, tmp_path / "m.lrgmm")
    assert rc == 130 and err == "interrupted; encoded latents so far are cached, rerun to resume\n"
    rc, _, err = _fit(capsys, d, tmp_path / "m.lrgmm", "--no-cache")
    assert rc == 130 and err == "interrupted\n"

    def interrupted(args):
        raise KeyboardInterrupt

    for name in ("cmd_sample", "cmd_serve", "cmd_fit"):  # Ctrl-C anywhere else: no claim about a cache
        monkeypatch.setattr(cli, name, interrupted)
    for argv in (["sample", "m.lrgmm", "-o", tmp_path / "o"], ["serve", "m.lrgmm"], ["fit", d, "-o", tmp_path / "m"]):
        rc, _, err = run(capsys, *argv)
        assert rc == 130 and err == "interrupted\n", argv


# ------------------------------------------------------------------------ unreadable input


def test_fit_lists_an_unreadable_subfolder(faces64, tmp_path, capsys, monkeypatch, lrgmm_cache):
    d = _folder(tmp_path, faces64, 6)
    locked = d / "locked"
    locked.mkdir()
    shutil.copyfile(faces64[10], locked / faces64[10].name)
    real = os.scandir

    def scandir(path="."):  # chmod 000 does not stop root, who runs the tests
        if Path(path) == locked:
            raise PermissionError(13, "Permission denied", str(path))
        return real(path)

    monkeypatch.setattr(os, "scandir", scandir)
    rc, out, err = _fit(capsys, d, tmp_path / "m.lrgmm")
    assert rc == 0, err
    assert "6 of 6 image file(s) used" in out
    assert f"skipped: 1\n  {locked}: cannot read folder (Permission denied)" in out


def test_fit_skips_an_image_over_the_pixel_limit(faces64, tmp_path, capsys, lrgmm_cache):
    import struct
    import zlib

    d = _folder(tmp_path, faces64, 6)

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = zlib.compress(b"\0" * 1501 * 12_000, 9)  # 12,000 black 1-bit rows: a 17 KB file
    (d / "huge.png").write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 12_000, 12_000, 1, 0, 0, 0, 0))
                                 + chunk(b"IDAT", rows) + chunk(b"IEND", b""))
    rc, out, err = _fit(capsys, d, tmp_path / "m.lrgmm")
    assert rc == 0, err
    assert "6 of 7 image file(s) used" in out
    assert (f"{d / 'huge.png'}: too large: 12000x12000 = 144,000,000 pixels, over the limit of 16,777,216 (4096x4096)"
            in out)
