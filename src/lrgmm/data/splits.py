"""Seeded subsets and hold-out splits of a list of photos, the same everywhere.

Both take one permutation of the list from ``torch.randperm`` with a generator seeded by
``seed``, so the demo, the studio and the experiment scripts pick the same photos for the same
seed, and a split made today can be made again from its seed alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

import torch

T = TypeVar("T")


def _permutation(n: int, seed: int) -> list[int]:
    return torch.randperm(n, generator=torch.Generator().manual_seed(int(seed))).tolist()


def seeded_subset(items: Sequence[T], n: int, seed: int) -> list[T]:
    """n of ``items`` chosen by a seeded permutation, kept in their original order."""
    if not 0 <= n <= len(items):
        raise ValueError(f"cannot choose {n} of {len(items)} items")
    return [items[i] for i in sorted(_permutation(len(items), seed)[:n])]


def holdout_split(items: Sequence[T], n_holdout: int, seed: int) -> tuple[list[T], list[T]]:
    """(training pool, held out): the last ``n_holdout`` of a seeded permutation are held out;
    both lists are in permutation order."""
    if not 0 <= n_holdout <= len(items):
        raise ValueError(f"cannot hold out {n_holdout} of {len(items)} items")
    perm = _permutation(len(items), seed)
    cut = len(items) - n_holdout
    return [items[i] for i in perm[:cut]], [items[i] for i in perm[cut:]]
