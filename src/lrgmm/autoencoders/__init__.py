"""Autoencoder backends and a name -> factory registry.

The rest of the package asks for a backend by name (``get_autoencoder("taef2")``), so the name
stored in a model file is enough to rebuild the right autoencoder, and a new backend only has to
``register`` itself.
"""

from __future__ import annotations

from typing import Callable

from lrgmm.autoencoders.base import Autoencoder
from lrgmm.autoencoders.taef2 import TAEF2

__all__ = ["Autoencoder", "TAEF2", "register", "available", "get_autoencoder"]

_FACTORIES: dict[str, Callable[..., Autoencoder]] = {}


def register(name: str, factory: Callable[..., Autoencoder], *, replace: bool = False) -> None:
    """Make ``factory(**kwargs)`` available as ``get_autoencoder(name, **kwargs)``.

    Registering a taken name is refused unless ``replace=True``, so two backends cannot shadow
    each other by accident.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"backend name must be a non-empty string, got {name!r}")
    if not callable(factory):
        raise TypeError(f"factory for {name!r} must be callable, got {type(factory).__name__}")
    if name in _FACTORIES and not replace:
        raise ValueError(f"autoencoder {name!r} is already registered (pass replace=True)")
    _FACTORIES[name] = factory


def available() -> list[str]:
    """Registered backend names, sorted."""
    return sorted(_FACTORIES)


def get_autoencoder(name: str = "taef2", **kwargs) -> Autoencoder:
    """Build the backend registered as ``name`` with ``kwargs`` (e.g. ``device``, ``weights_dir``)."""
    try:
        factory = _FACTORIES[name]
    except KeyError:
        raise ValueError(
            f"unknown autoencoder {name!r}; available: {', '.join(available()) or '(none)'}"
        ) from None
    return factory(**kwargs)


register("taef2", TAEF2)
