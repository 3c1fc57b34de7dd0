"""Alembic's entry point: run the revisions on the connection `migrate.py` hands over.

Only online migrations exist: the connection, already inside the transaction the
whole upgrade runs in, arrives in `config.attributes["connection"]`.
"""

from __future__ import annotations

from alembic import context
from sqlmodel import SQLModel

import aggregator.store.models  # noqa: F401  (registers the tables for comparisons)

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=SQLModel.metadata,
    render_as_batch=True,  # SQLite alters tables by copying them
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
