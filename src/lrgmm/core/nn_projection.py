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

Order (``order`` / ``nn_order``)
--------------------------------
Eq. 5 as printed projects every position from the same input z ("parallel"): neighbouring
positions choose their sources independently, and where they choose different photos the
decoded face shows a seam. ``order="raster"`` visits the positions in raster order and reads each
patch from the face *as it stands*: the positions already visited hold their copied training
pixels, the others still hold z. So p takes the photo whose patch agrees best with the
neighbours already copied as well as with the draw, which is eq. 5 itself with the query
updated position by position (Gauss-Seidel instead of Jacobi sweeps). Every output pixel is
still a training pixel of the cluster and provenance is unchanged in meaning. With
``patch_size`` 1 both orders give the same result. Cost: one (b, q) x (q, m) product and a few
(b, m) updates per position on top of the parallel step's distance block (the window sums are
updated, not recomputed), with every cluster drawn advancing together (padded to the largest
of a batch), so the 256 positions run once per batch of clusters, not once per cluster. A copy
budget in raster order is greedy in that order: a photo that gave cap counted positions of
the face is not offered to its later positions (always possible while cap * m >= P).

Copy budget (``max_share``)
---------------------------
A privacy bound on top of eq. 5: no generated face takes more than

    cap = floor(max_share * P)          (P = the positions of the face: h w = 256 for TAEF2)

of its latent pixels from any one training photo (one memory entry = one photo; the budget is
per photo, not per person: two photos of one person count separately). max_share =
None or a cap >= P (max_share = 1) is off, and runs the plain argmin above, bit for bit.

With the budget on, the positions of a face are *served nearest first*: over all pairs
(position p, photo i) of the face, in increasing patch distance d(p, i), p takes i if p has no
photo yet and i has given fewer than cap positions. This greedy has a characterisation that
does not depend on the order it is run in: it is the unique *stable* assignment (Gale and
Shapley 1962, "College admissions and the stability of marriage"; unique here because both
sides rank pairs by the same distance), the assignment a in which no position p and photo i
satisfy d(p, i) < d(p, a(p)) while i has a free slot or holds a position p' with
d(p', i) > d(p, i). So a position keeps its plain nearest neighbour unless that photo is full
of positions nearer to it, and then takes its best other source that is not. Ties in d are
broken by the position index (lower first), then by topk's order.

It is computed by deferred acceptance, vectorised over faces and positions. A face whose plain
nearest neighbours already meet the budget keeps them (that assignment is stable). In the
others, every position points into its list of k nearest photos (one ``torch.topk`` on the
distance block); in each round every photo keeps the cap nearest positions pointing at it (one
stable sort by (photo, distance) per face) and the rest move one step down their list. Rounds
end when no photo holds more than cap positions, typically after a few. A face whose list runs
out for some position (its k nearest photos all full of nearer positions: rare for k = 16) is
recomputed with a 4 times longer list, up to the whole cluster, which always succeeds when the
budget is feasible: cap * m >= P for a cluster of m photos (``BudgetError`` otherwise, naming
the smallest feasible max_share). The result is the same whatever k (the stable assignment is
unique), which the tests check.

A budget is *feasible* for a cluster of m photos when cap * m >= P. An explicit budget that a
cluster cannot meet is an error (``BudgetError``, naming the smallest feasible share); a model's
default budget (``strict=False``) is met wherever it can be, and in a smaller cluster each photo
gives at most ceil(P / m) positions, the least any assignment can, so a default never makes
sampling, a labelled subset or a small completion fail.

With several NN iterations the budget holds at every iteration, hence on the final output, whose
provenance is that of the last one. ``positions`` restricts what is counted and served (a
completion's unknown positions): the other positions take their plain nearest neighbour, and
cap = floor(max_share * the number of counted positions).
"""

from __future__ import annotations

import math

import torch

from ..defaults import DEFAULTS, NN_ORDERS
from ..errors import BudgetError, ParameterError

# Upper bound on the (queries x candidates x positions) distance block held at once.
_BLOCK_ELEMENTS = 1 << 25
# Candidate photos listed per position with the copy budget on (module docstring).
_BUDGET_TOPK = 16


def _window_sum(x: torch.Tensor, patch_size: int, dims: tuple[int, int]) -> torch.Tensor:
    """Sum over patch_size x patch_size windows of the two dimensions ``dims``, zero padding.

    Separable shifted adds in a fixed order (rows of the first dimension, then of the second):
    exact sums of the window, no rescaling, and no layout change, so the distance block can
    stay in the (h, w, queries, photos) order its GEMM produces.
    """
    if patch_size % 2 != 1 or patch_size < 1:
        raise ValueError(f"patch_size (omega) must be a positive odd integer, got {patch_size}")
    rho = patch_size // 2
    for dim in dims:
        n = x.shape[dim]
        y = x.clone()
        for o in range(1, min(rho, n - 1) + 1):
            y.narrow(dim, o, n - o).add_(x.narrow(dim, 0, n - o))
            y.narrow(dim, 0, n - o).add_(x.narrow(dim, o, n - o))
        x = y
    return x


def box_sum(x: torch.Tensor, patch_size: int) -> torch.Tensor:
    """Sum over patch_size x patch_size windows with zero padding: (..., h, w) -> (..., h, w)."""
    return _window_sum(x, patch_size, (x.ndim - 2, x.ndim - 1))


def _distance_block(qs: torch.Tensor, mem_t: torch.Tensor, memory_box_sq_t: torch.Tensor, patch_size: int) -> torch.Tensor:
    """Eq. 5's patch distances minus box(|z|^2) for queries qs (b, q, h, w) against every memory
    code (mem_t: (hw, q, m); memory_box_sq_t: (h, w, 1, m)): (h, w, b, m).

    The block stays in the layout of the batched GEMM (position-major, photos last): the box sum
    runs over the two leading dimensions and the argmin over the contiguous last one. Measured on
    a whole-split cluster (300 photos, 64 queries, 1 thread): 0.96 ms per face against 2.7 ms
    with avg_pool2d on a (queries, photos, h, w) copy.
    """
    b, q, h, w = qs.shape
    m = mem_t.shape[2]
    q_t = qs.permute(2, 3, 0, 1).reshape(h * w, b, q)  # (hw, b, q)
    dots = torch.bmm(q_t, mem_t).reshape(h, w, b, m)  # <z(p), y_i(p)> for every pair
    return memory_box_sq_t - 2 * _window_sum(dots, patch_size, (0, 1))


def _memory_t(memory: torch.Tensor, memory_box_sq: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The memory in the distance block's layouts: codes (hw, q, m), box(|y|^2) (h, w, 1, m)."""
    return _position_major(memory).transpose(1, 2), memory_box_sq.permute(1, 2, 0).unsqueeze(2)


def _nearest(
    queries: torch.Tensor, memory: torch.Tensor, memory_box_sq: torch.Tensor, patch_size: int
) -> torch.Tensor:
    """Index into ``memory`` of the nearest patch at the same position, (n, h, w) int64.

    queries (n, q, h, w), memory (m, q, h, w), memory_box_sq (m, h, w) = box(|y_i|^2).
    """
    n, q, h, w = queries.shape
    m = memory.shape[0]
    mem_t, box_t = _memory_t(memory, memory_box_sq)
    out = torch.empty(n, h, w, dtype=torch.long)
    step = max(1, _BLOCK_ELEMENTS // max(m * h * w, 1))
    for start in range(0, n, step):
        qs = queries[start : start + step]
        out[start : start + qs.shape[0]] = _distance_block(qs, mem_t, box_t, patch_size).argmin(3).permute(2, 0, 1)
    return out


def _nearest_raster(
    queries: torch.Tensor,
    memory: torch.Tensor,
    memory_box_sq: torch.Tensor,
    patch_size: int,
    cap: torch.Tensor | None = None,
    counted: torch.Tensor | None = None,
) -> torch.Tensor:
    """Eq. 5 position by position in raster order, each patch read from the face as it stands,
    for G clusters at once: (G, b, h, w) indices into each cluster's memory (module docstring,
    "Order").

    queries (G, b, q, h, w): b faces of each cluster. memory (hw, G, m, q): each cluster's
    training pixels position-major (``_position_major``), and memory_box_sq (h, w, G, m) =
    box(|y_i|^2), both padded with entries whose box is +inf (never chosen). cap (G,) int64,
    the copy budget of each cluster (more than the counted positions: none), or None. Padding
    faces are projected too; the caller drops them.

    The window sums of <x(o), y_i(o)> are held for every position, (h, w, G, b, m), as in
    ``_distance_block``. Taking y_j(p) at p changes <x(p), y_i(p)> by
    delta = <y_j(p) - x(p), y_i(p)>, one (b, q) x (q, m) product per cluster, which is added to
    the sums of the positions still to come whose window holds p (the rest of p's row within
    rho, and the next rho rows). With ``cap``, a photo that gave its cluster's cap of counted
    positions of a face is not offered to its later positions. All clusters advance together,
    so a position costs a handful of batched operations whatever K.
    """
    G, b, q, h, w = queries.shape
    m = memory.shape[2]
    rho = patch_size // 2
    mem_t = memory.transpose(2, 3)  # (hw, G, q, m): a transposed operand, which bmm takes as is
    box_t = memory_box_sq.unsqueeze(3)  # (h, w, G, 1, m)
    x = queries.permute(3, 4, 0, 1, 2).contiguous()  # (h, w, G, b, q): the face as it stands
    sums = _window_sum(torch.matmul(x.reshape(h * w, G, b, q), mem_t).reshape(h, w, G, b, m), patch_size, (0, 1))
    out = torch.empty(G, b, h, w, dtype=torch.long)
    used = torch.zeros(G, b, m, dtype=torch.long) if cap is not None else None
    limit = cap.view(G, 1, 1) if cap is not None else None
    one = torch.ones(G, b, 1, dtype=torch.long)
    cluster = torch.arange(G).view(G, 1)
    for i in range(h):
        for j in range(w):
            cost = box_t[i, j] - 2 * sums[i, j]  # (G, b, m): patch distance minus box(|x|^2)(p)
            counts_here = used is not None and (counted is None or bool(counted[i * w + j]))
            if counts_here:
                cost.masked_fill_(used >= limit, math.inf)
            pick = cost.argmin(2)  # (G, b)
            out[:, :, i, j] = pick
            new = memory[i * w + j][cluster, pick]  # (G, b, q): y_pick(p)
            delta = torch.bmm(new - x[i, j], mem_t[i * w + j])  # (G, b, m)
            x[i, j] = new
            if rho:
                sums[i, j + 1 : j + rho + 1] += delta
                sums[i + 1 : i + rho + 1, max(0, j - rho) : j + rho + 1] += delta
            if counts_here:
                used.scatter_add_(2, pick.unsqueeze(2), one)
    return out


def _position_major(memory: torch.Tensor) -> torch.Tensor:
    """(m, q, h, w) codes as (hw, m, q): one 2-D transpose, which torch blocks for the cache
    (a 4-D permute of a whole-split memory copied several times slower)."""
    m, q, h, w = memory.shape
    return memory.reshape(m * q, h * w).t().contiguous().view(h * w, m, q)


def _raster_batches(groups: list, components: torch.Tensor, q: int, hw: int):
    """The raster step's work in batches of (members, cap, face rows) units run together.

    A unit is a cluster's faces, split so that its window sums stay within ``_BLOCK_ELEMENTS``
    as in ``_nearest``. Units are sorted by cluster size, so that padding every cluster of a
    batch to the largest wastes little, and a batch grows while its window sums (G b m hw) and
    padded memory (G m q hw) stay within the block (one unit always runs).
    """
    units = []
    for k, members, cap_k in groups:
        rows = (components == k).nonzero().squeeze(1)
        step = max(1, _BLOCK_ELEMENTS // max(members.numel() * hw, 1))
        units += [(members, cap_k, rows[s : s + step]) for s in range(0, rows.numel(), step)]
    units.sort(key=lambda u: u[0].numel())
    batch, b = [], 0
    for unit in units:
        m, b_next = unit[0].numel(), max(b, unit[2].numel())
        if batch and (len(batch) + 1) * m * hw * max(b_next, q) > _BLOCK_ELEMENTS:
            yield batch
            batch, b_next = [], unit[2].numel()
        batch.append(unit)
        b = b_next
    if batch:
        yield batch


def _project_raster(out, provenance, groups, components, memory, patch_size, iterations, n_counted,
                    counted) -> None:
    """The raster-order NN step for every cluster drawn, batched over clusters
    (``_nearest_raster``): writes the projected codes and provenance rows in place."""
    q, h, w = memory.shape[1:]
    hw = h * w
    for batch in _raster_batches(groups, components, q, hw):
        G, m, b = len(batch), max(u[0].numel() for u in batch), max(u[2].numel() for u in batch)
        # The batch's photos are gathered whole (rows of q h w) and turned position-major once.
        everyone = torch.cat([u[0] for u in batch])
        photos = memory.index_select(0, everyone)
        mem_pos = _position_major(photos)  # (hw, sum m_g, q)
        box_pos = box_sum((photos * photos).sum(1), patch_size).permute(1, 2, 0)  # (h, w, sum m_g)
        mem = memory.new_zeros(hw, G, m, q)
        box = memory.new_full((h, w, G, m), math.inf)
        z = out.new_zeros(G, b, q, h, w)
        start = 0
        for g, (members, _, rows) in enumerate(batch):
            size = members.numel()
            mem[:, g, :size] = mem_pos[:, start : start + size]
            box[:, :, g, :size] = box_pos[:, :, start : start + size]
            z[g, : rows.numel()] = out[rows]
            start += size
        caps = None
        if any(u[1] is not None for u in batch):
            caps = torch.tensor([n_counted + 1 if u[1] is None else u[1] for u in batch])
        pos, cluster = torch.arange(hw).view(1, 1, hw), torch.arange(G).view(G, 1, 1)
        for _ in range(iterations):
            local = _nearest_raster(z, mem, box, patch_size, caps, counted)  # (G, b, h, w)
            z = mem[pos, cluster, local.reshape(G, b, hw)].transpose(2, 3).reshape(G, b, q, h, w)
        for g, (members, _, rows) in enumerate(batch):
            out[rows] = z[g, : rows.numel()]
            provenance[rows] = members[local[g, : rows.numel()]]


# --------------------------------------------------------------------------------------------
# Copy budget (module docstring)


def check_nn_order(value) -> str:
    """``value`` when it names an order of the NN step (``NN_ORDERS``); ``ParameterError`` otherwise."""
    if value not in NN_ORDERS:
        raise ParameterError(f"nn_order must be one of {', '.join(NN_ORDERS)}, got {str(value)[:48]!r}")
    return value


def check_max_share(value, name: str = "max_share") -> float | None:
    """``value`` as a float when it is a finite number in (0, 1]; None stays None (no budget);
    anything else raises ``BudgetError`` (a ValueError)."""
    if value is None:
        return None
    try:
        s = float(value)
    except (TypeError, ValueError):
        raise BudgetError(f"{name} must be a number in (0, 1] or None (no budget), got {value!r}") from None
    if isinstance(value, bool) or not (math.isfinite(s) and 0 < s <= 1):
        raise BudgetError(f"{name} must be > 0 and <= 1 (the largest share of a face taken from one training photo), "
                          f"got {value}")
    return s


def budget_in_force(max_share: float | None) -> float | None:
    """The budget as recorded with generated faces: None when there is none (None, or 1 and
    above: every position may come from one photo), the share otherwise."""
    return None if max_share is None or float(max_share) >= 1 else float(max_share)


def budget_cap(max_share: float | None, n_positions: int) -> int | None:
    """cap = floor(max_share * n_positions), the most positions of a face one photo may give;
    None when there is no budget (max_share None, or a cap of every position). The 1e-9 keeps
    a share typed as a decimal (0.29 * 100 = 28.999999999999996) on the count it names."""
    s = check_max_share(max_share)
    if s is None:
        return None
    cap = math.floor(s * n_positions + 1e-9)
    return None if cap >= n_positions else cap


def smallest_feasible_share(n_photos: int, n_positions: int) -> float:
    """The smallest max_share that m = ``n_photos`` photos can serve: cap * m >= P needs
    cap >= ceil(P / m), i.e. max_share >= ceil(P / m) / P (1.0 when m = 0)."""
    if n_photos <= 0:
        return 1.0
    return min(1.0, math.ceil(n_positions / n_photos) / n_positions)


def _share_text(share: float) -> str:
    """A share rounded *up* to 4 decimals, so that the printed value itself is feasible."""
    return f"{math.ceil(share * 1e4 - 1e-9) / 1e4:.4g}"


def check_budget_feasible(max_share: float | None, n_photos: int, n_positions: int, where: str = "") -> None:
    """``BudgetError`` unless ``n_photos`` photos can serve ``n_positions`` with ``max_share``."""
    cap = budget_cap(max_share, n_positions)
    if cap is None or cap * n_photos >= n_positions:
        return
    need = smallest_feasible_share(n_photos, n_positions)
    fix = (f"use max_share >= {_share_text(need)}, or none (no budget)" if need < 1 else
           "no budget below 1 can be met there: drop max_share (or the condition that leaves so few photos)")
    raise BudgetError(
        f"max_share {max_share} lets one training photo give {cap} of a face's {n_positions} latent positions, "
        f"but {where or 'the NN memory'} has only {n_photos} training photo(s) ({cap} x {n_photos} < {n_positions}): "
        + fix
    )


def _rank_in_photo(photo: torch.Tensor, dist: torch.Tensor) -> torch.Tensor:
    """For each face (row) and position, the rank of the position among the positions of that
    face pointing at the same photo, nearest first (ties: lower position first): (r, P) int64."""
    r, P = photo.shape
    by_dist = torch.argsort(dist, dim=1, stable=True)
    ph = photo.gather(1, by_dist)
    by_photo = torch.argsort(ph, dim=1, stable=True)
    order = by_dist.gather(1, by_photo)  # positions sorted by (photo, distance, position)
    ph = ph.gather(1, by_photo)
    idx = torch.arange(P).expand(r, P)
    first = torch.ones_like(ph, dtype=torch.bool)
    first[:, 1:] = ph[:, 1:] != ph[:, :-1]
    group_start = torch.where(first, idx, torch.zeros_like(idx)).cummax(1).values
    return torch.empty_like(order).scatter_(1, order, idx - group_start)


def _serve(cand: torch.Tensor, dist: torch.Tensor, cap: int, counted: torch.Tensor | None):
    """Deferred acceptance on candidate lists (module docstring).

    cand, dist: (b, P, k) the k nearest photos of every position and their distances, nearest
    first; counted: (P,) bool or None (all). Returns (photo per position (b, P), exhausted (b,)
    bool: faces for which some position ran out of candidates; their row is not valid).
    """
    b, P, k = cand.shape
    ptr = torch.zeros(b, P, dtype=torch.long)
    exhausted = torch.zeros(b, dtype=torch.bool)
    rows = torch.arange(b)  # faces that may still have a photo over the cap
    while rows.numel():
        at = ptr[rows].unsqueeze(2)
        photo = cand[rows].gather(2, at).squeeze(2)
        if counted is not None:
            photo = torch.where(counted, photo, torch.full_like(photo, -1))  # uncounted: own group, never moved
        reject = _rank_in_photo(photo, dist[rows].gather(2, at).squeeze(2)) >= cap
        if counted is not None:
            reject &= counted
        over = reject.any(1)
        rows, reject = rows[over], reject[over]
        if rows.numel() == 0:
            break
        ptr[rows] += reject.to(torch.long)
        out_of_list = (ptr[rows] >= k).any(1)
        if bool(out_of_list.any()):
            exhausted[rows[out_of_list]] = True
            rows = rows[~out_of_list]
    local = cand.gather(2, ptr.clamp_max(k - 1).unsqueeze(2)).squeeze(2)
    return local, exhausted


def _nearest_with_budget(
    queries: torch.Tensor,
    memory: torch.Tensor,
    memory_box_sq: torch.Tensor,
    patch_size: int,
    cap: int,
    counted: torch.Tensor | None,
    k: int | None = None,
) -> torch.Tensor:
    """``_nearest`` under the copy budget: (n, h, w) indices into ``memory``, at most ``cap``
    counted positions per face from any one index (the stable assignment, module docstring).
    The caller has checked that the budget is feasible (cap * m >= counted positions)."""
    n, q, h, w = queries.shape
    m = memory.shape[0]
    k = min(m, _BUDGET_TOPK if k is None else k)
    mem_t, box_t = _memory_t(memory, memory_box_sq)
    out = torch.empty(n, h * w, dtype=torch.long)
    redo = []
    step = max(1, _BLOCK_ELEMENTS // max(m * h * w, 1))
    for start in range(0, n, step):
        qs = queries[start : start + step]
        b = qs.shape[0]
        dist = _distance_block(qs, mem_t, box_t, patch_size)  # (h, w, b, m)
        # Faces whose plain nearest neighbours already meet the budget keep them (that is their
        # stable assignment); only the others get candidate lists.
        nearest = dist.argmin(3).reshape(h * w, b).T
        weight = torch.ones_like(nearest) if counted is None else counted.to(torch.long).expand(b, -1)
        per_photo = torch.zeros(b, m, dtype=torch.long).scatter_add_(1, nearest, weight)
        bind = (per_photo.max(1).values > cap).nonzero().squeeze(1)
        out[start : start + b] = nearest
        if bind.numel() == 0:
            continue
        qs, dist = qs[bind], dist[:, :, bind]
        d, cand = dist.topk(k, dim=3, largest=False, sorted=True)  # (h, w, r, k), nearest first
        cand = cand.reshape(h * w, -1, k).transpose(0, 1)  # (r, P, k)
        # The budget compares distances across positions: add back box(|z|^2)(p), which the
        # argmin could drop.
        d = d.reshape(h * w, -1, k).transpose(0, 1) + box_sum((qs * qs).sum(1), patch_size).reshape(-1, h * w, 1)
        local, exhausted = _serve(cand, d, cap, counted)
        out[start + bind] = local
        redo.append(bind[exhausted] + start)
    redo = torch.cat(redo) if redo else torch.zeros(0, dtype=torch.long)
    if redo.numel():
        if k >= m:  # cannot happen for a feasible budget: every photo listed, P <= cap m
            raise BudgetError(f"the copy budget of {cap} positions per photo cannot be met by {m} photos")
        out[redo] = _nearest_with_budget(queries[redo], memory, memory_box_sq, patch_size, cap, counted,
                                         min(m, 4 * k)).reshape(-1, h * w)
    return out.reshape(n, h, w)


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
    patch_size: int = DEFAULTS["patch_size"],
    iterations: int = DEFAULTS["nn_iterations"],
    max_share: float | None = None,
    positions: torch.Tensor | None = None,
    order: str = "parallel",
    strict: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The NN step (eq. 5), iterated, optionally under a copy budget.

    Args:
        codes: (n, q, h, w) generated codes z.
        components: (n,) component k each code was drawn from.
        memory: (N, q, h, w) training codes y_i = P0(E(x_i)), one per training photo.
        memory_labels: (N,) hard cluster label of each training code.
        patch_size: omega (odd).
        iterations: number of NN projections (>= 1); each one starts from the previous output.
        max_share: copy budget (module docstring): at most floor(max_share * P) counted positions
            of a face from one training code. None or 1: off (the plain argmin, unchanged).
        positions: (h, w) bool, the positions the budget counts (default all; see the module
            docstring). Only used with a budget.
        order: "parallel" (eq. 5 as printed: every position reads the same input) or "raster"
            (positions in raster order, each reading the face as it stands; module docstring).
        strict: with a budget, raise ``BudgetError`` when a cluster has too few training codes
            to meet it (True), or let each code of such a cluster give ceil(counted / m)
            positions, the least any assignment can (False: how a model's *default* budget is
            applied, so that it never makes a call fail; module docstring).
    Returns:
        (projected codes (n, q, h, w), provenance (n, h, w) int64 indices into ``memory``).
        Every pixel of the output is exactly memory[provenance[s, p]](p), and every index names a
        training code of the same cluster as the query. A cluster with no training code (possible
        only if EM labels no sample with it) falls back to the whole memory. With a budget, no
        face has more than the cap of counted positions from one index.
    Raises:
        BudgetError: max_share is not in (0, 1], or a cluster the codes use has too few training
            codes for it (the message names the smallest feasible max_share).
    """
    if iterations < 1:
        raise ValueError(f"iterations must be >= 1, got {iterations}")
    check_nn_order(order)
    if codes.shape[1:] != memory.shape[1:]:
        raise ValueError(f"codes {tuple(codes.shape)} and memory {tuple(memory.shape)} differ in shape")
    n, q, h, w = codes.shape
    counted = None
    n_counted = h * w
    if positions is not None and max_share is not None:
        if tuple(positions.shape) != (h, w):
            raise ValueError(f"positions must have shape {(h, w)}, got {tuple(positions.shape)}")
        counted = positions.to(torch.bool).reshape(h * w)
        n_counted = int(counted.sum())
    cap = budget_cap(max_share, n_counted) if n_counted else None
    out = codes.to(memory.dtype, copy=True)  # never write into the caller's tensor
    provenance = torch.empty(n, h, w, dtype=torch.long)
    groups = []
    for k in torch.unique(components).tolist():
        members = (memory_labels == k).nonzero().squeeze(1)
        if members.numel() == 0:
            members = torch.arange(memory.shape[0])
        cap_k = cap
        if cap is not None and strict:  # every cluster checked before any work
            check_budget_feasible(max_share, members.numel(), n_counted, f"cluster {k}")
        elif cap is not None:
            cap_k = max(cap, math.ceil(n_counted / members.numel()))
            cap_k = None if cap_k >= n_counted else cap_k
        groups.append((k, members, cap_k))
    if order == "raster":
        _project_raster(out, provenance, groups, components, memory, patch_size, iterations, n_counted, counted)
        return out, provenance
    for k, members, cap_k in groups:
        rows = (components == k).nonzero().squeeze(1)
        mem_k = memory[members]
        box_k = box_sum((mem_k * mem_k).sum(1), patch_size)  # box(|y_i|^2), for the photos drawn from only
        z = out[rows]
        for _ in range(iterations):
            if cap_k is None:
                local = _nearest(z, mem_k, box_k, patch_size)
            else:
                local = _nearest_with_budget(z, mem_k, box_k, patch_size, cap_k, counted)
            z = gather_pixels(mem_k, local)
        out[rows] = z
        provenance[rows] = members[local]
    return out, provenance
