"""The room record and the bus messages of many nodes (callroom.cluster.wire, SPEC §7)."""

from __future__ import annotations

import orjson
import pytest

from callroom.cluster.link import node_channel, pack, pack_publish, room_channel, room_hash
from callroom.cluster.wire import (
    Delivery,
    Shared,
    Update,
    close_action,
    decode_message,
    delivery_message,
    dump_shared,
    load_shared,
    session_node,
    update_message,
)
from callroom.errors import CloseCode
from callroom.room import core
from callroom.room.model import Effects, Identity, RoomRules


def a_room() -> Shared:
    room = core.new_room("zoom", "r1", 1_700_000_000_000)
    rules = RoomRules(lobby_enabled=False)
    core.join(room, Identity("alice", "Alice"), rules)
    core.join(room, Identity("bob", "Bob"), rules)
    return Shared(room, {"alice": "n1/c1", "bob": "n2/c7"}, {"carol": ("n2", 1234)})


def test_the_record_round_trips() -> None:
    shared = a_room()
    again = load_shared(dump_shared(shared))
    assert again == shared
    assert again.graces == {"carol": ("n2", 1234)}


def test_session_node_is_what_precedes_the_last_slash() -> None:
    assert session_node("host-1-ab/c12") == "host-1-ab"


def test_an_update_carries_the_record_the_frames_and_the_join() -> None:
    shared = a_room()
    rules = RoomRules(lobby_enabled=False)
    effects = core.join(shared.room, Identity("carol", "Carol"), rules)
    effects.close("bob", CloseCode.KICKED, "removed")
    message = decode_message(update_message(7, shared, effects, ("carol", "n1/c9")))
    assert isinstance(message, Update)
    assert message.version == 7
    assert message.shared == shared
    assert message.joined == ("carol", "n1/c9")
    kinds = [action[0] for action in message.actions]
    assert kinds[0] == "v"
    assert "s" in kinds
    assert kinds[-1] == "c"
    view = message.actions[0]
    payload = {**view[2], **orjson.loads(message.tails[view[3]])}
    assert payload["clientId"] == "carol"
    assert payload["roomId"] == "r1"
    assert close_action(message.actions[-1]).code is CloseCode.KICKED
    send = next(a for a in message.actions if a[0] == "s")
    assert orjson.loads(send[2])["event"] == "connect"


def test_views_of_one_class_share_one_encoded_tail() -> None:
    shared = a_room()
    rules = RoomRules(lobby_enabled=False)
    effects = core.join(shared.room, Identity("dave", "Dave"), rules)
    message = decode_message(update_message(2, shared, effects))
    assert isinstance(message, Update)
    views = [a for a in message.actions if a[0] == "v"]
    assert len(views) > len(message.tails) >= 1


def test_a_closed_room_has_no_record() -> None:
    effects = Effects()
    effects.room_closed = True
    message = decode_message(update_message(3, None, effects))
    assert isinstance(message, Update)
    assert message.shared is None
    assert message.joined is None


def test_a_delivery_keeps_its_frame_bytes_exactly() -> None:
    frame = b'{"event":"add_chat","payload":{"chatContent":"a\\u0000b \xc3\xa9"}}'
    message = decode_message(delivery_message(("alice", "bob"), frame))
    assert message == Delivery(["alice", "bob"], frame)


def test_an_unknown_message_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown bus message"):
        decode_message(b"x{}")


def test_room_keys_share_one_hash_tag() -> None:
    key = "zoom:r-1_A"
    assert room_hash(key) == "callroom:{zoom:r-1_A}:room"
    assert room_channel(key) == "callroom:{zoom:r-1_A}:bus"
    assert node_channel("n1") == "callroom:node:n1:bus"


def test_commands_are_packed_in_resp() -> None:
    assert (
        pack(("HMGET", "k", 7, b"\x00"))
        == b"*4\r\n$5\r\nHMGET\r\n$1\r\nk\r\n$1\r\n7\r\n$1\r\n\x00\r\n"
    )
    message = delivery_message(("b",), b'{"event":"offer"}')
    assert pack_publish(b"callroom:node:n1:bus", message) == pack(
        ("PUBLISH", "callroom:node:n1:bus", message)
    )
