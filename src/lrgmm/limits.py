"""Upper bounds on what one call may ask for, in one place for the API and the command line.

A typo (``-n 100000`` for ``-n 1000``, ``--nn-iterations 100000000``) should be refused at once
with the limit in the message, not discovered as a machine out of memory or a run that never
ends. The limits are far above any real use: generation itself runs in bounded batches
(``FacePipeline.generate_batches``), so memory does not grow with n; the bound on n only caps the
time and disk a single command can take. The checks raise ``LimitError``, a ``ValueError`` too,
so callers that caught ``ValueError`` for bad values still do.
"""

from __future__ import annotations

from .errors import LimitError

MAX_SAMPLES = 1_000_000  # faces per generate/sample call (about 0.1 TB of PNGs with provenance)
MAX_NN_ITERATIONS = 100  # NN projections per face; the paper uses 1, more changes nothing visible
SEED_LIMIT = 2**63  # seeds are in [0, 2**63): torch's generator takes 64 bits, the studio uses 2**63

MAX_EDIT_SAMPLES = 256  # faces `lrgmm sample --edit` edits: every strip stays in memory for the grid

SAMPLE_BATCH_SIZE = 64  # faces drawn, decoded and written at a time by the streaming sampler
GRID_FACES = 64  # faces shown in grid.png / provenance_grid.png (the first ones)


def check_n_samples(n: int, what: str = "number of faces") -> int:
    """n itself, if 0 <= n <= MAX_SAMPLES."""
    if isinstance(n, bool) or int(n) != n:
        raise LimitError(f"{what} must be an integer, got {n!r}")
    if n < 0:
        raise LimitError(f"{what} must be >= 0, got {n}")
    if n > MAX_SAMPLES:
        raise LimitError(f"{what} must be at most {MAX_SAMPLES:,}, got {n:,}; split the run (other seeds) if you need more")
    return int(n)


def check_nn_iterations(k: int | None) -> int | None:
    """k itself (None: the model's value), if 1 <= k <= MAX_NN_ITERATIONS."""
    if k is None:
        return None
    if k < 1:
        raise LimitError(f"nn_iterations must be >= 1, got {k}")
    if k > MAX_NN_ITERATIONS:
        raise LimitError(f"nn_iterations must be at most {MAX_NN_ITERATIONS}, got {k:,}")
    return k


def check_seed(seed: int | None) -> int | None:
    """seed itself (None: fresh entropy or the model's random_state), if in [0, SEED_LIMIT)."""
    if seed is None:
        return None
    if not 0 <= seed < SEED_LIMIT:
        raise LimitError(f"seed must be an integer in [0, 2**63 - 1 = {SEED_LIMIT - 1}], got {seed}")
    return seed
