"""The fake autoencoder (``lrgmm.autoencoders.fake``) and the synthetic faces: what the tests
without the shared folder stand on. These run in every session, shared folder or not."""

from __future__ import annotations

import hashlib
import math

import pytest
import torch
from synthetic_faces import make_synthetic_faces

from lrgmm.autoencoders import FakeAutoencoder, available, get_autoencoder
from lrgmm.autoencoders.fake import LATENT_CHANNELS, _dct_basis, patch_patterns
from lrgmm.errors import ParameterError
from lrgmm.data.labels import utkface_labels
from lrgmm.pipeline import FacePipeline


@pytest.fixture(scope="module")
def fake() -> FakeAutoencoder:
    return FakeAutoencoder()


def test_interface_and_registry(fake):
    assert "fake" in available()
    ae = get_autoencoder("fake", batch_size=4)
    assert isinstance(ae, FakeAutoencoder) and ae.batch_size == 4
    assert ae.name == "fake" and ae.preferred_q == 16 and ae.config() == {}
    assert ae.latent_shape(128) == (32, 16, 16) and ae.latent_shape(64) == (32, 8, 8)  # TAEF2's shapes
    # The id hashes the patterns' version and seed: the same in every process.
    assert ae.weights_sha256 == hashlib.sha256(b"fake-dct-v1:seed=0").hexdigest() == fake.weights_sha256
    assert ae.id == f"fake:{ae.weights_sha256[:16]}"
    with pytest.raises(ParameterError, match="multiples of 8, got 100"):
        ae.latent_shape(100)
    with pytest.raises(ParameterError, match="batch_size must be a positive integer, got 0"):
        FakeAutoencoder(batch_size=0)
    with pytest.raises(ValueError, match=r"images must be RGB in \[0, 1\]"):
        ae.encode(torch.full((1, 3, 16, 16), 2.0))
    with pytest.raises(ValueError, match=r"latents must have shape \(n, 32, H, W\)"):
        ae.decode(torch.zeros(1, 16, 2, 2))


def test_patterns_are_orthonormal_dct_patches():
    p = patch_patterns()
    assert p.shape == (LATENT_CHANNELS, 192) and p.dtype == torch.float64
    assert torch.allclose(p @ p.T, torch.eye(LATENT_CHANNELS, dtype=torch.float64), atol=1e-12)
    assert torch.equal(patch_patterns(), p)  # no hidden state
    assert not torch.allclose(patch_patterns(seed=1), p)  # the mixing comes from the seed
    # The span holds every flat colour patch (the DC pattern of each colour axis) and, per colour
    # axis, the first horizontal and vertical cosines: the projection keeps them exactly.
    k = torch.arange(8, dtype=torch.float64)
    ramp = torch.cos(math.pi * (2 * k + 1) / 16)
    for patch in (torch.ones(3, 8, 8), torch.tensor([1.0, -2.0, 0.5])[:, None, None] * ramp[None, :, None].expand(3, 8, 8),
                  torch.tensor([0.2, 0.0, -1.0])[:, None, None] * ramp[None, None, :].expand(3, 8, 8)):
        v = patch.reshape(-1).to(torch.float64)
        assert torch.allclose(p.T @ (p @ v), v, atol=1e-12)
    # The highest DCT frequency, in any colour, is orthogonal to every pattern: the encoder drops it.
    top = (torch.rand(3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)[:, None, None]
           * _dct_basis(7, 7)).reshape(-1)
    assert (p @ top).abs().max() < 1e-12


def test_decode_then_encode_is_the_identity(fake):
    """Latents whose image stays inside [0, 1] come back exactly (up to float rounding), and
    encode-decode is a projection: applying it twice changes nothing. Random shapes, seeded."""
    gen = torch.Generator().manual_seed(0)
    exact = 0
    for trial in range(12):
        n = int(torch.randint(1, 5, (1,), generator=gen))
        h, w = (int(x) for x in torch.randint(1, 7, (2,), generator=gen))
        z = 0.1 * torch.randn(n, LATENT_CHANNELS, h, w, generator=gen)
        x = fake.decode(z)
        assert x.shape == (n, 3, 8 * h, 8 * w)
        if x.min() <= 0 or x.max() >= 1:  # clamped: not an exact case
            continue
        assert torch.allclose(fake.encode(x), z, atol=1e-5), trial
        assert torch.allclose(fake.decode(fake.encode(x)), x, atol=1e-5), trial
        exact += 1
    assert exact >= 10  # the loop did test something
    flat = torch.rand(2, 3, 1, 1, generator=gen).expand(2, 3, 24, 32).contiguous()
    assert torch.allclose(fake.decode(fake.encode(flat)), flat, atol=1e-6)  # flat colours survive


def test_batches_and_instances_agree(fake):
    x = torch.rand(7, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    small = FakeAutoencoder(batch_size=2)
    assert torch.allclose(small.encode(x), fake.encode(x), atol=1e-6)
    assert torch.equal(FakeAutoencoder().encode(x), fake.encode(x))  # deterministic
    assert fake.encode(x[:0]).shape == (0, 32, 4, 4)


def test_synthetic_faces_are_deterministic_and_labelled(tmp_path):
    a = make_synthetic_faces(tmp_path / "a", 6)
    b = make_synthetic_faces(tmp_path / "b", 6)
    assert [p.name for p in a] == [p.name for p in b]
    assert all(p.read_bytes() == q.read_bytes() for p, q in zip(a, b))
    assert make_synthetic_faces(tmp_path / "c", 6, seed=1)[0].read_bytes() != a[0].read_bytes()
    labels = [utkface_labels(p) for p in a]
    assert all(set(lab) == {"gender", "age", "race", "age_years"} for lab in labels)


def test_a_pipeline_by_name_without_weights(tmp_path, monkeypatch, capsys):
    """``FacePipeline(autoencoder="fake")`` and ``lrgmm fit --autoencoder fake``: fit, save, load
    by the recorded name, the same faces; nothing needs a weight file."""
    from lrgmm.cli import main

    monkeypatch.setenv("LRGMM_CACHE_DIR", str(tmp_path / "cache"))
    faces = tmp_path / "faces"
    make_synthetic_faces(faces, 16)
    pipe = FacePipeline(autoencoder="fake", n_components=1, progress=False).fit(faces)
    out = pipe.generate(3, seed=2)
    assert out.images.shape == (3, 3, 128, 128) and float(out.images.std()) > 0.05
    loaded = FacePipeline.load(pipe.save(tmp_path / "m.lrgmm"), progress=False)
    assert loaded.autoencoder_.id == pipe.autoencoder_.id
    assert torch.equal(loaded.generate(3, seed=2).images, out.images)
    assert main(["fit", str(faces), "-o", str(tmp_path / "cli.lrgmm"), "--autoencoder", "fake", "-K", "1", "--quiet"]) == 0
    assert main(["sample", str(tmp_path / "cli.lrgmm"), "-n", "3", "--seed", "2", "-o", str(tmp_path / "s"), "--quiet"]) == 0
    assert "3 faces (seed 2) written" in capsys.readouterr().out
