"""The runtime's refusals when a part it needs is down (SPEC §1 503, §3.3 ``unavailable``)."""

from __future__ import annotations

from callroom.errors import ErrorCode, HandshakeCode, HandshakeRefused, ProtocolError
from callroom.runtime.ports import RoomBus


def join_unavailable() -> HandshakeRefused:
    return HandshakeRefused(HandshakeCode.UNAVAILABLE, "the room state is unavailable, retry later")


def room_unavailable(event: str, what: str = "unavailable") -> ProtocolError:
    return ProtocolError(
        ErrorCode.UNAVAILABLE, f"the room state is {what}; nothing was done, retry later", event
    )


def require_bus(bus: RoomBus, event: str) -> None:
    """Refuse a chat message, a deletion or a signal while the bus is down: it would be
    stored (done) but its broadcast, the sender's answer included, never heard back.
    SPEC §3.3 ``unavailable`` instead: nothing is done, the sender retries later."""
    if not bus.up:
        raise room_unavailable(event)
