"""PostgreSQL killed with ``kill -9`` during chat traffic and restarted (issue 21; SPEC §6,
§8, docs/operations.md "When the store is down").

The test makes a PostgreSQL cluster of its own (``initdb``, tests/pg_process.py) and
runs callroom nodes with their chat history in it: one node, or two sharing the tests'
Redis or the suite's Redis Cluster (``DEPLOYMENTS``, one parameter each). The meeting of the Redis
restart tests (tests/restart_meeting.py: alice hosts, bob with his hand up, carol
sharing her screen, dan, erin in the lobby) chats, every admitted member numbering its
messages (tests/restart_members.py keeps the ledger). With messages in flight the
postmaster gets SIGKILL; once every node's ``/readyz`` names ``store`` a new postmaster
starts on the same data directory and port (crash recovery). Members re-send every
message that was not acknowledged, with its chatId (SPEC §3.1's safe retry: what a
careful client does with an ``unavailable``).

What users see meanwhile, checked: ``add_chat`` answered ``error`` ``unavailable``
naming ``add_chat`` (nothing else), everything else going on (a signal relayed), nobody
closed. Afterwards: ``/readyz`` 200 within 10 s (SPEC §6); then every chat message
acknowledged (0 lost), stored once (0 duplicated), received at most once by anyone and
by every member connected throughout; the room as it was.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any, cast

import pytest

from callroom_testing import TokenFactory, flush_test_redis, http_call
from pg_process import PostgresProcess
from restart_checks import check_answers, check_chat_round, check_history, history, report
from restart_meeting import (
    EVENT_SECONDS,
    Meeting,
    all_of,
    assemble,
    members_problem,
    rooms_problem,
    within,
)
from restart_members import Findings, Member, busy_chat

if TYPE_CHECKING:
    from callroom.server.node import Node

SETTINGS: dict[str, Any] = {"RATE_LIMIT_PER_SECOND": 1000, "RATE_LIMIT_BURST": 1000}
WINDOW, PACE = 4, 0.02  # a busy meeting: up to 50 messages a second per member
WARMUP = 10  # acknowledged messages per member before the kill
BURST = 8  # sent at once right before the kill: in flight when it lands
DOWN_SECONDS = 10.0  # until every /readyz names the store
READY_SECONDS = 10.0  # SPEC §6: ready within 10 s of the part coming back
RETRY_SECONDS = 15.0  # until every message a member sent is acknowledged

# How many nodes, and what they share besides the chat store: nothing, the tests' Redis
# or the suite's Redis Cluster (tests/redis_cluster.py, 3 primaries and 3 replicas).
DEPLOYMENTS: dict[str, tuple[int, str | None]] = {
    "one_node": (1, None),
    "two_nodes_redis": (2, "redis"),
    "two_nodes_redis_cluster": (2, "redis_cluster"),
}


@pytest.fixture
async def postgres() -> AsyncIterator[PostgresProcess]:
    async with PostgresProcess() as server:
        yield server


@pytest.fixture(params=sorted(DEPLOYMENTS))
async def meeting(
    request: pytest.FixtureRequest,
    postgres: PostgresProcess,
    start_node: Callable[..., Awaitable[Any]],
    people: list[Member],
    make_token: TokenFactory,
) -> Meeting:
    count, redis = DEPLOYMENTS[request.param]
    shared: dict[str, Any] = {"DATABASE_URL": postgres.url(), **SETTINGS}
    if redis == "redis":
        shared["REDIS_URL"] = await flush_test_redis()
    elif redis == "redis_cluster":
        shared["REDIS_URL"] = request.getfixturevalue("cluster_url")
    nodes = [cast("Node", await start_node(**shared)) for _ in range(count)]
    return Meeting(nodes, None, make_token, people)


async def store_named(meeting: Meeting) -> str | None:
    """None when every node's /readyz is 503 naming the store."""
    for index, node in enumerate(meeting.nodes):
        status, body, _ = await http_call(node, "GET", "/readyz")
        if status != 503 or "store" not in body.get("failing", []):
            return f"node {index}: /readyz {status} {body}"
    return None


async def ready(meeting: Meeting) -> str | None:
    for index, node in enumerate(meeting.nodes):
        status, body, _ = await http_call(node, "GET", "/readyz")
        if status != 200:
            return f"node {index}: /readyz {status} {body}"
    return None


def unacknowledged(member: Member) -> list[str]:
    acked = member.acknowledged()
    sent = dict.fromkeys(chat_id for link in member.links for chat_id in link.adds)
    return [chat_id for chat_id in sent if chat_id not in acked]


async def resend_until_acknowledged(member: Member) -> bool:
    """Send every unacknowledged message again (same chatId) until all are acknowledged;
    whether that happened within ``RETRY_SECONDS``."""
    deadline = time.monotonic() + RETRY_SECONDS
    while pending := unacknowledged(member):
        if time.monotonic() > deadline:
            return False
        if member.link.unanswered == 0:
            for chat_id in pending:
                await member.chat(chat_id)
        await member.wait_until(
            lambda m: m.link.unanswered == 0, max(0.01, deadline - time.monotonic())
        )
    return True


async def test_chat_lives_through_a_postgres_kill_and_restart(
    meeting: Meeting, postgres: PostgresProcess
) -> None:
    findings = Findings()
    await assemble(meeting)
    talkers = meeting.admitted()
    stop = asyncio.Event()
    traffic = await busy_chat(talkers, stop, window=WINDOW, pace=PACE, warmup=WARMUP, burst=BURST)
    marks = {m: m.mark() for m in meeting.members.values()}
    acked_before = set().union(*(m.acknowledged() for m in talkers))
    in_flight = sum(m.link.unanswered for m in talkers)

    await postgres.kill9()
    killed = time.monotonic()
    findings.note(f"killed the postmaster with {in_flight} add_chat unanswered")
    down = await within(DOWN_SECONDS, lambda: store_named(meeting))
    findings.check("/readyz 503 naming the store on every node", down is None, down)
    findings.note(f"store named {time.monotonic() - killed:.1f} s after the kill")
    # The rest of the meeting goes on: a signal from alice reaches bob.
    bob, alice = meeting.members["bob"], meeting.host()
    since = bob.mark()
    await alice.send("renegotiate", {"targetClientId": "bob", "reason": "store down"})
    relayed = await bob.wait_event("renegotiate", since, EVENT_SECONDS)
    findings.check("signaling goes on while the store is down", relayed is not None)

    await postgres.restart()
    back = time.monotonic()
    ready_problem = await within(READY_SECONDS, lambda: ready(meeting))
    findings.check(
        "/readyz 200 on every node after the restart", ready_problem is None, ready_problem
    )
    findings.note(f"ready {time.monotonic() - back:.1f} s after the restart")
    stop.set()
    await asyncio.gather(*traffic)

    # What members saw meanwhile: only unavailable answers to add_chat, nobody closed.
    seen: Counter[tuple[Any, Any]] = Counter()
    for member, since in marks.items():
        for frame in member.received[since:]:
            if frame.event == "error":
                seen[(frame.payload.get("code"), frame.payload.get("event"))] += 1
    findings.note(f"errors seen while the store was away: {dict(seen)}")
    findings.check(
        "every error meanwhile is unavailable naming add_chat",
        set(seen) <= {("unavailable", "add_chat")},
        dict(seen),
    )
    closes = {
        n: [link.close_code for link in m.links if link.closed] for n, m in meeting.members.items()
    }
    findings.check("nobody was closed", not any(closes.values()), closes)

    retried = await all_of(*(resend_until_acknowledged(m) for m in talkers))
    findings.check("every message sent is acknowledged after the retries", retried)
    await check_chat_round(meeting, findings)
    await check_answers(meeting, findings)
    await check_history(meeting, findings)
    room = await rooms_problem(meeting)
    findings.check("the room at the end, on every node", room is None, room)
    present = await members_problem(meeting)
    findings.check("every member connected with its role at the end", present is None, present)
    report(meeting, findings)

    stored = Counter(await history(meeting))
    acked = set().union(*(m.acknowledged() for m in talkers))
    retries = sum(1 for m in talkers for link in m.links for _ in link.adds) - len(acked)
    findings.note(
        f"figures: {len(acked)} acknowledged ({len(acked_before)} before the kill), "
        f"{retries} sends retried, lost {len(acked - set(stored))}, "
        f"duplicated {sum(n - 1 for n in stored.values())}"
    )
    print("\n" + "\n".join(findings.notes))
    findings.verdict()
