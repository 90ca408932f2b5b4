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
- ``temperature`` None: lambda of eq. 4 from K, 0.12 max(K, 8) / 8 capped at 1
  (``lrgmm.core.mixture.default_temperature``): the paper's 0.12 up to its K = 8 (so N <= ~1k is
  unchanged), and above it the same ~61 directions per component instead of eq. 4's share
  falling as 1/K (8 per component at K = 64). At the whole split with K = 64 (3 seeds x 1,000
  faces, reports/whole_split/picture_rank_q.md): FID 40.5 +- 0.6, recall 0.15, near copies 2.7 %
  against 45.5 +- 1.4, 0.06, 6.1 % with lambda = 0.12. From K = 67 lambda is 1 (K = 128: ~32
  directions per component).
- ``patch_size`` 5, ``nn_iterations`` 1: omega and the NN projections of eq. 5 (the paper's).
- ``nn_order`` "parallel": eq. 5 as printed, every position projected from the same input.
  "raster" (position by position from the face as it stands, ``lrgmm.core.nn_projection``) lowers FID
  from 46.7 to 38.2 at N = 1,024 but raises near copies to 8.6 % (fresh photos: 5 %), and the
  default is the lowest FID at the fresh-photo rate (reports/picture_rank_q.md, measured when copies
  were decoded from their codes; reports/picture.md has the settings measured since).
- ``max_share`` 0.25: no face takes more than a quarter of its latent pixels from one training
  photo (the largest share was 97 % without it); at N = 1,024 it costs FID within the seed spread
  (reports/picture_rank_q.md). A cluster too small for it gets the even split instead
  (``lrgmm.core.nn_projection``, "Copy budget"), so the default never makes a call fail.
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
    "temperature": None,
    "patch_size": 5,
    "nn_iterations": 1,
    "nn_order": "parallel",
    "max_share": 0.25,
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
