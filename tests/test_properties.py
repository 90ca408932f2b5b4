"""Invariants of the core, checked over many seeded random cases (shapes, patch sizes, orders,
budgets), with no data and no autoencoder: what must hold for any input, not for one example.

Each test draws its cases from a fixed seed, so a failure names a case that can be replayed.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from lrgmm.core.nn_projection import gather_pixels, nn_project
from lrgmm.core.projector import PixelPCA
from lrgmm.core.provenance import provenance_image, provenance_record, provenance_shares
from lrgmm.data.splits import holdout_split, seeded_subset
from lrgmm.errors import ModelFileError
from lrgmm.io.atomic import jsonable
from lrgmm.io.tensor_file import TensorFileFormat

CASES = 40


def _cases(seed: int, n: int = CASES):
    rng = np.random.default_rng(seed)
    for case in range(n):
        yield case, rng


def test_nn_output_pixels_are_the_training_pixels_their_provenance_names():
    """For any shapes, patch size, order, iterations and copy budget: every output latent pixel
    is memory[provenance](p) at its own position, the provenance stays in the draw's cluster
    when the cluster has codes, and the budget holds."""
    for case, rng in _cases(0):
        n, q = int(rng.integers(1, 6)), int(rng.integers(1, 5))
        h, w = int(rng.integers(2, 9)), int(rng.integers(2, 9))
        m, k = int(rng.integers(2, 25)), int(rng.integers(1, 4))
        omega = int(rng.choice([1, 3, 5, 7]))
        order = str(rng.choice(["parallel", "raster"]))
        gen = torch.Generator().manual_seed(case)
        memory = torch.randn(m, q, h, w, generator=gen)
        labels = torch.randint(0, k, (m,), generator=gen)
        comps = torch.randint(0, k, (n,), generator=gen)
        codes = torch.randn(n, q, h, w, generator=gen)
        share = None if rng.random() < 0.5 else 1.0  # 1: a budget that cannot bind, checked as a budget
        out, prov = nn_project(codes, comps, memory, labels, patch_size=omega, iterations=int(rng.integers(1, 3)),
                               max_share=share, order=order, strict=False)
        where = f"case {case}: n={n} q={q} h={h} w={w} m={m} omega={omega} {order}"
        assert prov.shape == (n, h, w) and prov.dtype == torch.long, where
        assert torch.equal(out, gather_pixels(memory, prov)), where
        for i in range(n):
            cluster = (labels == comps[i]).nonzero().squeeze(1)
            if cluster.numel():
                assert bool(torch.isin(prov[i], cluster).all()), where


def test_a_binding_budget_holds_for_every_face():
    for case, rng in _cases(1, 25):
        n, q, h, w = int(rng.integers(1, 4)), int(rng.integers(1, 4)), int(rng.integers(3, 7)), int(rng.integers(3, 7))
        m = int(rng.integers(4, 20))
        gen = torch.Generator().manual_seed(100 + case)
        memory = torch.randn(m, q, h, w, generator=gen)
        labels = torch.zeros(m, dtype=torch.long)
        share = float(rng.uniform(math.ceil(h * w / m) / (h * w), 1.0))
        order = str(rng.choice(["parallel", "raster"]))
        _, prov = nn_project(torch.randn(n, q, h, w, generator=gen), torch.zeros(n, dtype=torch.long), memory, labels,
                             patch_size=int(rng.choice([1, 3, 5])), max_share=share, order=order)
        cap = math.floor(share * h * w)
        for i in range(n):
            assert int(torch.bincount(prov[i].reshape(-1), minlength=m).max()) <= cap, f"case {case}"


def test_provenance_shares_sum_to_one_and_leave_out_uncopied_positions():
    for case, rng in _cases(2):
        h, w, m = int(rng.integers(1, 17)), int(rng.integers(1, 17)), int(rng.integers(1, 40))
        prov = torch.from_numpy(rng.integers(-1, m, size=(h, w)))
        shares = provenance_shares(prov)
        copied = int((prov >= 0).sum())
        if copied:
            assert abs(sum(s for _, s in shares) - 1) < 1e-9
        else:
            assert shares == []
        assert [s for _, s in shares] == sorted((s for _, s in shares), reverse=True)
        assert {i for i, _ in shares} == set(prov[prov >= 0].tolist())
        rec = provenance_record(prov, [f"f{i}.jpg" for i in range(m)])
        assert rec["copied_positions"] == copied and rec["distinct_training_images"] == len(shares)
        assert rec["map"] == prov.tolist()
        json.dumps(rec)  # JSON-ready as it is
        img = provenance_image(prov, 4 * h * w)
        assert img.shape == (3, 4 * h * w, 4 * h * w) and float(img.min()) >= 0 and float(img.max()) <= 1


def test_projector_round_trip_is_exact_when_q_equals_c():
    for case, rng in _cases(3, 15):
        n, c, h, w = int(rng.integers(4, 12)), int(rng.integers(1, 9)), int(rng.integers(1, 6)), int(rng.integers(1, 6))
        gen = torch.Generator().manual_seed(300 + case)
        x = torch.randn(n, c, h, w, generator=gen) * torch.rand(c, 1, 1, generator=gen) * 5 + torch.randn(c, 1, 1, generator=gen)
        p = PixelPCA(n_channels=c).fit(x)
        back = p.inverse_transform(p.transform(x))
        assert torch.allclose(back, x, atol=1e-4 * (1 + float(x.abs().max()))), f"case {case}"


def test_tensor_files_round_trip(tmp_path):
    fmt = TensorFileFormat("lrgmm-test", 1, "lrgmm-test", what="test", noun="test file", error=ModelFileError,
                           create_hint="", redo_hint="write it again")
    dtypes = [torch.float32, torch.float64, torch.int64, torch.int8, torch.float16]
    for case, rng in _cases(4, 20):
        gen = torch.Generator().manual_seed(400 + case)
        tensors = {}
        for j in range(int(rng.integers(1, 5))):
            shape = tuple(int(s) for s in rng.integers(0, 5, size=int(rng.integers(0, 4))))
            dtype = dtypes[int(rng.integers(len(dtypes)))]
            t = torch.randn(shape, generator=gen) * 100
            tensors[f"t{j}"] = t.to(dtype)
        meta = {"case": case, "values": rng.normal(size=3).tolist(), "name": f"é{case}", "nested": {"a": [1, None]}}
        path = fmt.write(tmp_path / f"f{case}.safetensors", tensors, meta)
        back, m = fmt.read(path)
        assert set(back) == set(tensors)
        for k, t in tensors.items():
            assert back[k].dtype == t.dtype and torch.equal(back[k], t), f"case {case} {k}"
        assert m == {"format": "lrgmm-test", "format_version": 1, **meta}


def test_seeded_subsets_and_splits():
    for case, rng in _cases(5):
        items = [f"p{i}" for i in range(int(rng.integers(0, 60)))]
        k = int(rng.integers(0, len(items) + 1))
        seed = int(rng.integers(0, 2**31))
        sub = seeded_subset(items, k, seed)
        assert len(sub) == k == len(set(sub)) and sub == sorted(sub, key=items.index)
        assert sub == seeded_subset(items, k, seed)
        pool, held = holdout_split(items, k, seed)
        assert len(held) == k and sorted(pool + held) == sorted(items) and not set(pool) & set(held)
        assert (pool, held) == holdout_split(items, k, seed)
    with pytest.raises(ValueError):
        seeded_subset(["a"], 2, 0)


def test_jsonable_gives_what_json_writes():
    rng = np.random.default_rng(6)
    obj = {1: np.float32(0.5), "a": [np.int64(3), float("nan"), np.array([1.0, np.inf])], "p": (np.float64(-2.0),)}
    out = jsonable(obj)
    assert json.loads(json.dumps(out, allow_nan=False)) == {"1": 0.5, "a": [3, None, [1.0, None]], "p": [-2.0]}
    for _ in range(CASES):
        x = rng.normal(size=int(rng.integers(0, 6)))
        assert jsonable(x) == x.tolist()
