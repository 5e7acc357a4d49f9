"""Room core commands: every SPEC §3.1 row run by the core, its recipients and its errors."""

from __future__ import annotations

from typing import Any, cast

import pytest

from callroom.errors import CloseCode, ErrorCode, HandshakeCode, HandshakeRefused, ProtocolError
from callroom.room.commands import (
    AcceptScreenshare,
    AcceptWaiting,
    AddChat,
    Command,
    DeleteChat,
    DemoteHost,
    DenyScreenshare,
    DenyWaiting,
    EndRoom,
    GetRecentChats,
    KickParticipant,
    LockRoom,
    LowerHand,
    Ping,
    PromoteHost,
    RaiseHand,
    RefreshToken,
    RequestScreenshare,
    RequestWaiting,
    SetMediaState,
    Signal,
    StopScreenshare,
    UnbanParticipant,
    UnlockRoom,
)
from callroom.room.core import (
    check_join,
    drop,
    event_name,
    handle,
    join,
    room_state_for,
    room_to_dict,
)
from callroom.room.events import Event
from callroom.room.model import Close, Effects, MediaState, Role, Room, RoomRules, Send
from callroom.room.payloads import SessionDescription
from core_helpers import (
    RULES,
    events,
    info,
    last_state,
    sends,
    setup,
    state_recipients,
    who,
)


def run(room: Room, actor: str, command: Command, rules: RoomRules = RULES) -> Effects:
    return handle(room, actor, command, rules)


def rejects(room: Room, actor: str, command: Command, code: ErrorCode, **kw: Any) -> None:
    """The command is refused with ``code`` and the room is left exactly as it was."""
    before = room_to_dict(room)
    with pytest.raises(ProtocolError) as caught:
        run(room, actor, command, **kw)
    assert caught.value.code is code
    assert caught.value.event == event_name(command)
    assert room_to_dict(room) == before


# -- ping and node-run rows ---------------------------------------------------------------


def test_ping_gets_pong_to_the_sender_only() -> None:
    room = setup(waiting=("w",))
    assert sends(run(room, "w", Ping())) == [(("w",), "pong", {})]


@pytest.mark.parametrize(
    "command",
    [
        AddChat("hi", None),
        DeleteChat("c1"),
        GetRecentChats(50, None, Event.RECENTS_CHAT),
        RefreshToken("t"),
    ],
)
def test_chat_and_token_rows_are_run_by_the_node(command: Command) -> None:
    with pytest.raises(ValueError, match=event_name(command)):
        run(setup(), "h", command)


def test_event_names_follow_the_wire_names() -> None:
    assert event_name(RequestWaiting()) == "request_waiting"
    assert event_name(GetRecentChats(5, None, Event.RECENTS_CHAT)) == "recents_chat"
    assert event_name(Signal(Event.ANSWER, "x", {"sdp": "v=0", "type": "answer"})) == "answer"
    assert event_name(KickParticipant("x", ban=False)) == "kick_participant"


def test_a_connection_not_in_the_room_is_forbidden() -> None:
    rejects(setup(), "ghost", RaiseHand(), ErrorCode.FORBIDDEN)
    rejects(setup(), "ghost", RequestWaiting(), ErrorCode.FORBIDDEN)
    rejects(setup(), "ghost", LockRoom(), ErrorCode.FORBIDDEN)


# -- raise_hand / lower_hand ------------------------------------------------------------


def test_raise_hand_queues_the_sender_and_tells_the_admitted() -> None:
    room = setup(participants=("p", "q"), waiting=("w",))
    effects = run(room, "q", RaiseHand())
    assert sends(effects) == [(("h", "p", "q"), "raise_hand", info("q"))]
    run(room, "h", RaiseHand())
    assert room.hands == ["q", "h"]
    assert [c["clientId"] for c in room_state_for(room, "p")["handsRaised"]] == ["q", "h"]


def test_raise_hand_twice_is_a_no_op() -> None:
    room = setup(participants=("p",))
    run(room, "p", RaiseHand())
    assert run(room, "p", RaiseHand()) == Effects()
    assert room.hands == ["p"]


def test_waiting_member_cannot_raise_a_hand() -> None:
    rejects(setup(waiting=("w",)), "w", RaiseHand(), ErrorCode.FORBIDDEN)


@pytest.mark.parametrize("named", [None, "p"])
def test_lower_own_hand_by_naming_nobody_or_oneself(named: str | None) -> None:
    room = setup(participants=("p",), waiting=("w",))
    run(room, "p", RaiseHand())
    effects = run(room, "p", LowerHand(named))
    assert sends(effects) == [(("h", "p"), "lower_hand", info("p"))]
    assert room.hands == []


def test_host_lowers_another_members_hand() -> None:
    room = setup(participants=("p",))
    run(room, "p", RaiseHand())
    effects = run(room, "h", LowerHand("p"))
    assert sends(effects) == [(("h", "p"), "lower_hand", info("p"))]
    assert room.hands == []


def test_participant_cannot_lower_another_members_hand() -> None:
    room = setup(participants=("p", "q"))
    run(room, "q", RaiseHand())
    rejects(room, "p", LowerHand("q"), ErrorCode.FORBIDDEN)


def test_lowering_a_hand_that_is_not_raised_sends_nothing() -> None:
    room = setup(participants=("p",))
    assert run(room, "p", LowerHand(None)) == Effects()
    assert run(room, "h", LowerHand("p")) == Effects()
    assert run(room, "h", LowerHand("ghost")) == Effects()


def test_waiting_member_cannot_lower_a_hand() -> None:
    rejects(setup(waiting=("w",)), "w", LowerHand(None), ErrorCode.FORBIDDEN)


# -- request_waiting / accept_waiting / deny_waiting -----------------------------------


def test_request_waiting_tells_the_hosts_only() -> None:
    room = setup(participants=("p",), waiting=("w",))
    run(room, "h", PromoteHost("p"))
    assert sends(run(room, "w", RequestWaiting())) == [(("h", "p"), "waiting_request", info("w"))]


def test_request_waiting_from_an_admitted_member_is_forbidden() -> None:
    rejects(setup(participants=("p",)), "p", RequestWaiting(), ErrorCode.FORBIDDEN)


def test_accept_waiting_admits_and_tells_in_the_spec_order() -> None:
    room = setup(participants=("p",), waiting=("w", "v"))
    effects = run(room, "h", AcceptWaiting("w"))
    member = room.members["w"]
    assert member.role is Role.PARTICIPANT
    assert member.admitted_seq == room.seq
    assert room.remembered["w"] is Role.PARTICIPANT
    got = sends(effects)
    assert got[0] == (("h", "p", "w"), "accept_waiting", info("w"))
    assert got[1] == (("h", "p"), "connect", info("w"))
    # Then everyone gets room_state (SPEC §3.1), the other waiting member included.
    assert [e for _, e, _ in got[2:]] == ["room_state"] * 4
    assert state_recipients(effects) == ["h", "p", "w", "v"]
    assert last_state(effects, "w")["role"] == "participant"
    assert last_state(effects, "v")["waitingUsers"] == [info("v")]
    assert last_state(effects, "v")["participants"] == []
    assert events(effects, "v") == ["room_state"]


def test_accept_waiting_by_a_non_host_is_forbidden() -> None:
    room = setup(participants=("p",), waiting=("w",))
    rejects(room, "p", AcceptWaiting("w"), ErrorCode.FORBIDDEN)
    rejects(room, "w", AcceptWaiting("w"), ErrorCode.FORBIDDEN)


@pytest.mark.parametrize("target", ["p", "h", "ghost"])
def test_accept_waiting_of_a_non_waiting_member_is_not_found(target: str) -> None:
    rejects(setup(participants=("p",)), "h", AcceptWaiting(target), ErrorCode.NOT_FOUND)


def test_deny_waiting_tells_closes_4003_and_updates_hosts() -> None:
    room = setup(participants=("p",), waiting=("w", "v"))
    effects = run(room, "h", DenyWaiting("w"))
    assert "w" not in room.members
    assert effects.actions[0] == Send(("w",), Event.DENY_WAITING, info("w"))
    assert effects.actions[1] == Close("w", CloseCode.DENIED, "denied by a host")
    assert effects.actions[2] == Send(("h",), Event.DENY_WAITING, info("w"))
    assert state_recipients(effects) == ["h"]
    assert last_state(effects, "h")["waitingUsers"] == [info("v")]
    assert events(effects, "p") == events(effects, "v") == []
    # Denial erases memory: the user knocks again.
    join(room, who("w"), RULES)
    assert room.members["w"].role is Role.WAITING


def test_deny_waiting_erases_a_stale_memory_of_the_user() -> None:
    room = setup(waiting=("w",))
    room.remembered["w"] = Role.PARTICIPANT  # e.g. remembered after a takeover race
    run(room, "h", DenyWaiting("w"))
    assert "w" not in room.remembered


def test_deny_waiting_errors() -> None:
    room = setup(participants=("p",), waiting=("w",))
    rejects(room, "p", DenyWaiting("w"), ErrorCode.FORBIDDEN)
    rejects(room, "h", DenyWaiting("p"), ErrorCode.NOT_FOUND)
    rejects(room, "h", DenyWaiting("ghost"), ErrorCode.NOT_FOUND)


# -- screen share -----------------------------------------------------------------------


def test_request_screenshare_tells_the_hosts() -> None:
    room = setup(participants=("p", "q"))
    run(room, "h", PromoteHost("q"))
    effects = run(room, "p", RequestScreenshare())
    assert sends(effects) == [(("h", "q"), "request_screenshare", info("p"))]


@pytest.mark.parametrize("actor", ["h", "s", "w"])
def test_request_screenshare_from_a_non_participant_is_forbidden(actor: str) -> None:
    room = setup(participants=("s",), waiting=("w",))
    run(room, "h", AcceptScreenshare("s"))
    rejects(room, actor, RequestScreenshare(), ErrorCode.FORBIDDEN)


def test_accept_screenshare_grants_and_tells_member_hosts_then_everyone() -> None:
    room = setup(participants=("p", "q"), waiting=("w",))
    effects = run(room, "h", AcceptScreenshare("p"))
    assert room.members["p"].role is Role.SCREENSHARE
    assert room.remembered["p"] is Role.PARTICIPANT  # sharing is not remembered
    assert effects.actions[0] == Send(("p", "h"), Event.ACCEPT_SCREENSHARE, info("p"))
    assert state_recipients(effects) == ["h", "p", "q", "w"]
    assert last_state(effects, "q")["sharingScreen"] == [info("p")]
    assert last_state(effects, "q")["participants"] == [info("q")]
    assert events(effects, "q") == ["room_state"]


def test_accept_screenshare_beyond_the_limit_is_refused() -> None:
    room = setup(participants=("p", "q"))
    run(room, "h", AcceptScreenshare("p"))
    rejects(room, "h", AcceptScreenshare("q"), ErrorCode.LIMIT_REACHED)
    two = RoomRules(max_screenshares=2)
    run(room, "h", AcceptScreenshare("q"), two)
    assert room.members["q"].role is Role.SCREENSHARE


@pytest.mark.parametrize("target", ["h", "s", "w", "ghost"])
def test_accept_screenshare_of_a_non_participant_is_not_found(target: str) -> None:
    room = setup(participants=("s",), waiting=("w",))
    run(room, "h", AcceptScreenshare("s"), RoomRules(max_screenshares=5))
    rejects(room, "h", AcceptScreenshare(target), ErrorCode.NOT_FOUND)


def test_accept_screenshare_by_a_non_host_is_forbidden() -> None:
    rejects(setup(participants=("p",)), "p", AcceptScreenshare("p"), ErrorCode.FORBIDDEN)


def test_deny_screenshare_tells_member_and_hosts() -> None:
    room = setup(participants=("p",), waiting=("w",))
    effects = run(room, "h", DenyScreenshare("p"))
    assert sends(effects) == [(("p", "h"), "deny_screenshare", info("p"))]
    assert room.members["p"].role is Role.PARTICIPANT


@pytest.mark.parametrize("target", ["w", "ghost", "h"])
def test_deny_screenshare_of_a_non_participant_is_not_found(target: str) -> None:
    rejects(setup(waiting=("w",)), "h", DenyScreenshare(target), ErrorCode.NOT_FOUND)


def test_deny_screenshare_by_a_non_host_is_forbidden() -> None:
    rejects(setup(participants=("p",)), "p", DenyScreenshare("p"), ErrorCode.FORBIDDEN)


@pytest.mark.parametrize(("actor", "named"), [("s", None), ("s", "s"), ("h", "s")])
def test_stop_screenshare_by_the_sharer_or_a_host(actor: str, named: str | None) -> None:
    room = setup(participants=("s", "p"), waiting=("w",))
    run(room, "h", AcceptScreenshare("s"))
    effects = run(room, actor, StopScreenshare(named))
    assert room.members["s"].role is Role.PARTICIPANT
    assert state_recipients(effects) == ["h", "s", "p", "w"]
    assert last_state(effects, "p")["sharingScreen"] == []
    assert last_state(effects, "s")["role"] == "participant"


def test_stop_screenshare_permission_and_target_errors() -> None:
    room = setup(participants=("s", "p"), waiting=("w",))
    run(room, "h", AcceptScreenshare("s"))
    rejects(room, "p", StopScreenshare(None), ErrorCode.FORBIDDEN)  # not sharing
    rejects(room, "p", StopScreenshare("s"), ErrorCode.FORBIDDEN)  # not a host
    rejects(room, "s", StopScreenshare("p"), ErrorCode.FORBIDDEN)  # a sharer, not a host
    rejects(room, "w", StopScreenshare(None), ErrorCode.FORBIDDEN)
    rejects(room, "h", StopScreenshare(None), ErrorCode.NOT_FOUND)  # the host is no sharer
    rejects(room, "h", StopScreenshare("p"), ErrorCode.NOT_FOUND)
    rejects(room, "h", StopScreenshare("ghost"), ErrorCode.NOT_FOUND)


# -- kick / ban / unban -----------------------------------------------------------------


def test_kick_closes_4004_tells_the_admitted_and_updates_views() -> None:
    room = setup(participants=("p", "q"), waiting=("w",))
    run(room, "p", RaiseHand())
    effects = run(room, "h", KickParticipant("p", ban=False))
    assert "p" not in room.members
    assert room.hands == []
    assert effects.actions[0] == Close("p", CloseCode.KICKED, "removed by a host")
    assert effects.actions[1] == Send(("h", "q"), Event.DISCONNECT, info("p"))
    assert state_recipients(effects) == ["h", "q"]
    assert "p" not in room.remembered
    assert room.banned == set()
    check_join(room, who("p"), RULES)  # not banned


def test_kick_of_a_waiting_member_updates_hosts_only() -> None:
    room = setup(participants=("p",), waiting=("w",))
    effects = run(room, "h", KickParticipant("w", ban=False))
    assert effects.actions[0] == Close("w", CloseCode.KICKED, "removed by a host")
    assert "disconnect" not in [e for _, e, _ in sends(effects)]
    assert state_recipients(effects) == ["h"]


def test_kick_with_ban_refuses_the_user_for_the_life_of_the_room() -> None:
    room = setup(waiting=("w",))
    run(room, "h", KickParticipant("w", ban=True))
    assert room.banned == {"w"}
    with pytest.raises(HandshakeRefused) as caught:
        join(room, who("w"), RULES)
    assert caught.value.code is HandshakeCode.BANNED


def test_kick_of_another_host_by_a_host() -> None:
    room = setup(participants=("p",))
    run(room, "h", PromoteHost("p"))
    effects = run(room, "h", KickParticipant("p", ban=False))
    assert "p" not in room.members
    assert "p" not in room.remembered
    assert events(effects, "h") == ["disconnect", "room_state"]


def test_kick_errors() -> None:
    admin = who("a", is_admin=True)
    room = setup(participants=("p",), waiting=("w",))
    join(room, admin, RULES)
    rejects(room, "h", KickParticipant("h", ban=False), ErrorCode.INVALID_PAYLOAD)
    rejects(room, "h", KickParticipant("ghost", ban=True), ErrorCode.NOT_FOUND)
    rejects(room, "h", KickParticipant("a", ban=True), ErrorCode.FORBIDDEN)
    rejects(room, "h", KickParticipant("a", ban=False), ErrorCode.FORBIDDEN)
    rejects(room, "p", KickParticipant("w", ban=False), ErrorCode.FORBIDDEN)
    rejects(room, "w", KickParticipant("p", ban=False), ErrorCode.FORBIDDEN)


def test_an_admin_may_kick_another_admin() -> None:
    room = setup(host=who("a", is_admin=True))
    join(room, who("b", is_admin=True), RULES)
    run(room, "a", KickParticipant("b", ban=True))
    assert "b" not in room.members
    assert room.banned == {"b"}


def test_kick_by_an_admin_without_host_role_hands_host_on() -> None:
    # An admin acts as host whatever its role (SPEC §2); if it removes the last host,
    # the handoff rule keeps a host in the room.
    room = setup(host=who("a", is_admin=True), participants=("p", "q"))
    join(room, who("h", is_token_host=True), RULES)
    room.members["a"].role = Role.PARTICIPANT  # as after a demotion by another admin
    effects = run(room, "a", KickParticipant("h", ban=False))
    assert room.members["a"].role is Role.HOST  # admitted earliest
    assert state_recipients(effects) == ["a", "p", "q"]


def test_unban_lifts_the_ban_and_tells_the_host() -> None:
    room = setup(participants=("p",))
    run(room, "h", KickParticipant("p", ban=True))
    effects = run(room, "h", UnbanParticipant("p"))
    assert sends(effects) == [(("h",), "unban_participant", {"clientId": "p"})]
    assert room.banned == set()
    join(room, who("p"), RULES)
    assert room.members["p"].role is Role.WAITING  # the kick erased its memory


def test_unban_errors() -> None:
    room = setup(participants=("p",))
    rejects(room, "h", UnbanParticipant("p"), ErrorCode.NOT_FOUND)
    room.banned.add("x")
    rejects(room, "p", UnbanParticipant("x"), ErrorCode.FORBIDDEN)


# -- promote / demote -------------------------------------------------------------------


def test_promote_host_makes_an_admitted_member_host_and_tells_everyone() -> None:
    room = setup(participants=("p", "s"), waiting=("w",))
    run(room, "h", AcceptScreenshare("s"))
    effects = run(room, "h", PromoteHost("s"))
    assert room.members["s"].role is Role.HOST
    assert room.remembered["s"] is Role.HOST
    assert state_recipients(effects) == ["h", "p", "s", "w"]
    assert last_state(effects, "s")["waitingUsers"] == [info("w")]
    assert last_state(effects, "p")["sharingScreen"] == []
    assert [c["clientId"] for c in last_state(effects, "p")["hosts"]] == ["h", "s"]


@pytest.mark.parametrize("target", ["w", "h", "ghost"])
def test_promote_host_of_a_waiting_member_or_a_host_is_not_found(target: str) -> None:
    rejects(setup(waiting=("w",)), "h", PromoteHost(target), ErrorCode.NOT_FOUND)


def test_promote_host_by_a_non_host_is_forbidden() -> None:
    rejects(setup(participants=("p", "q")), "p", PromoteHost("q"), ErrorCode.FORBIDDEN)


def test_demote_host_makes_another_host_participant_and_tells_everyone() -> None:
    room = setup(participants=("p",), waiting=("w",))
    run(room, "h", PromoteHost("p"))
    effects = run(room, "p", DemoteHost("h"))
    assert room.members["h"].role is Role.PARTICIPANT
    assert room.remembered["h"] is Role.PARTICIPANT
    assert state_recipients(effects) == ["h", "p", "w"]
    assert last_state(effects, "h")["waitingUsers"] == []


def test_demote_host_errors() -> None:
    room = setup(participants=("p",), waiting=("w",))
    join(room, who("a", is_admin=True), RULES)
    rejects(room, "h", DemoteHost("h"), ErrorCode.INVALID_PAYLOAD)
    rejects(room, "h", DemoteHost("p"), ErrorCode.NOT_FOUND)
    rejects(room, "h", DemoteHost("w"), ErrorCode.NOT_FOUND)
    rejects(room, "h", DemoteHost("ghost"), ErrorCode.NOT_FOUND)
    rejects(room, "h", DemoteHost("a"), ErrorCode.FORBIDDEN)
    rejects(room, "p", DemoteHost("h"), ErrorCode.FORBIDDEN)


def test_an_admin_without_host_role_still_acts_as_host() -> None:
    room = setup(host=who("a", is_admin=True), waiting=("w",))
    join(room, who("b", is_admin=True), RULES)
    run(room, "b", DemoteHost("a"))
    assert room.members["a"].role is Role.PARTICIPANT
    run(room, "a", AcceptWaiting("w"))
    run(room, "w", RaiseHand())
    run(room, "a", LowerHand("w"))
    assert room.members["w"].role is Role.PARTICIPANT
    assert room.hands == []


def test_demotion_of_the_last_host_by_an_admin_participant_hands_host_on() -> None:
    room = setup(host=who("a", is_admin=True), participants=("p",))
    join(room, who("b", is_admin=True), RULES)
    room.members["a"].role = Role.PARTICIPANT
    run(room, "a", DemoteHost("b"))
    assert [m.client_id for m in room.members.values() if m.role is Role.HOST] == ["a"]


# -- lock / unlock / end ----------------------------------------------------------------


def test_lock_and_unlock_tell_the_admitted_only() -> None:
    room = setup(participants=("p",), waiting=("w",))
    effects = run(room, "h", LockRoom())
    assert room.locked
    assert sends(effects) == [(("h", "p"), "room_locked", {})]
    assert room_state_for(room, "p")["locked"] is True
    effects = run(room, "h", UnlockRoom())
    assert not room.locked
    assert sends(effects) == [(("h", "p"), "room_unlocked", {})]
    check_join(room, who("x"), RULES)


@pytest.mark.parametrize("command", [LockRoom(), UnlockRoom(), EndRoom()])
@pytest.mark.parametrize("actor", ["p", "w"])
def test_room_controls_by_a_non_host_are_forbidden(command: Command, actor: str) -> None:
    rejects(setup(participants=("p",), waiting=("w",)), actor, command, ErrorCode.FORBIDDEN)


def test_end_room_by_a_host_closes_everyone_with_4005() -> None:
    room = setup(participants=("p",), waiting=("w",))
    effects = run(room, "h", EndRoom())
    assert [(a.client_id, a.code) for a in effects.actions if isinstance(a, Close)] == [
        ("h", CloseCode.ROOM_ENDED),
        ("p", CloseCode.ROOM_ENDED),
        ("w", CloseCode.ROOM_ENDED),
    ]
    assert effects.room_closed
    assert room.closed


# -- set_media_state --------------------------------------------------------------------


def test_set_media_state_tells_the_admitted_and_shows_in_room_state() -> None:
    room = setup(participants=("p",), waiting=("w",))
    effects = run(room, "p", SetMediaState(audio=True, video=False))
    payload = {**info("p"), "audio": True, "video": False}
    assert sends(effects) == [(("h", "p"), "media_state", payload)]
    assert room.media["p"] == MediaState(audio=True, video=False)
    assert room_state_for(room, "h")["media"] == {"p": {"audio": True, "video": False}}
    assert room_state_for(room, "w")["media"] == {}


def test_set_media_state_keeps_an_absent_field() -> None:
    room = setup(participants=("p",))
    run(room, "p", SetMediaState(audio=True, video=None))
    effects = run(room, "p", SetMediaState(audio=None, video=True))
    assert room.media["p"] == MediaState(audio=True, video=True)
    assert sends(effects)[0][2]["audio"] is True
    run(room, "h", SetMediaState(audio=None, video=None))
    assert room.media["h"] == MediaState(audio=False, video=False)


def test_set_media_state_from_a_waiting_member_is_forbidden() -> None:
    rejects(setup(waiting=("w",)), "w", SetMediaState(True, True), ErrorCode.FORBIDDEN)


# -- signaling --------------------------------------------------------------------------


def test_signal_goes_to_the_target_only_with_the_sender_stamped_in() -> None:
    room = setup(participants=("p", "q"))
    # The decoder drops a sender's own clientId/displayName; the core overrides them anyway.
    spoofed = {"sdp": "v=0", "type": "offer", "clientId": "spoofed", "displayName": "x"}
    effects = run(room, "p", Signal(Event.OFFER, "q", cast(SessionDescription, spoofed)))
    assert sends(effects) == [
        (
            ("q",),
            "offer",
            {"sdp": "v=0", "type": "offer", "targetClientId": "q", **info("p")},
        )
    ]


def test_signal_reaches_a_target_in_its_reconnect_grace() -> None:
    room = setup(participants=("p",))
    drop(room, "p")
    effects = run(
        room,
        "h",
        Signal(Event.CANDIDATE, "p", {"candidate": "c", "sdpMid": None, "sdpMLineIndex": None}),
    )
    assert sends(effects)[0][0] == ("p",)
    assert sends(effects)[0][2]["sdpMid"] is None
    # In this order on the wire: the sender's fields, then what the server stamps.
    stamped = ["targetClientId", "clientId", "displayName"]
    assert list(sends(effects)[0][2]) == ["candidate", "sdpMid", "sdpMLineIndex", *stamped]


@pytest.mark.parametrize("target", ["w", "ghost", "p"])
def test_signal_to_a_non_admitted_member_or_to_oneself_is_target_not_found(target: str) -> None:
    room = setup(participants=("p",), waiting=("w",))
    rejects(
        room, "p", Signal(Event.RENEGOTIATE, target, {"reason": None}), ErrorCode.TARGET_NOT_FOUND
    )


def test_signal_from_a_waiting_member_is_forbidden() -> None:
    room = setup(waiting=("w",))
    rejects(room, "w", Signal(Event.OFFER, "h", {"sdp": "x", "type": "offer"}), ErrorCode.FORBIDDEN)
