"""The meeting of the Redis-restart tests (tests/integration/test_redis_restart.py):
who is on which node with which role, how it is assembled, and what it should look like.

alice hosts; bob (hand raised) and dan are participants, carol shares her screen, erin
waits in the lobby (SPEC §1 roles); frank joins after the restart, gus is the stranger
refused by a locked room. With two nodes they alternate: alice, carol and gus on the
first, the others on the second. The room as it should be is kept in ``Meeting.roles``
and ``Meeting.hands`` and compared with the admin API's view (SPEC §4, read from the
room state every node shares) and with each member's latest ``room_state``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from callroom_testing import TokenFactory, http_call, ids
from restart_members import ADMITTED, Member, Payload

if TYPE_CHECKING:
    from callroom.server.node import Node


class Outage(Protocol):
    """What strikes the meeting's Redis: ``redis_process.RedisProcess`` (killed, then
    restarted empty) or a cluster's primary (tests/integration/test_redis_cluster_faults.py)."""

    async def kill9(self) -> None: ...

    async def restart(self) -> None: ...


ROOM = "standup"
ROOM_PATH = f"/api/v1/rooms/zoom/{ROOM}"
# Roles before the kill, and the node (index, modulo the node count) of every member.
ROLES = {
    "alice": "host",
    "bob": "participant",
    "carol": "screenshare",
    "dan": "participant",
    "erin": "waiting",
}
PLACES = {"alice": 0, "bob": 1, "carol": 0, "dan": 1, "erin": 1, "frank": 1, "gus": 0}
EVENT_SECONDS = 3.0  # an answer, a broadcast
ANSWER_SECONDS = 5.0  # until the last add_chat is answered


@dataclass
class Meeting:
    nodes: list[Node]
    redis: Outage | None  # what the scenario strikes, if it strikes anything
    make_token: TokenFactory
    everyone: list[Member]
    members: dict[str, Member] = field(default_factory=dict)
    roles: dict[str, str] = field(default_factory=lambda: dict(ROLES))
    hands: list[str] = field(default_factory=lambda: ["bob"])

    @property
    def admin(self) -> str:
        return self.make_token("root", "Root", roles=["admin"])

    def node_of(self, name: str) -> Node:
        return self.nodes[PLACES[name] % len(self.nodes)]

    async def arrive(self, name: str) -> Member:
        member = Member(self.node_of(name), self.make_token(name, name.title()), name, ROOM)
        self.everyone.append(member)
        await member.join()
        self.members[name] = member
        return member

    def admitted(self) -> list[Member]:
        return [m for name, m in self.members.items() if self.roles[name] in ADMITTED]

    def host(self) -> Member:
        return self.members["alice"]


# -- what the room should look like ---------------------------------------------------


def expected_lists(roles: dict[str, str], *, as_host: bool) -> dict[str, list[str]]:
    def having(role: str) -> list[str]:
        return sorted(name for name, r in roles.items() if r == role)

    return {
        "hosts": having("host"),
        "participants": having("participant"),
        "sharingScreen": having("screenshare"),
        "waitingUsers": having("waiting") if as_host else [],
    }


def lists_of(view: Payload) -> dict[str, list[str]]:
    return {k: sorted(ids(view.get(k) or [])) for k in expected_lists({}, as_host=True)}


def state_problem(name: str, member: Member, roles: dict[str, str]) -> str | None:
    """What is wrong with ``member``'s latest ``room_state`` (None: it is as expected)."""
    if not member.connected:
        return f"{name} not connected (closes {[link.close_code for link in member.links]})"
    state = member.link.room_state
    if state.get("role") != roles[name]:
        return f"{name} is {state.get('role')!r}, was {roles[name]!r}"
    if roles[name] == "waiting":
        return None
    want = expected_lists(roles, as_host=roles[name] == "host")
    got = lists_of(state)
    return None if got == want else f"{name} sees {got}, expected {want}"


async def admin_view_problem(meeting: Meeting, node: Node) -> str | None:
    status, body, _ = await http_call(node, "GET", ROOM_PATH, meeting.admin)
    if status != 200:
        return f"node {meeting.nodes.index(node)}: GET room {status} {body}"
    got = {**lists_of(body), "handsRaised": ids(body["handsRaised"]), "locked": body["locked"]}
    want = {
        **expected_lists(meeting.roles, as_host=True),
        "handsRaised": meeting.hands,
        "locked": False,
    }
    if got != want:
        return f"node {meeting.nodes.index(node)}: room {got}, expected {want}"
    return None


async def within(timeout: float, problem: Callable[[], Awaitable[str | None]]) -> str | None:
    """Poll a state (``problem`` says what is wrong, None: nothing) until it holds or
    ``timeout`` passes; the last problem seen."""
    deadline = time.monotonic() + timeout
    while True:
        found = await problem()
        if found is None or time.monotonic() > deadline:
            return found
        await asyncio.sleep(0.05)  # polling a state with a deadline, not a wait for time


async def readiness(meeting: Meeting, status: int) -> str | None:
    for index, node in enumerate(meeting.nodes):
        got, body, _ = await http_call(node, "GET", "/readyz")
        if got != status:
            return f"node {index} /readyz {got} {body}"
    return None


async def all_of(*waits: Awaitable[bool]) -> bool:
    return all(await asyncio.gather(*waits))


# -- the meeting assembled ----------------------------------------------------------


async def assemble(meeting: Meeting) -> None:
    """alice hosts; bob, carol, dan admitted through the lobby; carol shares her screen;
    erin waits; bob raises his hand; every member's view settled."""
    alice = await meeting.arrive("alice")
    assert alice.role == "host"
    for name in ("bob", "carol", "dan"):
        since = alice.mark()
        member = await meeting.arrive(name)
        assert member.role == "waiting"
        assert await alice.wait_event("waiting_request", since, EVENT_SECONDS)
        since = member.mark()
        await alice.send("accept_waiting", {"clientId": name})
        assert await member.wait_event("room_state", since, EVENT_SECONDS, is_participant)
    carol = meeting.members["carol"]
    since, carol_since = alice.mark(), carol.mark()
    await carol.send("request_screenshare")
    assert await alice.wait_event("request_screenshare", since, EVENT_SECONDS)
    await alice.send("accept_screenshare", {"clientId": "carol"})
    assert await carol.wait_event("room_state", carol_since, EVENT_SECONDS, sharing)
    since = alice.mark()
    erin = await meeting.arrive("erin")
    assert erin.role == "waiting"
    assert await alice.wait_event("waiting_request", since, EVENT_SECONDS)
    marks = {m: m.mark() for m in meeting.admitted()}
    await meeting.members["bob"].send("raise_hand")
    for member, since in marks.items():
        assert await member.wait_event("raise_hand", since, EVENT_SECONDS)
    problems = await within(EVENT_SECONDS, lambda: members_problem(meeting))
    assert problems is None, problems


def is_participant(state: Payload) -> bool:
    return state.get("role") == "participant"


def sharing(state: Payload) -> bool:
    return state.get("role") == "screenshare"


async def members_problem(meeting: Meeting) -> str | None:
    found = [state_problem(n, meeting.members[n], meeting.roles) for n in meeting.members]
    return "; ".join(p for p in found if p) or None


async def rooms_problem(meeting: Meeting) -> str | None:
    found = [await admin_view_problem(meeting, node) for node in meeting.nodes]
    return "; ".join(p for p in found if p) or None
