"""The lean durable write path of ``SqlChatHistory`` on PostgreSQL (SPEC §8).

A group-commit batch runs on an ``asyncpg`` connection of the writer's own, outside
SQLAlchemy: ``BEGIN``, one ``INSERT ... SELECT FROM unnest(...) ON CONFLICT DO NOTHING
RETURNING`` (one prepared statement whatever the batch size, cached by asyncpg), the
``SELECT`` of the rows that were already there (only when there are some), ``COMMIT``.
Through SQLAlchemy's pool (a pre-ping on every checkout) and its execution layer the same
transaction took several times the CPU (docs/performance.md, "Micro-measurements").

The connection has the engine's connect arguments (connect timeout, server-side
``statement_timeout``, client-side ``command_timeout``). A connection that failed, or whose
batch was cancelled, is dropped; the next batch opens a new one.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from contextlib import suppress
from typing import Any, Final

import asyncpg  # type: ignore[import-untyped]
from asyncpg import Connection

from callroom.chat.base import ChatMessage
from callroom.chat.sqlite_writer import Key, NewRow
from callroom.errors import StoreUnavailable

CLOSE_TIMEOUT: Final = 3.0  # seconds for a graceful close

_INSERT: Final = (
    "INSERT INTO chat_messages (room, chat_id, client_id, display_name, timestamp, chat_content)"
    " SELECT room, chat_id, client_id, display_name, timestamp, chat_content"
    " FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[], $6::text[])"
    " WITH ORDINALITY AS new (room, chat_id, client_id, display_name, timestamp,"
    " chat_content, position)"
    " ORDER BY position"  # the ids, hence the history order, follow the batch
    " ON CONFLICT (room, chat_id) DO NOTHING RETURNING room, chat_id"
)
_SELECT_TAKEN: Final = (
    "SELECT room, chat_id, client_id, display_name, timestamp, chat_content"
    " FROM chat_messages WHERE (room, chat_id) IN (SELECT * FROM unnest($1::text[], $2::text[]))"
)


class PgBatchWriter:
    """Stores batches of rows in one transaction each, on a connection of its own."""

    def __init__(self, connect: Callable[[], Awaitable[Any]]) -> None:
        self._connect = connect
        self._connection: Any = None  # an asyncpg Connection

    async def write(self, rows: Sequence[NewRow]) -> tuple[set[Key], dict[Key, ChatMessage]]:
        """Insert ``rows`` (unique keys, in order) in one committed transaction.

        Returns the keys inserted and the stored message of every other key. Raises the
        driver's error (or ``OSError``) when the store fails; nothing is then written.
        """
        if self._connection is None or self._connection.is_closed():
            # (closed: the server ended it since the last batch, as the pool's pre-ping
            # would find; a new connection, so that this batch need not fail for it)
            self._connection = await self._connect()
        connection = self._connection
        try:
            return await self._transaction(connection, rows)
        except BaseException:
            if connection.is_closed() or connection.is_in_transaction():
                # Broken, or cancelled in the middle: start the next batch afresh.
                self._connection = None
                connection.terminate()
            raise

    async def close(self) -> None:
        """Close the connection (nothing is in flight: the store's ``close`` waited)."""
        connection, self._connection = self._connection, None
        if connection is not None:
            # asyncpg aborts the connection itself when a graceful close fails.
            with suppress(asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
                await connection.close(timeout=CLOSE_TIMEOUT)

    async def _transaction(
        self, connection: Connection, rows: Sequence[NewRow]
    ) -> tuple[set[Key], dict[Key, ChatMessage]]:
        transaction = connection.transaction()
        await transaction.start()
        try:
            columns = [list(column) for column in zip(*rows, strict=True)]
            records = await self._insert(connection, columns)
            inserted: set[Key] = {(record[0], record[1]) for record in records}
            existing: dict[Key, ChatMessage] = {}
            taken = [row for row in rows if (row[0], row[1]) not in inserted]
            if taken:
                rooms = [row[0] for row in taken]
                chat_ids = [row[1] for row in taken]
                for record in await connection.fetch(_SELECT_TAKEN, rooms, chat_ids):
                    existing[record[0], record[1]] = ChatMessage(*record[1:])
                if len(existing) < len(taken):  # pragma: no cover - deleted in between
                    # Rolls the whole batch back; its callers may retry safely.
                    raise StoreUnavailable("store", "chat message changed concurrently, retry")
            await self._commit(transaction, connection)
        except Exception:
            if not connection.is_closed():
                await transaction.rollback()  # if that fails too, ``write`` drops it
            raise
        return inserted, existing

    async def _insert(self, connection: Connection, columns: list[list[Any]]) -> list[Any]:
        return await connection.fetch(_INSERT, *columns)  # type: ignore[no-any-return]

    async def _commit(self, transaction: Any, connection: Connection) -> None:
        await transaction.commit()
