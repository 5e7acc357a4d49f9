"""One member's chat messages are pipelined to the store and keep their order.

A member's consecutive ``add_chat`` frames wait for the store together (one group commit
instead of one commit each), and every other frame, every error and the member's end still
come after the messages sent before them (docs/architecture.md "Chat pipelining"). On one
node and on two (tests/deployment.py); what is measured or patched is bob's node.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from callroom.chat.base import ChatMessage
from callroom.errors import ErrorCode, ProtocolError
from callroom.server.session import PIPELINED_ADDS
from callroom_testing import TokenFactory, meeting, metric_value
from deployment import DeployFactory

BURSTS = {"RATE_LIMIT_PER_SECOND": 1000, "RATE_LIMIT_BURST": 1000}
# The node's default test store (SQLite: adds answered after a commit) and memory://
# (adds answered at once, before the callback that broadcasts them has run).
STORES = pytest.mark.parametrize(
    "store", [{}, {"DATABASE_URL": "memory://"}], ids=["sqlite", "memory"]
)


def add_chat(chat_id: str) -> str:
    return json.dumps({"event": "add_chat", "payload": {"chatContent": chat_id, "chatId": chat_id}})


async def test_a_burst_of_chats_shares_commits_and_arrives_in_order(
    deploy: DeployFactory, make_token: TokenFactory
) -> None:
    nodes = await deploy(**BURSTS)
    alice, bob = await meeting(nodes, make_token, "bob")
    sent = [f"m{i}" for i in range(PIPELINED_ADDS + 36)]  # past the in-flight cap

    bob.send_burst(*(add_chat(chat_id) for chat_id in sent), '{"event": "get_recent_chats"}')

    assert [(await bob.expect("add_chat"))["chatId"] for _ in sent] == sent
    recent = await bob.expect("get_recent_chats")  # answered after every add before it
    assert [message["chatId"] for message in recent["messages"]] == sent[-50:]
    assert recent["total"] == len(sent)
    assert [(await alice.expect("add_chat"))["chatId"] for _ in sent] == sent
    # Read together, the adds were committed together: fewer commits than messages.
    node = nodes.node_of("bob")  # bob's node stores bob's messages
    stored = await metric_value(node, "callroom_chat_store_batch_messages_sum")
    commits = await metric_value(node, "callroom_chat_store_batch_messages_count")
    assert stored == len(sent)
    assert 1 <= commits < len(sent)
    assert await metric_value(node, "callroom_chat_store_commit_seconds_count") == commits


@STORES
async def test_errors_and_replies_wait_for_the_chats_sent_before_them(
    deploy: DeployFactory, make_token: TokenFactory, store: dict[str, str]
) -> None:
    nodes = await deploy(**BURSTS, **store)
    _alice, bob = await meeting(nodes, make_token, "bob")

    bob.send_burst(
        add_chat("first"),
        "not json",
        add_chat("second"),
        json.dumps({"event": "add_chat", "payload": {"chatContent": ""}}),  # invalid
        add_chat("third"),
        '{"event": "ping"}',
    )

    frames = [await bob.next() for _ in range(6)]
    assert [(f["event"], f["payload"].get("chatId")) for f in frames] == [
        ("add_chat", "first"),
        ("error", None),
        ("add_chat", "second"),
        ("error", None),
        ("add_chat", "third"),
        ("pong", None),
    ]
    assert frames[1]["payload"]["code"] == "invalid_json"
    assert frames[3]["payload"]["code"] == "invalid_payload"
    assert frames[3]["payload"]["event"] == "add_chat"


@STORES
async def test_a_members_last_chats_reach_the_room_before_its_leave(
    deploy: DeployFactory, make_token: TokenFactory, store: dict[str, str]
) -> None:
    nodes = await deploy(**BURSTS, **store)
    alice, bob = await meeting(nodes, make_token, "bob")
    sent = [f"bye{i}" for i in range(5)]

    bob.send_burst(*(add_chat(chat_id) for chat_id in sent), close_code=1000)

    frames = [await alice.next() for _ in range(len(sent) + 1)]
    assert [f["event"] for f in frames] == ["add_chat"] * len(sent) + ["disconnect"]
    assert [f["payload"]["chatId"] for f in frames[:-1]] == sent
    assert frames[-1]["payload"]["clientId"] == "bob"


async def test_an_add_refused_before_the_store_is_answered_after_the_adds_before_it(
    deploy: DeployFactory, make_token: TokenFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first add waits for its commit; the second is refused at once by a room rule,
    yet its error comes after the first add's broadcast."""
    nodes = await deploy(**BURSTS)
    _alice, bob = await meeting(nodes, make_token, "bob")
    node = nodes.node_of("bob")
    store_submit = node.hub.history.submit

    def refuse_the_second(room: str, message: ChatMessage, **kwargs: Any) -> Any:
        if message.chat_id == "refused":
            raise ProtocolError(ErrorCode.FORBIDDEN, "not now", "add_chat")
        return store_submit(room, message, **kwargs)

    monkeypatch.setattr(node.hub.history, "submit", refuse_the_second)
    bob.send_burst(add_chat("stored"), add_chat("refused"), '{"event": "ping"}')

    frames = [await bob.next() for _ in range(3)]
    assert [(f["event"], f["payload"].get("chatId")) for f in frames] == [
        ("add_chat", "stored"),
        ("error", None),
        ("pong", None),
    ]
    assert frames[1]["payload"]["code"] == "forbidden"
    assert frames[1]["payload"]["event"] == "add_chat"


async def test_a_handler_that_fails_answers_unavailable_and_the_socket_stays(
    deploy: DeployFactory, make_token: TokenFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug in a handler (here: the store and the verifier raising what they never
    should) is answered like a store outage, on the pipelined path and the inline one."""
    nodes = await deploy(**BURSTS)
    _alice, bob = await meeting(nodes, make_token, "bob")
    node = nodes.node_of("bob")

    async def broken(*_args: Any, **_kwargs: Any) -> Any:
        raise RuntimeError("a bug")

    submitted: list[str] = []

    def broken_submit(_room: str, message: ChatMessage, **_kwargs: Any) -> Any:
        """The first add raises at once; the second one's future fails; the third one's
        is cancelled."""
        submitted.append(message.chat_content)
        if len(submitted) == 1:
            raise RuntimeError("a bug")
        failed: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if len(submitted) == 2:
            failed.set_exception(RuntimeError("a bug"))
        else:
            failed.cancel()
        return failed

    monkeypatch.setattr(node.hub.history, "submit", broken_submit)
    monkeypatch.setattr(node.hub.verifier, "verify_for_refresh", broken)
    bob.send_burst(
        add_chat("lost"),
        add_chat("lost too"),
        add_chat("given up"),
        json.dumps({"event": "refresh_token", "payload": {"token": "x.y.z"}}),
        '{"event": "ping"}',
    )

    frames = [await bob.next() for _ in range(5)]
    assert [f["event"] for f in frames] == ["error"] * 4 + ["pong"]
    assert all(frame["payload"]["code"] == "unavailable" for frame in frames[:4])
    for frame in (*frames[:2], frames[3]):
        assert frame["payload"]["message"] == "internal error: nothing was done"
    assert frames[2]["payload"]["event"] == "add_chat"  # the given-up add: the store's answer
    assert "chat store is unavailable" in frames[2]["payload"]["message"]
    assert submitted == ["lost", "lost too", "given up"]
    failures = '{event="add_chat",code="unavailable"}'
    assert await metric_value(node, "callroom_handler_errors_total", failures) == 3
    refreshes = '{event="refresh_token",code="unavailable"}'
    assert await metric_value(node, "callroom_handler_errors_total", refreshes) == 1
