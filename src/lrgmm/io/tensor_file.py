"""Files of tensors plus one JSON metadata entry (safetensors; never a pickle).

Model files (``lrgmm.io.model_file``) and edit files (``lrgmm.editing``) share the container and
its checks: the file exists, it is a readable safetensors file, it carries our metadata entry, the
entry is JSON of our format, and its version is one this lrgmm reads. ``TensorFileFormat``
describes one such format and the words its errors use; writes are atomic (``atomic_write``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from ..errors import LrgmmError
from .atomic import atomic_write


@dataclass(frozen=True)
class TensorFileFormat:
    """One file format: its metadata entry, name and version, and how its errors read.

    name, version : the ``format`` / ``format_version`` written into the metadata.
    metadata_key : the safetensors metadata entry holding the JSON.
    what : the kind of file in messages ("model", "edit").
    noun : how a corrupt file's message names the kind ("lrgmm model file", "edit file").
    error : the ``LrgmmError`` subclass raised.
    create_hint : how to make a missing file; ``{path}`` and ``{name}`` are filled in.
    redo_hint : what to do about a corrupt file.
    """

    name: str
    version: int
    metadata_key: str
    what: str
    noun: str
    error: type[LrgmmError]
    create_hint: str
    redo_hint: str

    def write(self, path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict) -> Path:
        """Write ``tensors`` and ``metadata`` (``format`` and ``format_version`` first) atomically."""
        meta = {"format": self.name, "format_version": self.version, **metadata}
        header = {self.metadata_key: json.dumps(meta, separators=(",", ":"))}
        tensors = {k: v.detach().contiguous() for k, v in tensors.items()}
        return atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=header))

    def read_metadata(self, path: str | Path) -> dict:
        """The checked JSON metadata, without reading any tensor."""
        return self._read(Path(path), with_tensors=False)[1]

    def read(self, path: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
        """All tensors and the checked metadata, from one opening of the file."""
        return self._read(Path(path), with_tensors=True)

    def _read(self, path: Path, with_tensors: bool) -> tuple[dict[str, torch.Tensor], dict]:
        err = self.error
        if not path.is_file():
            raise err(f"{self.what} file {path} does not exist; " + self.create_hint.format(path=path, name=path.name))
        try:
            with safe_open(str(path), framework="pt") as f:
                raw = (f.metadata() or {}).get(self.metadata_key)
                tensors = {k: f.get_tensor(k) for k in f.keys()} if with_tensors and raw is not None else {}  # noqa: SIM118
        except Exception as exc:  # noqa: BLE001 (safetensors reports truncation and garbage as various errors)
            raise err(f"{path} is not a readable {self.noun} (truncated or corrupt: {exc}); {self.redo_hint}") from None
        if raw is None:
            raise err(f"{path} is a safetensors file but not an lrgmm {self.what} (no '{self.metadata_key}' metadata)")
        try:
            meta = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise err(f"{path}: {self.what} metadata is not valid JSON ({exc}); {self.redo_hint}") from None
        if meta.get("format") != self.name:
            raise err(f"{path}: unknown format {meta.get('format')!r}, expected {self.name!r}")
        version = meta.get("format_version")
        if not isinstance(version, int) or version > self.version:
            raise err(
                f"{path} has {self.what} format version {version}, newer than this lrgmm reads ({self.version}); "
                "upgrade lrgmm (pip install -U lrgmm) to load it"
            )
        return tensors, meta

    def require(self, path: str | Path, tensors: dict, names) -> None:
        """A clear error when any of ``names`` is missing from ``tensors``."""
        missing = [k for k in names if k not in tensors]
        if missing:
            raise self.error(f"{path}: missing tensors {missing}; the file is corrupt, {self.redo_hint}")
