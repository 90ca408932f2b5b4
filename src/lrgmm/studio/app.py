"""The studio's HTTP API (FastAPI; OpenAPI at ``/docs`` and ``/openapi.json``) and its page.

Every error is JSON ``{"error": message, "status": code}`` with a 4xx status for bad requests
(unknown ids, out-of-range values, non-image or oversized uploads) and 5xx only for a failure of
the server's own; the server stays up either way.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..errors import LrgmmError
from .service import Studio, StudioError, TooLargeError

STATIC = Path(__file__).parent / "static"
SESSION_COOKIE = "lrgmm_session"
_NO_STORE = {"Cache-Control": "no-store"}
_IMMUTABLE = {"Cache-Control": "private, max-age=3600"}


class GenerateRequest(BaseModel):
    model: str = Field(description="model id from /api/models")
    n: int = Field(16, description="number of faces (1..max_faces, see /api/status)")
    seed: int = Field(0, ge=0, lt=2**63, description="seed of the draw: same model, seed and settings give the same faces")
    nn: bool = Field(True, description="run the nearest-neighbour step (LR-GMM-NN) and return provenance")
    temperature: float | None = Field(None, description="lambda, at most the model's fitted one (default: the fitted one)")
    nn_iterations: int | None = Field(None, description="NN projections (default: the model's)")
    replaces: str | None = Field(None, description="id of a grid this one replaces: its remaining decoding is cancelled")


class FitRequest(BaseModel):
    folder: str | None = Field(None, description="a data folder name from /api/folders")
    upload: str | None = Field(None, description="an upload id from POST /api/uploads (same session)")
    n_images: int | None = Field(None, description="faces drawn from the folder (default: all)")
    seed: int = Field(0, ge=0, lt=2**63, description="seed of the subset and of the EM initialisation")
    n_components: int | None = Field(None, ge=1, le=64, description="K (default: round(N / 128) in [1, 64])")
    temperature: float | None = Field(None, gt=0, le=1, description="lambda of the fit (default 0.12)")


class EditRequest(BaseModel):
    grid: str
    face: int
    attribute: str = Field("gender", description="attribute of lrgmm.labels (gender, age, race)")
    negative: str | None = None
    positive: str | None = None
    alphas: list[float] = Field(default_factory=lambda: [-2.0, -1.0, 0.0, 1.0, 2.0])
    nn: bool = True
    seed: int = Field(0, ge=0, lt=2**63)


class CompleteRequest(BaseModel):
    grid: str
    face: int
    box: list[int] = Field(description="[x0, y0, x1, y1] in image pixels: the region to fill")
    n: int = 4
    seed: int = Field(0, ge=0, lt=2**63)


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message, "status": status}, status_code=status)


def _png(data: bytes, download: str | None = None, cache: bool = True) -> Response:
    headers = dict(_IMMUTABLE if cache else _NO_STORE)
    if download:
        headers["Content-Disposition"] = f'attachment; filename="{download}"'
    return Response(data, media_type="image/png", headers=headers)


def create_app(studio: Studio | None = None, **studio_options) -> FastAPI:
    """The FastAPI application around a ``Studio`` (built from ``studio_options`` when not given)."""
    studio = studio if studio is not None else Studio(**studio_options)

    @asynccontextmanager
    async def lifespan(app):
        yield
        studio.close()

    app = FastAPI(
        title="lrgmm studio",
        version="1",
        description="Fit LR-GMM-NN face generators, generate faces, and inspect where every latent "
        "pixel came from. Errors are JSON {error, status}.",
        lifespan=lifespan,
    )
    app.state.studio = studio

    # ------------------------------------------------------------------ errors
    @app.exception_handler(StudioError)
    async def _studio_error(request, exc: StudioError):
        return _error(exc.status, str(exc))

    @app.exception_handler(LrgmmError)
    async def _lrgmm_error(request, exc: LrgmmError):
        return _error(400, str(exc))

    @app.exception_handler(ValueError)
    async def _value_error(request, exc: ValueError):
        return _error(400, str(exc))

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
            msg = f"no such endpoint: {request.url.path} (see /docs)"
        return _error(exc.status_code, msg)

    @app.exception_handler(Exception)
    async def _unexpected(request, exc: Exception):
        return _error(500, f"internal error: {type(exc).__name__}: {exc}")

    # --------------------------------------------------------------- sessions
    @app.middleware("http")
    async def _session(request: Request, call_next):
        sid = request.cookies.get(SESSION_COOKIE)
        fresh = not (sid and len(sid) == 32 and sid.isalnum())
        if fresh:
            sid = secrets.token_hex(16)
        request.state.session = sid
        response = await call_next(request)
        if fresh:
            response.set_cookie(SESSION_COOKIE, sid, httponly=True, samesite="strict")
        return response

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
        lim = studio.limits
        length = request.headers.get("content-length")
        if length and length.isdigit() and int(length) > lim.max_request_bytes:
            raise TooLargeError(f"upload of {int(length) / 2**20:.0f} MiB; at most {lim.max_request_bytes / 2**20:.0f} MiB per request")
        form = await request.form(max_files=lim.max_upload_files + 1, max_fields=16)
        try:
            items = form.getlist("files")
            if len(items) > lim.max_upload_files:
                raise TooLargeError(f"more than {lim.max_upload_files} files in one upload")
            files = []
            for item in items:
                if isinstance(item, str):
                    raise StudioError("'files' must be file parts, not text fields")
                data = await item.read(lim.max_upload_bytes + 1)
                files.append((item.filename or "", data))
        finally:
            await form.close()
        up = await studio.sample_pool.run(studio.save_upload, request.state.session, files)
        return {"upload": up.id, "files": up.files}

    @app.post("/api/fit", summary="Start fitting a model from a data folder or an upload; poll /api/jobs/{id}")
    async def fit(req: FitRequest, request: Request):
        # Listing a large folder takes a moment: in a thread, off the event loop.
        job = await asyncio.to_thread(
            lambda: studio.start_fit(folder=req.folder, upload=req.upload, session=request.state.session,
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
                                     nn_iterations=req.nn_iterations, replaces=req.replaces)
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

    # ------------------------------------------------ edit / complete (optional)
    @app.post("/api/edit", summary="Edit one face along an attribute (when lrgmm.editing is installed)")
    async def edit(req: EditRequest):
        grid = await studio.edit(req.grid, req.face, req.attribute, req.alphas, nn=req.nn, seed=req.seed,
                                 negative=req.negative, positive=req.positive)
        return grid.info()

    @app.post("/api/complete", summary="Fill a box of one face with n completions (when lrgmm.conditional is installed)")
    async def complete(req: CompleteRequest):
        grid = await studio.complete(req.grid, req.face, req.box, n=req.n, seed=req.seed)
        return grid.info()

    return app
