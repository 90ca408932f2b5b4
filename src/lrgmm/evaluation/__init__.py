"""One entry point to measure a face generator: ``evaluate(model, real=FOLDER, n=..., seed=...)``.

    from lrgmm.evaluation import evaluate
    res = evaluate("faces.lrgmm", real="heldout/", n=1000, seed=0)
    print(res.table()); res.to_json("eval.json")

What it does:

1. loads the held-out real faces of ``real`` at the model's resolution (centre crop, Lanczos,
   as for fitting), drops any that are also training images (same file bytes), and takes their
   Inception features;
2. for memorisation, takes the latent codes of the training faces (stored in the model) and of
   the held-out faces (P0 of their cached latents), and the Inception features of both sets
   *through the autoencoder* (decode(P0*(codes))), so that generated faces, which are decoder
   outputs, are compared with the closest thing to a copy a generator can output (see
   ``Evaluator``); no training image is needed on disk;
3. generates ``n`` faces in chunks (progress bar), keeping per face only its features, its
   latent code and its provenance map;
4. computes FID, KID, improved precision/recall (k = 3, on Inception features: no VGG16 weights
   are available) against the held-out photos, the memorisation statistics in both spaces
   (``lrgmm.metrics.memorisation``), the data-copying test C_T and the authenticity share in the
   same spaces (``lrgmm.metrics.copying``), and provenance statistics.

Every feature set is cached on disk (``lrgmm.metrics.features``): evaluating a second generator
against the same folders only pays for its own faces.

**The memorisation figure.** ``memorisation_figure(result, reference, folder)`` (``lrgmm eval
--figures DIR``, ``evaluate(figures=DIR)``) draws the 16 generated faces closest to the training
set, each beside its 3 nearest training faces with the distances, and the held-out near-copy
threshold (``lrgmm.evaluation.figure`` says more). The evaluation keeps what it needs as the
faces stream by, never all n images (``lrgmm.evaluation.evaluator``).

**Generators.** Anything with ``generate(n, seed=None, **kwargs)`` returning an object with
``.images`` (n, 3, R, R) in [0, 1] and optionally ``.samples`` with ``.codes`` (P0 codes, the
model's (q, h, w) shape) or ``.latents`` (autoencoder latents; P0 is applied) and
``.provenance`` (n, h, w) is a ``Generator``: a ``FacePipeline`` is one, and baselines plug in
the same way. The training set, projector and autoencoder they are compared against come from a
fitted ``FacePipeline``, the ``reference``: the generator itself when it is one, else
``reference=`` or the generator's ``pipeline`` attribute. ``Evaluator`` prepares the real and
training features once for several generators.

The modules: ``result`` (``EvalResult`` and ``ClosestFaces``, the record, its table and JSON),
``evaluator`` (``Evaluator``: the real and training sides, generation in chunks, the metrics),
``figure`` (the memorisation figure); ``evaluate`` and ``memorisation_figure`` here tie them
together.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

from ..errors import EvalWarning, FigureError
from ..io.atomic import check_writable_target
from ..metrics.features import InceptionExtractor
from ..metrics.memorisation import DEFAULT_QUANTILE
from ..pipeline.face_pipeline import FacePipeline
from .evaluator import Evaluator, Generator, reconstruction_features, reconstruction_key
from .figure import draw_memorisation_figure
from .result import ClosestFaces, EvalResult

__all__ = [
    "ClosestFaces", "EvalResult", "EvalWarning", "Evaluator", "FigureError", "Generator", "evaluate",
    "memorisation_figure", "reconstruction_features",
]


def _resolve(generator, reference, progress: bool, precision: str | None = None):
    run = {} if precision is None else {"precision": precision}
    if isinstance(generator, (str, os.PathLike)):
        pipe = FacePipeline.load(generator, progress=progress, **run)
        return pipe, pipe, Path(generator).name
    if reference is None:
        if isinstance(generator, FacePipeline):
            reference = generator
        elif isinstance(getattr(generator, "pipeline", None), FacePipeline):
            reference = generator.pipeline
    if isinstance(reference, (str, os.PathLike)):
        reference = FacePipeline.load(reference, progress=progress, **run)
    if reference is None:
        raise ValueError(
            "evaluate needs a fitted FacePipeline as reference (training set, projector, autoencoder): "
            "pass reference=..., or give the generator a `pipeline` attribute"
        )
    reference.check_is_fitted()
    name = getattr(generator, "name", None) or type(generator).__name__
    return generator, reference, str(name)


def memorisation_figure(result: EvalResult, reference: FacePipeline | Evaluator | str | os.PathLike,
                        folder: str | os.PathLike, *, neighbours: int = 3) -> tuple[Path, Path]:
    """Draw the memorisation figure of ``result`` into ``folder``; returns (PNG, JSON) paths
    (``lrgmm.evaluation.figure.draw_memorisation_figure`` says what it shows and lists).

    ``reference``: the ``FacePipeline`` (or ``Evaluator``, or model file) the result was
    measured against; another training set is refused.
    """
    ref = reference.reference if isinstance(reference, Evaluator) else reference
    if isinstance(ref, (str, os.PathLike)):
        ref = FacePipeline.load(ref, progress=False)
    return draw_memorisation_figure(result, ref, folder, neighbours=neighbours)


def evaluate(
    generator: FacePipeline | Generator | str | os.PathLike,
    real,
    n: int = 1000,
    seed: int | None = None,
    *,
    reference: FacePipeline | str | os.PathLike | None = None,
    name: str | None = None,
    generate_kwargs: dict | None = None,
    memorisation: bool | str = True,
    near_copy_quantile: float = DEFAULT_QUANTILE,
    copying_cells: int | None = None,
    kid_subsets: int = 100,
    kid_subset_size: int = 1000,
    pr_k: int = 3,
    batch_size: int = 32,
    chunk_size: int = 1000,
    cache: bool = True,
    progress: bool = True,
    extractor: InceptionExtractor | None = None,
    figures: str | os.PathLike | None = None,
    precision: str | None = None,
) -> EvalResult:
    """Measure a generator against held-out real faces (see the module docstring).

    generator: a model file path, a fitted ``FacePipeline``, or any ``Generator`` (then
        ``reference`` or ``generator.pipeline`` gives the fitted pipeline it is compared with).
    real: folder, file or list of held-out real face images.
    n: faces to generate. seed: their seed (None: a fresh one, recorded in the result).
    generate_kwargs: passed to ``generate`` (e.g. ``{"nn": False}`` for plain LR-GMM).
    figures: a folder for the memorisation figure and its JSON (``memorisation_figure``; listed in
        ``result.files``); needs memorisation.
    precision: the autoencoder's arithmetic for model files loaded here (None: ``FacePipeline``'s
        default); Inception features are fp32 either way.
    The other parameters are those of ``Evaluator`` and ``Evaluator.evaluate``.
    """
    if figures is not None:
        if not memorisation:
            raise FigureError("the memorisation figure needs memorisation: drop memorisation=False (--memorisation none)")
        check_writable_target(Path(figures) / "memorisation.png")  # a bad folder fails now, not after the work
    gen, ref, default_name = _resolve(generator, reference, progress, precision)
    ev = Evaluator(
        ref, real, memorisation=memorisation, near_copy_quantile=near_copy_quantile, copying_cells=copying_cells,
        kid_subsets=kid_subsets,
        kid_subset_size=kid_subset_size, pr_k=pr_k, batch_size=batch_size, cache=cache, progress=progress,
        extractor=extractor,
    )
    result = ev.evaluate(gen, n, seed, name=name or default_name, chunk_size=chunk_size, generate_kwargs=generate_kwargs)
    result.timings = {"preparation": ev.prepare_seconds, **result.timings}
    if figures is not None:
        try:
            result.files = list(memorisation_figure(result, ref, figures))
        except FigureError as exc:  # (a generator without codes, in code space) keep the measurements
            result.notes.append(str(exc))
            warnings.warn(str(exc), EvalWarning, stacklevel=2)
    return result
