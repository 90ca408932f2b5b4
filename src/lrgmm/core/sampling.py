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
    spread: float = 1.0,
) -> torch.Tensor:
    """Low-rank Gaussian draws, one per entry of ``components`` (eq. 4, with the + 1/2 power).

        z = c_k + psi V_k^T diag(s_k)^(1/2) eps,   eps ~ N(0, I_{d_k})

    The paper prints diag(sqrt(s_k))^(-1) here; that is a typo (SPEC.md): the covariance of z
    must be V_k^T diag(s_k) V_k, which needs the square root of the eigenvalues. psi
    (``spread``) is 1 in the paper; psi > 1 widens every draw around its component's mean, as a
    truncation psi above 1 does in StyleGAN (``lrgmm.defaults``: why the default is 1.5).

    Args:
        means: (K, d0) c_k.
        eigenvectors: (K, r_max, d0) rows are the eigenvectors of Sigma_k, leading first.
        eigenvalues: (K, r_max) s_k, matching rows.
        dims: (K,) d_k <= r_max, how many leading directions each component samples in.
        components: (n,) the component of each draw.
        generator: source of eps.
        spread: psi, the scale of every draw's deviation from its mean (> 0).
    Returns:
        (n, d0) codes, in the dtype of ``means``.
    """
    r_max = eigenvectors.shape[1]
    # One (n, r_max) draw in sample order, so a sample's eps does not depend on how the others are
    # grouped by component; directions beyond d_k are masked out.
    eps = torch.randn(components.shape[0], r_max, generator=generator, dtype=means.dtype)
    return low_rank_from_noise(means, eigenvectors, eigenvalues, dims, components, eps, spread)


def low_rank_from_noise(
    means: torch.Tensor,
    eigenvectors: torch.Tensor,
    eigenvalues: torch.Tensor,
    dims: torch.Tensor,
    components: torch.Tensor,
    eps: torch.Tensor,
    spread: float = 1.0,
) -> torch.Tensor:
    """``sample_low_rank`` with the (n, r_max) standard normal draws given: z = c_k + psi V_k^T
    diag(s_k)^(1/2) eps[:, :d_k], psi = ``spread``. Each row depends on its own eps and
    component only."""
    r_max = eigenvectors.shape[1]
    if bool((dims > r_max).any()):
        raise ValueError(f"dims {dims.tolist()} exceed the {r_max} stored eigenvectors")
    if not spread > 0:
        raise ValueError(f"spread must be > 0, got {spread}")
    eps = eps.to(means.dtype)
    keep = torch.arange(r_max)[None, :] < dims[components][:, None]
    coef = eps * (spread * eigenvalues[components].to(means.dtype).clamp_min(0).sqrt()) * keep
    z = means[components].clone()
    for k in torch.unique(components).tolist():
        idx = (components == k).nonzero().squeeze(1)
        z[idx] += coef[idx] @ eigenvectors[k].to(means.dtype)
    return z


class NormalStream:
    """The values of one ``torch.randn(total, generator=g)`` call, handed out a piece at a time.

    Drawing n faces' noise at once needs n x r_max values in memory; drawing it batch by batch
    with one ``randn`` per batch gives other numbers whenever a batch's size is not a multiple of
    16, because torch's CPU sampler turns uniforms into normals 16 at a time (Box-Muller on
    aligned blocks of 16; a tail that is not a multiple of 16, or a call of fewer than 16
    values, is made differently). So the pieces drawn here are always multiples of 16 values,
    except the last call, which takes everything left and is never shorter than 16 unless the
    whole draw is: the concatenation is then bit-identical to the single call, whatever the
    pieces asked for. ``tests/test_sampling.py`` checks that against torch for many sizes.
    """

    _BLOCK = 16

    def __init__(self, total: int, generator: torch.Generator, dtype: torch.dtype = torch.float32):
        self.total, self.generator, self.dtype = int(total), generator, dtype
        self._drawn = 0  # values drawn from the generator so far
        self._given = 0  # values handed out so far
        self._buffer = torch.empty(0, dtype=dtype)  # drawn, not yet handed out

    def take(self, count: int) -> torch.Tensor:
        """The next ``count`` values of the stream, shape (count,)."""
        if count < 0 or self._given + count > self.total:
            raise ValueError(f"asked for {count} values with {self.total - self._given} left in the stream")
        need = self._given + count  # stream position that must have been drawn
        if need > self._drawn:
            b = self._BLOCK
            upto = -(-need // b) * b  # the next multiple of 16 at or after `need`
            if upto > self.total - b:  # too close to the end: the last call takes the rest
                upto = self.total
            fresh = torch.randn(upto - self._drawn, generator=self.generator, dtype=self.dtype)
            self._buffer = torch.cat([self._buffer, fresh])
            self._drawn = upto
        out, self._buffer = self._buffer[:count], self._buffer[count:]
        self._given += count
        return out
