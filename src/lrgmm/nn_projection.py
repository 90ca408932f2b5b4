"""Nearest-neighbour projection of generated codes onto training latent pixels (eq. 5 and 6).

For every generated code z of component k and every latent position p, z(p) is replaced by y_j(p),
where j is the training code of the same cluster whose omega x omega patch around the same
position p is nearest:

    j = argmin_{i : y_i in C_k} || Phi z(p) - Phi y_i(p) ||^2                 (eq. 5)
    Phi z(p) = (z(p + o))_{o in {-rho..rho}^2},  omega = 2 rho + 1            (eq. 6)

with zeros outside the grid (zero padding). j per position is the provenance map.

All positions are independent, so one iteration is a few batched tensor operations: the squared
patch distance is a box sum of per-pixel squared distances,

    || Phi z(p) - Phi y(p) ||^2 = box(|z|^2)(p) - 2 box(<z, y>)(p) + box(|y|^2)(p),

where box sums an omega x omega window with zero padding. box(|z|^2) does not depend on i and is
dropped from the argmin; box(|y_i|^2) does not depend on the query.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# Upper bound on the (queries x candidates x positions) distance block held at once.
_BLOCK_ELEMENTS = 1 << 25


def box_sum(x: torch.Tensor, patch_size: int) -> torch.Tensor:
    """Sum over patch_size x patch_size windows with zero padding: (..., h, w) -> (..., h, w)."""
    if patch_size % 2 != 1 or patch_size < 1:
        raise ValueError(f"patch_size (omega) must be a positive odd integer, got {patch_size}")
    if patch_size == 1:
        return x
    h, w = x.shape[-2:]
    lead = x.shape[:-2]
    y = F.avg_pool2d(
        x.reshape(-1, 1, h, w), patch_size, stride=1, padding=patch_size // 2, count_include_pad=True
    )
    return (y * (patch_size * patch_size)).reshape(*lead, h, w)


def _nearest(
    queries: torch.Tensor, memory: torch.Tensor, memory_box_sq: torch.Tensor, patch_size: int
) -> torch.Tensor:
    """Index into ``memory`` of the nearest patch at the same position, (n, h, w) int64.

    queries (n, q, h, w), memory (m, q, h, w), memory_box_sq (m, h, w) = box(|y_i|^2).
    """
    n, q, h, w = queries.shape
    m = memory.shape[0]
    mem_t = memory.permute(2, 3, 1, 0).reshape(h * w, q, m)  # (hw, q, m)
    out = torch.empty(n, h, w, dtype=torch.long)
    step = max(1, _BLOCK_ELEMENTS // max(m * h * w, 1))
    for start in range(0, n, step):
        qs = queries[start : start + step]
        b = qs.shape[0]
        q_t = qs.permute(2, 3, 0, 1).reshape(h * w, b, q)  # (hw, b, q)
        dots = torch.bmm(q_t, mem_t)  # (hw, b, m): <z(p), y_i(p)> for every pair
        dots = dots.permute(1, 2, 0).reshape(b, m, h, w)
        dist = memory_box_sq.unsqueeze(0) - 2 * box_sum(dots, patch_size)
        out[start : start + b] = dist.argmin(1)
    return out


def gather_pixels(memory: torch.Tensor, provenance: torch.Tensor) -> torch.Tensor:
    """Codes whose pixel p is memory[provenance[s, p]](p): (m, q, h, w), (n, h, w) -> (n, q, h, w)."""
    m, q, h, w = memory.shape
    n = provenance.shape[0]
    flat = memory.permute(0, 2, 3, 1).reshape(m, h * w, q)
    pos = torch.arange(h * w).expand(n, h * w)
    picked = flat[provenance.reshape(n, h * w), pos]  # (n, hw, q)
    return picked.reshape(n, h, w, q).permute(0, 3, 1, 2).contiguous()


def nn_project(
    codes: torch.Tensor,
    components: torch.Tensor,
    memory: torch.Tensor,
    memory_labels: torch.Tensor,
    patch_size: int = 5,
    iterations: int = 1,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The NN step (eq. 5), iterated.

    Args:
        codes: (n, q, h, w) generated codes z.
        components: (n,) component k each code was drawn from.
        memory: (N, q, h, w) training codes y_i = P0(E(x_i)).
        memory_labels: (N,) hard cluster label of each training code.
        patch_size: omega (odd).
        iterations: number of NN projections (>= 1); each one starts from the previous output.
    Returns:
        (projected codes (n, q, h, w), provenance (n, h, w) int64 indices into ``memory``).
        Every pixel of the output is exactly memory[provenance[s, p]](p), and every index names a
        training code of the same cluster as the query. A cluster with no training code (possible
        only if EM labels no sample with it) falls back to the whole memory.
    """
    if iterations < 1:
        raise ValueError(f"iterations must be >= 1, got {iterations}")
    if codes.shape[1:] != memory.shape[1:]:
        raise ValueError(f"codes {tuple(codes.shape)} and memory {tuple(memory.shape)} differ in shape")
    n, q, h, w = codes.shape
    out = codes.to(memory.dtype, copy=True)  # never write into the caller's tensor
    provenance = torch.empty(n, h, w, dtype=torch.long)
    memory_box_sq = box_sum((memory * memory).sum(1), patch_size)
    for k in torch.unique(components).tolist():
        rows = (components == k).nonzero().squeeze(1)
        members = (memory_labels == k).nonzero().squeeze(1)
        if members.numel() == 0:
            members = torch.arange(memory.shape[0])
        mem_k, box_k = memory[members], memory_box_sq[members]
        z = out[rows]
        for _ in range(iterations):
            local = _nearest(z, mem_k, box_k, patch_size)
            z = gather_pixels(mem_k, local)
        out[rows] = z
        provenance[rows] = members[local]
    return out, provenance
