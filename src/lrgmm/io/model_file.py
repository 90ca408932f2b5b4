"""The ``.lrgmm`` model file: one safetensors file, tensors plus JSON metadata, never a pickle.

Layout (format version 2; version 1 files, written before the density rank was separate from
eq. 4's rank, still load: their density ranks are their sampling ranks, as they were fitted):

    tensors
        projector.mean (c,) float64, projector.components (q, c) float64,
        projector.eigenvalues (q,) float64
        mixture.weights (K,), mixture.means (K, d0), mixture.eigenvectors (K, r_max, d0),
        mixture.eigenvalues (K, r_max), mixture.noise_variance (K,) float32; mixture.ranks (K,) int64
        (eq. 4's sampling ranks), mixture.density_ranks (K,) int64, mixture.counts (K,) int64
        memory.codes (N, q, h, w) float32, memory.labels (N,) int64
    metadata["lrgmm"]: JSON with format, format_version, lrgmm_version, autoencoder (name, id,
        weights_sha256), resolution, latent_shape, hyperparameters, fit diagnostics,
        training_files [{path, sha256}], sizes and parameter counts.

Writes go to a temporary file in the destination folder, then ``os.replace``: a crash leaves the
previous file (or nothing), never half a model.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..errors import ModelFileError
from ..mixture import LowRankGaussianMixture
from ..model import LRGMM
from ..projector import PixelPCA
from .tensor_file import TensorFileFormat

FORMAT_NAME = "lrgmm-model"
FORMAT_VERSION = 2
_METADATA_KEY = "lrgmm"
MODEL_FORMAT = TensorFileFormat(
    FORMAT_NAME, FORMAT_VERSION, _METADATA_KEY, what="model", noun="lrgmm model file", error=ModelFileError,
    create_hint="create one with `lrgmm fit FOLDER -o {path}`", redo_hint="refit it with `lrgmm fit`",
)


TENSOR_NAMES = (
    "projector.mean",
    "projector.components",
    "projector.eigenvalues",
    "mixture.weights",
    "mixture.means",
    "mixture.eigenvectors",
    "mixture.eigenvalues",
    "mixture.noise_variance",
    "mixture.ranks",
    "memory.codes",
    "memory.labels",
)
# Added in format version 2; derived from the version 1 tensors when absent.
TENSOR_NAMES_V2 = ("mixture.density_ranks", "mixture.counts")


def model_tensors(model: LRGMM) -> dict[str, torch.Tensor]:
    p, m = model.projector_, model.mixture_
    values = (
        p.mean_, p.components_, p.eigenvalues_,
        m.weights_, m.means_, m.eigenvectors_, m.eigenvalues_, m.noise_variance_, m.ranks_,
        model.codes_, model.labels_, m.density_ranks_, m.counts_,
    )  # fmt: skip
    return dict(zip(TENSOR_NAMES + TENSOR_NAMES_V2, values))


def save_model_file(path: str | Path, model: LRGMM, metadata: dict) -> None:
    """Write a fitted model and its metadata atomically."""
    MODEL_FORMAT.write(path, model_tensors(model), metadata)


def read_metadata(path: str | Path) -> dict:
    """The JSON metadata of a model file, checked for format and version."""
    return MODEL_FORMAT.read_metadata(path)


def load_model_file(path: str | Path) -> tuple[LRGMM, dict]:
    """Read a model file: the fitted ``LRGMM`` and the metadata dict. Never unpickles."""
    t, meta = MODEL_FORMAT.read(path)
    MODEL_FORMAT.require(path, t, TENSOR_NAMES)

    hp = meta.get("hyperparameters", {})
    model = LRGMM(**{k: v for k, v in hp.items() if k in LRGMM().get_params()})
    proj = PixelPCA(n_channels=t["projector.components"].shape[0])
    proj.mean_, proj.components_, proj.eigenvalues_ = (
        t["projector.mean"],
        t["projector.components"],
        t["projector.eigenvalues"],
    )
    proj.explained_variance_ratio_ = meta.get("fit", {}).get("explained_variance_ratio", float("nan"))
    mix = LowRankGaussianMixture(
        n_components=t["mixture.means"].shape[0],
        temperature=model.temperature,
        density_rank=model.density_rank,
        reg_covar=model.reg_covar,
        max_iter=model.max_iter,
        tol=model.tol,
        n_init=model.n_init,
        random_state=model.random_state,
        min_component_size=model.min_component_size,
    )
    mix.weights_ = t["mixture.weights"]
    mix.means_ = t["mixture.means"]
    mix.eigenvectors_ = t["mixture.eigenvectors"]
    mix.eigenvalues_ = t["mixture.eigenvalues"]
    mix.noise_variance_ = t["mixture.noise_variance"]
    mix.ranks_ = t["mixture.ranks"]
    mix.labels_ = t["memory.labels"]
    mix.density_ranks_ = t.get("mixture.density_ranks", mix.ranks_)
    mix.counts_ = t["mixture.counts"] if "mixture.counts" in t else torch.bincount(mix.labels_, minlength=mix.means_.shape[0])
    mix.n_features_in_ = mix.means_.shape[1]
    fit = meta.get("fit", {})
    mix.n_iter_ = fit.get("em_iterations", 0)
    mix.converged_ = fit.get("em_converged", True)
    mix.lower_bound_ = fit.get("mean_log_likelihood", float("nan"))
    mix.hard_assignment_ = fit.get("hard_assignment", float("nan"))
    model.projector_, model.mixture_ = proj, mix
    model.codes_, model.labels_ = t["memory.codes"], t["memory.labels"]
    model.n_components_ = mix.means_.shape[0]
    _check_consistent(path, model)
    return model, meta


def _check_consistent(path, model: LRGMM) -> None:
    n, q, h, w = model.codes_.shape
    K, d0 = model.mixture_.means_.shape
    ok = (
        model.projector_.components_.shape[0] == q
        and d0 == q * h * w
        and model.labels_.shape == (n,)
        and model.mixture_.eigenvectors_.shape[0] == K
        and model.mixture_.eigenvectors_.shape[2] == d0
        and int(model.labels_.max()) < K
        and model.mixture_.density_ranks_.shape == (K,)
        and model.mixture_.counts_.shape == (K,)
        and int(torch.maximum(model.mixture_.ranks_, model.mixture_.density_ranks_).max()) <= model.mixture_.eigenvectors_.shape[1]
    )
    if not ok:
        raise ModelFileError(f"{path}: tensor shapes do not fit together; the file is corrupt, refit it")
