"""The autoencoder's precision (fp32 | bf16 | auto), its NHWC layout, and the face writer's thread."""

from __future__ import annotations

import copy
import json
import threading

import pytest
import torch

from lrgmm.autoencoders import FakeAutoencoder, get_autoencoder
from lrgmm.autoencoders import precision as prec
from lrgmm.errors import ParameterError
from lrgmm.io.latent_cache import LatentCache
from lrgmm.pipeline import FacePipeline
from lrgmm.pipeline.encoding import encode_images
from lrgmm.pipeline.generated import FaceWriter


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(10 * torch.log10(1 / ((a - b) ** 2).mean()))


# ------------------------------------------------------------------------- choosing the precision

@pytest.mark.parametrize("bad", ["fp16", "BF16", "", None, 16, "float32"])
def test_unknown_precision_is_refused_with_the_choices(bad):
    with pytest.raises(ParameterError, match="fp32, bf16, auto"):
        prec.check_precision(bad)
    with pytest.raises(ParameterError, match="precision"):
        FakeAutoencoder(precision=bad)


@pytest.mark.parametrize("native", [True, False])
def test_auto_takes_bf16_exactly_where_it_is_native(monkeypatch, native):
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: native)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    assert prec.native_bf16("cpu") is native
    assert prec.resolve_precision("auto") == ("bf16" if native else "fp32")
    assert FakeAutoencoder(precision="auto").precision == ("bf16" if native else "fp32")
    # explicit choices are taken as asked, native or not
    assert prec.resolve_precision("bf16") == "bf16" and prec.resolve_precision("fp32") == "fp32"


@pytest.mark.parametrize("isa, native", [("AVX2", False), ("avx512_core", False), ("AVX512_CORE_BF16", True),
                                         ("AVX512_CORE_AMX", True), ("ALL", True)])
def test_a_onednn_isa_cap_below_bf16_makes_auto_fp32(monkeypatch, isa, native):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True)
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", isa)
    assert prec.native_bf16("cpu") is native


def test_cache_keys_keep_the_precisions_apart():
    fp32, bf16 = FakeAutoencoder(), FakeAutoencoder(precision="bf16")
    assert fp32.id == bf16.id  # the same weights: a model fitted with one loads with the other
    assert fp32.latent_key == fp32.id and bf16.latent_key == f"{bf16.id}+bf16"


def test_bf16_latents_are_cached_apart_and_recorded(faces64_dir, tmp_path):
    cache = LatentCache(tmp_path / "cache")
    a = encode_images(faces64_dir, FakeAutoencoder(), resolution=128, cache=cache, progress=False)
    b = encode_images(faces64_dir, FakeAutoencoder(precision="bf16"), resolution=128, cache=cache, progress=False)
    assert (a.precision, b.precision) == ("fp32", "bf16")
    assert b.n_cached == 0 and b.n_encoded == len(b)  # fp32 latents are not reused for bf16
    again = encode_images(faces64_dir, FakeAutoencoder(precision="bf16"), resolution=128, cache=cache, progress=False)
    assert again.n_cached == len(again) and torch.equal(again.latents, b.latents)
    assert not torch.equal(a.latents, b.latents)
    assert torch.allclose(a.latents, b.latents, atol=0.05)  # bf16 rounding of a linear map


def test_precision_is_recorded_with_faces_and_in_the_model_file(faces64_encoded, tmp_path):
    pipe = FacePipeline(autoencoder="fake", n_components=1, progress=False, precision="bf16")
    fake = FakeAutoencoder(precision="bf16")
    encoded = encode_images(faces64_encoded.paths, fake, resolution=128, cache=False, progress=False)
    pipe.fit(encoded)
    assert pipe.autoencoder_.precision == "bf16"
    out = pipe.generate(3, seed=1)
    assert out.settings["precision"] == "bf16"
    path = pipe.save(tmp_path / "m.lrgmm")
    loaded = FacePipeline.load(path, progress=False, precision="fp32")  # the run precision is the loader's choice
    assert loaded.autoencoder_.precision == "fp32" and loaded.encoding_precision_ == "bf16"
    assert loaded.training_encoder().precision == "bf16"  # new photos are encoded like the training ones
    assert loaded.metadata()["fit"]["encoding_precision"] == "bf16"
    written = loaded.generate_to(tmp_path / "faces", 3, seed=1, progress=False)
    summary = json.loads((tmp_path / "faces" / "samples.json").read_text())
    assert summary["settings"]["precision"] == "fp32" and len(written["faces"]) == 3


# ------------------------------------------------------------------------------ TAEF2 in practice

@pytest.fixture(scope="module")
def real_batch(taef2):
    torch.manual_seed(0)
    x = torch.rand(4, 3, 64, 64)
    return x, taef2.encode(x)


def test_taef2_nhwc_gives_the_nchw_result_to_rounding(taef2, real_batch):
    x, z = real_batch
    with torch.inference_mode():
        z_nchw = copy.deepcopy(taef2.encoder).to(memory_format=torch.contiguous_format)(x)
        y_nchw = copy.deepcopy(taef2.decoder).to(memory_format=torch.contiguous_format)(z).clamp(0, 1)
    assert (z - z_nchw).abs().max() < 1e-4
    assert (taef2.decode(z) - y_nchw).abs().max() < 1e-4
    assert taef2.decode(z).is_contiguous()  # callers get ordinary NCHW tensors


def test_taef2_bf16_stays_close_to_fp32(taef2, real_batch, faces_dir):
    """bf16 TAEF2: decoded faces within 35 dB PSNR of fp32 (37.9 dB measured), latents within
    3 % relative error; same shapes and dtype, deterministic."""
    x, z = real_batch
    bf16 = get_autoencoder("taef2", precision="bf16")
    assert bf16.precision == "bf16" and bf16.id == taef2.id
    y32, y16 = taef2.decode(z), bf16.decode(z)
    assert y16.dtype == torch.float32 and y16.shape == y32.shape
    assert _psnr(y16, y32) > 35
    assert torch.equal(bf16.decode(z), y16)
    z16 = bf16.encode(x)
    assert float((z16 - z).norm() / z.norm()) < 0.03


# ------------------------------------------------------------------------------ the writer thread

def test_background_writer_writes_what_the_inline_one_writes(fitted64, tmp_path):
    batches = [fitted64.generate(5, seed=s) for s in (1, 2, 3)]
    outs = {}
    for background in (False, True):
        folder = tmp_path / f"bg{background}"
        with FaceWriter(folder, total=15, background=background, max_pending=1) as w:
            for b in batches:
                w.write(b)
            outs[background] = w.close(7, {"x": 1})
    names = sorted(p.name for p in (tmp_path / "bgTrue").iterdir())
    assert names == sorted(p.name for p in (tmp_path / "bgFalse").iterdir())
    assert len([n for n in names if n.endswith("_provenance.json")]) == 15
    for name in names:
        assert (tmp_path / "bgTrue" / name).read_bytes() == (tmp_path / "bgFalse" / name).read_bytes(), name
    assert [p.name for p in outs[True]["faces"]] == [f"face_{i:04d}.png" for i in range(15)]


def test_a_write_error_reaches_the_caller_and_no_summary_is_written(fitted64, tmp_path, monkeypatch):
    import lrgmm.pipeline.generated as generated

    calls = {"n": 0}
    real = generated.save_png

    def failing(img, path):
        calls["n"] += 1
        if calls["n"] == 4:
            raise OSError(28, "No space left on device")
        return real(img, path)

    monkeypatch.setattr(generated, "save_png", failing)
    batch = fitted64.generate(3, seed=1)
    with pytest.raises(OSError, match="No space left"):
        with FaceWriter(tmp_path / "out", max_pending=1) as w:
            for _ in range(50):
                w.write(batch)
            w.close(1, {})
    assert not (tmp_path / "out" / "samples.json").exists()
    assert not any(t.name == "lrgmm-face-writer" for t in threading.enumerate())


def test_an_interrupted_run_stops_the_writer(fitted64, tmp_path):
    batch = fitted64.generate(4, seed=1)
    with pytest.raises(KeyboardInterrupt):
        with FaceWriter(tmp_path / "out", max_pending=1) as w:
            w.write(batch)
            raise KeyboardInterrupt
    assert not (tmp_path / "out" / "samples.json").exists()
    assert not any(t.name == "lrgmm-face-writer" for t in threading.enumerate())
