"""Chat history in memory: the unit-test fixture and the single-node mode without a database.

With ``limit_per_room`` only the newest N messages of each room are kept (SPEC §6
``CHAT_HISTORY_LIMIT``) and ``total`` counts what is held. A ``chat_id`` that fell out of
the window is forgotten, so its retry would be stored again: that mode trades the
idempotency of old messages for bounded memory. Nothing here survives a restart.

Every method completes without awaiting anything, so each one is atomic on the event loop.
"""

from __future__ import annotations

import asyncio

from callroom.chat.base import AddFuture, ChatIdTaken, ChatMessage, ChatPage


class MemoryChatHistory:
    """``ChatHistory`` in a dict per room (insertion order is the history order)."""

    def __init__(self, limit_per_room: int | None = None) -> None:
        if limit_per_room is not None and limit_per_room < 1:
            raise ValueError("limit_per_room must be at least 1")
        self._limit = limit_per_room
        self._rooms: dict[str, dict[str, ChatMessage]] = {}

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def check(self) -> None:
        return None  # memory is always there

    async def add(self, room: str, message: ChatMessage) -> tuple[ChatMessage, bool]:
        return await self.submit(room, message)

    def submit(
        self, room: str, message: ChatMessage, *, into: AddFuture | None = None
    ) -> AddFuture:
        """``add`` done at once; the future is already done when it is returned."""
        future = into if into is not None else asyncio.get_running_loop().create_future()
        if future.done():
            return future  # its caller gave up
        try:
            future.set_result(self._add(room, message))
        except ChatIdTaken as exc:
            future.set_exception(exc)
        return future

    def _add(self, room: str, message: ChatMessage) -> tuple[ChatMessage, bool]:
        messages = self._rooms.setdefault(room, {})
        stored = messages.get(message.chat_id)
        if stored is not None:
            if stored.client_id != message.client_id:
                raise ChatIdTaken(message.chat_id)
            return stored, False
        messages[message.chat_id] = message
        if self._limit is not None and len(messages) > self._limit:
            del messages[next(iter(messages))]  # the oldest
        return message, True

    async def get(self, room: str, chat_id: str) -> ChatMessage | None:
        return self._rooms.get(room, {}).get(chat_id)

    async def delete(self, room: str, chat_id: str) -> bool:
        messages = self._rooms.get(room)
        if messages is None or messages.pop(chat_id, None) is None:
            return False
        if not messages:
            del self._rooms[room]  # a closed room leaves nothing behind
        return True

    async def page(self, room: str, limit: int, before: str | None = None) -> ChatPage:
        messages = self._rooms.get(room, {})
        ordered = list(messages.values())
        if before is None:
            end = len(ordered)
        elif before in messages:
            end = ordered.index(messages[before])
        else:
            return ChatPage(messages=[], total=len(ordered), has_more=False)
        start = max(0, end - limit)
        return ChatPage(messages=ordered[start:end], total=len(ordered), has_more=start > 0)

    async def purge_older_than(self, cutoff_ms: int) -> int:
        purged = 0
        for room in list(self._rooms):
            messages = self._rooms[room]
            old = [chat_id for chat_id, m in messages.items() if m.timestamp < cutoff_ms]
            for chat_id in old:
                del messages[chat_id]
            purged += len(old)
            if not messages:
                del self._rooms[room]
        return purged

    def invalidate(self, room: str) -> None:
        """Nothing is in front of this store: its memory is the history, which stays."""
