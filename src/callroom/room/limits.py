"""The limits a client frame's fields are held to (SPEC §3.1, §6; docs/protocol.md).

``ProtocolLimits`` holds the two a deployment configures; the others are fixed. Where
SPEC §3.1 gives no number, the choice is explained in ``callroom.room.validators``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

__all__ = [
    "CANDIDATE_MAX_LENGTH",
    "CHAT_ID_MAX_LENGTH",
    "CLIENT_ID_MAX_LENGTH",
    "REASON_MAX_LENGTH",
    "RECENT_LIMIT_DEFAULT",
    "RECENT_LIMIT_MAX",
    "RECENT_LIMIT_MIN",
    "SDP_MID_MAX_LENGTH",
    "SDP_MLINE_INDEX_MAX",
    "TOKEN_MAX_BYTES",
    "ProtocolLimits",
]


@dataclass(frozen=True, slots=True)
class ProtocolLimits:
    """The configurable payload limits (SPEC §6 ``CHAT_MAX_LENGTH``, ``MAX_SDP_BYTES``)."""

    chat_max_length: int = 1000
    max_sdp_bytes: int = 32768


# Fixed limits (SPEC §3.1 where it gives one; see callroom.room.validators otherwise).
CHAT_ID_MAX_LENGTH: Final = 64
CLIENT_ID_MAX_LENGTH: Final = 128
TOKEN_MAX_BYTES: Final = 16384
CANDIDATE_MAX_LENGTH: Final = 4096
SDP_MID_MAX_LENGTH: Final = 256
REASON_MAX_LENGTH: Final = 256
SDP_MLINE_INDEX_MAX: Final = 65535
RECENT_LIMIT_MIN: Final = 1
RECENT_LIMIT_MAX: Final = 100
RECENT_LIMIT_DEFAULT: Final = 50
