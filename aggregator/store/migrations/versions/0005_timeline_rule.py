"""Remember the rule each configured timeline's stories were collected by.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # No rows: every configured timeline is collected again at the first publish,
    # which also drops the stories a narrowed rule kept until now.
    op.create_table(
        "timelinerule",
        sa.Column("timeline", sa.String(), nullable=False),
        sa.Column("rule", sa.String(), nullable=False),
        sa.PrimaryKeyConstraint("timeline"),
    )


def downgrade() -> None:
    op.drop_table("timelinerule")
