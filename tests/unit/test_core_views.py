"""Room core views (SPEC §3.2 room_state, §4 REST views), access helpers, serialization."""

from __future__ import annotations

import json

import pytest

from callroom.errors import ErrorCode, ProtocolError
from callroom.room.commands import (
    AcceptScreenshare,
    AcceptWaiting,
    KickParticipant,
    LockRoom,
    PromoteHost,
    RaiseHand,
    SetMediaState,
)
from callroom.room.core import (
    admitted_ids,
    authorize_delete,
    drop,
    handle,
    host_ids,
    host_view,
    join,
    member_view,
    new_room,
    require_admitted,
    require_host,
    room_from_dict,
    room_state_for,
    room_summary,
    room_to_dict,
)
from callroom.room.model import Member, Role, Room, RoomRules, SendView
from callroom.room.payloads import MemberLists, RoomState, RoomSummary
from callroom.room.serialize import MemberRecord, RoomRecord
from core_helpers import RULES, info, who


def busy_room() -> Room:
    """Hosts h and k, participants p and q, sharer s, waiting w and v; hands q then h;
    media for p; p in its reconnect grace."""
    room = new_room("zoom", "r1", 1234)
    join(room, who("h"), RULES)
    for cid in ("p", "s", "q", "k"):
        join(room, who(cid), RULES)
        handle(room, "h", AcceptWaiting(cid), RULES)
    handle(room, "h", AcceptScreenshare("s"), RULES)
    handle(room, "h", PromoteHost("k"), RULES)
    join(room, who("w"), RULES)
    join(room, who("v"), RULES)
    handle(room, "q", RaiseHand(), RULES)
    handle(room, "h", RaiseHand(), RULES)
    handle(room, "p", SetMediaState(audio=True, video=False), RULES)
    handle(room, "h", LockRoom(), RULES)
    drop(room, "p")
    return room


LISTS = {
    "hosts": [info("h"), info("k")],
    "participants": [info("p"), info("q")],
    "handsRaised": [info("q"), info("h")],
    "sharingScreen": [info("s")],
    "locked": True,
    "media": {"p": {"audio": True, "video": False}},
}


def test_room_state_for_a_host_shows_everything_including_the_waiting_room() -> None:
    state = room_state_for(busy_room(), "k")
    assert state == {
        "clientId": "k",
        "displayName": "name-k",
        "role": "host",
        "roomId": "r1",
        **LISTS,
        "waitingUsers": [info("w"), info("v")],
    }
    assert list(state)[:4] == ["clientId", "displayName", "role", "roomId"]


@pytest.mark.parametrize(("cid", "role"), [("q", "participant"), ("s", "screenshare")])
def test_room_state_for_participants_and_sharers_hides_the_waiting_room(
    cid: str, role: str
) -> None:
    state = room_state_for(busy_room(), cid)
    assert state == {
        "clientId": cid,
        "displayName": f"name-{cid}",
        "role": role,
        "roomId": "r1",
        **LISTS,
        "waitingUsers": [],
    }


def test_room_state_for_a_waiting_member_shows_only_itself() -> None:
    assert room_state_for(busy_room(), "v") == {
        "clientId": "v",
        "displayName": "name-v",
        "role": "waiting",
        "roomId": "r1",
        "hosts": [],
        "participants": [],
        "handsRaised": [],
        "waitingUsers": [info("v")],
        "sharingScreen": [],
        "locked": True,
        "media": {},
    }


def test_room_state_for_an_unknown_member_raises_key_error() -> None:
    with pytest.raises(KeyError):
        room_state_for(busy_room(), "ghost")


def test_room_state_payloads_are_strict_json() -> None:
    room = busy_room()
    for cid in room.members:
        state = room_state_for(room, cid)
        assert json.loads(json.dumps(state, allow_nan=False)) == state


def test_the_typed_records_name_exactly_the_keys_built_in_wire_order() -> None:
    # TypedDicts are not checked at run time: this holds them to what is built. The
    # order is what the encoder writes (byte-identical frames and REST bodies).
    room = busy_room()
    lists = ["hosts", "participants", "handsRaised", "waitingUsers", "sharingScreen"]
    for cid in room.members:
        state = room_state_for(room, cid)
        assert set(state) == RoomState.__required_keys__
        assert list(state) == [
            "clientId",
            "displayName",
            "role",
            "roomId",
            *lists,
            "locked",
            "media",
        ]
        assert list(member_view(room, cid)) == [*lists, "media"]
    assert list(host_view(room)) == [*lists, "media"]
    assert set(host_view(room)) == MemberLists.__required_keys__
    assert set(room_summary(room)) == RoomSummary.__required_keys__
    data = room_to_dict(room)
    assert set(data) == RoomRecord.__required_keys__
    assert set(data["members"][0]) == MemberRecord.__required_keys__


def test_host_view_lists_the_room_as_a_host_sees_it() -> None:
    view = host_view(busy_room())
    expected = {k: v for k, v in LISTS.items() if k != "locked"}
    assert view == {**expected, "waitingUsers": [info("w"), info("v")]}


def test_member_view_lists_the_room_as_that_member_sees_it() -> None:
    room = busy_room()
    assert member_view(room, "q") == {
        **{k: v for k, v in LISTS.items() if k != "locked"},
        "waitingUsers": [],
    }
    assert member_view(room, "k") == host_view(room)


def test_room_summary_counts_members() -> None:
    assert room_summary(busy_room()) == {
        "kind": "zoom",
        "roomId": "r1",
        "members": 7,
        "admitted": 5,
        "waiting": 2,
        "hosts": [info("h"), info("k")],
        "locked": True,
        "createdAt": 1234,
    }


# -- access helpers ---------------------------------------------------------------------


def test_admitted_and_host_ids_in_join_order_including_members_in_grace() -> None:
    room = busy_room()
    assert admitted_ids(room) == ("h", "p", "s", "q", "k")
    assert host_ids(room) == ("h", "k")


def test_require_admitted_returns_the_member_or_refuses_with_the_event() -> None:
    room = busy_room()
    member = require_admitted(room, "q", "add_chat")
    assert isinstance(member, Member)
    assert member.client_id == "q"
    for cid in ("w", "ghost"):
        with pytest.raises(ProtocolError) as caught:
            require_admitted(room, cid, "get_recent_chats")
        assert caught.value.code is ErrorCode.FORBIDDEN
        assert caught.value.event == "get_recent_chats"


def test_require_host_accepts_hosts_and_admins_only() -> None:
    room = busy_room()
    assert require_host(room, "k", "x").client_id == "k"
    with pytest.raises(ProtocolError) as caught:
        require_host(room, "q", "end_room")
    assert caught.value.code is ErrorCode.FORBIDDEN
    join(room, who("a", is_admin=True), RULES)
    room.members["a"].role = Role.PARTICIPANT
    assert require_host(room, "a", "x").client_id == "a"
    room.members["a"].role = Role.WAITING  # a waiting admin acts as nothing
    with pytest.raises(ProtocolError):
        require_host(room, "a", "x")


def test_authorize_delete_lets_the_author_and_hosts_only() -> None:
    room = busy_room()
    authorize_delete(room, "q", "q")
    authorize_delete(room, "h", "q")
    for actor, author in (("s", "q"), ("w", "w")):
        with pytest.raises(ProtocolError) as caught:
            authorize_delete(room, actor, author)
        assert caught.value.code is ErrorCode.FORBIDDEN
        assert caught.value.event == "delete_chat"


# -- serialization ----------------------------------------------------------------------


def test_room_round_trips_through_json_exactly() -> None:
    room = busy_room()
    handle(room, "h", KickParticipant("v", ban=True), RULES)
    data = room_to_dict(room)
    text = json.dumps(data, allow_nan=False)
    back = room_from_dict(json.loads(text))
    assert back == room
    assert list(back.members) == list(room.members)
    assert back.hands == ["q", "h"]
    assert back.banned == {"v"}
    assert back.members["p"].connected is False
    assert room_to_dict(back) == data


def test_closed_room_round_trips() -> None:
    room = new_room("chat", "x", 5)
    join(room, who("a"), RULES)
    room.closed = True
    assert room_from_dict(room_to_dict(room)) == room


def test_room_from_dict_refuses_another_format_version() -> None:
    data = room_to_dict(busy_room())
    data["v"] = 99
    with pytest.raises(ValueError, match="version"):
        room_from_dict(data)


def test_a_join_builds_the_lists_once_for_the_joiner_and_the_members_it_changes() -> None:
    """The joiner's room_state and those of the members of its view class whose view
    changed share one lists object, which the node encodes once per join (``SendView``)."""
    rules = RoomRules(lobby_enabled=False)
    room = new_room("zoom", "r1", 0)
    join(room, who("h"), rules)
    join(room, who("a"), rules)

    effects = join(room, who("b"), rules)

    views = {a.recipient: a for a in effects.actions if isinstance(a, SendView)}
    assert list(views) == ["b", "h", "a"]  # the joiner's first (SPEC §1)
    assert views["a"].shared is views["b"].shared
    assert views["h"].shared is not views["b"].shared  # a host's view class is another
