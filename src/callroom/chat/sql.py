"""The durable chat history: SQLite (the default) or PostgreSQL (SPEC §3.1, §4, §6, §8).

``SqlChatHistory`` is the ``ChatHistory`` port over three parts:

- ``Database`` (``callroom.chat.database``): one table, ``chat_messages``
  (``callroom.chat.models``), ordered by its identity ``id`` (insertion order); each call
  one transaction; the probes that find a store that was down. Alembic migrations run on
  ``start`` and again whenever the store has to be reached anew.
- ``ChatWriter`` (``callroom.chat.writer``): the one ordering point. Every change of the
  history (adds, group committed; deletes; retention purges) and every load of a memory
  window goes through it, in call order.
- ``Windows`` (``callroom.chat.window``), with ``window``: the newest ``window``
  (``CHAT_HISTORY_LIMIT``) messages of each room in memory, kept by the writer in commit
  order. Pages inside a warm window, and ``get`` of a message in it, are answered from
  memory; the first page of a cold room loads its window (in the writer's order); every
  other read goes to the database. Without ``window`` every read goes to the database:
  with many nodes (SPEC §7) another node's messages would not be in this one's window.

Durability (SPEC §8 "nothing acknowledged is lost"): an add is answered only after the
commit that holds it (``callroom.chat.engine`` for the settings that make a commit
durable). Any failure raises ``StoreUnavailable("store")`` and leaves nothing
half-written.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import suppress
from typing import Final

from sqlalchemy.ext.asyncio import AsyncEngine

from callroom.chat.base import AddFuture, ChatMessage, ChatPage
from callroom.chat.database import Database
from callroom.chat.engine import CONNECT_TIMEOUT, STATEMENT_TIMEOUT, async_url
from callroom.chat.window import Windows
from callroom.chat.writer import COMMIT_INTERVAL, MAX_BATCH, ChatWriter
from callroom.errors import StoreUnavailable

MAX_ROOMS: Final = 1000  # windows kept at most; the least recently used go first


class SqlChatHistory:
    """``ChatHistory`` on SQLite or PostgreSQL (see the module docstring)."""

    def __init__(
        self,
        database_url: str,
        *,
        window: int | None = None,
        max_rooms: int = MAX_ROOMS,
        retry_interval: float = 1.0,
        purge_batch: int = 10_000,
        max_batch: int = MAX_BATCH,
        commit_interval: float = COMMIT_INTERVAL,
        connect_timeout: float = CONNECT_TIMEOUT,
        statement_timeout: float = STATEMENT_TIMEOUT,
        on_commit: Callable[[int, float], None] | None = None,
        on_failure: Callable[[], None] | None = None,
    ) -> None:
        """``window``: messages per room kept in memory (``None``: none); ``max_rooms``:
        rooms whose window is kept at most.

        ``retry_interval``: seconds after a failed probe during which calls fail at once.
        ``purge_batch``: rows deleted per transaction by ``purge_older_than``, so a first
        purge of a large history never runs into the statement timeout (and chat
        messages commit between its batches).
        ``max_batch``: messages stored per transaction by the group commit of ``add``.
        ``commit_interval``: seconds from the start of one group commit to the start of
        the next, unless ``max_batch`` adds wait (0: take what is queued when free).
        ``connect_timeout`` (PostgreSQL) and ``statement_timeout`` (PostgreSQL; SQLite: the
        wait for another writer's lock) bound how long a call waits for a store that hangs.
        ``on_commit(messages, seconds)`` is told of every group commit that succeeded (for
        metrics): how many adds it answered and how long storing them took.
        ``on_failure()`` is told of every store error met (a failed transaction, group
        commit or reconnect probe; not the calls refused while the store is known down).
        """
        self.database = Database(
            async_url(database_url),
            retry_interval=retry_interval,
            connect_timeout=connect_timeout,
            statement_timeout=statement_timeout,
            on_failure=on_failure,
        )
        self.windows = None if window is None else Windows(window, max_rooms=max_rooms)
        self.writer = ChatWriter(
            self.database,
            self.windows,
            max_batch=max_batch,
            commit_interval=commit_interval,
            on_commit=on_commit,
        )
        self._purge_batch = purge_batch

    @property
    def engine(self) -> AsyncEngine:
        return self.database.engine

    @property
    def last_error(self) -> str | None:
        """Why the store is not ready (for logs and diagnostics), ``None`` when ready."""
        return self.database.last_error

    async def start(self) -> None:
        """Connect and migrate; a store that is down is only recorded (SPEC §6)."""
        # ``check`` reports a failure, and the next call probes again.
        with suppress(StoreUnavailable):
            await self.database.ensure_ready()

    async def close(self) -> None:
        """Finish the writer's step in flight, fail what is still queued, release the
        connections. Like the engine, the store may be used again afterwards."""
        try:
            await self.writer.close()
        finally:
            await self.database.close()

    async def check(self) -> None:
        await self.database.check()

    async def add(self, room: str, message: ChatMessage) -> tuple[ChatMessage, bool]:
        """Queue the message for the writer; return once the batch holding it committed."""
        return await self.writer.submit(room, message)

    def submit(
        self, room: str, message: ChatMessage, *, into: AddFuture | None = None
    ) -> AddFuture:
        """Queue the message for the writer; the future is answered after its commit."""
        return self.writer.submit(room, message, into=into)

    async def get(self, room: str, chat_id: str) -> ChatMessage | None:
        if self.windows is not None:
            kept = self.windows.get(room, chat_id)
            if kept is not None:
                return kept
        return await self.database.get(room, chat_id)

    async def delete(self, room: str, chat_id: str) -> bool:
        return await self.writer.delete(room, chat_id)

    async def page(self, room: str, limit: int, before: str | None = None) -> ChatPage:
        windows = self.windows
        if windows is not None:
            if room not in windows:
                await self.writer.load(room)  # after the changes called before
            kept = windows.page(room, limit, before)
            if kept is not None:
                return kept
        return await self.database.page(room, limit, before)

    async def purge_older_than(self, cutoff_ms: int) -> int:
        """In batches of ``purge_batch``, each its own step of the writer."""
        purged = 0
        while True:
            deleted = await self.writer.purge(cutoff_ms, self._purge_batch)
            purged += deleted
            if deleted < self._purge_batch:
                return purged

    def invalidate(self, room: str) -> None:
        """Forget the room's window: the room closed, or its history changed elsewhere."""
        self.writer.forget(room)
