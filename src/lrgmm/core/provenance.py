"""Provenance maps: which training image each latent pixel of a generated face was copied from.

The NN step (eq. 5) returns, per generated face, an (h, w) map of training indices. This module
turns it into what people look at: a colour-coded picture (one stable colour per training image)
and the list of training files used with their share of the face's latent pixels.

Index -1 marks a position that was not copied from a training photo: the observed part of a
completed photo, or a position an edit left as it was. Every function here treats it alike: it
is left out of the sources and their shares (shares are of the copied positions), and the
picture shows it as the faded input image (or grey without one). This is the one place that
renders and describes provenance: faces, completions, edits, the studio and the evaluation.
"""

from __future__ import annotations

import torch

_GOLDEN = 0.6180339887498949


def index_colors(indices: torch.Tensor) -> torch.Tensor:
    """A stable, well-spread RGB colour in [0, 1] per training index: (...) -> (..., 3).

    Hues step by the golden ratio so consecutive indices get distant colours; saturation and
    value cycle on slower periods so that indices sharing a hue still differ.
    """
    i = indices.to(torch.float64)
    hue = torch.remainder(i * _GOLDEN, 1.0)
    sat = 0.55 + 0.4 * torch.remainder(indices // 7, 3).to(torch.float64) / 2
    val = 0.7 + 0.3 * torch.remainder(indices // 3, 2).to(torch.float64)
    # HSV -> RGB, vectorised.
    h6 = hue * 6
    sector = torch.floor(h6).to(torch.long) % 6
    f = h6 - torch.floor(h6)
    p = val * (1 - sat)
    qv = val * (1 - sat * f)
    t = val * (1 - sat * (1 - f))
    table = torch.stack(
        [
            torch.stack([val, t, p], -1),
            torch.stack([qv, val, p], -1),
            torch.stack([p, val, t], -1),
            torch.stack([p, qv, val], -1),
            torch.stack([t, p, val], -1),
            torch.stack([val, p, qv], -1),
        ],
        0,
    )  # (6, ..., 3)
    idx = sector.unsqueeze(0).unsqueeze(-1).expand(1, *sector.shape, 3)
    return torch.gather(table, 0, idx).squeeze(0).to(torch.float32)


def provenance_image(provenance: torch.Tensor, size: int, background: torch.Tensor | None = None) -> torch.Tensor:
    """Colour-coded map of one face, upscaled without interpolation: (h, w) -> (3, size, size).
    Positions of index -1 show ``background`` (3, size, size) faded towards white, or grey."""
    h, w = provenance.shape
    if size % h or size % w:
        raise ValueError(f"image size {size} is not a multiple of the latent grid {h}x{w}")
    rgb = index_colors(provenance.clamp_min(0)).permute(2, 0, 1)  # (3, h, w)
    rgb = rgb.repeat_interleave(size // h, 1).repeat_interleave(size // w, 2)
    kept = provenance < 0
    if not bool(kept.any()):
        return rgb
    kept = kept.repeat_interleave(size // h, 0).repeat_interleave(size // w, 1)
    shown = torch.full_like(rgb, 0.5) if background is None else 0.35 * background.to(rgb.dtype) + 0.65
    return torch.where(kept[None], shown, rgb)


def provenance_shares(provenance: torch.Tensor) -> list[tuple[int, float]]:
    """(training index, share of the copied latent pixels) for one face's (h, w) map, largest
    share first; positions of index -1 are not counted."""
    copied = provenance[provenance >= 0]
    idx, counts = torch.unique(copied, return_counts=True)
    total = max(copied.numel(), 1)
    order = torch.argsort(counts, descending=True, stable=True)
    return [(int(idx[o]), float(counts[o]) / total) for o in order]


def provenance_record(provenance: torch.Tensor, training_files: list[str]) -> dict:
    """JSON-ready description of one face's provenance: the map, how many positions were copied,
    and the training files with their shares (largest first)."""
    shares = provenance_shares(provenance)
    return {
        "latent_grid": list(provenance.shape),
        "copied_positions": int((provenance >= 0).sum()),
        "distinct_training_images": len(shares),
        "largest_share": round(shares[0][1], 6) if shares else 0.0,  # as rounded in "sources"
        "map": provenance.tolist(),
        "sources": [
            {"index": i, "file": training_files[i] if i < len(training_files) else None, "share": round(s, 6)}
            for i, s in shares
        ],
    }
