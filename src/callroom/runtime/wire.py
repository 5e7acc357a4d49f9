"""The bytes of bus messages and room records on Redis (SPEC §7). Pure.

- a record: JSON of ``callroom.room.record.record_to_dict``;
- an *update* (``b"u"`` + JSON): version, record (``null`` once closed), steps, tails,
  and the session that joined;
- a *delivery* (``b"d"`` + JSON list of recipients + NUL + frame text). A NUL byte never
  occurs in JSON text, so the first one ends the recipient list; a tagged delivery (a
  chat broadcast whose echo its node waits for) is ``b"e"`` + tag + NUL + the same.
"""

from __future__ import annotations

from typing import Any

import orjson

from callroom.errors import CloseCode
from callroom.room.record import RoomRecord, record_from_dict, record_to_dict
from callroom.runtime.messages import CloseOf, Delivery, FrameTo, Step, Update, ViewTo

UPDATE = b"u"[0]
DELIVERY = b"d"[0]
TAGGED = b"e"[0]  # a delivery with a tag: ``b"e"`` + tag + NUL + recipients + NUL + frame


def dump_record(record: RoomRecord) -> bytes:
    return orjson.dumps(record_to_dict(record))


def load_record(data: bytes | str) -> RoomRecord:
    return record_from_dict(orjson.loads(data))


def _step_to_list(step: Step) -> list[Any]:
    if isinstance(step, FrameTo):
        return ["s", list(step.recipients), step.text.decode()]
    if isinstance(step, ViewTo):
        return ["v", step.recipient, step.own, step.tail]
    return ["c", step.client_id, int(step.code), step.reason]


def _step_from_list(item: list[Any]) -> Step:
    tag = item[0]
    if tag == "s":
        return FrameTo(tuple(item[1]), item[2].encode())
    if tag == "v":
        return ViewTo(item[1], item[2], int(item[3]))
    if tag == "c":
        return CloseOf(item[1], CloseCode(item[2]), item[3])
    raise ValueError(f"unknown update step {tag!r}")


def dump_update(update: Update) -> bytes:
    body = {
        "v": update.version,
        "s": None if update.record is None else record_to_dict(update.record),
        "a": [_step_to_list(step) for step in update.steps],
        "w": [tail.decode() for tail in update.tails],
        "j": None if update.joined is None else list(update.joined),
    }
    return b"u" + orjson.dumps(body)


def dump_delivery(delivery: Delivery) -> bytes:
    body = orjson.dumps(delivery.recipients) + b"\x00" + delivery.text
    if delivery.tag:
        return b"e" + delivery.tag.encode() + b"\x00" + body
    return b"d" + body


def load_message(data: bytes) -> Update | Delivery:
    """The message ``dump_update`` or ``dump_delivery`` made."""
    if data[0] == DELIVERY:
        end = data.index(b"\x00")
        return Delivery(tuple(orjson.loads(data[1:end])), data[end + 1 :])
    if data[0] == TAGGED:
        tag_end = data.index(b"\x00")
        end = data.index(b"\x00", tag_end + 1)
        recipients = tuple(orjson.loads(data[tag_end + 1 : end]))
        return Delivery(recipients, data[end + 1 :], data[1:tag_end].decode())
    if data[0] != UPDATE:
        raise ValueError(f"unknown bus message kind {data[:1]!r}")
    body = orjson.loads(data[1:])
    state = body["s"]
    joined = body["j"]
    return Update(
        version=int(body["v"]),
        record=None if state is None else record_from_dict(state),
        steps=tuple(_step_from_list(item) for item in body["a"]),
        tails=tuple(tail.encode() for tail in body["w"]),
        joined=None if joined is None else (joined[0], joined[1]),
    )
