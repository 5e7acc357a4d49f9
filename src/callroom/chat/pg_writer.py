"""Every write of the chat history on PostgreSQL, on a connection of its own (SPEC §8).

The store's writer (``callroom.chat.writer``) runs each change of the history here, one
at a time in its order, on an ``asyncpg`` connection of this writer's own, outside
SQLAlchemy: a group-commit batch of adds (``insert``: ``BEGIN``, one ``INSERT ... SELECT
FROM unnest(...) ON CONFLICT DO NOTHING RETURNING``, one prepared statement whatever the
batch size, cached by asyncpg, the ``SELECT`` of the rows that were already there (only
when there are some), ``COMMIT``), a ``delete``, a retention ``purge`` batch (one
statement each, its own transaction). Through SQLAlchemy's pool (a pre-ping on every
checkout) and its execution layer a batch took several times the CPU (docs/performance.md,
"Micro-measurements").
The SQL text is built from the one column list (``callroom.chat.models``).

The connection has the engine's connect arguments (connect timeout, server-side
``statement_timeout``, client-side ``command_timeout``). A connection that failed, or whose
call was cancelled, is dropped; the next call opens a new one.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from contextlib import suppress
from typing import Any, Final, TypeVar

import asyncpg  # type: ignore[import-untyped]
from asyncpg import Connection
from sqlalchemy.dialects.postgresql.base import PGDialect

from callroom.chat.base import ChatMessage
from callroom.chat.models import (
    KEY_COLUMNS,
    ROW_COLUMNS,
    Key,
    NewRow,
    chat_messages,
    message_of,
)
from callroom.errors import StoreUnavailable

CLOSE_TIMEOUT: Final = 3.0  # seconds for a graceful close

_T = TypeVar("_T")


def _array_of(column: str) -> str:
    """The PostgreSQL array type of a column, from the table (``TEXT[]``, ``BIGINT[]``)."""
    dialect = PGDialect()  # type: ignore[no-untyped-call]  # (untyped in SQLAlchemy)
    return f"{chat_messages.c[column].type.compile(dialect=dialect)}[]"


_ROW: Final = ", ".join(ROW_COLUMNS)
_KEY: Final = ", ".join(KEY_COLUMNS)
_UNNEST_ROWS: Final = ", ".join(
    f"${n}::{_array_of(column)}" for n, column in enumerate(ROW_COLUMNS, 1)
)
_UNNEST_KEYS: Final = ", ".join(
    f"${n}::{_array_of(column)}" for n, column in enumerate(KEY_COLUMNS, 1)
)
# Placeholders only: every value is a parameter (hence the noqa on the f-strings).
_INSERT: Final = (
    f"INSERT INTO chat_messages ({_ROW}) SELECT {_ROW}"  # noqa: S608
    f" FROM unnest({_UNNEST_ROWS}) WITH ORDINALITY AS new ({_ROW}, position)"
    " ORDER BY position"  # the ids, hence the history order, follow the batch
    f" ON CONFLICT ({_KEY}) DO NOTHING RETURNING {_KEY}"
)
_SELECT_TAKEN: Final = (
    f"SELECT {_ROW} FROM chat_messages"  # noqa: S608
    f" WHERE ({_KEY}) IN (SELECT * FROM unnest({_UNNEST_KEYS}))"
)
_DELETE: Final = "DELETE FROM chat_messages WHERE " + " AND ".join(  # noqa: S608
    f"{column} = ${n}" for n, column in enumerate(KEY_COLUMNS, 1)
)
_PURGE: Final = (
    "DELETE FROM chat_messages WHERE id IN"
    " (SELECT id FROM chat_messages WHERE timestamp < $1 LIMIT $2)"
)


class PgBatchWriter:
    """Runs each write of the history in one transaction, on a connection of its own."""

    def __init__(self, connect: Callable[[], Awaitable[Any]]) -> None:
        self._connect = connect
        self._connection: Any = None  # an asyncpg Connection

    async def insert(self, rows: Sequence[NewRow]) -> tuple[set[Key], dict[Key, ChatMessage]]:
        """Insert ``rows`` (unique keys, in order) in one committed transaction.

        Returns the keys inserted and the stored message of every other key. Raises the
        driver's error (or ``OSError``) when the store fails; nothing is then written.
        """
        return await self._call(lambda connection: self._transaction(connection, rows))

    async def delete(self, room: str, chat_id: str) -> bool:
        """Remove the message; whether there was one."""
        return await self._call(lambda connection: _deleted(connection, _DELETE, room, chat_id)) > 0

    async def purge(self, cutoff_ms: int, limit: int) -> int:
        """Remove at most ``limit`` messages older than ``cutoff_ms``; how many."""
        return await self._call(lambda connection: _deleted(connection, _PURGE, cutoff_ms, limit))

    async def close(self) -> None:
        """Close the connection (nothing is in flight: the store's ``close`` waited)."""
        connection, self._connection = self._connection, None
        if connection is not None:
            # asyncpg aborts the connection itself when a graceful close fails.
            with suppress(asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
                await connection.close(timeout=CLOSE_TIMEOUT)

    async def _call(self, work: Callable[[Connection], Awaitable[_T]]) -> _T:
        if self._connection is None or self._connection.is_closed():
            # (closed: the server ended it since the last call, as the pool's pre-ping
            # would find; a new connection, so that this call need not fail for it)
            self._connection = await self._connect()
        connection = self._connection
        try:
            return await work(connection)
        except BaseException:
            if connection.is_closed() or connection.is_in_transaction():
                # Broken, or cancelled in the middle: start the next call afresh.
                self._connection = None
                connection.terminate()
            raise

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
                    message = message_of(record[1:])
                    existing[record[0], message.chat_id] = message
                if len(existing) < len(taken):  # pragma: no cover - deleted in between
                    # Rolls the whole batch back; its callers may retry safely.
                    raise StoreUnavailable("store", "chat message changed concurrently, retry")
            await self._commit(transaction, connection)
        except Exception:
            if not connection.is_closed():
                await transaction.rollback()  # if that fails too, ``_call`` drops it
            raise
        return inserted, existing

    async def _insert(self, connection: Connection, columns: list[list[Any]]) -> list[Any]:
        return await connection.fetch(_INSERT, *columns)  # type: ignore[no-any-return]

    async def _commit(self, transaction: Any, connection: Connection) -> None:
        await transaction.commit()


async def _deleted(connection: Connection, sql: str, *arguments: object) -> int:
    """Run a DELETE (its own transaction); how many rows it removed."""
    status: str = await connection.execute(sql, *arguments)  # "DELETE <count>"
    return int(status.rsplit(" ", 1)[1])
