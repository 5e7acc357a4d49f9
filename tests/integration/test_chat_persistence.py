"""Chat history through the server, on both stores (SPEC §3.1 chat rows, §4, §6, §8).

Parametrised over a temporary SQLite file and a PostgreSQL database of its own on the
real server at 127.0.0.1:5432. Paging and deleting, a room's behaviour, also run on two
nodes (tests/deployment.py); the rest is one node only: restarts, outages and the memory
window of one process.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from callroom_testing import (
    TokenFactory,
    fresh_pg_database,
    open_client,
    pg_admin,
    room_url,
    wait_until,
)
from deployment import DeployFactory


@pytest.fixture(params=["sqlite", "postgresql"])
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'history.db'}"
        return
    async with fresh_pg_database() as url:
        yield url


def ws(node: Any, token: str, room: str = "persist") -> str:
    return room_url(node, token, room, kind="chat")


async def test_history_survives_a_restart_and_retries_stay_idempotent(
    start_node: Any, make_token: TokenFactory, database_url: str
) -> None:
    first = await start_node(DATABASE_URL=database_url)
    alice = await open_client(ws(first, make_token("alice", "Alice")))
    await alice.expect("room_state")
    for n in range(3):
        await alice.send("add_chat", {"chatContent": f"message {n}", "chatId": f"m{n}"})
        assert (await alice.expect("add_chat"))["chatId"] == f"m{n}"
    await first.stop()

    second = await start_node(DATABASE_URL=database_url)
    alice = await open_client(ws(second, make_token("alice", "Alice")))
    await alice.expect("room_state")
    await alice.send("get_recent_chats", {"limit": 10})
    page = await alice.expect("get_recent_chats")
    assert [m["chatContent"] for m in page["messages"]] == ["message 0", "message 1", "message 2"]
    assert (page["total"], page["hasMore"]) == (3, False)

    # The same chatId after the restart stores nothing new (SPEC §3.1 safe retry).
    await alice.send("add_chat", {"chatContent": "message 1 again", "chatId": "m1"})
    again = await alice.expect("add_chat")
    assert again["chatContent"] == "message 1"
    await alice.send("get_recent_chats", {})
    assert (await alice.expect("get_recent_chats"))["total"] == 3
    await alice.close()


async def test_recent_chats_page_past_the_memory_window_into_the_store(
    deploy: DeployFactory, make_token: TokenFactory, database_url: str
) -> None:
    nodes = await deploy(DATABASE_URL=database_url, CHAT_HISTORY_LIMIT=2)
    alice = await open_client(ws(nodes, make_token("alice", "Alice")))
    await alice.expect("room_state")
    for n in range(6):
        await alice.send("add_chat", {"chatContent": f"c{n}", "chatId": f"id{n}"})
        await alice.expect("add_chat")
    await alice.send("recents_chat", {"limit": 2, "before": "id4"})
    page = await alice.expect("recents_chat")
    assert [m["chatId"] for m in page["messages"]] == ["id2", "id3"]
    assert (page["total"], page["hasMore"]) == (6, True)
    await alice.send("get_recent_chats", {"limit": 5, "before": "id2"})
    page = await alice.expect("get_recent_chats")
    assert [m["chatId"] for m in page["messages"]] == ["id0", "id1"]
    assert page["hasMore"] is False

    # Deleting is for good, in the store too.
    await alice.send("delete_chat", {"chatId": "id0"})
    assert (await alice.expect("delete_chat"))["chatId"] == "id0"
    async with (
        aiohttp.ClientSession() as http,
        http.get(
            f"{nodes.url}/api/v1/rooms/chat/persist/messages?limit=100",
            headers={"Authorization": f"Bearer {make_token('alice')}"},
        ) as resp,
    ):
        body = await resp.json()
    assert resp.status == 200
    assert [m["chatId"] for m in body["messages"]] == ["id1", "id2", "id3", "id4", "id5"]
    await alice.close()


async def test_store_down_at_start_is_named_in_readyz_and_recovers_by_itself(
    start_node: Any, make_token: TokenFactory
) -> None:
    """SPEC §6: a store that is down does not stop the node; ready once it is back."""
    name = "callroom_t_late_db"
    await pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    node = await start_node(DATABASE_URL=f"postgresql://postgres@127.0.0.1:5432/{name}")
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{node.url}/readyz") as resp:
                assert resp.status == 503
                assert (await resp.json())["failing"] == ["store"]
            alice = await open_client(ws(node, make_token("alice")))
            await alice.expect("room_state")
            await alice.send("add_chat", {"chatContent": "lost?"})
            error = await alice.expect("error")
            assert (error["code"], error["event"]) == ("unavailable", "add_chat")

            await pg_admin(f'CREATE DATABASE "{name}"')

            async def ready() -> bool:
                async with http.get(f"{node.url}/readyz") as resp:
                    return resp.status == 200

            await wait_until(ready, timeout=10)
        await alice.send("add_chat", {"chatContent": "stored now"})
        assert (await alice.expect("add_chat"))["chatContent"] == "stored now"
        await alice.send("get_recent_chats", {})
        # Nothing half-written from the failed attempt.
        assert (await alice.expect("get_recent_chats"))["total"] == 1
        await alice.close()
        await node.stop()
    finally:
        await pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def test_terminated_postgres_connections_give_a_clear_error_then_recover(
    start_node: Any, make_token: TokenFactory
) -> None:
    async with fresh_pg_database() as url:
        node = await start_node(DATABASE_URL=url)
        alice = await open_client(ws(node, make_token("alice")))
        await alice.expect("room_state")
        await alice.send("add_chat", {"chatContent": "before"})
        await alice.expect("add_chat")
        database = url.rsplit("/", 1)[1]
        await pg_admin(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            f"WHERE datname = '{database}' AND pid <> pg_backend_pid()"
        )
        # The first add after the kill may still meet a dead connection (asyncpg learns of
        # the termination asynchronously): then it gets a clear error, and the store must
        # come back by itself (the readiness probe finds it again).
        await alice.send("add_chat", {"chatContent": "after 0", "chatId": "a0"})
        frame = await alice.next()
        while frame["event"] not in ("add_chat", "error"):
            frame = await alice.next()
        first_stored = frame["event"] == "add_chat"
        if not first_stored:
            assert frame["payload"]["code"] == "unavailable"
            async with aiohttp.ClientSession() as http:

                async def ready() -> bool:
                    async with http.get(f"{node.url}/readyz") as resp:
                        return resp.status == 200

                await wait_until(ready, timeout=10)
        await alice.send("add_chat", {"chatContent": "after 1", "chatId": "a1"})
        assert (await alice.expect("add_chat"))["chatContent"] == "after 1"
        await alice.send("get_recent_chats", {})
        stored = (await alice.expect("get_recent_chats"))["messages"]
        expected = ["before", *(["after 0"] if first_stored else []), "after 1"]
        assert [m["chatContent"] for m in stored] == expected
        await alice.close()
        await node.stop()


async def test_memory_history_serves_the_room_but_keeps_nothing_across_restarts(
    start_node: Any, make_token: TokenFactory
) -> None:
    """DATABASE_URL=memory:// (tests, benchmarks): chat works, nothing durable."""
    first = await start_node(DATABASE_URL="memory://", CHAT_HISTORY_LIMIT=2)
    alice = await open_client(ws(first, make_token("alice")))
    await alice.expect("room_state")
    for n in range(3):
        await alice.send("add_chat", {"chatContent": f"m{n}"})
        await alice.expect("add_chat")
    await alice.send("get_recent_chats", {})
    page = await alice.expect("get_recent_chats")
    assert [m["chatContent"] for m in page["messages"]] == ["m1", "m2"]  # the window only
    async with aiohttp.ClientSession() as http, http.get(f"{first.url}/readyz") as resp:
        assert resp.status == 200
    await first.stop()

    second = await start_node(DATABASE_URL="memory://")
    alice = await open_client(ws(second, make_token("alice")))
    await alice.expect("room_state")
    await alice.send("get_recent_chats", {})
    assert (await alice.expect("get_recent_chats"))["total"] == 0
    await alice.close()


async def test_a_closed_rooms_memory_window_is_freed_and_its_history_kept(
    start_node: Any, make_token: TokenFactory, tmp_path: Path
) -> None:
    from callroom.chat.sql import SqlChatHistory

    node = await start_node(DATABASE_URL=f"sqlite:///{tmp_path / 'window.db'}")
    assert isinstance(node.history, SqlChatHistory)
    assert node.history.windows is not None
    alice = await open_client(ws(node, make_token("alice", "Alice"), "window"))
    await alice.expect("room_state")
    await alice.send("add_chat", {"chatContent": "kept", "chatId": "k1"})
    await alice.expect("add_chat")
    await alice.send("get_recent_chats", {})
    await alice.expect("get_recent_chats")
    assert "chat:window" in node.history.windows  # the window, warm

    await alice.close()
    await wait_until(lambda: "chat:window" not in node.hub.rooms)
    assert "chat:window" not in node.history.windows  # freed with the room
    page = await node.history.page("chat:window", 10)
    assert [m.chat_id for m in page.messages] == ["k1"]
