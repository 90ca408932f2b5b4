"""Where lrgmm keeps its per-user files: one cache root for weights, latents and features."""

from __future__ import annotations

import os
from pathlib import Path

ENV_CACHE_DIR = "LRGMM_CACHE_DIR"


def cache_dir() -> Path:
    """Root of the per-user lrgmm cache.

    ``$LRGMM_CACHE_DIR`` if set, else ``$XDG_CACHE_HOME/lrgmm``, else ``~/.cache/lrgmm``. Read on
    every call (not at import) so tests and users can change the environment at run time.
    """
    root = os.environ.get(ENV_CACHE_DIR)
    if root:
        return Path(root).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg and os.path.isabs(os.path.expanduser(xdg)):  # the XDG spec says relative = unset
        return Path(xdg).expanduser() / "lrgmm"
    return Path.home() / ".cache" / "lrgmm"
