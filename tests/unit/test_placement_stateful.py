"""The runtime's transitions (callroom.room.placement) under random steps (hypothesis).

The record of one room, changed by members on three nodes joining (taking over older
sessions), leaving, dropping, running commands, graces expiring and dead nodes swept,
the way ``callroom.runtime.transitions`` runs them (the record pruned after each).
Invariants after every step (SPEC §2, §7):
1. sessions and graces name members only;
2. a member is connected exactly when a session holds its place, and in its grace
   exactly when it is not (one or the other, never both);
3. a room with a connected admitted member has a host;
4. nothing names a node once it was swept (no session on it, no grace it times);
5. a refused step (HandshakeRefused, ProtocolError) changes nothing;
6. the record round-trips through its dict form.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from callroom.errors import HandshakeRefused, ProtocolError
from callroom.room import placement
from callroom.room.commands import (
    AcceptWaiting,
    Command,
    DemoteHost,
    EndRoom,
    KickParticipant,
    LockRoom,
    PromoteHost,
    RaiseHand,
    UnlockRoom,
)
from callroom.room.model import Identity, Role, RoomRules
from callroom.room.record import RoomRecord, record_from_dict, record_to_dict, session_node

CLIENTS = ("a", "b", "c", "d", "t")  # t: host by its token
NODES = ("n1", "n2", "n3")
GRACE_MS = 1000

clients = st.sampled_from(CLIENTS)
nodes = st.sampled_from(NODES)
room_commands: st.SearchStrategy[Command] = st.one_of(
    st.just(RaiseHand()),
    st.just(LockRoom()),
    st.just(UnlockRoom()),
    st.just(EndRoom()),
    st.builds(AcceptWaiting, clients),
    st.builds(PromoteHost, clients),
    st.builds(DemoteHost, clients),
    st.builds(KickParticipant, clients, st.booleans()),
)


class PlacementMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.record: RoomRecord | None = None
        self.room_rules = RoomRules(lobby_enabled=True, max_room_size=4)
        self.connections = 0
        self.swept: set[str] = set()
        self.now = 0

    def apply(self, change: placement.Change | None) -> None:
        """What Transitions.run does with a change: prune, then keep or close."""
        if change is None:
            return
        change.record.prune()
        self.record = None if change.effects.room_closed else change.record

    def refused(self, step: Callable[[], placement.Change | None]) -> None:
        before = None if self.record is None else record_to_dict(self.record)
        try:
            self.apply(step())
        except (HandshakeRefused, ProtocolError):
            assert (None if self.record is None else record_to_dict(self.record)) == before  # 5

    @rule(cid=clients, node=nodes)
    def join(self, cid: str, node: str) -> None:
        if node in self.swept:
            return
        self.connections += 1
        session = f"{node}/c{self.connections}"
        identity = Identity(cid, f"name-{cid}", is_token_host=cid == "t")
        record = copy.deepcopy(self.record)  # a refusal must leave the stored one alone
        try:
            change = placement.join(
                record, "zoom", "r", identity, session, self.room_rules, self.now
            )
        except HandshakeRefused:
            return
        self.apply(change)

    @rule(cid=clients, leave=st.booleans())
    def socket_ends(self, cid: str, leave: bool) -> None:
        if self.record is None or cid not in self.record.sessions:
            return
        session = self.record.sessions[cid]
        node = session_node(session)
        change = placement.depart(
            self.record, cid, session, leave=leave, node_id=node, grace_until_ms=self.now + GRACE_MS
        )
        assert change is not None
        self.apply(change)

    @rule(cid=clients, node=nodes)
    def stale_socket_ends(self, cid: str, node: str) -> None:
        """A socket whose place was taken over: its end changes nothing."""
        if self.record is None:
            return
        before = record_to_dict(self.record)
        change = placement.depart(
            self.record, cid, f"{node}/old", leave=False, node_id=node, grace_until_ms=0
        )
        assert change is None
        assert record_to_dict(self.record) == before

    @rule(cid=clients)
    def grace_ends(self, cid: str) -> None:
        if self.record is None or cid not in self.record.graces:
            return
        owner = self.record.graces[cid][0]
        other = next(n for n in NODES if n != owner)
        assert placement.expire_grace(self.record, cid, other) is None  # not its timer
        self.apply(placement.expire_grace(self.record, cid, owner))

    @rule(actor=clients, command=room_commands)
    def command(self, actor: str, command: Command) -> None:
        if self.record is None:
            return
        record = self.record
        session = record.sessions.get(actor, "nobody/c0")
        self.refused(lambda: placement.command(record, actor, session, command, self.room_rules))

    @precondition(lambda self: len(self.swept) < len(NODES) - 1)
    @rule(dead=nodes)
    def node_dies(self, dead: str) -> None:
        self.now += 10
        living = next(n for n in NODES if n != dead and n not in self.swept)
        if dead in self.swept or living == dead:
            return
        self.swept.add(dead)
        self.apply(placement.sweep(self.record, dead, living, self.now + GRACE_MS))

    @rule()
    def the_admin_ends_the_room(self) -> None:
        self.apply(placement.end(self.record))
        assert self.record is None

    # -- invariants -----------------------------------------------------------------

    @invariant()
    def places_name_members_only(self) -> None:  # (1) and (2)
        if self.record is None:
            return
        members = self.record.room.members
        assert set(self.record.sessions) <= set(members)
        assert set(self.record.graces) <= set(members)
        for cid, member in members.items():
            assert member.connected == (cid in self.record.sessions)
            assert member.connected != (cid in self.record.graces)

    @invariant()
    def a_room_with_connected_admitted_members_has_a_host(self) -> None:  # (3)
        if self.record is None:
            return
        members = self.record.room.members.values()
        if any(m.role.admitted and m.connected for m in members):
            assert any(m.role is Role.HOST for m in members)

    @invariant()
    def swept_nodes_hold_nothing(self) -> None:  # (4)
        if self.record is None:
            return
        for session in self.record.sessions.values():
            assert session_node(session) not in self.swept
        for owner, _ in self.record.graces.values():
            assert owner not in self.swept

    @invariant()
    def record_round_trips(self) -> None:  # (6)
        if self.record is not None:
            assert record_from_dict(record_to_dict(self.record)) == self.record


PlacementMachine.TestCase.settings = settings(
    max_examples=150,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestPlacement = PlacementMachine.TestCase
