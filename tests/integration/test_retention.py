"""CHAT_RETENTION_DAYS: the node purges older messages on its schedule (SPEC §6)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from callroom.chat.base import ChatMessage
from callroom.chat.sql import SqlChatHistory
from callroom_testing import wait_until

DAY_MS = 86_400_000


async def test_node_purges_messages_older_than_the_retention_at_start(
    start_node: Any, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'retention.db'}"
    now = int(time.time() * 1000)
    store = SqlChatHistory(url)
    await store.start()
    for chat_id, age_days in (("old", 3), ("recent", 0)):
        message = ChatMessage(chat_id, "alice", "Alice", now - age_days * DAY_MS, chat_id)
        await store.add("zoom:r", message)

    node = await start_node(DATABASE_URL=url, CHAT_RETENTION_DAYS=2)

    async def only_recent_left() -> bool:
        page = await store.page("zoom:r", 10)
        return [m.chat_id for m in page.messages] == ["recent"]

    await wait_until(only_recent_left)
    await node.stop()
    await store.close()
