"""The ``vqgan`` backend against taming-transformers' own code.

A small VQGAN is built with the reference modules (PyPI ``taming-transformers-rom1504``), saved
as a taming Lightning checkpoint + YAML config, and loaded through :class:`lrgmm.autoencoders.VQGAN`
(diffusers' ``VQModel`` with the key mapping). Encoding and decoding must match the reference
to ``ATOL`` (measured: about 1e-6 on latents and images; float32 with different convolution and
attention kernels). Then a fit + sample on 16 real faces, the model-file round trip, and bad input.
"""

from __future__ import annotations

import copy
import json
import shutil
import sys
import warnings

import pytest

pytest.importorskip("diffusers")
pytest.importorskip("yaml")
pytest.importorskip("einops")  # taming's quantize module imports it
pytest.importorskip("taming.modules.diffusionmodules.model")

import torch  # noqa: E402
from backend_fixtures import (  # noqa: E402
    MARKER_NAME,
    RESOLUTION,
    SMALL_VQGAN_CONFIG,
    RunsCodeWhenUnpickled,
    build_taming_vqgan,
    fake_lightning,
    save_lightning_checkpoint,
    small_faces,
    taming_state_dict,
    write_yaml,
)
from conftest import utkface_images  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

from lrgmm.autoencoders import VQGAN, available, backend_options, get_autoencoder  # noqa: E402
from lrgmm.autoencoders.vqgan import (  # noqa: E402
    diffusers_to_taming_key,
    read_vqgan_config,
    taming_to_diffusers_key,
)
from lrgmm.errors import ModelFileError, WeightsError  # noqa: E402
from lrgmm.io.model_file import read_metadata  # noqa: E402
from lrgmm.errors import AutoencoderOptionsWarning  # noqa: E402
from lrgmm.pipeline import FacePipeline  # noqa: E402

ATOL = 1e-4  # reference match, absolute, on latents and on [0, 1] images


@pytest.fixture(scope="module")
def reference():
    return build_taming_vqgan(seed=0)


@pytest.fixture(scope="module")
def vq_files(reference, tmp_path_factory):
    d = tmp_path_factory.mktemp("vqgan")
    ckpt = save_lightning_checkpoint(taming_state_dict(reference), d / "last.ckpt")
    yaml_path = write_yaml(SMALL_VQGAN_CONFIG, d / "model.yaml")
    return ckpt, yaml_path


@pytest.fixture(scope="module")
def vqgan(vq_files):
    ckpt, cfg = vq_files
    return VQGAN(checkpoint=ckpt, config=cfg, batch_size=3)


@pytest.fixture(scope="module")
def images():
    g = torch.Generator().manual_seed(1)
    return torch.rand(5, 3, 32, 32, generator=g)


# ------------------------------------------------------------------------- reference match


def test_key_mapping_covers_taming_and_inverts(reference, vqgan):
    n_levels = len(SMALL_VQGAN_CONFIG["model"]["params"]["ddconfig"]["ch_mult"])
    taming_keys = list(reference.state_dict())
    mapped = {taming_to_diffusers_key(k, n_levels) for k in taming_keys}
    assert None not in mapped
    assert mapped == set(vqgan.model.state_dict())  # one to one onto diffusers' VQModel
    for k in taming_keys:
        assert diffusers_to_taming_key(taming_to_diffusers_key(k, n_levels), n_levels) == k


def test_matches_reference(reference, vq_files, vqgan, images):
    ckpt, cfg = vq_files
    with torch.no_grad():
        h = reference.encode_pre_quant(images * 2 - 1)
        ref_plain = ((reference.decode(h, requantize=False) + 1) / 2).clamp(0, 1)
        ref_quant = ((reference.decode(h, requantize=True) + 1) / 2).clamp(0, 1)
    z = vqgan.encode(images)
    assert z.shape == (5, 8, 8, 8) == (5, *vqgan.latent_shape(32))
    assert (z - h).abs().max() < ATOL
    assert (vqgan.decode(z) - ref_plain).abs().max() < ATOL
    requant = VQGAN(checkpoint=ckpt, config=cfg, requantize=True)
    assert (requant.decode(z) - ref_quant).abs().max() < ATOL
    # re-quantising really changes the image, and lands on the reference's codebook vectors
    assert (ref_quant - ref_plain).abs().max() > 0.01
    assert torch.allclose(requant.quantize(z), reference.quantize(h)[0], atol=ATOL)
    # same reference output from a plain state dict and from safetensors
    plain = ckpt.parent / "plain.pt"
    torch.save(reference.state_dict(), plain)
    st = ckpt.parent / "weights.safetensors"
    save_file(reference.state_dict(), str(st))
    for path in (plain, st):
        other = VQGAN(checkpoint=path, config=cfg)
        assert other.weights_sha256 != vqgan.weights_sha256
        assert (other.encode(images) - h).abs().max() < ATOL


def test_identity_options_and_registry(vq_files, vqgan, images):
    ckpt, cfg = vq_files
    assert "vqgan" in available()
    assert vqgan.name == "vqgan" and vqgan.preferred_q == 8 and vqgan.downscale == 4
    assert vqgan.id.startswith("vqgan:") and len(vqgan.weights_sha256) == 64
    assert "pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint" in vqgan.skipped_objects
    assert "pytorch_lightning" not in sys.modules  # loading never needed it
    conf = vqgan.config()
    assert json.loads(json.dumps(conf)) == conf  # JSON-able, recorded as it is
    assert conf["checkpoint"] == str(ckpt.resolve()) and conf["requantize"] is False
    assert conf["config"]["ddconfig"]["attn_resolutions"] == [16, 8]
    # the recorded config alone rebuilds it (the YAML file is not needed)
    rebuilt = get_autoencoder("vqgan", **conf)
    assert rebuilt.id == vqgan.id and torch.equal(rebuilt.encode(images), vqgan.encode(images))
    # deterministic, batch-independent up to rounding
    z = vqgan.encode(images)
    assert torch.equal(z, vqgan.encode(images))
    assert (VQGAN(ckpt, cfg, batch_size=5).encode(images) - z).abs().max() < 1e-5
    with pytest.raises(ValueError, match="multiples of 4"):
        vqgan.latent_shape(30)
    with pytest.raises(ValueError, match=r"RGB in \[0, 1\]"):
        vqgan.encode(images * 2 - 1)
    with pytest.raises(ValueError, match=r"\(n, 8, H, W\)"):
        vqgan.decode(torch.zeros(1, 4, 8, 8))


# ------------------------------------------------------------------------- safety


def test_checkpoint_code_never_runs(reference, vq_files, tmp_path):
    _, cfg = vq_files
    sd = taming_state_dict(reference)
    # 1. code in the checkpoint's extra objects: replaced by an inert placeholder, never called
    evil = save_lightning_checkpoint(sd, tmp_path / "evil.ckpt", extra={"hparams": RunsCodeWhenUnpickled(tmp_path)})
    ae = VQGAN(evil, cfg)
    assert not (tmp_path / MARKER_NAME).exists()
    assert "backend_fixtures.leave_marker" in ae.skipped_objects
    with fake_lightning():  # positive control: the ordinary way runs it
        torch.load(evil, weights_only=False)
    assert (tmp_path / MARKER_NAME).exists()
    # 2. weights that are pickled objects: a clear error, nothing run
    (tmp_path / MARKER_NAME).unlink()
    bad_sd = dict(sd, **{"encoder.conv_in.weight": RunsCodeWhenUnpickled(tmp_path)})
    torch.save({"state_dict": bad_sd}, tmp_path / "objects.ckpt")
    with pytest.raises(WeightsError, match=r"pickled Python objects, not tensors.*encoder\.conv_in\.weight.*never does"):
        VQGAN(tmp_path / "objects.ckpt", cfg)
    # 3. a whole model pickled with torch.save(model)
    torch.save(reference, tmp_path / "module.pt")
    with pytest.raises(WeightsError, match=r"pickled backend_fixtures\.TamingVQ object.*not a state dict"):
        VQGAN(tmp_path / "module.pt", cfg)
    assert not (tmp_path / MARKER_NAME).exists()


# ------------------------------------------------------------------------- bad input


def _with(config: dict, **dd) -> dict:
    c = copy.deepcopy(config)
    c["model"]["params"]["ddconfig"].update(dd)
    return c


def test_wrong_config_and_missing_keys(reference, vq_files, tmp_path):
    ckpt, cfg = vq_files
    bad = {
        "z_channels": (_with(SMALL_VQGAN_CONFIG, z_channels=8), r"shape mismatches: encoder\.conv_out\.weight: checkpoint \(16, 64, 3, 3\), config \(8, 64, 3, 3\)"),
        "one level more": (_with(SMALL_VQGAN_CONFIG, ch_mult=[1, 2, 2, 2]), r"missing keys: .*encoder\.down\.3\.block\.0"),
        "attention elsewhere": (_with(SMALL_VQGAN_CONFIG, attn_resolutions=[8]), r"keys the config has no place for: encoder\.down\.1\.attn\.0"),
    }
    for name, (config, pattern) in bad.items():
        with pytest.raises(WeightsError, match=r"does not fit the VQGAN config \(.*" + pattern):
            VQGAN(ckpt, write_yaml(config, tmp_path / f"{name}.yaml"))
    sd = taming_state_dict(reference)
    del sd["decoder.up.0.block.1.conv2.weight"], sd["quantize.embedding.weight"]
    torch.save({"state_dict": sd}, tmp_path / "partial.ckpt")
    with pytest.raises(WeightsError, match=r"2 missing keys: .*(decoder\.up\.0\.block\.1\.conv2\.weight|quantize\.embedding\.weight)"):
        VQGAN(tmp_path / "partial.ckpt", cfg)

    config_errors = {
        "double_z": (_with(SMALL_VQGAN_CONFIG, double_z=True), "double_z is true"),
        "groups": (_with(SMALL_VQGAN_CONFIG, ch=24), "not multiples of 32"),
        "no ddconfig": ({"model": {"params": {"embed_dim": 8}}}, "no 'ddconfig' found"),
        "missing key": (_with(SMALL_VQGAN_CONFIG, z_channels=None), r"'ddconfig\.z_channels' must be a positive integer"),
    }
    gumbel = copy.deepcopy(SMALL_VQGAN_CONFIG)
    gumbel["model"]["target"] = "taming.models.vqgan.GumbelVQ"
    config_errors["gumbel"] = (gumbel, "Gumbel-softmax VQGAN")
    for name, (config, pattern) in config_errors.items():
        with pytest.raises(WeightsError, match=pattern):
            read_vqgan_config(config)
    (tmp_path / "broken.yaml").write_text("model: [unclosed\n")
    with pytest.raises(WeightsError, match="not valid YAML"):
        VQGAN(ckpt, tmp_path / "broken.yaml")
    with pytest.raises(WeightsError, match="does not exist"):
        VQGAN(tmp_path / "nowhere.ckpt", cfg)
    with pytest.raises(WeightsError, match="does not exist"):
        VQGAN(ckpt, tmp_path / "nowhere.yaml")
    (tmp_path / "garbage.ckpt").write_bytes(b"not a checkpoint at all" * 10)
    with pytest.raises(WeightsError, match="cannot read checkpoint"):
        VQGAN(tmp_path / "garbage.ckpt", cfg)
    with pytest.raises(ValueError, match=r"no VQGAN checkpoint and config given.*--ae-weights"):
        get_autoencoder("vqgan")


# ------------------------------------------------------------------------- end to end


def test_fit_sample_and_model_file(vq_files, vqgan, faces_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("LRGMM_CACHE_DIR", str(tmp_path / "cache"))
    ckpt, cfg = vq_files
    faces = small_faces(utkface_images(faces_dir), tmp_path / "faces")
    fit_ae = VQGAN(ckpt, cfg)  # batch size 16, as the pipeline rebuilds it (batching changes rounding)
    pipe = FacePipeline(autoencoder=fit_ae, resolution=RESOLUTION, progress=False).fit(faces)
    assert pipe.model_.codes_.shape == (16, 8, 8, 8)  # q = preferred_q = 8 of 8 channels
    out = pipe.generate(4, seed=0)
    assert out.images.shape == (4, 3, 32, 32) and out.samples.provenance.shape == (4, 8, 8)
    assert 0 <= float(out.images.min()) and float(out.images.max()) <= 1
    assert torch.equal(out.images, pipe.generate(4, seed=0).images)

    path = pipe.save(tmp_path / "vq.lrgmm")
    record = read_metadata(path)["autoencoder"]
    assert record["name"] == "vqgan" and record["id"] == vqgan.id
    assert record["config"] == vqgan.config()
    # rebuilt from the record alone: same images, bit for bit
    loaded = FacePipeline.load(path, progress=False, precision="fp32")  # the instances above are fp32
    assert isinstance(loaded.autoencoder_, VQGAN) and loaded.autoencoder_.requantize is False
    assert torch.equal(loaded.generate(4, seed=0).images, out.images)

    # the re-quantising choice is recorded and restored
    requant = VQGAN(ckpt, cfg, requantize=True)
    q_pipe = FacePipeline(autoencoder=requant, resolution=RESOLUTION, progress=False).fit(faces)
    assert torch.equal(q_pipe.model_.codes_, pipe.model_.codes_)  # same (cached) latents
    q_out = q_pipe.generate(4, seed=0)
    assert not torch.equal(q_out.images, out.images)
    q_path = q_pipe.save(tmp_path / "vq_requant.lrgmm")
    assert read_metadata(q_path)["autoencoder"]["config"]["requantize"] is True
    assert torch.equal(FacePipeline.load(q_path, progress=False, precision="fp32").generate(4, seed=0).images,
                       q_out.images)
    # an explicit backend with other options: allowed, with a warning naming the option
    with pytest.warns(AutoencoderOptionsWarning, match=r"requantize=False \(recorded True\)"):
        FacePipeline.load(q_path, autoencoder=vqgan, progress=False)

    # moved checkpoint: the record cannot be rebuilt; an explicit backend on the new place works
    moved = tmp_path / "moved"
    moved.mkdir()
    shutil.move(str(ckpt), moved / ckpt.name)
    try:
        with pytest.raises(WeightsError, match=r"(?s)does not exist.*pass the autoencoder built on their new place.*--ae-weights"):
            FacePipeline.load(path, progress=False)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # same options: no warning
            again = FacePipeline.load(path, autoencoder=VQGAN(moved / ckpt.name, cfg), progress=False)
        assert torch.equal(again.generate(4, seed=0).images, out.images)
        # or the new place as an option over the record (what `--ae-weights` maps to)
        opts = backend_options("vqgan", weights=moved / ckpt.name)
        assert opts == {"checkpoint": str(moved / ckpt.name)}
        again = FacePipeline.load(path, autoencoder_options=opts, progress=False, precision="fp32")
        assert torch.equal(again.generate(4, seed=0).images, out.images)
        # decoding options too, without refitting: re-quantised images of the same samples
        requant_again = FacePipeline.load(path, autoencoder_options={**opts, "requantize": True}, progress=False,
                                          precision="fp32")
        assert torch.equal(requant_again.generate(4, seed=0).images, q_out.images)
    finally:
        shutil.move(str(moved / ckpt.name), ckpt)

    # other weights: refused
    other = build_taming_vqgan(seed=5)
    other_ckpt = save_lightning_checkpoint(taming_state_dict(other), tmp_path / "other.ckpt")
    with pytest.raises(ModelFileError, match=r"fitted with autoencoder 'vqgan:.*but 'vqgan:.*was given"):
        FacePipeline.load(path, autoencoder=VQGAN(other_ckpt, cfg), progress=False)


def test_command_line_through_vqgan(vq_files, faces_dir, tmp_path, monkeypatch, capsys):
    """`lrgmm fit --autoencoder vqgan --ae-weights --ae-config` and `lrgmm sample --requantize`."""
    from lrgmm.cli import main

    monkeypatch.setenv("LRGMM_CACHE_DIR", str(tmp_path / "cache"))
    ckpt, cfg = vq_files
    faces = small_faces(utkface_images(faces_dir), tmp_path / "faces")
    model = tmp_path / "vq.lrgmm"
    argv = ["fit", str(faces), "-o", str(model), "--autoencoder", "vqgan", "--ae-weights", str(ckpt),
            "--ae-config", str(cfg), "--resolution", str(RESOLUTION), "--quiet"]
    assert main(argv) == 0, capsys.readouterr().err
    assert read_metadata(model)["autoencoder"]["config"]["requantize"] is False
    assert main(["sample", str(model), "-n", "3", "--seed", "2", "-o", str(tmp_path / "a"), "--quiet"]) == 0
    assert main(["sample", str(model), "-n", "3", "--seed", "2", "-o", str(tmp_path / "b"), "--quiet",
                 "--requantize"]) == 0
    a = (tmp_path / "a" / "face_0000.png").read_bytes()
    assert a != (tmp_path / "b" / "face_0000.png").read_bytes()  # decoded through the codebook
    assert main(["sample", str(model), "-n", "3", "--seed", "2", "-o", str(tmp_path / "c"), "--quiet"]) == 0
    assert a == (tmp_path / "c" / "face_0000.png").read_bytes()
    capsys.readouterr()
    # a backend option the backend does not take is an error, not ignored
    assert main(["fit", str(faces), "-o", str(tmp_path / "x.lrgmm"), "--ae-config", str(cfg), "--quiet"]) == 2
    assert "does not take --ae-config" in capsys.readouterr().err
    assert not (tmp_path / "x.lrgmm").exists()
