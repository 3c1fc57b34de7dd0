"""Index entries by when they were first stored: retention counts their age from there.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_entry_first_seen_at", "entry", ["first_seen_at"])


def downgrade() -> None:
    op.drop_index("ix_entry_first_seen_at", table_name="entry")
