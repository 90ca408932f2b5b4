"""The ``diffusers`` backend on small random models saved with ``save_pretrained``; the backend
registry; and the message a missing optional dependency gives.

Reference match: the backend's latents and images must equal what the diffusers model computes
directly (posterior mean, scaling and shift factors, [-1, 1] <-> [0, 1]) to ``ATOL``. The tests of
the missing-dependency message run without diffusers installed too.
"""

from __future__ import annotations

import json
import shutil
import sys

import pytest
import torch
from backend_fixtures import RESOLUTION, SMALL_VQGAN_CONFIG, small_faces, write_yaml
from conftest import rewrite_model_metadata, utkface_images

from lrgmm.autoencoders import (
    Autoencoder,
    DiffusersVAE,
    OptionalDependencyError,
    available,
    backend_options,
    get_autoencoder,
)
from lrgmm.errors import LrgmmError, ModelFileError, WeightsError
from lrgmm.io.model_file import read_metadata
from lrgmm.pipeline import FacePipeline

ATOL = 1e-5


def _needs_diffusers():
    return pytest.importorskip("diffusers")


@pytest.fixture(scope="module")
def kl_folder(tmp_path_factory):
    _needs_diffusers()
    from backend_fixtures import save_small_kl

    d = tmp_path_factory.mktemp("kl") / "vae"
    vae = save_small_kl(d, seed=0)
    return d, vae


@pytest.fixture(scope="module")
def kl(kl_folder):
    return DiffusersVAE(kl_folder[0])


@pytest.fixture(scope="module")
def images():
    return torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(2))


# ------------------------------------------------------------------------- registry, extras


def test_registry_lists_backends():
    assert {"taef2", "vqgan", "diffusers"} <= set(available())
    with pytest.raises(ValueError, match=r"no diffusers model folder given.*--ae-weights"):
        get_autoencoder("diffusers")
    # command-line options -> each backend's keyword arguments
    assert backend_options("vqgan", weights="a.ckpt", config="a.yaml", requantize=True) == {
        "checkpoint": "a.ckpt", "config": "a.yaml", "requantize": True}
    assert backend_options("diffusers", weights="sd-vae", subfolder="vae", requantize=None) == {
        "path": "sd-vae", "subfolder": "vae"}
    assert backend_options("taef2", weights="w/") == {"weights_dir": "w/"}
    assert backend_options("taef2") == {}
    with pytest.raises(ValueError, match=r"the taef2 autoencoder does not take --ae-config, --requantize \(it takes: --ae-weights\)"):
        backend_options("taef2", config="x.yaml", requantize=True)
    with pytest.raises(ValueError, match="does not take --ae-config"):
        backend_options("diffusers", config="x.yaml")
    with pytest.raises(ValueError, match="unknown autoencoder 'nope'"):
        backend_options("nope")


def test_taef2_records_no_config(taef2):
    assert taef2.config() == {}  # TAEF2 finds its weights itself: nothing to record


def test_missing_diffusers_names_the_extra(tmp_path, monkeypatch):
    folder = tmp_path / "vae"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"_class_name": "AutoencoderKL"}))
    (folder / "diffusion_pytorch_model.safetensors").write_bytes(b"")
    ckpt = tmp_path / "last.ckpt"
    ckpt.write_bytes(b"")
    monkeypatch.setitem(sys.modules, "diffusers", None)  # import diffusers fails
    extra = r"pip install 'lrgmm\[diffusers\]'"
    with pytest.raises(OptionalDependencyError, match=r"'diffusers' autoencoder backend needs the diffusers package.*" + extra):
        DiffusersVAE(folder)
    pytest.importorskip("yaml")
    with pytest.raises(OptionalDependencyError, match=r"'vqgan' autoencoder backend needs the diffusers package.*" + extra):
        get_autoencoder("vqgan", checkpoint=ckpt, config=write_yaml(SMALL_VQGAN_CONFIG, tmp_path / "m.yaml"))
    assert issubclass(OptionalDependencyError, LrgmmError) and issubclass(OptionalDependencyError, ImportError)


class _PoolAE(Autoencoder):
    """A stand-in backend (8x8 average pooling) to make a model file fast, without any weights."""

    name = "pool"
    weights_sha256 = "0" * 64
    preferred_q = 3

    def latent_shape(self, resolution):
        return (3, resolution // 8, resolution // 8)

    def encode(self, images):
        return torch.nn.functional.avg_pool2d(images, 8)

    def decode(self, latents):
        return torch.nn.functional.interpolate(latents, scale_factor=8).clamp(0, 1)


def test_model_file_for_missing_extra(faces_dir, tmp_path, monkeypatch):
    """A model recorded for the diffusers backend, loaded where diffusers is missing."""
    faces = small_faces(utkface_images(faces_dir), tmp_path / "faces")
    pipe = FacePipeline(autoencoder=_PoolAE(), resolution=RESOLUTION, cache=False, progress=False).fit(faces)
    model = pipe.save(tmp_path / "pool.lrgmm")

    def record(m):
        m["autoencoder"] = {"name": "diffusers", "id": "diffusers:00", "weights_sha256": "00",
                            "config": {"path": str(tmp_path / "vae"), "subfolder": None, "requantize": False}}
        return m

    (tmp_path / "vae").mkdir()
    (tmp_path / "vae" / "config.json").write_text(json.dumps({"_class_name": "AutoencoderKL"}))
    (tmp_path / "vae" / "diffusion_pytorch_model.safetensors").write_bytes(b"")
    bad = rewrite_model_metadata(model, tmp_path / "d.lrgmm", record)
    monkeypatch.setitem(sys.modules, "diffusers", None)
    with pytest.raises(ModelFileError, match=r"fitted with autoencoder 'diffusers', which is not available here.*lrgmm\[diffusers\]"):
        FacePipeline.load(bad)


# ------------------------------------------------------------------------- reference match


def test_kl_matches_diffusers(kl_folder, kl, images):
    _, vae = kl_folder
    sf, shift = 0.5, 0.1
    with torch.no_grad():
        mean = vae.encode(images * 2 - 1).latent_dist.mean
        ref_z = (mean - shift) * sf
        ref_x = ((vae.decode(ref_z / sf + shift).sample + 1) / 2).clamp(0, 1)
    z = kl.encode(images)
    assert z.shape == (3, 4, 16, 16) == (3, *kl.latent_shape(32))
    assert (z - ref_z).abs().max() < ATOL
    assert (kl.decode(z) - ref_x).abs().max() < ATOL
    assert torch.equal(z, kl.encode(images))  # the mean, never a sample
    assert kl.scaling_factor == sf and kl.shift_factor == shift
    assert kl.preferred_q == 4 and kl.class_name == "AutoencoderKL"
    conf = kl.config()
    assert conf == {"path": str(kl_folder[0].resolve()), "subfolder": None, "requantize": False}
    assert get_autoencoder("diffusers", **conf).id == kl.id
    with pytest.raises(ValueError, match="requantize=True needs a VQModel"):
        DiffusersVAE(kl_folder[0], requantize=True)


def test_vqmodel_folder_and_pipeline_subfolder(tmp_path, images):
    _needs_diffusers()
    from backend_fixtures import save_small_vq

    vq = save_small_vq(tmp_path / "pipe" / "vqvae", seed=0)
    ae = DiffusersVAE(tmp_path / "pipe")  # a pipeline folder: its vqvae/ is found
    assert ae.subfolder == "vqvae" and ae.class_name == "VQModel"
    assert ae.latent_channels == 6 and ae.preferred_q == 6 and ae.scaling_factor == 2.0
    requant = DiffusersVAE(tmp_path / "pipe", requantize=True)
    with torch.no_grad():
        h = vq.encode(images * 2 - 1).latents
        plain = ((vq.decode(h, force_not_quantize=True).sample + 1) / 2).clamp(0, 1)
        quant = ((vq.decode(h).sample + 1) / 2).clamp(0, 1)
    z = ae.encode(images)
    assert (z - h * 2.0).abs().max() < ATOL
    assert (ae.decode(z) - plain).abs().max() < ATOL
    assert (requant.decode(z) - quant).abs().max() < ATOL
    assert (quant - plain).abs().max() > 0.01


# ------------------------------------------------------------------------- bad input


def test_bad_folders(kl_folder, tmp_path):
    src, _ = kl_folder
    with pytest.raises(WeightsError, match="does not exist"):
        DiffusersVAE(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(WeightsError, match="has no config.json"):
        DiffusersVAE(tmp_path / "empty")

    def variant(name, change=None, drop=None):
        d = tmp_path / name
        shutil.copytree(src, d)
        if change:
            cfg = json.loads((d / "config.json").read_text())
            change(cfg)
            (d / "config.json").write_text(json.dumps(cfg))
        if drop:
            (d / drop).unlink()
        return d

    with pytest.raises(WeightsError, match=r"holds a UNet2DModel; the diffusers backend supports AutoencoderKL, VQModel"):
        DiffusersVAE(variant("unet", lambda c: c.update(_class_name="UNet2DModel")))
    with pytest.raises(WeightsError, match=r"(?s)cannot load the AutoencoderKL.*size mismatch for encoder.conv_out.weight"):
        DiffusersVAE(variant("shapes", lambda c: c.update(latent_channels=8)))
    with pytest.raises(WeightsError, match=r"do not fit its config.json \(missing keys: "):
        DiffusersVAE(variant("missing", lambda c: c.update(layers_per_block=2)))
    with pytest.raises(WeightsError, match="has no weights"):
        DiffusersVAE(variant("no-weights", drop="diffusion_pytorch_model.safetensors"))


# ------------------------------------------------------------------------- end to end


def test_fit_sample_and_model_file(kl_folder, kl, faces_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("LRGMM_CACHE_DIR", str(tmp_path / "cache"))
    faces = small_faces(utkface_images(faces_dir), tmp_path / "faces")
    pipe = FacePipeline(autoencoder=kl, resolution=RESOLUTION, progress=False).fit(faces)
    assert pipe.model_.codes_.shape == (16, 4, 16, 16)  # q = all 4 channels
    out = pipe.generate(3, seed=7)
    assert out.images.shape == (3, 3, 32, 32) and out.samples.provenance.shape == (3, 16, 16)
    assert 0 <= float(out.images.min()) and float(out.images.max()) <= 1
    assert torch.equal(out.images, pipe.generate(3, seed=7).images)
    # encoding again hits the cache, keyed by this backend's id
    again = FacePipeline(autoencoder=kl, resolution=RESOLUTION, progress=False).encode(faces)
    assert again.n_cached == 16 and again.autoencoder_id == kl.id

    path = pipe.save(tmp_path / "kl.lrgmm")
    record = read_metadata(path)["autoencoder"]
    assert record == {"name": "diffusers", "id": kl.id, "weights_sha256": kl.weights_sha256, "config": kl.config()}
    # the decoder's precision is the loader's choice: the same as the instance's gives the same faces
    loaded = FacePipeline.load(path, progress=False, precision=kl.precision)
    assert isinstance(loaded.autoencoder_, DiffusersVAE) and loaded.autoencoder_ is not kl
    assert torch.equal(loaded.generate(3, seed=7).images, out.images)

    # a folder with other weights (or another scaling factor) is another autoencoder
    other = tmp_path / "other"
    shutil.copytree(kl_folder[0], other)
    cfg = json.loads((other / "config.json").read_text())
    cfg["scaling_factor"] = 0.25
    (other / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelFileError, match=r"fitted with autoencoder 'diffusers:.*same autoencoder weights"):
        FacePipeline.load(path, autoencoder=DiffusersVAE(other), progress=False)
