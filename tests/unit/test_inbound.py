"""The inbound budget and frame gate (server/inbound.py) and the log throttle, without I/O."""

from __future__ import annotations

import os
import struct

import pytest

from callroom.server.inbound import COST_UNIT_BYTES, FrameBudget, FrameGate, UnmaskedFrame


def frame(opcode: int, length: int, *, fin: bool = True, mask: bool = True) -> bytes:
    head = bytes([(0x80 if fin else 0) | opcode])
    bit = 0x80 if mask else 0
    if length < 126:
        head += bytes([bit | length])
    elif length < 65536:
        head += bytes([bit | 126]) + struct.pack("!H", length)
    else:
        head += bytes([bit | 127]) + struct.pack("!Q", length)
    return head + (os.urandom(4) if mask else b"") + b"p" * length


def counting_gate() -> tuple[FrameGate, list[int]]:
    seen: list[int] = []
    return FrameGate(lambda: seen.append(1)), seen


STREAM = b"".join(
    [
        frame(0x1, 10),  # text: not charged by the gate (the message is, on arrival)
        frame(0x9, 0),  # ping
        frame(0x1, 300, fin=False),  # a fragmented text: first frame (16-bit length)
        frame(0x0, 70_000, fin=False),  # continuation (64-bit length)
        frame(0x0, 0),  # last continuation, empty
        frame(0xA, 5),  # pong
    ]
)


@pytest.mark.parametrize("chunk", [1, 2, 3, 7, 13, 4096, len(STREAM)])
def test_the_gate_counts_control_and_continuation_frames_however_the_stream_is_cut(
    chunk: int,
) -> None:
    gate, seen = counting_gate()
    for start in range(0, len(STREAM), chunk):
        gate.feed(STREAM[start : start + chunk])
    assert len(seen) == 4


@pytest.mark.parametrize("cut", [0, 1, 5])
def test_the_gate_refuses_an_unmasked_frame_after_masked_ones(cut: int) -> None:
    gate, _ = counting_gate()
    masked = frame(0x1, 3)
    gate.feed(masked[: len(masked) - cut])
    with pytest.raises(UnmaskedFrame):
        gate.feed(masked[len(masked) - cut :] + frame(0x1, 3, mask=False))


def test_a_message_costs_a_token_per_started_unit() -> None:
    budget = FrameBudget(rate_per_second=0.000001, burst=10)
    assert budget.message(COST_UNIT_BYTES * 4)  # 4 tokens
    assert budget.message(COST_UNIT_BYTES * 4 + 1)  # 5 tokens
    assert not budget.message(COST_UNIT_BYTES + 1)  # 2 tokens: only 1 left
    assert budget.message(0)  # an empty frame still costs one
    assert not budget.frame()


def test_a_frame_never_costs_more_than_a_full_bucket() -> None:
    budget = FrameBudget(rate_per_second=0.000001, burst=3)
    assert budget.message(COST_UNIT_BYTES * 100)
    assert not budget.message(1)


def test_the_violation_bucket_runs_out_after_a_burst_of_refusals() -> None:
    budget = FrameBudget(rate_per_second=0.000001, burst=2)
    assert [budget.tolerate() for _ in range(3)] == [True, True, False]
