"""From face photos to new faces: an autoencoder, the LR-GMM-NN latent model, and files.

    pipe = FacePipeline().fit("photos/")          # encode (cached) + fit, seconds after encoding
    out = pipe.generate(64, seed=0)                # images + provenance
    out.save("out/")                               # faces, grid, provenance maps and lists
    pipe.save("faces.lrgmm"); FacePipeline.load("faces.lrgmm")
"""

from __future__ import annotations

import copy
import inspect
import json
import time
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..defaults import DEFAULTS
from .._version import __version__
from ..autoencoders import Autoencoder, OptionalDependencyError, available, get_autoencoder
from ..autoencoders.precision import DEFAULT_PRECISION, check_precision
from .conditional import N_COMPLETIONS, complete_image, generate_where, where_weights
from .editing import edit_faces
from ..errors import (
    AutoencoderOptionsWarning, EncodingInterrupted, InputWarning, ModelFileError, NotFittedError, WeightsError,
)
from .forget import forget as forget_photos
from .generated import FaceWriter, Generated
from .encoding import EncodedSet, encode_images
from ..io.model_file import load_model_file, model_tensors, save_model_file
from ..limits import SAMPLE_BATCH_SIZE, check_n_samples
from ..core.model import LRGMM, check_spread, check_temperature, resolve_spread
from ..core.nn_projection import budget_in_force, check_max_share, check_nn_order
from ..core.randomness import resolve_seed


class FacePipeline:
    """An autoencoder and an ``LRGMM`` fitted on its latents of a folder of faces.

    Parameters
    ----------
    autoencoder : str or Autoencoder
        A registered backend name (``lrgmm.autoencoders.available()``) or an instance.
    resolution : int
        Working image side in pixels (images are centre-cropped and resized to it).
    n_channels : int or None
        q. None: the autoencoder's ``preferred_q`` (16 for TAEF2).
    n_components, temperature, spread, patch_size, nn_iterations, nn_order, max_share, density_rank, reg_covar,
    max_iter, tol, n_init, random_state, min_component_size
        As in ``LRGMM`` (every ``LRGMM`` parameter is a pipeline parameter of the same name).
    batch_size : int
        Images per encoder/decoder batch. 8: TAEF2's activations then stay in the CPU's cache;
        at 128 px, batches of 16 to 64 ran 1.2 to 1.8x slower per face (BENCHMARKS.md).
    precision : str
        The autoencoder's arithmetic: "fp32", "bf16" or "auto" (bf16 where the hardware has it
        natively; ``lrgmm.autoencoders.precision``). Used when the backend is built by name;
        recorded with generated faces and, for the training latents, in the model file.
    cache : bool
        Reuse and store encoded latents in the per-user latent cache.
    progress : bool
        Show progress bars.

    Attributes
    ----------
    model_ : fitted ``LRGMM``.
    autoencoder_ : the ``Autoencoder`` used.
    training_files_, training_hashes_ : the N images the model was fitted on (provenance indices
        point into these lists).
    report_ : ``InputReport`` of the fit's input (skipped, duplicates, upsampled files).
    fit_seconds_ : time of the projector + mixture fit, excluding encoding.
    """

    def __init__(
        self,
        autoencoder: str | Autoencoder = "taef2",
        resolution: int = 128,
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
        random_state: int | None = DEFAULTS["random_state"],
        min_component_size: int = DEFAULTS["min_component_size"],
        batch_size: int = 8,
        precision: str = DEFAULT_PRECISION,
        cache: bool = True,
        progress: bool = True,
    ):
        self.autoencoder = autoencoder
        self.resolution = resolution
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
        self.batch_size = batch_size
        self.precision = precision
        self.cache = cache
        self.progress = progress

    def get_params(self) -> dict:
        return {n: getattr(self, n) for n in inspect.signature(type(self).__init__).parameters if n != "self"}

    def _resolve_autoencoder(self) -> Autoencoder:
        if isinstance(self.autoencoder, Autoencoder):
            return self.autoencoder
        return get_autoencoder(self.autoencoder, batch_size=self.batch_size, precision=check_precision(self.precision))

    # ------------------------------------------------------------------ fitting
    def encode(self, source) -> EncodedSet:
        """Encode a folder, a file or a list of them (cached; see ``lrgmm.io.latent_cache``).
        Skipped, duplicate and upsampled files are listed in ``.report`` and raise one
        ``InputWarning``. A fitted pipeline encodes at its training latents' precision
        (``training_encoder``), so new codes compare with the model's own."""
        if hasattr(self, "model_"):
            ae = self.training_encoder()
        else:
            ae = self.autoencoder_ if hasattr(self, "autoencoder_") else self._resolve_autoencoder()
        return self._encode(ae, source)

    def _encode(self, ae: Autoencoder, source) -> EncodedSet:
        ae.latent_shape(self.resolution)  # validates the resolution before any work
        try:
            encoded = encode_images(source, ae, self.resolution, self.batch_size, self.cache, self.progress)
        except KeyboardInterrupt as exc:
            if not self.cache or isinstance(exc, EncodingInterrupted):
                raise
            raise EncodingInterrupted("encoding interrupted; the latents encoded so far are cached") from exc
        r = encoded.report
        if r.skipped or r.skipped_folders or r.duplicates or r.upsampled:
            warnings.warn("input images: " + r.summary().replace("\n", "\n  "), InputWarning, stacklevel=3)
        return encoded

    def fit(self, source) -> "FacePipeline":
        """Fit on a folder, an image file list, or an ``EncodedSet`` from ``encode``."""
        if self.temperature is not None:
            check_temperature(self.temperature)  # before the encoding, not after it
        check_spread(self.spread)
        check_max_share(self.max_share)
        check_nn_order(self.nn_order)
        self.autoencoder_ = self._resolve_autoencoder()
        # A refit encodes at this pipeline's precision, not at the previous model's.
        encoded = source if isinstance(source, EncodedSet) else self._encode(self.autoencoder_, source)
        if encoded.autoencoder_id != self.autoencoder_.id or encoded.resolution != self.resolution:
            raise ValueError(
                f"latents were encoded with {encoded.autoencoder_id} at {encoded.resolution}px, "
                f"this pipeline uses {self.autoencoder_.id} at {self.resolution}px"
            )
        params = {k: getattr(self, k) for k in LRGMM().get_params() if hasattr(self, k)}
        if self.n_channels is None:
            params["n_channels"] = self.autoencoder_.preferred_q
        params["verbose"] = self.progress
        start = time.perf_counter()
        self.model_ = LRGMM(**params).fit(encoded.latents)
        self.fit_seconds_ = time.perf_counter() - start
        self.training_files_ = list(encoded.paths)
        self.training_hashes_ = list(encoded.hashes)
        self.encoding_precision_ = encoded.precision
        self.report_ = encoded.report
        return self

    # --------------------------------------------------------------- generating
    def generate(
        self,
        n: int,
        seed: int | None = None,
        *,
        nn: bool = True,
        temperature: float | None = None,
        nn_iterations: int | None = None,
        patch_size: int | None = None,
        max_share: float | None = None,
        nn_order: str | None = None,
        where: dict | list[str] | None = None,
        labels_csv: str | Path | None = None,
        spread: float | None = None,
    ) -> Generated:
        """Draw n latents (``LRGMM.sample``) and decode them. Same model + same seed + same n
        gives bit-identical images; ``seed=None`` draws a fresh seed, recorded in
        ``Generated.seed`` (``lrgmm.core.randomness``). n is at most ``lrgmm.limits.MAX_SAMPLES``; all n faces are
        held in memory: ``generate_batches`` / ``generate_to`` give the same faces in batches.

        ``where`` (``{"gender": "female"}`` or ``["gender=1", "age=senior"]``) samples faces with
        those labels (``lrgmm.pipeline.conditional.generate_where``): labels of the training files from
        their UTKFace names, or from ``labels_csv`` (``file,<attribute>...``).

        ``max_share`` (default: the model's) is the copy budget: no face takes more than
        floor(max_share * h * w) of its latent pixels from one training photo (``LRGMM.sample``);
        1 turns a model's default budget off. Recorded in ``settings`` (None: no budget).
        ``nn_order`` (default: the model's): "parallel" or "raster" (``LRGMM``). ``spread``: psi, the
        scale of each draw around its component's mean (default: the model's with the NN step, 1
        without; ``LRGMM``)."""
        self.check_is_fitted()
        check_n_samples(n)
        seed = resolve_seed(seed)
        extra = {}
        if where is not None:
            samples, extra = generate_where(
                self, n, seed, where, labels_csv, nn=nn, temperature=temperature,
                nn_iterations=nn_iterations, patch_size=patch_size, max_share=max_share, nn_order=nn_order,
                spread=spread,
            )
        else:
            samples = self.model_.sample(
                n, seed, nn=nn, temperature=temperature, nn_iterations=nn_iterations, patch_size=patch_size,
                max_share=max_share, nn_order=nn_order, spread=spread,
            )
        return Generated(
            images=self.decode(samples.latents),
            samples=samples,
            training_files=self.training_files_,
            seed=seed,
            settings=self._settings(nn, temperature, nn_iterations, patch_size, extra, max_share, nn_order, spread),
        )

    def _settings(self, nn, temperature, nn_iterations, patch_size, extra, max_share=None, nn_order=None,
                  spread=None) -> dict:
        share = self.model_.max_share if max_share is None else max_share
        return {
            "nn": nn,
            "temperature": self.model_.temperature_ if temperature is None else temperature,
            "spread": float(resolve_spread(self.model_.spread, spread, nn)),
            "nn_iterations": self.model_.nn_iterations if nn_iterations is None else nn_iterations,
            "patch_size": self.model_.patch_size if patch_size is None else patch_size,
            "nn_order": self.model_.nn_order if nn_order is None else nn_order,
            # the copy budget in force (None: none; 1 is none too)
            "max_share": budget_in_force(share),
            "precision": self.autoencoder_.precision,  # of the decoder that made the images
            **extra,
        }

    def generate_batches(
        self,
        n: int,
        seed: int | None = None,
        *,
        batch_size: int = SAMPLE_BATCH_SIZE,
        nn: bool = True,
        temperature: float | None = None,
        nn_iterations: int | None = None,
        patch_size: int | None = None,
        max_share: float | None = None,
        nn_order: str | None = None,
        where: dict | list[str] | None = None,
        labels_csv: str | Path | None = None,
        spread: float | None = None,
    ) -> Iterator[Generated]:
        """``generate`` batch by batch (``Generated.start`` is each batch's first index): memory
        does not grow with n, and the faces are those of ``generate(n, seed)`` whatever the batch
        size (``LRGMM.iter_samples``: the same draws; with the NN step bit for bit in practice,
        without it to float rounding after the first batch). The batch size is rounded up to a
        multiple of the decoder's ``batch_size``, so the decoder sees the batches ``generate``
        gives it. Every option is checked before this returns. ``seed=None``: a fresh seed,
        recorded in every batch's ``Generated.seed``."""
        return self._generate_batches(n, resolve_seed(seed), batch_size=batch_size, nn=nn, temperature=temperature,
                                      nn_iterations=nn_iterations, patch_size=patch_size, max_share=max_share,
                                      nn_order=nn_order, where=where, labels_csv=labels_csv, spread=spread)[0]

    def _generate_batches(self, n, seed, *, batch_size=SAMPLE_BATCH_SIZE, nn=True, temperature=None, nn_iterations=None,
                          patch_size=None, max_share=None, nn_order=None, where=None,
                          labels_csv=None, spread=None) -> tuple[Iterator[Generated], dict]:
        """(``generate_batches``'s iterator, the settings recorded with the faces)."""
        self.check_is_fitted()
        check_n_samples(n)
        step = max(1, self.batch_size)
        batch_size = -(-max(1, int(batch_size)) // step) * step
        extra, weights, allowed = {}, None, None
        if where is not None:
            weights, allowed, extra = where_weights(self, where, labels_csv)
        batches = self.model_.iter_samples(
            n, seed, batch_size=batch_size, nn=nn, temperature=temperature, nn_iterations=nn_iterations,
            patch_size=patch_size, max_share=max_share, weights=weights, allowed=allowed, nn_order=nn_order,
            spread=spread,
        )
        settings = self._settings(nn, temperature, nn_iterations, patch_size, extra, max_share, nn_order, spread)

        def decoded() -> Iterator[Generated]:
            start = 0
            for samples in batches:
                images = self.decode(samples.latents, progress=False)
                yield Generated(images, samples, self.training_files_, seed, settings, start)
                start += images.shape[0]

        return decoded(), settings

    def generate_to(self, out_dir: str | Path, n: int, seed: int | None = None, *, prefix: str = "face",
                    progress: bool | None = None, **options) -> dict[str, Sequence[Path]]:
        """Generate n faces and write them as ``Generated.save`` does, one batch at a time
        (``generate_batches``; ``options`` are its keyword arguments): per-face files as each
        batch is decoded, the grids of the first 64 faces and ``samples.json`` at the end, a
        progress bar over the faces. Options are checked before the folder is created."""
        seed = resolve_seed(seed)
        batches, settings = self._generate_batches(n, seed, **options)
        progress = self.progress if progress is None else progress
        with FaceWriter(out_dir, prefix, total=n, progress=progress) as writer:
            for batch in batches:  # drawn and decoded while the writer thread writes the one before
                writer.write(batch)
            return writer.close(seed, settings)

    def complete(self, image, mask, n: int = N_COMPLETIONS, seed: int | None = None, **overrides):
        """n completions of a masked photo (``lrgmm.pipeline.conditional.complete_image``): ``image`` a
        path or a (3, H, W) tensor in [0, 1], ``mask`` a PNG path or an (H, W) bool array
        (True = missing) at the photo's size or the working resolution. ``overrides``: ``nn``,
        ``temperature``, ``noise``, ``patch_size``, ``nn_iterations``, ``max_share`` (copy budget
        over the filled positions), ``threshold``, ``feather``.
        Returns ``Completions`` (``.images``, ``.raw``, ``.samples``, ``.save(out_dir)``)."""
        return complete_image(self, image, mask, n, seed, **overrides)

    def edit(self, inputs, edit, alphas=(-2, -1, 0, 1, 2), nn: bool = True, seed: int | None = None,
             max_share: float | None = None):
        """Edit faces along an attribute (``lrgmm.pipeline.editing``): ``inputs`` are image paths, an
        (n, 3, H, W) tensor in [0, 1], a ``Generated`` or an int (faces generated with ``seed``);
        ``edit`` an ``AttributeEdit`` or an edit file made for this model. Returns
        ``EditedFaces`` (``.images`` (n_inputs, n_alphas, 3, R, R), ``.save(out_dir)``).
        ``max_share``: copy budget of the NN step after the edit (default: the model's)."""
        return edit_faces(self, inputs, edit, alphas=alphas, nn=nn, seed=seed, max_share=max_share)

    def forget(self, photos, *, check_faces: int = 256, seed: int = 0) -> "FacePipeline":
        """A new pipeline fitted without ``photos`` (image files, folders or sha256 hashes, matched
        by content): exactly the model a fit on the same folder without them gives, from the cached
        latents (``lrgmm.pipeline.forget``). This pipeline is left as it is. A photo not in the model raises
        ``ForgetError``; too few photos left, ``FitError``. Before returning, checks that the new
        model holds none of them: not in ``training_hashes_``, no NN memory code equal to theirs,
        and ``check_faces`` faces drawn with ``seed`` never copy from them. ``forget_report_`` on the
        result: removed hashes and files, counts, where the latents came from, the checks."""
        return forget_photos(self, photos, check_faces=check_faces, seed=seed)

    def decode(self, latents: torch.Tensor, progress: bool | None = None) -> torch.Tensor:
        """Decode latents in batches, with a progress bar for long runs (``progress``: default
        the pipeline's setting)."""
        ae = self.autoencoder_
        chunks = []
        bs = max(1, self.batch_size)
        steps = range(0, latents.shape[0], bs)
        show = self.progress if progress is None else progress
        for start in tqdm(steps, desc="decoding", unit="batch", disable=not show or len(steps) < 2):
            chunks.append(ae.decode(latents[start : start + bs]))
        if not chunks:
            size = self.resolution
            return torch.zeros(0, 3, size, size)
        return torch.cat(chunks)

    def training_encoder(self) -> Autoencoder:
        """The autoencoder at the precision the training latents were encoded in (the model
        file's ``fit.encoding_precision``): what must encode photos that join or are matched
        against them (``forget``), whatever precision this pipeline decodes in."""
        self.check_is_fitted()
        ae = self.autoencoder_
        wanted = getattr(self, "encoding_precision_", "fp32")
        if ae.precision == wanted:
            return ae
        twin = copy.copy(ae)  # the same networks; only the arithmetic it runs them in differs
        twin.precision = wanted
        return twin

    def check_is_fitted(self):
        if not hasattr(self, "model_"):
            raise NotFittedError("this FacePipeline is not fitted: call fit(folder) or FacePipeline.load(path)")

    # ------------------------------------------------------------- model files
    def metadata(self) -> dict:
        """Everything the model file records besides the tensors."""
        self.check_is_fitted()
        m = self.model_
        ae = self.autoencoder_
        n, q, h, w = m.codes_.shape
        counts = m.parameter_counts()
        return {
            "lrgmm_version": __version__,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "autoencoder": self._autoencoder_record(ae),
            "resolution": self.resolution,
            "latent_shape": list(ae.latent_shape(self.resolution)),
            "hyperparameters": {**m.get_params(), "n_channels": q, "n_components": m.n_components_,
                                "temperature": m.temperature_},
            "fit": {
                "n_images": n,
                # K as asked (None: from N); hyperparameters.n_components is the K fitted. ``forget``
                # refits with it, as `lrgmm fit` would on the folder without the forgotten photos.
                "n_components_requested": m.n_components,
                # lambda as asked (None: from K, ``default_temperature``); hyperparameters.temperature
                # is the lambda the sampling ranks were taken at.
                "temperature_requested": m.temperature,
                "d0": q * h * w,
                "ranks": m.mixture_.ranks_.tolist(),
                "density_ranks": m.mixture_.density_ranks_.tolist(),
                "weights": [round(float(x), 6) for x in m.mixture_.weights_],
                "component_counts": m.mixture_.counts_.tolist(),
                "noise_variances": [round(float(x), 6) for x in m.mixture_.noise_variance_],
                "hard_assignment": m.mixture_.hard_assignment_,
                "em_iterations": m.mixture_.n_iter_,
                "em_converged": m.mixture_.converged_,
                "mean_log_likelihood": m.mixture_.lower_bound_,
                "explained_variance_ratio": m.projector_.explained_variance_ratio_,
                "fit_seconds": round(self.fit_seconds_, 4),
                # the encoder's arithmetic for the training latents ("fp32" for files written before it was recorded)
                "encoding_precision": getattr(self, "encoding_precision_", "fp32"),
            },
            "parameter_counts": counts,
            "sizes": {
                "values_stored": sum(t.numel() for t in model_tensors(m).values()),
                "tensor_bytes": sum(t.numel() * t.element_size() for t in model_tensors(m).values()),
            },
            "training_files": [{"path": p, "sha256": s} for p, s in zip(self.training_files_, self.training_hashes_)],
        }

    @staticmethod
    def _autoencoder_record(ae: Autoencoder) -> dict:
        """Name, id, weights sha256, and ``config`` (the backend's rebuild arguments) when it has
        any: TAEF2 finds its weights itself, so its record stays the name, id and hash."""
        record = {"name": ae.name, "id": ae.id, "weights_sha256": ae.weights_sha256}
        config = ae.config()
        if config:
            record["config"] = config
        return record

    def save(self, path: str | Path) -> Path:
        """Write the model file (atomic; see ``lrgmm.io.model_file``)."""
        save_model_file(path, self.model_, self.metadata())
        return Path(path)

    @classmethod
    def load(
        cls,
        path: str | Path,
        autoencoder: str | Autoencoder | None = None,
        autoencoder_options: dict | None = None,
        **params,
    ) -> "FacePipeline":
        """Read a model file. The autoencoder (the recorded backend by default) must be the one
        the model was fitted with: same backend and same weights sha256.

        By default the backend is rebuilt from the file's record: its name and ``config``, the
        keyword arguments the backend reported (a VQGAN's checkpoint path, config and
        ``requantize``; a diffusers folder). ``autoencoder_options`` override recorded entries,
        e.g. ``{"checkpoint": "new/place.ckpt"}`` when the weights moved, or
        ``{"requantize": True}`` to decode a VQGAN model another way. Or pass a backend instance
        as ``autoencoder``. Either way its weights must hash as recorded.
        """
        if autoencoder_options and isinstance(autoencoder, Autoencoder):
            raise ValueError("autoencoder_options apply to a backend built by name, not to a given instance")
        model, meta = load_model_file(path)
        ae_meta = meta.get("autoencoder", {})
        recorded_name = ae_meta.get("name", "taef2")
        recorded_cfg = ae_meta.get("config") or {}
        ae_arg = autoencoder if autoencoder is not None else recorded_name
        accepted = inspect.signature(cls.__init__).parameters
        # The model's parameters as the loaded model holds them (``load_model_file``): K and lambda
        # as asked (None: from N, from K), so a refit resolves them again as `lrgmm fit` would, and
        # what a file older than a parameter was loaded with before.
        kwargs = {k: v for k, v in {**meta.get("hyperparameters", {}), **model.get_params()}.items() if k in accepted}
        kwargs.update(autoencoder=ae_arg, resolution=int(meta.get("resolution", 128)), **params)
        pipe = cls(**kwargs)
        # A backend named as a string (the recorded one by default) is rebuilt with the recorded
        # options when it is the recorded backend; an instance is used as it is.
        options = recorded_cfg if isinstance(ae_arg, str) and ae_arg == recorded_name else {}
        if autoencoder_options:
            options = {**options, **autoencoder_options}
        try:
            if options:
                ae = get_autoencoder(ae_arg, **{"batch_size": pipe.batch_size,
                                                "precision": check_precision(pipe.precision), **options})
                pipe.autoencoder = ae  # refitting this pipeline reuses the same backend
            else:
                ae = pipe._resolve_autoencoder()
        except (ValueError, TypeError, OptionalDependencyError) as exc:  # TypeError: recorded options it does not take
            if autoencoder is not None:
                raise
            raise ModelFileError(
                f"{path} was fitted with autoencoder {ae_arg!r}, which is not available here ({exc}); "
                f"install or register that backend, or refit the model with an available one "
                f"(available: {', '.join(available())})"
            ) from None
        except WeightsError as exc:
            if not options:
                raise
            raise WeightsError(
                f"{path} was fitted with the {ae_arg} autoencoder {ae_meta.get('id')!r}, which cannot "
                f"be rebuilt here with {json.dumps(options)}: {exc}\n"
                f"If its files moved, pass the autoencoder built on their new place: their new location "
                f"in autoencoder_options ({{'checkpoint': ...}} for vqgan, {{'path': ...}} for diffusers; "
                f"command line: --ae-weights), or an autoencoder instance."
            ) from None
        if ae.id != ae_meta.get("id") or ae.weights_sha256 != ae_meta.get("weights_sha256"):
            raise ModelFileError(
                f"{path} was fitted with autoencoder {ae_meta.get('id')!r} "
                f"(weights sha256 {str(ae_meta.get('weights_sha256'))[:16]}...), but {ae.id!r} was given; "
                "load it with the same autoencoder weights, or refit the model with this one"
            )
        try:
            expected = tuple(ae.latent_shape(pipe.resolution))
        except ValueError as exc:
            raise ModelFileError(f"{path}: recorded resolution {pipe.resolution} does not suit {ae.id} ({exc})") from None
        if tuple(meta.get("latent_shape", ())) != expected:
            raise ModelFileError(f"{path}: latent shape {meta.get('latent_shape')} does not match {ae.id}")
        if not options and recorded_cfg and ae.name == recorded_name:
            _warn_changed_options(path, ae, recorded_cfg)
        pipe.autoencoder_ = ae
        pipe.model_ = model
        pipe.training_files_ = [f["path"] for f in meta.get("training_files", [])]
        pipe.training_hashes_ = [f["sha256"] for f in meta.get("training_files", [])]
        pipe.fit_seconds_ = meta.get("fit", {}).get("fit_seconds", float("nan"))
        pipe.encoding_precision_ = meta.get("fit", {}).get("encoding_precision", "fp32")
        if len(pipe.training_files_) != model.codes_.shape[0]:
            raise ModelFileError(f"{path}: {len(pipe.training_files_)} training files listed for {model.codes_.shape[0]} codes; the file is corrupt")
        return pipe


def _warn_changed_options(path, ae: Autoencoder, recorded: dict) -> None:
    """Same weights (checked by the caller) but other behaviour, e.g. ``requantize``: allowed,
    since the caller chose it, but said, since the images will differ from the fitted setup's."""
    current = ae.config()
    changed = sorted(
        k for k in set(current) | set(recorded)
        if k not in ae.location_keys and current.get(k) != recorded.get(k)
    )
    if changed:
        diff = ", ".join(f"{k}={current.get(k)!r} (recorded {recorded.get(k)!r})" for k in changed)
        warnings.warn(
            f"{path}: the given {ae.name} autoencoder differs from the one the model was fitted with: {diff}",
            AutoencoderOptionsWarning,
            stacklevel=3,
        )
