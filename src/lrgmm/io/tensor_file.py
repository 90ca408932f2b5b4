"""Files of tensors plus one JSON metadata entry (safetensors; never a pickle).

Model files (``lrgmm.io.model_file``) and edit files (``lrgmm.editing.attribute_edit``) share the container and
its checks: the file exists, it is a readable safetensors file, it carries our metadata entry, the
entry is a JSON object of our format, and its version is one this lrgmm reads. ``TensorFileFormat``
describes one such format and the words its errors use; writes are atomic (``atomic_write``).

The JSON is strict both ways. Python's ``json`` writes NaN and inf as ``NaN``/``Infinity``, which
no other JSON reader accepts, and reads them back; here writing refuses them (naming the field)
and reading refuses them too, with overflowing numbers such as ``1e999``. Beyond the container,
each format checks its own fields and tensors with ``MetadataCheck`` and ``check_tensor``: a
damaged or hand-edited file gets one error naming the file and the field, never a ``KeyError``
or a ``TypeError`` from deep inside a command.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

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
        header = {self.metadata_key: self._dumps(path, meta)}
        tensors = {k: v.detach().contiguous() for k, v in tensors.items()}
        return atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=header))

    def _dumps(self, path, meta: dict) -> str:
        try:
            return json.dumps(meta, separators=(",", ":"), allow_nan=False)
        except ValueError:
            field, value = _non_finite(meta) or ("?", "?")
            raise self.error(
                f"cannot write {path}: {self.what} metadata field '{field}' is {value}, which JSON cannot hold"
            ) from None

    def read_metadata(self, path: str | Path) -> dict:
        """The checked JSON metadata, without reading any tensor."""
        return self._read(Path(path), with_tensors=False)[1]

    def read(self, path: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
        """All tensors and the checked metadata, from one opening of the file."""
        return self._read(Path(path), with_tensors=True)

    def _read(self, path: Path, with_tensors: bool) -> tuple[dict[str, torch.Tensor], dict]:
        err = self.error
        if not path.is_file():
            if path.exists():  # a folder, a device, a FIFO: never opened (a FIFO would block)
                kind = "a folder" if path.is_dir() else "a special file (device, FIFO or socket)"
                raise err(f"{path} is {kind}, not a {self.what} file")
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
            meta = json.loads(raw, parse_constant=_refuse_constant, parse_float=_finite_float)
        except (json.JSONDecodeError, _NonFinite, RecursionError) as exc:
            raise err(f"{path}: {self.what} metadata is not valid JSON ({exc}); {self.redo_hint}") from None
        if not isinstance(meta, dict):
            raise err(f"{path}: {self.what} metadata is a JSON {type(meta).__name__}, not an object; {self.redo_hint}")
        if meta.get("format") != self.name:
            raise err(f"{path}: unknown format {meta.get('format')!r}, expected {self.name!r}")
        version = meta.get("format_version")
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise err(f"{path}: {self.what} metadata field 'format_version' is {version!r}, not a version number; "
                      f"{self.redo_hint}")
        if version > self.version:
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


class _NonFinite(ValueError):
    pass


def _refuse_constant(name: str):
    raise _NonFinite(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _NonFinite(f"{text} overflows a float")
    return value


def _non_finite(obj, where: str = "") -> tuple[str, float] | None:
    """The first (dotted field name, value) holding NaN or inf in a JSON-like object."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return where or "(top)", obj
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, (list, tuple)) else ()
    for k, v in items:
        found = _non_finite(v, f"{where}[{k}]" if isinstance(k, int) else f"{where}.{k}" if where else str(k))
        if found:
            return found
    return None


_MISSING = object()


class MetadataCheck:
    """Type and range checks of one file's metadata. Every failure raises the format's error,
    naming the file and the field (dotted: ``fit.ranks``), what is wrong and what to do.

        c = MetadataCheck(MODEL_FORMAT, path, meta)
        n = c.int("fit.n_images", lo=1)
    """

    def __init__(self, fmt: TensorFileFormat, path, meta: dict):
        self.fmt, self.path, self.meta = fmt, path, meta

    def fail(self, field: str, problem: str) -> NoReturn:
        raise self.fmt.error(
            f"{self.path}: {self.fmt.what} metadata field '{field}' {problem}; the file is damaged or was not "
            f"written by lrgmm, {self.fmt.redo_hint}"
        )

    def value(self, field: str, required: bool = True) -> Any:
        node: Any = self.meta
        parts = field.split(".")
        for i, part in enumerate(parts):
            if not isinstance(node, dict):
                self.fail(".".join(parts[:i]), f"is a {_json_type(node)}, not an object")
            if part not in node:
                if required:
                    self.fail(field, "is missing")
                return _MISSING
            node = node[part]
        return node

    def dict(self, field: str, required: bool = True) -> dict | None:
        v = self.value(field, required)
        if v is _MISSING:
            return None
        if not isinstance(v, dict):
            self.fail(field, f"is a {_json_type(v)}, not an object")
        return v

    def str(self, field: str, required: bool = True, none_ok: bool = False, choices=None):
        v = self.value(field, required)
        if v is _MISSING or (v is None and none_ok):
            return None
        if not isinstance(v, str) or (required and not v):
            self.fail(field, f"is {_show(v)}, not a non-empty string")
        if choices is not None and v not in choices:
            self.fail(field, f"is {v!r}, not one of {', '.join(map(repr, choices))}")
        return v

    def bool(self, field: str, required: bool = True):
        v = self.value(field, required)
        if v is _MISSING:
            return None
        if not isinstance(v, bool):
            self.fail(field, f"is {_show(v)}, not true or false")
        return v

    def int(self, field: str, lo: int | None = None, hi: int | None = None, required: bool = True,
            none_ok: bool = False):
        v = self.value(field, required)
        if v is _MISSING or (v is None and none_ok):
            return None
        return self._int(field, v, lo, hi)

    def number(self, field: str, lo: float | None = None, hi: float | None = None, lo_open: bool = False,
               required: bool = True, none_ok: bool = False):
        v = self.value(field, required)
        if v is _MISSING or (v is None and none_ok):
            return None
        return self._number(field, v, lo, hi, lo_open)

    def list(self, field: str, length: int | None = None, required: bool = True) -> list | None:
        v = self.value(field, required)
        if v is _MISSING:
            return None
        if not isinstance(v, list):
            self.fail(field, f"is {_show(v)}, not a list")
        if length is not None and len(v) != length:
            self.fail(field, f"has {len(v)} entries, expected {length}")
        return v

    def ints(self, field: str, length: int | None = None, lo: int | None = None, hi: int | None = None,
             required: bool = True) -> list[int] | None:
        v = self.list(field, length, required)
        return None if v is None else [self._int(f"{field}[{i}]", x, lo, hi) for i, x in enumerate(v)]

    def numbers(self, field: str, length: int | None = None, lo: float | None = None, hi: float | None = None,
                required: bool = True) -> list[float] | None:
        v = self.list(field, length, required)
        return None if v is None else [self._number(f"{field}[{i}]", x, lo, hi, False) for i, x in enumerate(v)]

    def _int(self, field, v, lo, hi) -> int:
        if isinstance(v, bool) or not isinstance(v, int):
            self.fail(field, f"is {_show(v)}, not an integer")
        self._range(field, v, lo, hi, False)
        return v

    def _number(self, field, v, lo, hi, lo_open) -> float:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            self.fail(field, f"is {_show(v)}, not a finite number")
        self._range(field, v, lo, hi, lo_open)
        return v

    def _range(self, field, v, lo, hi, lo_open) -> None:
        if lo is not None and (v <= lo if lo_open else v < lo):
            self.fail(field, f"is {v}, expected {'>' if lo_open else '>='} {lo}")
        if hi is not None and v > hi:
            self.fail(field, f"is {v}, expected <= {hi}")


def _json_type(v) -> str:
    return {dict: "object", list: "list", str: "string", bool: "boolean", type(None): "null"}.get(
        type(v), "number" if isinstance(v, (int, float)) else type(v).__name__
    )


def _show(v) -> str:
    text = json.dumps(v) if not isinstance(v, (dict, list)) else f"a {_json_type(v)}"
    return text if len(text) <= 40 else text[:37] + "..."


def check_tensor(fmt: TensorFileFormat, path, name: str, t: torch.Tensor, dtype: torch.dtype,
                 shape: tuple, finite: bool = True) -> torch.Tensor:
    """Raise the format's error unless tensor ``name`` has this dtype and shape (``None``: any
    size there) and, for floating point, only finite values."""
    problem = None
    if t.dtype != dtype:
        problem = f"has dtype {t.dtype}, expected {dtype}"
    elif t.ndim != len(shape) or any(s is not None and s != n for s, n in zip(shape, t.shape)):
        want = "(" + ", ".join("*" if s is None else str(s) for s in shape) + ("," if len(shape) == 1 else "") + ")"
        problem = f"has shape {tuple(t.shape)}, expected {want}"
    elif finite and t.is_floating_point() and not bool(torch.isfinite(t).all()):
        problem = f"holds {int((~torch.isfinite(t)).sum())} NaN or infinite value(s)"
    if problem:
        raise fmt.error(f"{path}: tensor '{name}' {problem}; the file is damaged, {fmt.redo_hint}")
    return t
