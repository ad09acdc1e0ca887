"""The ASGI app of ``titok serve``: the page (``static/``) and its JSON API.

=====================================  ====================================================================
``GET /``                              the page
``GET /api/info``                      the models, their settings, the limits, the examples
``GET /api/examples/{i}.png``          a shipped example image
``POST /api/tokenize``                 the request body is an image file (``X-File-Name``: its name);
                                       its codes, the picture before and after, the PSNR
``POST /api/detokenize``               ``{"codes", "keep", "image"}``: the image of (edited) codes
``POST /api/generate``                 ``{"label", "num_samples", "seed", "show_steps", "sampling"}``: samples
=====================================  ====================================================================

A refused request gets ``{"error": message}`` with a 4xx status (503 when too many wait), a failure a 500 with a
one-line message; neither shows a traceback (the server's log has it).
"""

from __future__ import annotations

import contextlib
import json
import logging
from dataclasses import asdict
from pathlib import Path
from urllib.parse import unquote

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from titok.serve.engine import Engine
from titok.serve.uploads import example_png
from titok.serve.worker import RequestError, Worker

logger = logging.getLogger(__name__)

STATIC = Path(__file__).resolve().parent / "static"
MAX_JSON_BYTES = 1 << 20
# Everything the page loads comes from this server; images are data: URLs. Nothing can be fetched elsewhere.
SECURITY_HEADERS = [
    (
        b"content-security-policy",
        b"default-src 'self'; img-src 'self' data: blob:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'",
    ),
    (b"x-content-type-options", b"nosniff"),
]


class Api:
    """The endpoints, over one :class:`Engine` and the :class:`Worker` that runs its work one call at a time."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.worker = Worker(engine.scope, engine.limits.max_pending)

    async def info(self, request: Request) -> JSONResponse:
        return JSONResponse(self.engine.info())

    async def example(self, request: Request) -> Response:
        return Response(example_png(request.path_params["index"]), media_type="image/png")

    async def tokenize(self, request: Request) -> JSONResponse:
        data = await _body(request, self.engine.limits.max_bytes)
        name = unquote(request.headers.get("x-file-name", ""))[:200] or "the upload"
        result = await self.worker.run(self.engine.tokenize, data, name)
        return JSONResponse(asdict(result))

    async def detokenize(self, request: Request) -> JSONResponse:
        codes, keep, image = self.engine.decode_request(await _json(request))
        return JSONResponse(asdict(await self.worker.run(self.engine.decode, codes, keep, image)))

    async def generate(self, request: Request) -> JSONResponse:
        job = self.engine.generate_request(await _json(request))
        return JSONResponse(asdict(await self.worker.run(self.engine.generate, job)))


async def _body(request: Request, limit: int) -> bytes:
    """The request body, refused with a 413 as soon as it is known to exceed ``limit`` bytes."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise RequestError(413, f"the file is {int(declared):,} bytes; titok serve takes at most {limit:,}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise RequestError(413, f"the file is more than {limit:,} bytes; titok serve takes at most {limit:,}")
        chunks.append(chunk)
    return b"".join(chunks)


async def _json(request: Request) -> object:
    try:
        return json.loads(await _body(request, MAX_JSON_BYTES))
    except (ValueError, UnicodeDecodeError):
        raise RequestError(400, "the request body is not JSON") from None


async def _refused(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, RequestError)
    return JSONResponse({"error": error.message}, status_code=error.status)


async def _http_error(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, HTTPException)
    return JSONResponse({"error": f"{request.method} {request.url.path}: {error.detail}"}, error.status_code)


async def _failed(request: Request, error: Exception) -> JSONResponse:
    logger.error("%s %s failed", request.method, request.url.path, exc_info=error)
    first = (str(error).strip().splitlines() or [""])[0][:200]
    message = f"the server failed: {type(error).__name__}{': ' + first if first else ''} (its log has the details)"
    return JSONResponse({"error": message}, status_code=500)


class SecurityHeaders:
    """Middleware: every HTTP response carries :data:`SECURITY_HEADERS`."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *SECURITY_HEADERS]}
            await send(message)

        await self.app(scope, receive, send_with_headers if scope["type"] == "http" else send)


def create_app(engine: Engine) -> Starlette:
    """The ASGI app serving ``engine``'s models (``app.state.api`` holds the :class:`Api`)."""
    api = Api(engine)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette):
        yield
        api.worker.close()

    routes = [
        Route("/", lambda request: FileResponse(STATIC / "index.html")),
        Route("/api/info", api.info),
        Route("/api/examples/{index:int}.png", api.example),
        Route("/api/tokenize", api.tokenize, methods=["POST"]),
        Route("/api/detokenize", api.detokenize, methods=["POST"]),
        Route("/api/generate", api.generate, methods=["POST"]),
        Mount("/static", StaticFiles(directory=STATIC)),
    ]
    handlers = {RequestError: _refused, HTTPException: _http_error, Exception: _failed}
    middleware = [Middleware(SecurityHeaders)]
    app = Starlette(routes=routes, middleware=middleware, exception_handlers=handlers, lifespan=lifespan)
    app.state.api = api
    return app
