"""The .lrgmm model file: exact round trip, no pickle, metadata, errors, atomic writes.

Uses the session model fitted on 64 faces through the session's autoencoder (``conftest.fitted64``:
real faces and TAEF2 with the shared folder, synthetic faces and the fake autoencoder without).
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import pickle
import shutil
import struct
from pathlib import Path

import pytest
import torch
from conftest import N_FACES, rewrite_model_metadata

from lrgmm import autoencoders
from lrgmm.errors import ModelFileError
from lrgmm.io import tensor_file  # model files are written through it
from lrgmm.io.model_file import (
    FORMAT_VERSION,
    TENSOR_NAMES,
    TENSOR_NAMES_V2,
    TENSOR_NAMES_V3,
    load_model_file,
    model_tensors,
    read_metadata,
    save_model_file,
)
from lrgmm.pipeline import FacePipeline

N_GEN = 6


def _safetensors_header(data: bytes) -> tuple[dict, int]:
    """Parse a safetensors file by hand: 8-byte little-endian header length, JSON header."""
    (n,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8 : 8 + n].decode("utf-8")), 8 + n


# ----------------------------------------------------------------------------- round trip


def test_round_trip_reproduces_samples_exactly(fitted64, model64_file, ae):
    before = fitted64.generate(N_GEN, seed=1)
    loaded = FacePipeline.load(model64_file, autoencoder=ae, progress=False)
    after = loaded.generate(N_GEN, seed=1)
    assert after.images.shape == (N_GEN, 3, 128, 128)
    assert torch.equal(before.images, after.images)
    assert torch.equal(before.samples.codes, after.samples.codes)
    assert torch.equal(before.samples.components, after.samples.components)
    assert torch.equal(before.samples.provenance, after.samples.provenance)
    assert after.training_files == fitted64.training_files_

    other = loaded.generate(N_GEN, seed=2)
    assert not torch.equal(other.samples.codes, after.samples.codes)
    assert (other.images - after.images).abs().max() > 0.1  # different faces, not rounding

    # The plain LR-GMM (no NN step) round-trips too.
    assert torch.equal(fitted64.generate(2, seed=3, nn=False).images, loaded.generate(2, seed=3, nn=False).images)


def test_round_trip_restores_every_tensor_and_setting(fitted64, model64_file):
    model, meta = load_model_file(model64_file)
    saved, got = model_tensors(fitted64.model_), model_tensors(model)
    assert set(got) == set(TENSOR_NAMES + TENSOR_NAMES_V2 + TENSOR_NAMES_V3)
    for name in TENSOR_NAMES + TENSOR_NAMES_V2 + TENSOR_NAMES_V3:
        assert got[name].dtype == saved[name].dtype, name
        assert torch.equal(got[name], saved[name]), name
    assert model.get_params() == fitted64.model_.get_params()
    assert model.n_components_ == 4
    assert model.parameter_counts() == fitted64.model_.parameter_counts()


def test_load_by_recorded_autoencoder_name(fitted64, model64_file):
    """Without an explicit autoencoder, load builds the recorded backend from its name."""
    loaded = FacePipeline.load(model64_file, progress=False, precision=fitted64.autoencoder_.precision)
    assert loaded.autoencoder_.id == fitted64.autoencoder_.id
    assert loaded.resolution == 128 and loaded.n_components == 4 and loaded.n_channels == 16
    assert torch.equal(loaded.generate(2, seed=5).images, fitted64.generate(2, seed=5).images)


def test_file_is_plain_safetensors_not_pickle(model64_file):
    data = model64_file.read_bytes()
    # Not a torch zip; and the 8 bytes a pickle's b"\x80" opcode would start are a little-endian
    # header length (its low byte may well be 0x80) followed by that much JSON.
    assert not data.startswith(b"PK") and data[8:10] == b'{"'
    header, start = _safetensors_header(data)
    meta = json.loads(header.pop("__metadata__")["lrgmm"])
    assert meta["format"] == "lrgmm-model"
    assert set(header) == set(TENSOR_NAMES + TENSOR_NAMES_V2 + TENSOR_NAMES_V3)
    # The tensors tile the rest of the file exactly: nothing else (no pickled blob) is in it.
    spans = sorted(tuple(t["data_offsets"]) for t in header.values())
    assert spans[0][0] == 0 and spans[-1][1] == len(data) - start
    assert all(a[1] == b[0] for a, b in zip(spans, spans[1:]))
    assert {t["dtype"] for t in header.values()} <= {"F32", "F64", "I64"}
    assert header["memory.codes"]["shape"] == [N_FACES, 16, 16, 16]
    assert header["memory.latents"]["shape"] == [N_FACES, 32, 16, 16]


def test_loading_never_unpickles(model64_file, ae, monkeypatch):
    def refuse(*a, **k):
        raise AssertionError("the model file loader unpickled something")

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "Unpickler", refuse)
    monkeypatch.setattr(torch, "load", refuse)
    pipe = FacePipeline.load(model64_file, autoencoder=ae, progress=False)
    assert pipe.model_.codes_.shape == (N_FACES, 16, 16, 16)


def test_metadata(fitted64, model64_file, ae, faces64_dir):
    meta = read_metadata(model64_file)
    assert meta["format_version"] == FORMAT_VERSION == 3
    assert meta["autoencoder"] == {"name": ae.name, "id": ae.id, "weights_sha256": ae.weights_sha256}
    assert len(meta["autoencoder"]["weights_sha256"]) == 64
    assert meta["resolution"] == 128 and meta["latent_shape"] == [32, 16, 16]
    hp = meta["hyperparameters"]
    # hyperparameters hold what was fitted (K and lambda); fit.*_requested what was asked (None: from N / K).
    assert hp == {**fitted64.model_.get_params(), "n_channels": 16, "n_components": 4, "temperature": 1.0}
    expected = {"n_channels": 16, "n_components": 4, "temperature": 1.0, "patch_size": 5, "nn_iterations": 1,
                "reg_covar": 1e-3, "max_iter": 100, "tol": 1e-3, "random_state": 0}  # fmt: skip
    assert {k: hp[k] for k in expected} == expected
    fit = meta["fit"]
    assert fit["n_images"] == N_FACES and fit["d0"] == 16 * 16 * 16
    assert fit["temperature_requested"] == 1.0 and fit["n_components_requested"] == 4  # the default lambda, as asked
    assert fit["ranks"] == fitted64.model_.mixture_.ranks_.tolist() and len(fit["ranks"]) == 4
    assert sum(fit["weights"]) == pytest.approx(1.0, abs=1e-5)
    assert 0.5 < fit["explained_variance_ratio"] < 1.0

    # Training files: every path with the sha256 of its bytes, in the order of the NN memory.
    files = meta["training_files"]
    assert len(files) == N_FACES
    assert [f["path"] for f in files] == sorted(str(p) for p in faces64_dir.iterdir())
    for f in files:
        assert f["sha256"] == hashlib.sha256(Path(f["path"]).read_bytes()).hexdigest()

    counts = meta["parameter_counts"]
    assert counts == fitted64.model_.parameter_counts()
    c, q, d0, K, ranks = 32, 16, 4096, 4, sum(fit["ranks"])
    assert counts["projector"] == c + q * c + q  # mean, V0, s0
    assert counts["nn_memory"] == N_FACES * d0
    assert K * d0 + ranks * d0 <= counts["mixture"] <= (K + ranks) * (d0 + 2)


def test_saved_file_has_normal_permissions(model64_file):
    """mkstemp makes 0600 files; the model must get the usual umask permissions."""
    umask = os.umask(0)
    os.umask(umask)
    assert model64_file.stat().st_mode & 0o777 == 0o666 & ~umask


# --------------------------------------------------------------------------------- errors


@pytest.mark.parametrize("keep", [0, 8, 100, 5000, "half", "all-but-one"])
def test_truncated_file(model64_file, tmp_path, keep):
    data = model64_file.read_bytes()
    n = {"half": len(data) // 2, "all-but-one": len(data) - 1}.get(keep, keep)
    bad = tmp_path / "cut.lrgmm"
    bad.write_bytes(data[:n])
    with pytest.raises(ModelFileError, match=r"cut\.lrgmm is not a readable lrgmm model file \(truncated or corrupt"):
        load_model_file(bad)
    with pytest.raises(ModelFileError, match="truncated or corrupt"):
        FacePipeline.load(bad)


def test_garbage_and_foreign_files(tmp_path):
    garbage = tmp_path / "garbage.lrgmm"
    garbage.write_bytes(os.urandom(4096))
    with pytest.raises(ModelFileError, match="not a readable lrgmm model file"):
        load_model_file(garbage)

    text = tmp_path / "text.lrgmm"
    text.write_text("this is not a model\n" * 50)
    with pytest.raises(ModelFileError, match="not a readable lrgmm model file"):
        load_model_file(text)

    # A valid safetensors file that is not an lrgmm model.
    from safetensors.torch import save_file

    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(3)}, str(foreign))
    with pytest.raises(ModelFileError, match="not an lrgmm model"):
        load_model_file(foreign)


def test_missing_file(tmp_path):
    with pytest.raises(ModelFileError, match=r"nowhere\.lrgmm does not exist.*lrgmm fit"):
        FacePipeline.load(tmp_path / "nowhere.lrgmm")


def test_folder_or_fifo_instead_of_a_file(tmp_path):
    os.mkfifo(tmp_path / "pipe.lrgmm")  # opening it would block: it must not be opened
    with pytest.raises(ModelFileError, match=r"pipe\.lrgmm is a special file \(device, FIFO or socket\), not a model file"):
        read_metadata(tmp_path / "pipe.lrgmm")
    with pytest.raises(ModelFileError, match=r"is a folder, not a model file"):
        FacePipeline.load(tmp_path)


def test_newer_format_version(model64_file, tmp_path):
    newer = rewrite_model_metadata(model64_file, tmp_path / "newer.lrgmm", lambda m: {**m, "format_version": 999})
    with pytest.raises(ModelFileError, match=r"format version 999, newer than this lrgmm reads \(3\).*upgrade"):
        FacePipeline.load(newer)
    with pytest.raises(ModelFileError, match="999"):
        read_metadata(newer)  # `lrgmm info --json` refuses it too


def test_inconsistent_file_is_refused(model64_file, tmp_path):
    short = rewrite_model_metadata(
        model64_file, tmp_path / "short.lrgmm", lambda m: {**m, "training_files": m["training_files"][:-1]}
    )
    with pytest.raises(ModelFileError, match=f"{N_FACES - 1} training files listed for {N_FACES} codes"):
        FacePipeline.load(short)


def _other_weights(meta: dict) -> dict:
    meta = copy.deepcopy(meta)
    meta["autoencoder"]["weights_sha256"] = "ab" * 32
    meta["autoencoder"]["id"] = f"{meta['autoencoder']['name']}:abababababababab"
    return meta


def test_model_for_other_weights_refused(model64_file, tmp_path, ae):
    # 1. A model file recorded for other weights of its backend, loaded with the real ones.
    other_file = rewrite_model_metadata(model64_file, tmp_path / "other.lrgmm", _other_weights)
    with pytest.raises(ModelFileError, match=rf"fitted with autoencoder '{ae.name}:abababababababab'.*same autoencoder weights"):
        FacePipeline.load(other_file)
    with pytest.raises(ModelFileError, match=f"{ae.name}:abababababababab"):
        FacePipeline.load(other_file, autoencoder=ae)

    # 2. The real model, loaded with an instance of its backend whose weights hash differs.
    fake = copy.copy(ae)
    fake.weights_sha256 = "cd" * 32
    assert fake.id != ae.id
    with pytest.raises(ModelFileError, match=rf"but '{ae.name}:cdcdcdcdcdcdcdcd' was given"):
        FacePipeline.load(model64_file, autoencoder=fake)


class _TinyAE(autoencoders.Autoencoder):
    name = "tiny"
    weights_sha256 = "0" * 64
    preferred_q = 2

    def __init__(self, **kwargs):
        pass

    def latent_shape(self, resolution):
        return (4, resolution // 8, resolution // 8)

    def encode(self, images):
        return torch.zeros(images.shape[0], 4, images.shape[2] // 8, images.shape[3] // 8)

    def decode(self, latents):
        return torch.zeros(latents.shape[0], 3, latents.shape[2] * 8, latents.shape[3] * 8)


def test_model_for_other_backend_refused(model64_file, tmp_path, monkeypatch):
    monkeypatch.setitem(autoencoders._FACTORIES, "tiny", _TinyAE)
    # The model with a registered, different backend.
    with pytest.raises(ModelFileError, match=r"fitted with autoencoder '(taef2|fake):.*but 'tiny:0000000000000000' was given"):
        FacePipeline.load(model64_file, autoencoder="tiny")
    # A model recorded for a backend this installation does not have.
    def vqgan(m):
        m = copy.deepcopy(m)
        m["autoencoder"] = {"name": "vqgan", "id": "vqgan:0123456789abcdef", "weights_sha256": "01" * 32}
        return m

    foreign = rewrite_model_metadata(model64_file, tmp_path / "vqgan.lrgmm", vqgan)
    with pytest.raises(ModelFileError, match=r"vqgan\.lrgmm was fitted with autoencoder 'vqgan'.*not available.*taef2"):
        FacePipeline.load(foreign)


# --------------------------------------------------------------------------- atomic writes


def _fail_midway(exc):
    def broken_save_file(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"\x00" * 1000)  # half a file, then the "disk is full"
        raise exc

    return broken_save_file


@pytest.mark.parametrize("exc", [OSError(28, "No space left on device"), KeyboardInterrupt()])
def test_failed_save_leaves_nothing(fitted64, tmp_path, monkeypatch, exc):
    folder = tmp_path / "models"
    folder.mkdir()
    monkeypatch.setattr(tensor_file, "save_file", _fail_midway(exc))
    with pytest.raises(type(exc)):
        fitted64.save(folder / "new.lrgmm")
    assert list(folder.iterdir()) == []  # no target, no temporary file


def test_failed_save_keeps_the_existing_file(fitted64, model64_file, tmp_path, monkeypatch):
    target = tmp_path / "faces.lrgmm"
    shutil.copyfile(model64_file, target)
    before = target.read_bytes()
    monkeypatch.setattr(tensor_file, "save_file", _fail_midway(OSError(5, "Input/output error")))
    with pytest.raises(OSError, match="Input/output error"):
        fitted64.save(target)
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["faces.lrgmm"]
    load_model_file(target)  # still a good model


def test_save_replaces_an_existing_file(fitted64, tmp_path):
    target = tmp_path / "m.lrgmm"
    target.write_bytes(b"old")
    fitted64.save(target)
    assert read_metadata(target)["fit"]["n_images"] == N_FACES
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.lrgmm"]


# ------------------------------------------------------------------ schema of damaged files


def _rewrite(src: Path, dst: Path, meta_change=None, tensor_change=None, raw_meta: str | None = None) -> Path:
    """Copy a model file with its metadata and/or tensors changed (what a damaged or hand-edited
    file looks like once the container itself is readable)."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(src), framework="pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
        meta = json.loads(f.metadata()["lrgmm"])
    if meta_change:
        meta = copy.deepcopy(meta)
        meta_change(meta)  # in place
    if tensor_change:
        tensor_change(tensors)
    save_file(tensors, str(dst), metadata={"lrgmm": raw_meta if raw_meta is not None else json.dumps(meta)})
    return dst


def _set(dotted: str, value):
    def change(m):
        node = m
        *parents, last = dotted.split(".")
        for p in parents:
            node = node[p]
        if value is _DELETE:
            del node[last]
        else:
            node[last] = value(node[last]) if callable(value) else value
    return change


_DELETE = object()

BAD_METADATA = {
    "no fit": (_set("fit", _DELETE), r"'fit' is missing"),
    "fit is a list": (_set("fit", [1, 2]), r"'fit' is a list, not an object"),
    "no ranks": (_set("fit.ranks", _DELETE), r"'fit\.ranks' is missing"),
    "ranks too short": (_set("fit.ranks", lambda r: r[:-1]), r"'fit\.ranks' has 3 entries, expected 4"),
    "negative rank": (_set("fit.ranks", lambda r: [-1] + r[1:]), r"'fit\.ranks\[0\]' is -1, expected >= 0"),
    "nn_iterations as text": (_set("hyperparameters.nn_iterations", "1"), r"'hyperparameters\.nn_iterations' is \"1\", not an integer"),
    "nn_iterations 0": (_set("hyperparameters.nn_iterations", 0), r"'hyperparameters\.nn_iterations' is 0, expected >= 1"),
    "even patch": (_set("hyperparameters.patch_size", 4), r"'hyperparameters\.patch_size' is 4, not odd"),
    "lambda above 1": (_set("hyperparameters.temperature", 1.5), r"'hyperparameters\.temperature' is 1\.5, expected <= 1"),
    "lambda as text": (_set("hyperparameters.temperature", "0.12"), r"'hyperparameters\.temperature' .* not a finite number"),
    "max_share 0": (_set("hyperparameters.max_share", 0), r"'hyperparameters\.max_share' is 0, expected > 0"),
    "max_share above 1": (_set("hyperparameters.max_share", 1.5), r"'hyperparameters\.max_share' is 1\.5, expected <= 1"),
    "max_share as text": (_set("hyperparameters.max_share", "0.2"), r"'hyperparameters\.max_share' .* not a finite number"),
    "spread 0": (_set("hyperparameters.spread", 0), r"'hyperparameters\.spread' is 0, expected > 0"),
    "spread as text": (_set("hyperparameters.spread", "1.5"), r"'hyperparameters\.spread' .* not a finite number"),
    "unknown nn_order": (_set("hyperparameters.nn_order", "spiral"), r"'hyperparameters\.nn_order' is 'spiral', not one of 'parallel', 'raster'"),
    "q above c": (_set("hyperparameters.n_channels", 64), r"'hyperparameters\.n_channels' is 64, expected <= 32"),
    "version as text": (_set("format_version", "1"), r"'format_version' is '1', not a version number"),
    "version as float": (_set("format_version", 1.0), r"'format_version' is 1\.0, not a version number"),
    "version as bool": (_set("format_version", True), r"'format_version' is True, not a version number"),
    "latent shape of 2": (_set("latent_shape", [32, 16]), r"'latent_shape' has 2 entries, expected 3"),
    "d0 off": (_set("fit.d0", 4095), r"'fit\.d0' is 4095, but q h w = 16 x 16 x 16 = 4096"),
    "id a number": (_set("autoencoder.id", 5), r"'autoencoder\.id' is 5, not a non-empty string"),
    "resolution 0": (_set("resolution", 0), r"'resolution' is 0, expected >= 1"),
    "file without hash": (lambda m: m["training_files"][3].pop("sha256"), r"'training_files\[3\]\.sha256' is missing"),
    "converged as text": (_set("fit.em_converged", "yes"), r"'fit\.em_converged' is \"yes\", not true or false"),
    "no parameter counts": (_set("parameter_counts", _DELETE), r"'parameter_counts' is missing"),
}


@pytest.mark.parametrize("case", list(BAD_METADATA))
def test_damaged_metadata_is_named(case, model64_file, tmp_path):
    change, pattern = BAD_METADATA[case]
    bad = _rewrite(model64_file, tmp_path / "bad.lrgmm", change)
    with pytest.raises(ModelFileError, match=r"bad\.lrgmm: .*" + pattern):
        read_metadata(bad)  # what `lrgmm info` reads
    with pytest.raises(ModelFileError, match=pattern):
        load_model_file(bad)  # what FacePipeline.load reads


@pytest.mark.parametrize("raw", ["[1, 2, 3]", '"a string"', "null", "7"])
def test_metadata_that_is_not_an_object(raw, model64_file, tmp_path, capsys, lrgmm_cache):
    from lrgmm.cli import main

    bad = _rewrite(model64_file, tmp_path / "bad.lrgmm", raw_meta=raw)
    with pytest.raises(ModelFileError, match=r"bad\.lrgmm: model metadata is a JSON \w+, not an object"):
        read_metadata(bad)
    for argv in (["info", bad], ["info", "--json", bad], ["sample", bad, "-n", 1, "-o", tmp_path / "o", "--quiet"],
                 ["eval", bad, "--real", tmp_path, "-n", 2, "--quiet"]):
        rc = main([str(a) for a in argv])
        err = capsys.readouterr().err
        assert rc == 2 and err.startswith("error: ") and "Traceback" not in err, (argv, err)
        assert "not an object" in err
    assert not (tmp_path / "o").exists()


def _tensor(name, edit):
    def change(t):
        t[name] = edit(t[name].clone())
    return change


def _poke(index, value):
    def edit(x):
        x.view(-1)[index] = value
        return x
    return edit


BAD_TENSORS = {
    "NaN in a mean": (_tensor("mixture.means", _poke(7, float("nan"))), r"'mixture\.means' holds 1 NaN or infinite"),
    "inf in the codes": (_tensor("memory.codes", _poke(0, float("inf"))), r"'memory\.codes' holds 1 NaN or infinite"),
    "NaN in P0": (_tensor("projector.components", _poke(3, float("nan"))), r"'projector\.components' holds 1 NaN"),
    "codes as int32": (_tensor("memory.codes", lambda x: x.to(torch.int32)), r"'memory\.codes' has dtype torch\.int32"),
    "one code short": (_tensor("memory.codes", lambda x: x[1:]), r"'memory\.codes' has shape \(63, 16, 16, 16\), expected \(64, 16, 16, 16\)"),
    "label out of range": (_tensor("memory.labels", _poke(5, 4)), r"'memory\.labels' holds components outside \[0, 4\)"),
    "negative weight": (_tensor("mixture.weights", lambda x: -x), r"'mixture\.weights' is not a probability vector"),
    "rank above stored": (_tensor("mixture.ranks", _poke(0, 10_000)), r"'mixture\.ranks' holds ranks outside"),
    "negative variance": (_tensor("mixture.eigenvalues", _poke(0, -1.0)), r"'mixture\.eigenvalues' holds negative"),
    "K of 3": (_tensor("mixture.weights", lambda x: x[:3]), r"'mixture\.weights' has shape \(3,\), expected \(4,\)"),
}


@pytest.mark.parametrize("case", list(BAD_TENSORS))
def test_damaged_tensors_are_named(case, model64_file, tmp_path):
    change, pattern = BAD_TENSORS[case]
    bad = _rewrite(model64_file, tmp_path / "bad.lrgmm", tensor_change=change)
    with pytest.raises(ModelFileError, match=r"bad\.lrgmm: tensor " + pattern):
        load_model_file(bad)
    with pytest.raises(ModelFileError, match=pattern):
        FacePipeline.load(bad, progress=False)


def test_info_on_damaged_metadata(model64_file, tmp_path, capsys):
    from lrgmm.cli import main

    bad = _rewrite(model64_file, tmp_path / "bad.lrgmm", _set("fit", _DELETE))
    assert main(["info", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err == f"error: {bad}: model metadata field 'fit' is missing; the file is damaged or was not written by lrgmm, refit it with `lrgmm fit`\n"


# -------------------------------------------------------------------- lambda and strict JSON


@pytest.mark.parametrize("t", [float("inf"), 1e308, float("nan"), 0.0, -0.1, 1.5])
def test_lambda_must_be_finite_in_0_1(t):
    from lrgmm.core.model import LRGMM

    y = torch.randn(16, 4, 4, 4, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match=r"temperature \(lambda\) must be > 0 and <= 1 \(a finite number\)"):
        LRGMM(n_channels=4, n_components=1, temperature=t).fit(y)
    m = LRGMM(n_channels=4, n_components=1, temperature=0.5).fit(y)
    with pytest.raises(ValueError, match=r"temperature \(lambda\) must be > 0 and <= 1"):
        m.sample(2, seed=0, temperature=t)  # inf used to mean rank 1, silently


def test_mixture_rank_of_a_huge_lambda_does_not_overflow():
    from lrgmm.core.mixture import LowRankGaussianMixture, low_rank_dims

    w = torch.tensor([0.25, 0.75])
    assert low_rank_dims(w, 64, 1e308).tolist() == [64, 64]  # every direction, not rank 1
    for t in (float("inf"), float("nan")):
        with pytest.raises(ValueError, match="must be > 0 and finite"):
            low_rank_dims(w, 64, t)
        with pytest.raises(ValueError, match="must be > 0 and finite"):
            LowRankGaussianMixture(n_components=1, temperature=t).fit(torch.randn(8, 5))


def test_pipeline_checks_lambda_before_encoding(tmp_path):
    with pytest.raises(ValueError, match=r"temperature \(lambda\) must be > 0 and <= 1"):
        FacePipeline(autoencoder="no-such-backend", temperature=float("inf")).fit(tmp_path / "missing")


@pytest.mark.parametrize("value", ["inf", "1e308", "nan", "0", "2", "abc"])
def test_cli_refuses_bad_lambda(value, tmp_path, capsys, monkeypatch):
    from lrgmm.cli import main

    def started(*a, **k):
        raise AssertionError("the command ran with a bad lambda")

    monkeypatch.setattr(FacePipeline, "fit", started)
    monkeypatch.setattr(FacePipeline, "load", started)
    for argv in (["fit", tmp_path, "-o", tmp_path / "m.lrgmm", "--temperature", value],
                 ["sample", tmp_path / "m.lrgmm", "-o", tmp_path / "o", "--lambda", value],
                 ["complete", tmp_path / "m.lrgmm", tmp_path / "p.png", "--box", 0, 0, 8, 8, "-o", tmp_path / "o",
                  "--temperature", value]):
        with pytest.raises(SystemExit) as e:
            main([str(a) for a in argv])
        err = capsys.readouterr().err
        assert e.value.code == 2 and "Traceback" not in err
        assert "argument --temperature/--lambda: must be" in err and value in err


def test_non_finite_metadata_is_refused_both_ways(fitted64, model64_file, tmp_path, capsys):
    from lrgmm.cli import main

    # Reading: Python's json wrote `Infinity`, which no strict reader accepts; nor do we.
    for text in ("Infinity", "NaN", "1e999"):
        raw = json.dumps({**read_metadata(model64_file), "hyperparameters": "X"}).replace('"X"', text)
        bad = _rewrite(model64_file, tmp_path / "inf.lrgmm", raw_meta=raw)
        with pytest.raises(ModelFileError, match=r"inf\.lrgmm: model metadata is not valid JSON"):
            read_metadata(bad)
        assert main(["info", "--json", str(bad)]) == 2
        out, err = capsys.readouterr()
        assert out == "" and "not valid JSON" in err
    # `info --json` of a good model is strict JSON.
    assert main(["info", "--json", str(model64_file)]) == 0

    def refuse(name):
        raise AssertionError(f"{name} in the JSON")

    json.loads(capsys.readouterr().out, parse_constant=refuse)
    # Writing: a NaN in the metadata is named, and nothing is written.
    meta = fitted64.metadata()
    meta["fit"]["mean_log_likelihood"] = float("nan")
    with pytest.raises(ModelFileError, match=r"cannot write .*nan\.lrgmm: model metadata field 'fit\.mean_log_likelihood' is nan"):
        save_model_file(tmp_path / "nan.lrgmm", fitted64.model_, meta)
    assert not (tmp_path / "nan.lrgmm").exists()


def test_format_version_1_files_still_load(fitted64, model64_file, tmp_path):
    """Files written before the density rank was separate (format 1: no density ranks or counts)
    load with density ranks = sampling ranks, as they were fitted, and sample the same faces."""
    import json

    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(model64_file), framework="pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys() if k not in TENSOR_NAMES_V2 + TENSOR_NAMES_V3}
        meta = json.loads(f.metadata()["lrgmm"])
    meta["format_version"] = 1
    for key in ("density_ranks", "component_counts", "noise_variances", "hard_assignment"):
        meta["fit"].pop(key, None)
    old = tmp_path / "v1.lrgmm"
    save_file(tensors, str(old), metadata={"lrgmm": json.dumps(meta)})
    model, _ = load_model_file(old)
    assert torch.equal(model.mixture_.density_ranks_, model.mixture_.ranks_)
    assert torch.equal(model.mixture_.counts_, torch.bincount(model.labels_, minlength=model.n_components_))
    a = fitted64.model_.sample(8, seed=0)
    b = model.sample(8, seed=0)
    assert torch.equal(a.codes, b.codes) and torch.equal(a.provenance, b.provenance)


def test_format_version_2_files_load_and_decode_codes(fitted64, model64_file, tmp_path):
    """Files written before the memory kept the training latents (format 2) load, draw the same
    codes and provenance, and decode P0*(codes) as they did; saved again they stay format 2."""
    import json

    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(model64_file), framework="pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys() if k not in TENSOR_NAMES_V3}
        meta = json.loads(f.metadata()["lrgmm"])
    meta["format_version"] = 2
    old = tmp_path / "v2.lrgmm"
    save_file(tensors, str(old), metadata={"lrgmm": json.dumps(meta)})
    model, _ = load_model_file(old)
    assert model.latents_ is None
    a, b = fitted64.model_.sample(8, seed=0), model.sample(8, seed=0)
    assert torch.equal(a.codes, b.codes) and torch.equal(a.provenance, b.provenance)
    assert torch.equal(b.latents, model.projector_.inverse_transform(b.codes))
    assert not torch.equal(a.latents, b.latents)  # the format 3 model decodes the full pixels
    again = tmp_path / "again.lrgmm"
    save_model_file(again, model, {k: v for k, v in meta.items() if k not in ("format", "format_version")})
    assert read_metadata(again)["format_version"] == 2
    assert load_model_file(again)[0].latents_ is None


def test_files_older_than_the_nn_order_and_budget_keep_their_nn_step(fitted64, model64_file, tmp_path):
    """A file without hyperparameters.nn_order or .max_share (written before they existed) loads
    with the parallel order and the 0.25 budget it loaded with before the defaults moved, not
    with today's raster order and 0.10."""
    drop_order, drop_budget = _set("hyperparameters.nn_order", _DELETE), _set("hyperparameters.max_share", _DELETE)
    old = _rewrite(model64_file, tmp_path / "old.lrgmm", lambda m: (drop_order(m), drop_budget(m)))
    model, _ = load_model_file(old)
    assert (model.nn_order, model.max_share) == ("parallel", 0.25)
    pipe = FacePipeline.load(old)  # a refit (forget) keeps them too
    assert (pipe.nn_order, pipe.max_share) == ("parallel", 0.25)
    assert (fitted64.model_.nn_order, fitted64.model_.max_share, fitted64.model_.spread) == ("raster", 0.2, 1.5)
    ref = fitted64.model_.sample(4, seed=2, nn_order="parallel", max_share=0.25)
    assert torch.equal(model.sample(4, seed=2).provenance, ref.provenance)


def test_spread_is_recorded_and_older_files_sample_at_psi_1(fitted64, model64_file, tmp_path):
    """hyperparameters.spread round-trips; a file written before it existed loads with psi = 1,
    the draws it made then."""
    model, meta = load_model_file(model64_file)
    assert meta["hyperparameters"]["spread"] == model.spread == fitted64.model_.spread
    old = _rewrite(model64_file, tmp_path / "old.lrgmm", _set("hyperparameters.spread", _DELETE))
    loaded, _ = load_model_file(old)
    assert loaded.spread == 1.0 and FacePipeline.load(old).spread == 1.0
    ref = fitted64.model_.sample(4, seed=2, spread=1.0, nn=False)
    torch.testing.assert_close(loaded.sample(4, seed=2, nn=False).codes, ref.codes)


def test_lambda_as_asked_and_as_fitted_round_trip(fitted64, model64_file, tmp_path):
    """hyperparameters.temperature is the lambda the ranks were taken at; fit.temperature_requested
    the lambda asked for (null: from K). A refit (``forget``) asks the same; files written before
    lambda followed K (no temperature_requested) load with the recorded lambda as asked."""
    model, meta = load_model_file(model64_file)
    assert model.temperature == model.temperature_ == fitted64.model_.temperature_ == 1.0  # the default
    assert model.get_params() == fitted64.model_.get_params()
    pipe = FacePipeline.load(model64_file)  # the pipeline's parameters too are as asked
    assert pipe.temperature == 1.0 and pipe.n_components == 4
    # Null (files fitted with lambda from K, the default of earlier releases) stays "from K".
    from_k = _rewrite(model64_file, tmp_path / "from_k.lrgmm", _set("fit.temperature_requested", None))
    m_k, _ = load_model_file(from_k)
    assert m_k.temperature is None and m_k.temperature_ == 1.0
    assert FacePipeline.load(from_k).temperature is None
    old = _rewrite(model64_file, tmp_path / "old.lrgmm", _set("fit.temperature_requested", _DELETE))
    before, _ = load_model_file(old)
    assert before.temperature == before.temperature_ == 1.0
    assert torch.equal(before.sample(4, seed=1).codes, fitted64.model_.sample(4, seed=1).codes)
    # An explicit lambda is kept as asked.
    odd = _rewrite(model64_file, tmp_path / "odd.lrgmm", _set("fit.temperature_requested", 0.05))
    assert load_model_file(odd)[0].temperature == 0.05
    bad = _rewrite(model64_file, tmp_path / "bad.lrgmm", _set("fit.temperature_requested", 2))
    with pytest.raises(ModelFileError, match=r"fit\.temperature_requested"):
        load_model_file(bad)
