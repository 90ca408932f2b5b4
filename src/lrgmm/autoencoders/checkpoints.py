"""Reading the tensors of a PyTorch checkpoint without ever running code from it.

``torch.load(weights_only=True)`` only rebuilds tensors and plain containers, and refuses any
other pickled class. That refusal is right for the weights, but too strict for the rest of a
PyTorch Lightning checkpoint: besides ``state_dict`` it pickles callback objects (old Lightning
versions even use the ``ModelCheckpoint`` *class* as a dictionary key), hyperparameters, loop
state... so a real taming-transformers ``.ckpt`` is refused, and loading it the ordinary way would
need pytorch-lightning installed and would run whatever the pickle asks for.

:func:`load_state_dict` therefore does this:

1. ``torch.load(path, weights_only=True)``; a plain state dict or a clean checkpoint loads here.
2. If torch refuses because of classes it does not allow, it lists the pickle's globals *without
   unpickling* (``torch.serialization.get_unsafe_globals_in_checkpoint``, which disassembles the
   pickle), and loads again with weights-only semantics, each of those globals replaced by an
   *inert placeholder*: a class of ours whose construction, ``__setstate__``, ``append``... do
   nothing. No code named by the file is imported or called; the placeholders only stand where
   Lightning's objects were.
3. The weights must be real tensors: the ``state_dict`` (or the top-level dict) is searched, and
   a placeholder anywhere in it (a whole ``nn.Module`` pickled with ``torch.save(model)``, a custom
   tensor subclass) is a :class:`~lrgmm.errors.WeightsError` naming the class, because reading it
   would mean running that class's code. Everything outside the weights is dropped.

Safetensors files (``.safetensors``) are read with the safetensors library and need none of this.
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping
from pathlib import Path

import torch

from lrgmm.errors import WeightsError

__all__ = ["load_state_dict", "Inert", "RESAVE_HINT"]

RESAVE_HINT = (
    "Re-save the weights alone where the model's code is installed, e.g. "
    "`torch.save({'state_dict': model.state_dict()}, 'weights.ckpt')` or "
    "`safetensors.torch.save_file(model.state_dict(), 'weights.safetensors')`."
)


class Inert:
    """Stands for a class or function a checkpoint names but lrgmm will not run.

    Every operation the weights-only unpickler may apply to an object (construct, ``__new__``
    with arguments, ``__setstate__``, list appends, item assignment) is accepted and ignored."""

    global_name = "?"

    def __new__(cls, *args, **kwargs):
        return object.__new__(cls)

    def __init__(self, *args, **kwargs) -> None:
        pass

    def __setstate__(self, state) -> None:
        pass

    def append(self, item) -> None:
        pass

    def extend(self, items) -> None:
        pass

    def __setitem__(self, key, value) -> None:
        pass

    def __repr__(self) -> str:
        return f"<not loaded: {self.global_name}>"


def _inert_class(global_name: str) -> type:
    return type(f"Inert[{global_name}]", (Inert,), {"global_name": global_name})


def _is_inert(obj) -> bool:
    return isinstance(obj, Inert) or (isinstance(obj, type) and issubclass(obj, Inert))


def _torch_load(path: Path):
    return torch.load(path, map_location="cpu", weights_only=True)


def _reason(e: Exception) -> str:
    """The informative line of torch's weights-only refusal (it wraps it in a long notice)."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    for ln in lines:
        if "GLOBAL" in ln or "Unsupported" in ln or "unsupported" in ln:
            return ln.rstrip(".")
    return lines[0].rstrip(".") if lines else type(e).__name__


def _load_with_placeholders(path: Path, refusal: Exception):
    """Weights-only load with every non-allowed global replaced by an :class:`Inert` class."""
    lister = getattr(torch.serialization, "get_unsafe_globals_in_checkpoint", None)
    safe_globals = getattr(torch.serialization, "safe_globals", None)
    first_line = _reason(refusal)
    if lister is None or safe_globals is None:  # torch < 2.6
        raise WeightsError(
            f"{path} needs Python classes to be unpickled, which lrgmm never does ({first_line}). "
            f"Upgrade torch to 2.6 or later to read Lightning checkpoints, or: {RESAVE_HINT}"
        ) from None
    try:
        names = sorted(lister(str(path)))
    except Exception as e:  # not a zip checkpoint: garbage, or the legacy (pre-1.6) format
        raise WeightsError(
            f"cannot read checkpoint {path}: {first_line}. It is not a zip-format torch.save file "
            f"({e}), the only kind whose content lrgmm can inspect without running it; if it is a "
            f"checkpoint in the legacy format, re-save it with a recent torch. {RESAVE_HINT}"
        ) from None
    if not names:  # refused for another reason than a class: report torch's words
        raise WeightsError(f"cannot read checkpoint {path}: {first_line}") from None
    stubs = [(_inert_class(n), n) for n in names]
    try:
        with safe_globals(stubs):
            obj = _torch_load(path)
    except Exception as e:
        raise WeightsError(
            f"cannot read checkpoint {path} without running code from it "
            f"(it names {', '.join(names[:5])}{'...' if len(names) > 5 else ''}; torch's "
            f"weights-only loader refused: {_reason(e)}). {RESAVE_HINT}"
        ) from None
    return obj, names


def _find_weights(obj, path: Path) -> Mapping:
    if isinstance(obj, Mapping):
        sd = obj.get("state_dict")
        if isinstance(sd, Mapping):
            return sd
        if _is_inert(sd):
            raise WeightsError(
                f"{path}: its 'state_dict' entry is a pickled {sd.global_name} object, not a "
                f"dictionary of tensors; reading it would mean running that class's code, which "
                f"lrgmm never does. {RESAVE_HINT}"
            )
        return obj
    if _is_inert(obj):
        raise WeightsError(
            f"{path} holds a pickled {obj.global_name} object (a whole model saved with "
            f"torch.save(model)?), not a state dict; reading it would mean running that class's "
            f"code, which lrgmm never does. {RESAVE_HINT}"
        )
    raise WeightsError(
        f"{path} holds a {type(obj).__name__}, not a state dict (a dictionary of tensors, or a "
        f"Lightning checkpoint with a 'state_dict' entry). {RESAVE_HINT}"
    )


def load_state_dict(path: str | Path) -> tuple[dict[str, torch.Tensor], list[str]]:
    """The tensors of a checkpoint file, never running code from it.

    ``path`` may be a ``.safetensors`` file, a plain ``torch.save``'d state dict, or a Lightning
    checkpoint (``{"state_dict": ..., "callbacks": ..., ...}``). Returns ``(state_dict, skipped)``:
    the tensors by key, and the names of the Python classes/functions the file referred to
    outside the weights, which were replaced by inert placeholders and dropped (empty for a
    clean file). Raises :class:`WeightsError` for a missing or unreadable file, a file whose
    weights are pickled objects rather than tensors, or a state dict without tensors.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise WeightsError(f"checkpoint {path} does not exist")
    skipped: list[str] = []
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return dict(load_file(str(path), device="cpu")), skipped
        except Exception as e:
            raise WeightsError(f"cannot read safetensors file {path}: {e}") from None
    try:
        obj = _torch_load(path)
    except pickle.UnpicklingError as e:  # what weights_only raises for a global it refuses
        obj, skipped = _load_with_placeholders(path, e)
    except Exception as e:  # truncated zip, not a checkpoint at all, ...
        raise WeightsError(f"cannot read checkpoint {path}: {type(e).__name__}: {e}") from None

    sd = _find_weights(obj, path)
    tensors: dict[str, torch.Tensor] = {}
    objects: dict[str, str] = {}
    for key, value in sd.items():
        if isinstance(value, torch.Tensor):
            tensors[str(key)] = value.detach()
        elif _is_inert(value):
            objects[str(key)] = value.global_name
    if objects:
        listed = ", ".join(f"{k} ({v})" for k, v in list(objects.items())[:5])
        raise WeightsError(
            f"{path}: {len(objects)} weight entries are pickled Python objects, not tensors "
            f"({listed}); reading them would mean running their code, which lrgmm never does. "
            f"{RESAVE_HINT}"
        )
    if not tensors:
        raise WeightsError(f"{path} holds no tensors (is it a checkpoint of model weights?)")
    return tensors, skipped
