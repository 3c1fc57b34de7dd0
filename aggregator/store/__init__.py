"""The store: every table and query lives here; ORM rows never leave this package."""

from aggregator.store.database import (
    EntryView,
    IngestCounts,
    SourceStatus,
    Store,
    StoryView,
    Term,
    open_store,
)

__all__ = ["EntryView", "IngestCounts", "SourceStatus", "Store", "StoryView", "Term", "open_store"]
