"""Chat over real sockets (SPEC §3.1 add_chat, delete_chat, get_recent_chats), on one node
and on two (tests/deployment.py)."""

from __future__ import annotations

import time
from typing import Any

import pytest

from callroom_testing import (
    Client,
    TokenFactory,
    events,
    join_room,
    meeting,
    settle,
    wait_until,
)
from deployment import DeployFactory, room_gone

# Issue 19: these run over the suite's Redis Cluster too (conftest.py).
pytestmark = pytest.mark.on_redis_cluster


async def chat(client: Client, content: str, chat_id: str | None = None) -> dict[str, Any]:
    """Send add_chat and return the ChatInfo the sender gets back (the sender's frames
    before it are drained first, so an earlier add_chat is not taken for this one)."""
    payload: dict[str, Any] = {"chatContent": content}
    if chat_id is not None:
        payload["chatId"] = chat_id
    await client.drain()
    await client.send("add_chat", payload)
    return await client.expect("add_chat")


async def test_chat_is_stamped_by_the_server_and_reaches_admitted_members_only(
    deploy: DeployFactory, make_token: TokenFactory
) -> None:
    nodes = await deploy()
    alice, bob = await meeting(nodes, make_token, "bob")
    carol, _ = await join_room(nodes, make_token("carol", "Carol"))  # waiting

    before_ms = int(time.time() * 1000)
    await bob.send(
        "add_chat",
        {
            "chatContent": "  hello all \n",
            # Identity and stamps in the payload are the sender's claims: ignored.
            "clientId": "alice",
            "displayName": "Alice (host)",
            "timestamp": 1,
            "extra": {"ignored": True},
        },
    )
    mine = await bob.expect("add_chat")
    after_ms = int(time.time() * 1000)
    theirs = await alice.expect("add_chat")
    assert mine == theirs
    assert mine["clientId"] == "bob"
    assert mine["displayName"] == "Bob"
    assert mine["chatContent"] == "hello all"
    assert before_ms <= mine["timestamp"] <= after_ms
    assert isinstance(mine["chatId"], str)
    assert mine["chatId"]
    assert set(mine) == {"clientId", "displayName", "chatId", "timestamp", "chatContent"}

    second = await chat(bob, "again")
    assert second["chatId"] != mine["chatId"]  # the server makes a new id per message
    assert "add_chat" not in events(await carol.drain())


async def test_retry_with_the_same_chat_id_resends_the_stored_message_to_the_sender_only(
    deploy: DeployFactory, make_token: TokenFactory
) -> None:
    nodes = await deploy()
    alice, bob = await meeting(nodes, make_token, "bob")

    first = await chat(bob, "only once", chat_id="bob-msg-1")
    assert first["chatId"] == "bob-msg-1"
    assert await alice.expect("add_chat") == first  # positive control: alice hears it

    await bob.send("add_chat", {"chatContent": "only once (retry)", "chatId": "bob-msg-1"})
    assert await bob.expect("add_chat") == first  # the stored ChatInfo, not the retry's text
    assert await alice.drain() == []

    # Another member reusing that chatId is refused, and nothing is broadcast.
    await alice.send("add_chat", {"chatContent": "hijack", "chatId": "bob-msg-1"})
    error = await alice.expect("error")
    assert error["code"] == "invalid_payload"
    assert error["event"] == "add_chat"
    assert "chatId" in error["message"]
    assert await bob.drain() == []

    await bob.send("get_recent_chats")
    recent = await bob.expect("get_recent_chats")
    assert recent["total"] == 1
    assert recent["messages"] == [first]


async def test_author_and_host_may_delete_a_message_another_member_may_not(
    deploy: DeployFactory, make_token: TokenFactory
) -> None:
    nodes = await deploy()
    alice, bob, carol = await meeting(nodes, make_token, "bob", "carol")
    by_bob = await chat(bob, "bob's first")
    by_bob_2 = await chat(bob, "bob's second")
    await settle(alice, bob, carol)

    await carol.send("delete_chat", {"chatId": by_bob["chatId"]})
    error = await carol.expect("error")
    assert (error["code"], error["event"]) == ("forbidden", "delete_chat")
    assert "delete_chat" not in events(await alice.drain())

    await alice.send("delete_chat", {"chatId": by_bob["chatId"]})  # a host
    deleted = {"chatId": by_bob["chatId"], "clientId": "alice", "displayName": "Alice"}
    for member in (alice, bob, carol):
        assert await member.expect("delete_chat") == deleted

    await bob.send("delete_chat", {"chatId": by_bob_2["chatId"]})  # the author
    deleted_2 = {"chatId": by_bob_2["chatId"], "clientId": "bob", "displayName": "Bob"}
    for member in (alice, bob, carol):
        assert await member.expect("delete_chat") == deleted_2

    await bob.send("delete_chat", {"chatId": by_bob_2["chatId"]})
    error = await bob.expect("error")
    assert (error["code"], error["event"]) == ("not_found", "delete_chat")

    await carol.send("get_recent_chats")
    assert (await carol.expect("get_recent_chats"))["messages"] == []


async def test_recent_chats_pages_backwards_and_replies_under_the_name_sent(
    deploy: DeployFactory, make_token: TokenFactory
) -> None:
    nodes = await deploy()
    alice, bob = await meeting(nodes, make_token, "bob")
    sent = [await chat(bob, f"message {i}") for i in range(5)]
    await settle(alice, bob)

    await bob.send("get_recent_chats", {"limit": 2})
    page = await bob.expect("get_recent_chats")
    assert page == {"messages": sent[3:], "total": 5, "hasMore": True}

    await bob.send("get_recent_chats", {"limit": 2, "before": sent[3]["chatId"]})
    page = await bob.expect("get_recent_chats")
    assert page == {"messages": sent[1:3], "total": 5, "hasMore": True}

    await bob.send("recents_chat", {"limit": 2, "before": sent[1]["chatId"]})
    frame = await bob.next()
    assert frame["event"] == "recents_chat"
    assert frame["payload"] == {"messages": sent[:1], "total": 5, "hasMore": False}

    await bob.send("recents_chat", {"limit": None, "before": None})  # null = absent
    assert (await bob.expect("recents_chat"))["messages"] == sent

    # Only the asker gets the reply.
    assert await alice.drain() == []

    await bob.send("get_recent_chats", {"limit": 101})
    error = await bob.expect("error")
    assert error["code"] == "invalid_payload"
    assert "limit" in error["message"]


async def test_waiting_member_may_not_chat_or_read_history(
    deploy: DeployFactory, make_token: TokenFactory
) -> None:
    nodes = await deploy()
    alice, _ = await join_room(nodes, make_token("alice"))
    await chat(alice, "inside only")
    carol, _ = await join_room(nodes, make_token("carol"))
    for event, payload in (
        ("add_chat", {"chatContent": "hi"}),
        ("get_recent_chats", {}),
        ("recents_chat", {}),
    ):
        await carol.send(event, payload)
        error = await carol.expect("error")
        assert (error["code"], error["event"]) == ("forbidden", event)
    await alice.send("get_recent_chats")
    assert (await alice.expect("get_recent_chats"))["total"] == 1  # nothing stored by carol


async def test_bad_chat_content_is_refused_naming_the_field(
    deploy: DeployFactory, make_token: TokenFactory
) -> None:
    nodes = await deploy(CHAT_MAX_LENGTH=10)
    alice, bob = await meeting(nodes, make_token, "bob")
    for content in ("   ", "x" * 11, "a\x00b", 42, None):
        await bob.send("add_chat", {"chatContent": content})
        error = await bob.expect("error")
        assert error["code"] == "invalid_payload", content
        assert "chatContent" in error["message"]
    await bob.send("add_chat", {"chatContent": "hi", "chatId": "x" * 65})
    assert "chatId" in (await bob.expect("error"))["message"]
    assert (await chat(bob, " " + "y" * 10 + " "))["chatContent"] == "y" * 10  # trimmed fits
    assert [f["payload"]["chatContent"] for f in await alice.drain()] == ["y" * 10]


async def test_chat_store_down_answers_unavailable_and_keeps_the_connection(
    deploy: DeployFactory, make_token: TokenFactory
) -> None:
    nodes = await deploy(DATABASE_URL="postgresql://postgres@127.0.0.1:1/none")
    alice, bob = await meeting(nodes, make_token, "bob")

    await bob.send("add_chat", {"chatContent": "lost?"})
    error = await bob.expect("error")
    assert (error["code"], error["event"]) == ("unavailable", "add_chat")
    assert await bob.drain() == []  # ping -> pong: still open
    assert "add_chat" not in events(await alice.drain())  # nothing was done

    await bob.send("get_recent_chats")
    error = await bob.expect("error")
    assert (error["code"], error["event"]) == ("unavailable", "get_recent_chats")
    await bob.send("delete_chat", {"chatId": "whatever"})
    assert (await bob.expect("error"))["code"] == "unavailable"

    # The rest of the room works without the store.
    await bob.send("raise_hand")
    assert (await alice.expect("raise_hand"))["clientId"] == "bob"


async def test_chat_history_outlives_the_room(
    deploy: DeployFactory, make_token: TokenFactory
) -> None:
    nodes = await deploy()
    alice, _ = await join_room(nodes, make_token("alice"))
    said = await chat(alice, "minutes of the meeting")
    await alice.close()
    await wait_until(lambda: room_gone(nodes))

    again, _ = await join_room(nodes, make_token("bob"))  # a new room of the same name
    await again.send("get_recent_chats")
    assert await again.expect("get_recent_chats") == {
        "messages": [said],
        "total": 1,
        "hasMore": False,
    }
