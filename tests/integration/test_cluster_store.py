"""Many nodes on the production store (SPEC §7, §6): one chat history in PostgreSQL."""

from __future__ import annotations

from typing import Any

from callroom_testing import TokenFactory, fresh_pg_database, join_admitted, join_room


async def test_nodes_share_one_chat_history_in_postgresql(
    start_cluster: Any, make_token: TokenFactory
) -> None:
    async with fresh_pg_database() as database_url:
        one, two = await start_cluster(DATABASE_URL=database_url)
        alice, _ = await join_room(one, make_token("alice", "Alice"))
        bob, _ = await join_admitted(alice, two, make_token("bob", "Bob"))
        # Each message is broadcast after its commit, to the sender's node and the other.
        for sender, chat_id in ((alice, "m1"), (bob, "m2")):
            await sender.send("add_chat", {"chatContent": f"text of {chat_id}", "chatId": chat_id})
            for client in (alice, bob):
                assert (await client.expect("add_chat"))["chatId"] == chat_id
        # Each node reads the whole history from the store, whoever wrote it.
        for client in (alice, bob):
            await client.send("get_recent_chats", {})
            page = await client.expect("get_recent_chats")
            assert [m["chatId"] for m in page["messages"]] == ["m1", "m2"]
            assert page["total"] == 2
        # A retry of a chatId sent through the other node stores nothing new.
        await bob.send("add_chat", {"chatContent": "first again", "chatId": "m1"})
        taken = await bob.expect("error")
        assert taken["code"] == "invalid_payload"
        await alice.send("delete_chat", {"chatId": "m2"})
        assert (await bob.expect("delete_chat"))["chatId"] == "m2"
        await bob.send("get_recent_chats", {})
        assert (await bob.expect("get_recent_chats"))["total"] == 1
        for client in (alice, bob):
            await client.close()
        for node in (one, two):
            await node.stop()
