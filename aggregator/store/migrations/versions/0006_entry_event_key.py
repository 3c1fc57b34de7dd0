"""Store the event each clustered entry belongs to inside its story.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Empty for entries clustered before: a replay decides their events again.
    with op.batch_alter_table("entry") as batch:
        batch.add_column(sa.Column("event_key", sa.String(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("entry") as batch:
        batch.drop_column("event_key")
