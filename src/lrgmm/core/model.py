"""LR-GMM-NN on autoencoder latents: projector P0, low-rank mixture, NN memory (section 3).

``LRGMM`` is the generative model proper. It knows nothing about images or autoencoders: it is
fitted on latents y_i = E(x_i) of shape (N, c, h, w) and samples latents of the same shape, with
the component each sample came from and its provenance map. ``lrgmm.pipeline`` ties it to an
autoencoder and to image files.
"""

from __future__ import annotations

import inspect
import math
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from ..defaults import DEFAULTS
from ..errors import FitError, NotFittedError, ParameterError
from ..limits import SAMPLE_BATCH_SIZE, check_n_samples, check_nn_iterations
from .mixture import LowRankGaussianMixture, low_rank_dims
from .nn_projection import check_budget_feasible, check_max_share, check_nn_order, nn_project, smallest_feasible_share
from .projector import PixelPCA
from .randomness import as_generator
from .sampling import NormalStream, low_rank_from_noise, sample_components


MAX_DEFAULT_COMPONENTS = 128


def default_n_components(n_images: int) -> int:
    """K from the training-set size, after the paper: K = 1 for N <= 32 (fig. 1), 8 for N ~ 1k
    (section 4.1): one component per 128 images, rounded, in [1, 128]. Rounding, not flooring, so
    1,023 distinct photos of a 1,024 set still get 8. The paper stops at 64 for its 28k set; on
    the whole 18,917-face split (3 seeds x 1,000 faces against 2,000 held-out photos) K = 128
    scored FID 38.7 +- 0.6 and KID x 1e3 19.6 +- 0.6 against 40.5 +- 0.6 and 21.0 +- 0.6 at K = 64
    (both beyond twice the sd of the difference; near copies 3.1 % and 2.7 %) and 43.8 at K = 32
    (reports/whole_split/picture_rank_q.md), so the cap is 128."""
    return int(min(MAX_DEFAULT_COMPONENTS, max(1, round(n_images / 128))))


def check_temperature(value, name: str = "temperature (lambda)") -> float:
    """``value`` as a float when it is a finite number in (0, 1], else ValueError.

    lambda sets d_k = floor(lambda pi_k d0), so lambda = 1 already gives d0 directions in total;
    inf or 1e308 overflowed the int64 rank (to rank 1, silently) and wrote ``Infinity`` into
    the model's JSON. The mixture alone (``LowRankGaussianMixture``) accepts any finite lambda
    > 0: the full-rank GMM baseline uses lambda = N to keep every direction."""
    return _check_number(value, name, lambda t: 0 < t <= 1, "a number in (0, 1]", "> 0 and <= 1 (a finite number)")


def check_spread(value, name: str = "spread (psi)") -> float:
    """``value`` as a float when it is a finite number > 0, else ``ParameterError``."""
    return _check_number(value, name, lambda t: t > 0, "a number > 0", "> 0 (a finite number; 1 is the paper's eq. 4)")


def _check_number(value, name: str, ok, kind: str, bounds: str) -> float:
    """``value`` as a float when it is a finite number (not a bool) for which ``ok`` holds, else a
    ``ParameterError`` naming ``kind`` (not a number) or ``bounds`` (out of range)."""
    try:
        t = float(value)
    except (TypeError, ValueError):
        raise ParameterError(f"{name} must be {kind}, got {value!r}") from None
    if isinstance(value, bool) or not (math.isfinite(t) and ok(t)):
        raise ParameterError(f"{name} must be {bounds}, got {value}")
    return t


def resolve_spread(model_spread: float, spread: float | None, nn: bool) -> float:
    """The psi a draw uses: ``spread`` when given, else the model's with the NN step and 1 (the
    fitted density) without it. A psi above 1 widens the draws that the NN step then pulls back to
    training pixels; decoded as they are, wider draws only leave the density."""
    if spread is not None:
        return spread
    return model_spread if nn else 1.0


@dataclass
class LatentSamples:
    """What ``LRGMM.sample`` returns.

    latents: (n, c, h, w) float32, ready for the decoder: the copied training latent pixels where
        the NN step ran, P0*(codes) elsewhere (``LRGMM.decoder_latents``).
    codes: (n, q, h, w) float32, the projected codes z (after the NN step when it ran).
    components: (n,) int64, the mixture component k each sample was drawn from.
    provenance: (n, h, w) int64 index of the training image each latent pixel was copied from,
        or None when the NN step was skipped (the paper's plain "LR-GMM").
    """

    latents: torch.Tensor
    codes: torch.Tensor
    components: torch.Tensor
    provenance: torch.Tensor | None


class LRGMM:
    """Low-rank Gaussian mixture latent model with nearest-neighbour refinement.

    Parameters
    ----------
    n_channels : int or None
        q, projector channels per latent pixel (eq. 1). None: min(16, c), the measured starting
        point for 32-channel TAEF2 latents (SPEC.md; the paper's q=8 suited a 256-channel VQGAN).
    n_components : int or None
        K. None: ``default_n_components(N)``.
    temperature : float or None
        lambda of eq. 4 (d_k = max(1, floor(lambda pi_k d0))): low = sharper, high = more diverse.
        Default 1 (``lrgmm.defaults``). None: ``default_temperature(K)``, the earlier rule (the
        paper's 0.12 up to K = 8, 0.12 K / 8 above, capped at 1; ``lrgmm.core.mixture``). The
        fitted model stores the eigenvectors for the lambda it used (``temperature_``); ``sample``
        can use a lower one.
    spread : float
        psi, the scale of every draw's deviation from its component's mean (z = c_k + psi V_k^T
        diag(s_k)^(1/2) eps; ``lrgmm.core.sampling``), the default of ``sample`` for draws that go
        through the NN step; draws decoded without it use psi = 1, the fitted density, unless
        asked (``resolve_spread``). 1 is the paper's eq. 4 (``lrgmm.defaults``: the default).
    patch_size : int
        omega of eq. 6 (odd).
    nn_iterations : int
        Number of NN projections at sampling time (the paper uses 1).
    nn_order : {"parallel", "raster"}
        How one NN projection visits the positions: "parallel" is eq. 5 as printed (every
        position from the same input); "raster" takes them one by one, each patch read from the
        face as it stands (``lrgmm.core.nn_projection``, "Order").
    max_share : float or None
        Copy budget, the default of ``sample``: no generated face takes more than
        floor(max_share * h * w) of its latent pixels from any one training photo
        (``lrgmm.core.nn_projection``, "Copy budget"). None: no budget (the paper's NN step).
    density_rank, reg_covar, max_iter, tol, n_init, min_component_size : EM settings of
        ``LowRankGaussianMixture`` (``density_rank``: the rank of every component's density during
        EM, independent of its weight; eq. 4's d_k is used for sampling only).
    random_state : int, torch.Generator or None
        Seeds the EM initialisation, and sampling when ``sample`` gets no seed.
    verbose : bool
        Progress bar over EM iterations.

    Attributes
    ----------
    projector_ : fitted ``PixelPCA``.
    mixture_ : fitted ``LowRankGaussianMixture``.
    codes_ : (N, q, h, w) float32 training codes P0(y_i), the NN memory.
    latents_ : (N, c, h, w) float32 training latents y_i (the tensor given to ``fit``, not copied):
        the pixels the NN step copies reach the decoder from here (``decoder_latents``); None
        for a model read from a format 2 file.
    labels_ : (N,) int64 hard cluster of each training code.
    n_components_ : int, the K actually fitted.
    temperature_ : float, the lambda of eq. 4 the sampling ranks were taken at.
    """

    def __init__(
        self,
        n_channels: int | None = DEFAULTS["n_channels"],
        n_components: int | None = DEFAULTS["n_components"],
        temperature: float | None = DEFAULTS["temperature"],
        spread: float = DEFAULTS["spread"],
        patch_size: int = DEFAULTS["patch_size"],
        nn_iterations: int = DEFAULTS["nn_iterations"],
        nn_order: str = DEFAULTS["nn_order"],
        max_share: float | None = DEFAULTS["max_share"],
        density_rank: int = DEFAULTS["density_rank"],
        reg_covar: float = DEFAULTS["reg_covar"],
        max_iter: int = DEFAULTS["max_iter"],
        tol: float = DEFAULTS["tol"],
        n_init: int = DEFAULTS["n_init"],
        random_state: int | torch.Generator | None = DEFAULTS["random_state"],
        min_component_size: int = DEFAULTS["min_component_size"],
        verbose: bool = False,
    ):
        self.n_channels = n_channels
        self.n_components = n_components
        self.temperature = temperature
        self.spread = spread
        self.patch_size = patch_size
        self.nn_iterations = nn_iterations
        self.nn_order = nn_order
        self.max_share = max_share
        self.density_rank = density_rank
        self.reg_covar = reg_covar
        self.max_iter = max_iter
        self.tol = tol
        self.n_init = n_init
        self.random_state = random_state
        self.min_component_size = min_component_size
        self.verbose = verbose

    def get_params(self) -> dict:
        """Constructor parameters, as scikit-learn estimators expose them."""
        return {name: getattr(self, name) for name in inspect.signature(type(self).__init__).parameters if name != "self"}

    # ------------------------------------------------------------------ fitting
    def fit(self, latents: torch.Tensor) -> "LRGMM":
        """Fit P0 on all latent pixels, then the mixture on the N flattened codes."""
        if latents.ndim != 4:
            raise ValueError(f"latents must have shape (N, c, h, w), got {tuple(latents.shape)}")
        if self.temperature is not None:
            check_temperature(self.temperature)
        check_spread(self.spread)
        check_max_share(self.max_share)
        check_nn_order(self.nn_order)
        n, c = latents.shape[:2]
        if n < 2:
            raise FitError(f"need at least 2 training images, got {n}")
        if not torch.isfinite(latents).all():
            bad = (~torch.isfinite(latents.reshape(n, -1))).any(1).nonzero().squeeze(1).tolist()
            raise FitError(f"latents of training images {bad[:10]} contain NaN or inf; drop or re-encode them")
        if self.patch_size % 2 != 1 or self.patch_size < 1:
            raise ParameterError(f"patch_size (omega) must be a positive odd integer, got {self.patch_size}")
        q = self.n_channels if self.n_channels is not None else min(16, c)
        k = self.n_components if self.n_components is not None else default_n_components(n)
        latents = latents.to(torch.float32)
        self.projector_ = PixelPCA(n_channels=q).fit(latents)
        self.codes_ = self.projector_.transform(latents)
        self.latents_ = latents  # the NN step's source pixels, all c channels (``decoder_latents``)
        # Every mixture parameter is an LRGMM parameter of the same name (K resolved above).
        shared = inspect.signature(LowRankGaussianMixture.__init__).parameters.keys() - {"self", "n_components"}
        self.mixture_ = LowRankGaussianMixture(n_components=k, **{p: getattr(self, p) for p in shared}).fit(
            self.codes_.reshape(n, -1))
        self.labels_ = self.mixture_.labels_
        self.n_components_ = self.mixture_.n_components_
        self.temperature_ = self.mixture_.temperature_
        return self

    # ----------------------------------------------------------------- sampling
    def sample(
        self,
        n: int,
        seed: int | torch.Generator | None = None,
        *,
        nn: bool = True,
        temperature: float | None = None,
        nn_iterations: int | None = None,
        patch_size: int | None = None,
        max_share: float | None = None,
        nn_order: str | None = None,
        weights: torch.Tensor | None = None,
        allowed: torch.Tensor | None = None,
        spread: float | None = None,
    ) -> LatentSamples:
        """Draw n latents: component k ~ pi, low-rank Gaussian code (eq. 4), NN projection (eq. 5).

        ``seed`` (int or generator) makes the draw reproducible; None draws fresh entropy
        (``lrgmm.core.randomness``: ``random_state`` seeds the fit only). ``nn=False`` skips the NN step (the paper's "LR-GMM").
        ``temperature`` may lower lambda below the fitted one (fewer directions per component);
        a higher value is capped at the stored rank, with a warning: refit to raise it.
        ``spread`` is psi, the scale of each draw around its component's mean
        (``lrgmm.core.sampling``); default: the model's with the NN step, 1 without it
        (``resolve_spread``).
        n is at most ``lrgmm.limits.MAX_SAMPLES`` and ``nn_iterations`` at most
        ``MAX_NN_ITERATIONS``; for many faces use ``iter_samples``, which gives the same draws
        batch by batch.
        ``max_share`` (default: the model's ``max_share``) is the copy budget of the NN step: no
        face takes more than floor(max_share * h * w) latent pixels from one training photo; 1
        turns a model's default budget off. A budget asked for here below ``min_max_share()``
        cannot be met by the smallest cluster and raises ``BudgetError`` before anything is drawn;
        the model's own default is met where it can be and is the even split elsewhere.
        ``nn_order`` (default: the model's) is "parallel" or "raster" (``lrgmm.core.nn_projection``).
        ``weights`` replaces the mixture weights pi (e.g. ``lrgmm.core.conditioning.attribute_weights``)
        and ``allowed`` (training indices) restricts what the NN step copies from, each draw from
        the allowed codes of its own cluster (all allowed codes when its cluster has none);
        provenance indexes the full training list either way.
        """
        batches = list(self.iter_samples(n, seed, batch_size=max(1, n), nn=nn, temperature=temperature,
                                         nn_iterations=nn_iterations, patch_size=patch_size, max_share=max_share,
                                         nn_order=nn_order, weights=weights, allowed=allowed, spread=spread))
        if batches:
            return batches[0]
        q, h, w = self.codes_.shape[1:]
        codes = torch.zeros(0, q, h, w, dtype=self.codes_.dtype)
        provenance = torch.zeros(0, h, w, dtype=torch.long) if nn else None
        return LatentSamples(self.decoder_latents(codes, provenance), codes, torch.zeros(0, dtype=torch.long), provenance)

    def iter_samples(
        self,
        n: int,
        seed: int | torch.Generator | None = None,
        *,
        batch_size: int = SAMPLE_BATCH_SIZE,
        nn: bool = True,
        temperature: float | None = None,
        nn_iterations: int | None = None,
        patch_size: int | None = None,
        max_share: float | None = None,
        weights: torch.Tensor | None = None,
        allowed: torch.Tensor | None = None,
        nn_order: str | None = None,
        spread: float | None = None,
    ) -> Iterator[LatentSamples]:
        """``sample`` in batches of ``batch_size``: memory does not grow with n.

        The faces do not depend on the batch size. The random stream is consumed as ``sample``
        consumes it, all n component draws first (n int64 values, 8 MB at the 1,000,000 limit),
        then the noise of every face in order, handed out batch by batch by ``NormalStream``:
        every face gets the component and noise it gets from ``sample(n, seed)`` (as there, the
        faces of a seed depend on n: the component draws come first). What can differ is rounding:
        BLAS rounds a matrix product of a few rows differently from a large one, and the faces
        of one component in a batch share one product, so without the NN step codes may differ
        from a one-batch draw by ~1e-6; the NN step replaces every latent pixel by a copied
        training pixel, and the batches concatenated were bit-identical to ``sample`` in every
        test (a different copy needs two training patches at the same distance to ~1e-6).
        Options are checked here, before the first batch.

        ``weights`` replaces the mixture weights pi (attribute sampling) and ``allowed`` (training
        indices) restricts what the NN step copies from; provenance indexes the full training
        list either way. ``max_share`` (copy budget, see ``sample``) is checked against the
        clusters that can be drawn, within ``allowed``, before anything is drawn.
        """
        self.check_is_fitted()
        n = check_n_samples(n)
        if batch_size < 1:
            raise ParameterError(f"batch_size must be >= 1, got {batch_size}")
        iterations = self.nn_iterations if nn_iterations is None else nn_iterations
        omega = self.patch_size if patch_size is None else patch_size
        share = check_max_share(self.max_share if max_share is None else max_share)
        order = check_nn_order(self.nn_order if nn_order is None else nn_order)
        psi = check_spread(resolve_spread(self.spread, spread, nn))
        if nn:  # the NN step's options, checked before anything is drawn
            check_nn_iterations(iterations)
            if isinstance(omega, bool) or int(omega) != omega or omega < 1 or omega % 2 != 1:
                raise ParameterError(f"patch_size (omega) must be a positive odd integer, got {omega}")
        dims = self.sampling_ranks(temperature)
        mix = self.mixture_
        memory, labels = self.codes_, self.labels_
        if allowed is not None:
            allowed = allowed.to(torch.long)
            if allowed.numel() == 0:
                raise ValueError("no training code is allowed for the NN step")
            memory, labels = memory[allowed], labels[allowed]
        # An explicit budget the clusters cannot meet is refused whatever the seed; the model's own
        # default is met where it can be (``nn_project``'s strict=False).
        strict = max_share is not None
        if nn and share is not None and strict:
            h, w = self.codes_.shape[2:]
            where = "the smallest cluster that can be drawn" + (" (of the allowed faces)" if allowed is not None else "")
            check_budget_feasible(share, self._smallest_cluster(weights, allowed), h * w, where)
        gen = as_generator(seed)
        comps = sample_components(mix.weights_ if weights is None else weights, n, gen)
        noise = NormalStream(n * mix.eigenvectors_.shape[1], gen, mix.means_.dtype)
        return self._batches(n, batch_size, comps, noise, dims, nn, memory, labels, allowed, omega, iterations, share,
                             order, strict, psi)

    def min_max_share(self, weights: torch.Tensor | None = None, allowed: torch.Tensor | None = None) -> float:
        """The smallest copy budget (``max_share``) that every cluster that can be drawn can meet:
        ceil(h w / m) / (h w) for the smallest such cluster, of m training photos (``weights``
        and ``allowed`` as in ``iter_samples``)."""
        self.check_is_fitted()
        h, w = self.codes_.shape[2:]
        return smallest_feasible_share(self._smallest_cluster(weights, allowed), h * w)

    def _smallest_cluster(self, weights=None, allowed=None) -> int:
        """Training photos in the smallest NN memory a draw can use: the cluster of a component
        of weight > 0 (components of weight 0 are never drawn), within ``allowed`` when given; a
        cluster with none falls back to the whole memory, as ``nn_project`` does."""
        labels = self.labels_ if allowed is None else self.labels_[allowed.to(torch.long)]
        pi = self.mixture_.weights_ if weights is None else torch.as_tensor(weights)
        counts = torch.bincount(labels, minlength=pi.shape[0])[: pi.shape[0]]
        counts = torch.where(counts > 0, counts, torch.full_like(counts, labels.numel()))
        drawn = counts[pi > 0]
        return int(drawn.min()) if drawn.numel() else int(labels.numel())

    def _batches(self, n, batch_size, comps, noise, dims, nn, memory, labels, allowed, omega, iterations, share=None,
                 order="parallel", strict=True, spread=1.0):
        mix = self.mixture_
        q, h, w = self.codes_.shape[1:]
        r_max = mix.eigenvectors_.shape[1]
        for start in range(0, n, batch_size):
            c = comps[start : start + batch_size]
            eps = noise.take(c.shape[0] * r_max).reshape(-1, r_max)
            codes = low_rank_from_noise(mix.means_, mix.eigenvectors_, mix.eigenvalues_, dims, c, eps,
                                        spread).reshape(-1, q, h, w)
            provenance = None
            if nn:
                codes, provenance = nn_project(codes, c, memory, labels, patch_size=omega, iterations=iterations,
                                               max_share=share, order=order, strict=strict)
                if allowed is not None:
                    provenance = allowed[provenance]
            yield LatentSamples(self.decoder_latents(codes, provenance), codes, c, provenance)

    def decoder_latents(self, codes: torch.Tensor, provenance: torch.Tensor | None = None) -> torch.Tensor:
        """The decoder's input for codes (n, q, h, w): P0*(codes), except at the positions the NN
        step filled (``provenance`` >= 0, an index into the training list), which take that
        training photo's own latent pixel, all c channels.

        Eq. 5 chooses the source on the rank-q codes; copying the source's full latent pixel rather
        than its projection P0*(y_j(p)) gives the decoder exactly a training latent pixel. The q = 16
        channels keep about 84 % of the TAEF2 latent variance; the rest is what the decoder needs
        for detail. At N = 1,023 (1,000 faces x 3 seeds against 2,000 held-out photos) the default
        went from FID 46.7 +- 0.8 (reports/picture_rank_q.md) to 39.6 +- 0.8, recall 0.09 -> 0.19,
        near copies 2.5 % (reports/picture.md); the same draws decoded both ways (one seed): FID
        46.6 -> 39.5. A model loaded from a file without the training latents (format 2 and
        older) decodes P0*(codes) everywhere.
        """
        out = self.projector_.inverse_transform(codes)
        source = self.latents_
        if provenance is None or source is None or provenance.numel() == 0:
            return out
        n, h, w = provenance.shape
        rows = torch.arange(h).repeat_interleave(w)
        cols = torch.arange(w).repeat(h)
        # (n, hw, c) without a reordered copy of the whole memory
        picked = source[provenance.reshape(n, h * w).clamp_min(0), :, rows, cols]
        full = picked.permute(0, 2, 1).reshape(n, -1, h, w).to(out.dtype)
        return torch.where((provenance >= 0)[:, None], full, out)

    def training_latents(self, rows: torch.Tensor) -> torch.Tensor:
        """The decoder input that reconstructs training photos ``rows``: their own latents, or
        P0*(their codes) for a model read from a file without them (format 2)."""
        if self.latents_ is not None:
            return self.latents_[rows]
        return self.projector_.inverse_transform(self.codes_[rows])

    def sampling_ranks(self, temperature: float | None = None) -> torch.Tensor:
        """(K,) d_k(lambda) of eq. 4 at ``temperature`` (None: the fitted lambda), capped at the
        stored ranks (with a warning when a higher lambda asks for more)."""
        mix = self.mixture_
        if temperature is None:
            return mix.ranks_
        temperature = check_temperature(temperature)
        if temperature == self.temperature_:
            return mix.ranks_
        dims = low_rank_dims(mix.weights_, mix.means_.shape[1], temperature)
        if bool((dims > mix.ranks_).any()) and temperature > self.temperature_:
            warnings.warn(
                f"temperature {temperature} > fitted {self.temperature_}: using the stored "
                f"{mix.ranks_.tolist()} directions; refit with temperature={temperature} to use more",
                UserWarning,
                stacklevel=3,
            )
        return torch.minimum(dims, mix.ranks_)

    def check_is_fitted(self) -> None:
        """Raise ``NotFittedError`` unless ``fit`` has run."""
        if not hasattr(self, "mixture_"):
            raise NotFittedError("this LRGMM is not fitted yet: call fit(latents) first")

    # ------------------------------------------------------------------- sizes
    def parameter_counts(self) -> dict[str, int]:
        """Values stored per part, as in the paper's appendix 3: the projector, the mixture, and
        the NN memory (N training codes of d0 values, plus their labels)."""
        self.check_is_fitted()
        return {
            "projector": self.projector_.n_parameters(),
            "mixture": self.mixture_.n_parameters(),
            "nn_memory": int(self.codes_.numel()),
        }
