"""The lean durable write path of ``SqlChatHistory`` on SQLite (SPEC §8).

A group-commit batch is ONE call to a thread of its own: that thread owns a stdlib
``sqlite3`` connection to the store's file and runs the whole transaction there
(``BEGIN IMMEDIATE``, the multi-row ``INSERT ... ON CONFLICT DO NOTHING RETURNING``, the
``SELECT`` of the rows that were already there, ``COMMIT``; a rollback on any error) as
one synchronous function. Through SQLAlchemy and aiosqlite the same transaction took
three thread round trips and several times the CPU per commit, most of it statement
execution overhead and GIL hand-offs (docs/performance.md, "Micro-measurements"); here
it is one hop and plain SQL text with ``?``
parameters, compiled once by ``sqlite3``'s statement cache.

The connection has the durability settings of ``callroom.chat.sql.make_engine``: WAL,
``synchronous=FULL`` (every commit syncs the WAL before the caller hears of it), and a
busy timeout (``BEGIN IMMEDIATE`` waits that long for another writer's lock, then fails
with "database is locked"). Reads, deletes, purges and migrations stay on the SQLAlchemy
engine: WAL lets them read beside this writer, and writers serialize on SQLite's lock.

A connection that failed is closed; the next batch opens a new one (after the store's
probe found the store again). ``close`` closes the connection and ends the thread; the
writer may be used again afterwards (it starts a new thread).
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from functools import lru_cache
from typing import Final

from callroom.chat.base import ChatMessage
from callroom.errors import StoreUnavailable

ROWS_PER_INSERT: Final = 1000  # 6 parameters a row: far below SQLite's 32,766 variables

_COLUMNS: Final = "room, chat_id, client_id, display_name, timestamp, chat_content"
_SELECT_ONE: Final = (
    "SELECT client_id, display_name, timestamp, chat_content FROM chat_messages"
    " WHERE room = ? AND chat_id = ?"
)

Key = tuple[str, str]
"""(room, chat_id)"""
NewRow = tuple[str, str, str, str, int, str]
"""The columns of ``_COLUMNS``, in that order."""


@lru_cache(maxsize=64)
def _insert(rows: int) -> str:
    """The multi-row INSERT for ``rows`` rows (the history order follows the VALUES)."""
    values = ", ".join(["(?, ?, ?, ?, ?, ?)"] * rows)
    return (  # placeholders only: every value is a parameter
        f"INSERT INTO chat_messages ({_COLUMNS}) VALUES {values}"  # noqa: S608
        " ON CONFLICT (room, chat_id) DO NOTHING RETURNING room, chat_id"
    )


class SqliteBatchWriter:
    """Stores batches of rows in one transaction each, on a thread of its own."""

    def __init__(self, path: str, busy_timeout: float) -> None:
        self._path = path
        self._busy_timeout = busy_timeout
        self._executor: ThreadPoolExecutor | None = None
        self._connection: sqlite3.Connection | None = None  # used on the thread only

    async def write(self, rows: Sequence[NewRow]) -> tuple[set[Key], dict[Key, ChatMessage]]:
        """Insert ``rows`` (unique keys, in order) in one committed transaction.

        Returns the keys inserted and the stored message of every other key. Raises
        ``sqlite3.Error`` (or ``OSError``) when the store fails; nothing is then written.
        """
        if self._executor is None:
            self._executor = ThreadPoolExecutor(1, thread_name_prefix="chat-sqlite-writer")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._run, rows)

    async def close(self) -> None:
        """Close the connection and end the thread (after the batch it is running)."""
        executor, self._executor = self._executor, None
        if executor is None:
            return
        try:
            await asyncio.get_running_loop().run_in_executor(executor, self._disconnect)
        finally:
            executor.shutdown(wait=False)

    # --- on the writer thread -----------------------------------------------------------

    def _run(self, rows: Sequence[NewRow]) -> tuple[set[Key], dict[Key, ChatMessage]]:
        try:
            connection = self._connection
            if connection is None:
                connection = self._connect()
            return self._transaction(connection, rows)
        except (sqlite3.Error, OSError):
            self._disconnect()  # the next batch starts on a new connection
            raise

    def _connect(self) -> sqlite3.Connection:
        # ``isolation_level=None``: no implicit transactions, ``_transaction`` says BEGIN.
        connection = sqlite3.connect(self._path, timeout=self._busy_timeout, isolation_level=None)
        try:
            connection.execute("PRAGMA journal_mode=WAL")  # stored in the file
            connection.execute("PRAGMA synchronous=FULL")  # per connection
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

    def _transaction(
        self, connection: sqlite3.Connection, rows: Sequence[NewRow]
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
                existing[room, chat_id] = ChatMessage(chat_id, *found)
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
