"""Low-rank sampling from the latent mixture (paper eq. 3 and 4).

Pure functions over tensors: the fitted parameters come in as arguments and randomness comes
from an injectable ``torch.Generator``, so every step can be reused, tested and seeded alone.
"""

from __future__ import annotations

import torch


def sample_components(weights: torch.Tensor, n: int, generator: torch.Generator) -> torch.Tensor:
    """Draw n component indices k ~ Multinomial(pi) (step 1 of the sampling of section 3.2)."""
    if n < 0:
        raise ValueError(f"number of samples must be >= 0, got {n}")
    if n == 0:
        return torch.zeros(0, dtype=torch.long)
    return torch.multinomial(weights.to(torch.float64), n, replacement=True, generator=generator)


def sample_low_rank(
    means: torch.Tensor,
    eigenvectors: torch.Tensor,
    eigenvalues: torch.Tensor,
    dims: torch.Tensor,
    components: torch.Tensor,
    generator: torch.Generator,
) -> torch.Tensor:
    """Low-rank Gaussian draws, one per entry of ``components`` (eq. 4, with the + 1/2 power).

        z = c_k + V_k^T diag(s_k)^(1/2) eps,   eps ~ N(0, I_{d_k})

    The paper prints diag(sqrt(s_k))^(-1) here; that is a typo (SPEC.md): the covariance of z
    must be V_k^T diag(s_k) V_k, which needs the square root of the eigenvalues.

    Args:
        means: (K, d0) c_k.
        eigenvectors: (K, r_max, d0) rows are the eigenvectors of Sigma_k, leading first.
        eigenvalues: (K, r_max) s_k, matching rows.
        dims: (K,) d_k <= r_max, how many leading directions each component samples in.
        components: (n,) the component of each draw.
        generator: source of eps.
    Returns:
        (n, d0) codes, in the dtype of ``means``.
    """
    n = components.shape[0]
    r_max = eigenvectors.shape[1]
    if bool((dims > r_max).any()):
        raise ValueError(f"dims {dims.tolist()} exceed the {r_max} stored eigenvectors")
    # One (n, r_max) draw in sample order, so a sample's eps does not depend on how the others are
    # grouped by component; directions beyond d_k are masked out.
    eps = torch.randn(n, r_max, generator=generator, dtype=means.dtype)
    keep = torch.arange(r_max)[None, :] < dims[components][:, None]
    coef = eps * eigenvalues[components].to(means.dtype).clamp_min(0).sqrt() * keep
    z = means[components].clone()
    for k in torch.unique(components).tolist():
        idx = (components == k).nonzero().squeeze(1)
        z[idx] += coef[idx] @ eigenvectors[k].to(means.dtype)
    return z
