"""The chat history port (SPEC §3.1 chat rows, §4 messages route, §8).

Backends: ``MemoryChatHistory`` (``callroom.chat.memory``: the unit-test fixture and the
single-node mode without a database) and ``SqlChatHistory`` (``callroom.chat.sql``:
SQLite by default, PostgreSQL in production, with the memory window of the last
``CHAT_HISTORY_LIMIT`` messages per room kept by its writer, the one ordering point of
the history: ``callroom.chat.writer``).

Contract every backend keeps:

- ``add`` stores durably before it returns (the node broadcasts only after it returns).
  ``submit`` is the same add without a coroutine: it queues the add before it returns and
  gives back a future of ``add``'s result (the node's chat path, which runs in the
  socket's callback: no task per message); with ``into`` it answers that future, made
  by the caller beforehand, instead of a new one. ``add`` is ``await submit(...)``.
  A ``chat_id`` is unique in a room. Adding a ``chat_id`` that the same sender already
  stored in that room stores nothing and returns ``(stored message, False)`` (safe retry);
  a ``chat_id`` used by another sender in that room raises ``ChatIdTaken``.
- ``delete`` removes for good; it returns whether a message was removed.
- ``page`` returns the newest ``limit`` messages older than ``before`` (or the newest
  overall), oldest first, with ``total`` (messages in the room's history) and
  ``has_more`` (older ones exist). An unknown ``before`` gives an empty page.
- Any backend failure raises ``StoreUnavailable("store")`` and leaves nothing
  half-written.
- Adds commit in the order they were called, and so do a room's deletes with its adds
  (the history order is the call order).
- ``room`` is the room key ``"{kind}:{roomId}"``.

The values (``ChatMessage``, ``ChatPage``) are the room core's (``callroom.room.chat``,
where the chat rules live); they are importable from here too.
"""

from __future__ import annotations

import asyncio
from typing import Protocol, TypeAlias

from callroom.errors import CallroomError
from callroom.room.chat import ChatMessage, ChatPage

__all__ = ["AddFuture", "ChatHistory", "ChatIdTaken", "ChatMessage", "ChatPage"]


AddFuture: TypeAlias = asyncio.Future[tuple[ChatMessage, bool]]
"""What ``add`` returns, as a future (``submit``): the stored message and whether it is new."""


class ChatIdTaken(CallroomError):
    """The ``chat_id`` is used by another sender's message in this room (answered
    ``invalid_payload``, SPEC §3.1)."""


class ChatHistory(Protocol):
    async def start(self) -> None:
        """Connect (and migrate). Must not raise when the store is down: ``check`` says."""

    async def close(self) -> None: ...

    async def check(self) -> None:
        """Raise ``StoreUnavailable`` unless the store answers (``/readyz``)."""

    async def add(self, room: str, message: ChatMessage) -> tuple[ChatMessage, bool]: ...

    def submit(
        self, room: str, message: ChatMessage, *, into: AddFuture | None = None
    ) -> AddFuture:
        """``add``, queued now; its outcome (result or exception) comes on the future
        (``into``, when given; a future already done, i.e. given up, is left alone)."""

    async def get(self, room: str, chat_id: str) -> ChatMessage | None: ...

    async def delete(self, room: str, chat_id: str) -> bool: ...

    async def page(self, room: str, limit: int, before: str | None = None) -> ChatPage: ...

    async def purge_older_than(self, cutoff_ms: int) -> int:
        """Delete every message older than ``cutoff_ms``; return how many."""

    def invalidate(self, room: str) -> None:
        """Forget what is kept in memory in front of the store for ``room`` (its window),
        because the room closed or its history changed elsewhere. The history itself
        stays: a backend with nothing in front of its store does nothing."""
