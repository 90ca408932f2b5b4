import pytest
import torch
import torch.nn.functional as F

from lrgmm.core.nn_projection import box_sum, gather_pixels, nn_project


def _brute_force(query, memory, members, omega):
    """Naive eq. 5: loop over positions and candidates, explicit zero-padded patches."""
    rho = omega // 2
    q, h, w = query.shape
    zq = F.pad(query, (rho, rho, rho, rho))
    zm = F.pad(memory, (rho, rho, rho, rho))
    out = torch.empty(h, w, dtype=torch.long)
    for y in range(h):
        for x in range(w):
            pq = zq[:, y : y + omega, x : x + omega]
            best, arg = None, None
            for i in members.tolist():
                d = float(((pq - zm[i, :, y : y + omega, x : x + omega]) ** 2).sum())
                if best is None or d < best:
                    best, arg = d, i
            out[y, x] = arg
    return out


@pytest.mark.parametrize("omega", [1, 3, 5])
def test_matches_brute_force_and_respects_cluster(omega):
    g = torch.Generator().manual_seed(omega)
    memory = torch.randn(30, 4, 6, 7, generator=g, dtype=torch.float64)
    labels = torch.randint(0, 3, (30,), generator=g)
    codes = torch.randn(5, 4, 6, 7, generator=g, dtype=torch.float64)
    comps = torch.tensor([0, 1, 2, 1, 0])
    out, prov = nn_project(codes, comps, memory, labels, patch_size=omega)
    for s in range(5):
        members = (labels == comps[s]).nonzero().squeeze(1)
        ref = _brute_force(codes[s], memory, members, omega)
        assert torch.equal(prov[s], ref)
        # Provenance names training codes of the query's own cluster.
        assert bool((labels[prov[s]] == comps[s]).all())
    # Every output pixel is the named training latent pixel at the same position.
    for s in range(5):
        for y in range(6):
            for x in range(7):
                assert torch.equal(out[s, :, y, x], memory[prov[s, y, x], :, y, x])


def test_iterations_and_fixed_point():
    g = torch.Generator().manual_seed(0)
    memory = torch.randn(12, 3, 5, 5, generator=g)
    labels = torch.zeros(12, dtype=torch.long)
    # A training code is its own nearest neighbour everywhere.
    out, prov = nn_project(memory[[4, 7]], torch.zeros(2, dtype=torch.long), memory, labels, 5, 1)
    assert torch.equal(prov[0], torch.full((5, 5), 4)) and torch.equal(prov[1], torch.full((5, 5), 7))
    codes = torch.randn(3, 3, 5, 5, generator=g)
    once, p1 = nn_project(codes, torch.zeros(3, dtype=torch.long), memory, labels, 3, 1)
    twice, p2 = nn_project(codes, torch.zeros(3, dtype=torch.long), memory, labels, 3, 2)
    again, _ = nn_project(once, torch.zeros(3, dtype=torch.long), memory, labels, 3, 1)
    assert torch.equal(twice, again)
    assert torch.equal(twice, gather_pixels(memory, p2))
    with pytest.raises(ValueError, match="iterations"):
        nn_project(codes, torch.zeros(3, dtype=torch.long), memory, labels, 3, 0)


def test_empty_cluster_falls_back_to_all_and_blocks_agree(monkeypatch):
    g = torch.Generator().manual_seed(1)
    memory = torch.randn(20, 2, 4, 4, generator=g)
    labels = torch.zeros(20, dtype=torch.long)
    codes = torch.randn(9, 2, 4, 4, generator=g)
    out, prov = nn_project(codes, torch.full((9,), 3), memory, labels, 3)
    assert prov.max() < 20
    import lrgmm.core.nn_projection as nnp

    monkeypatch.setattr(nnp, "_BLOCK_ELEMENTS", 20 * 16 * 2)  # forces query blocks of 2
    out2, prov2 = nn_project(codes, torch.full((9,), 3), memory, labels, 3)
    assert torch.equal(prov, prov2)


def test_box_sum_is_zero_padded_window_sum():
    x = torch.arange(25.0).reshape(1, 5, 5)
    b = box_sum(x, 3)
    assert float(b[0, 0, 0]) == 0 + 1 + 5 + 6
    assert float(b[0, 2, 2]) == float(x[0, 1:4, 1:4].sum())
    with pytest.raises(ValueError, match="odd"):
        box_sum(x, 4)


# ------------------------------------------------------------------------------ copy budget


def _plain_reference(codes, components, memory, memory_labels, patch_size=5, iterations=1):
    """nn_project as it was before the copy budget (frozen copy): the bit-identity reference."""
    from lrgmm.core.nn_projection import gather_pixels as gather

    n, q, h, w = codes.shape
    out = codes.to(memory.dtype, copy=True)
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
            m = mem_k.shape[0]
            mem_t = mem_k.permute(2, 3, 1, 0).reshape(h * w, q, m)
            q_t = z.permute(2, 3, 0, 1).reshape(h * w, z.shape[0], q)
            dots = torch.bmm(q_t, mem_t).permute(1, 2, 0).reshape(z.shape[0], m, h, w)
            local = (box_k.unsqueeze(0) - 2 * box_sum(dots, patch_size)).argmin(1)
            z = gather(mem_k, local)
        out[rows] = z
        provenance[rows] = members[local]
    return out, provenance


def _patch_distances(codes, memory, omega):
    """Eq. 5's squared patch distances from explicit zero-padded patches: (n, m, h*w) float64."""
    zq = F.unfold(codes.double(), omega, padding=omega // 2)  # (n, q omega^2, P)
    zm = F.unfold(memory.double(), omega, padding=omega // 2)  # (m, q omega^2, P)
    cross = torch.einsum("scp,icp->sip", zq, zm)
    return (zq * zq).sum(1)[:, None] + (zm * zm).sum(1)[None] - 2 * cross


def _greedy_reference(dist, cap):
    """The budget's definition, literally: over all (position, photo) pairs in increasing distance,
    a position takes a photo if it has none yet and the photo has given fewer than cap."""
    m, P = dist.shape
    order = sorted(((float(dist[i, p]), p, i) for i in range(m) for p in range(P)))
    taken, given = [-1] * P, [0] * m
    for _, p, i in order:
        if taken[p] < 0 and given[i] < cap:
            taken[p], given[i] = i, given[i] + 1
    return torch.tensor(taken)


def _biased_codes(memory, labels, comps, noise, g):
    """Codes near one training code of their cluster each, so that plain NN copies much of a
    face from one photo and the budget has work to do."""
    n = comps.shape[0]
    src = torch.empty(n, dtype=torch.long)
    for k in torch.unique(comps).tolist():
        members = (labels == k).nonzero().squeeze(1)
        rows = (comps == k).nonzero().squeeze(1)
        src[rows] = members[torch.randint(0, members.numel(), (rows.numel(),), generator=g)]
    return memory[src] + noise * torch.randn(n, *memory.shape[1:], generator=g, dtype=memory.dtype)


@pytest.mark.parametrize("omega", [1, 3, 5])
def test_no_budget_is_bit_identical_to_the_plain_step(omega):
    g = torch.Generator().manual_seed(10 + omega)
    for dtype in (torch.float32, torch.float64):
        memory = torch.randn(25, 3, 6, 5, generator=g).to(dtype)
        labels = torch.randint(0, 3, (25,), generator=g)
        codes = torch.randn(17, 3, 6, 5, generator=g)
        comps = torch.randint(0, 4, (17,), generator=g)  # component 3 has no code: whole memory
        for it in (1, 2):
            ref = _plain_reference(codes, comps, memory, labels, omega, it)
            for share in (None, 1.0, 1):
                out, prov = nn_project(codes, comps, memory, labels, omega, it, max_share=share)
                assert torch.equal(out, ref[0]) and torch.equal(prov, ref[1]), (dtype, it, share)


def test_budget_holds_and_is_the_stable_assignment_over_thousands_of_faces():
    """Random shapes, patch sizes, clusters and budgets, 4,000+ faces: every output pixel is the
    named training pixel, provenance stays in the cluster, no face has more than cap positions
    from one photo, and no (position, photo) pair would both rather be together (stability)."""
    from lrgmm.core.nn_projection import budget_cap, smallest_feasible_share

    g = torch.Generator().manual_seed(2024)
    faces = binding = 0
    for trial in range(48):
        h, w = (int(v) for v in torch.randint(2, 10, (2,), generator=g))
        q = int(torch.randint(1, 5, (1,), generator=g))
        omega = [1, 3, 5][trial % 3]
        n_clusters = int(torch.randint(1, 4, (1,), generator=g))
        m = int(torch.randint(4 * n_clusters, 40, (1,), generator=g))
        memory = torch.randn(m, q, h, w, generator=g, dtype=torch.float64)
        labels = torch.arange(m) % n_clusters  # every cluster has at least 4 photos
        n = 90
        comps = torch.randint(0, n_clusters, (n,), generator=g)
        codes = _biased_codes(memory, labels, comps, float(torch.rand(1, generator=g)) * 1.5, g)
        P = h * w
        smallest = min(int((labels == k).sum()) for k in range(n_clusters))
        lo = smallest_feasible_share(smallest, P)
        share = lo + (1 - lo) * float(torch.rand(1, generator=g)) ** 2  # favour tight budgets
        cap = budget_cap(share, P)
        out, prov = nn_project(codes, comps, memory, labels, omega, 1, max_share=share)
        assert torch.equal(out, gather_pixels(memory, prov))
        assert bool((labels[prov] == comps[:, None, None]).all())
        if cap is None:
            continue
        counts = torch.zeros(n, m, dtype=torch.long).scatter_add_(1, prov.reshape(n, P), torch.ones(n, P, dtype=torch.long))
        assert int(counts.max()) <= cap, (trial, share, cap)
        plain = nn_project(codes, comps, memory, labels, omega, 1)[1]
        plain_counts = torch.zeros(n, m, dtype=torch.long).scatter_add_(1, plain.reshape(n, P), torch.ones(n, P, dtype=torch.long))
        binding += int((plain_counts.max(1).values > cap).sum())
        # Stability against distances computed independently (explicit patches).
        D = _patch_distances(codes, memory, omega)  # (n, m, P)
        a = prov.reshape(n, P)
        d_own = D.gather(1, a[:, None]).squeeze(1)  # (n, P)
        worst = torch.full((n, m), -float("inf"), dtype=torch.float64).scatter_reduce_(1, a, d_own, "amax")
        tol = 1e-8 * (1 + float(D.abs().max()))
        other_cluster = labels[None, :, None] != comps[:, None, None]
        prefers = D < d_own[:, None, :] - tol  # position p would rather have photo i
        accepts = (counts < cap)[:, :, None] | (worst[:, :, None] > D + tol)  # photo i would rather have p
        blocking = prefers & accepts & ~other_cluster
        assert not bool(blocking.any()), (trial, int(blocking.sum()))
        faces += n
    assert faces >= 4000 and binding > 1000  # the budget changed many faces


def test_budget_is_served_nearest_first_exactly():
    """Exact agreement with the literal greedy over sorted (position, photo) pairs."""
    g = torch.Generator().manual_seed(7)
    for trial in range(12):
        h, w = 4 + trial % 3, 5
        m = 6 + trial % 5
        omega = [1, 3, 5][trial % 3]
        memory = torch.randn(m, 3, h, w, generator=g, dtype=torch.float64)
        labels = torch.zeros(m, dtype=torch.long)
        codes = _biased_codes(memory, labels, torch.zeros(20, dtype=torch.long), 0.6, g)
        P = h * w
        cap = -(-P // m) + trial % 4  # from the smallest feasible cap upwards
        _, prov = nn_project(codes, torch.zeros(20, dtype=torch.long), memory, labels, omega, max_share=cap / P)
        D = _patch_distances(codes, memory, omega)
        for s in range(20):
            assert torch.equal(prov[s].reshape(-1), _greedy_reference(D[s], cap)), (trial, s)


def test_budget_result_does_not_depend_on_list_length_or_blocks(monkeypatch):
    """Short candidate lists run out and are recomputed longer (the slow path); the stable
    assignment is unique, so the provenance is the same for every list length and block size."""
    import lrgmm.core.nn_projection as nnp

    g = torch.Generator().manual_seed(3)
    memory = torch.randn(30, 4, 8, 8, generator=g, dtype=torch.float64)
    labels = torch.arange(30) % 2
    comps = torch.randint(0, 2, (40,), generator=g)
    codes = _biased_codes(memory, labels, comps, 0.4, g)
    ref = nn_project(codes, comps, memory, labels, 3, max_share=0.15)
    calls = []
    original = nnp._nearest_with_budget

    def counting(*args, **kw):
        calls.append(args[6] if len(args) > 6 else kw.get("k"))
        return original(*args, **kw)

    monkeypatch.setattr(nnp, "_nearest_with_budget", counting)
    for k in (1, 2, 3, 5):
        monkeypatch.setattr(nnp, "_BUDGET_TOPK", k)
        calls.clear()
        out, prov = nn_project(codes, comps, memory, labels, 3, max_share=0.15)
        assert torch.equal(prov, ref[1]) and torch.equal(out, ref[0]), k
        if k == 1:  # every face the budget changes runs out of a one-photo list: redone longer
            assert calls.count(None) == 2 and 4 in calls, calls  # one call per cluster, then redone with 4
    monkeypatch.setattr(nnp, "_BUDGET_TOPK", 16)
    monkeypatch.setattr(nnp, "_BLOCK_ELEMENTS", 15 * 64 * 3)  # query blocks of 3
    assert torch.equal(nn_project(codes, comps, memory, labels, 3, max_share=0.15)[1], ref[1])


def test_budget_with_iterations_holds_on_the_final_output():
    g = torch.Generator().manual_seed(5)
    memory = torch.randn(12, 3, 6, 6, generator=g)
    labels = torch.zeros(12, dtype=torch.long)
    comps = torch.zeros(30, dtype=torch.long)
    codes = _biased_codes(memory, labels, comps, 0.3, g)
    once, p1 = nn_project(codes, comps, memory, labels, 3, 1, max_share=0.2)
    thrice, p3 = nn_project(codes, comps, memory, labels, 3, 3, max_share=0.2)
    again = nn_project(nn_project(once, comps, memory, labels, 3, 1, max_share=0.2)[0], comps, memory, labels, 3, 1,
                       max_share=0.2)
    assert torch.equal(thrice, again[0]) and torch.equal(p3, again[1])
    assert torch.equal(thrice, gather_pixels(memory, p3))
    cap = int(0.2 * 36)
    for p in (p1, p3):
        assert int(torch.stack([torch.bincount(f.reshape(-1), minlength=12) for f in p]).max()) <= cap


def test_budget_counts_only_the_given_positions():
    """``positions``: the budget counts and serves those positions; the others keep their plain
    nearest neighbour (a completion puts them back anyway)."""
    g = torch.Generator().manual_seed(11)
    memory = torch.randn(10, 2, 6, 6, generator=g, dtype=torch.float64)
    labels = torch.zeros(10, dtype=torch.long)
    comps = torch.zeros(25, dtype=torch.long)
    codes = _biased_codes(memory, labels, comps, 0.3, g)
    counted = torch.zeros(6, 6, dtype=torch.bool)
    counted[1:5, 2:6] = True  # 16 positions
    plain = nn_project(codes, comps, memory, labels, 3)[1]
    _, prov = nn_project(codes, comps, memory, labels, 3, max_share=0.25, positions=counted)
    assert torch.equal(prov[:, ~counted], plain[:, ~counted])
    inside = prov[:, counted]
    assert int(torch.stack([torch.bincount(f, minlength=10) for f in inside]).max()) <= 4  # floor(0.25 * 16)
    assert bool((inside != plain[:, counted]).any())  # it did bind


def test_bad_and_infeasible_budgets():
    from lrgmm.errors import BudgetError, LrgmmError
    from lrgmm.core.nn_projection import budget_cap, check_max_share, smallest_feasible_share

    g = torch.Generator().manual_seed(0)
    memory = torch.randn(10, 2, 8, 8, generator=g)
    labels = torch.tensor([0] * 7 + [1] * 3)
    codes = torch.randn(4, 2, 8, 8, generator=g)
    comps = torch.zeros(4, dtype=torch.long)
    for bad in (0, -0.1, 1.5, float("nan"), float("inf"), "x", True):
        with pytest.raises(BudgetError, match="max_share"):
            nn_project(codes, comps, memory, labels, 3, max_share=bad)
    assert issubclass(BudgetError, LrgmmError) and issubclass(BudgetError, ValueError)
    assert check_max_share(None) is None and check_max_share("0.25") == 0.25
    assert budget_cap(0.25, 256) == 64 and budget_cap(0.15, 256) == 38 and budget_cap(0.29, 100) == 29
    assert budget_cap(1.0, 256) is None and budget_cap(None, 256) is None and budget_cap(0.999, 256) == 255
    # Cluster 0 has 7 photos: 64 positions need a cap of ceil(64 / 7) = 10, a share of 10 / 64.
    assert smallest_feasible_share(7, 64) == 10 / 64
    with pytest.raises(BudgetError, match=r"cluster 0 has only 7 training photo.*max_share >= 0\.1563"):
        nn_project(codes, comps, memory, labels, 3, max_share=0.15)
    _, prov = nn_project(codes, comps, memory, labels, 3, max_share=0.1563)  # the printed value works
    assert max(int(torch.bincount(p.reshape(-1)).max()) for p in prov) <= 10
    # The check covers every cluster drawn, before any work: cluster 1 (3 photos) needs 22 / 64.
    with pytest.raises(BudgetError, match=r"cluster 1 has only 3 .*>= 0\.3438"):
        nn_project(codes, torch.tensor([0, 0, 1, 0]), memory, labels, 3, max_share=0.3)


# --------------------------------------------------------------------------- raster order


def _brute_force_raster(query, memory, members, omega, cap=None):
    """Naive raster-order eq. 5: positions one by one, each patch read from the face as it
    stands (earlier positions already hold their copied pixels); with ``cap``, a photo that
    gave cap positions is no longer offered."""
    rho = omega // 2
    q, h, w = query.shape
    x = query.clone()
    zm = F.pad(memory, (rho, rho, rho, rho))
    out = torch.empty(h, w, dtype=torch.long)
    used = {}
    for y in range(h):
        for c in range(w):
            pq = F.pad(x, (rho, rho, rho, rho))[:, y : y + omega, c : c + omega]
            best, arg = None, None
            for i in members.tolist():
                if cap is not None and used.get(i, 0) >= cap:
                    continue
                d = float(((pq - zm[i, :, y : y + omega, c : c + omega]) ** 2).sum())
                if best is None or d < best:
                    best, arg = d, i
            out[y, c] = arg
            used[arg] = used.get(arg, 0) + 1
            x[:, y, c] = memory[arg, :, y, c]
    return out


@pytest.mark.parametrize("omega,share", [(1, None), (3, None), (5, None), (3, 0.2), (5, 0.1)])
def test_raster_order_matches_brute_force(omega, share):
    g = torch.Generator().manual_seed(10 + omega)
    memory = torch.randn(24, 3, 5, 6, generator=g, dtype=torch.float64)
    labels = torch.randint(0, 2, (24,), generator=g)
    labels[:12] = torch.arange(12) % 2  # both clusters hold >= 6 photos (a 0.1 budget of 30 positions is feasible)
    codes = torch.randn(6, 3, 5, 6, generator=g, dtype=torch.float64)
    comps = torch.tensor([0, 1, 1, 0, 1, 0])
    out, prov = nn_project(codes, comps, memory, labels, patch_size=omega, order="raster", max_share=share)
    cap = None if share is None else int(share * 30)
    for s in range(6):
        members = (labels == comps[s]).nonzero().squeeze(1)
        assert torch.equal(prov[s], _brute_force_raster(codes[s], memory, members, omega, cap))
        assert bool((labels[prov[s]] == comps[s]).all())
        if cap is not None:
            assert int(torch.bincount(prov[s].flatten()).max()) <= cap
    assert torch.equal(out, gather_pixels(memory, prov))


def test_raster_order_with_omega_1_is_the_plain_step_and_blocks_agree(monkeypatch):
    g = torch.Generator().manual_seed(3)
    memory = torch.randn(40, 4, 6, 6, generator=g)
    labels = torch.randint(0, 3, (40,), generator=g)
    codes = torch.randn(11, 4, 6, 6, generator=g)
    comps = torch.randint(0, 3, (11,), generator=g)
    _, plain = nn_project(codes, comps, memory, labels, patch_size=1)
    _, raster = nn_project(codes, comps, memory, labels, patch_size=1, order="raster")
    assert torch.equal(plain, raster)  # a 1 x 1 patch sees no neighbour: the order cannot matter
    _, r5 = nn_project(codes, comps, memory, labels, patch_size=5, order="raster", iterations=2)
    import lrgmm.core.nn_projection as nnp

    monkeypatch.setattr(nnp, "_BLOCK_ELEMENTS", 40 * 36 * 3)  # query blocks of a few faces
    _, r5b = nn_project(codes, comps, memory, labels, patch_size=5, order="raster", iterations=2)
    assert torch.equal(r5, r5b)
    with pytest.raises(ValueError, match="order"):
        nn_project(codes, comps, memory, labels, patch_size=5, order="spiral")


@pytest.mark.parametrize("block", [None, 5 * 30 * 3])
def test_raster_order_batches_clusters_of_different_sizes_exactly(monkeypatch, block):
    """Clusters run together, padded to the largest of their batch: every face is still the
    brute-force raster projection in its own cluster, under its own cluster's cap (the even
    split where a soft budget is too small for the cluster), however the clusters are batched."""
    import lrgmm.core.nn_projection as nnp

    if block is not None:  # a few faces and one or two clusters per batch
        monkeypatch.setattr(nnp, "_BLOCK_ELEMENTS", block)
    g = torch.Generator().manual_seed(21)
    labels = torch.tensor([0] * 3 + [1] * 9 + [2] * 5 + [3] * 14)[torch.randperm(31, generator=g)]
    memory = torch.randn(31, 3, 5, 6, generator=g, dtype=torch.float64)
    comps = torch.tensor([3, 0, 1, 2, 3, 3, 1, 0, 2, 3, 1])
    codes = torch.randn(comps.numel(), 3, 5, 6, generator=g, dtype=torch.float64)
    out, prov = nn_project(codes, comps, memory, labels, patch_size=3, max_share=0.2, order="raster", strict=False)
    for s, k in enumerate(comps.tolist()):
        members = (labels == k).nonzero().squeeze(1)
        cap = max(6, -(-30 // members.numel()))  # floor(0.2 * 30), or ceil(30 / m) where that is more
        cap = None if cap >= 30 else cap
        assert torch.equal(prov[s], _brute_force_raster(codes[s], memory, members, 3, cap)), s
    assert torch.equal(out, gather_pixels(memory, prov))


@pytest.mark.parametrize("order", ["parallel", "raster"])
def test_default_budget_is_met_where_the_cluster_can_and_the_even_split_elsewhere(order):
    from lrgmm.errors import BudgetError

    g = torch.Generator().manual_seed(7)
    memory = torch.randn(23, 3, 5, 6, generator=g)
    labels = torch.tensor([0] * 3 + [1] * 20)  # cluster 0: 3 photos cannot meet 0.25 of 30 positions (7 x 3 < 30)
    codes = torch.randn(40, 3, 5, 6, generator=g)
    comps = torch.tensor([0, 1] * 20)
    with pytest.raises(BudgetError, match="cluster 0"):
        nn_project(codes, comps, memory, labels, patch_size=3, max_share=0.25, order=order)
    out, prov = nn_project(codes, comps, memory, labels, patch_size=3, max_share=0.25, order=order, strict=False)
    most = torch.stack([torch.bincount(p.flatten(), minlength=23).max() for p in prov])
    assert int(most[comps == 1].max()) <= 7  # floor(0.25 * 30) where the cluster can meet it
    assert int(most[comps == 0].max()) <= 10  # ceil(30 / 3): the even split in the small cluster
    assert bool((labels[prov] == comps[:, None, None]).all()) and torch.equal(out, gather_pixels(memory, prov))
    # Where every cluster can meet the budget, strict or not gives the same faces.
    big = comps == 1
    _, a = nn_project(codes[big], comps[big], memory, labels, patch_size=3, max_share=0.25, order=order)
    assert torch.equal(a, prov[big])
