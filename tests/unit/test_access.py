"""Refusal lines rate limited per reason (SPEC §9 "Logs"), audit actions."""

from __future__ import annotations

import asyncio

import pytest

from callroom.room.commands import (
    AcceptScreenshare,
    AcceptWaiting,
    Command,
    DemoteHost,
    DenyScreenshare,
    DenyWaiting,
    EndRoom,
    KickParticipant,
    LockRoom,
    LowerHand,
    Ping,
    PromoteHost,
    RaiseHand,
    StopScreenshare,
    UnbanParticipant,
    UnlockRoom,
)
from callroom.server.access import method_label
from callroom.server.audit import audit_action
from callroom.server.refusals import RefusalLog


async def test_refusal_lines_are_limited_per_reason_per_second() -> None:
    now = [100.0]
    limiter = RefusalLog(per_second=3, clock=lambda: now[0])
    assert [limiter.allow("ws:unauthorized") for _ in range(5)] == [True] * 3 + [False] * 2
    # Another reason has a window of its own.
    assert limiter.allow("ws:room_full")
    now[0] += 0.5
    assert not limiter.allow("ws:unauthorized")
    # The next window reports the lines left out of the last one, then allows again.
    now[0] += 0.6
    assert limiter.allow("ws:unauthorized")
    assert limiter.report("ws:unauthorized") == 0  # already reported: 3 left out


async def test_suppressed_lines_are_reported_when_the_window_ends_without_more() -> None:
    limiter = RefusalLog(per_second=1)
    assert limiter.allow("http:unauthorized")
    assert not limiter.allow("http:unauthorized")
    assert not limiter.allow("http:unauthorized")
    # The timer set at the first line left out reports at the window's end.
    deadline = asyncio.get_running_loop().time() + 3
    while limiter._suppressed and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.05)
    assert not limiter._suppressed
    assert limiter.report("http:unauthorized") == 0


async def test_close_reports_every_reason() -> None:
    limiter = RefusalLog(per_second=1)
    for reason in ("a", "b"):
        limiter.allow(reason)
        limiter.allow(reason)
    assert sorted(limiter._suppressed) == ["a", "b"]
    limiter.close()
    assert not limiter._suppressed


def test_method_label_is_bounded() -> None:
    assert method_label("GET") == "GET"
    assert method_label("BREW") == "other"


@pytest.mark.parametrize(
    ("command", "action"),
    [
        (AcceptWaiting("bob"), "admit"),
        (DenyWaiting("bob"), "deny"),
        (KickParticipant("bob", ban=False), "kick"),
        (KickParticipant("bob", ban=True), "ban"),
        (UnbanParticipant("bob"), "unban"),
        (PromoteHost("bob"), "promote"),
        (DemoteHost("bob"), "demote"),
        (LockRoom(), "lock"),
        (EndRoom(), "end_room"),
        (UnlockRoom(), "unlock"),
        (AcceptScreenshare("bob"), "approve_screenshare"),
        (DenyScreenshare("bob"), "deny_screenshare"),
        (StopScreenshare("bob"), "stop_screenshare"),
        (LowerHand("bob"), "lower_hand"),
        # A member acting on itself, or no moderation at all: no audit line.
        (StopScreenshare(None), None),
        (StopScreenshare("alice"), None),
        (LowerHand(None), None),
        (RaiseHand(), None),
        (Ping(), None),
    ],
)
def test_audit_actions(command: Command, action: str | None) -> None:
    assert audit_action("alice", command) == action
