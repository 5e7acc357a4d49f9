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

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import pytest
from redis.asyncio import Redis

from callroom_testing import TokenFactory
from redis_process import RedisProcess, server_pid
from restart_meeting import Meeting
from restart_members import Member
from restart_scenario import SETTINGS, restart_during_meeting

if TYPE_CHECKING:
    from callroom.server.node import Node

NodeStarter = Callable[..., Awaitable[Any]]


@pytest.fixture
async def redis_server(tmp_path: Path) -> AsyncIterator[RedisProcess]:
    async with RedisProcess(tmp_path / "redis") as server:
        yield server


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
