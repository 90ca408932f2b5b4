"""The .lrgmm model file: exact round trip, no pickle, metadata, errors, atomic writes.

Uses the session model fitted on 64 real faces through the real TAEF2 (``conftest.fitted64``).
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
    load_model_file,
    model_tensors,
    read_metadata,
)
from lrgmm.pipeline import FacePipeline

N_GEN = 6


def _safetensors_header(data: bytes) -> tuple[dict, int]:
    """Parse a safetensors file by hand: 8-byte little-endian header length, JSON header."""
    (n,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8 : 8 + n].decode("utf-8")), 8 + n


# ----------------------------------------------------------------------------- round trip


def test_round_trip_reproduces_samples_exactly(fitted64, model64_file, taef2):
    before = fitted64.generate(N_GEN, seed=1)
    loaded = FacePipeline.load(model64_file, autoencoder=taef2, progress=False)
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
    assert set(got) == set(TENSOR_NAMES)
    for name in TENSOR_NAMES:
        assert got[name].dtype == saved[name].dtype, name
        assert torch.equal(got[name], saved[name]), name
    assert model.get_params() == fitted64.model_.get_params()
    assert model.n_components_ == 4
    assert model.parameter_counts() == fitted64.model_.parameter_counts()


def test_load_by_recorded_autoencoder_name(fitted64, model64_file):
    """Without an explicit autoencoder, load builds the recorded backend from its name."""
    loaded = FacePipeline.load(model64_file, progress=False)
    assert loaded.autoencoder_.id == fitted64.autoencoder_.id
    assert loaded.resolution == 128 and loaded.n_components == 4 and loaded.n_channels == 16
    assert torch.equal(loaded.generate(2, seed=5).images, fitted64.generate(2, seed=5).images)


def test_file_is_plain_safetensors_not_pickle(model64_file):
    data = model64_file.read_bytes()
    assert not data.startswith(b"\x80") and not data.startswith(b"PK")  # pickle / torch zip
    header, start = _safetensors_header(data)
    meta = json.loads(header.pop("__metadata__")["lrgmm"])
    assert meta["format"] == "lrgmm-model"
    assert set(header) == set(TENSOR_NAMES)
    # The tensors tile the rest of the file exactly: nothing else (no pickled blob) is in it.
    spans = sorted(tuple(t["data_offsets"]) for t in header.values())
    assert spans[0][0] == 0 and spans[-1][1] == len(data) - start
    assert all(a[1] == b[0] for a, b in zip(spans, spans[1:]))
    assert {t["dtype"] for t in header.values()} <= {"F32", "F64", "I64"}
    assert header["memory.codes"]["shape"] == [N_FACES, 16, 16, 16]


def test_loading_never_unpickles(model64_file, taef2, monkeypatch):
    def refuse(*a, **k):
        raise AssertionError("the model file loader unpickled something")

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "Unpickler", refuse)
    monkeypatch.setattr(torch, "load", refuse)
    pipe = FacePipeline.load(model64_file, autoencoder=taef2, progress=False)
    assert pipe.model_.codes_.shape == (N_FACES, 16, 16, 16)


def test_metadata(fitted64, model64_file, taef2, faces64_dir):
    meta = read_metadata(model64_file)
    assert meta["format_version"] == FORMAT_VERSION == 2
    assert meta["autoencoder"] == {"name": "taef2", "id": taef2.id, "weights_sha256": taef2.weights_sha256}
    assert len(meta["autoencoder"]["weights_sha256"]) == 64
    assert meta["resolution"] == 128 and meta["latent_shape"] == [32, 16, 16]
    hp = meta["hyperparameters"]
    assert hp == {**fitted64.model_.get_params(), "n_channels": 16, "n_components": 4}
    expected = {"n_channels": 16, "n_components": 4, "temperature": 0.12, "patch_size": 5, "nn_iterations": 1,
                "reg_covar": 1e-3, "max_iter": 100, "tol": 1e-3, "random_state": 0}  # fmt: skip
    assert {k: hp[k] for k in expected} == expected
    fit = meta["fit"]
    assert fit["n_images"] == N_FACES and fit["d0"] == 16 * 16 * 16
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


def test_newer_format_version(model64_file, tmp_path):
    newer = rewrite_model_metadata(model64_file, tmp_path / "newer.lrgmm", lambda m: {**m, "format_version": 999})
    with pytest.raises(ModelFileError, match=r"format version 999, newer than this lrgmm reads \(1\).*upgrade"):
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
    meta["autoencoder"]["id"] = "taef2:abababababababab"
    return meta


def test_model_for_other_weights_refused(model64_file, tmp_path, taef2):
    # 1. A model file recorded for other TAEF2 weights, loaded with the real ones.
    other_file = rewrite_model_metadata(model64_file, tmp_path / "other.lrgmm", _other_weights)
    with pytest.raises(ModelFileError, match=r"fitted with autoencoder 'taef2:abababababababab'.*same autoencoder weights"):
        FacePipeline.load(other_file)
    with pytest.raises(ModelFileError, match="taef2:abababababababab"):
        FacePipeline.load(other_file, autoencoder=taef2)

    # 2. The real model, loaded with a TAEF2 instance whose weights hash differs.
    fake = copy.copy(taef2)
    fake.weights_sha256 = "cd" * 32
    assert fake.id != taef2.id
    with pytest.raises(ModelFileError, match=r"but 'taef2:cdcdcdcdcdcdcdcd' was given"):
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
    # The taef2 model with a registered, different backend.
    with pytest.raises(ModelFileError, match=r"fitted with autoencoder 'taef2:.*but 'tiny:0000000000000000' was given"):
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
