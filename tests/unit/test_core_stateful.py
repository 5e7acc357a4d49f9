"""Room core under random joins, leaves, drops, grace expiries and commands (hypothesis).

Invariants checked after every step (SPEC §2, §3):
1. a room with an admitted member has a host;
2. a waiting member receives nothing but room_state / accept_waiting / deny_waiting /
   pong, and its room_state shows only itself;
3. raised hands are admitted members, screen sharers never exceed the limit;
4. a rejected command (ProtocolError) or join (HandshakeRefused) changes nothing;
5. the room round-trips through room_to_dict / room_from_dict;
and: after a change of membership or role, every member whose view changed got a
room_state equal to its current view.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, get_args

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from callroom.errors import HandshakeRefused, ProtocolError
from callroom.room import core
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
    RequestScreenshare,
    RequestWaiting,
    SetMediaState,
    Signal,
    StopScreenshare,
    UnbanParticipant,
    UnlockRoom,
)
from callroom.room.events import SERVER_EVENTS, Event, SignalEvent
from callroom.room.model import Close, Effects, Identity, Role, Room, RoomRules, SendView
from callroom.room.payloads import RoomState, ServerPayload, SignalFields

CLIENTS = ("a", "b", "c", "d", "e", "t", "z")  # t: token host, z: admin
WAITING_MAY_GET = {"room_state", "accept_waiting", "deny_waiting", "pong"}

clients = st.sampled_from(CLIENTS)


def commands(targets: st.SearchStrategy[str]) -> st.SearchStrategy[Command]:
    """Every command the core runs, naming members drawn from ``targets``."""
    optional_target = st.none() | targets
    optional_bool = st.none() | st.booleans()
    return st.one_of(
        st.just(Ping()),
        st.just(RaiseHand()),
        st.builds(LowerHand, optional_target),
        st.just(RequestWaiting()),
        st.builds(AcceptWaiting, targets),
        st.builds(DenyWaiting, targets),
        st.just(RequestScreenshare()),
        st.builds(AcceptScreenshare, targets),
        st.builds(DenyScreenshare, targets),
        st.builds(StopScreenshare, optional_target),
        st.builds(KickParticipant, targets, st.booleans()),
        st.builds(UnbanParticipant, targets),
        st.builds(PromoteHost, targets),
        st.builds(DemoteHost, targets),
        st.just(LockRoom()),
        st.just(UnlockRoom()),
        st.just(EndRoom()),
        st.builds(SetMediaState, optional_bool, optional_bool),
        st.builds(signal, st.sampled_from(list(SIGNAL_FIELDS)), targets),
    )


# What the decoder gives each signaling event (callroom.room.validators).
SIGNAL_FIELDS: dict[SignalEvent, SignalFields] = {
    Event.OFFER: {"sdp": "v=0", "type": "offer"},
    Event.ANSWER: {"sdp": "v=0", "type": "answer"},
    Event.CANDIDATE: {"candidate": "c", "sdpMid": None, "sdpMLineIndex": None},
    Event.RENEGOTIATE: {"reason": None},
}


def signal(event: SignalEvent, target: str) -> Signal:
    return Signal(event, target, SIGNAL_FIELDS[event])


ALL_ROLES = frozenset(Role)
HOST_CONTROLS: dict[str, frozenset[Role]] = {
    "accept_waiting": frozenset({Role.WAITING}),
    "deny_waiting": frozenset({Role.WAITING}),
    "accept_screenshare": frozenset({Role.PARTICIPANT}),
    "deny_screenshare": frozenset({Role.PARTICIPANT}),
    "stop_screenshare": frozenset({Role.SCREENSHARE}),
    "promote": frozenset({Role.PARTICIPANT, Role.SCREENSHARE}),
    "demote": frozenset({Role.HOST}),
    "kick": ALL_ROLES,
    "unban": ALL_ROLES,
    "lower": ALL_ROLES,
}


def build_control(kind: str, target: str, ban: bool) -> Command:
    builders: dict[str, Command] = {
        "accept_waiting": AcceptWaiting(target),
        "deny_waiting": DenyWaiting(target),
        "accept_screenshare": AcceptScreenshare(target),
        "deny_screenshare": DenyScreenshare(target),
        "stop_screenshare": StopScreenshare(target),
        "promote": PromoteHost(target),
        "demote": DemoteHost(target),
        "kick": KickParticipant(target, ban),
        "unban": UnbanParticipant(target),
        "lower": LowerHand(target),
    }
    return builders[kind]


# Commands that change membership or role: after them, changed views get room_state.
MEMBERSHIP = (
    AcceptWaiting,
    DenyWaiting,
    AcceptScreenshare,
    StopScreenshare,
    KickParticipant,
    PromoteHost,
    DemoteHost,
)


def identity(cid: str, renamed: bool) -> Identity:
    return Identity(
        cid,
        f"{cid}-renamed" if renamed else f"name-{cid}",
        is_admin=cid == "z",
        is_token_host=cid in ("t", "z"),
    )


PAYLOAD_KEYS = {frozenset(record.__required_keys__) for record in get_args(ServerPayload)}


def views(room: Room) -> dict[str, RoomState]:
    return {cid: core.room_state_for(room, cid) for cid in room.members}


class RoomMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.room: Room | None = None
        self.room_rules = RoomRules()

    @initialize(
        lobby=st.booleans(),
        size=st.integers(min_value=3, max_value=8),
        shares=st.integers(min_value=1, max_value=2),
    )
    def configure(self, lobby: bool, size: int, shares: int) -> None:
        self.room_rules = RoomRules(
            lobby_enabled=lobby, max_room_size=size, max_screenshares=shares
        )

    # -- steps ----------------------------------------------------------------------

    @rule(cid=clients, renamed=st.booleans())
    def join(self, cid: str, renamed: bool) -> None:
        room = self.room or core.new_room("zoom", "r", 0)
        before = core.room_to_dict(room)
        old_roles = self.roles(room)
        old_views = views(room)
        try:
            effects = core.join(room, identity(cid, renamed), self.room_rules)
        except HandshakeRefused:
            assert core.room_to_dict(room) == before  # (4)
            return
        self.room = room
        first = effects.actions[0]
        assert isinstance(first, SendView)
        assert (first.recipients, first.event) == ((cid,), "room_state")
        self.check_effects(room, effects, old_roles, old_views, membership=True)

    @precondition(lambda self: self.room is not None)
    @rule(cid=clients)
    def leave(self, cid: str) -> None:
        self.transition(lambda room: core.leave(room, cid), membership=True)

    @precondition(lambda self: self.room is not None)
    @rule(cid=clients)
    def drop(self, cid: str) -> None:
        self.transition(lambda room: core.drop(room, cid), membership=True)

    @precondition(lambda self: self.room is not None)
    @rule(cid=clients)
    def grace_expired(self, cid: str) -> None:
        self.transition(lambda room: core.grace_expired(room, cid), membership=True)

    @precondition(lambda self: self.room is not None)
    @rule(actor=clients, command=commands(clients))
    def anyone_sends_anything(self, actor: str, command: Command) -> None:
        self.run_command(actor, command)

    @precondition(lambda self: self.room is not None)
    @rule(data=st.data(), host_acts=st.booleans())
    def member_sends_about_members(self, data: st.DataObject, host_acts: bool) -> None:
        # Actors and targets drawn from the members, so that commands mostly succeed.
        assert self.room is not None
        members = sorted(self.room.members)
        hosts = sorted(core.host_ids(self.room))
        actor = data.draw(st.sampled_from(hosts if host_acts and hosts else members))
        command = data.draw(commands(st.sampled_from(members)))
        self.run_command(actor, command)

    @precondition(lambda self: self.room is not None and bool(core.host_ids(self.room)))
    @rule(data=st.data(), ban=st.booleans())
    def host_controls_a_fitting_member(self, data: st.DataObject, ban: bool) -> None:
        # A host control aimed at the kind of member it is for, so that it mostly succeeds.
        room = self.room
        assert room is not None
        host = data.draw(st.sampled_from(core.host_ids(room)))
        pools = {
            kind: [c for c, m in room.members.items() if m.role in roles and c != host]
            for kind, roles in HOST_CONTROLS.items()
        }
        pools["unban"] = sorted(room.banned)
        pools["lower"] = list(room.hands)
        kinds = sorted(kind for kind, pool in pools.items() if pool)
        if not kinds:
            return
        kind = data.draw(st.sampled_from(kinds))
        target = data.draw(st.sampled_from(pools[kind]))
        self.run_command(host, build_control(kind, target, ban))

    @precondition(lambda self: self.room is not None)
    @rule(data=st.data())
    def member_does_what_its_role_allows(self, data: st.DataObject) -> None:
        room = self.room
        assert room is not None
        actor = data.draw(st.sampled_from(sorted(room.members)))
        role = room.members[actor].role
        others = [c for c in core.admitted_ids(room) if c != actor] or [actor]
        choices: list[Command] = [
            RaiseHand(),
            LowerHand(None),
            SetMediaState(True, None),
            Signal(
                Event.OFFER, data.draw(st.sampled_from(others)), {"sdp": "v=0", "type": "offer"}
            ),
        ]
        if role is Role.WAITING:
            choices = [RequestWaiting()]
        elif role is Role.PARTICIPANT:
            choices.append(RequestScreenshare())
        elif role is Role.SCREENSHARE:
            choices.append(StopScreenshare(None))
        self.run_command(actor, data.draw(st.sampled_from(choices)))

    def run_command(self, actor: str, command: Command) -> None:
        assert self.room is not None
        before = core.room_to_dict(self.room)
        try:
            self.transition(
                lambda room: core.handle(room, actor, command, self.room_rules),
                membership=isinstance(command, MEMBERSHIP),
            )
        except ProtocolError as exc:
            error = exc
        else:
            return
        assert error.event == core.event_name(command)
        assert core.room_to_dict(self.room) == before  # (4)

    # -- checks ---------------------------------------------------------------------

    @staticmethod
    def roles(room: Room) -> dict[str, Role]:
        return {cid: m.role for cid, m in room.members.items()}

    def transition(self, step: Any, *, membership: bool) -> None:
        room = self.room
        assert room is not None
        old_roles = self.roles(room)
        old_views = views(room)
        effects = step(room)
        self.check_effects(room, effects, old_roles, old_views, membership=membership)

    def check_effects(
        self,
        room: Room,
        effects: Effects,
        old_roles: dict[str, Role],
        old_views: dict[str, RoomState],
        *,
        membership: bool,
    ) -> None:
        known = set(old_roles) | set(room.members)
        last_state: dict[str, RoomState] = {}
        for action in effects.actions:
            if isinstance(action, Close):
                assert action.client_id in old_roles
                continue
            assert action.event in SERVER_EVENTS, action.event  # a name the server sends
            # The payload has the keys of one of the typed records (callroom.room.payloads).
            assert frozenset(action.payload) in PAYLOAD_KEYS, (action.event, action.payload)
            for cid in action.recipients:
                assert cid in known, (cid, action.event)
                was_waiting = old_roles.get(cid) is Role.WAITING
                member = room.members.get(cid)
                if was_waiting or (member is not None and member.role is Role.WAITING):
                    assert action.event in WAITING_MAY_GET, (cid, action.event)  # (2)
                if action.event == "room_state":
                    assert isinstance(action, SendView)  # each recipient its own view
                    last_state[cid] = action.payload
                    if action.payload["role"] == "waiting":
                        self.check_waiting_view(cid, action.payload)  # (2)
        if effects.room_closed:
            assert room.closed
            assert not room.members
            self.room = None
            return
        # Any room_state sent is the recipient's view at the end of the step.
        for cid, state in last_state.items():
            assert state == core.room_state_for(room, cid)
        if membership:
            new_views = views(room)
            for cid, view in new_views.items():
                if old_views.get(cid) != view:
                    assert cid in last_state, f"{cid}'s view changed but it got no room_state"

    @staticmethod
    def check_waiting_view(cid: str, state: Mapping[str, object]) -> None:
        assert state["waitingUsers"] == [{"clientId": cid, "displayName": state["displayName"]}]
        for key in ("hosts", "participants", "handsRaised", "sharingScreen"):
            assert state[key] == []
        assert state["media"] == {}

    @invariant()
    def room_has_a_host_when_it_has_admitted_members(self) -> None:  # (1)
        if self.room is None:
            return
        admitted = [m for m in self.room.members.values() if m.role.admitted]
        if admitted:
            assert any(m.role is Role.HOST for m in admitted)

    @invariant()
    def hands_sharers_media_and_memory_are_consistent(self) -> None:  # (3)
        room = self.room
        if room is None:
            return
        admitted = set(core.admitted_ids(room))
        assert set(room.hands) <= admitted
        assert len(room.hands) == len(set(room.hands))
        assert set(room.media) <= admitted
        sharers = [m for m in room.members.values() if m.role is Role.SCREENSHARE]
        assert len(sharers) <= self.room_rules.max_screenshares
        assert not room.banned & set(room.members)
        assert len(room.members) <= self.room_rules.max_room_size
        seqs = [m.admitted_seq for m in room.members.values() if m.role.admitted]
        assert len(seqs) == len(set(seqs))
        for m in room.members.values():
            if m.role.admitted:
                remembered = Role.HOST if m.role is Role.HOST else Role.PARTICIPANT
                assert room.remembered[m.client_id] is remembered
                assert 0 < m.admitted_seq <= room.seq
            else:
                assert m.connected
                assert m.admitted_seq == 0

    @invariant()
    def room_round_trips(self) -> None:  # (5)
        if self.room is None:
            return
        data = core.room_to_dict(self.room)
        back = core.room_from_dict(data)
        assert back == self.room
        assert core.room_to_dict(back) == data


RoomMachine.TestCase.settings = settings(
    max_examples=200,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestRoomMachine = RoomMachine.TestCase
