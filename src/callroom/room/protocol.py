"""Decode and validate client frames into typed commands (SPEC §3, §3.1, §3.3).

``decode(frame, limits)`` turns one WebSocket text frame into a ``callroom.room.commands``
command, or raises ``ProtocolError`` with the SPEC §3.3 code. It does no I/O and keeps no
state; the connection handler turns the error into an ``error`` event (SPEC §3.2).

Order of checks, first failure wins:

1. ``invalid_json`` — the text is not strict JSON (SPEC §3: ``NaN``, ``Infinity`` and
   duplicate keys anywhere in the document are not JSON), is not an object, or has no
   string ``event``.
2. ``unknown_event`` — ``event`` is not a client event of the §3.1 table (server-only names
   such as ``room_state`` or ``pong`` included).
3. ``invalid_payload`` — ``payload`` is present but neither an object nor ``null``, or a
   field is missing, of the wrong type, empty, too long or out of range. The message
   always starts with the wire name of the field.

The ``event`` of a raised ``ProtocolError`` (echoed in the ``error`` payload, SPEC §3.2):

- ``invalid_json``: always ``None``.
- ``invalid_payload``: the event name exactly as sent (an alias stays an alias), so the
  client can tell which of its messages was refused.
- ``unknown_event``: the sent name when it is 1-64 characters of ``[A-Za-z0-9_]``, else
  ``None``: an arbitrary client string is never echoed. This value is for the wire only;
  metric labels must come from ``canonical_event``, which maps every name outside
  ``CLIENT_EVENTS`` to ``"unknown"`` (SPEC §4).

The parts: ``callroom.room.strict_json`` (check 1), ``callroom.room.validators`` (check 3:
one validator per event, and the choices made where SPEC §3.1 is silent),
``callroom.room.limits`` (the numbers) and ``callroom.room.events`` (the names of check 2).
This module keeps the names the node imports: ``decode``, ``ProtocolLimits``,
``CLIENT_EVENTS``, ``canonical_event`` and ``EVENT_LABELS``.
"""

from __future__ import annotations

import re
from typing import Final

from callroom.errors import ErrorCode, ProtocolError
from callroom.room.commands import Command
from callroom.room.events import ALIASES, CLIENT_EVENTS
from callroom.room.limits import ProtocolLimits
from callroom.room.strict_json import invalid_json, loads_strict
from callroom.room.validators import VALIDATORS, field_error

__all__ = [
    "CLIENT_EVENTS",
    "EVENT_LABELS",
    "UNKNOWN_EVENT_LABEL",
    "ProtocolLimits",
    "canonical_event",
    "decode",
]

UNKNOWN_EVENT_LABEL: Final = "unknown"
"""The metric label of every event name that is not a client event (SPEC §4)."""

_ECHOABLE_NAME: Final = re.compile(r"[A-Za-z0-9_]{1,64}")

# Plain strings, not Event members: these are metric label values (SPEC §4).
_CANONICAL: Final[dict[str, str]] = {
    name.value: ALIASES.get(name, name).value for name in CLIENT_EVENTS
}

EVENT_LABELS: Final[frozenset[str]] = frozenset(_CANONICAL.values()) | {UNKNOWN_EVENT_LABEL}
"""Every value ``canonical_event`` can return: the bounded metric label set (SPEC §4)."""


# Bound once: on CPython 3.11 a method call on an imported name (`VALIDATORS.get(event)`)
# compiles without LOAD_METHOD and builds a bound method per frame (~50 ns a decode).
_validator_for: Final = VALIDATORS.get


def canonical_event(name: str | None) -> str:
    """The metric label of an event name: aliases folded, anything else ``"unknown"``."""
    if name is None:
        return UNKNOWN_EVENT_LABEL
    return _CANONICAL.get(name, UNKNOWN_EVENT_LABEL)


def _echoable(name: str) -> str | None:
    return name if _ECHOABLE_NAME.fullmatch(name) is not None else None


def decode(frame: str, limits: ProtocolLimits) -> Command:
    """The command carried by one client text frame (SPEC §3); raises ``ProtocolError``."""
    doc = loads_strict(frame)
    if type(doc) is not dict:
        raise invalid_json("the frame must be a JSON object")
    event = doc.get("event")
    if type(event) is not str:
        raise invalid_json('the frame must have a string "event"')
    validate = _validator_for(event)
    if validate is None:
        raise ProtocolError(
            ErrorCode.UNKNOWN_EVENT, "event is not one a client may send", _echoable(event)
        )
    payload = doc.get("payload")
    if payload is None:  # SPEC §3: a missing or null payload is {}
        payload = {}
    elif type(payload) is not dict:
        raise field_error(event, "payload", payload, "a JSON object or null")
    return validate(payload, limits, event)
