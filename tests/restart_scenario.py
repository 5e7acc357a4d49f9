"""The Redis-outage scenario of a meeting, on one Redis or a Redis Cluster (issue 18,
issue 19): tests/integration/test_redis_restart.py and test_redis_cluster_faults.py.

``restart_during_meeting`` assembles the meeting (``restart_meeting.py``), runs its chat,
has the meeting's ``Outage`` strike (``kill9``: one Redis or a cluster's primary killed;
``restart``: a new empty process on the same port, or the replica's promotion awaited)
and checks everything test_redis_restart.py's docstring lists.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from restart_checks import (
    check_answers,
    check_chat_round,
    check_commands,
    check_history,
    check_new_joiner,
    report,
)
from restart_meeting import (
    Meeting,
    all_of,
    assemble,
    members_problem,
    readiness,
    rooms_problem,
    within,
)
from restart_members import Findings, Member, busy_chat

# A busy meeting without rate_limited noise: four members sending up to 50 messages a
# second each (SPEC §6 rate limit raised; nothing here is about the limit).
SETTINGS: dict[str, Any] = {"RATE_LIMIT_PER_SECOND": 1000, "RATE_LIMIT_BURST": 1000}
WINDOW = 4  # unanswered add_chat per member at most (besides the burst)
PACE = 0.02
WARMUP = 15  # acknowledged messages per member before the kill (busy)
BURST = 8  # messages per member sent at once right before the kill (busy): in flight
AFTER = 10  # acknowledged messages per member after the restart, then the traffic stops
QUIET = 5  # messages per member before the kill (quiet), all acknowledged
READY_SECONDS = 10.0  # SPEC §6: ready within 10 s of Redis coming back
SETTLED_SECONDS = 5.0  # then the room and its members as before, "within a few seconds"
DOWN_SECONDS = 5.0  # until every /readyz sees Redis down


# -- the scenario ----------------------------------------------------------------------


async def restart_during_meeting(meeting: Meeting, *, busy: bool, kill: bool = True) -> Findings:
    """The scenario (module docstring); ``kill`` False is its positive control: the same
    meeting and checks with Redis left alone."""
    findings = Findings()
    await assemble(meeting)
    talkers = meeting.admitted()
    stop = asyncio.Event()
    traffic: list[asyncio.Task[None]] = []
    if busy:
        # The kill lands while the burst is on its way.
        traffic = await busy_chat(
            talkers, stop, window=WINDOW, pace=PACE, warmup=WARMUP, burst=BURST
        )
    else:
        for member in talkers:
            for _ in range(QUIET):
                await member.chat(member.next_chat_id())
        settled = await all_of(
            *(m.wait_until(lambda m: len(m.acknowledged()) == QUIET, 10) for m in talkers)
        )
        assert settled, "the quiet meeting's messages before the kill"

    in_flight = sum(m.link.unanswered for m in talkers)
    if kill:
        assert meeting.redis is not None
        await meeting.redis.kill9()
        findings.note(f"killed Redis with {in_flight} add_chat unanswered")
        down = await within(DOWN_SECONDS, lambda: readiness(meeting, 503))
        findings.check("/readyz 503 on every node while Redis is down", down is None, down)
        await meeting.redis.restart()
    back = time.monotonic()
    quieten = asyncio.create_task(stop_after_some_traffic(talkers, stop))

    # In this order, as an operator would look: ready, then the room, then its members.
    # (Nothing reads the room before /readyz is 200: a read would itself reconnect the
    # node's room-command connection, and so hide what the node does on its own.)
    ready = await within(READY_SECONDS, lambda: readiness(meeting, 200))
    findings.check("/readyz 200 on every node after Redis is back", ready is None, ready)
    findings.note(f"ready {time.monotonic() - back:.1f} s after the restart")
    by_then = time.monotonic() + SETTLED_SECONDS

    def left() -> float:
        return by_then - time.monotonic()

    room = await within(left(), lambda: rooms_problem(meeting))
    findings.check(
        "the room with one host (alice) and every role, on every node", room is None, room
    )
    present = await within(left(), lambda: members_problem(meeting))
    findings.check("every member connected with its role", present is None, present)
    findings.note(f"room and members checked {time.monotonic() - back:.1f} s after the restart")

    stop.set()
    quieten.cancel()  # the traffic ends now, however much of it there was
    with contextlib.suppress(asyncio.CancelledError):
        await quieten
    await asyncio.gather(*traffic)
    for phase in (check_commands, check_new_joiner, check_chat_round, check_answers, check_history):
        started = time.monotonic()
        await phase(meeting, findings)
        findings.note(f"{phase.__name__} took {time.monotonic() - started:.1f} s")
    # Still so at the end (a late resync must not undo it): frank admitted, dan's hand up.
    room = await rooms_problem(meeting)
    findings.check("the room at the end, on every node", room is None, room)
    present = await members_problem(meeting)
    findings.check("every member connected with its role at the end", present is None, present)
    report(meeting, findings)
    return findings


async def stop_after_some_traffic(talkers: list[Member], stop: asyncio.Event) -> None:
    """Let the chat run on after the restart until every member had ``AFTER`` more
    messages acknowledged (or the recovery time passed): traffic through the recovery."""
    base = {m: len(m.acknowledged()) for m in talkers}
    await all_of(
        *(
            m.wait_until(lambda m: len(m.acknowledged()) >= base[m] + AFTER, READY_SECONDS)
            for m in talkers
        )
    )
    stop.set()
