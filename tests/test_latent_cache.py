"""Latent cache and encode_images, with a tiny fake autoencoder (no weights, milliseconds)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors import safe_open

from lrgmm.autoencoders.base import Autoencoder
from lrgmm.errors import ImageInputError
from lrgmm.io.images import load_images
from lrgmm.pipeline.encoding import EncodedSet, encode_images
from lrgmm.io.latent_cache import LatentCache, default_cache_root
from lrgmm.errors import LatentCacheWarning

FACES = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "utkface" / "images"
RES = 32


class FakeAE(Autoencoder):
    """8x8 average pooling, then a fixed random 1x1 projection to 4 channels.

    Counts calls and images; can fail on a given call (to simulate an interrupted run) and
    returns NaN latents for all-black images (to simulate a numerically broken encode).
    """

    name = "fake"
    preferred_q = 4

    def __init__(self, weights: str = "0" * 64, fail_on_call: int | None = None):
        self.weights_sha256 = weights
        self.proj = torch.randn(4, 3, generator=torch.Generator().manual_seed(0))
        self.fail_on_call = fail_on_call
        self.calls = 0
        self.n_images = 0

    def latent_shape(self, resolution: int) -> tuple[int, int, int]:
        return (4, resolution // 8, resolution // 8)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        assert images.dtype == torch.float32 and images.ndim == 4 and images.shape[1] == 3
        self.calls += 1
        if self.fail_on_call == self.calls:
            raise RuntimeError("simulated crash")
        self.n_images += len(images)
        z = torch.einsum("kc,nchw->nkhw", self.proj, F.avg_pool2d(images, 8))
        z[images.amax(dim=(1, 2, 3)) == 0] = float("nan")
        return z

    def decode(self, latents: torch.Tensor) -> torch.Tensor:  # not used here
        raise NotImplementedError


@pytest.fixture
def image_dir(tmp_path) -> Path:
    """Seven distinct images: real faces when the shared data is there, plus synthetic ones."""
    d = tmp_path / "imgs"
    d.mkdir()
    n_faces = 0
    if FACES.is_dir():
        for name in sorted(n for n in os.listdir(FACES) if n.endswith(".jpg"))[:3]:
            shutil.copy(FACES / name, d / name)
            n_faces += 1
    rng = np.random.default_rng(1)
    for i in range(7 - n_faces):
        Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(d / f"syn{i}.png")
    return d


@pytest.fixture
def cache(tmp_path) -> LatentCache:
    return LatentCache(tmp_path / "cache")


def _shards(cache: LatentCache, ae: Autoencoder, res: int = RES) -> list[Path]:
    folder = cache.folder(ae.id, res)
    return sorted(folder.glob("*.safetensors")) if folder.is_dir() else []


def test_encode_matches_direct_encoding(image_dir, cache):
    ae = FakeAE()
    out = encode_images(image_dir, ae, resolution=RES, batch_size=3, cache=cache, progress=False)
    assert isinstance(out, EncodedSet)
    assert out.latents.shape == (7, 4, 4, 4) and out.latents.dtype == torch.float32
    assert out.resolution == RES and out.autoencoder_id == ae.id == "fake:0000000000000000"
    assert ae.calls == 3 and ae.n_images == 7 and out.n_encoded == 7 and out.n_cached == 0
    ref = load_images(image_dir, RES)
    assert out.paths == ref.paths and out.hashes == ref.hashes
    assert out.hashes[0] == hashlib.sha256(Path(out.paths[0]).read_bytes()).hexdigest()
    torch.testing.assert_close(out.latents, FakeAE().encode(torch.from_numpy(ref.images)))
    assert len(_shards(cache, ae)) == 3  # one shard per batch


def test_second_call_encodes_nothing(image_dir, cache):
    first = encode_images(image_dir, FakeAE(), resolution=RES, batch_size=4, cache=cache, progress=False)
    ae = FakeAE()
    again = encode_images(image_dir, ae, resolution=RES, batch_size=4, cache=LatentCache(cache.root),
                          progress=False)  # a fresh cache object: the index is rebuilt from disk
    assert ae.calls == 0 and again.n_cached == 7 and again.n_encoded == 0
    assert torch.equal(again.latents, first.latents) and again.paths == first.paths

    # One more image: only it is encoded. A renamed copy of a known file is a duplicate.
    Image.fromarray(np.full((32, 32, 3), 200, np.uint8)).save(image_dir / "new.png")
    shutil.copy(first.paths[0], image_dir / "zz_renamed_copy.jpg")
    ae = FakeAE()
    third = encode_images(image_dir, ae, resolution=RES, cache=cache, progress=False)
    assert ae.n_images == 1 and len(third) == 8
    assert third.report.duplicates == [(str(image_dir / "zz_renamed_copy.jpg"), first.paths[0])]


def test_other_resolution_or_autoencoder_reencodes(image_dir, cache):
    encode_images(image_dir, FakeAE(), resolution=RES, cache=cache, progress=False)
    ae = FakeAE()
    out = encode_images(image_dir, ae, resolution=16, cache=cache, progress=False)
    assert ae.n_images == 7 and out.latents.shape == (7, 4, 2, 2)
    other = FakeAE(weights="f" * 64)
    encode_images(image_dir, other, resolution=RES, cache=cache, progress=False)
    assert other.n_images == 7
    assert len({cache.folder(a.id, r) for a, r in [(ae, RES), (ae, 16), (other, RES)]}) == 3


def test_shard_format_is_safetensors_with_json_hashes(image_dir, cache):
    ae = FakeAE()
    out = encode_images(image_dir, ae, resolution=RES, batch_size=7, cache=cache, progress=False)
    (shard,) = _shards(cache, ae)
    with safe_open(str(shard), framework="np") as f:
        meta = f.metadata()
        assert list(f.keys()) == ["latents"]
        z = f.get_tensor("latents")
    assert json.loads(meta["hashes"]) == out.hashes
    assert meta["autoencoder_id"] == ae.id and meta["resolution"] == str(RES)
    assert z.dtype == np.float32 and z.shape == (7, 4, 4, 4)
    assert not list(shard.parent.glob("*.tmp"))  # temp files are renamed, never left


def test_put_get_roundtrip_and_folder_name(tmp_path):
    cache = LatentCache(tmp_path)
    ns = dict(autoencoder_id="weird/../id:with spaces", resolution=64)
    z = np.arange(2 * 3 * 2 * 2, dtype=np.float32).reshape(2, 3, 2, 2)
    path = cache.put(["h1", "h2"], z, **ns)
    assert path.parent.parent.parent == tmp_path  # the id is one sanitised path component
    got = LatentCache(tmp_path).get(["h2", "missing", "h1"], **ns)
    assert set(got) == {"h1", "h2"} and np.array_equal(got["h2"], z[1])
    assert cache.get(["h1"], autoencoder_id="other", resolution=64) == {}
    assert cache.known(**ns) == {"h1", "h2"}
    with pytest.raises(ValueError):
        cache.put(["a"], z, **ns)


def test_default_root_from_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("LRGMM_CACHE_DIR", str(tmp_path / "lr"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_root() == tmp_path / "lr" / "latents"
    assert LatentCache().root == tmp_path / "lr" / "latents"
    monkeypatch.delenv("LRGMM_CACHE_DIR")
    assert default_cache_root() == tmp_path / "xdg" / "lrgmm" / "latents"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert default_cache_root() == Path.home() / ".cache" / "lrgmm" / "latents"


def test_cache_true_uses_default_root_and_none_writes_nothing(image_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("LRGMM_CACHE_DIR", str(tmp_path / "envcache"))
    encode_images(image_dir, FakeAE(), resolution=RES, cache=None, progress=False)
    assert not (tmp_path / "envcache").exists()
    ae = FakeAE()
    encode_images(image_dir, ae, resolution=RES, progress=False)  # cache=True by default
    assert _shards(LatentCache(), ae)
    assert str(LatentCache().root).startswith(str(tmp_path / "envcache"))


@pytest.mark.parametrize("damage", ["garbage", "truncate", "empty"])
def test_corrupt_shard_is_ignored_with_warning(image_dir, cache, damage):
    first = encode_images(image_dir, FakeAE(), resolution=RES, batch_size=3, cache=cache, progress=False)
    bad = _shards(cache, FakeAE())[0]
    data = bad.read_bytes()
    bad.write_bytes({"garbage": b"\x00" * 8 + b"not json", "truncate": data[:-20], "empty": b""}[damage])
    ae = FakeAE()
    with pytest.warns(LatentCacheWarning, match=bad.name):
        out = encode_images(image_dir, ae, resolution=RES, batch_size=3, cache=LatentCache(cache.root),
                            progress=False)
    assert ae.n_images == 3 and out.n_cached == 7 - 3
    torch.testing.assert_close(out.latents, first.latents)


def test_shard_corrupted_after_indexing_is_reencoded(image_dir, cache):
    """The index (headers) is fine but the data read later is not: still no crash."""
    first = encode_images(image_dir, FakeAE(), resolution=RES, batch_size=4, cache=cache, progress=False)
    cache.known(autoencoder_id=FakeAE().id, resolution=RES)  # index built now
    bad = _shards(cache, FakeAE())[0]
    with safe_open(str(bad), framework="np") as f:
        n_bad = len(json.loads(f.metadata()["hashes"]))
    bad.write_bytes(bad.read_bytes()[:-8])
    ae = FakeAE()
    with pytest.warns(LatentCacheWarning, match=bad.name):
        out = encode_images(image_dir, ae, resolution=RES, batch_size=4, cache=cache, progress=False)
    assert ae.n_images == n_bad and out.n_cached == 7 - n_bad and out.paths == first.paths
    torch.testing.assert_close(out.latents, first.latents)


def test_resume_after_interruption(image_dir, cache):
    crashing = FakeAE(fail_on_call=3)
    with pytest.raises(RuntimeError, match="simulated crash"):
        encode_images(image_dir, crashing, resolution=RES, batch_size=2, cache=cache, progress=False)
    assert crashing.n_images == 4 and len(_shards(cache, crashing)) == 2  # two batches saved
    ae = FakeAE()
    out = encode_images(image_dir, ae, resolution=RES, batch_size=2, cache=cache, progress=False)
    assert ae.n_images == 3 and out.n_cached == 4 and len(out) == 7
    ref = encode_images(image_dir, FakeAE(), resolution=RES, cache=None, progress=False)
    torch.testing.assert_close(out.latents, ref.latents)


def test_nonfinite_latents_excluded_and_reported(image_dir, cache):
    black = image_dir / "black.png"
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(black)
    ae = FakeAE()
    out = encode_images(image_dir, ae, resolution=RES, batch_size=3, cache=cache, progress=False)
    assert str(black) not in out.paths and len(out) == 7
    assert (str(black), "non-finite latent") in out.report.skipped
    assert out.report.n_used == 7 and out.report.n_found == 8
    assert torch.isfinite(out.latents).all()
    assert "non-finite latent" in out.report.summary()
    # Not cached: a rerun tries that one image again (and only it).
    ae = FakeAE()
    encode_images(image_dir, ae, resolution=RES, cache=cache, progress=False)
    assert ae.n_images == 1


def test_nothing_usable_raises(tmp_path, cache):
    d = tmp_path / "bad"
    d.mkdir()
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(d / "black.png")
    (d / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    with pytest.raises(ImageInputError, match="non-finite latent"):
        encode_images(d, FakeAE(), resolution=RES, cache=cache, progress=False)
    with pytest.raises(ImageInputError, match="does not exist"):
        encode_images(tmp_path / "missing", FakeAE(), resolution=RES, cache=cache, progress=False)


def test_progress_bar_and_bad_files_in_encode(image_dir, cache, capsys):
    (image_dir / "trunc.jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"\x00" * 100)
    (image_dir / "notes.txt").write_text("x")
    out = encode_images(image_dir, FakeAE(), resolution=RES, cache=cache, progress=True)
    assert "encoding" in capsys.readouterr().err
    assert len(out) == 7 and out.report.n_ignored == 1
    assert [p for p, _ in out.report.skipped] == [str(image_dir / "trunc.jpg")]


# ------------------------------------------------------------------------------ checksums


def _data_start(shard: Path) -> int:
    """Offset of the tensor bytes: after the 8-byte header length and the JSON header."""
    return 8 + int.from_bytes(shard.read_bytes()[:8], "little")


def _overwrite_row(shard: Path, row: int, value: float, row_bytes: int = 4 * 4 * 4 * 4) -> None:
    data = bytearray(shard.read_bytes())
    start = _data_start(shard) + row * row_bytes
    data[start : start + row_bytes] = np.full(row_bytes // 4, value, dtype="<f4").tobytes()
    shard.write_bytes(bytes(data))


def test_shards_carry_a_checksum_per_row(image_dir, cache):
    ae = FakeAE()
    encode_images(image_dir, ae, resolution=RES, batch_size=7, cache=cache, progress=False)
    (shard,) = _shards(cache, ae)
    with safe_open(str(shard), framework="np") as f:
        meta = f.metadata()
        z = f.get_tensor("latents")
    assert meta["version"] == "2"
    sums = json.loads(meta["checksums"])
    assert sums == [hashlib.blake2b(row.astype("<f4").tobytes(), digest_size=16).hexdigest() for row in z]


@pytest.mark.parametrize("value", [36.6, float("nan")])
def test_damaged_entries_are_encoded_again(image_dir, cache, value):
    """Finite garbage used to be used silently (codes off by 36.6); NaN broke every later fit."""
    first = encode_images(image_dir, FakeAE(), resolution=RES, batch_size=7, cache=cache, progress=False)
    (shard,) = _shards(cache, FakeAE())
    _overwrite_row(shard, 2, value)
    _overwrite_row(shard, 5, value)
    ae = FakeAE()
    with pytest.warns(LatentCacheWarning, match=rf"{shard.name}: 2 of 7 cached latent\(s\) fail their checksum"):
        out = encode_images(image_dir, ae, resolution=RES, batch_size=7, cache=LatentCache(cache.root), progress=False)
    assert ae.n_images == 2 and out.n_cached == 5
    torch.testing.assert_close(out.latents, first.latents)  # re-encoded in another batch: rounding only
    assert out.paths == first.paths
    # The damaged shard is gone; its intact rows and the re-encoded ones are cached: no more work.
    assert not shard.exists()
    ae = FakeAE()
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", LatentCacheWarning)
        again = encode_images(image_dir, ae, resolution=RES, cache=LatentCache(cache.root), progress=False)
    assert ae.n_images == 0 and torch.equal(again.latents, out.latents)


def test_shards_without_checksums_are_upgraded_and_non_finite_rows_re_encoded(image_dir, cache):
    from safetensors.numpy import save_file

    ref = encode_images(image_dir, FakeAE(), resolution=RES, cache=None, progress=False)
    ae = FakeAE()
    folder = cache.folder(ae.id, RES)
    folder.mkdir(parents=True)
    # A shard as lrgmm wrote them before checksums (version 1), with one NaN row.
    z = ref.latents.numpy().copy()
    z[2, 0, 0, 0] = np.nan
    old = folder / "0123456789abcdef0123456789abcdef.safetensors"
    save_file({"latents": z}, str(old), metadata={"format": "lrgmm-latents", "version": "1", "autoencoder_id": ae.id,
                                                  "resolution": str(RES), "hashes": json.dumps(ref.hashes)})
    with pytest.warns(LatentCacheWarning, match=r"upgraded 1 of 1 latent cache shard\(s\) .* without checksums.*1 non-finite"):
        out = encode_images(image_dir, ae, resolution=RES, cache=cache, progress=False)
    assert ae.n_images == 1  # only the NaN row is encoded again
    torch.testing.assert_close(out.latents, ref.latents)
    assert not old.exists()
    # From now on every row is verified: a later run reads everything back, with no warning.
    ae = FakeAE()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        again = encode_images(image_dir, ae, resolution=RES, cache=LatentCache(cache.root), progress=False)
    assert ae.n_images == 0
    torch.testing.assert_close(again.latents, ref.latents)
