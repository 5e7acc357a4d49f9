"""Room records and bus messages as bytes on Redis (callroom.runtime.wire, SPEC §7)."""

from __future__ import annotations

import orjson
import pytest

from callroom.errors import CloseCode
from callroom.room import core
from callroom.room.model import Effects, Identity, RoomRules
from callroom.room.record import RoomRecord, session_id, session_node
from callroom.runtime.messages import CloseOf, Delivery, FrameTo, Update, ViewTo, update_of
from callroom.runtime.redis_keys import RedisKeys
from callroom.runtime.redis_writer import pack, pack_publish
from callroom.runtime.wire import dump_delivery, dump_record, dump_update, load_message, load_record


def a_record() -> RoomRecord:
    room = core.new_room("zoom", "r1", 1_700_000_000_000)
    rules = RoomRules(lobby_enabled=False)
    core.join(room, Identity("alice", "Alice"), rules)
    core.join(room, Identity("bob", "Bob"), rules)
    return RoomRecord(room, {"alice": "n1/c1", "bob": "n2/c7"}, {"carol": ("n2", 1234)})


def test_the_record_round_trips() -> None:
    record = a_record()
    again = load_record(dump_record(record))
    assert again == record
    assert again.graces == {"carol": ("n2", 1234)}


def test_a_session_names_its_node_before_the_last_slash() -> None:
    assert session_node(session_id("host-1-ab", "c12")) == "host-1-ab"


def test_an_update_carries_the_record_the_frames_and_the_join() -> None:
    record = a_record()
    rules = RoomRules(lobby_enabled=False)
    effects = core.join(record.room, Identity("carol", "Carol"), rules)
    effects.close("bob", CloseCode.KICKED, "removed")
    message = load_message(dump_update(update_of(7, record, effects, ("carol", "n1/c9"))))
    assert isinstance(message, Update)
    assert message.version == 7
    assert message.record == record
    assert message.joined == ("carol", "n1/c9")
    view = message.steps[0]
    assert isinstance(view, ViewTo)
    payload = {**view.own, **orjson.loads(message.tails[view.tail])}
    assert payload["clientId"] == "carol"
    assert payload["roomId"] == "r1"
    close = message.steps[-1]
    assert isinstance(close, CloseOf)
    assert close.code is CloseCode.KICKED
    send = next(step for step in message.steps if isinstance(step, FrameTo))
    assert orjson.loads(send.text)["event"] == "connect"


def test_views_of_one_class_share_one_encoded_tail() -> None:
    record = a_record()
    rules = RoomRules(lobby_enabled=False)
    effects = core.join(record.room, Identity("dave", "Dave"), rules)
    message = load_message(dump_update(update_of(2, record, effects, None)))
    assert isinstance(message, Update)
    views = [step for step in message.steps if isinstance(step, ViewTo)]
    assert len(views) > len(message.tails) >= 1


def test_a_closed_room_has_no_record() -> None:
    effects = Effects()
    effects.room_closed = True
    message = load_message(dump_update(update_of(3, None, effects, None)))
    assert isinstance(message, Update)
    assert message.record is None
    assert message.joined is None


@pytest.mark.parametrize("tag", ["", "node-1-ab:17"])
def test_a_delivery_keeps_its_frame_bytes_and_its_tag_exactly(tag: str) -> None:
    frame = b'{"event":"add_chat","payload":{"chatContent":"a\\u0000b \xc3\xa9"}}'
    message = load_message(dump_delivery(Delivery(("alice", "bob"), frame, tag)))
    assert message == Delivery(("alice", "bob"), frame, tag)


@pytest.mark.parametrize("data", [b"x{}", b'u{"v":1,"s":null,"a":[["z"]],"w":[],"j":null}'])
def test_an_unknown_message_or_step_is_refused(data: bytes) -> None:
    with pytest.raises(ValueError, match="unknown"):
        load_message(data)


def test_room_keys_share_one_hash_tag() -> None:
    keys = RedisKeys()
    key = "zoom:r-1_A"
    assert keys.room_hash(key) == "callroom:{zoom:r-1_A}:room"
    assert keys.room_channel(key) == "callroom:{zoom:r-1_A}:bus"
    assert keys.node_channel("n1") == "callroom:node:n1:bus"
    assert RedisKeys("other").rooms_index == "other:rooms"


def test_commands_are_packed_in_resp() -> None:
    assert (
        pack(("HMGET", "k", 7, b"\x00"))
        == b"*4\r\n$5\r\nHMGET\r\n$1\r\nk\r\n$1\r\n7\r\n$1\r\n\x00\r\n"
    )
    message = dump_delivery(Delivery(("b",), b'{"event":"offer"}'))
    assert pack_publish(b"callroom:node:n1:bus", message) == pack(
        ("PUBLISH", "callroom:node:n1:bus", message)
    )
