"""The chat history schema (SPEC §3.1 chat rows, §4 messages route).

``metadata`` is Alembic's ``target_metadata``: ``callroom.chat.admin.check_models`` fails
when this module and ``migrations/versions`` disagree. Change both together.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    Identity,
    Index,
    Integer,
    MetaData,
    Table,
    Text,
    UniqueConstraint,
)

metadata = MetaData()

chat_messages = Table(
    "chat_messages",
    metadata,
    # Insertion order is the history order (pages are cut by id, SPEC §3.1 "oldest first").
    # SQLite only auto-assigns an INTEGER PRIMARY KEY (a rowid alias), not a BIGINT one;
    # AUTOINCREMENT keeps ids from being reused after the newest row is deleted.
    Column(
        "id",
        BigInteger().with_variant(Integer(), "sqlite"),
        Identity(),
        primary_key=True,
    ),
    Column("room", Text(), nullable=False),  # "{kind}:{roomId}"
    Column("chat_id", Text(), nullable=False),
    Column("client_id", Text(), nullable=False),
    Column("display_name", Text(), nullable=False),
    Column("timestamp", BigInteger(), nullable=False),  # ms since epoch, server clock
    Column("chat_content", Text(), nullable=False),
    # A chatId is unique in a room: the idempotent retry of SPEC §3.1 add_chat rests on it.
    UniqueConstraint("room", "chat_id", name="uq_chat_messages_room_chat_id"),
    # Paging: newest first within a room, by id.
    Index("ix_chat_messages_room_id", "room", "id"),
    # Retention purge (CHAT_RETENTION_DAYS) deletes by age without a full scan.
    Index("ix_chat_messages_timestamp", "timestamp"),
    sqlite_autoincrement=True,
)
