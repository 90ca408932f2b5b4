import pytest
import torch
import torch.nn.functional as F

from lrgmm.nn_projection import box_sum, gather_pixels, nn_project


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
    import lrgmm.nn_projection as nnp

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
