"""The studio's HTTP API (FastAPI; its OpenAPI description at ``/openapi.json``) and its page.

Every error is JSON ``{"error": message, "status": code}`` with a 4xx status for bad requests
(unknown ids, out-of-range values, non-image or oversized uploads) and 5xx only for a failure of
the server's own; the server stays up either way. Messages quote at most a short prefix of a
client's value and name no server path.

The studio has no accounts, so it defends the person running it against *other web pages* open in
their browser. Before any route sees a request, ``_Guard`` (outside every other layer, so it also
covers 404s, static files and 500s):

- answers 400 unless the Host header names the studio (loopback names and the ``--host`` it
  binds, with or without a port): a page of another site that re-points its own name at 127.0.0.1
  (DNS rebinding) would otherwise read training faces and drive the API as if it were the page;
- answers 403 to a state-changing request (anything but GET, HEAD, OPTIONS) whose Origin, or
  Referer when there is no Origin, is not the studio's own address: a multipart upload or a form
  post is a "simple" request that another site may send without asking. A request carrying
  neither is allowed: browsers send Origin with every cross-site POST, so it comes from a program
  such as curl, which could set any header anyway;
- caps the request body as the bytes arrive, not only by Content-Length (a chunked request has
  none): uploads at ``Limits.max_request_bytes``, everything else at ``Limits.max_json_bytes``;
  413 beyond;
- adds to every response ``X-Frame-Options: DENY``, a Content-Security-Policy allowing only the
  studio's own scripts, styles and images (the page has no inline script or style attribute;
  setting ``element.style`` from studio.js is not restricted by CSP), ``X-Content-Type-Options:
  nosniff`` and ``Cross-Origin-Resource-Policy: same-origin`` (other sites cannot even embed the
  training faces).

Sessions (whose uploads are whose) are ids the server issues in an HttpOnly, SameSite=Strict
cookie, signed with a key made at start-up: a cookie the server did not issue is ignored and a new
id issued, so a client cannot pick a session id. ``/docs`` and ``/redoc`` are off (FastAPI's pages
load their scripts from a CDN; the studio loads nothing from the internet).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import json
import secrets
from typing import Literal
from collections.abc import Iterable
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import urlsplit

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import cookie_parser

from ..defaults import DEFAULTS, NN_ORDERS
from ..errors import LrgmmError, StudioError, TooLargeError
from ..pipeline.conditional import N_COMPLETIONS
from .names import quote, size_text
from .service import Studio

STATIC = Path(__file__).parent / "static"
SESSION_COOKIE = "lrgmm_session"
SESSION_KEY = "lrgmm.session"  # the request's session id, in the ASGI scope
_NO_STORE = {"Cache-Control": "no-store"}
_IMMUTABLE = {"Cache-Control": "private, max-age=3600"}

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
UPLOAD_PATH = "/api/uploads"
SECURITY_HEADERS = (
    (b"x-frame-options", b"DENY"),
    (b"content-security-policy",
     b"default-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"),
    (b"x-content-type-options", b"nosniff"),
    (b"cross-origin-resource-policy", b"same-origin"),
)
MAX_MESSAGE = 600  # characters of an error message (clients' values are quoted shorter still)


class GenerateRequest(BaseModel):
    model: str = Field(description="model id from /api/models")
    n: int = Field(16, description="number of faces (1..max_faces, see /api/status)")
    seed: int = Field(0, ge=0, lt=2**63, description="seed of the draw: same model, seed and settings give the same faces")
    nn: bool = Field(True, description="run the nearest-neighbour step (LR-GMM-NN) and return provenance")
    temperature: float | None = Field(None, description="lambda, at most the model's fitted one (default: the fitted one)")
    nn_iterations: int | None = Field(None, description="NN projections (default: the model's)")
    max_share: float | None = Field(None, gt=0, le=1, description="copy budget: no face takes more than this share of "
                                    "its latent pixels from one training photo (default: the model's; 1 = none; at "
                                    "least the model's min_max_share from /api/models)")
    nn_order: Literal[NN_ORDERS] | None = Field(None, description="order of the NN step: parallel (eq. 5) or raster "
                                                "(position by position; default: the model's)")
    replaces: str | None = Field(None, description="id of a grid this one replaces: its remaining decoding is cancelled")


class FitRequest(BaseModel):
    folder: str | None = Field(None, description="a data folder name from /api/folders")
    upload: str | None = Field(None, description="an upload id from POST /api/uploads (same session)")
    n_images: int | None = Field(None, description="faces drawn from the folder (default: all)")
    seed: int = Field(0, ge=0, lt=2**63, description="seed of the subset and of the EM initialisation")
    n_components: int | None = Field(None, ge=1, le=128, description="K (default: round(N / 128) in [1, 128])")
    temperature: float | None = Field(None, gt=0, le=1, description=f"lambda of the fit (default {DEFAULTS['temperature']})")


class EditRequest(BaseModel):
    grid: str
    face: int
    attribute: str = Field("gender", description="attribute of lrgmm.data.labels (gender, age, race)")
    negative: str | None = None
    positive: str | None = None
    alphas: list[float] = Field(default_factory=lambda: [-2.0, -1.0, 0.0, 1.0, 2.0])
    nn: bool = True
    seed: int = Field(0, ge=0, lt=2**63)


class CompleteRequest(BaseModel):
    grid: str
    face: int
    box: list[int] = Field(description="[x0, y0, x1, y1] in image pixels: the region to fill")
    n: int = N_COMPLETIONS
    seed: int = Field(0, ge=0, lt=2**63)


def _error(status: int, message: str) -> JSONResponse:
    if len(message) > MAX_MESSAGE:
        message = message[:MAX_MESSAGE] + "..."
    return JSONResponse({"error": message, "status": status}, status_code=status)


# --------------------------------------------------------------------------------------------
# The guard: hosts, origins, body sizes, security headers


def _split_host(value: str) -> tuple[str, int | None] | None:
    """``(name, port)`` of a Host header value (``name`` lower-cased, IPv6 without brackets), or
    None when it is not a plain ``name[:port]``."""
    v = value.strip().lower()
    if v.startswith("["):
        end = v.find("]")
        if end < 0:
            return None
        name, rest = v[1:end], v[end + 1:]
    else:
        name, sep, port = v.partition(":")
        rest = sep + port
    if rest and not (rest[0] == ":" and rest[1:].isdigit() and len(rest) <= 6):
        return None
    return (name, int(rest[1:]) if rest else None) if name else None


_DEFAULT_PORTS = {"http": 80, "https": 443}


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


class _Guard:
    """See the module docstring. ``hosts``: the host names accepted; ``any_ip``: also accept any
    IP address (a server bound to all interfaces is reached by whichever address the client
    uses; DNS rebinding needs a *name*, so addresses are safe to accept)."""

    def __init__(self, studio: Studio, hosts: Iterable[str], any_ip: bool = False):
        self.studio = studio
        self.sessions = _Sessions()
        self.hosts = frozenset(h.strip().strip("[]").lower() for h in hosts if h)
        self.any_ip = any_ip

    def host_allowed(self, name: str) -> bool:
        return name in self.hosts or (self.any_ip and _is_ip(name))

    async def __call__(self, scope, receive, send, app) -> None:
        headers = Headers(scope=scope)
        sid = cookie_parser(headers.get("cookie", "")).get(SESSION_COOKIE)
        new_cookie = None
        if not self.sessions.valid(sid):  # none, or one the server did not issue: a new id
            sid = self.sessions.issue()
            new_cookie = self.sessions.cookie(sid)
        scope[SESSION_KEY] = sid

        async def send_secured(message):
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {k.lower() for k, _ in headers}
                headers += [(k, v) for k, v in SECURITY_HEADERS if k not in present]
                if new_cookie and message.get("status", 500) < 400:
                    headers.append((b"set-cookie", new_cookie))
                message = {**message, "headers": headers}
            await send(message)

        async def refuse(status: int, message: str) -> None:
            await _error(status, self.studio.public(message))(scope, receive, send_secured)

        host = headers.get("host", "")
        parsed = _split_host(host)
        if parsed is None or not self.host_allowed(parsed[0]):
            shown = ", ".join(f"[{h}]" if ":" in h else h for h in sorted(self.hosts))
            shown += ", or an IP address" if self.any_ip else ""
            return await refuse(400, f"this server does not answer to host {quote(host)}; open the studio "
                                     f"by one of the names it serves ({shown}), e.g. http://127.0.0.1:PORT/")
        scheme = scope.get("scheme", "http")
        if scope["method"] not in SAFE_METHODS:
            source = headers.get("origin") or headers.get("referer")
            if source is not None and not self._same_origin(source, scheme, parsed):
                what = "Origin" if headers.get("origin") else "Referer"
                return await refuse(403, f"{scope['method']} {quote(scope.get('path', ''))} refused: it comes from "
                                         f"another site ({what} {quote(source)}); use the studio's own page")
        upload = scope.get("path") == UPLOAD_PATH
        lim = self.studio.limits
        cap = lim.max_request_bytes if upload else lim.max_json_bytes
        what = "an upload" if upload else "a request body (other than an upload)"
        too_large = f"{what} may have at most {size_text(cap)}" + (
            "; upload fewer or smaller files at a time" if upload else "")
        length = headers.get("content-length")
        if length is not None:
            if not length.strip().isdigit():
                return await refuse(400, f"bad Content-Length {quote(length)}")
            if int(length) > cap:
                return await refuse(413, f"{too_large}; this one has {size_text(int(length))}")
        received = 0

        async def receive_capped():
            # Counted as the body arrives: a chunked request has no Content-Length to trust.
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > cap:
                    raise HTTPException(413, f"{too_large}; this one has more")
            return message

        await app(scope, receive_capped, send_secured)

    @staticmethod
    def _same_origin(source: str, scheme: str, host: tuple[str, int | None]) -> bool:
        """Whether the Origin / Referer ``source`` is the address the request was sent to."""
        try:
            url = urlsplit(source.strip())
            port = url.port
        except ValueError:
            return False
        if url.scheme not in _DEFAULT_PORTS or not url.hostname:
            return False  # "null" (sandboxed frames, file: pages) and other schemes
        mine = (host[0], host[1] or _DEFAULT_PORTS.get(scheme))
        return (url.hostname.lower(), port or _DEFAULT_PORTS[url.scheme]) == mine


class _Sessions:
    """Session ids the server issues: a random token and its HMAC under a key made at start-up,
    so ids are checked without keeping a table, and ids the server did not issue are refused."""

    def __init__(self):
        self._key = secrets.token_bytes(32)

    def _sign(self, token: str) -> str:
        return hmac.new(self._key, token.encode(), hashlib.sha256).hexdigest()[:24]

    def issue(self) -> str:
        token = secrets.token_hex(16)
        return token + self._sign(token)

    def valid(self, sid: str | None) -> bool:
        return (isinstance(sid, str) and len(sid) == 56 and sid.isalnum()
                and hmac.compare_digest(sid[32:], self._sign(sid[:32])))

    @staticmethod
    def cookie(sid: str) -> bytes:
        """The Set-Cookie value: not readable by scripts, not sent with other sites' requests."""
        return f"{SESSION_COOKIE}={sid}; HttpOnly; Path=/; SameSite=strict".encode("latin-1")


class StudioApp(FastAPI):
    """FastAPI with the studio's guard in front of everything, Starlette's error layer included
    (so that even a 500 carries the security headers)."""

    guard: _Guard | None = None

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and self.guard is not None:
            await self.guard(scope, receive, send, super().__call__)
        else:
            await super().__call__(scope, receive, send)


def _png(data: bytes, download: str | None = None, cache: bool = True) -> Response:
    headers = dict(_IMMUTABLE if cache else _NO_STORE)
    if download:
        headers["Content-Disposition"] = f'attachment; filename="{download}"'
    return Response(data, media_type="image/png", headers=headers)


def create_app(studio: Studio | None = None, *, allowed_hosts: Iterable[str] = (), any_ip: bool = False,
               **studio_options) -> FastAPI:
    """The FastAPI application around a ``Studio`` (built from ``studio_options`` when not given).

    ``allowed_hosts``: host names the server answers to besides the loopback names (127.0.0.1,
    localhost, ::1), e.g. the ``--host`` it binds; ``any_ip``: also any IP address (for a server
    bound to all interfaces). Requests naming another host get 400."""
    studio = studio if studio is not None else Studio(**studio_options)

    @asynccontextmanager
    async def lifespan(app):
        yield
        studio.close()

    app = StudioApp(
        title="lrgmm studio",
        version="1",
        description="Fit LR-GMM-NN face generators, generate faces, and inspect where every latent "
        "pixel came from. Errors are JSON {error, status}.",
        lifespan=lifespan,
        docs_url=None,  # FastAPI's /docs and /redoc pages load scripts from a CDN
        redoc_url=None,
    )
    app.state.studio = studio
    app.guard = _Guard(studio, LOOPBACK_HOSTS | set(allowed_hosts), any_ip)

    # ------------------------------------------------------------------ errors
    @app.exception_handler(StudioError)
    async def _studio_error(request, exc: StudioError):
        return _error(exc.status, studio.public(str(exc)))

    @app.exception_handler(LrgmmError)
    async def _lrgmm_error(request, exc: LrgmmError):
        return _error(400, studio.public(str(exc)))

    @app.exception_handler(ValueError)
    async def _value_error(request, exc: ValueError):
        return _error(400, studio.public(str(exc)))

    @app.exception_handler(RequestValidationError)
    async def _validation(request, exc: RequestValidationError):
        parts = []
        for e in exc.errors():
            where = ".".join(str(x) for x in e.get("loc", ()) if x not in ("body", "query", "path"))
            parts.append(f"{where or 'request'}: {e.get('msg')}")
        return _error(422, "invalid request: " + "; ".join(parts))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request, exc: StarletteHTTPException):
        msg = exc.detail if isinstance(exc.detail, str) else json.dumps(exc.detail)
        if exc.status_code == 404 and msg == "Not Found":
            msg = f"no such endpoint: {quote(request.url.path)} (see /openapi.json)"
        return _error(exc.status_code, studio.public(msg))

    @app.exception_handler(Exception)
    async def _unexpected(request, exc: Exception):
        return _error(500, studio.public(f"internal error: {type(exc).__name__}: {exc}"))

    # ------------------------------------------------------------------- page
    @app.get("/", include_in_schema=False)
    async def index():
        return FileResponse(STATIC / "index.html", headers=_NO_STORE)

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    # --------------------------------------------------------------- listings
    @app.get("/api/status", summary="Queues, cache, limits and optional features (edit, complete)")
    async def status():
        return studio.status()

    @app.get("/api/models", summary="Loaded and fitted models")
    async def models():
        return [e.info() for e in list(studio.models.values())]

    @app.get("/api/models/{model_id}", summary="One model")
    async def model(model_id: str):
        return studio.model(model_id).info()

    @app.get("/api/folders", summary="Data folders the page may fit from (names only)")
    async def folders():
        return studio.folder_list()

    @app.get("/api/models/{model_id}/training/{index}.png", summary="A training face, by index into the model's training files")
    async def training_face(model_id: str, index: int, size: int = 64):
        data = await studio.sample_pool.run(studio.training_thumbnail, model_id, index, size)
        return _png(data)

    # ------------------------------------------------------------------ fits
    @app.post("/api/uploads", summary="Upload face images (multipart field 'files') into this session's folder")
    async def upload(request: Request):
        lim = studio.limits  # (the request's total size is capped by the guard as it arrives)
        form = await request.form(max_files=lim.max_upload_files + 1, max_fields=16)
        try:
            items = form.getlist("files")
            if len(items) > lim.max_upload_files:
                raise TooLargeError(f"more than {lim.max_upload_files} files in one upload")
            files = []
            for item in items:
                if isinstance(item, str):
                    raise StudioError("'files' must be file parts, not text fields")
                size = item.file.seek(0, 2)  # its real size, for the message (the part is spooled)
                await item.seek(0)
                if size > lim.max_upload_bytes:
                    raise TooLargeError(f"{quote(item.filename or '')} is {size_text(size)}; each image must be "
                                        f"at most {size_text(lim.max_upload_bytes)}")
                files.append((item.filename or "", await item.read()))
        finally:
            await form.close()
        up = await studio.sample_pool.run(studio.save_upload, request.scope[SESSION_KEY], files)
        return {"upload": up.id, "files": up.files}

    @app.post("/api/fit", summary="Start fitting a model from a data folder or an upload; poll /api/jobs/{id}")
    async def fit(req: FitRequest, request: Request):
        # Listing a large folder takes a moment: in a thread, off the event loop.
        job = await asyncio.to_thread(
            lambda: studio.start_fit(folder=req.folder, upload=req.upload, session=request.scope[SESSION_KEY],
                                     n_images=req.n_images, seed=req.seed, n_components=req.n_components,
                                     temperature=req.temperature))
        return job.info()

    @app.get("/api/jobs/{job_id}", summary="Progress of a fit job")
    async def job(job_id: str):
        return studio.job(job_id).info()

    # -------------------------------------------------------------- generate
    @app.post("/api/generate", summary="Sample n faces; returns at once with per-face URLs that answer as faces are decoded")
    async def generate(req: GenerateRequest):
        grid = await studio.generate(req.model, req.n, req.seed, nn=req.nn, temperature=req.temperature,
                                     nn_iterations=req.nn_iterations, replaces=req.replaces, max_share=req.max_share,
                                     nn_order=req.nn_order)
        return grid.info()

    @app.get("/api/grids/{grid_id}", summary="A grid's settings and decoding state")
    async def grid(grid_id: str):
        return studio.grids.get(grid_id).info()

    @app.get("/api/grids/{grid_id}/faces/{index}.png", summary="One face (waits until its batch is decoded)")
    async def face(grid_id: str, index: int, download: bool = False):
        return _png(await studio.face(grid_id, index), f"{grid_id}_face_{index:02d}.png" if download else None)

    @app.get("/api/grids/{grid_id}/grid.png", summary="All faces of a grid as one PNG")
    async def grid_png(grid_id: str, download: bool = False):
        return _png(await studio.grid_png(grid_id), f"{grid_id}_grid.png" if download else None)

    @app.get("/api/grids/{grid_id}/faces/{index}/provenance.json", summary="Provenance: training face per latent pixel, sources with shares")
    async def provenance(grid_id: str, index: int, download: bool = False):
        rec = studio.provenance(grid_id, index)
        headers = {"Content-Disposition": f'attachment; filename="{grid_id}_face_{index:02d}_provenance.json"'} if download else {}
        return JSONResponse(rec, headers=headers)

    @app.get("/api/grids/{grid_id}/faces/{index}/provenance.png", summary="Colour-coded provenance map (one colour per training face)")
    async def provenance_png(grid_id: str, index: int):
        return _png(studio.provenance_png(grid_id, index))

    @app.get("/api/grids/{grid_id}/faces/{index}/nearest",
             summary="The face's 3 nearest training faces in Inception space (202 with progress while the "
                     "model's training features are computed, once per model)")
    async def nearest(grid_id: str, index: int):
        status, body = await studio.nearest(grid_id, index)
        return JSONResponse(body, status_code=status, headers=_NO_STORE)

    # --------------------------------------------------------- edit / complete
    @app.post("/api/edit", summary="Edit one face along an attribute (501 without GeomLoss: pip install 'lrgmm[edit]')")
    async def edit(req: EditRequest):
        grid = await studio.edit(req.grid, req.face, req.attribute, req.alphas, nn=req.nn, seed=req.seed,
                                 negative=req.negative, positive=req.positive)
        return grid.info()

    @app.post("/api/complete", summary="Fill a box of one face with n completions")
    async def complete(req: CompleteRequest):
        grid = await studio.complete(req.grid, req.face, req.box, n=req.n, seed=req.seed)
        return grid.info()

    return app
