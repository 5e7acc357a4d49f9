"""What the runtime needs of a member's connection: the peer interface.

The hub never sees sockets, aiohttp objects or frame parsing: it queues frames (bytes
already framed, ``callroom.server.framing.text_frame``) and asks for closes. The
WebSocket adapter's connection object implements this protocol.
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol

from callroom.errors import CloseCode
from callroom.room.keys import RoomKey
from callroom.room.model import Identity


class Peer(Protocol):
    """One member's session in one room, as the runtime sees it."""

    client_id: str
    kind: str
    room_id: str
    room_key: RoomKey
    conn_id: str  # unique across nodes (SPEC §9)
    identity: Identity  # replaced by a successful refresh_token (SPEC §5)
    # True once the room no longer counts this session as the member's (kicked, denied,
    # ended, replaced): its end then changes nothing in the room.
    detached: bool
    expiry_handle: asyncio.TimerHandle | None

    def send(self, frame: bytes) -> None:
        """Queue one framed message; never waits (a slow consumer is closed instead)."""

    def close(self, code: int, reason: str) -> None:
        """Start closing with ``code``; bounded in time, never waits for the caller."""


def schedule_expiry(peer: Peer, expires_at: float, leeway: float) -> None:
    """SPEC §5: closed with 4001 when ``exp`` + leeway passes, unless refreshed."""
    if peer.expiry_handle is not None:
        peer.expiry_handle.cancel()
    delay = expires_at + leeway - time.time()
    peer.expiry_handle = asyncio.get_running_loop().call_later(
        max(0.0, delay), peer.close, CloseCode.TOKEN_EXPIRED, "token expired"
    )
