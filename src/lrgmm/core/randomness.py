"""The randomness policy, in one place.

Estimators take ``random_state`` (fixed at construction: a model fitted twice with the same value
is the same model); draws take ``seed``. ``seed=None`` always means a fresh seed: ``resolve_seed``
draws one (below 2**31, short enough to read and type) and the pipeline records it in what it
returns and writes (``Generated.seed``, ``samples.json``, ``completions.json``), so any face can
be made again. Any seed in [0, 2**63) is accepted (``lrgmm.limits.SEED_LIMIT``).

``as_generator`` turns a ``random_state`` / ``seed`` into a torch generator, the way
scikit-learn's ``check_random_state`` is used: ``None`` draws fresh entropy, an ``int`` gives a
new generator seeded with it, and a ``torch.Generator`` is used as is (so a caller can chain
draws).
"""

from __future__ import annotations

import secrets

import torch

from ..limits import check_seed

FRESH_SEED_LIMIT = 2**31  # fresh seeds are drawn below this

RandomState = "int | torch.Generator | None"


def as_generator(random_state: int | torch.Generator | None) -> torch.Generator:
    if isinstance(random_state, torch.Generator):
        return random_state
    gen = torch.Generator(device="cpu")
    if random_state is None:
        gen.seed()
    elif isinstance(random_state, int) and not isinstance(random_state, bool):
        if random_state < 0:
            raise ValueError(f"random_state/seed must be a non-negative int, got {random_state}")
        check_seed(random_state)  # torch would say "Overflow when unpacking long long" at 2**64
        gen.manual_seed(random_state)
    else:
        raise TypeError(
            f"random_state/seed must be None, an int or a torch.Generator, got {type(random_state).__name__}"
        )
    return gen


def resolve_seed(seed: int | torch.Generator | None) -> int | torch.Generator:
    """``seed`` itself (checked), or a fresh seed in [0, 2**31) when it is None: what a draw
    records so that it can be repeated."""
    if seed is None:
        return secrets.randbelow(FRESH_SEED_LIMIT)
    if isinstance(seed, torch.Generator):
        return seed
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be None, an int or a torch.Generator, got {type(seed).__name__}")
    return check_seed(seed)
