"""Conditioning the low-rank mixture: completion of codes with unknown positions, and component
weights given attribute labels. Pure tensor code: randomness from an injected ``torch.Generator``;
``lrgmm.pipeline.conditional`` wires it to photos, masks and labels.

Gaussian conditioning in the low-rank model
-------------------------------------------
Component k of the mixture (``lrgmm.core.mixture``) is a probabilistic PCA:

    Sigma_k = V_k^T diag(s_k) V_k + sigma_k^2 (I - V_k^T V_k) = F_k^T F_k + sigma_k^2 I,
    F_k = diag(s_k - sigma_k^2)^(1/2) V_k          (r x d0, r = d_k rows)

i.e. z = c_k + F_k^T b + e with b ~ N(0, I_r) and e ~ N(0, sigma_k^2 I). Split the d0
coordinates into observed (o) and unknown (u). Given z_o, with the r x r capacitance matrix

    M_k = I_r + F_ko F_ko^T / sigma_k^2

the latent factor has the Gaussian posterior b | z_o ~ N(m_k, M_k^-1), m_k = M_k^-1 F_ko
(z_o - c_ko) / sigma_k^2, and since e_u is independent of z_o,

    z_u | z_o, k = c_ku + F_ku^T b + e_u                                          (exact)
    E[z_u | z_o, k] = c_ku + F_ku^T m_k,  Cov = F_ku^T M_k^-1 F_ku + sigma_k^2 I.

The component weights become p(k | z_o) ~ pi_k N(z_o; c_ko, F_ko^T F_ko + sigma_k^2 I) with,
by Woodbury and the matrix determinant lemma (no d_o x d_o matrix is ever formed),

    log det = d_o log sigma_k^2 + log det M_k
    maha    = (|z_o - c_ko|^2 - t^T M_k^-1 t / sigma_k^2) / sigma_k^2,  t = F_ko (z_o - c_ko).

All of it runs in float64 on r x r matrices (r = d_k, about 61 for the default model).

Temperature (lambda) and eq. 4. The rank used is the sampling rank d_k(lambda) of eq. 4 (the
fitted rank, or fewer directions when ``temperature`` is lowered, exactly as
``LRGMM.sample`` chooses them); the discarded directions keep the isotropic variance, so the
conditioned model is the PPCA density of the fitted mixture restricted to d_k(lambda)
directions, and its observed-part likelihood is the mixture's own when lambda is the fitted one.
Eq. 4 draws only in the d_k leading directions, with no isotropic term. A completion cannot do
the same: with most of a face observed (d_o of about 3,000 coordinates against r of about 60
factors) the factor posterior M_k^-1 is sharp and the component is certain, so
``c_ku + F_ku^T b`` is nearly the same for every draw and the n completions come out
identical after the NN step (measured: reports/conditional.md). The uncertainty that is left
lies in the isotropic residual e_u, so ``complete_image`` draws the exact conditional
(``noise=True``, the default), and the NN step turns the noisy draw into training latent pixels.
``noise=False`` is the eq. 4 analogue: with nothing observed it is eq. 4 with s_k replaced by
s_k - sigma_k^2 (the part of each direction's variance above the isotropic floor).

Which latent positions are unknown
----------------------------------
A latent pixel of an f-times downsampling autoencoder (f = 8 for TAEF2: 16 x 16 latents at
128 px) sits on an f x f block of image pixels. ``unknown_positions`` marks a position unknown
when more than ``threshold`` of its block is masked; the default 0 marks every block the hole
touches. Reason: the photo is encoded with the hole filled by the mean colour of the visible
pixels (``fill_masked``: the encoder must never see the hidden pixels, or the evaluation would
leak the answer), so a position kept as observed over even a few hidden pixels decodes the
fill colour there. ``threshold=0.5`` gives the "mostly masked" rule.

Completion (``complete_codes``)
-------------------------------
Observed positions keep the input's own code (and, for decoding, its own full latent, not the
rank-q projection of it); the unknown coordinates are drawn from the conditioned mixture, then
the NN step (eq. 5) runs on the unknown positions only, with omega x omega patches that include
the observed context around the hole; after each NN iteration the observed positions are put
back, and their provenance is -1.

Attribute-conditional sampling (``attribute_weights``)
-------------------------------------------------------
p(k | labels) is estimated from the training codes carrying the labels: pi'_k = mean over them
of their responsibilities p(k | y_i) (Bayes with the labelled set as the class-conditional
sample). Components, eigenvectors and ranks are the fitted ones (no refit: a refit on a few
dozen labelled faces would leave components of a handful of images); the NN step then copies
only from the training faces that carry the labels (same cluster as the draw when the cluster
has any, otherwise all labelled faces).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..defaults import DEFAULTS
from ..errors import MaskError
from .nn_projection import nn_project


# --------------------------------------------------------------------------------------------
# Gaussian conditioning in the low-rank mixture


def component_factors(
    eigenvectors: torch.Tensor, eigenvalues: torch.Tensor, noise_variance: torch.Tensor, dims: torch.Tensor
) -> torch.Tensor:
    """F_k = diag(s_k - sigma_k^2)^(1/2) V_k on the first d_k rows, zero rows beyond: (K, r_max, d0)
    float64, so that Sigma_k(lambda) = F_k^T F_k + sigma_k^2 I."""
    r_max = eigenvectors.shape[1]
    keep = torch.arange(r_max)[None, :] < dims[:, None]
    scale = (eigenvalues.double() - noise_variance.double()[:, None]).clamp_min(0).sqrt() * keep
    return eigenvectors.double() * scale[:, :, None]


@dataclass
class LowRankConditional:
    """The mixture conditioned on observed coordinates (see the module docstring).

    log_weights: (K,) log p(k | z_o), normalised.
    log_marginal: (K,) log N(z_o; c_ko, Sigma_k,oo) (without log pi_k).
    factor_mean: (K, r) m_k, posterior mean of the latent factor b.
    factor_chol: (K, r, r) lower Cholesky factor C_k of the capacitance M_k (posterior precision).
    means_u: (K, d_u) c_ku; factors_u: (K, r, d_u) F_ku; noise_variance: (K,) sigma_k^2.
    observed_index, unknown_index: coordinates into the d0-vector.
    """

    log_weights: torch.Tensor
    log_marginal: torch.Tensor
    factor_mean: torch.Tensor
    factor_chol: torch.Tensor
    means_u: torch.Tensor
    factors_u: torch.Tensor
    noise_variance: torch.Tensor
    observed_index: torch.Tensor
    unknown_index: torch.Tensor

    def mean(self, k: int) -> torch.Tensor:
        """E[z_u | z_o, k] = c_ku + F_ku^T m_k, (d_u,) float64."""
        return self.means_u[k] + self.factor_mean[k] @ self.factors_u[k]

    def covariance(self, k: int, noise: bool = True) -> torch.Tensor:
        """Cov[z_u | z_o, k] = F_ku^T M_k^-1 F_ku (+ sigma_k^2 I): dense d_u x d_u, for tests."""
        a = torch.linalg.solve_triangular(self.factor_chol[k], self.factors_u[k], upper=False)  # C^-1 F_ku
        cov = a.T @ a
        if noise:
            cov = cov + float(self.noise_variance[k]) * torch.eye(cov.shape[0], dtype=cov.dtype)
        return cov


def condition_low_rank(
    weights: torch.Tensor,
    means: torch.Tensor,
    eigenvectors: torch.Tensor,
    eigenvalues: torch.Tensor,
    noise_variance: torch.Tensor,
    dims: torch.Tensor,
    observed_values: torch.Tensor,
    observed_index: torch.Tensor,
) -> LowRankConditional:
    """Condition every component on z_o = ``observed_values`` at ``observed_index`` (module
    docstring): capacitance matrices, posterior factor means, marginal log-likelihoods and the
    re-weighted component probabilities, all in float64, batched over components.

    Args:
        weights (K,), means (K, d0), eigenvectors (K, r_max, d0), eigenvalues (K, r_max),
        noise_variance (K,): the fitted mixture (``LowRankGaussianMixture``'s attributes).
        dims: (K,) d_k(lambda) <= stored ranks, directions used (eq. 4).
        observed_values: (d_o,) the observed coordinates' values.
        observed_index: (d_o,) int64 indices into the d0 coordinates (distinct).
    """
    d0 = means.shape[1]
    observed_index = observed_index.to(torch.long)
    if observed_values.shape != observed_index.shape:
        raise ValueError(f"observed values {tuple(observed_values.shape)} and index {tuple(observed_index.shape)} differ")
    is_obs = torch.zeros(d0, dtype=torch.bool)
    is_obs[observed_index] = True
    if int(is_obs.sum()) != observed_index.numel():
        raise ValueError("observed_index has repeated coordinates")
    unknown_index = (~is_obs).nonzero().squeeze(1)
    fac = component_factors(eigenvectors, eigenvalues, noise_variance, dims)  # (K, r, d0)
    s2 = noise_variance.double()  # (K,)
    mu = means.double()
    f_o = fac[:, :, observed_index]  # (K, r, d_o)
    r_o = observed_values.double()[None, :] - mu[:, observed_index]  # (K, d_o)
    r = fac.shape[1]
    d_o = observed_index.numel()
    eye = torch.eye(r, dtype=torch.float64)
    cap = eye + (f_o @ f_o.transpose(1, 2)) / s2[:, None, None]  # M_k (K, r, r)
    chol = torch.linalg.cholesky(cap)
    t = (f_o @ r_o[:, :, None]) / s2[:, None, None]  # F_ko r_o / s2, (K, r, 1)
    m = torch.cholesky_solve(t, chol)  # M^-1 F_ko r_o / s2
    quad = (r_o * r_o).sum(1) / s2 - (t * m).sum((1, 2))  # maha
    logdet = d_o * s2.log() + 2 * torch.diagonal(chol, dim1=1, dim2=2).log().sum(1)
    log_marginal = -0.5 * (d_o * math.log(2 * math.pi) + logdet + quad)
    joint = weights.double().log() + log_marginal
    log_weights = joint - torch.logsumexp(joint, 0)
    return LowRankConditional(
        log_weights=log_weights,
        log_marginal=log_marginal,
        factor_mean=m.squeeze(2),
        factor_chol=chol,
        means_u=mu[:, unknown_index],
        factors_u=fac[:, :, unknown_index],
        noise_variance=s2,
        observed_index=observed_index,
        unknown_index=unknown_index,
    )


def sample_conditional(
    cond: LowRankConditional, n: int, generator: torch.Generator, noise: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """n draws of (k, z_u) from the conditioned mixture: k ~ p(k | z_o), b ~ N(m_k, M_k^-1),
    z_u = c_ku + F_ku^T b (+ e_u, e_u ~ N(0, sigma_k^2 I) when ``noise``): the conditional of
    eq. 3 / 4 (module docstring). Returns (components (n,) int64, z_u (n, d_u) float64).

    The draws of one call are taken in sample order (one (n, r) normal block, then one (n, d_u)
    block when ``noise``), so a draw does not depend on how samples group by component."""
    if n < 0:
        raise ValueError(f"number of samples must be >= 0, got {n}")
    _, r, d_u = cond.factors_u.shape
    if n == 0:
        return torch.zeros(0, dtype=torch.long), torch.zeros(0, d_u, dtype=torch.float64)
    comps = torch.multinomial(cond.log_weights.exp(), n, replacement=True, generator=generator)
    eps = torch.randn(n, r, generator=generator, dtype=torch.float64)
    e_u = torch.randn(n, d_u, generator=generator, dtype=torch.float64) if noise else None
    z = torch.empty(n, d_u, dtype=torch.float64)
    for k in torch.unique(comps).tolist():
        rows = (comps == k).nonzero().squeeze(1)
        # b = m + C^-T eps has covariance C^-T C^-1 = M^-1.
        b = cond.factor_mean[k][None, :] + torch.linalg.solve_triangular(
            cond.factor_chol[k].T, eps[rows].T, upper=True
        ).T
        z[rows] = cond.means_u[k][None, :] + b @ cond.factors_u[k]
        if noise:
            z[rows] += e_u[rows] * math.sqrt(float(cond.noise_variance[k]))
    return comps, z


# --------------------------------------------------------------------------------------------
# Latent positions


def unknown_positions(mask: torch.Tensor, latent_hw: tuple[int, int], threshold: float = 0.0) -> torch.Tensor:
    """(h, w) bool: latent positions whose f x f pixel block is masked by more than ``threshold``
    (share in [0, 1); 0 = any masked pixel). ``mask`` is (R, R) with R = f h."""
    h, w = latent_hw
    R = mask.shape[-1]
    if R % w or mask.shape[-2] % h:
        raise MaskError(f"mask of {tuple(mask.shape)} pixels does not tile the {h}x{w} latent grid")
    share = F.avg_pool2d(mask[None, None].float(), (mask.shape[-2] // h, R // w))[0, 0]
    return share > threshold


def position_coordinates(positions: torch.Tensor, n_channels: int) -> torch.Tensor:
    """Indices into a flattened (q, h, w) code (channel-major, as ``LRGMM`` flattens codes) of
    every channel at the True positions of the (h, w) bool map, sorted."""
    h, w = positions.shape
    flat = positions.reshape(-1).nonzero().squeeze(1)  # y * w + x
    return (torch.arange(n_channels)[:, None] * (h * w) + flat[None, :]).reshape(-1).sort().values


# --------------------------------------------------------------------------------------------
# Completing codes


def nn_project_unknown(
    codes: torch.Tensor,
    components: torch.Tensor,
    memory: torch.Tensor,
    memory_labels: torch.Tensor,
    unknown: torch.Tensor,
    observed: torch.Tensor,
    patch_size: int = DEFAULTS["patch_size"],
    iterations: int = DEFAULTS["nn_iterations"],
    allowed: torch.Tensor | None = None,
    max_share: float | None = None,
    strict: bool = True,
    order: str = DEFAULTS["nn_order"],
) -> tuple[torch.Tensor, torch.Tensor]:
    """The NN step (eq. 5) on the unknown positions only.

    Each iteration projects every position of the current codes (whose observed positions hold
    ``observed``, so patches near the hole see the real context) and keeps the result at the
    unknown positions. ``allowed`` (indices into ``memory``) restricts the training codes that
    may be copied. ``max_share``: copy budget over the unknown positions (at most
    floor(max_share * unknown positions) of them from one training photo; ``nn_project``'s
    ``positions``; ``strict`` and ``order`` as there). Returns (codes (n, q, h, w), provenance (n, h, w) int64: index into
    ``memory`` at unknown positions, -1 at observed ones).
    """
    n = codes.shape[0]
    unk = unknown.to(torch.bool)
    pool = torch.arange(memory.shape[0]) if allowed is None else allowed.to(torch.long)
    if pool.numel() == 0:
        raise ValueError("no training code is allowed for the NN step")
    mem, lab = memory[pool], memory_labels[pool]
    obs = observed.to(memory.dtype)[None].expand(n, *observed.shape)
    z = torch.where(unk, codes.to(memory.dtype), obs)
    local = torch.zeros(n, *unk.shape, dtype=torch.long)
    for _ in range(iterations):
        proj, local = nn_project(z, components, mem, lab, patch_size=patch_size, iterations=1,
                                 max_share=max_share, positions=unk, strict=strict, order=order)
        z = torch.where(unk, proj, obs)
    provenance = torch.where(unk, pool[local], torch.full_like(local, -1))
    return z.contiguous(), provenance


@dataclass
class CodeCompletion:
    """What ``complete_codes`` returns: codes (n, q, h, w) float32 with the observed positions
    equal to the input's, the components drawn, provenance (n, h, w) (-1 observed, or None
    without the NN step), the conditioned mixture, and the unknown (h, w) map."""

    codes: torch.Tensor
    components: torch.Tensor
    provenance: torch.Tensor | None
    conditional: LowRankConditional
    unknown: torch.Tensor


def complete_codes(
    model,
    code: torch.Tensor,
    unknown: torch.Tensor,
    n: int,
    generator: torch.Generator,
    *,
    nn: bool = True,
    temperature: float | None = None,
    noise: bool = True,
    patch_size: int | None = None,
    nn_iterations: int | None = None,
    allowed: torch.Tensor | None = None,
    max_share: float | None = None,
) -> CodeCompletion:
    """n completions of one (q, h, w) code of a fitted ``LRGMM`` at the (h, w) ``unknown``
    positions: condition, draw, NN-project the unknown positions (module docstring).
    ``max_share`` (default: the model's): copy budget over the unknown positions."""
    mix = model.mixture_
    q, h, w = model.codes_.shape[1:]
    if tuple(code.shape) != (q, h, w):
        raise ValueError(f"code must have shape {(q, h, w)}, got {tuple(code.shape)}")
    unknown = unknown.to(torch.bool)
    if not bool(unknown.any()) or bool(unknown.all()):
        raise MaskError("the mask must leave some latent positions unknown and some observed")
    dims = model.sampling_ranks(temperature)
    obs_idx = position_coordinates(~unknown, q)
    flat = code.reshape(-1)
    cond = condition_low_rank(
        mix.weights_, mix.means_, mix.eigenvectors_, mix.eigenvalues_, mix.noise_variance_, dims,
        flat[obs_idx], obs_idx,
    )
    comps, z_u = sample_conditional(cond, n, generator, noise=noise)
    out = flat.to(torch.float32)[None].repeat(n, 1)
    out[:, cond.unknown_index] = z_u.to(torch.float32)
    codes = out.reshape(n, q, h, w)
    provenance = None
    if nn and n > 0:
        codes, provenance = nn_project_unknown(
            codes, comps, model.codes_, model.labels_, unknown, code,
            patch_size=model.patch_size if patch_size is None else patch_size,
            iterations=model.nn_iterations if nn_iterations is None else nn_iterations,
            allowed=allowed,
            max_share=getattr(model, "max_share", None) if max_share is None else max_share,
            strict=max_share is not None,  # the model's default budget never makes a completion fail
            order=model.nn_order,
        )
    return CodeCompletion(codes, comps, provenance, cond, unknown)


def conditional_mean_code(model, code: torch.Tensor, unknown: torch.Tensor, temperature: float | None = None) -> torch.Tensor:
    """The mean-of-component filling: E[z_u | z_o, k*] of the most probable component k*, with
    the observed positions kept; (q, h, w) float32 (a baseline: no draw, no NN step)."""
    q, h, w = model.codes_.shape[1:]
    mix = model.mixture_
    obs_idx = position_coordinates(~unknown.to(torch.bool), q)
    flat = code.reshape(-1)
    cond = condition_low_rank(
        mix.weights_, mix.means_, mix.eigenvectors_, mix.eigenvalues_, mix.noise_variance_,
        model.sampling_ranks(temperature), flat[obs_idx], obs_idx,
    )
    k = int(cond.log_weights.argmax())
    out = flat.to(torch.float32).clone()
    out[cond.unknown_index] = cond.mean(k).to(torch.float32)
    return out.reshape(q, h, w)


# --------------------------------------------------------------------------------------------
# Attribute-conditional sampling


def attribute_weights(mixture, codes: torch.Tensor) -> torch.Tensor:
    """pi'_k = mean responsibility p(k | y_i) over the labelled training codes (n, d0): the
    component weights given the labels (module docstring). (K,) float64."""
    if codes.shape[0] == 0:
        raise ValueError("no labelled training code to estimate the component weights from")
    return mixture.predict_proba(codes).mean(0)
