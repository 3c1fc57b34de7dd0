"""The first released schema: sources, fetch state, entries, stories, timelines, documents.

Databases created before migrations existed (by `create_all`) have exactly these
tables; `migrate.py` stamps them with this revision instead of creating anything.

Revision ID: 0001
Revises:
Create Date: 2024-08-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

MOMENT = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "source",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("url", sa.String(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("in_config", sa.Boolean(), nullable=False),
        sa.Column("language", sa.String(), nullable=True),
        sa.Column("tags", sa.String(), nullable=False),
        sa.Column("interval_s", sa.Float(), nullable=True),
        sa.Column("title", sa.String(), nullable=True),
        sa.Column("site_url", sa.String(), nullable=True),
        sa.Column("created_at", MOMENT, nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_source_name", "source", ["name"], unique=True)

    op.create_table(
        "story",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("key", sa.String(), nullable=False),
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column("first_at", MOMENT, nullable=False),
        sa.Column("last_at", MOMENT, nullable=False),
        sa.Column("entry_count", sa.Integer(), nullable=False),
        sa.Column("source_count", sa.Integer(), nullable=False),
        sa.Column("updated_at", MOMENT, nullable=False),
        sa.Column("dirty", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("key"),
    )
    op.create_index("ix_story_last_at", "story", ["last_at"])
    op.create_index("ix_story_dirty", "story", ["dirty"])

    op.create_table(
        "publisheddocument",
        sa.Column("path", sa.String(), nullable=False),
        sa.Column("content_type", sa.String(), nullable=False),
        sa.Column("body", sa.LargeBinary(), nullable=False),
        sa.Column("etag", sa.String(), nullable=False),
        sa.Column("updated_at", MOMENT, nullable=False),
        sa.PrimaryKeyConstraint("path"),
    )

    op.create_table(
        "entry",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("source_id", sa.Integer(), nullable=False),
        sa.Column("key", sa.String(), nullable=False),
        sa.Column("url", sa.String(), nullable=False),
        sa.Column("canonical_url", sa.String(), nullable=False),
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column("summary", sa.Text(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("author", sa.String(), nullable=True),
        sa.Column("language", sa.String(), nullable=True),
        sa.Column("content_hash", sa.String(), nullable=False),
        sa.Column("published_at", MOMENT, nullable=True),
        sa.Column("updated_at", MOMENT, nullable=True),
        sa.Column("first_seen_at", MOMENT, nullable=False),
        sa.Column("changed_at", MOMENT, nullable=False),
        sa.Column("sort_at", MOMENT, nullable=False),
        sa.Column("story_id", sa.Integer(), nullable=True),
        sa.Column("duplicate_of", sa.Integer(), nullable=True),
        sa.Column("clustered", sa.Boolean(), nullable=False),
        sa.Column("embedding", sa.LargeBinary(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.ForeignKeyConstraint(["source_id"], ["source.id"]),
        sa.ForeignKeyConstraint(["story_id"], ["story.id"]),
        sa.UniqueConstraint("source_id", "key", name="uq_entry_source_key"),
    )
    for column in (
        "story_id",
        "canonical_url",
        "source_id",
        "duplicate_of",
        "sort_at",
        "clustered",
    ):
        op.create_index(f"ix_entry_{column}", "entry", [column])

    op.create_table(
        "fetchstate",
        sa.Column("source_id", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column("etag", sa.String(), nullable=True),
        sa.Column("last_modified", sa.String(), nullable=True),
        sa.Column("body_hash", sa.String(), nullable=True),
        sa.Column("last_http_status", sa.Integer(), nullable=True),
        sa.Column("last_error_code", sa.String(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("error_count", sa.Integer(), nullable=False),
        sa.Column("ttl_s", sa.Float(), nullable=True),
        sa.Column("last_checked_at", MOMENT, nullable=True),
        sa.Column("last_success_at", MOMENT, nullable=True),
        sa.Column("next_check_at", MOMENT, nullable=True),
        sa.Column("redirect_url", sa.String(), nullable=True),
        sa.Column("redirect_count", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("source_id"),
        sa.ForeignKeyConstraint(["source_id"], ["source.id"]),
    )
    op.create_index("ix_fetchstate_next_check_at", "fetchstate", ["next_check_at"])

    op.create_table(
        "timelinestory",
        sa.Column("timeline", sa.String(), nullable=False),
        sa.Column("story_id", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("timeline", "story_id"),
        sa.ForeignKeyConstraint(["story_id"], ["story.id"]),
    )


def downgrade() -> None:
    for table in ("timelinestory", "fetchstate", "entry", "publisheddocument", "story", "source"):
        op.drop_table(table)
