"""A local web studio: fit, generate, inspect provenance (and edit / complete once those exist).

    lrgmm serve faces.lrgmm --data photos/        # http://127.0.0.1:8765/

``lrgmm.studio.service`` holds the state and the work (``Studio``), with its parts in ``pools``
(bounded worker pools), ``grids`` (a bounded cache of generated faces), ``uploads``, ``jobs`` (fit
jobs) and ``neighbours`` (nearest training faces); ``lrgmm.studio.app`` the HTTP API (FastAPI,
described at ``/openapi.json``) and the page (``static/``: plain HTML, CSS and JavaScript,
nothing loaded from the internet); ``lrgmm.studio.server.serve`` runs it with uvicorn. Needs the
``studio`` extra: ``pip install 'lrgmm[studio]'``.
"""

from __future__ import annotations

from .server import serve

__all__ = ["Limits", "Studio", "StudioError", "create_app", "serve"]


def __getattr__(name):  # the FastAPI parts load only when used (the extra may be missing)
    if name == "create_app":
        from .server import _require_extra

        _require_extra()
        from .app import create_app

        return create_app
    if name in ("Studio", "Limits", "StudioError"):
        from . import service

        return getattr(service, name)
    raise AttributeError(name)
