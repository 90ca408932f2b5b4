"""``lrgmm.figures``: the Pillow renderer shared by the reports and the memorisation figure.
Synthetic pictures only (fast)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from lrgmm.figures import RED, Tile, labelled_rows, tile_rows


def _pic(value: int, h: int = 20, w: int = 20) -> np.ndarray:
    return np.full((h, w, 3), value, dtype=np.uint8)


def test_tile_rows_puts_every_picture_in_its_box(tmp_path):
    rng = np.random.default_rng(0)
    rows = []
    for r in range(5):
        row = [Tile(rng.integers(0, 256, (24, 24, 3), dtype=np.uint8), [f"row {r}", ("flag", RED)], frame=RED if r < 2 else None)]
        row += [Tile(rng.random((3, 24, 24)), [f"t{c}", "x" * 200]) for c in range(3)]  # floats, a caption too long
        rows.append(row)
    layout = tile_rows(rows, tmp_path / "t.png", title="a title " * 30, rules={2: "threshold"}, column_gaps={1: 14})
    with Image.open(tmp_path / "t.png") as im:
        img = np.asarray(im.convert("RGB"))
    assert img.shape[1::-1] == layout.size
    assert len(layout.boxes) == 5 and all(len(b) == 4 for b in layout.boxes)
    for row, boxes in zip(rows, layout.boxes):
        for t, (x0, y0, x1, y1) in zip(row, boxes):
            want = t.image if t.image.dtype == np.uint8 else (np.clip(t.image, 0, 1) * 255 + 0.5).astype(np.uint8).transpose(1, 2, 0)
            np.testing.assert_array_equal(img[y0:y1, x0:x1], want)
    xs = [[b[0] for b in boxes] for boxes in layout.boxes]
    assert all(x == xs[0] for x in xs)  # columns aligned
    assert xs[0][1] - xs[0][0] - 24 > xs[0][2] - xs[0][1] - 24  # the extra gap before column 1
    ys = [boxes[0][1] for boxes in layout.boxes]
    steps = np.diff(ys)
    assert steps[1] > steps[0] == steps[2] == steps[3]  # the rule's band above row 2
    # Red frames around the flagged rows' first picture, none elsewhere; the dashed rule is red.
    x0, y0 = layout.boxes[0][0][:2]
    assert tuple(img[y0 - 3, x0 + 5]) == RED and tuple(img[layout.boxes[3][0][1] - 3, x0 + 5]) == (255, 255, 255)
    band = img[layout.boxes[1][0][3]:layout.boxes[2][0][1]]
    assert (band == np.array(RED)).all(axis=-1).any()


def test_tile_rows_rejects_bad_layouts(tmp_path):
    with pytest.raises(ValueError, match="at least one row"):
        tile_rows([], tmp_path / "a.png")
    with pytest.raises(ValueError, match="rules must name rows 0..1"):
        tile_rows([[Tile(_pic(0))]], tmp_path / "a.png", rules={3: "x"})
    assert not (tmp_path / "a.png").exists()


def test_labelled_rows_is_shared_with_the_report(tmp_path):
    import experiments.editing_report
    import experiments.reproduction

    assert experiments.reproduction.labelled_rows is labelled_rows
    assert experiments.editing_report.labelled_rows is labelled_rows
    a, b = np.full((3, 10, 30), 0.0, np.float32), np.full((3, 12, 20), 1.0, np.float32)
    out = labelled_rows([("first", a), ("second, a longer label " * 3, b)], tmp_path / "sub" / "l.png", label_width=50)
    with Image.open(out) as im:
        img = np.asarray(im.convert("RGB"))
    assert img.shape == (22, 80, 3)
    assert (img[:10, 50:80] == 0).all() and (img[10:22, 50:70] == 255).all()
    assert not list((tmp_path / "sub").glob(".*.tmp"))  # written atomically: no temporary file left


def test_nn_step_figure_shows_the_same_draws_with_and_without_the_nn_step(model64_file, tmp_path, capsys):
    from experiments.figure_nn_step import main

    out = tmp_path / "nn.png"
    assert main(["--model", str(model64_file), "--n", "3", "--out", str(out)]) == 0
    with Image.open(out) as im:
        w, h = im.size
    # three rows of three 128-px tiles (2-px padding), beside the label column
    assert h == 3 * (128 + 4) and w > 3 * 128
    assert main(["--model", str(tmp_path / "missing.lrgmm"), "--out", str(tmp_path / "x.png")]) == 2
    assert "lrgmm demo" in capsys.readouterr().err and not (tmp_path / "x.png").exists()
