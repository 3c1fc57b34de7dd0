"""Shared fixtures: a real store on a SQLite file and, when configured, on PostgreSQL."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest
from sqlmodel import SQLModel

from aggregator.cluster import StoryAssigner
from aggregator.store import Store, open_store
from aggregator.types import ClusterDoc

POSTGRES_ENV = "AGGREGATOR_TEST_POSTGRES_URL"


def postgres_url() -> str:
    url = os.environ.get(POSTGRES_ENV, "")
    if not url:
        pytest.skip(f"{POSTGRES_ENV} is not set; .ci/run sets it to the local PostgreSQL")
    return url


def fresh_postgres_store() -> Store:
    store = open_store(postgres_url(), create=False)
    SQLModel.metadata.drop_all(store.engine)
    SQLModel.metadata.create_all(store.engine)
    return store


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """A real, empty store: a SQLite file, then the PostgreSQL server."""
    if request.param == "sqlite":
        store = open_store(f"sqlite:///{tmp_path / 'test.db'}")
    else:
        store = fresh_postgres_store()
    yield store
    store.close()


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[Store]:
    store = open_store(f"sqlite:///{tmp_path / 'test.db'}")
    yield store
    store.close()


@pytest.fixture
def embed_calls(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """The doc ids of every batch a clusterer embeds itself (the leader's, in the worker)."""
    calls: list[list[str]] = []
    real = StoryAssigner.embed

    def counting(self: StoryAssigner, docs: Sequence[ClusterDoc]) -> np.ndarray:
        calls.append([d.id for d in docs])
        return real(self, docs)

    monkeypatch.setattr(StoryAssigner, "embed", counting)
    return calls
