"""TAEF2 on real faces: reconstruction quality, shapes, determinism and input validation."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch
from conftest import utkface_images
from PIL import Image

from lrgmm.autoencoders import TAEF2, Autoencoder, available, get_autoencoder, register
from lrgmm.io.weights import weight_files


def load_faces(utkface_dir, n: int, size: int) -> torch.Tensor:
    """``n`` faces spread over the sorted folder (not just the first ages), centre-cropped and
    resized to ``size`` px with antialiased bicubic, as float32 (n, 3, size, size) in [0, 1]."""
    paths = utkface_images(utkface_dir)
    picks = np.linspace(0, len(paths) - 1, n).round().astype(int)
    out = []
    for i in picks:
        with Image.open(paths[i]) as im:
            im = im.convert("RGB")
            w, h = im.size
            s = min(w, h)
            left, top = (w - s) // 2, (h - s) // 2
            im = im.crop((left, top, left + s, top + s))
            im = im.resize((size, size), Image.Resampling.BICUBIC, reducing_gap=None)
            arr = np.array(im, dtype=np.float32) / 255.0
        out.append(torch.from_numpy(arr).permute(2, 0, 1))
    return torch.stack(out).contiguous()


@pytest.fixture(scope="module")
def faces128(utkface_dir) -> torch.Tensor:
    return load_faces(utkface_dir, 16, 128)


def test_round_trip_psnr_on_real_faces(taef2, faces128):
    z = taef2.encode(faces128)
    y = taef2.decode(z)
    assert y.shape == faces128.shape and y.dtype == torch.float32
    assert float(y.min()) >= 0.0 and float(y.max()) <= 1.0
    mse = ((y - faces128) ** 2).flatten(1).mean(1)
    psnr = 10 * torch.log10(1.0 / mse)
    print(f"\nTAEF2 round trip on 16 faces at 128 px: mean PSNR {float(psnr.mean()):.2f} dB "
          f"(min {float(psnr.min()):.2f}, max {float(psnr.max()):.2f})")
    assert float(psnr.mean()) > 30.0


def test_latent_shapes(taef2, utkface_dir, faces128):
    assert taef2.latent_shape(128) == (32, 16, 16)
    assert taef2.latent_shape(256) == (32, 32, 32)
    assert taef2.encode(faces128[:3]).shape == (3, 32, 16, 16)
    faces256 = load_faces(utkface_dir, 2, 256)
    z = taef2.encode(faces256)
    assert z.shape == (2, 32, 32, 32) and z.dtype == torch.float32
    assert taef2.decode(z).shape == (2, 3, 256, 256)


@pytest.mark.parametrize("bad", [0, -8, 100, 127, 12.0, True, "128"])
def test_latent_shape_rejects_bad_resolution(taef2, bad):
    with pytest.raises(ValueError, match="resolution|multiples of 8"):
        taef2.latent_shape(bad)


def test_deterministic(taef2, faces128):
    x = faces128[:4]
    z1, z2 = taef2.encode(x), taef2.encode(x.clone())
    assert torch.equal(z1, z2)
    assert torch.equal(taef2.decode(z1), taef2.decode(z1.clone()))


def test_batch_size_independence(taef2, faces128):
    small = TAEF2(batch_size=3)
    x = faces128[:7]
    z_big, z_small = taef2.encode(x), small.encode(x)
    torch.testing.assert_close(z_small, z_big, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(small.decode(z_big), taef2.decode(z_big), rtol=1e-4, atol=1e-4)
    # A single image encodes the same alone as inside a batch.
    torch.testing.assert_close(taef2.encode(x[2:3])[0], z_big[2], rtol=1e-4, atol=1e-4)


def test_decode_clamps_and_no_grad(taef2):
    g = torch.Generator().manual_seed(0)
    z = torch.randn(2, 32, 4, 4, generator=g) * 10  # far outside the training range
    y = taef2.decode(z)
    assert y.shape == (2, 3, 32, 32)
    assert float(y.min()) >= 0.0 and float(y.max()) <= 1.0
    assert not y.requires_grad
    assert not taef2.encoder.training and not taef2.decoder.training


def test_empty_batch(taef2):
    assert taef2.encode(torch.zeros(0, 3, 64, 64)).shape == (0, 32, 8, 8)
    assert taef2.decode(torch.zeros(0, 32, 8, 8)).shape == (0, 3, 64, 64)


@pytest.mark.parametrize(
    "images, exc, pattern",
    [
        (torch.rand(3, 64, 64), ValueError, r"shape \(n, 3, H, W\)"),
        (torch.rand(2, 4, 64, 64), ValueError, r"shape \(n, 3, H, W\)"),
        (torch.rand(2, 3, 60, 64), ValueError, "multiples of 8"),
        (torch.randint(0, 255, (1, 3, 64, 64), dtype=torch.uint8), TypeError, "255"),
        (torch.rand(1, 3, 64, 64) * 255, ValueError, r"\[0, 1\]"),
        (torch.rand(1, 3, 64, 64) * 2 - 1, ValueError, r"\[0, 1\]"),
        (torch.full((1, 3, 64, 64), float("nan")), ValueError, "NaN"),
        (np.zeros((1, 3, 64, 64), dtype=np.float32), TypeError, "torch.Tensor"),
    ],
)
def test_encode_rejects_bad_input(taef2, images, exc, pattern):
    with pytest.raises(exc, match=pattern):
        taef2.encode(images)


@pytest.mark.parametrize(
    "latents, pattern",
    [
        (torch.zeros(32, 8, 8), r"shape \(n, 32, H, W\)"),
        (torch.zeros(1, 16, 8, 8), r"shape \(n, 32, H, W\)"),
        (torch.full((1, 32, 8, 8), float("inf")), "infinite"),
    ],
)
def test_decode_rejects_bad_input(taef2, latents, pattern):
    with pytest.raises(ValueError, match=pattern):
        taef2.decode(latents)


def test_identity_and_sha(taef2):
    enc, dec = (wf.sha256 for wf in weight_files("taef2"))
    assert taef2.name == "taef2" and taef2.preferred_q == 16
    assert taef2.weights_sha256 == hashlib.sha256((enc + dec).encode("ascii")).hexdigest()
    assert taef2.id == f"taef2:{taef2.weights_sha256[:16]}"


def test_registry(taef2):
    assert "taef2" in available()
    ae = get_autoencoder("taef2", batch_size=4)
    assert isinstance(ae, TAEF2) and isinstance(ae, Autoencoder) and ae.batch_size == 4
    with pytest.raises(ValueError, match="taef2"):
        get_autoencoder("no-such-backend")
    with pytest.raises(ValueError, match="already registered"):
        register("taef2", TAEF2)
    with pytest.raises(ValueError, match="batch_size"):
        TAEF2(batch_size=0)
