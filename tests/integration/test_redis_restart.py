"""Redis killed with ``kill -9`` during a meeting and restarted empty (issue 18 acceptance;
SPEC §6, §7, §8).

Each scenario runs a real redis-server of its own (``tests/redis_process.py``), callroom
nodes in this process on it (one chat store, a SQLite file), and real WebSocket members
(``tests/restart_members.py``) spread over the nodes: alice the host, bob a participant
with his hand raised, carol sharing her screen, dan a participant, erin in the lobby.
Every admitted member chats, numbering its messages. Redis is killed (SIGKILL) with the
chat running (busy) or between messages (quiet); once every node's ``/readyz`` says 503
a new, empty redis-server starts on the same port. Then ``/readyz`` answers 200 on every
node within ``READY_SECONDS`` (SPEC §6), and within ``SETTLED_SECONDS`` more:

- the room (``GET /api/v1/rooms/...`` as an admin, on every node) has one host, alice,
  and every member with its role, bob's hand still raised, erin still waiting;
- every member is connected, its latest ``room_state`` showing its role and the room as
  before (a member the server closed with 1001 rejoins, like the web client);

and afterwards: ``raise_hand``, ``lock_room``/``unlock_room`` work (a stranger is refused
``room_locked`` on every node meanwhile), a new joiner lands in the lobby of the same
room and, admitted, is seen by everyone, new chat messages reach every admitted member,
and the history route answers 200 to an admitted member. Over the whole run: every
acknowledged message is in the history and was received by every member connected
throughout, no chatId is stored or received twice, every ``add_chat`` was answered (echo
or ``error``) and every ``error`` names the event it answers.

A scenario checks every point and fails once with all that do not hold
(``restart_members.Findings``), so a run tells the whole state of the runtime. No step
waits a fixed time: each waits for an event or a state, with a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import pytest
from redis.asyncio import Redis

from callroom_testing import TokenFactory
from redis_process import RedisProcess, server_pid
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
from restart_members import Findings, Member, chatter

if TYPE_CHECKING:
    from callroom.server.node import Node

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

NodeStarter = Callable[..., Awaitable[Any]]


@pytest.fixture
async def redis_server(tmp_path: Path) -> AsyncIterator[RedisProcess]:
    async with RedisProcess(tmp_path / "redis") as server:
        yield server


@pytest.fixture
async def people() -> AsyncIterator[list[Member]]:
    """Every member of the test; they leave before the nodes stop (fixture order)."""
    members: list[Member] = []
    yield members
    await asyncio.gather(*(member.leave() for member in members))


@pytest.fixture
async def meeting_of(
    redis_server: RedisProcess,
    start_node: NodeStarter,
    people: list[Member],
    make_token: TokenFactory,
    tmp_path: Path,
) -> Callable[[int], Awaitable[Meeting]]:
    async def factory(count: int) -> Meeting:
        nodes = [
            cast(
                "Node",
                await start_node(
                    REDIS_URL=redis_server.url(9),
                    DATABASE_URL=f"sqlite:///{tmp_path}/restart.db",
                    **SETTINGS,
                ),
            )
            for _ in range(count)
        ]
        return Meeting(nodes, redis_server, make_token, people)

    return factory


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
        traffic = [asyncio.create_task(chatter(m, stop, window=WINDOW, pace=PACE)) for m in talkers]
        warmed = await all_of(
            *(m.wait_until(lambda m: len(m.acknowledged()) >= WARMUP, 10) for m in talkers)
        )
        assert warmed, "the chat traffic before the kill"
        for member in talkers:  # the kill lands while these are on their way
            for _ in range(BURST):
                await member.chat(member.next_chat_id())
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


# -- the tests ---------------------------------------------------------------------------


async def test_redis_process_restarts_empty_on_the_same_port(tmp_path: Path) -> None:
    """The helper itself: SIGKILL leaves nothing answering; the restart is another, empty
    process on the same port, without persistence."""
    async with RedisProcess(tmp_path) as redis:
        port, pid = redis.port, redis.pid
        client = Redis.from_url(redis.url())
        try:
            await client.set("k", "v")
            run_id = (await client.info("server"))["run_id"]
            assert await client.config_get("save") == {"save": ""}
            assert await client.config_get("appendonly") == {"appendonly": "no"}
        finally:
            await client.aclose()
        await redis.kill9()
        assert not redis.running
        assert await server_pid(port) is None
        await redis.restart()
        assert (redis.port, redis.running) == (port, True)
        assert redis.pid != pid
        client = Redis.from_url(redis.url())
        try:
            assert await client.get("k") is None
            assert (await client.info("server"))["run_id"] != run_id
        finally:
            await client.aclose()
    assert not redis.running


async def test_control_busy_meeting_on_two_nodes_without_a_restart_passes_every_check(
    meeting_of: Callable[[int], Awaitable[Meeting]],
) -> None:
    """The positive control of the scenarios below: nothing happens to Redis, and every
    point they check holds (their checks and their client are sound)."""
    meeting = await meeting_of(2)
    findings = await restart_during_meeting(meeting, busy=True, kill=False)
    findings.verdict()
    assert len(findings.passed) >= 20, findings.passed  # the checks did run


async def test_busy_meeting_on_two_nodes_lives_through_a_redis_restart(
    meeting_of: Callable[[int], Awaitable[Meeting]],
) -> None:
    """Killed with chat messages in flight (a burst sent just before): every one of them
    answered, none lost or doubled, the meeting as it was."""
    meeting = await meeting_of(2)
    (await restart_during_meeting(meeting, busy=True)).verdict()


async def test_quiet_meeting_on_two_nodes_lives_through_a_redis_restart(
    meeting_of: Callable[[int], Awaitable[Meeting]],
) -> None:
    """Killed between messages: nothing of the nodes writes to Redis until they notice
    it is back on their own."""
    meeting = await meeting_of(2)
    (await restart_during_meeting(meeting, busy=False)).verdict()


async def test_meeting_on_one_node_lives_through_a_redis_restart(
    meeting_of: Callable[[int], Awaitable[Meeting]],
) -> None:
    """One node on Redis (SPEC §7 with a single node): its replica is the whole truth."""
    meeting = await meeting_of(1)
    (await restart_during_meeting(meeting, busy=True)).verdict()
