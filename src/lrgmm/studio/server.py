"""``lrgmm serve``: start the studio with uvicorn. Importable without the ``studio`` extra, so the
command line can read ``serve``'s defaults; the extra is checked when the server starts."""

from __future__ import annotations

from ..errors import LrgmmError, OptionalDependencyError


def _require_extra() -> None:
    try:
        import fastapi  # noqa: F401
        import python_multipart  # noqa: F401  (for uploads)
        import uvicorn  # noqa: F401
    except ImportError as exc:
        raise OptionalDependencyError(
            f"the studio needs the 'studio' extra ({exc.name} is missing): pip install 'lrgmm[studio]'"
        ) from None


def _check_port(host: str, port: int) -> None:
    """Fail with a clear message, before loading anything, when the address cannot be bound."""
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        family, _, _, _, addr = infos[0]
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
            s.bind(addr)
    except OSError as exc:
        raise LrgmmError(
            f"cannot listen on {host} port {port}: {exc.strerror or exc}; choose another --port (or --host)"
        ) from None


def serve(
    models: list[str] | tuple = (),
    data: list[str] | tuple = (),
    host: str = "127.0.0.1",
    port: int = 8765,
    workers: int = 1,
    log_level: str = "warning",
) -> None:
    """Start the studio with uvicorn and print its URL. Binds the loopback interface unless another
    ``host`` is asked for explicitly (then with a warning: the studio has no authentication)."""
    import sys

    _require_extra()
    import uvicorn

    from .app import create_app
    from .service import Limits, Studio

    if host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: serving on {host}: anyone who can reach this interface can use the studio "
              "and read its training faces (there is no authentication)", file=sys.stderr)
    _check_port(host, port)
    studio = Studio(models=models, data=data, workers=workers, limits=Limits())
    app = create_app(studio)
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level)
    server = uvicorn.Server(config)
    shown = f"[{host}]" if ":" in host else host
    print(f"lrgmm studio: http://{shown}:{port}/  ({len(studio.models)} model(s), "
          f"{len(studio.folders)} data folder(s); API docs at /docs; Ctrl-C stops)", flush=True)
    server.run()
