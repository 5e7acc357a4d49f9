"""The web client at ``/`` (SPEC §9): the static files of ``callroom/web``, shipped in the
wheel and served from memory.

Only the files present at start are routes (each its own exact path), so there is no
directory listing and no path to traverse. Every answer carries an ``ETag`` and
``Cache-Control: no-cache``: names carry no content hash (no build step), so a browser
revalidates (a 304 costs one round trip) instead of running a stale module next to a
fresh one after an upgrade.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources

from aiohttp import web
from aiohttp.typedefs import Handler

from callroom.config import Settings

_CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".ico": "image/x-icon",
    ".png": "image/png",
    ".json": "application/json",
}
# The page loads nothing from elsewhere: scripts, styles and sockets from its own origin
# only ('self' covers ws:/wss: of the same host in CSP 3); media from the camera and peers.
_PAGE_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "media-src 'self' blob: mediastream:; connect-src 'self'; object-src 'none'; "
    "base-uri 'none'; frame-ancestors 'none'; form-action 'none'"
)
# index.html carries this tag; the server fills it in so the page knows dev mode (SPEC §5).
DEV_META = '<meta name="callroom-dev" content="0">'


@dataclass(frozen=True)
class StaticFile:
    body: bytes
    content_type: str
    etag: str


def load_web_files(settings: Settings) -> dict[str, StaticFile]:
    """URL path -> file, for every file of ``callroom/web`` with a known type."""
    root = resources.files("callroom").joinpath("web")
    files: dict[str, StaticFile] = {}
    for entry in sorted(root.iterdir(), key=lambda item: item.name):
        suffix = "." + entry.name.rpartition(".")[2]
        if not entry.is_file() or entry.name.startswith(".") or suffix not in _CONTENT_TYPES:
            continue
        body = entry.read_bytes()
        if entry.name == "index.html":
            dev = "1" if settings.DEV_MODE else "0"
            body = body.replace(DEV_META.encode(), DEV_META.replace('"0"', f'"{dev}"').encode())
        etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
        path = "/" if entry.name == "index.html" else f"/{entry.name}"
        files[path] = StaticFile(body, _CONTENT_TYPES[suffix], etag)
    return files


def add_web_routes(app: web.Application, settings: Settings) -> None:
    for path, item in load_web_files(settings).items():
        app.router.add_get(path, _serve(item, page=path == "/"))


def _serve(item: StaticFile, *, page: bool) -> Handler:
    headers = {
        "Cache-Control": "no-cache",
        "ETag": item.etag,
        "X-Content-Type-Options": "nosniff",
    }
    if page:
        headers["Content-Security-Policy"] = _PAGE_POLICY
        headers["Referrer-Policy"] = "no-referrer"

    async def handler(request: web.Request) -> web.Response:
        if item.etag in request.headers.get("If-None-Match", ""):
            return web.Response(status=304, headers=headers)
        return web.Response(body=item.body, headers={**headers, "Content-Type": item.content_type})

    return handler
