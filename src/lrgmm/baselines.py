"""The paper's baselines and ablations, as generators behind ``FacePipeline``'s interface.

Every generator here is built from a **fitted** ``FacePipeline``: it reuses the pipeline's
autoencoder, its projector P0 and its training codes y_i = P0(E(x_i)) (the NN memory), fits what
it needs on those codes, and exposes

    gen.sample(n, seed=None)            -> LatentSamples (latents, codes, components, provenance)
    gen.generate(n, seed=None, **kw)    -> Generated (images (n, 3, R, R) in [0, 1], samples, ...)

so ``lrgmm.evaluation.Evaluator`` measures them exactly like the pipeline itself (its
``pipeline`` attribute names the reference). Same generator + same seed + same n gives the same
faces. ``seed=None`` is a fresh seed, recorded in ``Generated.seed`` (``lrgmm.core.randomness``);
``random_state`` seeds the fit only.

Registry::

    from lrgmm.baselines import BASELINES, make_generator
    gen = make_generator("latentpatch", pipe)          # fitted, ready to sample
    out = gen.generate(16, seed=0)

========================  ==================================================================
name                      what (paper figure / section)
========================  ==================================================================
``normal``                standard normal per latent pixel in the whitened code space,
                          decoded through P0* (fig. 6a)
``random-pixels``         every latent pixel copied from a random training code at the same
                          position (fig. 6c, "NN step alone"); provenance = those codes
``nn-from-random``        a random start (standard normal codes) then the NN projection of
                          eq. 5 over the whole training set (fig. 6c as the text describes it)
``gaussian``              one full-covariance Gaussian on the whole code (ex-post "N", Ghosh
                          et al., section 3.6)
``gmm10``                 a 10-component full-rank Gaussian mixture on the whole code (ex-post
                          "GMM", section 3.6), our EM at full rank (see ``FullGMM``)
``lrgmm``                 LR-GMM without the NN step (fig. 6d, table 1 "LR-GMM")
``lrgmm-nn``              LR-GMM-NN, the method (table 1)
``latentpatch``           a LatentPatch-style non-parametric generator, **our re-implementation**
                          from the papers' description (no public code; see ``LatentPatch``)
========================  ==================================================================

``components`` is -1 for generators without mixture components; ``provenance`` is None for
generators that copy nothing (every latent pixel of the others is exactly a training pixel:
``gather_pixels(codes_, provenance) == codes``).
"""

from __future__ import annotations

import math
import time
from typing import Any

import torch
import torch.nn.functional as F

from .errors import NotFittedError
from .limits import SAMPLE_BATCH_SIZE, check_n_samples
from .core.mixture import LowRankGaussianMixture
from .core.model import LatentSamples, resolve_spread
from .core.nn_projection import gather_pixels, nn_project
from .pipeline.face_pipeline import FacePipeline, Generated
from .core.randomness import as_generator, resolve_seed

__all__ = [
    "BASELINES",
    "BaselineGenerator",
    "FullGMM",
    "FullGaussian",
    "LRGMMGenerator",
    "LRGMMNNGenerator",
    "LatentPatch",
    "NNFromRandom",
    "RandomTrainingPixels",
    "StandardNormalPixels",
    "make_generator",
]


class BaselineGenerator:
    """Common part: the pipeline it is built on, ``fit``, ``sample`` and ``generate``.

    Subclasses set ``name`` (registry key), ``label`` (for tables), ``reproduces`` (figure or
    section), ``copies`` (True when every latent pixel is a training pixel, with provenance) and
    implement ``_fit()`` and ``_sample(n, generator) -> (codes, components, provenance)``.
    """

    name = ""
    label = ""
    reproduces = ""
    copies = False

    def __init__(self, pipeline: FacePipeline, *, random_state: int | None = 0):
        pipeline.check_is_fitted()
        self.pipeline = pipeline
        self.random_state = random_state
        self.fit_seconds_: float | None = None

    # ------------------------------------------------------------- shared parts
    @property
    def memory(self) -> torch.Tensor:
        """(N, q, h, w) training codes of the pipeline (the NN memory)."""
        return self.pipeline.model_.codes_

    @property
    def code_shape(self) -> tuple[int, int, int]:
        return tuple(self.memory.shape[1:])

    def params(self) -> dict:
        """Settings that define the generator (recorded with its faces)."""
        return {}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params().items())
        return f"{type(self).__name__}({args})"

    # ------------------------------------------------------------------ fitting
    def fit(self) -> "BaselineGenerator":
        """Fit what the generator needs on the pipeline's training codes (timed)."""
        start = time.perf_counter()
        self._fit()
        self.fit_seconds_ = time.perf_counter() - start
        return self

    def _fit(self) -> None:
        pass

    def check_is_fitted(self) -> None:
        if self.fit_seconds_ is None:
            raise NotFittedError(f"{type(self).__name__} is not fitted: call fit() (or use make_generator)")

    # ----------------------------------------------------------------- sampling
    def sample(self, n: int, seed: int | torch.Generator | None = None) -> LatentSamples:
        """n latent samples: codes (n, q, h, w), latents (``LRGMM.decoder_latents``: the training
        pixels themselves where a pixel was copied, P0*(codes) elsewhere), components, provenance."""
        self.check_is_fitted()
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        gen = as_generator(seed)
        codes, comps, prov = self._sample(int(n), gen)
        codes = codes.to(torch.float32).contiguous()
        return LatentSamples(self.pipeline.model_.decoder_latents(codes, prov), codes, comps, prov)

    def _sample(self, n: int, gen: torch.Generator):
        raise NotImplementedError

    def generate_batches(self, n: int, seed: int | None = None, batch_size: int = SAMPLE_BATCH_SIZE):
        """``generate`` batch by batch, memory bounded whatever n (``lrgmm sample --method``).
        One generator is drawn from batch after batch, so the first ``batch_size`` faces are
        those of ``generate(n, seed)``; later ones are reproducible for a fixed seed and batch
        size (unlike ``FacePipeline.generate_batches``, they depend on the batch size)."""
        self.check_is_fitted()
        check_n_samples(n)
        seed = resolve_seed(seed)
        gen = as_generator(seed)
        pipe = self.pipeline
        settings = {"method": self.name, **self.params()}
        step = max(1, pipe.batch_size)  # whole decoder batches, as generate() decodes them
        batch_size = -(-max(1, int(batch_size)) // step) * step

        def batches():
            for start in range(0, n, batch_size):
                samples = self.sample(min(batch_size, n - start), gen)
                images = pipe.decode(samples.latents, progress=False)
                yield Generated(images, samples, pipe.training_files_, seed, settings, start)

        return batches()

    def generate(self, n: int, seed: int | None = None, **kwargs: Any) -> Generated:
        """n faces: ``sample`` then the pipeline's decoder. ``kwargs`` are not used by the
        baselines (accepted so callers can pass one set of options to every generator)."""
        seed = resolve_seed(seed)
        samples = self.sample(n, seed)
        return Generated(
            images=self.pipeline.decode(samples.latents),
            samples=samples,
            training_files=self.pipeline.training_files_,
            seed=seed,
            settings={"method": self.name, **self.params()},
        )


def _no_components(n: int) -> torch.Tensor:
    return torch.full((n,), -1, dtype=torch.long)


# ----------------------------------------------------------------------- fig. 6a, 6c


class StandardNormalPixels(BaselineGenerator):
    """Fig. 6a: every latent pixel drawn from a standard normal prior, z(p) ~ N(0, I_q) in the
    projected, whitened code space, then decoded through P0* and the decoder. Fits nothing."""

    name = "normal"
    label = "standard normal per latent pixel"
    reproduces = "paper fig. 6a"

    def _sample(self, n, gen):
        codes = torch.randn(n, *self.code_shape, generator=gen)
        return codes, _no_components(n), None


class RandomTrainingPixels(BaselineGenerator):
    """Fig. 6c ("NN step alone"): every latent pixel z(p) copied from a training code y_i(p) at
    the same position p, with i uniform over the N training images, independently per position.
    The provenance map is those indices. Fits nothing."""

    name = "random-pixels"
    label = "random training latent pixels"
    reproduces = "paper fig. 6c"
    copies = True

    def _sample(self, n, gen):
        N = self.memory.shape[0]
        h, w = self.code_shape[1:]
        prov = torch.randint(0, N, (n, h, w), generator=gen)
        return gather_pixels(self.memory, prov), _no_components(n), prov


class NNFromRandom(BaselineGenerator):
    """Fig. 6c as the paper's text describes it ("our model with only the NN projection from a
    random initialization rather than LR-GMM"): a random start, then the NN projection of eq. 5
    (omega x omega patches, same position) over *all* training codes (no clusters).

    start: "normal" (standard normal codes, the fig. 6a prior; default) or "pixels" (random
        training latent pixels, fig. 6c).
    patch_size, iterations: omega and the number of NN projections (default: the pipeline's).
    """

    name = "nn-from-random"
    label = "NN step from a random start"
    reproduces = "paper fig. 6c (NN projection from a random initialisation)"
    copies = True

    def __init__(self, pipeline, *, start: str = "normal", patch_size: int | None = None,
                 iterations: int | None = None, random_state: int | None = 0):
        super().__init__(pipeline, random_state=random_state)
        if start not in ("normal", "pixels"):
            raise ValueError(f"start must be 'normal' or 'pixels', got {start!r}")
        m = pipeline.model_
        self.start = start
        self.patch_size = m.patch_size if patch_size is None else int(patch_size)
        self.iterations = m.nn_iterations if iterations is None else int(iterations)

    def params(self):
        return {"start": self.start, "patch_size": self.patch_size, "iterations": self.iterations}

    def _sample(self, n, gen):
        mem = self.memory
        N = mem.shape[0]
        h, w = self.code_shape[1:]
        if self.start == "normal":
            z0 = torch.randn(n, *self.code_shape, generator=gen)
        else:
            z0 = gather_pixels(mem, torch.randint(0, N, (n, h, w), generator=gen))
        if n == 0:
            return z0, _no_components(0), torch.zeros(0, h, w, dtype=torch.long)
        codes, prov = nn_project(z0, torch.zeros(n, dtype=torch.long), mem, torch.zeros(N, dtype=torch.long),
                                 patch_size=self.patch_size, iterations=self.iterations)
        return codes, _no_components(n), prov


# ------------------------------------------------------------------ ex-post densities


class FullGaussian(BaselineGenerator):
    """Ex-post density "N" (Ghosh et al., section 3.6): one Gaussian with full covariance on the
    whole flattened code (d0 = q h w values), fitted by maximum likelihood, regularised:

        Sigma = S + reg * I,   S = empirical covariance of the N training codes (1 / (N - 1)).

    Everything runs in float64 and Sigma is stored as a factor F with Sigma = F F^T + iso * I:

    - N - 1 < d0 (the usual case): S has rank <= N - 1, so its eigendecomposition comes from the
      N x N Gram matrix: S = U diag(s) U^T, F = U diag(sqrt(s)), iso = reg (exact, never forms
      d0 x d0 during the fit);
    - otherwise (or ``method="cholesky"``): F = cholesky(S + reg I), iso = 0.

    A draw is z = mean + F e1 + sqrt(iso) e2 with e1, e2 standard normal: exactly N(mean, Sigma).
    """

    name = "gaussian"
    label = "one full Gaussian (ex-post N)"
    reproduces = "Ghosh et al. section 3.6, ex-post 'N'"

    def __init__(self, pipeline, *, reg: float = 1e-3, method: str = "auto", random_state: int | None = 0):
        super().__init__(pipeline, random_state=random_state)
        if not reg > 0:
            raise ValueError(f"reg must be > 0, got {reg}")
        if method not in ("auto", "gram", "cholesky"):
            raise ValueError(f"method must be 'auto', 'gram' or 'cholesky', got {method!r}")
        self.reg = float(reg)
        self.method = method

    def params(self):
        return {"reg": self.reg, "method": self.method}

    def _fit(self):
        x = self.memory.reshape(self.memory.shape[0], -1).to(torch.float64)
        n, d = x.shape
        if n < 2:
            raise ValueError("a full Gaussian needs at least 2 training codes")
        self.mean_ = x.mean(0)
        xc = (x - self.mean_) / math.sqrt(n - 1)
        method = self.method if self.method != "auto" else ("gram" if n - 1 < d else "cholesky")
        if method == "gram":
            vals, a = torch.linalg.eigh(xc @ xc.T)  # eigenvalues of S, from the N x N side
            keep = vals > vals.max().clamp_min(0) * 1e-10
            vals, a = vals[keep], a[:, keep]
            u = xc.T @ a / vals.sqrt()  # (d, r) orthonormal eigenvectors of S
            self.factor_ = (u * vals.sqrt()).contiguous()
            self.iso_ = self.reg
        else:
            cov = xc.T @ xc
            cov.diagonal().add_(self.reg)
            self.factor_ = torch.linalg.cholesky(cov)
            self.iso_ = 0.0
        self.method_ = method

    def covariance(self) -> torch.Tensor:
        """The dense d0 x d0 Sigma (float64); for tests and inspection."""
        self.check_is_fitted()
        cov = self.factor_ @ self.factor_.T
        cov.diagonal().add_(self.iso_)
        return cov

    def _sample(self, n, gen):
        d, r = self.factor_.shape
        z = self.mean_.expand(n, d) + torch.randn(n, r, generator=gen, dtype=torch.float64) @ self.factor_.T
        if self.iso_ > 0:
            z = z + math.sqrt(self.iso_) * torch.randn(n, d, generator=gen, dtype=torch.float64)
        return z.reshape(n, *self.code_shape), _no_components(n), None


class FullGMM(BaselineGenerator):
    """Ex-post density "GMM" (Ghosh et al., section 3.6): a 10-component Gaussian mixture on the
    whole flattened code, **without low rank**.

    Fitted with our EM (``LowRankGaussianMixture``, k-means++ start, float64) at full rank: the
    temperature is set so that every component keeps all the directions its n_k samples span
    (d_k = min(n_k - 1, d0)), and the rest of the space gets the isotropic variance
    max(mean discarded eigenvalue, reg) (= reg when n_k - 1 < d0). So
    Sigma_k = S_k + reg on the complement of S_k's span: the empirical full covariance of the
    component, regularised where it is singular. Not scikit-learn's ``GaussianMixture``: that
    adds reg to every eigenvalue and costs ~100x more time on these codes (BENCHMARKS.md), for the
    same hard partition (at d0 = 4,096 responsibilities are 0 or 1 and both EMs stop after
    2 iterations).

    n_components: 10, capped at N // 4 (components need at least 4 training codes, as in
        ``LRGMM``), so 8 for N = 32.
    Draws include the isotropic part: z = c_k + V_k^T diag(sqrt(s_k)) e1 + sigma_k (I - V_k^T V_k) e2.

    Cost: full rank means sum_k d_k ~ N directions, so the E-step is an N x N x d0 product. On
    19,187 codes of d0 = 4,096 (the report's full scale) the fit took 256 s and peaked at 11 GB of
    memory on 2 cores (1.2 s and 0.1 GB on 1,023 codes).
    """

    name = "gmm10"
    label = "10-component full GMM (ex-post GMM)"
    reproduces = "Ghosh et al. section 3.6, ex-post 'GMM'"

    def __init__(self, pipeline, *, n_components: int = 10, reg: float = 1e-3, min_component_size: int = 4,
                 random_state: int | None = 0):
        super().__init__(pipeline, random_state=random_state)
        self.n_components = int(n_components)
        self.reg = float(reg)
        self.min_component_size = int(min_component_size)

    def params(self):
        return {"n_components": self.n_components, "reg": self.reg}

    def _fit(self):
        x = self.memory.reshape(self.memory.shape[0], -1)
        n = x.shape[0]
        k = max(1, min(self.n_components, n // max(2, self.min_component_size)))
        self.mixture_ = LowRankGaussianMixture(
            n_components=k,
            temperature=float(max(n, 1)),  # lambda pi_k d0 >= d0 for every component: full rank
            density_rank=x.shape[1],  # full rank in EM too (capped at n_k - 1 by the estimator)
            reg_covar=self.reg,
            random_state=self.random_state if self.random_state is not None else 0,
            min_component_size=self.min_component_size,
        ).fit(x)
        self.n_components_ = self.mixture_.n_components_

    def _sample(self, n, gen):
        mix = self.mixture_
        d = mix.means_.shape[1]
        comps = torch.multinomial(mix.weights_.to(torch.float64), n, replacement=True, generator=gen) if n else _no_components(0)
        r_max = mix.eigenvectors_.shape[1]
        e1 = torch.randn(n, r_max, generator=gen, dtype=torch.float64)
        e2 = torch.randn(n, d, generator=gen, dtype=torch.float64)
        z = mix.means_.to(torch.float64)[comps]
        for k in torch.unique(comps).tolist():
            idx = (comps == k).nonzero().squeeze(1)
            r = int(mix.ranks_[k])
            v = mix.eigenvectors_[k, :r].to(torch.float64)  # (r, d), orthonormal rows
            s = mix.eigenvalues_[k, :r].to(torch.float64)
            sigma = math.sqrt(float(mix.noise_variance_[k]))
            noise = e2[idx]
            noise = noise - (noise @ v.T) @ v  # the complement of the component's span
            z[idx] += (e1[idx, :r] * s.sqrt()) @ v + sigma * noise
        return z.reshape(n, *self.code_shape), comps.to(torch.long), None


# ------------------------------------------------------------------------- the method


class LRGMMNNGenerator(BaselineGenerator):
    """LR-GMM-NN (paper section 3, table 1): the pipeline's own model, with the NN step.

    temperature, spread, nn_iterations, patch_size, max_share: sampling-time overrides (``LRGMM.sample``;
    max_share = 1 turns a model's copy budget off). The fit time is the pipeline's (projector +
    mixture)."""

    name = "lrgmm-nn"
    label = "LR-GMM-NN"
    reproduces = "paper table 1 'LR-GMM-NN'"
    copies = True
    nn = True

    def __init__(self, pipeline, *, temperature: float | None = None, nn_iterations: int | None = None,
                 patch_size: int | None = None, max_share: float | None = None, nn_order: str | None = None,
                 random_state: int | None = None, spread: float | None = None):
        super().__init__(pipeline, random_state=random_state)
        self.nn_order = nn_order
        self.temperature = temperature
        self.spread = spread
        self.nn_iterations = nn_iterations
        self.patch_size = patch_size
        self.max_share = max_share

    def params(self):
        m = self.pipeline.model_
        out = {"temperature": m.temperature_ if self.temperature is None else self.temperature,
               "spread": resolve_spread(m.spread, self.spread, self.nn)}
        if self.nn:
            out["nn_iterations"] = m.nn_iterations if self.nn_iterations is None else self.nn_iterations
            out["patch_size"] = m.patch_size if self.patch_size is None else self.patch_size
            out["max_share"] = m.max_share if self.max_share is None else self.max_share
        return out

    def fit(self):
        self.fit_seconds_ = float(getattr(self.pipeline, "fit_seconds_", float("nan")))
        return self

    def sample(self, n, seed=None):
        self.check_is_fitted()
        return self.pipeline.model_.sample(n, seed, nn=self.nn, temperature=self.temperature,
                                           nn_iterations=self.nn_iterations, patch_size=self.patch_size,
                                           max_share=self.max_share if self.nn else None, nn_order=self.nn_order,
                                           spread=self.spread)


class LRGMMGenerator(LRGMMNNGenerator):
    """LR-GMM without the NN step (paper fig. 6d, table 1 "LR-GMM"): low-rank mixture draws
    decoded as they are."""

    name = "lrgmm"
    label = "LR-GMM (no NN)"
    reproduces = "paper fig. 6d, table 1 'LR-GMM'"
    copies = False
    nn = False


# ------------------------------------------------------------------------- LatentPatch


class LatentPatch(BaselineGenerator):
    """A LatentPatch-style generator: **our re-implementation from the papers' description**
    (Samuth et al., ICIP 2023, has no public code). What the LR-GMM-NN paper says of it: a
    non-parametric, multi-scale, auto-regressive model in the latent space, inspired by patch
    based texture synthesis, that *sequentially copies latent patches* from the training set and
    picks *at random among the top-k nearest* (sections 2, 3.3, 4.2). The details below are ours.

    Scales: ``levels`` resolutions of the code grid, coarse to fine (16x16 codes, 3 levels:
    4x4, 8x8, 16x16); training codes are average-pooled to each resolution. At each level the
    grid is filled block by block in raster order (``block_sizes`` per level; default 1 at the
    coarsest level, 2 above). For a block, the query is an omega x omega window around it
    (``patch_size``; the block grown by rho = omega // 2 on each side, clipped to the grid) made of

    - the already-synthesised pixels of this level in the window (causal context), and
    - above the coarsest level, the whole window of the coarser result upsampled x2 (the guide),
      weighted by ``guide_weight``;

    the candidates are the same windows of every training code *at the same position* (faces are
    aligned, as in the NN step), the coarser side being the training code's own pooled-and-
    upsampled version. One of the ``top_k`` nearest is chosen uniformly at random and its block
    is copied. The first block of the coarsest level has no context: its source is uniform over
    the training set. The finest level's output is the code, so every latent pixel is a training
    pixel and ``provenance`` says whose; ``coarse_provenance`` (after ``sample``) keeps the
    coarser levels' maps.

    The loop runs over blocks (96 steps for 16x16 codes), each step vectorised over all samples
    and training codes (one matrix product for the distances).
    """

    name = "latentpatch"
    label = "LatentPatch-style (re-implementation)"
    reproduces = "LatentPatch (Samuth et al. 2023) as described in the paper, re-implemented"
    copies = True

    def __init__(self, pipeline, *, levels: int = 3, patch_size: int = 5, block_sizes: tuple[int, ...] | None = None,
                 top_k: int = 3, guide_weight: float = 1.0, random_state: int | None = 0):
        super().__init__(pipeline, random_state=random_state)
        h, w = self.code_shape[1:]
        if levels < 1 or h % (2 ** (levels - 1)) or w % (2 ** (levels - 1)):
            raise ValueError(f"levels={levels}: the {h}x{w} code grid must halve {levels - 1} times")
        if patch_size % 2 != 1 or patch_size < 1:
            raise ValueError(f"patch_size must be a positive odd integer, got {patch_size}")
        if top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k}")
        if block_sizes is None:
            block_sizes = (1,) + (2,) * (levels - 1)
        block_sizes = tuple(int(b) for b in block_sizes)
        if len(block_sizes) != levels:
            raise ValueError(f"block_sizes needs one size per level ({levels}), got {block_sizes}")
        for lv, b in enumerate(block_sizes):
            r = h // 2 ** (levels - 1 - lv)
            if b < 1 or r % b or (w // 2 ** (levels - 1 - lv)) % b:
                raise ValueError(f"block size {b} does not tile the level-{lv} grid ({r}x{r})")
        self.levels = int(levels)
        self.patch_size = int(patch_size)
        self.block_sizes = block_sizes
        self.top_k = int(top_k)
        self.guide_weight = float(guide_weight)

    def params(self):
        return {"levels": self.levels, "patch_size": self.patch_size, "block_sizes": list(self.block_sizes),
                "top_k": self.top_k, "guide_weight": self.guide_weight}

    def _fit(self):
        # The training pyramid (finest last) and, per level above the coarsest, the guide each
        # training code would give: its coarser level upsampled x2.
        pyr = [self.memory.to(torch.float32)]
        for _ in range(self.levels - 1):
            pyr.insert(0, F.avg_pool2d(pyr[0], 2))
        self.pyramid_ = pyr
        self.guides_ = [None] + [F.interpolate(pyr[lv - 1], scale_factor=2, mode="nearest") for lv in range(1, self.levels)]
        self.steps_ = [self._plan(lv) for lv in range(self.levels)]

    def _plan(self, lv: int) -> list[tuple[int, int, torch.Tensor, torch.Tensor]]:
        """Blocks of level ``lv`` in raster order: (row, col, causal window positions, guide
        window positions), positions as flat indices into the level's grid."""
        r, c = self.pyramid_[lv].shape[-2:]
        b = self.block_sizes[lv]
        rho = self.patch_size // 2
        filled = torch.zeros(r, c, dtype=torch.bool)
        plan = []
        for i in range(0, r, b):
            for j in range(0, c, b):
                win = torch.zeros(r, c, dtype=torch.bool)
                win[max(0, i - rho): i + b + rho, max(0, j - rho): j + b + rho] = True
                causal = (win & filled).reshape(-1).nonzero().squeeze(1)
                guide = win.reshape(-1).nonzero().squeeze(1) if lv > 0 else torch.zeros(0, dtype=torch.long)
                plan.append((i, j, causal, guide))
                filled[i: i + b, j: j + b] = True
        return plan

    def _features(self, level_codes, guide, causal, guide_pos):
        """(n, D) query/candidate features: causal pixels, then weighted guide pixels."""
        n, q, r, c = level_codes.shape
        parts = [level_codes.reshape(n, q, r * c)[:, :, causal].reshape(n, q * causal.numel())]
        if guide is not None and guide_pos.numel():
            g = guide.reshape(n, q, r * c)[:, :, guide_pos].reshape(n, q * guide_pos.numel())
            parts.append(self.guide_weight * g)
        return torch.cat(parts, 1)

    def _sample(self, n, gen):
        q, h, w = self.code_shape
        N = self.memory.shape[0]
        k = min(self.top_k, N)
        out = None
        provs = []
        for lv in range(self.levels):
            train = self.pyramid_[lv]
            r, c = train.shape[-2:]
            b = self.block_sizes[lv]
            cur = torch.zeros(n, q, r, c)
            prov = torch.zeros(n, r, c, dtype=torch.long)
            guide = F.interpolate(out, scale_factor=2, mode="nearest") if out is not None else None
            tguide = self.guides_[lv]
            for i, j, causal, guide_pos in self.steps_[lv]:
                if causal.numel() == 0 and (guide is None or guide_pos.numel() == 0):
                    pick = torch.randint(0, N, (n,), generator=gen)
                else:
                    a = self._features(train, tguide, causal, guide_pos)  # (N, D)
                    qf = self._features(cur, guide, causal, guide_pos)  # (n, D)
                    d2 = (a * a).sum(1)[None, :] - 2 * qf @ a.T  # |qf|^2 does not change the ranking
                    top = torch.topk(d2, k, dim=1, largest=False).indices  # (n, k)
                    choice = torch.randint(0, k, (n,), generator=gen)
                    pick = top[torch.arange(n), choice]
                cur[:, :, i: i + b, j: j + b] = train[pick, :, i: i + b, j: j + b]
                prov[:, i: i + b, j: j + b] = pick[:, None, None]
            out = cur
            provs.append(prov)
        self.coarse_provenance = provs[:-1]
        return out, _no_components(n), provs[-1]


# ---------------------------------------------------------------------------- registry

BASELINES: dict[str, type[BaselineGenerator]] = {
    cls.name: cls
    for cls in (
        StandardNormalPixels,
        RandomTrainingPixels,
        NNFromRandom,
        FullGaussian,
        FullGMM,
        LRGMMGenerator,
        LRGMMNNGenerator,
        LatentPatch,
    )
}


def make_generator(name: str, pipeline: FacePipeline, **kwargs) -> BaselineGenerator:
    """The registered generator ``name`` built on a fitted ``pipeline`` and fitted (timed in
    ``fit_seconds_``). ``kwargs`` go to its constructor."""
    try:
        cls = BASELINES[name]
    except KeyError:
        raise ValueError(f"unknown generator {name!r}; available: {', '.join(BASELINES)}") from None
    return cls(pipeline, **kwargs).fit()
