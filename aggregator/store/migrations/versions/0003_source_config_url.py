"""Keep the config's URL of a source apart from the URL polled after a permanent redirect.

Revision ID: 0003
Revises: 0002
Create Date: 2024-08-13
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("source") as batch:
        batch.add_column(sa.Column("config_url", sa.String(), nullable=True))
    # Until now the polled URL was the config's, unless a redirect had been adopted
    # (and then undone at the next start); either way it is the best guess.
    op.execute("UPDATE source SET config_url = url")


def downgrade() -> None:
    with op.batch_alter_table("source") as batch:
        batch.drop_column("config_url")
