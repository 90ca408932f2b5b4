"""``lrgmm forget`` on files: read a model file, forget photos (``lrgmm.pipeline.forget``), write the new
model and a JSON record of what was removed and checked.

The refit itself is ``FacePipeline.forget`` (``lrgmm.pipeline.forget.forget``); this module adds the files
around it, so it sits above ``lrgmm.pipeline``, which imports ``lrgmm.pipeline.forget``.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from .._version import __version__
from ..errors import ForgetError
from .forget import CHECK_FACES, file_sha256
from ..io.atomic import atomic_write_bytes, check_writable_target
from .face_pipeline import FacePipeline

RECORD_FORMAT = "lrgmm-forget-record"
RECORD_VERSION = 1
RECORD_SUFFIX = ".forget.json"


def record_path_for(output: str | os.PathLike) -> Path:
    """Where ``lrgmm forget -o NEW`` writes its record: ``NEW.forget.json``."""
    return Path(os.fspath(output) + RECORD_SUFFIX)


def forget_model_file(model, photos, output, *, record=None, check_faces: int = CHECK_FACES, seed: int = 0,
                      cache: bool = True, progress: bool = True, autoencoder_options: dict | None = None) -> dict:
    """``lrgmm forget``: read the model file ``model``, forget ``photos``, write the new model to
    ``output`` and a JSON record beside it (``record``, default ``output`` + ``.forget.json``), both
    atomically. Both output paths are checked before any work; nothing is written when a photo is
    not in the model or a check fails. ``output`` may be ``model`` itself (replaced atomically).
    Returns the record: the removed hashes and files, counts, the old and new model files' sha256,
    the time, the lrgmm version and the checks."""
    output = check_writable_target(output)
    record = check_writable_target(record_path_for(output) if record is None else record)
    model = Path(model)
    if record.resolve() in (output.resolve(), model.resolve()):
        raise ForgetError(f"the record {record} would overwrite a model file; give another record path")
    pipe = FacePipeline.load(model, autoencoder_options=autoencoder_options, cache=cache, progress=progress)
    old_sha = file_sha256(model)  # of the file just read
    new = pipe.forget(photos, check_faces=check_faces, seed=seed)
    new.save(output)
    rep = new.forget_report_
    out = {
        "format": RECORD_FORMAT,
        "format_version": RECORD_VERSION,
        "lrgmm_version": __version__,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "model": {"path": str(model), "sha256": old_sha, "n_images": rep["n_images_before"]},
        "new_model": {"path": str(output), "sha256": file_sha256(output), "n_images": rep["n_images_after"]},
        "n_removed": len(rep["removed"]),
        **rep,
    }
    atomic_write_bytes(record, (json.dumps(out, indent=1, allow_nan=False) + "\n").encode())
    out["record_path"] = str(record)
    return out
