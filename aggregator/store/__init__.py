"""The store: every table and query lives here; ORM rows never leave this package."""

from aggregator.store.database import EntryView, IngestCounts, SourceStatus, Store, open_store

__all__ = ["EntryView", "IngestCounts", "SourceStatus", "Store", "open_store"]
