"""The pure room core (SPEC §2, §3): every rule of a room, no I/O, no asyncio.

Each function takes a ``Room`` (mutated in place), the acting member and a command,
and returns ``Effects``. Rule violations raise ``ProtocolError`` with the SPEC §3.3 code
(the room is left unchanged when they do); refusals at join raise ``HandshakeRefused``.

This module is the one entry point the node codes against; the rules live in:

- ``membership``: join refusals, roles at join, leave, drop, reconnect grace, host handoff;
- ``control``: the member commands of SPEC §3.1;
- ``access``: who may do what, and the recipient lists (also used by the node for chat);
- ``views``: ``room_state`` per recipient and the REST views of SPEC §4;
- ``serialize``: a JSON-safe form of a room for a shared store.
"""

from __future__ import annotations

from callroom.room.access import (
    acts_as_host,
    admitted_ids,
    authorize_delete,
    client_info,
    host_ids,
    require_admitted,
    require_host,
)
from callroom.room.commands import event_name
from callroom.room.control import handle
from callroom.room.membership import (
    check_join,
    drop,
    end_room,
    grace_expired,
    join,
    leave,
    new_room,
)
from callroom.room.serialize import room_from_dict, room_to_dict
from callroom.room.views import host_view, member_view, room_state_for, room_summary

__all__ = [
    "acts_as_host",
    "admitted_ids",
    "authorize_delete",
    "check_join",
    "client_info",
    "drop",
    "end_room",
    "event_name",
    "grace_expired",
    "handle",
    "host_ids",
    "host_view",
    "join",
    "leave",
    "member_view",
    "new_room",
    "require_admitted",
    "require_host",
    "room_from_dict",
    "room_state_for",
    "room_summary",
    "room_to_dict",
]
