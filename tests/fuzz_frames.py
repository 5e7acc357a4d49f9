"""Frames for the live protocol fuzzer (tests/integration/test_fuzz_live.py, issue 21):
hypothesis strategies of valid, near-valid and hostile WebSocket frames, the bytes of
each frame as a client puts them on the wire, and an oracle saying what the server must
answer, written from SPEC §3, §3.3, §3.4 alone (not from the server's code).

A ``WireFrame`` is one or more raw RFC 6455 frames (masked, as a client must send them),
so that the fuzzer can send what a WebSocket library refuses to: text frames that are
not UTF-8 (overlong encodings, encoded surrogates, bytes past U+10FFFF), frames with the
"compressed" bit set though permessage-deflate was never negotiated, unknown opcodes, a
continuation without a start, frames larger than ``MAX_MESSAGE_BYTES``. ``close`` is the
code the server must close the connection with (SPEC §3.4; 1002 and 1007 are RFC 6455's,
docs/protocol.md "Close codes"), ``None`` when the connection must stay open.

For a frame that keeps the connection open, ``judge`` gives the ``Verdict``: the one
error code it must get (``invalid_json``, ``unknown_event``, a payload that is not an
object), or the codes it may get (a well-formed event: any answer of the room's rules,
never ``unavailable``, which would say the server failed), and how many ``pong`` it asks
for.
"""

from __future__ import annotations

import json
import math
import os
import re
import struct
from dataclasses import dataclass
from typing import Any

from hypothesis import strategies as st

from callroom.room.events import CLIENT_EVENTS as SERVER_CLIENT_EVENTS

MAX_MESSAGE_BYTES = 65536  # SPEC §6 default; the fuzzed node runs with it

# SPEC §3.1, aliases included: what a client may send (the server's list, which
# tests/unit/test_protocol.py holds to a transcription of the SPEC's table).
CLIENT_EVENTS = frozenset(event.value for event in SERVER_CLIENT_EVENTS)
# SPEC §3.2: what the server may send (the client events it relays, and its own).
SERVER_EVENTS = (CLIENT_EVENTS - {"ping", "request_waiting", "recents_chat"}) | {
    "recents_chat",
    "room_state",
    "connect",
    "disconnect",
    "pong",
    "room_locked",
    "room_unlocked",
    "media_state",
    "error",
}
# SPEC §3.2: all a waiting member may ever receive.
WAITING_MAY_RECEIVE = frozenset({"room_state", "accept_waiting", "deny_waiting", "pong", "error"})
ERROR_CODES = frozenset(
    {
        "invalid_json",
        "unknown_event",
        "invalid_payload",
        "forbidden",
        "not_found",
        "target_not_found",
        "limit_reached",
        "rate_limited",
        "unavailable",
    }
)
# The answers of the room's rules to a well-formed event (SPEC §3.3): not invalid_json
# nor unknown_event (the frame was read), not unavailable (nothing is down: a server
# fault), not rate_limited (the fuzzed node's rate is far above the fuzzer's).
RULE_CODES = frozenset(
    {"invalid_payload", "forbidden", "not_found", "target_not_found", "limit_reached"}
)
MAX_NESTING = 512  # documented limit (docs/protocol.md): deeper is invalid_json
_ECHOABLE = re.compile(r"[A-Za-z0-9_]{1,64}")

# -- frames on the wire (RFC 6455 §5.2) --------------------------------------------------

TEXT, BINARY, CONTINUATION, CLOSE, PING = 0x1, 0x2, 0x0, 0x8, 0x9


def raw_frame(opcode: int, data: bytes, *, fin: bool = True, rsv1: bool = False) -> bytes:
    """One masked client frame."""
    first = (0x80 if fin else 0) | (0x40 if rsv1 else 0) | opcode
    length = len(data)
    if length < 126:
        header = struct.pack("!BB", first, 0x80 | length)
    elif length < 1 << 16:
        header = struct.pack("!BBH", first, 0x80 | 126, length)
    else:
        header = struct.pack("!BBQ", first, 0x80 | 127, length)
    mask = os.urandom(4)
    masked = (
        bytes(b ^ mask[i % 4] for i, b in enumerate(data)) if length < 4096 else _mask(data, mask)
    )
    return header + mask + masked


def _mask(data: bytes, mask: bytes) -> bytes:
    """XOR a long payload with the mask, a word at a time."""
    repeat = (mask * (len(data) // 4 + 1))[: len(data)]
    return (int.from_bytes(data, "big") ^ int.from_bytes(repeat, "big")).to_bytes(len(data), "big")


class WireFrame:
    """What the fuzzer writes for one input, and the close it must cause (None: none).

    A plain class, not a dataclass: hypothesis prints a failing example with the class's
    own ``__repr__``, which keeps a megabyte frame short."""

    __slots__ = ("close", "kind", "text", "wire")

    def __init__(
        self, kind: str, wire: bytes, close: int | None = None, text: str | None = None
    ) -> None:
        self.kind = kind  # what it is, for the figures and for a failure's report
        self.wire = wire
        self.close = close
        self.text = text  # a text message the server must read (close None)

    def __repr__(self) -> str:
        shown = repr(self.text if self.text is not None else self.wire[:80])
        if len(shown) > 300:
            shown = shown[:300] + f"... ({len(self.wire)} bytes)"
        return f"WireFrame({self.kind!r}, close={self.close}, {shown})"

    def _repr_pretty_(self, printer: Any, _cycle: bool) -> None:
        printer.text(repr(self))


def text_message(kind: str, text: str, *, fragments: int = 1) -> WireFrame:
    """A text message (UTF-8), in ``fragments`` frames; 1009 when it is over the limit."""
    data = text.encode()
    close = 1009 if len(data) > MAX_MESSAGE_BYTES else None
    if fragments <= 1 or len(data) < fragments:
        return WireFrame(kind, raw_frame(TEXT, data), close, None if close else text)
    step = len(data) // fragments
    cuts = [data[i * step : (i + 1) * step] for i in range(fragments - 1)]
    cuts.append(data[(fragments - 1) * step :])
    wire = raw_frame(TEXT, cuts[0], fin=False)
    for index, cut in enumerate(cuts[1:], start=2):
        wire += raw_frame(CONTINUATION, cut, fin=index == fragments)
    return WireFrame(f"{kind}/fragmented", wire, close, None if close else text)


# -- the oracle -------------------------------------------------------------------------


@dataclass(frozen=True)
class Verdict:
    """What a text message that keeps the connection open must get."""

    must: str | None  # the one error code it must get, or None
    may: frozenset[str]  # error codes it may get when ``must`` is None
    event: str | None  # ``error.event`` the server must echo (SPEC §3.3, docs/protocol.md)
    pongs: int  # 1 when it is a well-formed ping


class _NotStrict(ValueError):
    pass


def _constant(_name: str) -> Any:
    raise _NotStrict("NaN or Infinity")


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    if len({key for key, _ in pairs}) != len(pairs):
        raise _NotStrict("a key repeats")
    return dict(pairs)


def _number(text: str) -> float:
    value = float(text)
    if math.isinf(value):  # beyond a double: refused (docs/protocol.md, strict JSON)
        raise _NotStrict("number beyond a double")
    return value


def _too_deep_or_surrogate(doc: object) -> bool:
    stack: list[tuple[object, int]] = [(doc, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, str):
            if any("\ud800" <= ch <= "\udfff" for ch in value):
                return True  # a lone surrogate: not a Unicode string (RFC 8259 §8.2)
        elif isinstance(value, dict | list):
            if depth > MAX_NESTING:
                return True
            items = list(value.items()) if isinstance(value, dict) else value
            for item in items:
                if isinstance(item, tuple):
                    stack.append((item[0], depth + 1))
                    stack.append((item[1], depth + 1))
                else:
                    stack.append((item, depth + 1))
    return False


def judge(text: str) -> Verdict:
    """What SPEC §3 and §3.3 say the server answers to the text message ``text``."""
    invalid = Verdict("invalid_json", frozenset(), None, 0)
    try:
        doc = json.loads(
            text,
            parse_constant=_constant,
            object_pairs_hook=_pairs,
            parse_float=_number,
            parse_int=_number,
        )
    except (ValueError, RecursionError):
        return invalid
    if _too_deep_or_surrogate(doc):
        return invalid
    if not isinstance(doc, dict) or not isinstance(doc.get("event"), str):
        return invalid
    event: str = doc["event"]
    if event not in CLIENT_EVENTS:
        echoed = event if _ECHOABLE.fullmatch(event) else None
        return Verdict("unknown_event", frozenset(), echoed, 0)
    payload = doc.get("payload")
    if payload is not None and not isinstance(payload, dict):
        return Verdict("invalid_payload", frozenset(), event, 0)
    return Verdict(None, RULE_CODES, event, 1 if event == "ping" else 0)


# -- strategies ---------------------------------------------------------------------------

MEMBERS = ("alice", "bob", "mallory", "nobody")
_short = st.text(max_size=24)
_ids = st.sampled_from(MEMBERS) | _short
_json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | _short
)
_json = st.recursive(
    _json_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_short, inner, max_size=3),
    max_leaves=8,
)


def _fields(required: dict[str, Any], optional: dict[str, Any] | None = None) -> Any:
    return st.fixed_dictionaries(required, optional=optional or {})


_target = {"clientId": _ids}
_signal_target = {"targetClientId": _ids}
PAYLOADS: dict[str, Any] = {
    "ping": _fields({}),
    "add_chat": _fields(
        {"chatContent": st.text(max_size=40) | st.text(min_size=995, max_size=1002)},
        {"chatId": st.text(max_size=66)},
    ),
    "delete_chat": _fields({"chatId": _short}),
    "get_recent_chats": _fields(
        {}, {"limit": st.integers(-2, 102) | _json, "before": _short | st.none()}
    ),
    "recents_chat": _fields({}, {"limit": st.integers(-2, 102)}),
    "raise_hand": _fields({}),
    "lower_hand": _fields({}, _target),
    "request_waiting": _fields({}),
    "waiting_request": _fields({}),
    "accept_waiting": _fields(_target),
    "deny_waiting": _fields(_target),
    "request_screenshare": _fields({}),
    "accept_screenshare": _fields(_target),
    "deny_screenshare": _fields(_target),
    "stop_screenshare": _fields({}, _target),
    "kick_participant": _fields(_target, {"ban": st.booleans() | _json}),
    "unban_participant": _fields(_target),
    "promote_host": _fields(_target),
    "demote_host": _fields(_target),
    "lock_room": _fields({}),
    "unlock_room": _fields({}),
    "end_room": _fields({}),
    "set_media_state": _fields({}, {"audio": st.booleans(), "video": st.booleans()}),
    "refresh_token": _fields({"token": _short | st.just("a.b.c")}),
    "offer": _fields(
        {**_signal_target, "sdp": _short, "type": st.sampled_from(["offer", "answer", "x"])}
    ),
    "answer": _fields(
        {**_signal_target, "sdp": _short, "type": st.sampled_from(["answer", "offer"])}
    ),
    "candidate": _fields(
        {**_signal_target, "candidate": _short},
        {"sdpMid": _short | st.none(), "sdpMLineIndex": st.integers(-2, 70000) | st.none()},
    ),
    "renegotiate": _fields(_signal_target, {"reason": _short}),
}
assert set(PAYLOADS) == CLIENT_EVENTS


@st.composite
def documents(draw: st.DrawFn) -> Any:
    """A valid frame's document (SPEC §3.1), or one mutated into a near-valid one."""
    event = draw(st.sampled_from(sorted(PAYLOADS)))
    payload: dict[str, Any] = dict(draw(PAYLOADS[event]))
    if draw(st.booleans()):
        payload.update(draw(st.dictionaries(_short, _json, max_size=2)))  # extra fields
    mutation = draw(
        st.sampled_from(
            ["none", "none", "drop", "retype", "null", "payload", "event", "shape", "nopayload"]
        )
    )
    doc: Any = {"event": event, "payload": payload}
    if mutation == "drop" and payload:
        del payload[draw(st.sampled_from(sorted(payload)))]
    elif mutation == "retype" and payload:
        payload[draw(st.sampled_from(sorted(payload)))] = draw(_json)
    elif mutation == "null" and payload:
        payload[draw(st.sampled_from(sorted(payload)))] = None
    elif mutation == "payload":
        doc["payload"] = draw(_json)
    elif mutation == "event":
        doc["event"] = draw(
            st.sampled_from(
                [event.upper(), event + " ", "room_state", "pong", "error", "connect", ""]
            )
            | _short
            | _json
        )
    elif mutation == "shape":
        doc = draw(st.sampled_from([[doc], "ping", 7, None, {"payload": payload}]))
    elif mutation == "nopayload":
        del doc["payload"]
    return doc


def _encode(doc: Any, style: str) -> str:
    if style == "ascii":
        return json.dumps(doc)
    if style == "compact":
        return json.dumps(doc, separators=(",", ":"), ensure_ascii=False)
    return json.dumps(doc, indent=2, ensure_ascii=False)


@st.composite
def json_frames(draw: st.DrawFn) -> WireFrame:
    """Valid and near-valid frames, as JSON text."""
    doc = draw(documents())
    text = _encode(doc, draw(st.sampled_from(["ascii", "compact", "indent"])))
    fragments = draw(st.sampled_from([1, 1, 1, 2, 3]))
    return text_message("json", text, fragments=fragments)


# Text-level damage: each turns a document's text into one that is not strict JSON, or
# strict JSON at the edges of what a parser takes.
_HOSTILE_TEXTS = st.sampled_from(
    [
        "",
        " ",
        "null",
        "[]",
        '"ping"',
        "{",
        '{"event": "ping"',
        '{"event": "ping"}}',
        '{"event": "ping", "event": "ping"}',
        '{"event": "ping", "payload": {"a": 1, "a": 2}}',
        '{"event": "ping", "payload": {"x": NaN}}',
        '{"event": "ping", "payload": {"x": -Infinity}}',
        '{"event": "ping", "payload": {"x": 1e400}}',
        '{"event": "ping", "payload": {"x": -1e-400}}',
        '{"event": "ping", "payload": {"x": -0}}',
        '{"event": "ping", "payload": {"x": 18446744073709551616}}',
        '{"event": "ping", "payload": {"x": "\\ud800"}}',
        '{"event": "ping", "payload": {"x": "\\udfff\\ud800"}}',
        '{"event": "ping", "payload": {"x": "\\ud83d\\ude00"}}',
        '{"event": "\\u0070ing"}',
        '{"event": "ping\\u0000"}',
        '{"event": "add_chat", "payload": {"chatContent": "\\u0000"}}',
        '{"event": "add_chat", "payload": {"chatContent": "a\\u0000b"}}',
        '{"event": "add_chat", "payload": {"chatContent": "\\u202e\\u200b\\ufeff\\uffff"}}',
        '{"event": "add_chat", "payload": {"chatContent": "\\ud800"}}',
        '{"event": "add_chat", "payload": {"chatId": "\\ud800", "chatContent": "x"}}',
        '\ufeff{"event": "ping"}',
        '{"event": "ping"} trailing',
        "{'event': 'ping'}",
        '{"event": "ping",}',
        '\t\r\n{"event":"ping"}\n',
    ]
)


@st.composite
def hostile_texts(draw: st.DrawFn) -> WireFrame:
    """Edge cases of JSON and Unicode as valid UTF-8 text."""
    choice = draw(st.sampled_from(["listed", "deep", "number", "unicode"]))
    if choice == "listed":
        text = draw(_HOSTILE_TEXTS)
    elif choice == "deep":
        depth = draw(st.sampled_from([2, 100, 510, 511, 512, 513, 1000, 5000, 30000]))
        opener, closer = draw(st.sampled_from([("[", "]"), ('{"a":', "}")]))
        text = '{"event": "ping", "payload": {"x": ' + opener * depth + "1" + closer * depth + "}}"
    elif choice == "number":
        digits = draw(st.sampled_from([20, 308, 309, 400, 4300, 4301, 20000]))
        sign = draw(st.sampled_from(["", "-"]))
        field = draw(st.sampled_from(["limit", "sdpMLineIndex", "x"]))
        text = '{{"event": "get_recent_chats", "payload": {{"{}": {}1{}}}}}'.format(
            field,
            sign,
            "0" * (digits - 1),
        )
    else:
        content = draw(
            st.text(
                st.characters(
                    categories=("Cc", "Cf", "Co", "Cn", "Zs", "Zl", "Zp", "Mn", "So"),
                ),
                min_size=1,
                max_size=30,
            )
        )
        event = draw(st.sampled_from(["add_chat", content]))
        text = json.dumps(
            {"event": event, "payload": {"chatContent": content, "chatId": content}},
            ensure_ascii=draw(st.booleans()),
        )
    return text_message(f"hostile-text/{choice}", text)


# Byte sequences that are not UTF-8 (RFC 3629): overlong forms, encoded surrogates (what
# a string with a lone surrogate becomes through 'surrogatepass'), past U+10FFFF,
# truncated sequences, bytes that never occur.
NOT_UTF8 = (
    b"\xc0\xaf",
    b"\xc1\xbf",
    b"\xe0\x80\xaf",
    b"\xf0\x80\x80\xaf",
    b"\xed\xa0\x80",
    b"\xed\xbf\xbf",
    "\ud83d".encode("utf-8", "surrogatepass"),
    b"\xf4\x90\x80\x80",
    b"\xf8\x88\x80\x80\x80",
    b"\xe2\x82",
    b"\x80",
    b"\xfe",
    b"\xff",
)


@st.composite
def hostile_frames(draw: st.DrawFn) -> WireFrame:
    """Frames the server must close the connection for (SPEC §3.4, RFC 6455)."""
    choice = draw(
        st.sampled_from(
            ["not-utf8", "binary", "oversize", "at-limit", "megabyte", "rsv1", "opcode", "orphan"]
        )
    )
    valid = json.dumps({"event": "add_chat", "payload": {"chatContent": "hello"}}).encode()
    if choice == "not-utf8":
        bad = draw(st.sampled_from(NOT_UTF8))
        at = draw(st.integers(0, len(valid)))
        return WireFrame(choice, raw_frame(TEXT, valid[:at] + bad + valid[at:]), 1007)
    if choice == "binary":
        data = draw(st.sampled_from([valid, b"", b"\x00\xff"]) | st.binary(max_size=64))
        return WireFrame(choice, raw_frame(BINARY, data), 1003)
    if choice in ("oversize", "at-limit", "megabyte"):
        size = {
            "oversize": draw(st.sampled_from([MAX_MESSAGE_BYTES + 1, MAX_MESSAGE_BYTES + 2])),
            "at-limit": draw(st.sampled_from([MAX_MESSAGE_BYTES - 1, MAX_MESSAGE_BYTES])),
            "megabyte": 1 << 20,
        }[choice]
        head = '{"event": "add_chat", "payload": {"chatContent": "'
        tail = '"}}'
        text = head + "x" * (size - len(head) - len(tail)) + tail
        assert len(text.encode()) == size
        return text_message(choice, text, fragments=draw(st.sampled_from([1, 1, 4])))
    if choice == "rsv1":  # "compressed", though no extension was negotiated
        return WireFrame(choice, raw_frame(TEXT, valid, rsv1=True), 1002)
    if choice == "opcode":
        opcode = draw(st.sampled_from([0x3, 0x4, 0x7, 0xB, 0xF]))
        return WireFrame(choice, raw_frame(opcode, valid), 1002)
    return WireFrame(choice, raw_frame(CONTINUATION, valid), 1002)  # a continuation of nothing


def frames() -> Any:
    """Every kind of input, weighted towards what the server must read and answer."""
    return st.one_of(json_frames(), json_frames(), hostile_texts(), hostile_frames())
