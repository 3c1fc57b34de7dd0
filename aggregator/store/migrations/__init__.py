"""Alembic revisions of the store's schema; `aggregator.store.migrate` runs them."""
