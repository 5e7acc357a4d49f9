"""Alembic environment of the chat history store, configured in code (no ``alembic.ini``).

``callroom.chat.engine.alembic_config`` builds the configuration. Three ways in:

- ``SqlChatHistory.start`` passes its own connection in ``config.attributes["connection"]``
  (inside a transaction of the running event loop): the migrations run on it.
- ``callroom.chat.admin`` (the ``callroom db`` commands) passes none: this module opens an
  async engine on ``sqlalchemy.url`` and runs them under ``asyncio.run``.
- Offline mode (``sql=True``) prints the SQL for a DBA to review instead.

On PostgreSQL a transaction-scoped advisory lock makes nodes that start together migrate
one at a time (SPEC §7); the loser then finds the schema at head and does nothing.
"""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy import text
from sqlalchemy.engine import Connection

from callroom.chat.engine import make_engine
from callroom.chat.models import metadata

# An arbitrary constant shared by every callroom node ("call" in ASCII).
MIGRATION_LOCK_ID = 0x63616C6C


def run_migrations(connection: Connection) -> None:
    """Run on a connection that is already in a transaction: the caller commits."""
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": MIGRATION_LOCK_ID})
    context.configure(connection=connection, target_metadata=metadata)
    with context.begin_transaction():
        context.run_migrations()


async def run_migrations_async(url: str) -> None:
    engine = make_engine(url)
    try:
        async with engine.begin() as connection:
            await connection.run_sync(run_migrations)
    finally:
        await engine.dispose()


def run_migrations_offline(url: str) -> None:
    context.configure(url=url, target_metadata=metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def main() -> None:
    url = context.config.get_main_option("sqlalchemy.url")
    assert url is not None, "alembic_config() always sets sqlalchemy.url"
    connection = context.config.attributes.get("connection")
    if context.is_offline_mode():
        run_migrations_offline(url)
    elif connection is None:
        asyncio.run(run_migrations_async(url))
    else:
        run_migrations(connection)


main()
