"""A callroom node killed with ``kill -9`` mid-meeting (issue 21; SPEC §2, §7, §8).

Two nodes run as real processes (``python -m callroom serve``, tests/node_process.py)
over what ``DEPLOYMENTS`` names: the tests' Redis, with a REDIS_PREFIX of the test's
own, or the suite's Redis Cluster (``redis+cluster://``); and one PostgreSQL database
for the chat history. The meeting of tests/restart_meeting.py is spread
over them: alice, carol on the first; bob, dan and erin (waiting) on the second. Every
admitted member chats, numbering its messages. With messages in flight the second node
gets SIGKILL: its members' sockets break without a close frame, and they reconnect, like
the web client, to the node that lives (their ``fallbacks``), re-sending every message
no echo acknowledged, with its chatId (SPEC §3.1's safe retry).

What users see, checked: bob and dan back with their roles within the reconnect grace,
the others seeing no ``disconnect`` of them (SPEC §2); erin, who was waiting, back in
the lobby (a waiting member's drop removes it at once: she knocks again); the room as
it was on the living node. Over the whole run: every acknowledged message in the
history (0 lost), none stored or received twice (0 duplicated), every ``add_chat``
answered, and no error log line on the living node.

One thing the run shows and the test counts rather than hides: a message the dying
node had stored but not yet broadcast reaches, on its retry through the other node, the
sender only (SPEC §3.1's rule for a repeated chatId; the node that would have known to
send it to everyone is dead). The others see it in the history, not live. Such
messages can only be among the dead node's members' messages in flight at the kill
(``in_doubt``); each must be acknowledged and stored, and the note counts them.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from callroom_testing import (
    AUDIENCE,
    ISSUER,
    REDIS_TEST_URL,
    JwksServer,
    TokenFactory,
    fresh_pg_database,
)
from node_process import NodeProcess
from restart_checks import check_answers, check_chat_round, check_history, history, report
from restart_meeting import (
    Meeting,
    assemble,
    members_problem,
    rooms_problem,
    within,
)
from restart_members import Findings, Member, busy_chat

HEARTBEAT = 1.0  # HEARTBEAT_INTERVAL_SECONDS: the dead node is swept within 4/3 of it
GRACE = 10.0  # RECONNECT_GRACE_SECONDS: the members' time to come back
WINDOW, PACE = 4, 0.02
WARMUP = 10
BURST = 8
SETTLED_SECONDS = GRACE  # the members back, the room as before
DIED_SECONDS = 4 * HEARTBEAT  # SPEC §7: dropped within 2 x the interval (margin: CPU)


def redis_deployment(request: pytest.FixtureRequest) -> dict[str, str]:
    """One Redis, the tests' (CALLROOM_TEST_REDIS_URL), with a key prefix of this
    test's own: pub/sub channels ignore database numbers (SPEC §9 "Redis")."""
    return {"REDIS_URL": REDIS_TEST_URL, "REDIS_PREFIX": f"fault-{uuid.uuid4().hex[:10]}"}


def redis_cluster_deployment(request: pytest.FixtureRequest) -> dict[str, str]:
    """The suite's Redis Cluster (3 primaries, 3 replicas: tests/redis_cluster.py),
    emptied, as ``redis+cluster://`` (SPEC §9 "Redis Cluster")."""
    url: str = request.getfixturevalue("cluster_url")
    return {"REDIS_URL": url}


DEPLOYMENTS: dict[str, Callable[[pytest.FixtureRequest], dict[str, str]]] = {
    "redis": redis_deployment,
    "redis_cluster": redis_cluster_deployment,
}


@pytest.fixture(params=sorted(DEPLOYMENTS))
async def nodes(
    request: pytest.FixtureRequest, jwks_server: JwksServer, tmp_path: Path
) -> AsyncIterator[list[NodeProcess]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AUTH", "LOG_", "REDIS"))}
    env.update(
        AUTH_ISSUER=ISSUER,
        AUTH0_AUDIENCE=AUDIENCE,
        AUTH_JWKS_URL=jwks_server.url,
        HEARTBEAT_INTERVAL_SECONDS=str(HEARTBEAT),
        RECONNECT_GRACE_SECONDS=str(GRACE),
        RATE_LIMIT_PER_SECOND="1000",
        RATE_LIMIT_BURST="1000",
        SHUTDOWN_GRACE_SECONDS="3",
        **DEPLOYMENTS[request.param](request),
    )
    async with fresh_pg_database() as database:
        env["DATABASE_URL"] = database
        started = await asyncio.gather(
            NodeProcess.start(env, tmp_path), NodeProcess.start(env, tmp_path)
        )
        try:
            yield list(started)
        finally:
            await asyncio.gather(*(node.stop() for node in started))


@pytest.mark.timeout(420)  # two node processes to start: slow on a loaded machine
async def test_members_of_a_killed_node_rejoin_another_and_no_acknowledged_message_is_lost(
    nodes: list[NodeProcess], people: list[Member], make_token: TokenFactory
) -> None:
    findings = Findings()
    meeting = Meeting(list(nodes), None, make_token, people)  # type: ignore[arg-type]
    await assemble(meeting)
    survivor, victim = nodes
    for member in meeting.members.values():
        member.fallbacks = [survivor]
    talkers = meeting.admitted()
    stop = asyncio.Event()
    traffic = await busy_chat(talkers, stop, window=WINDOW, pace=PACE, warmup=WARMUP, burst=BURST)
    in_flight = {m.client_id: m.link.unanswered for m in talkers}
    # Sent through the node about to die and not answered yet: stored or not, broadcast
    # or not, nobody can tell until the sender retries through the other node.
    in_doubt = {
        chat_id
        for m in talkers
        if m.node.port == victim.port
        for chat_id in m.link.adds
        if chat_id not in m.acknowledged()
    }
    marks = {m: m.mark() for m in meeting.members.values()}

    await victim.kill9()
    killed = time.monotonic()
    findings.note(f"killed node {victim.node_id} with add_chat unanswered: {in_flight}")
    meeting.nodes = [survivor]  # type: ignore[list-item]
    # bob, dan (admitted) and erin (waiting) reconnect to the survivor: each with its role.
    present = await within(SETTLED_SECONDS, lambda: members_problem(meeting))
    findings.check("every member connected with its role again", present is None, present)
    findings.note(f"members back {time.monotonic() - killed:.1f} s after the kill")
    room = await within(SETTLED_SECONDS, lambda: rooms_problem(meeting))
    findings.check("the room as before on the living node", room is None, room)
    moved = {n: len(m.links) - 1 for n, m in meeting.members.items()}
    findings.check(
        "the dead node's members reconnected, the others did not",
        moved == {"alice": 0, "carol": 0, "bob": 1, "dan": 1, "erin": 1},
        moved,
    )
    stop.set()
    await asyncio.gather(*traffic)
    await check_chat_round(meeting, findings)
    await check_answers(meeting, findings)
    await check_history(meeting, findings, in_doubt)
    for name in ("alice", "carol"):  # connected throughout: bob and dan never left
        seen = meeting.members[name].received[marks[meeting.members[name]] :]
        gone = [f.payload for f in seen if f.event == "disconnect"]
        findings.check(f"{name} saw no disconnect", not gone, gone)
    report(meeting, findings)
    errors = survivor.errors()
    findings.check("no error line in the living node's log", not errors, errors[:3])

    stored = Counter(await history(meeting))
    acked = set().union(*(m.acknowledged() for m in talkers))
    findings.note(
        f"figures: {len(acked)} acknowledged, {sum(m.retries for m in talkers)} sent again "
        f"after the reconnect, lost {len(acked - set(stored))}, "
        f"duplicated {sum(n - 1 for n in stored.values())}"
    )
    print("\n" + "\n".join(findings.notes))
    findings.verdict()
