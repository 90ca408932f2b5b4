"""Low-rank Gaussian mixture fitted by EM on flattened latent codes (paper section 3.2).

Regularisation (SPEC.md step 3). The codes have d0 = q*h*w dimensions (4,096 by default) and a
component sees far fewer samples than that, so its empirical covariance is singular. A full
covariance with a small floor (scikit-learn's ``reg_covar``) makes every training point
infinitely more likely under the component it started in, and EM stops where it was initialised.
This estimator is a **mixture of probabilistic PCA** (Tipping & Bishop, 1999):

    Sigma_k = V_k^T diag(s_k) V_k + sigma_k^2 (I - V_k^T V_k)

with V_k the d_k leading eigenvectors of the component's weighted scatter, s_k their eigenvalues
and sigma_k^2 the mean of the discarded eigenvalues (its maximum-likelihood value), floored at
``reg_covar``. The rank is the paper's low rank, set from the temperature lambda:

    d_k = max(1, floor(lambda * pi_k * d0))                                   (eq. 4)

capped at the n_k - 1 directions a component of n_k samples can span. So the mixture stores
exactly what eq. 4 samples from: K means, the d_k eigenvectors and eigenvalues of each component,
and one isotropic variance per component for the density (E-step, responsibilities, labels).

What EM does on real codes: at d0 = 4,096 the responsibilities are 0 or 1 to machine precision.
On 1,024 TAEF2-encoded shared faces (K = 8) no sample changes cluster after the k-means++
initialisation and EM stops after 2 iterations; EM then serves to fit each cluster's low-rank
model. The paper's scikit-learn fit behaves the same way (it stopped after 2 iterations, SPEC.md).
On well-separated synthetic mixtures EM recovers the planted partition (tests/test_mixture.py).

At large N it goes wrong (measured in reports/reproduction.md, whole training split): on 18,917
codes with K = 64 requested, EM moves codes into one broad component until it holds almost all
of them (16,618 codes in one component seen mid-fit; at the end its rank is 488 of a total 516,
i.e. pi_k ~ 0.99, and 29 components survive pruning), and the fit took 19 minutes (on a machine
shared with other jobs, load ~8 on 2 cores) because that component's M-step is a d0 x d0
eigendecomposition. The resulting model is close to one Gaussian (FID 132.6 without NN, against
105.4 at N = 1,023). Keeping the k-means partition (as at N = 1,024), tempering the E-step or
comparing components by their leading-direction density are the candidate fixes; none is in yet.

The M-step never forms a d0 x d0 matrix while a component has fewer samples than d0: the
eigenvectors come from the n_k x n_k Gram matrix of the centred, weighted samples.
Eigendecompositions and the E-step run in float64; fitted parameters are stored in float32.
"""

from __future__ import annotations

import math
import numbers
import warnings

import torch
from tqdm.auto import tqdm

from .errors import FitError
from .randomness import as_generator

# Responsibilities below this are dropped from a component's M-step: their contribution to the
# weighted mean and scatter is under float64 resolution relative to the rest.
_SUPPORT_EPS = 1e-10


def low_rank_dims(weights: torch.Tensor, n_features: int, temperature: float) -> torch.Tensor:
    """d_k = max(1, floor(lambda * pi_k * d0)) for every component (paper eq. 4 and section 4.1)."""
    _check_lambda(temperature)
    # Clamped before the cast: a float beyond int64 does not convert to a meaningful integer.
    dims = torch.floor(temperature * weights.to(torch.float64) * n_features).clamp(min=1, max=n_features)
    return dims.to(torch.long)


def _check_lambda(temperature) -> None:
    """Any finite lambda > 0 (FullGMM asks for full rank with lambda = N; ``LRGMM`` keeps it in
    (0, 1]): inf and NaN are refused, not turned into a rank."""
    if isinstance(temperature, bool) or not isinstance(temperature, numbers.Real) or not (
        math.isfinite(temperature) and temperature > 0
    ):
        raise ValueError(f"temperature (lambda) must be > 0 and finite, got {temperature}")


def _kmeans_labels(x: torch.Tensor, k: int, gen: torch.Generator, n_iter: int = 20) -> torch.Tensor:
    """k-means++ seeding followed by Lloyd iterations; returns hard labels used to start EM."""
    n = x.shape[0]
    sq = (x * x).sum(1)
    centers = [x[torch.randint(n, (1,), generator=gen)].squeeze(0)]
    d2 = (sq - 2 * x @ centers[0] + centers[0] @ centers[0]).clamp_min(0)
    for _ in range(1, k):
        probs = d2 / d2.sum() if d2.sum() > 0 else torch.full_like(d2, 1.0 / n)
        c = x[torch.multinomial(probs, 1, generator=gen)].squeeze(0)
        centers.append(c)
        d2 = torch.minimum(d2, (sq - 2 * x @ c + c @ c).clamp_min(0))
    cent = torch.stack(centers)
    labels = torch.full((n,), -1, dtype=torch.long)
    for _ in range(n_iter):
        dist = sq[:, None] - 2 * x @ cent.T + (cent * cent).sum(1)[None, :]
        new = dist.argmin(1)
        if torch.equal(new, labels):
            break
        labels = new
        counts = torch.bincount(labels, minlength=k).to(x.dtype)
        sums = torch.zeros_like(cent).index_add_(0, labels, x)
        keep = counts > 0
        cent[keep] = sums[keep] / counts[keep, None]
    return labels


class LowRankGaussianMixture:
    """Mixture of K Gaussians with low-rank-plus-isotropic covariances, fitted by EM.

    Parameters
    ----------
    n_components : int
        K.
    temperature : float
        lambda of eq. 4: component k keeps d_k = max(1, floor(lambda * pi_k * d0)) directions.
        Small values give sharper, less diverse samples.
    reg_covar : float
        Floor of the isotropic variance sigma_k^2 (codes are whitened per channel by P0, so 1.0 is
        the average per-coordinate variance of the data).
    max_iter, tol : int, float
        EM stops after ``max_iter`` iterations or when the mean log-likelihood per sample changes
        by less than ``tol``.
    random_state : int, torch.Generator or None
        Seeds the k-means++ initialisation.
    min_component_size : int
        Components that hold fewer training samples than this (by hard label) are removed during
        EM, with a warning, and their samples reassigned. A component of one sample has rank 0
        and every draw from it *is* that training code; two or three samples span a line or a
        plane through them and the NN step can only copy from them. ``n_components_`` says how
        many components remain.
    verbose : bool
        Show a progress bar over EM iterations (useful for tens of thousands of images).

    Attributes
    ----------
    weights_ : (K,) float32, pi_k.
    means_ : (K, d0) float32, c_k.
    eigenvectors_ : (K, r_max, d0) float32; rows >= ranks_[k] are zero.
    eigenvalues_ : (K, r_max) float32, s_k (descending; zero beyond the rank).
    noise_variance_ : (K,) float32, sigma_k^2.
    ranks_ : (K,) int64, d_k.
    labels_ : (N,) int64, hard label (largest responsibility) of each training sample.
    n_components_ : int, components left after removing those under ``min_component_size``.
    converged_, n_iter_, lower_bound_ : EM diagnostics (lower_bound_ is the final mean
        log-likelihood per sample).
    """

    def __init__(
        self,
        n_components: int = 8,
        temperature: float = 0.12,
        reg_covar: float = 1e-3,
        max_iter: int = 100,
        tol: float = 1e-3,
        random_state: int | torch.Generator | None = 0,
        min_component_size: int = 4,
        verbose: bool = False,
    ):
        self.n_components = n_components
        self.temperature = temperature
        self.reg_covar = reg_covar
        self.max_iter = max_iter
        self.tol = tol
        self.random_state = random_state
        self.min_component_size = min_component_size
        self.verbose = verbose

    # ------------------------------------------------------------------ fitting
    def fit(self, x: torch.Tensor) -> "LowRankGaussianMixture":
        """Fit on (N, d0) codes."""
        if x.ndim != 2:
            raise ValueError(f"codes must have shape (N, d0), got {tuple(x.shape)}")
        _check_lambda(self.temperature)
        n, d = x.shape
        k = int(self.n_components)
        if k < 1:
            raise ValueError(f"n_components must be >= 1, got {k}")
        min_size = max(2, int(self.min_component_size))
        if n < 2 or (k > 1 and n < min_size * k):
            raise FitError(
                f"{n} training codes cannot fit {k} components: each component needs at least "
                f"{min_size if k > 1 else 2} samples; use n_components <= {max(1, n // min_size)} or add images"
            )
        if not torch.isfinite(x).all():
            raise FitError("codes contain NaN or inf; re-encode the images or drop the bad ones")
        x64 = x.to(torch.float64)
        gen = as_generator(self.random_state)

        if k == 1:
            resp = torch.ones(n, 1, dtype=torch.float64)
        else:
            labels = _kmeans_labels(x64, k, gen)
            resp = torch.nn.functional.one_hot(labels, k).to(torch.float64)
            resp = resp[:, resp.sum(0) > 0]  # k-means may leave a centre without points

        self.converged_ = False
        self.n_removed_ = k - resp.shape[1]
        prev = -math.inf
        bar = tqdm(total=self.max_iter, desc="EM", unit="it", disable=not self.verbose, leave=False)
        for it in range(1, self.max_iter + 1):
            params = self._m_step(x64, resp)
            log_prob = self._estimate_weighted_log_prob(x64, *params)
            log_prob, pruned = self._drop_small(log_prob, min_size)
            log_norm = torch.logsumexp(log_prob, 1)
            resp = (log_prob - log_norm[:, None]).exp()
            bound = float(log_norm.mean())
            self.n_iter_ = it
            bar.update(1)
            bar.set_postfix(loglik=f"{bound:.2f}", K=resp.shape[1])
            if not pruned and (resp.shape[1] == 1 or abs(bound - prev) < self.tol):
                self.converged_ = True
                break
            prev = -math.inf if pruned else bound
        bar.close()
        if not self.converged_:
            warnings.warn(
                f"EM did not converge in {self.max_iter} iterations (last change "
                f"{abs(bound - prev):.3g} >= tol {self.tol}); raise max_iter or tol",
                RuntimeWarning,
                stacklevel=2,
            )
        # Final M-step so the stored parameters match the final responsibilities; the hard labels
        # of the new parameters must still leave every component min_size samples.
        while True:
            params = self._m_step(x64, resp)
            log_prob, pruned = self._drop_small(self._estimate_weighted_log_prob(x64, *params), min_size)
            if not pruned:
                break
            resp = (log_prob - torch.logsumexp(log_prob, 1, keepdim=True)).exp()
        if self.n_removed_:
            warnings.warn(
                f"{self.n_removed_} of {k} mixture components held fewer than {min_size} training "
                f"images and were removed (K = {resp.shape[1]}); ask for fewer components to avoid this",
                UserWarning,
                stacklevel=2,
            )
        weights, means, vecs, vals, noise, ranks = params
        self.weights_ = weights.to(torch.float32)
        self.means_ = means.to(torch.float32)
        self.eigenvectors_ = vecs.to(torch.float32)
        self.eigenvalues_ = vals.to(torch.float32)
        self.noise_variance_ = noise.to(torch.float32)
        self.ranks_ = ranks
        self.lower_bound_ = bound
        self.labels_ = self.predict(x)
        self.n_components_ = int(weights.shape[0])
        self.n_features_in_ = d
        return self

    def _drop_small(self, log_prob: torch.Tensor, min_size: int) -> tuple[torch.Tensor, bool]:
        """Remove the components whose hard-label count is below ``min_size`` (never all)."""
        counts = torch.bincount(log_prob.argmax(1), minlength=log_prob.shape[1])
        small = counts < min_size
        if not bool(small.any()) or bool(small.all()):
            return log_prob, False
        self.n_removed_ += int(small.sum())
        return log_prob[:, ~small], True

    def _m_step(self, x: torch.Tensor, resp: torch.Tensor):
        n, d = x.shape
        nk = resp.sum(0) + 10 * torch.finfo(torch.float64).eps
        weights = nk / nk.sum()
        dims = low_rank_dims(weights, d, self.temperature)
        comps = []
        for k in range(resp.shape[1]):
            r = resp[:, k]
            support = r > _SUPPORT_EPS * r.max()
            xs, rs = x[support], r[support]
            mean = (rs[:, None] * xs).sum(0) / rs.sum()
            xc = (xs - mean) * (rs / rs.sum()).sqrt()[:, None]
            total_var = float((xc * xc).sum())
            rank = int(min(dims[k], max(xs.shape[0] - 1, 0)))
            vals, vecs = _top_eigen(xc, rank)
            noise = max((total_var - float(vals.sum())) / max(d - rank, 1), self.reg_covar)
            comps.append((mean, vecs, vals.clamp_min(noise), noise, rank))
        r_max = max(max(c[4] for c in comps), 1)
        K = len(comps)
        means = torch.stack([c[0] for c in comps])
        vecs = torch.zeros(K, r_max, d, dtype=torch.float64)
        vals = torch.zeros(K, r_max, dtype=torch.float64)
        for k, (_, v, s, _, rank) in enumerate(comps):
            vecs[k, :rank] = v
            vals[k, :rank] = s
        noise = torch.tensor([c[3] for c in comps], dtype=torch.float64)
        ranks = torch.tensor([c[4] for c in comps], dtype=torch.long)
        return weights, means, vecs, vals, noise, ranks

    # ---------------------------------------------------------------- densities
    @staticmethod
    def _estimate_weighted_log_prob(x, weights, means, vecs, vals, noise, ranks):
        """log pi_k + log N(x | c_k, Sigma_k) for every sample and component, (N, K).

        With Sigma_k = V^T diag(s) V + sigma^2 (I - V^T V) (V orthonormal rows), Woodbury gives
        (x-c)^T Sigma^-1 (x-c) = sum_j <v_j, x-c>^2 / s_j + (|x-c|^2 - sum_j <v_j, x-c>^2) / sigma^2.
        Both terms come from products with x (one GEMM against every component's eigenvectors),
        never from an N x d0 difference per component; float64 keeps the expansion
        |x-c|^2 = |x|^2 - 2<x, c> + |c|^2 accurate.
        """
        n, d = x.shape
        K = means.shape[0]
        keep = torch.arange(vecs.shape[1])[None, :] < ranks[:, None]  # (K, r_max)
        v_all = vecs[keep]  # (sum_k d_k, d0), component by component
        proj_all = x @ v_all.T - (means[:, None, :] * vecs).sum(-1)[keep][None, :]  # <v_j, x - c_k>
        sq = (x * x).sum(1)[:, None] - 2 * x @ means.T + (means * means).sum(1)[None, :]  # (N, K)
        out = torch.empty(n, K, dtype=torch.float64)
        offsets = torch.cat([torch.zeros(1, dtype=torch.long), ranks.cumsum(0)]).tolist()
        for k in range(K):
            r = int(ranks[k])
            proj = proj_all[:, offsets[k] : offsets[k + 1]]
            s = vals[k, :r]
            p2 = proj * proj
            maha = (p2 / s).sum(1) + (sq[:, k] - p2.sum(1)).clamp_min(0) / noise[k]
            logdet = s.log().sum() + (d - r) * math.log(float(noise[k]))
            out[:, k] = weights[k].log() - 0.5 * (d * math.log(2 * math.pi) + logdet + maha)
        return out

    def _params64(self):
        return (
            self.weights_.double(),
            self.means_.double(),
            self.eigenvectors_.double(),
            self.eigenvalues_.double(),
            self.noise_variance_.double(),
            self.ranks_,
        )

    def _check_x(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 2 or x.shape[1] != self.means_.shape[1]:
            raise ValueError(f"expected codes of shape (n, {self.means_.shape[1]}), got {tuple(x.shape)}")
        return x.to(torch.float64)

    def score_samples(self, x: torch.Tensor) -> torch.Tensor:
        """log p(x) under the mixture, (n,) float64."""
        return torch.logsumexp(self._estimate_weighted_log_prob(self._check_x(x), *self._params64()), 1)

    def predict_proba(self, x: torch.Tensor) -> torch.Tensor:
        """Responsibilities, (n, K) float64."""
        lp = self._estimate_weighted_log_prob(self._check_x(x), *self._params64())
        return (lp - torch.logsumexp(lp, 1, keepdim=True)).exp()

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Hard labels (largest responsibility), (n,) int64."""
        return self._estimate_weighted_log_prob(self._check_x(x), *self._params64()).argmax(1)

    def covariance(self, k: int) -> torch.Tensor:
        """The dense d0 x d0 covariance Sigma_k (float64). For tests and inspection only."""
        r = int(self.ranks_[k])
        v = self.eigenvectors_[k, :r].double()
        s = self.eigenvalues_[k, :r].double()
        noise = float(self.noise_variance_[k])
        d = v.shape[1]
        return v.T @ torch.diag(s - noise) @ v + noise * torch.eye(d, dtype=torch.float64)

    def n_parameters(self) -> int:
        """K weights + K means + sum_k d_k eigenvectors and eigenvalues + K noise variances."""
        K, d = self.means_.shape
        r = int(self.ranks_.sum())
        return K + K * d + r * (d + 1) + K


def _top_eigen(xc: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top ``rank`` eigenpairs of the scatter xc^T xc, from whichever of xc^T xc (d x d) or
    xc xc^T (m x m, the Gram matrix) is smaller. Returns (values (rank,), vectors (rank, d))."""
    m, d = xc.shape
    if rank == 0:
        return torch.zeros(0, dtype=xc.dtype), torch.zeros(0, d, dtype=xc.dtype)
    if m < d:
        vals, a = torch.linalg.eigh(xc @ xc.T)
        vals, a = vals.flip(0)[:rank], a.flip(1)[:, :rank]
        vals = vals.clamp_min(0)
        # u_j = xc^T a_j / sqrt(lambda_j); renormalise to absorb rounding.
        vecs = (xc.T @ a).T
        vecs = vecs / vecs.norm(dim=1, keepdim=True).clamp_min(1e-300)
    else:
        vals, u = torch.linalg.eigh(xc.T @ xc)
        vals, vecs = vals.flip(0)[:rank].clamp_min(0), u.flip(1)[:, :rank].T
    return vals, vecs.contiguous()
