"""Provenance maps: which training image each latent pixel of a generated face was copied from.

The NN step (eq. 5) returns, per generated face, an (h, w) map of training indices. This module
turns it into what people look at: a colour-coded picture (one stable colour per training image)
and the list of training files used with their share of the face's latent pixels.
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


def provenance_image(provenance: torch.Tensor, size: int) -> torch.Tensor:
    """Colour-coded map of one face, upscaled without interpolation: (h, w) -> (3, size, size)."""
    rgb = index_colors(provenance).permute(2, 0, 1)  # (3, h, w)
    h, w = provenance.shape
    if size % h or size % w:
        raise ValueError(f"image size {size} is not a multiple of the latent grid {h}x{w}")
    return rgb.repeat_interleave(size // h, 1).repeat_interleave(size // w, 2)


def provenance_shares(provenance: torch.Tensor) -> list[tuple[int, float]]:
    """(training index, share of latent pixels) for one face's (h, w) map, largest share first."""
    idx, counts = torch.unique(provenance.reshape(-1), return_counts=True)
    total = provenance.numel()
    order = torch.argsort(counts, descending=True, stable=True)
    return [(int(idx[o]), float(counts[o]) / total) for o in order]


def provenance_record(provenance: torch.Tensor, training_files: list[str]) -> dict:
    """JSON-ready description of one face's provenance."""
    shares = provenance_shares(provenance)
    return {
        "latent_grid": list(provenance.shape),
        "distinct_training_images": len(shares),
        "largest_share": shares[0][1] if shares else 0.0,
        "map": provenance.tolist(),
        "sources": [
            {"index": i, "file": training_files[i] if i < len(training_files) else None, "share": round(s, 6)}
            for i, s in shares
        ],
    }
