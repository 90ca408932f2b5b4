"""The ``.lrgmm`` model file: one safetensors file, tensors plus JSON metadata, never a pickle.

Layout (format version 1):

    tensors
        projector.mean (c,) float64, projector.components (q, c) float64,
        projector.eigenvalues (q,) float64
        mixture.weights (K,), mixture.means (K, d0), mixture.eigenvectors (K, r_max, d0),
        mixture.eigenvalues (K, r_max), mixture.noise_variance (K,) float32; mixture.ranks (K,) int64
        memory.codes (N, q, h, w) float32, memory.labels (N,) int64
    metadata["lrgmm"]: JSON with format, format_version, lrgmm_version, autoencoder (name, id,
        weights_sha256), resolution, latent_shape, hyperparameters, fit diagnostics,
        training_files [{path, sha256}], sizes and parameter counts.

Writes go to a temporary file in the destination folder, then ``os.replace``: a crash leaves the
previous file (or nothing), never half a model.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from ..errors import ModelFileError
from ..mixture import LowRankGaussianMixture
from ..model import LRGMM
from ..projector import PixelPCA
from .atomic import atomic_write

FORMAT_NAME = "lrgmm-model"
FORMAT_VERSION = 1
_METADATA_KEY = "lrgmm"


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


def model_tensors(model: LRGMM) -> dict[str, torch.Tensor]:
    p, m = model.projector_, model.mixture_
    values = (
        p.mean_, p.components_, p.eigenvalues_,
        m.weights_, m.means_, m.eigenvectors_, m.eigenvalues_, m.noise_variance_, m.ranks_,
        model.codes_, model.labels_,
    )  # fmt: skip
    return dict(zip(TENSOR_NAMES, values))


def save_model_file(path: str | Path, model: LRGMM, metadata: dict) -> None:
    """Write a fitted model and its metadata atomically."""
    meta = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, **metadata}
    tensors = {k: v.detach().contiguous() for k, v in model_tensors(model).items()}
    header = {_METADATA_KEY: json.dumps(meta, separators=(",", ":"))}
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=header))


def read_metadata(path: str | Path) -> dict:
    """The JSON metadata of a model file, checked for format and version."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"model file {path} does not exist; create one with `lrgmm fit FOLDER -o {path}`")
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = (f.metadata() or {}).get(_METADATA_KEY)
    except Exception as exc:  # safetensors reports truncation and garbage as various errors
        raise ModelFileError(
            f"{path} is not a readable lrgmm model file (truncated or corrupt: {exc}); refit it with `lrgmm fit`"
        ) from None
    if raw is None:
        raise ModelFileError(f"{path} is a safetensors file but not an lrgmm model (no '{_METADATA_KEY}' metadata)")
    try:
        meta = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ModelFileError(f"{path}: model metadata is not valid JSON ({exc}); refit the model") from None
    if meta.get("format") != FORMAT_NAME:
        raise ModelFileError(f"{path}: unknown format {meta.get('format')!r}, expected {FORMAT_NAME!r}")
    version = meta.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ModelFileError(
            f"{path} has model format version {version}, newer than this lrgmm reads ({FORMAT_VERSION}); "
            "upgrade lrgmm (pip install -U lrgmm) to load it"
        )
    return meta


def load_model_file(path: str | Path) -> tuple[LRGMM, dict]:
    """Read a model file: the fitted ``LRGMM`` and the metadata dict. Never unpickles."""
    meta = read_metadata(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            t = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:
        raise ModelFileError(f"{path}: cannot read the model tensors ({exc}); the file is corrupt, refit it") from None
    missing = [k for k in TENSOR_NAMES if k not in t]
    if missing:
        raise ModelFileError(f"{path}: missing tensors {missing}; the file is corrupt, refit it")

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
        reg_covar=model.reg_covar,
        max_iter=model.max_iter,
        tol=model.tol,
        random_state=model.random_state,
    )
    mix.weights_ = t["mixture.weights"]
    mix.means_ = t["mixture.means"]
    mix.eigenvectors_ = t["mixture.eigenvectors"]
    mix.eigenvalues_ = t["mixture.eigenvalues"]
    mix.noise_variance_ = t["mixture.noise_variance"]
    mix.ranks_ = t["mixture.ranks"]
    mix.labels_ = t["memory.labels"]
    mix.n_features_in_ = mix.means_.shape[1]
    fit = meta.get("fit", {})
    mix.n_iter_ = fit.get("em_iterations", 0)
    mix.converged_ = fit.get("em_converged", True)
    mix.lower_bound_ = fit.get("mean_log_likelihood", float("nan"))
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
    )
    if not ok:
        raise ModelFileError(f"{path}: tensor shapes do not fit together; the file is corrupt, refit it")
