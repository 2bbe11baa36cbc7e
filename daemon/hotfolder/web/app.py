"""The console's Starlette application: the page, the JSON API of SPEC 11, and its guards.

Every request passes `Guard` first, which counts it by route and status and adds the
headers that keep the page to itself (a content security policy allowing only its own
script and style, no sniffing, no framing). Without a token, only requests naming
this machine in Host are served (a web page elsewhere cannot reach the console by
a name of its own). With one, every API call needs `Authorization: Bearer TOKEN` or
the session cookie the page gets from POST /api/v1/session (HttpOnly,
SameSite=Strict). A request that changes anything is refused when it comes from
another origin (Origin or Sec-Fetch-Site). Errors are JSON `{"error": "plain words"}`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from collections.abc import Iterator
from importlib import resources
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import quote

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Match, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hotfolder.config import is_loopback
from hotfolder.journal import Job
from hotfolder.web import console, uploads
from hotfolder.web.console import Backend, Refused
from hotfolder.web.events import Hub
from hotfolder.web.openapi import description
from hotfolder.web.previews import Previews

log = logging.getLogger("hotfolder.web")

API = "/api/v1/"
COOKIE = "hotfolder_session"
UNSAFE_METHODS = {"POST", "PUT", "PATCH", "DELETE"}
SAME_SITE = {"same-origin", "none"}
CHUNK_BYTES = 256 * 1024
JSON_BYTES = 64 * 1024
STATIC = {"console.js": "text/javascript; charset=utf-8",
          "console.css": "text/css; charset=utf-8"}
PAGE_POLICY = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob:;"
               " connect-src 'self'; form-action 'none'; base-uri 'none';"
               " frame-ancestors 'none'")
API_POLICY = "default-src 'none'; sandbox; frame-ancestors 'none'"


def static_file(name: str) -> bytes:
    """A file of the page from the package."""
    return (resources.files("hotfolder.web") / "static" / name).read_bytes()


def error(status: int, message: str) -> JSONResponse:
    """An error as the API says them."""
    return JSONResponse({"error": message}, status)


def session_value(token: str) -> str:
    """The session cookie's value for a token (the token itself never leaves in a cookie)."""
    return hmac.new(token.encode(), b"hotfolder console session", hashlib.sha256).hexdigest()


def host_name(host: str) -> str:
    """The name part of a Host header (`[::1]:8080` -> `::1`)."""
    if host.startswith("["):
        return host[1:].partition("]")[0]
    return host.rpartition(":")[0] if host.count(":") == 1 else host


class Guard:
    """Metrics, security headers, the Host and origin checks and the token, before any route."""

    def __init__(self, app: ASGIApp, backend: Backend, routes: list[Route]) -> None:
        self.app = app
        self.backend = backend
        self.routes = routes

    def route_of(self, scope: Scope) -> str:
        for route in self.routes:
            match, _ = route.matches(scope)
            if match == Match.FULL:
                return route.path
        return "unknown"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        path = scope["path"]
        policy = API_POLICY if path.startswith(API) else PAGE_POLICY
        status = 500

        async def guarded_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = message.setdefault("headers", [])
                headers += [(b"x-content-type-options", b"nosniff"),
                            (b"referrer-policy", b"no-referrer"),
                            (b"x-frame-options", b"DENY"),
                            (b"content-security-policy", policy.encode()),
                            (b"cache-control", b"no-store")]
            await send(message)

        try:
            refusal = self.refusal(request)
            if refusal is not None:
                await refusal(scope, receive, guarded_send)
            else:
                await self.app(scope, receive, guarded_send)
        finally:
            self.backend.metrics.web_requests.labels(route=self.route_of(scope),
                                                     status=str(status)).inc()

    def refusal(self, request: Request) -> Response | None:
        """Why this request is not served, as a response; None when it may go on."""
        token = self.backend.cfg.web.token
        host = request.headers.get("host", "")
        if token is None and not is_loopback(host_name(host)):
            return error(403, f"this console answers only to requests for this machine"
                         f" (Host: {host or 'none'}); set web.token to serve other names")
        if request.method in UNSAFE_METHODS:
            fetch_site = request.headers.get("sec-fetch-site")
            origin = request.headers.get("origin")
            own = f"{request.url.scheme}://{host}"
            if (fetch_site is not None and fetch_site not in SAME_SITE) or (
                    origin is not None and origin != own):
                return error(403, "refused: the request comes from another site"
                             f" ({origin or fetch_site})")
        path = request.url.path
        if token is None or not path.startswith(API) or path == API + "session":
            return None
        given = request.headers.get("authorization", "")
        if hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            return None
        cookie = request.cookies.get(COOKIE, "")
        if hmac.compare_digest(cookie.encode(), session_value(token).encode()):
            return None
        return error(401, "a token is needed: send Authorization: Bearer TOKEN (web.token)")


class Endpoints:
    """The page and the API calls of one service."""

    def __init__(self, backend: Backend, hub: Hub) -> None:
        self.backend = backend
        self.hub = hub
        self.previews = Previews(backend)
        self.page = static_file("index.html")

    def index(self, request: Request) -> Response:
        return Response(self.page, media_type="text/html; charset=utf-8")

    def static(self, request: Request) -> Response:
        name = request.path_params["name"]
        if name not in STATIC:
            return error(404, f"no file {name!r}")
        return Response(static_file(name), media_type=STATIC[name])

    async def session(self, request: Request) -> Response:
        token = self.backend.cfg.web.token
        body = await json_body(request)
        given = body.get("token")
        if token is None:
            return Response(status_code=204)
        if not isinstance(given, str) or not hmac.compare_digest(given.encode(), token.encode()):
            return error(401, "that is not the token (web.token)")
        response = Response(status_code=204)
        response.set_cookie(COOKIE, session_value(token), httponly=True, samesite="strict",
                            path="/")
        return response

    def folders(self, request: Request) -> Response:
        return JSONResponse(console.upload_folders(self.backend))

    async def upload(self, request: Request) -> Response:
        return JSONResponse(await uploads.receive(request, self.backend), 202)

    def jobs(self, request: Request) -> Response:
        params = request.query_params
        try:
            limit = int(params.get("limit", console.LIST_LIMIT))
        except ValueError:
            raise Refused(400, "limit is a whole number") from None
        before = console.moment(params["before"]) if "before" in params else None
        found = console.list_jobs(self.backend.journal, state=params.get("state"),
                                  folder=params.get("folder"), q=params.get("q"),
                                  limit=limit, before=before)
        return JSONResponse([console.summary(job) for job in found])

    def job(self, request: Request) -> Response:
        return JSONResponse(console.info(self.backend, self.the_job(request)))

    def download(self, request: Request) -> Response:
        found = self.the_job(request)
        if found.state != "done":
            raise Refused(409, f"job {found.id} is {found.state}: there is nothing to download")
        files = console.job_files(self.backend, found)
        try:
            index = int(request.query_params.get("output", "0"))
            location, path = files.outputs[index], files.local[index]
        except (ValueError, IndexError):
            raise Refused(404, f"job {found.id} has {len(files.outputs)} output(s), numbered"
                          " from 0") from None
        src = console.open_under(self.backend.layout.outbox, path) if path else None
        if src is None:
            raise Refused(404, f"{location} is not in the outbox here (removed, or stored"
                          " only in S3: output.s3.keep_local keeps a copy)")

        def chunks() -> Iterator[bytes]:
            with src:
                while chunk := src.read(CHUNK_BYTES):
                    yield chunk

        name = PurePosixPath(location).name
        return StreamingResponse(chunks(), media_type="application/octet-stream", headers={
            "content-disposition": f"attachment; filename*=UTF-8''{quote(name, safe='')}"})

    def preview(self, request: Request) -> Response:
        made = self.previews.of(self.the_job(request), request.query_params.get("side", "after"))
        return Response(made.data, media_type=made.media_type)

    def retry(self, request: Request) -> Response:
        again = console.retry(self.backend, self.the_job(request))
        return JSONResponse(console.summary(again), 202)

    async def process(self, request: Request) -> Response:
        body = await json_body(request)
        found = self.the_job(request)
        again = await run_in_threadpool(console.process_again, self.backend, found, body)
        return JSONResponse(console.summary(again), 202)

    def delete(self, request: Request) -> Response:
        found = self.the_job(request)
        asked = request.query_params.get("quarantine") == "yes"
        console.delete(self.backend, found, quarantine=asked)
        self.previews.forget(found.id)
        return Response(status_code=204)

    def events(self, request: Request) -> Response:
        return StreamingResponse(self.hub.follow(), media_type="text/event-stream",
                                 headers={"x-accel-buffering": "no"})

    def openapi(self, request: Request) -> Response:
        return JSONResponse(description(self.backend.cfg))

    def the_job(self, request: Request) -> Job:
        return console.find_job(self.backend, request.path_params["job_id"])

    def routes(self) -> list[Route]:
        """Every path the console answers."""
        return [
            Route("/", self.index),
            Route("/static/{name}", self.static),
            Route(API + "session", self.session, methods=["POST"]),
            Route(API + "folders", self.folders),
            Route(API + "uploads", self.upload, methods=["POST"]),
            Route(API + "jobs", self.jobs),
            Route(API + "jobs/{job_id}", self.job),
            Route(API + "jobs/{job_id}", self.delete, methods=["DELETE"]),
            Route(API + "jobs/{job_id}/download", self.download),
            Route(API + "jobs/{job_id}/preview", self.preview),
            Route(API + "jobs/{job_id}/retry", self.retry, methods=["POST"]),
            Route(API + "jobs/{job_id}/process", self.process, methods=["POST"]),
            Route(API + "events", self.events),
            Route(API + "openapi.json", self.openapi),
        ]


def create_app(backend: Backend, hub: Hub) -> Starlette:
    """The application of one service."""
    routes = Endpoints(backend, hub).routes()

    async def refused(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, Refused)
        return error(exc.status, exc.message)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        words = {404: f"no such page or API call: {request.url.path}",
                 405: f"{request.method} is not allowed on {request.url.path}"}
        return error(exc.status_code, words.get(exc.status_code, str(exc.detail)))

    async def internal(request: Request, exc: Exception) -> Response:
        log.error("console: %s %s failed", request.method, request.url.path, exc_info=exc)
        return error(500, f"the request failed inside the service ({type(exc).__name__});"
                     " its log says more")

    app = Starlette(routes=routes, exception_handlers={
        Refused: refused, HTTPException: http_error, Exception: internal})
    app.add_middleware(Guard, backend=backend, routes=routes)
    return app


async def json_body(request: Request) -> dict[str, Any]:
    """A small JSON object from the request body; 400 for anything else."""
    data = bytearray()
    async for chunk in request.stream():
        data += chunk
        if len(data) > JSON_BYTES:
            raise Refused(413, f"the request body is larger than {JSON_BYTES} bytes")
    try:
        value = json.loads(data or b"{}")
    except ValueError:
        raise Refused(400, "the body is not JSON") from None
    if not isinstance(value, dict):
        raise Refused(400, "the body must be a JSON object")
    return value
