"""What a member's frames cost, charged as they arrive (SPEC §6 rates, §9 control frames).

Two parts, both without I/O:

- ``FrameBudget``: the member's token bucket (``RATE_LIMIT_PER_SECOND`` tokens a second,
  ``RATE_LIMIT_BURST`` saved up) charged by what a frame costs the node, not one token a
  frame: a text message costs one token per started ``COST_UNIT_BYTES`` of payload (its
  decode and validation grow with its size), a control frame or a continuation frame one
  token. A second bucket of the same size counts what was refused: a sender that keeps
  flooding after its ``rate_limited`` errors drains it and is closed with 1008 (SPEC §3.4).
- ``FrameGate``: reads the header of every frame of the member's byte stream before
  aiohttp's parser does. It refuses an unmasked frame (RFC 6455 §5.1: the server must
  close the connection; 1002) and charges the frames aiohttp's parser never hands over
  as messages of their own (continuation frames), and control frames, which it answers
  or drops without a message being charged: a ping flood costs the node as much as a
  text flood and is closed like one.

Both run in the socket's data callback, when the bytes arrive, not when the member's
turn to be handled comes: a member whose frames waited behind another's flood is judged
by the rate it sent at, not by the burst in which a busy node got to them.
"""

from __future__ import annotations

from collections.abc import Callable

from callroom.errors import CloseCode, ConnectionFailed
from callroom.server.limits import TokenBucket

# Payload bytes a token pays for: a chat message or an ICE candidate costs one token, an
# SDP of ``MAX_SDP_BYTES`` (32 KiB) four, a frame of ``MAX_MESSAGE_BYTES`` (64 KiB) eight.
COST_UNIT_BYTES = 8192

_MASK_BIT = 0x80
_LENGTH_BITS = 0x7F
_OPCODE_BITS = 0x0F
_CONTINUATION = 0x0
_FIRST_CONTROL_OPCODE = 0x8  # close, ping, pong (RFC 6455 §5.5)


class FrameBudget:
    """One member's inbound budget (module docstring)."""

    __slots__ = ("_max_cost", "rate", "violations")

    def __init__(self, rate_per_second: float, burst: int) -> None:
        self.rate = TokenBucket(rate_per_second, burst)
        self.violations = TokenBucket(rate_per_second, burst)
        self._max_cost = float(max(1, burst))  # a frame never costs more than a full bucket

    def message(self, size: int) -> bool:
        """Charge a text message of ``size`` payload bytes; False: over the rate, drop it."""
        cost = 1 + (size - 1) // COST_UNIT_BYTES if size > 0 else 1
        return self.rate.take(cost=min(float(cost), self._max_cost))

    def frame(self) -> bool:
        """Charge one control or continuation frame; False: over the rate."""
        return self.rate.take()

    def tolerate(self) -> bool:
        """Count one refused frame; False: the sender keeps flooding, close it (1008)."""
        return self.violations.take()


class UnmaskedFrame(ConnectionFailed):
    """A client frame without a mask (RFC 6455 §5.1: the server must close; 1002)."""

    def __init__(self) -> None:
        super().__init__(CloseCode.PROTOCOL_ERROR, "client frames must be masked")


class FrameGate:
    """Reads frame headers across chunks; charges control and continuation frames.

    ``feed`` returns normally while the stream is acceptable; it raises ``UnmaskedFrame``
    at the first unmasked frame. ``on_frame`` is called once per control or continuation
    frame. Payload bytes are skipped, never copied; a header split over two chunks is the
    only case that copies (at most 14 bytes).
    """

    __slots__ = ("_head", "_skip", "on_frame")

    def __init__(self, on_frame: Callable[[], None]) -> None:
        self.on_frame = on_frame
        self._skip = 0  # payload bytes of the current frame still to come
        self._head = b""  # the start of a frame header that ended a chunk

    def feed(self, data: bytes) -> None:
        size = len(data)
        pos = self._skip
        if pos >= size:
            self._skip = pos - size
            return
        if self._head:
            data = self._head + data[pos:]
            size = len(data)
            pos = 0
            self._head = b""
        while pos < size:
            if size - pos < 2:
                self._head = data[pos:]
                self._skip = 0
                return
            second = data[pos + 1]
            if not second & _MASK_BIT:
                raise UnmaskedFrame
            length = second & _LENGTH_BITS
            header = 6  # two bytes, then the four of the masking key
            if length == 126:
                header = 8
            elif length == 127:
                header = 14
            if size - pos < header:
                self._head = data[pos:]
                self._skip = 0
                return
            if length == 126:
                length = int.from_bytes(data[pos + 2 : pos + 4], "big")
            elif length == 127:
                length = int.from_bytes(data[pos + 2 : pos + 10], "big")
            opcode = data[pos] & _OPCODE_BITS
            if opcode == _CONTINUATION or opcode >= _FIRST_CONTROL_OPCODE:
                self.on_frame()
            pos += header + length
        self._skip = pos - size
