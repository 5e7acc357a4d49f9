"""The durable chat history: SQLite (the default) or PostgreSQL (SPEC §3.1, §4, §6, §8).

One table, ``chat_messages`` (``callroom.chat.models``), ordered by its identity ``id``
(insertion order). Alembic migrations run on ``start`` and again whenever the store has to
be reached anew (``callroom.chat.migrations``).

Durability (SPEC §8 "nothing acknowledged is lost"): ``add`` commits before it returns.
SQLite runs in WAL mode with ``synchronous=FULL``: every commit syncs the WAL, so an
acknowledged message survives a power cut or an OS crash, not only a process crash
(``NORMAL`` would be durable against a process crash only, and may lose the last commits
on power loss). Transactions on SQLite are explicit ``BEGIN`` ... ``COMMIT`` (the driver's
own implicit transactions are switched off), so a migration is atomic too.

Group commit: a commit costs one sync of the log (about a millisecond), so one
transaction per message would cap a store at about a thousand adds a second, however
many rooms chat at once. ``add`` therefore joins a queue, and one writer task per store
stores what is queued in ONE transaction (at most ``max_batch`` messages) and then answers
each caller with its own result; every caller still returns only after the commit that
holds its message. The writer takes whatever is queued when it is free, but starts a
batch no sooner than ``commit_interval`` (10 ms) after the previous batch started, unless
``max_batch`` adds are already waiting: an add after a quiet spell commits at once, and
under load the store makes at most 100 commits a second, each holding what queued since
the last. Why: a commit has a fixed cost (its WAL sync and locks, plus the hand-off to
the writer thread) besides the cost of each row, and at the rates where one core
saturates, commits that took only what queued during the previous one held only a few
messages. The price is at most 10 ms more latency per message
under load (docs/performance.md, finding 10). The writer starts with the first add after
the queue went empty and ends when it is empty again, so an idle store runs no task.

- One batch is one multi-row ``INSERT ... ON CONFLICT (room, chat_id) DO NOTHING
  RETURNING room, chat_id`` in queue order (the identity ``id``, hence the history order,
  follows the queue), then one ``SELECT`` of the rows that were already there. Each caller
  gets what a lone ``add`` would have given it, in queue order: a second add of the same
  (room, chat_id) in one batch is decided against the first, as a later add would be.
- On SQLite a batch is ONE call to a writer thread that owns a ``sqlite3`` connection of
  its own and runs the whole transaction there (``callroom.chat.sqlite_writer``): with one
  sender every commit holds one message, and through SQLAlchemy and aiosqlite a commit
  took three thread round trips and several times the CPU (docs/performance.md).
  Everything else (reads, deletes, purges, migrations, probes) stays on the engine. An
  in-memory SQLite database (``sqlite://``) is not supported: the writer's connection
  would open a database of its own. On PostgreSQL a batch runs likewise on an ``asyncpg``
  connection of its own, outside the engine's pool (``callroom.chat.pg_writer``).
- A batch that fails (store down, timeout, failed commit) stores none of its messages,
  and every one of its callers gets ``StoreUnavailable("store")``.
- Adds of one ``SqlChatHistory`` commit in the order they were called (the queue is
  filled before ``add`` first suspends, and batches commit one after the other):
  ``adds_commit_in_call_order``. ``CachedChatHistory`` relies on it to let one room's
  concurrent adds share a transaction (``callroom.chat.cached``).
- ``close`` lets the batch in flight finish (its callers get their real results) and fails
  the adds still queued with ``StoreUnavailable("store")``; an add during ``close`` fails
  at once.

A store that is down (SPEC §3.3 ``unavailable``, §6): every operation raises
``StoreUnavailable("store")`` within the connect timeout (3 s) or the statement timeout
(5 s) and leaves nothing half-written (each operation is one transaction). After a
failure the store is "not ready": the next call probes it again by re-running the
migrations (single-flight: callers that queued behind a failed probe get its answer
instead of piling up probes), and calls within ``retry_interval`` of a failed probe fail at
once instead of waiting for another connect timeout. A ``check`` (``/readyz``) after that
interval probes again, so the node becomes ready by itself once the store is back.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, ClassVar, Final

import aiosqlite
import asyncpg  # type: ignore[import-untyped]  # no stubs; only its exception classes are used
from alembic import command
from alembic.config import Config
from alembic.util.exc import CommandError
from sqlalchemy import Row, Select, delete, event, func, select, text
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from callroom.chat.base import AddFuture, ChatIdTaken, ChatMessage, ChatPage
from callroom.chat.models import chat_messages
from callroom.chat.pg_writer import PgBatchWriter
from callroom.chat.sqlite_writer import Key, NewRow, SqliteBatchWriter
from callroom.errors import ConfigError, StoreUnavailable

log = logging.getLogger(__name__)

PART: Final = "store"
CONNECT_TIMEOUT: Final = 3.0  # seconds to open a PostgreSQL connection
STATEMENT_TIMEOUT: Final = 5.0  # seconds a statement may run (SQLite: wait for a lock)
POOL_TIMEOUT: Final = 5.0  # seconds to wait for a free pooled connection
MAX_BATCH: Final = 500  # messages per group-commit transaction
# Seconds from the start of one group commit to the start of the next (module docstring).
COMMIT_INTERVAL: Final = 0.01
MIGRATIONS_DIR: Final = Path(__file__).parent / "migrations"

# What "the store did not answer" looks like: driver errors wrapped by SQLAlchemy, pool
# timeouts, refused or timed-out connects (OSError), and asyncpg's own errors at connect
# time, which SQLAlchemy does not wrap (a missing database, a refused login), and the
# stdlib ``sqlite3`` errors of the SQLite batch writer (``callroom.chat.sqlite_writer``).
_STORE_ERRORS: Final = (
    SQLAlchemyError,
    sqlite3.Error,
    OSError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
)

_COLUMNS: Final = (
    chat_messages.c.chat_id,
    chat_messages.c.client_id,
    chat_messages.c.display_name,
    chat_messages.c.timestamp,
    chat_messages.c.chat_content,
)


def async_url(database_url: str) -> URL:
    """``DATABASE_URL`` (SPEC §6) as the URL of an async driver.

    ``sqlite:///path`` → ``sqlite+aiosqlite``; ``postgresql://`` or ``postgres://`` →
    ``postgresql+asyncpg`` (a libpq ``sslmode`` becomes asyncpg's ``ssl``). Anything else
    raises ``ConfigError("DATABASE_URL")``.
    """
    try:
        url = make_url(database_url)
    except ArgumentError:
        raise ConfigError("DATABASE_URL", "is not a database URL") from None
    if url.drivername in ("sqlite", "sqlite+aiosqlite"):
        return url.set(drivername="sqlite+aiosqlite")
    if url.drivername in ("postgresql", "postgres", "postgresql+asyncpg"):
        url = url.set(drivername="postgresql+asyncpg")
        if "sslmode" in url.query:
            query = dict(url.query)
            query["ssl"] = query.pop("sslmode")
            url = url.set(query=query)
        return url
    raise ConfigError("DATABASE_URL", "must be a sqlite:/// path or a postgresql:// URL")


def make_engine(
    database_url: str | URL,
    *,
    connect_timeout: float = CONNECT_TIMEOUT,
    statement_timeout: float = STATEMENT_TIMEOUT,
) -> AsyncEngine:
    """An engine with the timeouts and durability settings of this module's docstring."""
    url = async_url(database_url) if isinstance(database_url, str) else database_url
    if url.get_backend_name() == "sqlite":
        engine = create_async_engine(
            url,
            pool_pre_ping=True,
            pool_timeout=POOL_TIMEOUT,
            async_creator=partial(_connect_sqlite, url.database or "", statement_timeout),
        )
        event.listen(engine.sync_engine, "begin", _sqlite_on_begin)
        return engine
    return create_async_engine(
        url,
        pool_pre_ping=True,
        pool_timeout=POOL_TIMEOUT,
        connect_args=_pg_connect_args(connect_timeout, statement_timeout),
    )


def _pg_connect_args(connect_timeout: float, statement_timeout: float) -> dict[str, Any]:
    """``asyncpg.connect``'s timeouts, for the engine and the batch writer alike."""
    return {
        "timeout": connect_timeout,
        # The server cancels a statement after the timeout; the client gives up a
        # second later even when the server does not answer at all.
        "command_timeout": statement_timeout + 1,
        "server_settings": {
            "statement_timeout": str(int(statement_timeout * 1000)),
            "application_name": "callroom",
        },
    }


async def _connect_sqlite(path: str, busy_timeout: float) -> aiosqlite.Connection:
    connection = aiosqlite.connect(
        path,
        # How long a writer waits for another writer's lock.
        timeout=busy_timeout,
        # No implicit transactions from the driver: ``_sqlite_on_begin`` emits BEGIN, so DDL
        # and DML share one real transaction (SQLAlchemy's documented aiosqlite recipe).
        isolation_level=None,
    )
    # As SQLAlchemy's own aiosqlite connect does: a connection that was never closed (a
    # crash) must not keep the process alive at exit.
    connection._thread.daemon = True
    await connection
    try:
        await connection.execute("PRAGMA journal_mode=WAL")  # stored in the file
        await connection.execute("PRAGMA synchronous=FULL")  # per connection
    except BaseException:
        await connection.close()  # a failed connect must not leave its thread behind
        raise
    return connection


def _sqlite_on_begin(connection: Connection) -> None:
    connection.exec_driver_sql("BEGIN")


def alembic_config(database_url: str | URL, connection: Connection | None = None) -> Config:
    """Alembic's configuration, built in code (no ``alembic.ini``).

    With ``connection``, the migrations run on it, inside its transaction (``env.py``).
    """
    url = async_url(database_url) if isinstance(database_url, str) else database_url
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    # ConfigParser interpolates "%": a percent-encoded password must be escaped.
    rendered = url.render_as_string(hide_password=False)
    config.set_main_option("sqlalchemy.url", rendered.replace("%", "%%"))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def _describe(exc: BaseException) -> str:
    """A short reason for logs and ``last_error``: never the SQL parameters (chat text)."""
    if isinstance(exc, DBAPIError) and exc.orig is not None:
        return f"{type(exc.orig).__name__}: {exc.orig}"
    return f"{type(exc).__name__}: {exc}"


@dataclass(eq=False, slots=True)
class _QueuedAdd:
    """One ``add`` waiting for the writer; ``future`` gets its result."""

    room: str
    message: ChatMessage
    future: AddFuture

    @property
    def key(self) -> tuple[str, str]:
        return self.room, self.message.chat_id


_Outcome = tuple[ChatMessage, bool] | Exception


class SqlChatHistory:
    """``ChatHistory`` on SQLite or PostgreSQL (see the module docstring)."""

    adds_commit_in_call_order: ClassVar[bool] = True
    """Concurrent ``add`` calls on one object commit in the order they were called."""

    def __init__(
        self,
        database_url: str,
        *,
        retry_interval: float = 1.0,
        purge_batch: int = 10_000,
        max_batch: int = MAX_BATCH,
        commit_interval: float = COMMIT_INTERVAL,
        connect_timeout: float = CONNECT_TIMEOUT,
        statement_timeout: float = STATEMENT_TIMEOUT,
        on_commit: Callable[[int, float], None] | None = None,
        on_failure: Callable[[], None] | None = None,
    ) -> None:
        """``retry_interval``: seconds after a failed probe during which calls fail at once.

        ``purge_batch``: rows deleted per transaction by ``purge_older_than``, so a first
        purge of a large history never runs into the statement timeout.
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
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        if commit_interval < 0:
            raise ValueError("commit_interval must not be negative")
        self._url = async_url(database_url)
        self._engine = make_engine(
            self._url, connect_timeout=connect_timeout, statement_timeout=statement_timeout
        )
        self._batch_writer: SqliteBatchWriter | PgBatchWriter
        if self._url.get_backend_name() == "sqlite":
            self._batch_writer = SqliteBatchWriter(self._url.database or "", statement_timeout)
        else:
            args, kwargs = self._engine.dialect.create_connect_args(self._url)
            kwargs.update(_pg_connect_args(connect_timeout, statement_timeout))
            self._batch_writer = PgBatchWriter(partial(asyncpg.connect, *args, **kwargs))
        self._retry_interval = retry_interval
        self._purge_batch = purge_batch
        self._max_batch = max_batch
        self._commit_interval = commit_interval
        self._next_batch_at = 0.0  # ``time.monotonic()`` before which no batch starts
        self._pause: asyncio.Future[None] | None = None  # the writer's wait for that time
        self._on_commit = on_commit
        self._on_failure = on_failure
        self._queue: deque[_QueuedAdd] = deque()
        self._writer: asyncio.Task[None] | None = None
        self._closing = False
        self._ready = False
        self._lock = asyncio.Lock()
        self._failed_probes = 0
        self._retry_at = 0.0
        self.last_error: str | None = None
        """Why the store is not ready (for logs and diagnostics), ``None`` when ready."""

    @property
    def engine(self) -> AsyncEngine:
        return self._engine

    async def start(self) -> None:
        """Connect and migrate; a store that is down is only recorded (SPEC §6)."""
        # ``check`` reports a failure, and the next call probes again.
        with suppress(StoreUnavailable):
            await self._ensure_ready()

    async def close(self) -> None:
        """Finish the batch in flight, fail the adds still queued, release the connections.

        Like the engine, the store may be used again afterwards (it reconnects).
        """
        self._closing = True
        if self._pause is not None:
            _wake(self._pause)  # the adds still queued fail now, not after the interval
        try:
            if self._writer is not None:
                # The writer stops after its batch and fails what is still queued.
                # ``wait`` and not ``await``: a cancelled ``close`` must not cancel the
                # writer in the middle of a commit.
                await asyncio.wait((self._writer,))
            await self._batch_writer.close()
            await self._engine.dispose()
        finally:
            self._closing = False
        self._ready = False

    async def check(self) -> None:
        async with self._transaction() as conn:
            await conn.execute(text("SELECT 1"))

    async def add(self, room: str, message: ChatMessage) -> tuple[ChatMessage, bool]:
        """Queue the message for the writer; return once the batch holding it committed."""
        return await self.submit(room, message)

    def submit(
        self, room: str, message: ChatMessage, *, into: AddFuture | None = None
    ) -> AddFuture:
        """Queue the message for the writer; the future is answered after its commit.

        The message is queued before this returns: that is what makes the adds of this
        object commit in the order they were called (``adds_commit_in_call_order``).
        """
        future = into if into is not None else asyncio.get_running_loop().create_future()
        if self._closing:
            _settle(future, StoreUnavailable(PART, "chat store closed"))
            return future
        self._queue.append(_QueuedAdd(room, message, future))
        if self._pause is not None and len(self._queue) >= self._max_batch:
            _wake(self._pause)  # a full batch waits for nothing
        if self._writer is None:
            writer = asyncio.create_task(self._write_queued(), name="chat-store-writer")
            writer.add_done_callback(self._writer_done)
            self._writer = writer
        # A caller that gives up cancels the future: the writer skips it unless its
        # batch has already been taken.
        return future

    async def get(self, room: str, chat_id: str) -> ChatMessage | None:
        async with self._transaction() as conn:
            row = (await conn.execute(self._select_one(room, chat_id))).first()
        return None if row is None else _message(row)

    async def delete(self, room: str, chat_id: str) -> bool:
        statement = delete(chat_messages).where(
            chat_messages.c.room == room, chat_messages.c.chat_id == chat_id
        )
        async with self._transaction() as conn:
            return (await conn.execute(statement)).rowcount > 0

    async def page(self, room: str, limit: int, before: str | None = None) -> ChatPage:
        in_room = chat_messages.c.room == room
        query = select(*_COLUMNS).where(in_room).order_by(chat_messages.c.id.desc())
        if before is not None:
            # An unknown ``before`` makes the bound NULL: no row qualifies, an empty page.
            bound = select(chat_messages.c.id).where(in_room, chat_messages.c.chat_id == before)
            query = query.where(chat_messages.c.id < bound.scalar_subquery())
        count = select(func.count()).select_from(chat_messages).where(in_room)
        async with self._transaction() as conn:
            # One row past the limit tells whether older messages exist (hasMore).
            rows = (await conn.execute(query.limit(limit + 1))).all()
            total = (await conn.execute(count)).scalar_one()
        messages = [_message(row) for row in reversed(rows[:limit])]
        return ChatPage(messages=messages, total=total, has_more=len(rows) > limit)

    async def purge_older_than(self, cutoff_ms: int) -> int:
        purged = 0
        while True:
            batch = (
                select(chat_messages.c.id)
                .where(chat_messages.c.timestamp < cutoff_ms)
                .limit(self._purge_batch)
            )
            statement = delete(chat_messages).where(chat_messages.c.id.in_(batch))
            async with self._transaction() as conn:
                deleted = (await conn.execute(statement)).rowcount
            purged += deleted
            if deleted < self._purge_batch:
                return purged

    def invalidate(self, room: str) -> None:
        """Nothing is kept in memory in front of the database."""

    async def _write_queued(self) -> None:
        """The writer: one transaction per batch of queued adds, until the queue is empty."""
        batch: list[_QueuedAdd] = []
        try:
            while self._queue and not self._closing:
                wait = self._next_batch_at - time.monotonic()
                if wait > 0 and len(self._queue) < self._max_batch:
                    await self._gather(wait)
                    if self._closing:
                        break  # as the loop's test would (nothing left the queue)
                self._next_batch_at = time.monotonic() + self._commit_interval
                batch = self._take_batch()
                if not batch:
                    continue  # every caller taken had given up
                outcomes: Sequence[_Outcome]
                started = time.perf_counter()
                try:
                    outcomes = await self._store_batch(batch)
                except Exception as exc:
                    if not isinstance(exc, StoreUnavailable):
                        # Not a store failure but a bug: its callers must not hang.
                        log.error("chat store batch failed", exc_info=exc)
                    outcomes = [_unavailable(exc) for _ in batch]
                else:
                    if self._on_commit is not None:
                        self._on_commit(len(batch), time.perf_counter() - started)
                for queued, outcome in zip(batch, outcomes, strict=True):
                    _settle(queued.future, outcome)
                batch = []
        finally:
            # Stopped by ``close``, or cancelled (the event loop is closing) in the middle
            # of ``batch``: nobody will store what is left.
            self._writer_stopped(batch)

    async def _gather(self, seconds: float) -> None:
        """Let adds queue for ``seconds``, or until ``close`` or a full batch ends the wait."""
        loop = asyncio.get_running_loop()
        pause = self._pause = loop.create_future()
        timer = loop.call_later(seconds, _wake, pause)
        try:
            await pause
        finally:
            timer.cancel()
            self._pause = None

    def _writer_done(self, writer: asyncio.Task[None]) -> None:
        """A writer cancelled before it ever ran skipped its ``finally``: do it here."""
        if self._writer is writer:
            self._writer_stopped([])

    def _writer_stopped(self, batch: Sequence[_QueuedAdd]) -> None:
        self._writer = None
        for queued in (*batch, *self._queue):
            _settle(queued.future, StoreUnavailable(PART, "chat store stopped"))
        self._queue.clear()

    def _take_batch(self) -> list[_QueuedAdd]:
        """The oldest queued adds whose callers still wait, at most ``max_batch``."""
        batch: list[_QueuedAdd] = []
        while self._queue and len(batch) < self._max_batch:
            queued = self._queue.popleft()
            if not queued.future.done():
                batch.append(queued)
        return batch

    async def _store_batch(self, batch: Sequence[_QueuedAdd]) -> list[_Outcome]:
        """Store ``batch`` in one transaction; the outcome of each add, in batch order."""
        # The first add of a (room, chat_id) in queue order is the one that may insert; a
        # later one in the batch is decided against it, as if it had come in a later batch.
        first: dict[Key, _QueuedAdd] = {}
        for queued in batch:
            first.setdefault(queued.key, queued)
        inserted, existing = await self._insert(first)
        outcomes: list[_Outcome] = []
        for queued in batch:
            if first[queued.key] is queued and queued.key in inserted:
                outcomes.append((queued.message, True))
                continue
            winner = first[queued.key].message if queued.key in inserted else existing[queued.key]
            if winner.client_id != queued.message.client_id:
                outcomes.append(ChatIdTaken(queued.message.chat_id))
            else:
                outcomes.append((winner, False))  # a retry: the stored message
        return outcomes

    async def _insert(
        self, first: dict[Key, _QueuedAdd]
    ) -> tuple[set[Key], dict[Key, ChatMessage]]:
        """The batch as one transaction of the batch writer (``sqlite_writer``, ``pg_writer``)."""
        await self._ensure_ready()
        rows: list[NewRow] = [
            (
                queued.room,
                queued.message.chat_id,
                queued.message.client_id,
                queued.message.display_name,
                queued.message.timestamp,
                queued.message.chat_content,
            )
            for queued in first.values()
        ]
        try:
            return await self._batch_writer.write(rows)
        except _STORE_ERRORS as exc:
            self._failed(exc)
            raise StoreUnavailable(PART, "chat store unavailable") from exc

    @staticmethod
    def _select_one(room: str, chat_id: str) -> Select[Any]:
        return select(*_COLUMNS).where(
            chat_messages.c.room == room, chat_messages.c.chat_id == chat_id
        )

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[AsyncConnection]:
        """One transaction; a store error rolls it back and becomes ``StoreUnavailable``."""
        await self._ensure_ready()
        try:
            async with self._engine.begin() as conn:
                yield conn
        except _STORE_ERRORS as exc:
            self._failed(exc)
            raise StoreUnavailable(PART, "chat store unavailable") from exc

    async def _ensure_ready(self) -> None:
        """Migrate (and so reach the store) unless that already worked since the last failure."""
        if self._ready:
            return
        if time.monotonic() < self._retry_at:
            raise StoreUnavailable(PART, "chat store unavailable")
        failed_before = self._failed_probes
        async with self._lock:
            if self._ready:
                return
            if self._failed_probes != failed_before:
                # A probe failed while this call waited for it: share its answer.
                raise StoreUnavailable(PART, "chat store unavailable")
            try:
                async with self._engine.begin() as conn:
                    await conn.run_sync(_upgrade_head)
            except (*_STORE_ERRORS, CommandError) as exc:
                self._failed_probes += 1
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
            log.warning("chat store unavailable: %s", _describe(exc))
        self._ready = False
        self._retry_at = time.monotonic() + self._retry_interval
        self.last_error = _describe(exc)


def _unavailable(cause: BaseException) -> StoreUnavailable:
    """A ``StoreUnavailable`` of its own for each caller of a failed batch."""
    error = StoreUnavailable(PART, "chat store unavailable")
    error.__cause__ = cause
    return error


def _settle(future: AddFuture, outcome: _Outcome) -> None:
    if future.done():
        return  # the caller gave up (cancelled)
    if isinstance(outcome, Exception):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)


def _upgrade_head(connection: Connection) -> None:
    command.upgrade(alembic_config(connection.engine.url, connection), "head")


def _message(row: Row[Any]) -> ChatMessage:
    return ChatMessage(
        chat_id=row.chat_id,
        client_id=row.client_id,
        display_name=row.display_name,
        timestamp=row.timestamp,
        chat_content=row.chat_content,
    )


def _wake(pause: asyncio.Future[None]) -> None:
    if not pause.done():
        pause.set_result(None)
