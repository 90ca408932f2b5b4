"""Screen (no near copies): FID, KID, precision and recall of picture_sweep candidates at the whole
training split, 1,000 faces, one seed, against the same 2,000 held-out photos.

    python -m experiments.rank_screen share25 lambda50-share25 lambda100-share25

A quick look before the full frontier protocol (``experiments.picture_sweep``), which also
measures near copies against all training reconstructions (half an hour of Inception on 2 cores
the first time). Prints one line per candidate with its K and first sampling ranks d_k.
"""

from __future__ import annotations

import sys
import time
import warnings
from pathlib import Path

from experiments.picture_sweep import _generator
from experiments.reproduction import EVAL_SEED, ReportRun

N_POOL = 19187


def main(names: list[str]) -> int:
    run = ReportRun.at_one_n(N_POOL, Path("reports/whole_split"), "python -m experiments.rank_screen " + " ".join(names))
    for name in names:
        t = time.time()
        pipe, gen = _generator(run, N_POOL, name)
        ranks = pipe.model_.mixture_.ranks_.tolist()
        ev = run.evaluator(pipe, memorisation=False)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            res = ev.evaluate(gen, 1000, seed=EVAL_SEED, name=name)
        print(f"{name}: K {pipe.model_.n_components_}, d_k {ranks[:6]}..., FID {res.fid:.2f}, KID x 1e3 "
              f"{1e3 * res.kid.mean:.2f}, precision {res.pr.precision:.3f}, recall {res.pr.recall:.3f} "
              f"({time.time() - t:.0f} s)", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
