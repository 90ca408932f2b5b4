"""Output folders of the commands that write many files (sample, complete, edit, demo).

Writing new faces into a folder that holds an earlier run's would leave old ``face_0063.png``
beside a new ``samples.json`` for 16 faces: a folder that no longer describes itself. So a
command refuses a non-empty output folder unless asked to ``overwrite``, and then removes only
the files it would itself write (by exact name patterns, plus the temporary files of an
interrupted atomic write of those names), never anything else a user keeps there. The check runs
before any work; the removal runs once everything is computed and validated, just before the
first file is written.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from lrgmm.errors import OutputExistsError


@dataclass(frozen=True)
class OwnFiles:
    """The names one command writes: whole-name regular expressions, and how to say them."""

    patterns: tuple[str, ...]
    described: str


# They mirror ``Generated.save``, ``EditedFaces.save``, ``Completions.save`` and ``run_demo``.
SAMPLE_FILES = OwnFiles(
    (r"face_\d{4,}\.png", r"face_\d{4,}_provenance\.(png|json)", r"grid\.png", r"provenance_grid\.png",
     r"samples\.json"),
    "face_*.png, face_*_provenance.png/.json, grid.png, provenance_grid.png, samples.json",
)
EDIT_FILES = OwnFiles(
    (r"edit_\d{4,}\.png", r"edit_\d{4,}_provenance\.png", r"grid\.png", r"edits\.json"),
    "edit_*.png, edit_*_provenance.png, grid.png, edits.json",
)
COMPLETE_FILES = OwnFiles(
    (r"input\.png", r"masked\.png", r"mask\.png", r"completion_\d{4,}(_raw|_provenance)?\.png",
     r"completion_\d{4,}_provenance\.json", r"grid\.png", r"completions\.json"),
    "input.png, masked.png, mask.png, completion_*.png, completion_*_raw.png, completion_*_provenance.png/.json, "
    "grid.png, completions.json",
)
DEMO_FILES = OwnFiles(SAMPLE_FILES.patterns + (r"demo\.lrgmm",), SAMPLE_FILES.described + ", demo.lrgmm")

# What ``io.atomic`` leaves for ``name`` when killed mid-write: ".<name>.<random>.tmp".
_TEMP = re.compile(r"\.(.+)\.[a-z0-9_]+\.tmp")


def _ours(name: str, own: OwnFiles) -> bool:
    m = _TEMP.fullmatch(name)
    if m:
        name = m.group(1)
    return any(re.fullmatch(p, name) for p in own.patterns)


def check_output_folder(path: str | os.PathLike, overwrite: bool, own: OwnFiles, option: str = "-o") -> Path:
    """Refuse a path that is a file, or a non-empty folder without ``overwrite``; return it."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise OutputExistsError(f"output folder {p} exists and is not a folder; give a new or empty folder with {option}")
    if p.is_dir() and not overwrite:
        names = sorted(e.name for e in os.scandir(p))
        if names:
            shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
            raise OutputExistsError(
                f"output folder {p} is not empty ({shown}): choose a new or empty folder with {option}, "
                f"or pass --overwrite to replace lrgmm's own files there ({own.described}; anything else is kept)"
            )
    return p


def clear_own_files(path: str | os.PathLike, own: OwnFiles) -> list[Path]:
    """Remove the files in ``path`` (not below it) whose names are ``own``'s; return them."""
    p = Path(path)
    if not p.is_dir():
        return []
    removed = []
    for entry in sorted(os.scandir(p), key=lambda e: e.name):
        if entry.is_file(follow_symlinks=False) and _ours(entry.name, own):
            Path(entry.path).unlink()
            removed.append(Path(entry.path))
    return removed

