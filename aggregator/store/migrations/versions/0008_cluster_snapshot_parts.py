"""Keep a snapshot of the clusterer as parts of a few megabytes, not one blob.

A snapshot is only a shortcut (a new leader can always replay the window), so
the snapshots saved as one blob are dropped, not converted.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

MOMENT = sa.DateTime(timezone=True)


def _header(*body: sa.Column) -> None:
    op.create_table(
        "clustersnapshot",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("fingerprint", sa.String(), nullable=False),
        sa.Column("created_at", MOMENT, nullable=False),
        sa.Column("latest_at", MOMENT, nullable=False),
        sa.Column("decisions", sa.Integer(), nullable=False),
        sa.Column("term", sa.Integer(), nullable=False),
        sa.Column("checksum", sa.String(), nullable=False),
        *body,
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_clustersnapshot_fingerprint", "clustersnapshot", ["fingerprint"])


def _drop_header() -> None:
    op.drop_index("ix_clustersnapshot_fingerprint", table_name="clustersnapshot")
    op.drop_table("clustersnapshot")


def upgrade() -> None:
    _drop_header()
    _header(sa.Column("size", sa.Integer(), nullable=False))
    op.create_table(
        "clustersnapshotpart",
        sa.Column("snapshot_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("checksum", sa.String(), nullable=False),
        sa.Column("body", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(["snapshot_id"], ["clustersnapshot.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("snapshot_id", "name", "seq"),
    )


def downgrade() -> None:
    op.drop_table("clustersnapshotpart")
    _drop_header()
    _header(sa.Column("body", sa.LargeBinary(), nullable=False))
