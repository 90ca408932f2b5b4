"""``lrgmm serve``: start the studio with uvicorn. Importable without the ``studio`` extra, so the
command line can read ``serve``'s defaults; the extra is checked when the server starts."""

from __future__ import annotations

from ..autoencoders.precision import DEFAULT_PRECISION, check_precision
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


def check_port(port) -> int:
    """``port`` as an int in 1..65535, or ``LrgmmError`` (the command line checks it while parsing)."""
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise LrgmmError(f"port must be a number between 1 and 65535, got {port!r}")
    return port


_WILDCARD_HOSTS = ("0.0.0.0", "::", "")


def served_hosts(host: str) -> tuple[set[str], bool]:
    """The host names requests may name (besides the loopback ones) for a server bound to
    ``host``, and whether any IP address is accepted too (a server bound to all interfaces is
    reached by the machine's names and addresses)."""
    names = {host}
    if host not in _WILDCARD_HOSTS:
        return names, False
    import socket

    for get in (socket.gethostname, socket.getfqdn):
        try:
            names.add(get())
        except OSError:
            pass
    return names, True


def serve(
    models: list[str] | tuple = (),
    data: list[str] | tuple = (),
    host: str = "127.0.0.1",
    port: int = 8765,
    workers: int = 1,
    log_level: str = "warning",
    precision: str = DEFAULT_PRECISION,
) -> None:
    """Start the studio with uvicorn and print its URL. Binds the loopback interface unless another
    ``host`` is asked for explicitly (then with a warning: the studio has no authentication).
    ``precision``: the autoencoder's arithmetic for every model it loads or fits ("fp32", "bf16",
    "auto"; ``lrgmm.autoencoders.precision``)."""
    import sys

    _require_extra()
    import uvicorn

    from .app import create_app
    from .limits import Limits
    from .service import Studio

    check_port(port)
    if host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: serving on {host}: anyone who can reach this interface can use the studio "
              "and read its training faces (there is no authentication)", file=sys.stderr)
    _check_port(host, port)
    # Studio removes its temporary folder itself when a --data folder or a model file is bad;
    # from here on, whatever ends the server (a failed bind, Ctrl-C) removes it too.
    check_precision(precision)
    studio = Studio(models=models, data=data, workers=workers, limits=Limits(), pipeline_options={"precision": precision})
    try:
        names, any_ip = served_hosts(host)
        app = create_app(studio, allowed_hosts=names, any_ip=any_ip)
        config = uvicorn.Config(app, host=host, port=port, log_level=log_level)
        server = uvicorn.Server(config)
        shown = f"[{host}]" if ":" in host else host
        print(f"lrgmm studio: http://{shown}:{port}/  ({len(studio.models)} model(s), "
              f"{len(studio.folders)} data folder(s); API described at /openapi.json; Ctrl-C stops)", flush=True)
        server.run()
    finally:
        studio.close()
