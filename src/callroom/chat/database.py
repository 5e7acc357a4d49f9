"""The chat database: each call one transaction, and whether the store is there (SPEC §6, §8).

``Database`` is what ``SqlChatHistory`` runs on SQLite or PostgreSQL: the reads (``get``,
``page``) through the SQLAlchemy engine (``callroom.chat.engine``), the writes
(``insert``, ``delete``, ``purge``, the ``Durable`` side of ``callroom.chat.writer``)
through the batch writer's own connection (``callroom.chat.sqlite_writer``,
``callroom.chat.pg_writer``), and the migrations (Alembic) through the engine again.
Only the store's writer calls the writes, one at a time in its order: the table is
written through one connection and one stack.

A store that is down (SPEC §3.3 ``unavailable``, §6): every call raises
``StoreUnavailable("store")`` within the connect timeout (3 s) or the statement timeout
(5 s) and leaves nothing half-written. After a failure the store is "not ready": the
next call probes it again by re-running the migrations (single-flight: callers that
queued behind a failed probe get its answer instead of piling up probes), and calls
within ``retry_interval`` of a failed probe fail at once instead of waiting for another
connect timeout. A ``check`` (``/readyz``) after that interval probes again, so the node
becomes ready by itself once the store is back.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from functools import partial
from typing import Final, TypeVar

import asyncpg  # type: ignore[import-untyped]
from alembic.util.exc import CommandError
from sqlalchemy import func, select, text
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from callroom.chat.base import ChatMessage, ChatPage
from callroom.chat.engine import (
    STORE_ERRORS,
    describe,
    make_engine,
    pg_connect_args,
    upgrade_head,
)
from callroom.chat.models import MESSAGE_COLUMNS, Key, chat_messages, message_of, new_row
from callroom.chat.pg_writer import PgBatchWriter
from callroom.chat.sqlite_writer import SqliteBatchWriter
from callroom.errors import StoreUnavailable

log = logging.getLogger(__name__)

PART: Final = "store"

_T = TypeVar("_T")
_MESSAGE: Final = tuple(chat_messages.c[column] for column in MESSAGE_COLUMNS)


class Database:
    """One SQLite file or PostgreSQL database of chat history (module docstring)."""

    def __init__(
        self,
        url: URL,
        *,
        retry_interval: float,
        connect_timeout: float,
        statement_timeout: float,
        on_failure: Callable[[], None] | None = None,
    ) -> None:
        """``url``: an async driver's (``callroom.chat.engine.async_url``).

        ``retry_interval``: seconds after a failed probe during which calls fail at once.
        ``on_failure()`` is told of every store error met (a failed transaction, group
        commit or reconnect probe; not the calls refused while the store is known down).
        """
        self.engine: AsyncEngine = make_engine(
            url, connect_timeout=connect_timeout, statement_timeout=statement_timeout
        )
        self.batch_writer: SqliteBatchWriter | PgBatchWriter
        if url.get_backend_name() == "sqlite":
            self.batch_writer = SqliteBatchWriter(url.database or "", statement_timeout)
        else:
            args, kwargs = self.engine.dialect.create_connect_args(url)
            kwargs.update(pg_connect_args(connect_timeout, statement_timeout))
            self.batch_writer = PgBatchWriter(partial(asyncpg.connect, *args, **kwargs))
        self._retry_interval = retry_interval
        self._on_failure = on_failure
        self._ready = False
        self._lock = asyncio.Lock()
        self.failed_probes = 0
        self._retry_at = 0.0
        self.last_error: str | None = None
        """Why the store is not ready (for logs and diagnostics), ``None`` when ready."""

    async def close(self) -> None:
        """Release the connections (nothing is in flight: the writer was closed first).
        Like the engine, the database may be used again afterwards (it reconnects)."""
        try:
            await self.batch_writer.close()
            await self.engine.dispose()
        finally:
            self._ready = False

    async def check(self) -> None:
        async with self._transaction() as conn:
            await conn.execute(text("SELECT 1"))

    # --- reads, on the engine --------------------------------------------------------------

    async def get(self, room: str, chat_id: str) -> ChatMessage | None:
        query = select(*_MESSAGE).where(
            chat_messages.c.room == room, chat_messages.c.chat_id == chat_id
        )
        async with self._transaction() as conn:
            row = (await conn.execute(query)).first()
        return None if row is None else message_of(row)

    async def page(self, room: str, limit: int, before: str | None = None) -> ChatPage:
        in_room = chat_messages.c.room == room
        query = select(*_MESSAGE).where(in_room).order_by(chat_messages.c.id.desc())
        if before is not None:
            # An unknown ``before`` makes the bound NULL: no row qualifies, an empty page.
            bound = select(chat_messages.c.id).where(in_room, chat_messages.c.chat_id == before)
            query = query.where(chat_messages.c.id < bound.scalar_subquery())
        count = select(func.count()).select_from(chat_messages).where(in_room)
        async with self._transaction() as conn:
            # One row past the limit tells whether older messages exist (hasMore).
            rows = (await conn.execute(query.limit(limit + 1))).all()
            total = (await conn.execute(count)).scalar_one()
        messages = [message_of(row) for row in reversed(rows[:limit])]
        return ChatPage(messages=messages, total=total, has_more=len(rows) > limit)

    # --- writes, on the batch writer's connection (``Durable``) --------------------------

    async def insert(
        self, adds: Sequence[tuple[str, ChatMessage]]
    ) -> tuple[set[Key], dict[Key, ChatMessage]]:
        rows = [new_row(room, message) for room, message in adds]
        return await self._write(partial(self.batch_writer.insert, rows))

    async def delete(self, room: str, chat_id: str) -> bool:
        return await self._write(partial(self.batch_writer.delete, room, chat_id))

    async def purge(self, cutoff_ms: int, limit: int) -> int:
        return await self._write(partial(self.batch_writer.purge, cutoff_ms, limit))

    async def _write(self, call: Callable[[], Awaitable[_T]]) -> _T:
        await self.ensure_ready()
        try:
            return await call()
        except STORE_ERRORS as exc:
            self._failed(exc)
            raise StoreUnavailable(PART, "chat store unavailable") from exc

    # --- reaching the store ----------------------------------------------------------------

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[AsyncConnection]:
        """One transaction; a store error rolls it back and becomes ``StoreUnavailable``."""
        await self.ensure_ready()
        try:
            async with self.engine.begin() as conn:
                yield conn
        except STORE_ERRORS as exc:
            self._failed(exc)
            raise StoreUnavailable(PART, "chat store unavailable") from exc

    async def ensure_ready(self) -> None:
        """Migrate (and so reach the store) unless that already worked since the last failure."""
        if self._ready:
            return
        if time.monotonic() < self._retry_at:
            raise StoreUnavailable(PART, "chat store unavailable")
        failed_before = self.failed_probes
        async with self._lock:
            if self._ready:
                return
            if self.failed_probes != failed_before:
                # A probe failed while this call waited for it: share its answer.
                raise StoreUnavailable(PART, "chat store unavailable")
            try:
                async with self.engine.begin() as conn:
                    await conn.run_sync(upgrade_head)
            except (*STORE_ERRORS, CommandError) as exc:
                self.failed_probes += 1
                self._failed(exc)
                raise StoreUnavailable(PART, "chat store unavailable") from exc
            if self.last_error is not None:
                log.warning("chat store is back")
            self._ready = True
            self.last_error = None

    def _failed(self, exc: BaseException) -> None:
        if self._on_failure is not None:
            self._on_failure()
        if self._ready or self.last_error is None:
            log.warning("chat store unavailable: %s", describe(exc))
        self._ready = False
        self._retry_at = time.monotonic() + self._retry_interval
        self.last_error = describe(exc)
