"""The member's session without a socket (server/session.py): rate limit, decoding, the
lane, answers in order, errors as ``ws_answers`` says. The peer records what it is asked
to send and close; the runtime is a stand-in for the hub's command interface whose chat
store futures the tests finish in the order they choose."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from typing import Any

import pytest

from callroom.chat.base import AddFuture, ChatIdTaken, ChatMessage
from callroom.errors import CloseCode, ErrorCode, ProtocolError, StoreUnavailable
from callroom.metrics import Metrics
from callroom.room.commands import AddChat, Command, GetRecentChats, Ping, RaiseHand
from callroom.room.events import Event
from callroom.room.protocol import ProtocolLimits
from callroom.room.protocol import decode as protocol_decode
from callroom.server import session as session_module
from callroom.server.framing import text_frame
from callroom.server.inbound import UnmaskedFrame
from callroom.server.session import PIPELINED_ADDS, Session


class RecordingPeer:
    """A member's peer that keeps what it is asked to do."""

    def __init__(self) -> None:
        self.alive = False
        self.closing = False
        self.sent: list[bytes] = []
        self.closes: list[tuple[int, str]] = []

    def send(self, frame: bytes) -> None:
        if not self.closing:
            self.sent.append(frame)

    def close(self, code: int, reason: str) -> None:
        if not self.closing:
            self.closing = True
            self.closes.append((int(code), reason))

    def events(self) -> list[dict[str, Any]]:
        """The JSON text frames sent so far (each under 64 KiB), taken out."""
        sent, self.sent = self.sent, []
        return [json.loads(frame[4:] if frame[1] == 126 else frame[2:]) for frame in sent]


class Runtime:
    """The hub's command interface; a chat message stays in flight until ``store``."""

    awaiting_commands: frozenset[type[Command]] = frozenset({GetRecentChats})

    def __init__(self) -> None:
        self.ran: list[Command] = []
        self.fail_with: Exception | None = None
        self.refuse_chat: Exception | None = None
        self.in_flight: dict[str, AddFuture] = {}
        self.awaited = asyncio.Event()  # set to let a run_awaiting finish

    def run_now(self, peer: RecordingPeer, command: Command) -> None:
        if self.fail_with is not None:
            raise self.fail_with
        self.ran.append(command)
        peer.send(text_frame(json.dumps({"event": "ran", "payload": {}}).encode()))

    async def run_awaiting(self, peer: RecordingPeer, command: Command) -> None:
        await self.awaited.wait()
        self.ran.append(command)
        peer.send(text_frame(json.dumps({"event": "awaited", "payload": {}}).encode()))

    def submit_chat(self, peer: RecordingPeer, command: AddChat) -> AddFuture:
        if self.refuse_chat is not None:
            raise self.refuse_chat
        future: AddFuture = asyncio.get_running_loop().create_future()
        self.in_flight[command.chat_content] = future
        return future

    def store(self, content: str, error: Exception | None = None) -> None:
        future = self.in_flight.pop(content)
        if error is not None:
            future.set_exception(error)
        else:
            message = ChatMessage(content, "bob", "Bob", 1, content)
            future.set_result((message, True))

    def chat_stored(self, peer: RecordingPeer, done: AddFuture) -> None:
        stored, _created = done.result()  # raises what the store raised
        payload = {"chatId": stored.chat_id}
        peer.send(text_frame(json.dumps({"event": "add_chat", "payload": payload}).encode()))


@pytest.fixture
def peer() -> RecordingPeer:
    return RecordingPeer()


@pytest.fixture
def runtime() -> Runtime:
    return Runtime()


@pytest.fixture
def metrics() -> Metrics:
    return Metrics()


def make_session(
    peer: RecordingPeer, runtime: Runtime, metrics: Metrics, *, burst: int = 100
) -> Session[RecordingPeer]:
    return Session(
        peer, runtime, limits=ProtocolLimits(), rate_per_second=0.001, burst=burst, metrics=metrics
    )


def frame(event: str, **payload: Any) -> str:
    return json.dumps({"event": event, "payload": payload})


def chat(content: str) -> str:
    return frame("add_chat", chatContent=content)


def errors(metrics: Metrics, event: str, code: str) -> float:
    labels = {"event": event, "code": code}
    value = metrics.registry.get_sample_value("callroom_handler_errors_total", labels)
    return value or 0.0


async def test_a_frame_that_waits_for_nothing_is_finished_in_the_lane(
    peer: RecordingPeer, runtime: Runtime, metrics: Metrics
) -> None:
    session = make_session(peer, runtime, metrics)
    assert session.take_inline(frame("raise_hand"))
    assert runtime.ran == [RaiseHand()]
    assert peer.alive  # any frame answers the heartbeat
    assert [e["event"] for e in peer.events()] == ["ran"]
    assert metrics.received_by_event["raise_hand"].value == 1
    assert sum(metrics.message_seconds.counts) == 1


async def test_a_frame_that_waits_is_left_to_the_loop_decoded_once(
    peer: RecordingPeer,
    runtime: Runtime,
    metrics: Metrics,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    decoded: list[str] = []
    decode = protocol_decode

    def counting(text: str, limits: ProtocolLimits) -> Command:
        decoded.append(text)
        return decode(text, limits)

    monkeypatch.setattr(session_module, "decode", counting)
    session = make_session(peer, runtime, metrics)
    assert not session.take_inline(frame("get_recent_chats"))
    assert runtime.ran == []
    receiving = asyncio.ensure_future(session.receive_text(frame("get_recent_chats")))
    await asyncio.sleep(0)
    assert not receiving.done()  # the loop awaits it
    runtime.awaited.set()
    await receiving
    assert runtime.ran == [GetRecentChats(50, None, Event.GET_RECENT_CHATS)]
    assert len(decoded) == 1  # the loop took what the lane found
    assert session.handoff is None


async def test_a_closing_peer_gets_nothing_in_the_lane(
    peer: RecordingPeer, runtime: Runtime, metrics: Metrics
) -> None:
    session = make_session(peer, runtime, metrics)
    peer.closing = True
    assert not session.take_inline(frame("raise_hand"))
    assert runtime.ran == []


async def test_frames_over_the_rate_are_refused_then_the_flood_is_closed(
    peer: RecordingPeer, runtime: Runtime, metrics: Metrics
) -> None:
    session = make_session(peer, runtime, metrics, burst=2)
    for _ in range(2):
        assert session.take_inline(None)  # dropped on arrival: answered in its turn
    assert (
        peer.events()
        == [
            {
                "event": "error",
                "payload": {
                    "code": "rate_limited",
                    "message": "too many messages: this one was dropped",
                    "event": None,
                },
            }
        ]
        * 2
    )
    await session.receive_text(None)  # the violations bucket is empty now
    assert peer.closes == [(CloseCode.POLICY_VIOLATION, "message flood")]
    assert errors(metrics, "unknown", "rate_limited") == 3
    assert metrics.received_by_event["unknown"].value == 0  # dropped frames are not handled


async def test_control_frames_over_the_rate_close_the_flood(
    peer: RecordingPeer, runtime: Runtime, metrics: Metrics
) -> None:
    session = make_session(peer, runtime, metrics, burst=2)
    for _ in range(4):  # two within the rate, two refused
        session.frame_arrived()
    assert peer.closes == []
    session.frame_arrived()
    assert peer.closes == [(CloseCode.POLICY_VIOLATION, "frame flood")]


@pytest.mark.parametrize(
    ("text", "code", "event"),
    [
        ("not json", "invalid_json", None),
        (frame("no_such_event"), "unknown_event", "no_such_event"),
        (frame("add_chat", chatContent=""), "invalid_payload", "add_chat"),
        (frame("recents_chat", limit=0), "invalid_payload", "recents_chat"),
    ],
)
async def test_a_frame_that_does_not_decode_is_answered_with_its_error(
    peer: RecordingPeer,
    runtime: Runtime,
    metrics: Metrics,
    text: str,
    code: str,
    event: str | None,
) -> None:
    session = make_session(peer, runtime, metrics)
    assert session.take_inline(text)
    (answer,) = peer.events()
    assert answer["event"] == "error"
    assert (answer["payload"]["code"], answer["payload"]["event"]) == (code, event)
    assert runtime.ran == []


async def test_a_room_rule_without_an_event_is_answered_naming_the_frames_event(
    peer: RecordingPeer, runtime: Runtime, metrics: Metrics
) -> None:
    """docs/protocol.md "Errors": ``error.event`` names the event, whatever refused it
    (the many-node runtime raised some refusals without one)."""
    runtime.awaiting_commands = frozenset()  # so the lane runs it
    session = make_session(peer, runtime, metrics)
    runtime.fail_with = ProtocolError(ErrorCode.FORBIDDEN, "you are no longer in this room")
    assert session.take_inline(frame("recents_chat"))  # an alias stays an alias
    (answer,) = peer.events()
    assert answer["payload"] == {
        "code": "forbidden",
        "message": "you are no longer in this room",
        "event": "recents_chat",
    }
    assert errors(metrics, "get_recent_chats", "forbidden") == 1


async def test_a_store_that_is_down_is_answered_unavailable(
    peer: RecordingPeer, runtime: Runtime, metrics: Metrics
) -> None:
    session = make_session(peer, runtime, metrics)
    runtime.fail_with = StoreUnavailable("redis", "connection refused by 10.0.0.7")
    session.take_inline(frame("lock_room"))
    (answer,) = peer.events()
    assert answer["payload"] == {
        "code": "unavailable",
        "message": "the room state is unavailable; nothing was done, retry later",
        "event": "lock_room",
    }


async def test_a_bug_is_logged_answered_and_the_session_goes_on(
    peer: RecordingPeer,
    runtime: Runtime,
    metrics: Metrics,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    session = make_session(peer, runtime, metrics)
    runtime.fail_with = RuntimeError("a bug")
    session.take_inline(frame("raise_hand"))

    def broken(text: str, limits: ProtocolLimits) -> Command:
        raise KeyError(text)

    monkeypatch.setattr(session_module, "decode", broken)
    session.take_inline(frame("raise_hand"))
    internal = "internal error: nothing was done"
    assert [e["payload"] for e in peer.events()] == [
        {"code": "unavailable", "message": internal, "event": "raise_hand"},
        {"code": "unavailable", "message": internal, "event": None},  # never decoded
    ]
    assert errors(metrics, "raise_hand", "unavailable") == 1
    assert errors(metrics, "unknown", "unavailable") == 1
    monkeypatch.undo()
    runtime.fail_with = None
    assert session.take_inline(frame("raise_hand"))
    assert runtime.ran == [RaiseHand()]


async def test_chats_are_answered_in_the_order_sent_whatever_the_store_does(
    peer: RecordingPeer, runtime: Runtime, metrics: Metrics
) -> None:
    session = make_session(peer, runtime, metrics)
    assert session.take_inline(chat("one"))
    assert session.take_inline(chat("two"))  # joins the pipeline
    assert not session.take_inline(frame("ping"))  # waits for the two: left to the loop
    pinged = asyncio.ensure_future(session.receive_text(frame("ping")))
    runtime.store("two")
    await asyncio.sleep(0)
    assert peer.events() == []  # "two" waits for "one"
    runtime.store("one", ChatIdTaken("one"))
    await pinged
    answers = peer.events()
    assert [(e["event"], e["payload"].get("chatId")) for e in answers] == [
        ("error", None),
        ("add_chat", "two"),
        ("ran", None),
    ]
    assert answers[0]["payload"] == {
        "code": "invalid_payload",
        "message": "chatId is already used by another message in this room",
        "event": "add_chat",
    }
    assert runtime.ran == [Ping()]
    assert metrics.received_by_event["add_chat"].value == 2


async def test_a_chat_refused_before_the_store_waits_for_the_chats_before_it(
    peer: RecordingPeer, runtime: Runtime, metrics: Metrics
) -> None:
    session = make_session(peer, runtime, metrics)
    runtime.refuse_chat = ProtocolError(ErrorCode.FORBIDDEN, "not now", "add_chat")
    session.take_inline(chat("alone"))
    assert [e["payload"]["code"] for e in peer.events()] == ["forbidden"]  # answered at once
    runtime.refuse_chat = None
    session.take_inline(chat("first"))
    runtime.refuse_chat = ProtocolError(ErrorCode.FORBIDDEN, "not now", "add_chat")
    session.take_inline(chat("refused"))
    assert peer.events() == []
    runtime.store("first")
    await session.settle()
    assert [e["event"] for e in peer.events()] == ["add_chat", "error"]


async def test_a_sender_with_too_many_chats_in_flight_is_read_no_further(
    peer: RecordingPeer, runtime: Runtime, metrics: Metrics
) -> None:
    session = make_session(peer, runtime, metrics)
    for n in range(PIPELINED_ADDS - 1):
        assert session.take_inline(chat(f"m{n}"))
    last = f"m{PIPELINED_ADDS - 1}"
    assert not session.take_inline(chat(last))  # the loop must wait after this one
    receiving = asyncio.ensure_future(session.receive_text(chat(last)))
    await asyncio.sleep(0)
    assert len(session.adds) == PIPELINED_ADDS
    assert not receiving.done()  # backpressure: the oldest must be stored first
    runtime.store("m0")
    await receiving
    assert [e["payload"]["chatId"] for e in peer.events()] == ["m0"]


async def test_control_frames_keep_their_turn(
    peer: RecordingPeer, runtime: Runtime, metrics: Metrics
) -> None:
    session = make_session(peer, runtime, metrics)
    session.ping_received(b"x")
    assert peer.sent == [b"\x8a\x01x"]  # the pong, its payload echoed
    peer.sent.clear()
    session.take_inline(chat("last words"))
    binary = asyncio.ensure_future(session.binary_received())
    await asyncio.sleep(0)
    assert peer.closes == []  # the chat before it is answered first
    runtime.store("last words")
    await binary
    assert [e["event"] for e in peer.events()] == ["add_chat"]
    assert peer.closes == [(CloseCode.UNSUPPORTED_DATA, "binary frames are not accepted")]
    assert await session.close_received(1000) is None  # the echo of the server's close


async def test_a_clients_close_is_its_code_once_its_chats_are_answered(
    peer: RecordingPeer, runtime: Runtime, metrics: Metrics
) -> None:
    session = make_session(peer, runtime, metrics)
    session.take_inline(chat("bye"))
    closing = asyncio.ensure_future(session.close_received(1000))
    await asyncio.sleep(0)
    assert not closing.done()
    runtime.store("bye")
    assert await closing == 1000
    assert [e["event"] for e in peer.events()] == ["add_chat"]


async def test_a_broken_stream_is_closed_as_the_mapper_says(
    peer: RecordingPeer, runtime: Runtime, metrics: Metrics
) -> None:
    session = make_session(peer, runtime, metrics)
    session.stream_failed(UnmaskedFrame())
    assert peer.closes == [(CloseCode.PROTOCOL_ERROR, "client frames must be masked")]
    assert peer.sent == []


def test_the_session_module_does_not_load_aiohttp() -> None:
    """Sans-I/O: the session and what it imports know nothing of the socket library."""
    probe = "import sys, callroom.server.session; print('aiohttp' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "False"
