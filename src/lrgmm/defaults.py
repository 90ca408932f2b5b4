"""The method's hyperparameter defaults, in one table.

``LRGMM``, ``FacePipeline`` and ``LowRankGaussianMixture`` take their constructor defaults from
``DEFAULTS``; the command line and the studio read them from those signatures, and model files
record every value a model was fitted with. Change a default here and every entry point follows
(``tests/test_layout.py`` checks the signatures against this table).

Why these values (measurements in README "Method and defaults" and the reports):

- ``n_channels`` None: q = min(16, c); q = 16 keeps 84 % of TAEF2's latent-pixel variance, q = 8
  loses eyes and mouths.
- ``n_components`` None: K = round(N / 128) in [1, 128] (the paper's K = 8 at N = 1,024; it
  stops at 64 for 28k). At the whole 18,917-face split, 3 seeds x 1,000 faces: FID 43.8 (K = 32,
  one seed), 40.5 +- 0.6 (64), 38.7 +- 0.6 (128), near copies 2.7-3.1 %
  (reports/whole_split/picture_rank_q.md).
- ``temperature`` 1: lambda of eq. 4, every one of the d0 sampling directions handed out over
  the components (d_k = floor(pi_k d0)). The paper's 0.12 leaves each of K = 8 components ~61
  directions and falls as 1/K. With all d0 directions shared out the draws vary more, and the
  NN step in raster order copies less from them: at N = 1,024 near copies 4.6 % at lambda 1
  against 5.7 % at 0.12 (one seed), FID 33.1 against 34.1 (reports/picture.md). A model file that records lambda as null ("from K", the rule
  0.12 max(K, 8) / 8 capped at 1 of earlier releases, ``lrgmm.core.mixture.default_temperature``)
  keeps it.
- ``spread`` 1.5: psi, every draw that goes through the NN step widened around its component's
  mean, z = c_k + psi V_k^T diag(s_k)^(1/2) eps (``lrgmm.core.sampling``; 1 is eq. 4). The NN
  step snaps each position to the nearest training patch; draws at psi = 1 sit among the
  cluster's common patches, so the faces vary less than photos do (recall 0.22 at N = 1,024).
  Wider draws reach more distinctive patches and, being farther from every photo, copy less:
  near copies 3.5 % at psi 1.5 with a 0.20 budget against 4.6 % at psi 1 with 0.10. Draws
  decoded without the NN step keep psi = 1 (``lrgmm.core.model.resolve_spread``).
- ``patch_size`` 5, ``nn_iterations`` 1: omega and the NN projections of eq. 5 (the paper's).
- ``nn_order`` "raster" and ``max_share`` 0.20: the NN step visits the positions one by one, each
  patch read from the face as it stands (``lrgmm.core.nn_projection``, "Order"), so a position
  prefers the photo its copied neighbours came from: far fewer seams. It also copies more, which
  psi and the copy budget take back: no face takes more than a fifth of its latent pixels from
  one training photo (0.25 scores lower FID but a quarter of most faces from one photo). The
  defaults (psi, budget, order, lambda) are the lowest FID measured at no more near copies than
  fresh photos (5 %) and a median largest share of at most 20 %, 3 seeds x 1,000 faces against
  2,000 held-out photos (reports/picture.md, reports/whole_split/picture.md): at N = 1,024 FID
  28.22 +- 0.25, recall 0.38, against 33.10 +- 0.71 and 0.22 for psi 1 with a 0.10 budget,
  39.60 +- 0.83 for the paper's parallel step with a 0.25 budget and 36.19 +- 0.55 for the
  LatentPatch-style baseline; the whole split in README "Choosing the generator". A cluster too
  small for the budget gets the even split instead (``lrgmm.core.nn_projection``, "Copy budget"),
  so the default never makes a call fail; "parallel" (eq. 5 as printed) is an option.
- ``density_rank`` 16: the rank of every component's density during EM, independent of its weight.
- ``reg_covar`` 1e-3: floor of a component's isotropic variance (codes are whitened, so 1 is the
  average per-coordinate variance).
- ``max_iter`` 100, ``tol`` 1e-3, ``n_init`` 1: EM stops when the mean log-likelihood per code
  changes by less than tol; several k-means++ starts only on request.
- ``random_state`` 0: fits are reproducible unless a seed is given.
- ``min_component_size`` 4: smaller components are removed during EM (a component of one photo
  draws that photo).
"""

from __future__ import annotations

from types import MappingProxyType

DEFAULTS = MappingProxyType({
    "n_channels": None,
    "n_components": None,
    "temperature": 1.0,
    "spread": 1.5,
    "patch_size": 5,
    "nn_iterations": 1,
    "nn_order": "raster",
    "max_share": 0.2,
    "density_rank": 16,
    "reg_covar": 1e-3,
    "max_iter": 100,
    "tol": 1e-3,
    "n_init": 1,
    "random_state": 0,
    "min_component_size": 4,
})

# The orders the NN step can visit positions in (``nn_order``; ``lrgmm.core.nn_projection``).
NN_ORDERS = ("parallel", "raster")

__all__ = ["DEFAULTS", "NN_ORDERS"]
