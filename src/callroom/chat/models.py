"""The chat history schema (SPEC §3.1 chat rows, §4 messages route): its one column list.

``chat_messages`` below is where the table's columns are written; everything else
derives from it: the SQLAlchemy statements of ``callroom.chat.database``, the SQL text the
batch writers run on their raw connections (``callroom.chat.sqlite_writer``,
``callroom.chat.pg_writer``), and the rows they exchange (``ROW_COLUMNS``, ``NewRow``).
The message columns are those of ``ChatMessage``, in its field order (checked below at
import), so a row converts to a message positionally.

``metadata`` is Alembic's ``target_metadata``: ``callroom.chat.admin.check_models`` fails
when this module and ``migrations/versions`` disagree. The migrations are written
history and keep their own copy of the columns as they were at each revision (a
migration is never rewritten): a change here is a new revision there.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import fields
from operator import attrgetter
from typing import Any, Final

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

from callroom.chat.base import ChatMessage

metadata = MetaData()

KEY_COLUMNS: Final = ("room", "chat_id")
"""What is unique in the table (``Key``): a chatId within a room."""

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
    UniqueConstraint(*KEY_COLUMNS, name="uq_chat_messages_room_chat_id"),
    # Paging: newest first within a room, by id.
    Index("ix_chat_messages_room_id", "room", "id"),
    # Retention purge (CHAT_RETENTION_DAYS) deletes by age without a full scan.
    Index("ix_chat_messages_timestamp", "timestamp"),
    sqlite_autoincrement=True,
)

MESSAGE_COLUMNS: Final = tuple(field.name for field in fields(ChatMessage))
"""The columns of a message, in ``ChatMessage``'s field order."""

ROW_COLUMNS: Final = ("room", *MESSAGE_COLUMNS)
"""The columns a writer inserts: the room, then the message (``NewRow``)."""

# Every column but the identity is a message column or the room; a column added to the
# table without its ``ChatMessage`` field (or the other way round) fails here, at import.
if {column.name for column in chat_messages.columns} != {"id", *ROW_COLUMNS}:
    raise RuntimeError("chat_messages and ChatMessage disagree on the columns")

Key = tuple[str, str]
"""The values of ``KEY_COLUMNS``: (room, chat_id)."""

NewRow = tuple[str, str, str, str, int, str]
"""A row to insert: the values of ``ROW_COLUMNS``, in that order."""


_message_values: Final = attrgetter(*MESSAGE_COLUMNS)


def new_row(room: str, message: ChatMessage) -> NewRow:
    """The row that stores ``message`` in ``room``."""
    return (room, *_message_values(message))


def message_of(values: Sequence[Any]) -> ChatMessage:
    """The message of a row's ``MESSAGE_COLUMNS`` values, in that order."""
    return ChatMessage(*values)
