"""Masks for completion: boxes, mask images, the fill the encoder sees, and the feathered blend.

A mask is an (R, R) bool tensor at the working resolution, True where the photo is missing.
Blend (``feathered_alpha``, ``blend``): out = alpha * decoded + (1 - alpha) * original, with
alpha = 1 on the mask and decreasing linearly to 0 over ``feather`` pixels outside it
(chessboard distance). Pixels farther than ``feather`` from the hole are the original's exactly.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError

from ..errors import MaskError, ParameterError
from ..io.images import ImageTooLargeError, open_image


def box_mask(resolution: int, x0: int, y0: int, x1: int, y1: int) -> torch.Tensor:
    """(R, R) bool mask, True on the box columns x0..x1-1 and rows y0..y1-1 (pixels, half-open).
    A box reaching outside the image or with no area is an error."""
    vals = [int(v) for v in (x0, y0, x1, y1)]
    if not (0 <= vals[0] < vals[2] <= resolution and 0 <= vals[1] < vals[3] <= resolution):
        raise MaskError(
            f"box x0={x0} y0={y0} x1={x1} y1={y1} is not inside the {resolution}x{resolution} image: "
            f"need 0 <= x0 < x1 <= {resolution} and 0 <= y0 < y1 <= {resolution}"
        )
    m = torch.zeros(resolution, resolution, dtype=torch.bool)
    m[vals[1] : vals[3], vals[0] : vals[2]] = True
    return m


def centre_box(resolution: int, area: float) -> tuple[int, int, int, int]:
    """The centred square box covering ``area`` of the image (rounded to whole pixels)."""
    side = max(1, round(resolution * math.sqrt(area)))
    x0 = (resolution - side) // 2
    return x0, x0, x0 + side, x0 + side


def random_box(resolution: int, area: float, generator: torch.Generator) -> tuple[int, int, int, int]:
    """A square box covering ``area`` of the image at a uniformly random place inside it."""
    side = max(1, round(resolution * math.sqrt(area)))
    x0, y0 = torch.randint(0, resolution - side + 1, (2,), generator=generator).tolist()
    return x0, y0, x0 + side, y0 + side


def load_mask(path, resolution: int, source_size: tuple[int, int] | None = None) -> torch.Tensor:
    """Read a mask image (any mode; white = missing) as a bool (R, R) mask (see ``check_mask``)."""
    try:
        with open_image(path) as img:  # the pixel limit of every input image, from the header
            a = np.asarray(img.convert("L"))
    except (OSError, UnidentifiedImageError, ImageTooLargeError, Image.DecompressionBombError) as e:
        raise MaskError(f"{path}: cannot read the mask image ({e})") from None
    return check_mask(torch.from_numpy(a > 127), resolution, name=str(path), source_size=source_size)


def check_mask(mask, resolution: int, name: str = "mask", source_size: tuple[int, int] | None = None) -> torch.Tensor:
    """A bool (R, R) mask from an (H, W) bool / 0-1 / 0-255 array.

    Accepted sizes: R x R; any other square size (reduced to R x R: a working pixel is missing
    when any part of it is masked); or the photo's own (width, height) ``source_size``, which is
    centre-cropped to a square like the photo first. Errors for other sizes and for masks that
    hide nothing or everything."""
    m = torch.as_tensor(mask)
    if m.ndim == 3 and m.shape[0] == 1:
        m = m[0]
    if m.ndim != 2:
        raise MaskError(f"{name}: expected a 2-D (H, W) mask, got shape {tuple(m.shape)}")
    if m.dtype != torch.bool:
        m = m.float()
        m = m > (127.5 if float(m.max()) > 1 else 0.5)
    h, w = m.shape
    if h != w and source_size is not None and (w, h) == tuple(source_size):
        side = min(h, w)
        top, left = (h - side) // 2, (w - side) // 2
        m = m[top : top + side, left : left + side]
        h = w = side
    if (h, w) != (resolution, resolution):
        if h != w:
            expected = f"{resolution}x{resolution} (the working resolution)"
            if source_size is not None:
                expected += f" or {source_size[0]}x{source_size[1]} (the photo's size)"
            raise MaskError(
                f"{name} is {w}x{h} pixels; it must be {expected}, or square: "
                f"it is matched to the centre-cropped photo"
            )
        m = F.adaptive_avg_pool2d(m[None, None].float(), resolution)[0, 0] > 0
    n = int(m.sum())
    if n == 0:
        raise MaskError(f"{name} hides no pixel: nothing to complete (white or non-zero = missing)")
    if n == m.numel():
        raise MaskError(f"{name} hides every pixel: nothing is observed to condition on; use `lrgmm sample` instead")
    return m


def fill_masked(image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The image with masked pixels set to the mean colour of the visible ones (what is encoded)."""
    keep = ~mask
    mean = (image * keep).sum((-2, -1)) / keep.sum()
    return torch.where(mask[None], mean[:, None, None], image)


def feathered_alpha(mask: torch.Tensor, feather: int = 4) -> torch.Tensor:
    """Blend weight (R, R) float32: 1 on the mask, 1 - d / (feather + 1) at chessboard distance
    d <= feather outside it, 0 beyond."""
    if feather < 0:
        raise ParameterError(f"feather must be >= 0, got {feather}")
    m = mask[None, None].float()
    alpha = m.clone()
    for d in range(1, feather + 1):
        grown = F.max_pool2d(m, 2 * d + 1, stride=1, padding=d)
        alpha = torch.maximum(alpha, grown * (1 - d / (feather + 1)))
    return alpha[0, 0]


def blend(decoded: torch.Tensor, original: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """alpha * decoded + (1 - alpha) * original; exactly the original where alpha = 0."""
    return torch.where(alpha == 0, original, alpha * decoded + (1 - alpha) * original)
