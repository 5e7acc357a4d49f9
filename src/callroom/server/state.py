"""What the request handlers need of a running node: one typed object, built by the node.

The handlers (``app``, ``access``, ``http_api``, ``ws``) read ``request.app[STATE_KEY]``:
the parts they use, named and typed, instead of the whole node. This module imports none
of them and the node imports it, so no import goes back up (a unit test keeps
``callroom`` free of import cycles).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web

from callroom.auth.dev import DevKeys
from callroom.chat.base import ChatHistory
from callroom.config import Settings
from callroom.metrics import Metrics
from callroom.room.model import Identity
from callroom.room.protocol import ProtocolLimits
from callroom.runtime.hub import Hub
from callroom.server.connection import OutBox
from callroom.server.limits import ConnectionLimiter
from callroom.server.proxies import Network
from callroom.server.refusals import RefusalLog

# A token in, its identity out; raises ``AuthError`` (counted by reason, SPEC §4).
Authenticate = Callable[[str | None], Awaitable[Identity]]
# The parts that are not usable (SPEC §4 ``/readyz``), an empty list when ready.
Readiness = Callable[[], Awaitable[list[str]]]


@dataclass(eq=False, slots=True)
class AppState:
    """The node's parts the handlers use (``callroom.server.node.Node`` builds it)."""

    settings: Settings
    metrics: Metrics
    hub: Hub  # the rooms of the node (or of every node, with Redis)
    history: ChatHistory
    authenticate: Authenticate
    readiness: Readiness
    limiter: ConnectionLimiter  # per-IP connections (SPEC §1 429)
    protocol_limits: ProtocolLimits
    outbox: OutBox  # the members' frames, written once per loop turn
    refusal_log: RefusalLog
    trusted_proxies: tuple[Network, ...]
    dev_keys: DevKeys | None  # dev mode only (SPEC §5)
    # Outgoing bytes a slow consumer may have buffered before it is closed (1013).
    max_buffer: int
    # Shutting down (SPEC §8): new upgrades 503, ``/readyz`` 503.
    draining: bool = False


STATE_KEY: web.AppKey[AppState] = web.AppKey("callroom_state", AppState)
# The client's address (SPEC §9: behind TRUSTED_PROXIES, from their forwarded headers),
# stored in each request by the access middleware (``callroom.server.access``).
CLIENT_KEY: web.RequestKey[str] = web.RequestKey("callroom_client", str)
