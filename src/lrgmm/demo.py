"""The embedded default run: fit on 1,024 shared UTKFace photos, write 64 new faces.

The data is looked up beside the checkout (``../shared/data/utkface``), the way the weights are,
or given explicitly. UTKFace is for non-commercial research only and is never copied into the
project: the demo reads it where it lies.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path


from .autoencoders.precision import DEFAULT_PRECISION
from .data.splits import seeded_subset
from .errors import ImageInputError
from .io.images import list_images
from .limits import check_n_samples
from .pipeline.face_pipeline import FacePipeline
from .io.weights import shared_candidates


def find_demo_data() -> Path:
    """The shared UTKFace image folder beside the checkout."""
    for cand in shared_candidates("data", "utkface", "images"):
        if cand.is_dir():
            return cand
    raise ImageInputError(
        "cannot find the shared UTKFace faces (looked for shared/data/utkface/images beside the "
        "checkout and the current folder); pass a folder of face photos with --data"
    )


@dataclass
class DemoResult:
    pipeline: FacePipeline
    n_faces: int
    out_dir: Path
    model_path: Path
    written: dict[str, Sequence[Path]]


def run_demo(
    data: str | Path | None = None,
    n_train: int = 1024,
    n_samples: int = 64,
    out_dir: str | Path = "demo_out",
    seed: int = 0,
    progress: bool = True,
    before_writing: Callable[[Path], None] | None = None,
    precision: str = DEFAULT_PRECISION,
) -> DemoResult:
    """Fit a ``FacePipeline`` with default settings on ``n_train`` photos drawn with ``seed``
    from ``data``, generate ``n_samples`` faces with the same seed, and write them, their
    provenance maps, the grids and the model file to ``out_dir`` (batch by batch:
    ``FacePipeline.generate_to``). ``before_writing(out_dir)`` runs once the model is fitted,
    before the first file is written (the command line clears an earlier run's files there).
    ``precision``: the autoencoder's arithmetic (``FacePipeline``)."""
    check_n_samples(n_samples)
    folder = Path(data) if data is not None else find_demo_data()
    files = list_images(folder).paths
    if len(files) < n_train:
        raise ImageInputError(f"{folder} holds {len(files)} images, fewer than the {n_train} asked for")
    chosen = seeded_subset(files, n_train, seed)
    pipe = FacePipeline(random_state=seed, progress=progress, precision=precision).fit(chosen)
    out = Path(out_dir)
    if before_writing is not None:
        before_writing(out)
    written = pipe.generate_to(out, n_samples, seed, progress=progress)
    model_path = pipe.save(out / "demo.lrgmm")
    return DemoResult(pipe, n_samples, out, model_path, written)
