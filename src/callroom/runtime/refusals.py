"""The runtime's refusals when a part it needs is down (SPEC §1 503, §3.3 ``unavailable``)."""

from __future__ import annotations

from callroom.errors import (
    ErrorCode,
    HandshakeCode,
    HandshakeRefused,
    ProtocolError,
    StoreUnavailable,
)
from callroom.room.keys import RoomKey
from callroom.runtime.ports import RoomBus


def join_unavailable() -> HandshakeRefused:
    return HandshakeRefused(HandshakeCode.UNAVAILABLE, "the room state is unavailable, retry later")


RESTORING = "the room state is being restored; nothing was done, retry later"
UNCERTAIN = "the room's answer was lost; the command may have taken effect, retry if not"


def room_unavailable(event: str, message: str) -> ProtocolError:
    return ProtocolError(ErrorCode.UNAVAILABLE, message, event)


def require_bus(bus: RoomBus, key: RoomKey) -> None:
    """Refuse a chat message, a deletion or a signal while the bus is down: it would be
    stored (done) but its broadcast, the sender's answer included, never heard back.
    SPEC §3.3 ``unavailable`` instead (worded by ``server/ws_answers``, naming the
    frame's event): nothing is done, the sender retries later."""
    if not bus.hears(key):
        raise StoreUnavailable("redis")
