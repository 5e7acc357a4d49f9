"""HTTP routes besides the WebSocket (SPEC §4): health, readiness, metrics, the REST API,
the ICE servers, the OpenAPI document, and the dev-mode key and token routes (SPEC §5).

API routes take ``Authorization: Bearer <JWT>`` and answer errors with the JSON body of
SPEC §1 (401 ``unauthorized``, 403 ``forbidden``, 404 ``not_found``, 422
``invalid_payload``, 503 ``unavailable`` when the rooms or the chat store cannot be read):
each handler raises, and ``callroom.server.http_answers`` says what the client is told.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from functools import cache
from importlib import resources
from typing import Any

import yaml
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from callroom.auth.dev import DEV_AUDIENCE, DEV_ISSUER, DevKeys
from callroom.config import Settings
from callroom.errors import HandshakeCode, HandshakeRefused
from callroom.room import core
from callroom.room.keys import room_key
from callroom.room.model import Identity, Room
from callroom.server.audit import audit
from callroom.server.handshake import KINDS, ROOM_ID_RE, bearer_token
from callroom.server.state import STATE_KEY

routes = web.RouteTableDef()
NO_STORE = {"Cache-Control": "no-store"}


@routes.get("/ws/health")
@routes.get("/healthz")
async def health(_request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


@routes.get("/readyz")
async def ready(request: web.Request) -> web.Response:
    failing = await request.app[STATE_KEY].readiness()
    if failing:
        return web.json_response({"status": "unavailable", "failing": failing}, status=503)
    return web.json_response({"status": "ready"})


@routes.get("/metrics")
async def metrics(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    await state.readiness()  # callroom_ready{part} as of this scrape (SPEC §9)
    body = state.metrics.render()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


# -- REST API -------------------------------------------------------------------------


async def _caller(request: web.Request) -> Identity:
    return await request.app[STATE_KEY].authenticate(bearer_token(request))


def _room_key(request: web.Request) -> tuple[str, str]:
    kind = request.match_info["kind"]
    room_id = request.match_info["room_id"]
    if kind not in KINDS or not ROOM_ID_RE.match(room_id):
        raise HandshakeRefused(HandshakeCode.NOT_FOUND, "no such room")
    return kind, room_id


def _is_admitted(room: Room | None, identity: Identity) -> bool:
    member = room.members.get(identity.client_id) if room is not None else None
    return member is not None and member.role.admitted


def _forbidden() -> HandshakeRefused:
    return HandshakeRefused(HandshakeCode.FORBIDDEN, "you may not see or change this room")


@routes.get("/api/v1/rooms")
async def list_rooms(request: web.Request) -> web.Response:
    identity = await _caller(request)
    if not identity.is_admin:
        raise _forbidden()
    rooms = await request.app[STATE_KEY].hub.all_rooms()
    return web.json_response({"rooms": [core.room_summary(room) for room in rooms]})


@routes.get("/api/v1/rooms/{kind}/{room_id}")
async def get_room(request: web.Request) -> web.Response:
    identity = await _caller(request)
    kind, room_id = _room_key(request)
    room = await request.app[STATE_KEY].hub.find_room(room_key(kind, room_id))
    if not identity.is_admin and not _is_admitted(room, identity):
        raise _forbidden()
    if room is None:
        raise HandshakeRefused(HandshakeCode.NOT_FOUND, "no such room")
    # SPEC §4: an admin sees the room as a host; a member, as it sees it inside.
    view = core.host_view(room) if identity.is_admin else core.member_view(room, identity.client_id)
    return web.json_response({**core.room_summary(room), **view})


@routes.delete("/api/v1/rooms/{kind}/{room_id}")
async def delete_room(request: web.Request) -> web.Response:
    identity = await _caller(request)
    kind, room_id = _room_key(request)
    hub = request.app[STATE_KEY].hub
    key = room_key(kind, room_id)
    room = await hub.find_room(key)
    member = room.members.get(identity.client_id) if room is not None else None
    if not identity.is_admin and (member is None or not core.acts_as_host(member)):
        raise _forbidden()
    if not await hub.end(key):
        raise HandshakeRefused(HandshakeCode.NOT_FOUND, "no such room")
    audit("end_room", actor=identity.client_id, target=None, room=key, via="api")
    return web.json_response({"status": "ended", "kind": kind, "roomId": room_id})


def _invalid(message: str) -> HandshakeRefused:
    return HandshakeRefused(HandshakeCode.INVALID_PAYLOAD, message)


def _query_limit(request: web.Request) -> int:
    raw = request.query.get("limit", "50")
    if not raw.isdigit() or not 1 <= int(raw) <= 100:
        raise _invalid("limit must be an integer 1-100")
    return int(raw)


@routes.get("/api/v1/rooms/{kind}/{room_id}/messages")
async def room_messages(request: web.Request) -> web.Response:
    identity = await _caller(request)
    kind, room_id = _room_key(request)
    state = request.app[STATE_KEY]
    key = room_key(kind, room_id)
    room = await state.hub.find_room(key)
    if not identity.is_admin and not _is_admitted(room, identity):
        raise _forbidden()
    limit = _query_limit(request)
    before = request.query.get("before") or None
    if before is not None and len(before) > 64:
        raise _invalid("before must be a chatId")
    page = await state.history.page(key, limit, before)  # StoreUnavailable: 503
    return web.json_response(
        {"messages": [m.to_wire() for m in page.messages], "hasMore": page.has_more}
    )


@routes.get("/api/v1/ice-servers")
async def ice_servers(request: web.Request) -> web.Response:
    identity = await _caller(request)
    settings = request.app[STATE_KEY].settings
    servers: list[dict[str, Any]] = []
    if settings.STUN_URLS:
        servers.append({"urls": list(settings.STUN_URLS)})
    if settings.TURN_URLS:
        turn: dict[str, Any] = {"urls": list(settings.TURN_URLS)}
        if settings.TURN_SECRET:
            # coturn REST scheme: username "expiry:clientId", credential
            # base64(HMAC-SHA1(secret, username)) (SPEC §4).
            expiry = int(time.time()) + settings.TURN_TTL_SECONDS
            username = f"{expiry}:{identity.client_id}"
            digest = hmac.new(
                settings.TURN_SECRET.encode(), username.encode(), hashlib.sha1
            ).digest()
            turn["username"] = username
            turn["credential"] = base64.b64encode(digest).decode()
        servers.append(turn)
    # TURN credentials are secrets with an expiry: no cache may keep them.
    return web.json_response(
        {"iceServers": servers, "ttl": settings.TURN_TTL_SECONDS}, headers=NO_STORE
    )


# -- OpenAPI ----------------------------------------------------------------------------


@cache
def openapi_document() -> dict[str, Any]:
    text = resources.files("callroom").joinpath("openapi.yaml").read_text()
    document: dict[str, Any] = yaml.safe_load(text)
    return document


@routes.get("/openapi.json")
async def openapi_json(_request: web.Request) -> web.Response:
    return web.json_response(openapi_document())


@cache
def _apidocs(name: str) -> bytes:
    return resources.files("callroom").joinpath("apidocs", name).read_bytes()


@routes.get("/docs")
async def docs(_request: web.Request) -> web.Response:
    """The API page: Redoc shipped in the package (``callroom/apidocs``), no CDN."""
    return web.Response(body=_apidocs("index.html"), content_type="text/html", charset="utf-8")


@routes.get("/docs/redoc.standalone.js")
async def docs_script(_request: web.Request) -> web.Response:
    # The page asks for it with ``?v=<redoc version>``, so a day of caching is safe.
    return web.Response(
        body=_apidocs("redoc.standalone.js"),
        content_type="application/javascript",
        charset="utf-8",
        headers={"Cache-Control": "public, max-age=86400"},
    )


# -- Dev mode (SPEC §5) -------------------------------------------------------------------

dev_routes = web.RouteTableDef()


def mint_dev_token(
    settings: Settings, keys: DevKeys, sub: str, name: str | None, roles: list[str], ttl: int
) -> str:
    """A dev token with the issuer, audience and claim names this node verifies."""
    return keys.mint(
        sub,
        name=name,
        roles=roles,
        ttl_seconds=ttl,
        issuer=settings.issuer or DEV_ISSUER,
        audience=settings.audience or DEV_AUDIENCE,
        name_claim=settings.AUTH_NAME_CLAIM,
        roles_claim=settings.AUTH_ROLES_CLAIM,
    )


@dev_routes.get("/dev/jwks.json")
async def dev_jwks(request: web.Request) -> web.Response:
    keys = request.app[STATE_KEY].dev_keys
    assert keys is not None
    return web.json_response(keys.jwks())


@dev_routes.post("/dev/token")
async def dev_token(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    keys = state.dev_keys
    assert keys is not None
    try:
        body = await request.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise _invalid("body must be a JSON object")
    sub, name, roles = body.get("sub"), body.get("name"), body.get("roles", [])
    if not isinstance(sub, str) or not 1 <= len(sub) <= 128:
        raise _invalid("sub must be a string of 1-128 chars")
    if name is not None and not isinstance(name, str):
        raise _invalid("name must be a string")
    if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles):
        raise _invalid("roles must be a list of strings")
    ttl = 3600
    token = mint_dev_token(state.settings, keys, sub, name, roles, ttl)
    return web.json_response({"token": token, "expiresIn": ttl}, headers=NO_STORE)
