"""How the chat store is reached: database URLs, the engine, the migrations (SPEC §6, §8).

``DATABASE_URL`` maps to an async driver (``async_url``): SQLite by default, PostgreSQL
in production. ``make_engine`` gives the SQLAlchemy engine of the store's reads and of
the migrations, with its timeouts and durability settings; the batch writers
(``callroom.chat.sqlite_writer``, ``callroom.chat.pg_writer``) open connections of their
own with the same settings (``pg_connect_args``, and the SQLite PRAGMAs below).

Durability (SPEC §8 "nothing acknowledged is lost"): SQLite runs in WAL mode with
``synchronous=FULL``: every commit syncs the WAL, so an acknowledged message survives a
power cut or an OS crash, not only a process crash (``NORMAL`` would be durable against
a process crash only, and may lose the last commits on power loss). Transactions on
SQLite are explicit ``BEGIN`` ... ``COMMIT`` (the driver's own implicit transactions are
switched off), so a migration is atomic too. An in-memory SQLite database
(``sqlite://``) is not supported: the writer's connection would open a database of its
own.

Alembic owns the schema (``callroom.chat.migrations``), configured in code
(``alembic_config``, no ``alembic.ini``).
"""

from __future__ import annotations

import sqlite3
from functools import partial
from pathlib import Path
from typing import Any, Final

import aiosqlite
import asyncpg  # type: ignore[import-untyped]  # no stubs; only its exception classes are used
from alembic import command
from alembic.config import Config
from sqlalchemy import event
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from callroom.errors import ConfigError

CONNECT_TIMEOUT: Final = 3.0  # seconds to open a PostgreSQL connection
STATEMENT_TIMEOUT: Final = 5.0  # seconds a statement may run (SQLite: wait for a lock)
POOL_TIMEOUT: Final = 5.0  # seconds to wait for a free pooled connection
MIGRATIONS_DIR: Final = Path(__file__).parent / "migrations"

STORE_ERRORS: Final = (
    SQLAlchemyError,
    sqlite3.Error,
    OSError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
)
"""What "the store did not answer" looks like: driver errors wrapped by SQLAlchemy, pool
timeouts, refused or timed-out connects (OSError), asyncpg's own errors (at connect time
SQLAlchemy does not wrap them: a missing database, a refused login; the PostgreSQL batch
writer's are never wrapped), and the stdlib ``sqlite3`` errors of the SQLite batch
writer."""


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
        connect_args=pg_connect_args(connect_timeout, statement_timeout),
    )


def pg_connect_args(connect_timeout: float, statement_timeout: float) -> dict[str, Any]:
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


SQLITE_PRAGMAS: Final = (
    "PRAGMA journal_mode=WAL",  # stored in the file
    "PRAGMA synchronous=FULL",  # per connection: every commit syncs the WAL (SPEC §8)
)
"""Run on every SQLite connection, the engine's and the batch writer's."""


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
        for pragma in SQLITE_PRAGMAS:
            await connection.execute(pragma)
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


def upgrade_head(connection: Connection) -> None:
    """Migrate to the newest schema on ``connection``, in its transaction."""
    command.upgrade(alembic_config(connection.engine.url, connection), "head")


def describe(exc: BaseException) -> str:
    """A short reason for logs and ``last_error``: never the SQL parameters (chat text)."""
    if isinstance(exc, DBAPIError) and exc.orig is not None:
        return f"{type(exc.orig).__name__}: {exc.orig}"
    return f"{type(exc).__name__}: {exc}"
