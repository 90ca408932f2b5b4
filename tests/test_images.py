"""Image IO: listing, robust decoding of odd and broken files, the input report, PNG output."""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import stat
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lrgmm.errors import ImageInputError
from lrgmm.io.images import (
    IMAGE_EXTENSIONS,
    InputReport,
    iter_images,
    list_images,
    load_image,
    load_images,
    make_grid,
    prepare_image,
    save_png,
)

FACES = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "utkface" / "images"


@pytest.fixture(scope="module")
def face_files() -> list[Path]:
    """A few real 200x200 JPEG faces (read from the shared data, never copied into the repo)."""
    if not FACES.is_dir():
        pytest.skip(f"shared UTKFace images not found at {FACES}")
    names = sorted(n for n in os.listdir(FACES) if n.endswith(".jpg"))[:4]
    return [FACES / n for n in names]


def _save(arr: np.ndarray, path: Path, **kw) -> Path:
    Image.fromarray(arr).save(path, **kw)
    return path


def _pil(src) -> Image.Image:
    """Open, load and close (no ResourceWarning from a file left open)."""
    with Image.open(src) as im:
        im.load()
        return im.copy()


def _rgb(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


# ---------------------------------------------------------------------------------------------
# listing


def test_list_images_recursive_sorted_case_insensitive(tmp_path):
    (tmp_path / "b").mkdir()
    (tmp_path / "a").mkdir()
    (tmp_path / ".thumbs").mkdir()
    for p in ["z.JPG", "b/y.png", "a/x.WebP", "a/w.jpeg", ".thumbs/t.jpg", ".hidden.jpg"]:
        _save(_rgb(8, 8), tmp_path / p, format="PNG")
    (tmp_path / "notes.txt").write_text("hi")
    (tmp_path / "b" / "doc.pdf").write_bytes(b"%PDF")

    got = list_images(tmp_path)
    rel = [p.relative_to(tmp_path).as_posix() for p in got.paths]
    assert rel == ["z.JPG", "a/w.jpeg", "a/x.WebP", "b/y.png"]  # files of a folder, then subfolders
    assert got.n_ignored == 2
    assert {p.name for p in got.hidden} == {".thumbs", ".hidden.jpg"}
    assert list_images(tmp_path).paths == got.paths  # deterministic
    assert IMAGE_EXTENSIONS == {".jpg", ".jpeg", ".png", ".webp"}


def test_list_images_file_and_list_sources(tmp_path):
    a = _save(_rgb(8, 8), tmp_path / "a.png")
    sub = tmp_path / "sub"
    sub.mkdir()
    b = _save(_rgb(8, 8), sub / "b.png")
    txt = tmp_path / "x.txt"
    txt.write_text("x")
    assert list_images(a).paths == [a]
    got = list_images([str(sub), a, txt, b])  # b is reached twice: kept once
    assert got.paths == [b, a]
    assert got.n_ignored == 1


def test_list_images_missing_path_names_it(tmp_path):
    missing = tmp_path / "nope" / "faces"
    with pytest.raises(ImageInputError, match="does not exist.*nope"):
        list_images(missing)
    ok = _save(_rgb(8, 8), tmp_path / "ok.png")
    with pytest.raises(ImageInputError, match="nope"):
        list_images([ok, missing])


def test_empty_folder_and_folder_without_images(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ImageInputError) as ei:
        list_images(empty)
    msg = str(ei.value)
    assert str(empty) in msg and ".jpg" in msg and ".png" in msg and ".webp" in msg

    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.txt").write_text("a")
    (docs / "b.gif").write_bytes(b"GIF89a")
    with pytest.raises(ImageInputError, match=r"2 other file\(s\) ignored") as ei:
        load_images(docs, 32)
    assert str(docs) in str(ei.value)


# ---------------------------------------------------------------------------------------------
# decoding one image


def test_real_face_matches_plain_pil(face_files):
    arr = load_image(face_files[0], 64)
    assert arr.shape == (3, 64, 64) and arr.dtype == np.float32
    assert 0.0 <= arr.min() and arr.max() <= 1.0
    ref = np.asarray(_pil(face_files[0]).convert("RGB").resize((64, 64), Image.LANCZOS))
    np.testing.assert_allclose(arr, ref.transpose(2, 0, 1) / 255.0, atol=1e-6)
    # Same size as the file: no resampling at all.
    full = load_image(face_files[0], 200)
    ref = np.asarray(_pil(face_files[0]).convert("RGB")).transpose(2, 0, 1) / 255.0
    np.testing.assert_allclose(full, ref, atol=1e-6)


def test_grayscale_palette_and_alpha_modes(tmp_path):
    g = np.tile(np.arange(0, 256, 8, dtype=np.uint8), (32, 1))
    arr = load_image(_save(g, tmp_path / "gray.png"), 32)
    assert np.allclose(arr[0], g / 255.0) and np.allclose(arr[0], arr[1]) and np.allclose(arr[1], arr[2])

    rgb = _rgb(32, 32, 1)
    pal = Image.fromarray(rgb).quantize(16)
    pal.save(tmp_path / "pal.png")
    arr = load_image(tmp_path / "pal.png", 32)
    np.testing.assert_allclose(arr, np.asarray(pal.convert("RGB")).transpose(2, 0, 1) / 255.0)

    rgba = np.zeros((32, 32, 4), np.uint8)
    rgba[..., 0] = 255  # red
    rgba[:, 16:, 3] = 255  # right half opaque, left half fully transparent
    rgba[:, :16, 3] = 0
    arr = load_image(_save(rgba, tmp_path / "rgba.png"), 32)
    assert np.allclose(arr[:, :, :16], 1.0)  # transparent -> white, not black
    assert np.allclose(arr[0, :, 16:], 1.0) and np.allclose(arr[1:, :, 16:], 0.0)

    half = np.zeros((32, 32, 2), np.uint8)
    half[..., 1] = 128  # black at 50% alpha over white = mid grey
    arr = load_image(_save(half, tmp_path / "la.png"), 32)
    assert np.allclose(arr, 127 / 255, atol=1.5 / 255)

    cmyk = Image.fromarray(rgb).convert("CMYK")
    cmyk.save(tmp_path / "cmyk.jpg", quality=95)
    arr = load_image(tmp_path / "cmyk.jpg", 32)
    assert arr.shape == (3, 32, 32) and np.abs(arr - rgb.transpose(2, 0, 1) / 255).mean() < 0.1


def test_16bit_png_scaled_not_clipped(tmp_path):
    ramp = np.linspace(0, 65535, 64).round().astype(np.uint16)
    img16 = np.tile(ramp, (64, 1))
    path = tmp_path / "g16.png"
    Image.fromarray(img16).save(path)
    assert _pil(path).mode.startswith("I")  # what PIL would clip in convert("RGB")
    arr = load_image(path, 64)
    np.testing.assert_allclose(arr[0], img16 / 65535.0, atol=1e-6)
    np.testing.assert_array_equal(arr[0], arr[2])
    # Resampled too: still spans [0, 1] (a clip would saturate everything above 255/65535).
    small = load_image(path, 32)
    assert small.min() >= 0 and small.max() <= 1
    assert abs(small.mean() - 0.5) < 0.02
    assert np.all(np.diff(small[0, 16, 2:-2]) > 0)

    # The same 16-bit data arriving as mode "I" (32-bit int) is read as 16-bit too.
    # (PIL cannot write mode "I" as PNG, so the bytes are a TIFF here.)
    buf = io.BytesIO()
    Image.fromarray(img16.astype(np.int32)).save(buf, format="TIFF")
    assert _pil(io.BytesIO(buf.getvalue())).mode == "I"
    np.testing.assert_allclose(prepare_image(buf.getvalue(), 64).array[1], img16 / 65535.0, atol=1e-6)


def test_webp(tmp_path, face_files):
    _pil(face_files[0]).save(tmp_path / "f.webp", quality=95)
    a = load_image(tmp_path / "f.webp", 64)
    b = load_image(face_files[0], 64)
    assert a.shape == (3, 64, 64) and np.abs(a - b).mean() < 0.03


@pytest.mark.parametrize("w,h", [(300, 200), (200, 300), (301, 200)])
def test_centre_crop(tmp_path, w, h):
    img = np.zeros((h, w, 3), np.uint8)
    img[..., 1] = 255  # green margins: must be cropped away
    side = min(w, h)
    top, left = (h - side) // 2, (w - side) // 2
    img[top:top + side, left:left + side] = (0, 0, 255)  # the blue centre square
    img[top:top + side // 2, left:left + side // 2] = (255, 0, 255)  # magenta top-left quarter
    path = _save(img, tmp_path / "wide.png")
    arr = load_image(path, side)  # no resize: exact
    assert np.all(arr[1] == 0.0)  # no green at all
    assert np.all(arr[0, : side // 2, : side // 2] == 1.0) and np.all(arr[0, : side // 2, side // 2:] == 0)
    assert np.all(arr[2, side // 2:, :] == 1.0) and np.all(arr[0, side // 2:, :] == 0.0)
    arr = load_image(path, 50)  # resized: still no green bleeding in from the margins
    assert arr[1].max() < 1e-6
    assert np.allclose(arr[0, :21, :21], 1.0, atol=1e-6) and np.allclose(arr[0, 29:, :], 0.0, atol=1e-6)
    assert np.allclose(arr[2], 1.0, atol=1e-6)


def test_exif_orientation_applied(tmp_path):
    img = np.zeros((20, 40, 3), np.uint8)  # stored landscape: left half red, right half blue
    img[:, :20, 0] = 255
    img[:, 20:, 2] = 255
    pil = Image.fromarray(img)
    exif = pil.getexif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    pil.save(tmp_path / "rot.png", exif=exif)
    prep = prepare_image(tmp_path / "rot.png", 20)
    assert prep.original_size == (20, 40)  # displayed portrait
    # Rotated 90 degrees clockwise the red left half becomes the top half.
    assert np.all(prep.array[0, :10] == 1.0) and np.all(prep.array[2, 10:] == 1.0)


def test_small_image_upsampled_and_flagged(tmp_path):
    path = _save(_rgb(40, 50), tmp_path / "tiny.png")
    prep = prepare_image(path, 64)
    assert prep.upsampled and prep.original_size == (50, 40)
    assert prep.array.shape == (3, 64, 64)
    assert not prepare_image(path, 40).upsampled


def test_load_image_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(os.urandom(500))
    with pytest.raises(ImageInputError, match="bad.jpg"):
        load_image(bad, 32)
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(ImageInputError, match="empty.png: empty file"):
        load_image(empty, 32)


# ---------------------------------------------------------------------------------------------
# loading a messy folder


@pytest.fixture
def messy(tmp_path, face_files) -> dict:
    d = tmp_path / "messy"
    (d / "sub").mkdir(parents=True)
    faces = []
    for i, f in enumerate(face_files[:3]):
        faces.append(Path(shutil.copy(f, d / f"face{i}.jpg")))
    dup = Path(shutil.copy(face_files[0], d / "sub" / "copy_of_face0.jpg"))
    data = face_files[3].read_bytes()
    trunc = d / "truncated.jpg"
    trunc.write_bytes(data[: len(data) // 2])
    rnd = d / "random.jpg"
    rnd.write_bytes(np.random.default_rng(0).bytes(2000))
    zero = d / "zero.png"
    zero.write_bytes(b"")
    (d / "readme.txt").write_text("not an image")
    small = _save(_rgb(30, 30), d / "small.png")
    gray = _save(np.full((100, 80), 7, np.uint8), d / "sub" / "gray.webp")
    return dict(dir=d, faces=faces, dup=dup, trunc=trunc, rnd=rnd, zero=zero, small=small, gray=gray)


def test_load_images_reports_every_problem(messy):
    res = load_images(messy["dir"], 64)
    rep = res.report
    expected_used = [*messy["faces"], messy["small"], messy["gray"]]
    assert res.paths == sorted(str(p) for p in expected_used[:3]) + [str(messy["small"]), str(messy["gray"])]
    assert res.images.shape == (5, 3, 64, 64) and res.images.dtype == np.float32
    assert rep.n_found == 9 and rep.n_used == 5 and rep.n_ignored == 1
    for p, h in zip(res.paths, res.hashes):
        assert h == hashlib.sha256(Path(p).read_bytes()).hexdigest()

    reasons = dict(rep.skipped)
    assert set(reasons) == {str(messy["trunc"]), str(messy["rnd"]), str(messy["zero"])}
    assert "truncated" in reasons[str(messy["trunc"])]
    assert "not a recognised image" in reasons[str(messy["rnd"])]
    assert reasons[str(messy["zero"])] == "empty file (0 bytes)"
    assert rep.duplicates == [(str(messy["dup"]), str(messy["faces"][0]))]
    assert rep.upsampled == [(str(messy["small"]), (30, 30))]

    s = rep.summary()
    assert "5 of 9 image file(s) used" in s
    assert "1 file(s) ignored" in s and "skipped: 3" in s
    assert str(messy["dup"]) in s and "small.png (30x30)" in s and "upsampled" in s
    # The decoded pixels are the ones load_image gives.
    np.testing.assert_array_equal(res.images[4], load_image(messy["gray"], 64))


def test_no_usable_image_lists_reasons(tmp_path):
    for i in range(7):
        (tmp_path / f"bad{i}.jpg").write_bytes(b"nope" * i)
    with pytest.raises(ImageInputError) as ei:
        load_images(tmp_path, 32)
    msg = str(ei.value)
    assert "no usable image among 7" in msg and "bad0.jpg: empty file" in msg
    assert "... and 2 more" in msg and "Traceback" not in msg


def test_summary_lists_at_most_ten_paths():
    rep = InputReport(n_found=30, n_used=5, skipped=[(f"f{i}.jpg", "broken") for i in range(25)])
    s = rep.summary()
    assert "f9.jpg" in s and "f10.jpg" not in s and "... and 15 more" in s
    assert len(s.splitlines()) <= 15


# ---------------------------------------------------------------------------------------------
# output


def test_save_png_roundtrip_atomic(tmp_path, monkeypatch):
    img = np.random.default_rng(0).random((3, 12, 10)).astype(np.float32)
    out = tmp_path / "out" / "x.png"
    save_png(img, out)
    back = np.asarray(_pil(out)).transpose(2, 0, 1) / 255.0
    assert np.abs(back - img).max() <= 0.5 / 255 + 1e-6
    assert os.listdir(out.parent) == ["x.png"]  # no temp file left behind
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(out.stat().st_mode) == 0o666 & ~umask  # not mkstemp's 0600

    # Out-of-range values are clipped; torch tensors work too.
    save_png(torch.tensor(img) * 3 - 1, out)
    back = np.asarray(_pil(out))
    assert back.min() == 0 and back.max() == 255

    # A crash before the rename leaves the old file intact and no temp file.
    before = out.read_bytes()
    def boom(*a, **k):
        raise OSError("disk full")
    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        save_png(np.zeros((3, 4, 4)), out)
    assert out.read_bytes() == before and os.listdir(out.parent) == ["x.png"]


def test_make_grid():
    imgs = np.stack([np.full((3, 4, 5), i / 10, np.float32) for i in range(5)])
    g = make_grid(imgs)  # 5 images -> 3 columns, 2 rows
    assert g.shape == (3, 2 + 2 * 6, 2 + 3 * 7)
    assert np.all(g[:, 2:6, 2:7] == 0.0) and np.all(g[:, 8:12, 9:14] == 0.4)
    assert np.all(g[:, 8:12, 16:21] == 1.0)  # empty cell = padding colour
    assert np.all(g[:, :2] == 1.0)
    g2 = make_grid(torch.tensor(imgs), ncols=5, padding=0)
    assert g2.shape == (3, 4, 25) and np.allclose(g2[:, :, 20:], 0.4)
    with pytest.raises(ValueError):
        make_grid([np.zeros((3, 4, 4)), np.zeros((3, 5, 4))])


# ---------------------------------------------------------------------------------------------
# the pixel limit, checked from the header


def _png(path: Path, w: int, h: int, rows: int | None = None) -> Path:
    """A 1-bit black PNG of w x h written by hand: a few KB for millions of pixels. ``rows``:
    only that many rows of pixel data (a file whose header claims more than it holds)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    raw = b"\0" * ((1 + (w + 7) // 8) * (h if rows is None else rows))  # filter byte + packed bits per row
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 1, 0, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))
    return path


def test_pixel_limit_from_the_header(tmp_path):
    """A 17 KB PNG can claim 12,000 x 12,000 pixels (1.6 GB once decoded): it is skipped, named
    with its size and the limit, from its header alone (this one holds 8 rows of data: decoding
    would call it truncated, not too large)."""
    from lrgmm.io.images import MAX_IMAGE_PIXELS

    assert MAX_IMAGE_PIXELS == 4096 * 4096
    d = tmp_path / "in"
    d.mkdir()
    _save(_rgb(64, 64), d / "ok.png")
    bomb = _png(d / "bomb.png", 12_000, 12_000, rows=8)
    assert bomb.stat().st_size < 20_000
    over = _png(d / "over.png", 4097, 4096)  # complete and valid, one column over the limit
    res = load_images(d, 32, workers=1)
    assert res.paths == [str(d / "ok.png")]
    reasons = dict(res.report.skipped)
    assert reasons[str(bomb)].startswith("too large: 12000x12000 = 144,000,000 pixels, over the limit of 16,777,216")
    assert reasons[str(over)].startswith("too large: 4097x4096 = 16,781,312 pixels, over the limit of 16,777,216")
    assert f"{bomb}: too large: 12000x12000" in res.report.summary()
    with pytest.raises(ImageInputError, match=r"bomb\.png: too large: 12000x12000 .* 16,777,216"):
        prepare_image(bomb, 32)  # the single-file path (edit and complete inputs)
    # At the limit exactly: decoded and used.
    assert load_image(_png(tmp_path / "edge.png", 4096, 4096), 32).shape == (3, 32, 32)


def test_pillow_bomb_checks_never_escape(tmp_path):
    """Past Pillow's own limits Image.open warns (DecompressionBombWarning) or raises
    (DecompressionBombError); neither may become a traceback, even with warnings as errors."""
    import warnings

    from lrgmm.errors import MaskError

    from lrgmm.data.masks import load_mask

    warn = _png(tmp_path / "warn.png", 10_000, 10_000, rows=1)  # 1e8 pixels: Pillow warns
    err = _png(tmp_path / "err.png", 20_000, 10_000, rows=1)  # 2e8 pixels: Pillow raises
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        report = InputReport()
        assert list(iter_images([warn, err], 32, report=report, workers=1)) == []
        reasons = dict(report.skipped)
        assert reasons[str(warn)].startswith("too large: 10000x10000 = 100,000,000 pixels")
        assert "too large to decode safely" in reasons[str(err)] and "16,777,216" in reasons[str(err)]
        # A mask image (lrgmm complete --mask) goes through the same check.
        for path in (warn, err):
            with pytest.raises(MaskError, match=rf"{path.name}: cannot read the mask image \(.*(too large|exceeds limit)"):
                load_mask(path, 128)


def test_pixel_limit_for_cached_images_too(tmp_path):
    """Files whose latents are cached are not decoded, only their header read: the limit holds there too."""
    report = InputReport()
    big = _png(tmp_path / "big.png", 5000, 5000, rows=1)
    assert list(iter_images([big], 32, report=report, decode=lambda sha: False, workers=1)) == []
    assert report.skipped[0][1].startswith("too large: 5000x5000")


# ---------------------------------------------------------------------------------------------
# folders that cannot be read


def _deny(monkeypatch, folder: Path) -> None:
    """Make listing ``folder`` fail as chmod 000 would (tests run as root, where it does not)."""
    real = os.scandir

    def scandir(path="."):
        if Path(path) == folder:
            raise PermissionError(13, "Permission denied", str(path))
        return real(path)

    monkeypatch.setattr(os, "scandir", scandir)


def test_unreadable_subfolder_is_reported(tmp_path, monkeypatch):
    d = tmp_path / "in"
    (d / "locked").mkdir(parents=True)
    (d / "open").mkdir()
    _save(_rgb(40, 40), d / "a.png")
    _save(_rgb(40, 40, 1), d / "open" / "b.png")
    _save(_rgb(40, 40, 2), d / "locked" / "c.png")
    _deny(monkeypatch, d / "locked")
    listed = list_images(d)
    assert listed.paths == [d / "a.png", d / "open" / "b.png"]
    assert listed.unreadable == [(d / "locked", "cannot read folder (Permission denied)")]
    res = load_images(d, 32, workers=1)
    assert res.report.skipped_folders == [(str(d / "locked"), "cannot read folder (Permission denied)")]
    summary = res.report.summary()
    assert "2 of 2 image file(s) used" in summary
    assert f"skipped: 1\n  {d / 'locked'}: cannot read folder (Permission denied)" in summary


def test_unreadable_input_folder_is_named(tmp_path, monkeypatch):
    d = tmp_path / "locked"
    d.mkdir()
    _save(_rgb(40, 40), d / "a.png")
    _deny(monkeypatch, d)
    with pytest.raises(ImageInputError, match=rf"no image files found in {d}; {d}: cannot read folder \(Permission denied\)"):
        list_images(d)
