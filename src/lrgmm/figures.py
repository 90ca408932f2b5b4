"""Small figures drawn with Pillow alone (no plotting library): text, labelled rows of images,
and rows of captioned tiles.

Shared by the reproduction report (``experiments.reproduction``), the editing report and the evaluation's
memorisation figure (``lrgmm.evaluation.memorisation_figure``). Every figure is written
atomically as a PNG (``lrgmm.io.atomic``), like every other file lrgmm writes.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .io.atomic import atomic_write_bytes
from .io.images import to_uint8_hwc

__all__ = ["Tile", "font", "labelled_rows", "save_image", "text_size", "tile_rows", "wrap"]

Colour = tuple[int, int, int]
BLACK: Colour = (0, 0, 0)
RED: Colour = (200, 0, 30)


def font(size: int) -> ImageFont.ImageFont:
    """Pillow's default font at ``size`` px (the small bitmap font where FreeType is missing)."""
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow without FreeType: the small bitmap font
        return ImageFont.load_default()


def text_size(draw: ImageDraw.ImageDraw, text: str, fnt) -> tuple[int, int]:
    box = draw.textbbox((0, 0), text, font=fnt)
    return box[2] - box[0], box[3] - box[1]


def wrap(draw: ImageDraw.ImageDraw, text: str, fnt, width: int) -> list[str]:
    """``text`` cut into lines of at most ``width`` pixels, at spaces."""
    words, lines, cur = text.split(), [], ""
    for wd in words:
        trial = f"{cur} {wd}".strip()
        if cur and text_size(draw, trial, fnt)[0] > width:
            lines.append(cur)
            cur = wd
        else:
            cur = trial
    if cur:
        lines.append(cur)
    return lines or [""]


def _fit(draw: ImageDraw.ImageDraw, text: str, fnt, width: int) -> str:
    """``text`` shortened in the middle with an ellipsis until it fits ``width`` pixels."""
    if text_size(draw, text, fnt)[0] <= width:
        return text
    keep = len(text)
    while keep > 1:
        keep -= 1
        head = (keep + 1) // 2
        short = text[:head] + "…" + text[len(text) - (keep - head):]
        if text_size(draw, short, fnt)[0] <= width:
            return short
    return "…"


def save_image(img: Image.Image, path: str | os.PathLike) -> Path:
    """Write a Pillow image as PNG, atomically; returns the path."""
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())
    return Path(path)


def labelled_rows(rows: list[tuple[str, np.ndarray]], path: Path, label_width: int = 230, tile: int | None = None) -> Path:
    """Image rows, each (label, (3, H, W) float array in [0, 1] from ``make_grid``), stacked
    with the label written on the left."""
    fnt = font(14)
    arrs = [np.clip(a, 0, 1) for _, a in rows]
    w = max(a.shape[2] for a in arrs)
    total_h = sum(a.shape[1] for a in arrs)
    img = Image.new("RGB", (label_width + w, total_h), "white")
    draw = ImageDraw.Draw(img)
    y = 0
    for (label, _), a in zip(rows, arrs):
        pil = Image.fromarray((a.transpose(1, 2, 0) * 255).round().astype(np.uint8))
        img.paste(pil, (label_width, y))
        lines = wrap(draw, label, fnt, label_width - 12)
        lh = 18
        ty = y + (a.shape[1] - lh * len(lines)) // 2
        for ln in lines:
            draw.text((6, ty), ln, fill="black", font=fnt)
            ty += lh
        y += a.shape[1]
    return save_image(img, path)


def _hwc_u8(image) -> np.ndarray:
    """A picture as (H, W, 3) uint8: uint8 (H, W, 3) or (3, H, W) as is, floats in [0, 1] by
    ``to_uint8_hwc``."""
    if hasattr(image, "detach"):  # a torch tensor
        image = image.detach().to("cpu").numpy()
    a = np.asarray(image)
    if a.dtype == np.uint8 and a.ndim == 3:
        if a.shape[2] == 3:
            return a
        if a.shape[0] == 3:
            return np.ascontiguousarray(a.transpose(1, 2, 0))
    return to_uint8_hwc(a)


@dataclass
class Tile:
    """One picture of ``tile_rows`` with its caption.

    image: uint8 (H, W, 3) or (3, H, W), or (3, H, W) float in [0, 1] (numpy or torch).
    caption: lines written under it, each a string or (string, RGB colour).
    frame: RGB colour of a frame drawn around it in the padding, or None.
    """

    image: object
    caption: list = field(default_factory=list)
    frame: Colour | None = None


@dataclass
class TileLayout:
    """Where ``tile_rows`` put things: the image size and, per row and tile, the pixel box
    (x0, y0, x1, y1) of the picture (x1, y1 exclusive), so tests and readers can crop it."""

    size: tuple[int, int]
    boxes: list[list[tuple[int, int, int, int]]]


def tile_rows(
    rows: list[list[Tile]],
    path: str | os.PathLike,
    *,
    title: str | None = None,
    rules: dict[int, str] | None = None,
    column_gaps: dict[int, int] | None = None,
    pad: int = 6,
    caption_size: int = 11,
) -> TileLayout:
    """Rows of captioned pictures, one column per tile position, written as a PNG.

    title: wrapped over the figure's width at the top. rules: ``{row: label}`` draws a red
    dashed line with ``label`` above that row (``len(rows)``: below the last). column_gaps:
    ``{column: pixels}`` of extra space before that column. Every picture keeps its size (no
    resampling); a column is as wide as its widest picture; captions are shortened to fit.
    """
    if not rows or not all(rows):
        raise ValueError("tile_rows needs at least one row of tiles, and no empty row")
    if any(not 0 <= r <= len(rows) for r in (rules or {})):
        raise ValueError(f"rules must name rows 0..{len(rows)}, got {sorted(rules)}")
    pics = [[_hwc_u8(t.image) for t in row] for row in rows]
    n_cols = max(len(r) for r in rows)
    col_w = [max(p[c].shape[1] for p in pics if c < len(p)) for c in range(n_cols)]
    cap_font, title_font = font(caption_size), font(14)
    line_h = caption_size + 4
    n_lines = max(len(t.caption) for row in rows for t in row)
    gaps = column_gaps or {}
    xs, x = [], pad
    for c in range(n_cols):
        x += gaps.get(c, 0)
        xs.append(x)
        x += col_w[c] + 2 * pad
    width = x
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    title_lines = wrap(probe, title, title_font, width - 2 * pad) if title else []
    rules = dict(rules or {})
    rule_h = line_h + 6
    y = pad + len(title_lines) * 18 + (6 if title_lines else 0)
    row_y, rule_y = [], {}
    for r in range(len(rows) + 1):
        if r in rules:  # a band above row r: the dashed line, its label under it
            rule_y[r] = y
            y += rule_h
        if r < len(rows):
            row_y.append(y)
            y += max(a.shape[0] for a in pics[r]) + 2 * pad + n_lines * line_h
    height = y + pad

    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    ty = pad
    for ln in title_lines:
        draw.text((pad, ty), ln, fill="black", font=title_font)
        ty += 18
    boxes = []
    for r, (row, p) in enumerate(zip(rows, pics)):
        row_boxes = []
        pic_h = max(a.shape[0] for a in p)
        for c, (t, a) in enumerate(zip(row, p)):
            x0, y0 = xs[c] + pad, row_y[r] + pad
            img.paste(Image.fromarray(a, "RGB"), (x0, y0))
            box = (x0, y0, x0 + a.shape[1], y0 + a.shape[0])
            row_boxes.append(box)
            if t.frame is not None:
                draw.rectangle([x0 - 4, y0 - 4, box[2] + 3, box[3] + 3], outline=t.frame, width=3)
            cy = y0 + pic_h + pad
            for line in t.caption:
                text, colour = (line, BLACK) if isinstance(line, str) else line
                draw.text((x0, cy), _fit(draw, text, cap_font, col_w[c] + pad), fill=colour, font=cap_font)
                cy += line_h
        boxes.append(row_boxes)
    for r, yl in rule_y.items():
        for xx in range(pad, width - pad, 10):
            draw.line([(xx, yl + 2), (min(xx + 6, width - pad), yl + 2)], fill=RED, width=2)
        draw.text((pad, yl + 5), _fit(draw, rules[r], cap_font, width - 2 * pad), fill=RED, font=cap_font)
    save_image(img, path)
    return TileLayout((width, height), boxes)
