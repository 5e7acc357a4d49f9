"""Every write of the chat history on SQLite, on a thread and a connection of its own (SPEC §8).

The store's writer (``callroom.chat.writer``) runs each change of the history here, one
at a time in its order: a group-commit batch of adds (``insert``), a ``delete``, a
retention ``purge`` batch. Each is ONE call to a thread that owns a stdlib ``sqlite3``
connection to the store's file and runs the whole transaction there as one synchronous
function (for a batch: ``BEGIN IMMEDIATE``, the multi-row ``INSERT ... ON CONFLICT DO
NOTHING RETURNING``, the ``SELECT`` of the rows that were already there, ``COMMIT``; a
rollback on any error). Through SQLAlchemy and aiosqlite the same transaction took three
thread round trips and several times the CPU per commit (docs/performance.md,
"Micro-measurements"), most of it statement execution
overhead and GIL hand-offs; here it is one hop and plain SQL text with ``?`` parameters,
compiled once by ``sqlite3``'s statement cache. The text is built from the one column
list (``callroom.chat.models``).

The connection has the durability settings of the engine (``callroom.chat.engine``): WAL,
``synchronous=FULL`` (every commit syncs the WAL before the caller hears of it), and a
busy timeout (a write waits that long for another writer's lock, then fails with
"database is locked"). Reads and migrations stay on the SQLAlchemy engine: WAL lets
them read beside this writer.

A connection that failed is closed; the next call opens a new one (after the store's
probe found the store again). ``close`` closes the connection and ends the thread; the
writer may be used again afterwards (it starts a new thread).
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from functools import lru_cache, partial
from typing import Final, TypeVar

from callroom.chat.base import ChatMessage
from callroom.chat.engine import SQLITE_PRAGMAS
from callroom.chat.models import KEY_COLUMNS, MESSAGE_COLUMNS, ROW_COLUMNS, Key, NewRow, message_of
from callroom.errors import StoreUnavailable

ROWS_PER_INSERT: Final = 1000  # 6 parameters a row: far below SQLite's 32,766 variables

_T = TypeVar("_T")
_KEY: Final = " AND ".join(f"{column} = ?" for column in KEY_COLUMNS)
# Placeholders only: every value is a parameter (hence the noqa on the f-strings).
_SELECT_ONE: Final = f"SELECT {', '.join(MESSAGE_COLUMNS)} FROM chat_messages WHERE {_KEY}"  # noqa: S608
_DELETE: Final = f"DELETE FROM chat_messages WHERE {_KEY}"  # noqa: S608
_PURGE: Final = (
    "DELETE FROM chat_messages WHERE id IN"
    " (SELECT id FROM chat_messages WHERE timestamp < ? LIMIT ?)"
)


@lru_cache(maxsize=64)
def _insert(rows: int) -> str:
    """The multi-row INSERT for ``rows`` rows (the history order follows the VALUES)."""
    row = f"({', '.join('?' * len(ROW_COLUMNS))})"
    return (
        f"INSERT INTO chat_messages ({', '.join(ROW_COLUMNS)})"  # noqa: S608
        f" VALUES {', '.join([row] * rows)}"
        f" ON CONFLICT ({', '.join(KEY_COLUMNS)}) DO NOTHING"
        f" RETURNING {', '.join(KEY_COLUMNS)}"
    )


class SqliteBatchWriter:
    """Runs each write of the history in one transaction, on a thread of its own."""

    def __init__(self, path: str, busy_timeout: float) -> None:
        self._path = path
        self._busy_timeout = busy_timeout
        self._executor: ThreadPoolExecutor | None = None
        self._connection: sqlite3.Connection | None = None  # used on the thread only

    async def insert(self, rows: Sequence[NewRow]) -> tuple[set[Key], dict[Key, ChatMessage]]:
        """Insert ``rows`` (unique keys, in order) in one committed transaction.

        Returns the keys inserted and the stored message of every other key. Raises
        ``sqlite3.Error`` (or ``OSError``) when the store fails; nothing is then written.
        """
        return await self._call(partial(self._insert_rows, rows))

    async def delete(self, room: str, chat_id: str) -> bool:
        """Remove the message; whether there was one."""
        return await self._call(partial(self._execute, _DELETE, (room, chat_id))) > 0

    async def purge(self, cutoff_ms: int, limit: int) -> int:
        """Remove at most ``limit`` messages older than ``cutoff_ms``; how many."""
        return await self._call(partial(self._execute, _PURGE, (cutoff_ms, limit)))

    async def close(self) -> None:
        """Close the connection and end the thread (after the call it is running)."""
        executor, self._executor = self._executor, None
        if executor is None:
            return
        try:
            await asyncio.get_running_loop().run_in_executor(executor, self._disconnect)
        finally:
            executor.shutdown(wait=False)

    async def _call(self, work: Callable[[sqlite3.Connection], _T]) -> _T:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(1, thread_name_prefix="chat-sqlite-writer")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._run, work)

    # --- on the writer thread -----------------------------------------------------------

    def _run(self, work: Callable[[sqlite3.Connection], _T]) -> _T:
        try:
            connection = self._connection
            if connection is None:
                connection = self._connect()
            return work(connection)
        except (sqlite3.Error, OSError):
            self._disconnect()  # the next call starts on a new connection
            raise

    def _connect(self) -> sqlite3.Connection:
        # ``isolation_level=None``: no implicit transactions; a statement alone is its
        # own transaction, and ``_insert_rows`` says BEGIN.
        connection = sqlite3.connect(self._path, timeout=self._busy_timeout, isolation_level=None)
        try:
            for pragma in SQLITE_PRAGMAS:
                connection.execute(pragma)
        except BaseException:
            connection.close()
            raise
        self._connection = connection
        return connection

    def _disconnect(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            with suppress(sqlite3.Error):
                connection.close()

    @staticmethod
    def _execute(sql: str, parameters: tuple[object, ...], connection: sqlite3.Connection) -> int:
        """One statement, its own transaction (committed, and synced, when it returns)."""
        return connection.execute(sql, parameters).rowcount

    def _insert_rows(
        self, rows: Sequence[NewRow], connection: sqlite3.Connection
    ) -> tuple[set[Key], dict[Key, ChatMessage]]:
        # IMMEDIATE: take the write lock first (waiting up to the busy timeout), so no
        # other writer can change a row between the INSERT and the SELECT below.
        connection.execute("BEGIN IMMEDIATE")
        try:
            inserted: set[Key] = set()
            for start in range(0, len(rows), ROWS_PER_INSERT):
                chunk = rows[start : start + ROWS_PER_INSERT]
                parameters = [value for row in chunk for value in row]
                inserted.update(connection.execute(_insert(len(chunk)), parameters).fetchall())
            existing: dict[Key, ChatMessage] = {}
            for room, chat_id, *_ in rows:
                if (room, chat_id) in inserted:
                    continue
                found = connection.execute(_SELECT_ONE, (room, chat_id)).fetchone()
                if found is None:  # pragma: no cover - the write lock rules it out
                    raise StoreUnavailable("store", "chat message changed concurrently, retry")
                existing[room, chat_id] = message_of(found)
            self._commit(connection)
        except BaseException:
            try:
                connection.execute("ROLLBACK")
            except sqlite3.Error:
                self._disconnect()  # closing rolls back whatever is left
            raise
        return inserted, existing

    def _commit(self, connection: sqlite3.Connection) -> None:
        connection.execute("COMMIT")
