"""The ``.lrgmm`` model file: one safetensors file, tensors plus JSON metadata, never a pickle.

Layout (format version 3; version 1 files, written before the density rank was separate from
eq. 4's rank, still load: their density ranks are their sampling ranks, as they were fitted;
version 1 and 2 files have no ``memory.latents`` and decode the rank-q codes of the pixels they
copy, as they did: refit to copy full latent pixels):

    tensors
        projector.mean (c,) float64, projector.components (q, c) float64,
        projector.eigenvalues (q,) float64
        mixture.weights (K,), mixture.means (K, d0), mixture.eigenvectors (K, r_max, d0),
        mixture.eigenvalues (K, r_max), mixture.noise_variance (K,) float32; mixture.ranks (K,) int64
        (eq. 4's sampling ranks), mixture.density_ranks (K,) int64, mixture.counts (K,) int64
        memory.codes (N, q, h, w) float32, memory.labels (N,) int64,
        memory.latents (N, c, h, w) float32 (the training latents whose pixels the NN step copies)
    metadata["lrgmm"]: JSON with format, format_version, lrgmm_version, autoencoder (name, id,
        weights_sha256), resolution, latent_shape, hyperparameters, fit diagnostics,
        training_files [{path, sha256}], sizes and parameter counts. ``fit.n_components_requested``
        (the K asked for, null for K from N; optional, absent before ``lrgmm forget``) is what a refit
        uses; ``hyperparameters.n_components`` is the K fitted. Likewise ``fit.temperature_requested``
        (lambda as asked, null for lambda from K; optional) and ``hyperparameters.temperature``, the
        lambda the sampling ranks were taken at. ``hyperparameters.max_share``
        (the default copy budget, a number in (0, 1] or null) is optional: files written before it
        existed load with no budget. ``hyperparameters.spread`` (psi of the draws, > 0) is optional
        too: files written before it load with psi = 1, as they sampled.

Writes go to a temporary file in the destination folder, then ``os.replace``: a crash leaves the
previous file (or nothing), never half a model.

Reading checks everything a command relies on before using it (``validate_metadata`` for the JSON,
``load_model_file`` for the tensors): required fields present with their types and ranges (lambda
in (0, 1], an odd patch size, ranks and counts as non-negative integers...), sizes that agree with
each other (K ranks and weights, d0 = q h w, one training file per code), every tensor with its
dtype and shape, finite, labels in [0, K), ranks within the stored eigenvectors, and mixture
weights that can be sampled from. ``lrgmm info`` and ``FacePipeline.load`` go through the same
checks, so a damaged file gets a ``ModelFileError`` naming the file and the field, never a
traceback. Fields only written for people (``created``, ``sizes``) are checked when present.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..defaults import NN_ORDERS
from ..errors import ModelFileError
from ..core.mixture import LowRankGaussianMixture
from ..core.model import LRGMM
from ..core.projector import PixelPCA
from .tensor_file import MetadataCheck, TensorFileFormat, check_tensor

FORMAT_NAME = "lrgmm-model"
FORMAT_VERSION = 3
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
# Added in format version 3; without it the NN step's pixels are decoded from their codes.
TENSOR_NAMES_V3 = ("memory.latents",)


# Hyperparameters absent from files older than them, and the values such files loaded with before
# the defaults moved to raster order, a 0.20 budget and psi = 1.5 (their faces stay as they were).
_BEFORE_RECORDED = {"nn_order": "parallel", "max_share": 0.25, "spread": 1.0}


def model_tensors(model: LRGMM) -> dict[str, torch.Tensor]:
    p, m = model.projector_, model.mixture_
    values = (
        p.mean_, p.components_, p.eigenvalues_,
        m.weights_, m.means_, m.eigenvectors_, m.eigenvalues_, m.noise_variance_, m.ranks_,
        model.codes_, model.labels_, m.density_ranks_, m.counts_, model.latents_,
    )  # fmt: skip
    tensors = dict(zip(TENSOR_NAMES + TENSOR_NAMES_V2 + TENSOR_NAMES_V3, values))
    if tensors["memory.latents"] is None:  # loaded from a format 2 file
        del tensors["memory.latents"]
    return tensors


def save_model_file(path: str | Path, model: LRGMM, metadata: dict) -> None:
    """Write a fitted model and its metadata atomically; a model without training latents (read
    from a format 2 file) is written as format 2, which it is."""
    tensors = model_tensors(model)
    if "memory.latents" not in tensors:
        metadata = {**metadata, "format_version": 2}
    MODEL_FORMAT.write(path, tensors, metadata)


def read_metadata(path: str | Path) -> dict:
    """The JSON metadata of a model file, checked for format, version and schema
    (``validate_metadata``)."""
    meta = MODEL_FORMAT.read_metadata(path)
    validate_metadata(path, meta)
    return meta


def validate_metadata(path, meta: dict) -> dict:
    """Raise ``ModelFileError`` naming the field unless ``meta`` has every field the commands use,
    with its type and range, and the sizes agree. Returns ``meta``."""
    c = MetadataCheck(MODEL_FORMAT, path, meta)
    c.str("lrgmm_version")
    c.str("created", required=False)
    c.dict("autoencoder")
    c.str("autoencoder.name")
    c.str("autoencoder.id")
    c.str("autoencoder.weights_sha256")
    c.dict("autoencoder.config", required=False)
    c.int("resolution", lo=1)
    ch, h, w = c.ints("latent_shape", length=3, lo=1)

    c.dict("hyperparameters")
    q = c.int("hyperparameters.n_channels", lo=1, hi=ch)
    k = c.int("hyperparameters.n_components", lo=1)
    c.number("hyperparameters.temperature", lo=0, hi=1, lo_open=True)
    if c.int("hyperparameters.patch_size", lo=1) % 2 != 1:
        c.fail("hyperparameters.patch_size", f"is {meta['hyperparameters']['patch_size']}, not odd")
    c.int("hyperparameters.nn_iterations", lo=1)
    c.str("hyperparameters.nn_order", required=False, choices=NN_ORDERS)  # absent in files before it: parallel
    c.number("hyperparameters.max_share", lo=0, hi=1, lo_open=True, required=False, none_ok=True)  # copy budget
    c.number("hyperparameters.spread", lo=0, lo_open=True, required=False)  # psi; absent before it: 1
    c.number("hyperparameters.reg_covar", lo=0, required=False)
    c.int("hyperparameters.max_iter", lo=0, required=False)
    c.number("hyperparameters.tol", lo=0, required=False)
    c.int("hyperparameters.random_state", required=False, none_ok=True)
    c.int("hyperparameters.min_component_size", lo=0, required=False)
    c.int("hyperparameters.density_rank", lo=0, required=False)
    c.int("hyperparameters.n_init", lo=1, required=False)
    c.bool("hyperparameters.verbose", required=False)

    c.dict("fit")
    n = c.int("fit.n_images", lo=1)
    c.int("fit.n_components_requested", lo=1, required=False, none_ok=True)  # K as asked (null: from N)
    c.number("fit.temperature_requested", lo=0, hi=1, lo_open=True, required=False, none_ok=True)  # lambda as asked (null: from K)
    if c.int("fit.d0", lo=1) != q * h * w:
        c.fail("fit.d0", f"is {meta['fit']['d0']}, but q h w = {q} x {h} x {w} = {q * h * w}")
    c.ints("fit.ranks", length=k, lo=0, hi=q * h * w)
    c.numbers("fit.weights", length=k, lo=0, hi=1, required=False)
    c.ints("fit.density_ranks", length=k, lo=0, hi=q * h * w, required=False)
    c.ints("fit.component_counts", length=k, lo=0, hi=n, required=False)
    c.numbers("fit.noise_variances", length=k, lo=0, required=False)
    c.number("fit.hard_assignment", lo=0, hi=1, required=False)
    c.int("fit.em_iterations", lo=0)
    c.bool("fit.em_converged")
    c.number("fit.mean_log_likelihood")
    c.number("fit.explained_variance_ratio", lo=0, hi=1 + 1e-9)  # a sum over a sum: may round above 1
    c.number("fit.fit_seconds", lo=0)

    c.dict("parameter_counts")
    for part in ("projector", "mixture", "nn_memory"):
        c.int(f"parameter_counts.{part}", lo=0)
    if c.dict("sizes", required=False) is not None:
        c.int("sizes.values_stored", lo=0, required=False)
        c.int("sizes.tensor_bytes", lo=0, required=False)

    files = c.list("training_files")
    if len(files) != n:
        raise ModelFileError(f"{path}: {len(files)} training files listed for {n} codes; the file is corrupt, refit it")
    for i, f in enumerate(files):
        if not isinstance(f, dict):
            c.fail(f"training_files[{i}]", "is not an object with 'path' and 'sha256'")
        for key in ("path", "sha256"):
            if not isinstance(f.get(key), str):
                c.fail(f"training_files[{i}].{key}", "is missing or not a string")
    return meta


def load_model_file(path: str | Path) -> tuple[LRGMM, dict]:
    """Read a model file: the fitted ``LRGMM`` and the metadata dict. Never unpickles.
    Raises ``ModelFileError`` for any file that is not a whole, consistent model."""
    t, meta = MODEL_FORMAT.read(path)
    validate_metadata(path, meta)
    version = meta["format_version"]
    MODEL_FORMAT.require(path, t, TENSOR_NAMES + (TENSOR_NAMES_V2 if version >= 2 else ())
                         + (TENSOR_NAMES_V3 if version >= 3 else ()))
    _check_tensors(path, t, meta)

    hp = meta.get("hyperparameters", {})
    # Files written before a hyperparameter existed keep the NN step they were loaded with before,
    # not today's default.
    model = LRGMM(**{**_BEFORE_RECORDED, **{k: v for k, v in hp.items() if k in LRGMM().get_params()}})
    if "n_components_requested" in meta["fit"]:  # K as asked; n_components_ below is the K fitted
        model.n_components = meta["fit"]["n_components_requested"]
    # hyperparameters.temperature is the lambda the ranks were taken at; as asked, it may be null (from K).
    model.temperature_ = float(hp["temperature"])
    if "temperature_requested" in meta["fit"]:
        model.temperature = meta["fit"]["temperature_requested"]
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
    mix.temperature_ = model.temperature_
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
    model.latents_ = t.get("memory.latents")
    model.n_components_ = mix.means_.shape[0]
    return model, meta


def _check_tensors(path, t: dict[str, torch.Tensor], meta: dict) -> None:
    """Dtypes, shapes (against each other and the metadata), finite values and the value ranges
    sampling relies on."""
    ch, h, w = meta["latent_shape"]
    hp, fit = meta["hyperparameters"], meta["fit"]
    q, k, n, d0 = hp["n_channels"], hp["n_components"], fit["n_images"], fit["d0"]
    f64, f32, i64 = torch.float64, torch.float32, torch.int64

    def check(name, dtype, shape):
        return check_tensor(MODEL_FORMAT, path, name, t[name], dtype, shape)

    check("projector.mean", f64, (ch,))
    check("projector.components", f64, (q, ch))
    if bool((check("projector.eigenvalues", f64, (q,)) <= 0).any()):
        raise ModelFileError(f"{path}: tensor 'projector.eigenvalues' holds variances <= 0; the file is damaged, "
                             "refit it with `lrgmm fit`")
    weights = check("mixture.weights", f32, (k,))
    check("mixture.means", f32, (k, d0))
    r_max = check("mixture.eigenvectors", f32, (k, None, d0)).shape[1]
    eigenvalues = check("mixture.eigenvalues", f32, (k, r_max))
    noise = check("mixture.noise_variance", f32, (k,))
    ranks = check("mixture.ranks", i64, (k,))
    check("memory.codes", f32, (n, q, h, w))
    labels = check("memory.labels", i64, (n,))
    if "memory.latents" in t:
        check("memory.latents", f32, (n, ch, h, w))

    def bad(name, problem):
        raise ModelFileError(f"{path}: tensor '{name}' {problem}; the file is damaged, refit it with `lrgmm fit`")

    if bool((weights < 0).any()) or abs(float(weights.sum(dtype=f64)) - 1) > 1e-3:
        bad("mixture.weights", "is not a probability vector")
    if bool((eigenvalues < 0).any()) or bool((noise < 0).any()):
        bad("mixture.eigenvalues" if bool((eigenvalues < 0).any()) else "mixture.noise_variance", "holds negative variances")
    if bool((ranks < 0).any()) or bool((ranks > r_max).any()):
        bad("mixture.ranks", f"holds ranks outside [0, {r_max}] (the stored eigenvectors)")
    if ranks.tolist() != fit["ranks"]:
        bad("mixture.ranks", f"is {ranks.tolist()}, but the metadata records {fit['ranks']}")
    if n and (int(labels.min()) < 0 or int(labels.max()) >= k):
        bad("memory.labels", f"holds components outside [0, {k})")
    # Format version 2: the density's ranks and the training codes per component.
    if "mixture.density_ranks" in t:
        density = check("mixture.density_ranks", i64, (k,))
        if bool((density < 0).any()) or bool((density > r_max).any()):
            bad("mixture.density_ranks", f"holds ranks outside [0, {r_max}] (the stored eigenvectors)")
    if "mixture.counts" in t and bool((check("mixture.counts", i64, (k,)) < 0).any()):
        bad("mixture.counts", "holds negative counts")
