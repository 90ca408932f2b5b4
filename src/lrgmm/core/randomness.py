"""One way to turn a ``random_state`` / ``seed`` argument into a torch random generator.

Every estimator and sampling step in lrgmm takes randomness through this function, the way
scikit-learn's ``check_random_state`` is used: ``None`` draws fresh entropy, an ``int`` gives a
new generator seeded with it (so a model with ``random_state=0`` repeats itself call after call),
and a ``torch.Generator`` is used as is (so a caller can chain draws).
"""

from __future__ import annotations

import torch

from ..limits import check_seed

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
