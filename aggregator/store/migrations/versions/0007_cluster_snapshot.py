"""Keep snapshots of the leader's clusterer, so a new leader need not replay the window.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

MOMENT = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "clustersnapshot",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("fingerprint", sa.String(), nullable=False),
        sa.Column("created_at", MOMENT, nullable=False),
        sa.Column("latest_at", MOMENT, nullable=False),
        sa.Column("decisions", sa.Integer(), nullable=False),
        sa.Column("term", sa.Integer(), nullable=False),
        sa.Column("checksum", sa.String(), nullable=False),
        sa.Column("body", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_clustersnapshot_fingerprint", "clustersnapshot", ["fingerprint"])


def downgrade() -> None:
    op.drop_index("ix_clustersnapshot_fingerprint", table_name="clustersnapshot")
    op.drop_table("clustersnapshot")
