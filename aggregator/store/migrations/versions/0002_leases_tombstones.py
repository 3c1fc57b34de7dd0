"""Several workers and retention: source leases, the leader row, tombstones, story revisions.

Revision ID: 0002
Revises: 0001
Create Date: 2024-08-12
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

MOMENT = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("fetchstate") as batch:
        batch.add_column(sa.Column("lease_owner", sa.String(), nullable=True))
        batch.add_column(sa.Column("lease_until", MOMENT, nullable=True))
    with op.batch_alter_table("story") as batch:
        # Existing stories start at revision 0, as new ones do.
        batch.add_column(sa.Column("revision", sa.Integer(), nullable=False, server_default="0"))

    op.create_table(
        "tombstone",
        sa.Column("source_id", sa.Integer(), nullable=False),
        sa.Column("key", sa.String(), nullable=False),
        sa.Column("removed_at", MOMENT, nullable=False),
        sa.PrimaryKeyConstraint("source_id", "key"),
        sa.ForeignKeyConstraint(["source_id"], ["source.id"]),
    )
    op.create_table(
        "leader",
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("owner", sa.String(), nullable=True),
        sa.Column("term", sa.Integer(), nullable=False),
        sa.Column("until", MOMENT, nullable=True),
        sa.PrimaryKeyConstraint("name"),
    )


def downgrade() -> None:
    op.drop_table("leader")
    op.drop_table("tombstone")
    with op.batch_alter_table("story") as batch:
        batch.drop_column("revision")
    with op.batch_alter_table("fetchstate") as batch:
        batch.drop_column("lease_until")
        batch.drop_column("lease_owner")
