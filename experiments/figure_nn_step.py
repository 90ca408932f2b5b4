"""The README's NN-step figure: the same draws of one model without and with the NN step.

    python -m experiments.figure_nn_step [--model demo_out/demo.lrgmm] [--n 8] [--seed 0]
                                         [--out docs/lrgmm_vs_lrgmm_nn.png]

Both rows come from one seed, so each column is one component and one noise draw: the top row
decodes the mixture's code as drawn (the paper's LR-GMM), the bottom row the same code after the
NN step with the model's own settings (order, copy budget), and a third row shows the bottom
row's provenance maps. The model is the one ``lrgmm demo`` writes.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lrgmm.core.provenance import provenance_image
from lrgmm.figures import labelled_rows
from lrgmm.io.images import make_grid
from lrgmm.pipeline import FacePipeline


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="demo_out/demo.lrgmm", help="a model file (default: lrgmm demo's)")
    ap.add_argument("--n", type=int, default=8, help="faces per row")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="docs/lrgmm_vs_lrgmm_nn.png")
    args = ap.parse_args(argv)
    if not Path(args.model).is_file():
        print(f"error: no model file at {args.model}: run `lrgmm demo` first, or pass --model", file=sys.stderr)
        return 2
    pipe = FacePipeline.load(args.model)
    plain = pipe.generate(args.n, args.seed, nn=False)
    copied = pipe.generate(args.n, args.seed)
    res = plain.images.shape[-1]
    maps = [provenance_image(p, res) for p in copied.samples.provenance]
    m = pipe.model_
    rows = [("LR-GMM (no NN step)", make_grid(plain.images, ncols=args.n)),
            (f"LR-GMM-NN ({m.nn_order} order, budget {m.max_share:g})", make_grid(copied.images, ncols=args.n)),
            ("provenance: one colour per training photo", make_grid(maps, ncols=args.n))]
    print(labelled_rows(rows, Path(args.out)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
