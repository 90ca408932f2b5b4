"""Autoencoder backends and a name -> factory registry.

The rest of the package asks for a backend by name (``get_autoencoder("taef2")``); a model file
stores the name and the backend's ``config()`` (the keyword arguments that rebuild it), and a new
backend only has to ``register`` itself.

Backends:

- ``taef2``: the default, TAEF2 (weights found by lookup, see ``lrgmm.io.weights``).
- ``vqgan``: a taming-transformers VQGAN checkpoint + YAML config, the paper's autoencoder
  (:class:`VQGAN`; needs ``pip install 'lrgmm[diffusers]'``).
- ``diffusers``: a local diffusers ``AutoencoderKL`` or ``VQModel`` folder (:class:`DiffusersVAE`;
  needs ``pip install 'lrgmm[diffusers]'``).
- ``fake``: fixed linear patch maps with TAEF2's latent shape, no weights (:class:`FakeAutoencoder`):
  for tests and for trying the command line without weights; its faces are blurry.

The optional backends are always registered; a missing dependency surfaces when one is built, as
an :class:`OptionalDependencyError` naming the extra to install.
"""

from __future__ import annotations

from typing import Callable

from lrgmm.autoencoders.base import Autoencoder
from lrgmm.autoencoders.diffusers_vae import DiffusersVAE
from lrgmm.autoencoders.fake import FakeAutoencoder
from lrgmm.autoencoders.taef2 import TAEF2
from lrgmm.autoencoders.vqgan import VQGAN
from lrgmm.errors import OptionalDependencyError, ParameterError

__all__ = [
    "Autoencoder",
    "TAEF2",
    "VQGAN",
    "DiffusersVAE",
    "FakeAutoencoder",
    "OptionalDependencyError",
    "register",
    "available",
    "get_autoencoder",
    "backend_options",
]

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
    """Build the backend registered as ``name`` with ``kwargs``: ``device``, ``batch_size`` and
    ``precision`` ("fp32", "bf16", "auto"; ``lrgmm.autoencoders.precision``) for all;
    ``weights_dir`` (taef2); ``checkpoint``, ``config``, ``requantize`` (vqgan); ``path``,
    ``subfolder``, ``requantize`` (diffusers)."""
    try:
        factory = _FACTORIES[name]
    except KeyError:
        raise ParameterError(
            f"unknown autoencoder {name!r}; available: {', '.join(available()) or '(none)'}"
        ) from None
    return factory(**kwargs)


# The command line's generic autoencoder options -> each backend's keyword argument.
_GENERIC_OPTIONS = ("weights", "config", "subfolder", "requantize")


def backend_options(name: str, **generic) -> dict:
    """Map the command line's generic options (``weights``, ``config``, ``subfolder``,
    ``requantize``; None = not given) to the keyword arguments of backend ``name``.

    ``weights`` is where the weights are: TAEF2's folder (``weights_dir``), the VQGAN checkpoint
    (``checkpoint``), the diffusers folder (``path``). A backend declares the options it takes in
    its ``option_names`` class attribute; giving one it does not take is a ValueError, so
    ``--ae-config`` with TAEF2 is an error rather than silently ignored.
    """
    unknown = set(generic) - set(_GENERIC_OPTIONS)
    if unknown:
        raise TypeError(f"unknown generic autoencoder options {sorted(unknown)}; known: {list(_GENERIC_OPTIONS)}")
    try:
        factory = _FACTORIES[name]
    except KeyError:
        raise ParameterError(
            f"unknown autoencoder {name!r}; available: {', '.join(available()) or '(none)'}"
        ) from None
    names: dict[str, str] = getattr(factory, "option_names", {})
    given = {k: v for k, v in generic.items() if v is not None}
    refused = sorted(k for k in given if k not in names)
    if refused:
        takes = ", ".join(f"--ae-{k}" if k != "requantize" else "--requantize" for k in names) or "none"
        flags = ", ".join(f"--ae-{k}" if k != "requantize" else "--requantize" for k in refused)
        raise ParameterError(f"the {name} autoencoder does not take {flags} (it takes: {takes})")
    return {names[k]: (str(v) if k in ("weights", "config") else v) for k, v in given.items()}


register("taef2", TAEF2)
register("vqgan", VQGAN)
register("diffusers", DiffusersVAE)
register("fake", FakeAutoencoder)
