"""Create chat_messages (SPEC §3.1 chat rows, §4 messages route).

Revision ID: 0001
Revises:
Create Date: 2025-11-26
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "chat_messages",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            sa.Identity(),
            primary_key=True,
        ),
        sa.Column("room", sa.Text(), nullable=False),
        sa.Column("chat_id", sa.Text(), nullable=False),
        sa.Column("client_id", sa.Text(), nullable=False),
        sa.Column("display_name", sa.Text(), nullable=False),
        sa.Column("timestamp", sa.BigInteger(), nullable=False),
        sa.Column("chat_content", sa.Text(), nullable=False),
        sa.UniqueConstraint("room", "chat_id", name="uq_chat_messages_room_chat_id"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_chat_messages_room_id", "chat_messages", ["room", "id"])
    op.create_index("ix_chat_messages_timestamp", "chat_messages", ["timestamp"])


def downgrade() -> None:
    op.drop_index("ix_chat_messages_timestamp", table_name="chat_messages")
    op.drop_index("ix_chat_messages_room_id", table_name="chat_messages")
    op.drop_table("chat_messages")
