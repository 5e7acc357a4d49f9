"""Room core membership (SPEC §1 refusals, §2 roles, memory, grace, takeover, handoff)."""

from __future__ import annotations

import pytest

from callroom.errors import CloseCode, HandshakeCode, HandshakeRefused
from callroom.room.commands import (
    AcceptScreenshare,
    DemoteHost,
    KickParticipant,
    LockRoom,
    PromoteHost,
    RaiseHand,
    SetMediaState,
)
from callroom.room.core import (
    check_join,
    drop,
    end_room,
    grace_expired,
    handle,
    join,
    leave,
    new_room,
    room_state_for,
    room_to_dict,
)
from callroom.room.model import Close, Effects, Identity, Role, RoomRules, SendView
from core_helpers import RULES, events, info, last_state, received, roles, setup, who

# -- check_join (SPEC §1) ---------------------------------------------------------------


def test_check_join_lets_anyone_into_a_room_that_does_not_exist_yet() -> None:
    check_join(None, who("a"), RULES)
    closed = new_room("zoom", "r1", 0)
    closed.closed = True
    closed.banned.add("a")
    check_join(closed, who("a"), RULES)


def test_banned_user_is_refused_whatever_token_it_brings() -> None:
    room = setup(participants=("p",))
    handle(room, "h", KickParticipant("p", ban=True), RULES)
    for identity in (who("p"), who("p", is_token_host=True), who("p", is_admin=True)):
        with pytest.raises(HandshakeRefused) as caught:
            check_join(room, identity, RULES)
        assert caught.value.code is HandshakeCode.BANNED
        assert caught.value.status == 403


def test_locked_room_refuses_a_stranger_with_403_room_locked() -> None:
    room = setup()
    handle(room, "h", LockRoom(), RULES)
    with pytest.raises(HandshakeRefused) as caught:
        check_join(room, who("x"), RULES)
    assert caught.value.code is HandshakeCode.ROOM_LOCKED
    assert caught.value.status == 403


def test_locked_room_lets_in_token_hosts_admins_and_remembered_users() -> None:
    room = setup(participants=("p",))
    leave(room, "p")
    handle(room, "h", LockRoom(), RULES)
    check_join(room, who("t", is_token_host=True), RULES)
    check_join(room, who("a", is_admin=True), RULES)
    check_join(room, who("p"), RULES)  # remembered: previously admitted
    join(room, who("p"), RULES)
    assert room.members["p"].role is Role.PARTICIPANT


def test_locked_room_lets_an_existing_member_take_its_session_over() -> None:
    room = setup(waiting=("w",))
    handle(room, "h", LockRoom(), RULES)
    check_join(room, who("w"), RULES)


def test_full_room_refuses_with_409_counting_waiting_and_grace_members() -> None:
    rules = RoomRules(max_room_size=3)
    room = setup(participants=("p",), waiting=("w",), rules=rules)
    drop(room, "p")  # in grace: still a member
    for identity in (who("x"), who("t", is_token_host=True)):
        with pytest.raises(HandshakeRefused) as caught:
            check_join(room, identity, rules)
        assert caught.value.code is HandshakeCode.ROOM_FULL
        assert caught.value.status == 409


def test_full_room_never_refuses_a_member_that_comes_back() -> None:
    rules = RoomRules(max_room_size=2)
    room = setup(participants=("p",), rules=rules)
    drop(room, "p")
    check_join(room, who("p"), rules)
    effects = join(room, who("p"), rules)
    assert room.members["p"].connected
    assert events(effects, "p") == ["room_state"]


def test_refused_join_leaves_the_room_unchanged() -> None:
    rules = RoomRules(max_room_size=1)
    room = setup(rules=rules)
    before = room_to_dict(room)
    with pytest.raises(HandshakeRefused):
        join(room, who("x"), rules)
    assert room_to_dict(room) == before


def test_join_on_a_closed_room_is_a_programming_error() -> None:
    room = setup()
    leave(room, "h")
    with pytest.raises(ValueError, match="closed"):
        join(room, who("x"), RULES)


# -- roles at join (SPEC §2) ------------------------------------------------------------


def test_first_member_of_an_empty_room_becomes_host_and_gets_room_state_first() -> None:
    room = new_room("zoom", "r1", 1000)
    effects = join(room, who("a"), RULES)
    assert room.members["a"].role is Role.HOST
    first = effects.actions[0]
    assert isinstance(first, SendView)
    assert first.recipients == ("a",)
    assert first.event == "room_state"
    assert first.payload["role"] == "host"
    assert first.payload["hosts"] == [info("a")]
    assert room.remembered == {"a": Role.HOST}
    assert room.members["a"].admitted_seq == 1


def test_stranger_waits_sees_only_itself_and_hosts_get_waiting_request() -> None:
    room = setup(participants=("p",))
    effects = join(room, who("w"), RULES)
    assert room.members["w"].role is Role.WAITING
    assert room.members["w"].admitted_seq == 0
    assert events(effects, "w") == ["room_state"]
    state = last_state(effects, "w")
    assert state["role"] == "waiting"
    assert state["waitingUsers"] == [info("w")]
    assert state["hosts"] == state["participants"] == []
    assert events(effects, "h") == ["waiting_request", "room_state"]
    assert received(effects, "h")[0][1] == info("w")
    assert last_state(effects, "h")["waitingUsers"] == [info("w")]
    # A participant's view does not show the waiting room: nothing for it.
    assert events(effects, "p") == []
    assert "w" not in room.remembered


@pytest.mark.parametrize("identity", [who("t", is_token_host=True), who("t", is_admin=True)])
def test_token_host_or_admin_joins_as_host_and_others_get_connect(identity: Identity) -> None:
    room = setup(participants=("p",), waiting=("w",))
    effects = join(room, identity, RULES)
    assert room.members["t"].role is Role.HOST
    assert events(effects, "t") == ["room_state"]
    assert events(effects, "h") == ["connect", "room_state"]
    assert received(effects, "h")[0][1] == info("t")
    assert events(effects, "p") == ["connect", "room_state"]
    assert [c["clientId"] for c in last_state(effects, "p")["hosts"]] == ["h", "t"]
    assert events(effects, "w") == []  # the waiting member sees nothing of it
    assert room.remembered["t"] is Role.HOST


def test_without_lobby_a_stranger_joins_as_participant() -> None:
    rules = RoomRules(lobby_enabled=False)
    room = setup(rules=rules)
    effects = join(room, who("x"), rules)
    assert room.members["x"].role is Role.PARTICIPANT
    assert events(effects, "h") == ["connect", "room_state"]
    assert last_state(effects, "h")["participants"] == [info("x")]
    assert room.remembered["x"] is Role.PARTICIPANT


def test_remembered_participant_skips_the_waiting_room() -> None:
    room = setup(participants=("p",))
    leave(room, "p")
    effects = join(room, who("p"), RULES)
    assert room.members["p"].role is Role.PARTICIPANT
    assert events(effects, "h") == ["connect", "room_state"]


def test_remembered_host_comes_back_as_host() -> None:
    room = setup(participants=("p",))
    handle(room, "h", PromoteHost("p"), RULES)
    leave(room, "p")
    join(room, who("p"), RULES)
    assert room.members["p"].role is Role.HOST


def test_stranger_keeps_waiting_when_no_admitted_member_is_left() -> None:
    room = setup(waiting=("w1",))
    leave(room, "h")
    assert roles(room) == {"w1": Role.WAITING}
    effects = join(room, who("w2"), RULES)
    assert roles(room) == {"w1": Role.WAITING, "w2": Role.WAITING}
    assert events(effects, "w1") == []


def test_remembered_participant_becomes_host_when_no_admitted_member_is_left() -> None:
    room = setup(participants=("p",), waiting=("w",))
    leave(room, "p")
    leave(room, "h")
    effects = join(room, who("p"), RULES)
    assert room.members["p"].role is Role.HOST
    assert room.remembered["p"] is Role.HOST
    assert last_state(effects, "p")["waitingUsers"] == [info("w")]
    assert room.members["w"].role is Role.WAITING


def test_without_lobby_the_first_admitted_of_a_waiting_only_room_becomes_host() -> None:
    room = setup(waiting=("w",))
    leave(room, "h")
    join(room, who("x"), RoomRules(lobby_enabled=False))
    assert room.members["x"].role is Role.HOST


# -- takeover and reconnect (SPEC §2) ---------------------------------------------------


def test_takeover_keeps_role_and_others_see_nothing() -> None:
    room = setup(participants=("p", "q"))
    handle(room, "h", AcceptScreenshare("p"), RULES)
    effects = join(room, who("p"), RULES)
    assert room.members["p"].role is Role.SCREENSHARE
    assert [(type(a).__name__, getattr(a, "recipients", None)) for a in effects.actions] == [
        ("SendView", ("p",))
    ]
    assert last_state(effects, "p")["role"] == "screenshare"


def test_takeover_of_a_waiting_member_keeps_it_waiting() -> None:
    room = setup(waiting=("w",))
    effects = join(room, who("w", is_token_host=True), RULES)
    assert room.members["w"].role is Role.WAITING
    assert room.members["w"].is_token_host
    assert events(effects, "h") == []


def test_takeover_with_a_new_display_name_updates_the_others_views() -> None:
    room = setup(participants=("p",))
    effects = join(room, Identity("p", "Renamed"), RULES)
    assert room.members["p"].display_name == "Renamed"
    assert last_state(effects, "h")["participants"] == [{"clientId": "p", "displayName": "Renamed"}]
    assert "connect" not in events(effects, "h")


def test_reconnect_within_grace_keeps_role_place_and_screenshare() -> None:
    room = setup(participants=("p", "q"))
    handle(room, "h", AcceptScreenshare("p"), RULES)
    handle(room, "p", RaiseHand(), RULES)
    seq = room.members["p"].admitted_seq
    assert drop(room, "p").actions == []
    assert not room.members["p"].connected
    effects = join(room, who("p"), RULES)
    member = room.members["p"]
    assert (member.role, member.connected, member.admitted_seq) == (Role.SCREENSHARE, True, seq)
    assert room.hands == ["p"]
    assert events(effects, "h") == events(effects, "q") == []


# -- leave (SPEC §2: close code 1000) ---------------------------------------------------


def test_participant_leaving_is_removed_at_once_with_disconnect() -> None:
    room = setup(participants=("p", "q"), waiting=("w",))
    handle(room, "p", RaiseHand(), RULES)
    handle(room, "p", SetMediaState(audio=True, video=None), RULES)
    effects = leave(room, "p")
    assert "p" not in room.members
    assert room.hands == []
    assert "p" not in room.media
    for cid in ("h", "q"):
        assert events(effects, cid) == ["disconnect", "room_state"]
        assert received(effects, cid)[0][1] == info("p")
        assert last_state(effects, cid)["handsRaised"] == []
    assert events(effects, "w") == []
    assert room.remembered["p"] is Role.PARTICIPANT  # memory kept after a leave


def test_screen_sharer_leaving_ends_the_share_and_is_remembered_as_participant() -> None:
    room = setup(participants=("p",))
    handle(room, "h", AcceptScreenshare("p"), RULES)
    effects = leave(room, "p")
    assert last_state(effects, "h")["sharingScreen"] == []
    join(room, who("p"), RULES)
    assert room.members["p"].role is Role.PARTICIPANT


def test_waiting_member_leaving_updates_hosts_only() -> None:
    room = setup(participants=("p",), waiting=("w",))
    effects = leave(room, "w")
    assert "w" not in room.members
    assert events(effects, "h") == ["room_state"]
    assert last_state(effects, "h")["waitingUsers"] == []
    assert events(effects, "p") == []


def test_leave_of_an_unknown_member_does_nothing() -> None:
    room = setup()
    assert leave(room, "ghost") == Effects()


def test_last_host_leaving_hands_host_to_the_earliest_admitted_and_tells_everyone() -> None:
    room = setup(participants=("p", "q"), waiting=("w",))
    effects = leave(room, "h")
    assert roles(room) == {"p": Role.HOST, "q": Role.PARTICIPANT, "w": Role.WAITING}
    assert room.remembered["p"] is Role.HOST
    assert events(effects, "p") == ["disconnect", "room_state"]
    assert last_state(effects, "p")["role"] == "host"
    assert last_state(effects, "p")["waitingUsers"] == [info("w")]
    assert last_state(effects, "q")["hosts"] == [info("p")]
    assert events(effects, "w") == ["room_state"]  # everybody gets it (SPEC §2)
    assert last_state(effects, "w")["hosts"] == []


def test_handoff_uses_admission_order_of_the_current_stay() -> None:
    room = setup(participants=("p", "q"))
    leave(room, "p")
    join(room, who("p"), RULES)  # p's current stay starts after q's
    leave(room, "h")
    assert room.members["q"].role is Role.HOST
    assert room.members["p"].role is Role.PARTICIPANT


def test_handoff_prefers_a_connected_member_over_one_in_grace() -> None:
    room = setup(participants=("p", "q"))
    drop(room, "p")
    leave(room, "h")
    assert room.members["q"].role is Role.HOST
    assert room.members["p"].role is Role.PARTICIPANT


def test_handoff_falls_back_to_a_member_in_grace() -> None:
    room = setup(participants=("p",))
    drop(room, "p")
    leave(room, "h")
    assert room.members["p"].role is Role.HOST


def test_leaving_host_with_another_host_left_causes_no_handoff() -> None:
    room = setup(participants=("p", "q"))
    handle(room, "h", PromoteHost("q"), RULES)
    effects = leave(room, "h")
    assert roles(room) == {"p": Role.PARTICIPANT, "q": Role.HOST}
    assert events(effects, "p") == ["disconnect", "room_state"]


def test_last_member_leaving_closes_the_room() -> None:
    room = setup()
    effects = leave(room, "h")
    assert effects.room_closed
    assert room.closed
    assert room.members == {}


def test_last_waiting_member_leaving_closes_the_room() -> None:
    room = setup(waiting=("w",))
    leave(room, "h")
    assert not room.closed
    effects = drop(room, "w")
    assert effects.room_closed
    assert room.closed


# -- drop and reconnect grace (SPEC §2) -------------------------------------------------


def test_admitted_member_dropping_keeps_its_place_unseen() -> None:
    room = setup(participants=("p",))
    effects = drop(room, "p")
    assert effects == Effects()
    assert room.members["p"].connected is False
    assert room_state_for(room, "h")["participants"] == [info("p")]
    assert drop(room, "p") == Effects()  # a second drop changes nothing


def test_waiting_member_dropping_is_removed_at_once() -> None:
    room = setup(waiting=("w",))
    effects = drop(room, "w")
    assert "w" not in room.members
    assert events(effects, "h") == ["room_state"]
    assert last_state(effects, "h")["waitingUsers"] == []


def test_drop_of_an_unknown_member_does_nothing() -> None:
    assert drop(setup(), "ghost") == Effects()


def test_host_in_grace_stays_host_until_the_grace_expires() -> None:
    room = setup(participants=("p",))
    drop(room, "h")
    assert roles(room) == {"h": Role.HOST, "p": Role.PARTICIPANT}
    effects = grace_expired(room, "h")
    assert roles(room) == {"p": Role.HOST}
    assert events(effects, "p") == ["disconnect", "room_state"]


def test_grace_expiry_removes_a_still_disconnected_member_with_disconnect() -> None:
    room = setup(participants=("p", "q"))
    drop(room, "p")
    effects = grace_expired(room, "p")
    assert "p" not in room.members
    assert events(effects, "h") == ["disconnect", "room_state"]
    assert events(effects, "q") == ["disconnect", "room_state"]


def test_grace_expiry_after_a_reconnect_does_nothing() -> None:
    room = setup(participants=("p",))
    drop(room, "p")
    join(room, who("p"), RULES)
    assert grace_expired(room, "p") == Effects()
    assert room.members["p"].connected
    assert grace_expired(room, "ghost") == Effects()


def test_screen_share_is_not_remembered_past_the_grace() -> None:
    room = setup(participants=("p",))
    handle(room, "h", AcceptScreenshare("p"), RULES)
    drop(room, "p")
    grace_expired(room, "p")
    join(room, who("p"), RULES)
    assert room.members["p"].role is Role.PARTICIPANT


def test_last_member_grace_expiry_closes_the_room() -> None:
    room = setup()
    drop(room, "h")
    assert not room.closed
    effects = grace_expired(room, "h")
    assert effects.room_closed
    assert room.closed


# -- memory (SPEC §2) -------------------------------------------------------------------


def test_kick_erases_memory_so_the_user_knocks_again() -> None:
    room = setup(participants=("p",))
    handle(room, "h", KickParticipant("p", ban=False), RULES)
    assert "p" not in room.remembered
    join(room, who("p"), RULES)
    assert room.members["p"].role is Role.WAITING


def test_demotion_turns_a_remembered_host_into_a_remembered_participant() -> None:
    room = setup(participants=("p",))
    handle(room, "h", PromoteHost("p"), RULES)
    handle(room, "h", DemoteHost("p"), RULES)
    leave(room, "p")
    join(room, who("p"), RULES)
    assert room.members["p"].role is Role.PARTICIPANT


# -- end_room (SPEC §3.1, §4 DELETE) ---------------------------------------------------


def test_end_room_closes_every_member_with_4005_and_closes_the_room() -> None:
    room = setup(participants=("p",), waiting=("w",))
    drop(room, "p")
    effects = end_room(room)
    assert effects.actions == [
        Close("h", CloseCode.ROOM_ENDED, "room ended"),
        Close("p", CloseCode.ROOM_ENDED, "room ended"),
        Close("w", CloseCode.ROOM_ENDED, "room ended"),
    ]
    assert effects.room_closed
    assert room.closed
    assert room.members == {}
    assert leave(room, "h") == Effects()
