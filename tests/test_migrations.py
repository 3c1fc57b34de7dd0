"""Schema migrations: a fresh database and one of the first released schema reach the current one.

Each test runs on a SQLite file and on a scratch PostgreSQL database (skipped
without AGGREGATOR_TEST_POSTGRES_URL).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.engine import Engine
from sqlmodel import SQLModel
from test_store import scratch_database

from aggregator.cli import main
from aggregator.errors import StoreError
from aggregator.store import open_store
from aggregator.store.migrate import (
    alembic_config,
    current_revision,
    ensure_current,
    head_revision,
    upgrade,
)

T0 = datetime(2024, 8, 6, 12, tzinfo=UTC)


@pytest.fixture(params=["sqlite", "postgres"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with scratch_database(request.param, tmp_path) as found:
        yield found


@pytest.fixture
def engine(url: str) -> Iterator[Engine]:
    engine = create_engine(url)
    yield engine
    engine.dispose()


def differences(engine: Engine) -> list[object]:
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return list(compare_metadata(context, SQLModel.metadata))


def upgrade_to(engine: Engine, revision: str) -> None:
    with engine.begin() as connection:
        command.upgrade(alembic_config(connection), revision)


# The first released schema's rows, written with plain SQL as that version stored them.
FIRST_SCHEMA_ROWS = {
    "source": [
        "INSERT INTO source (id, name, url, enabled, in_config, language, tags, interval_s,"
        " title, site_url, created_at) VALUES (1, 'Kyiv Wire', 'http://kw.test/feed', true,"
        " true, 'uk', 'ukraine', 600, 'Kyiv Wire', 'http://kw.test/', :t)"
    ],
    "fetchstate": [
        "INSERT INTO fetchstate (source_id, status, etag, error_count, redirect_count,"
        " next_check_at, last_checked_at) VALUES (1, 'ok', '\"abc\"', 0, 0, :t, :t)"
    ],
    "story": [
        "INSERT INTO story (id, key, title, first_at, last_at, entry_count, source_count,"
        " updated_at, dirty) VALUES (1, '1', 'Troops cross into Kursk', :t, :t, 1, 1, :t, false)"
    ],
    "entry": [
        "INSERT INTO entry (id, source_id, key, url, canonical_url, title, summary, text,"
        " content_hash, first_seen_at, changed_at, sort_at, story_id, clustered)"
        " VALUES (1, 1, 'guid-1', 'http://kw.test/1', 'http://kw.test/1',"
        " 'Troops cross into Kursk', '<p>Report</p>', 'Report', 'h1', :t, :t, :t, 1, true)"
    ],
    "timelinestory": ["INSERT INTO timelinestory (timeline, story_id) VALUES ('kursk', 1)"],
    "publisheddocument": [
        "INSERT INTO publisheddocument (path, content_type, body, etag, updated_at)"
        " VALUES ('/index.html', 'text/html', :body, '\"e1\"', :t)"
    ],
}


def fill_first_schema(engine: Engine) -> None:
    with engine.begin() as connection:
        for statements in FIRST_SCHEMA_ROWS.values():
            for statement in statements:
                connection.execute(text(statement), {"t": T0, "body": b"<!DOCTYPE html>"})


def assert_first_data_intact(url: str) -> None:
    store = open_store(url, create=False)
    try:
        ensure_current(store.engine)
        [status] = store.source_statuses()
        assert (status.name, status.status, status.entries) == ("Kyiv Wire", "ok", 1)
        assert status.next_check_at == T0
        [story] = store.stories()
        assert (story.title, story.entry_count, story.revision) == (
            "Troops cross into Kursk",
            1,
            0,
        )
        [report] = store.story_entries([story.id])
        assert (report.title, report.outlet, report.language) == (
            "Troops cross into Kursk",
            "Kyiv Wire",
            "uk",
        )
        assert store.timeline_story_ids("kursk") == {1}
        document = store.document("/index.html")
        assert document is not None and document.body == b"<!DOCTYPE html>"
        # the new columns and tables work on the old rows
        assert [r.source_id for r in store.claim_due(T0, "w", lease_s=60, limit=5)] == [1]
        assert store.acquire_leadership("w", None, T0, lease_s=60) is not None
    finally:
        store.close()


def test_a_fresh_database_reaches_the_models_schema(engine: Engine) -> None:
    result = upgrade(engine)
    assert (result.before, result.after) == (None, head_revision())
    assert differences(engine) == [], "models and migrations agree"
    assert upgrade(engine).changed is False, "upgrading again does nothing"


def test_the_first_released_schema_upgrades_with_its_data(url: str, engine: Engine) -> None:
    upgrade_to(engine, "0001")
    fill_first_schema(engine)
    assert current_revision(engine) == "0001"
    with pytest.raises(StoreError, match="aggregator db upgrade"):
        ensure_current(engine)

    result = upgrade(engine)
    assert (result.before, result.after) == ("0001", head_revision())
    assert differences(engine) == []
    assert_first_data_intact(url)


def test_a_database_from_before_migrations_is_recognised(url: str, engine: Engine) -> None:
    # Databases made by the first release's create_all have no alembic_version table.
    upgrade_to(engine, "0001")
    fill_first_schema(engine)
    with engine.begin() as connection:
        connection.execute(text("DROP TABLE alembic_version"))
    assert current_revision(engine) == "0001"

    open_store(url).close()  # what a starting worker does
    assert current_revision(engine) == head_revision()
    assert_first_data_intact(url)


def test_every_revision_downgrades_and_upgrades_again(engine: Engine) -> None:
    upgrade(engine)
    with engine.begin() as connection:
        command.downgrade(alembic_config(connection), "base")
    assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
    upgrade(engine)
    assert differences(engine) == []


def test_workers_starting_together_migrate_once(engine: Engine) -> None:
    errors: list[BaseException] = []

    def start() -> None:
        try:
            upgrade(engine)
        except BaseException as exc:  # pragma: no cover - shown by the assertion
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    assert current_revision(engine) == head_revision()


def test_db_upgrade_command_and_refusal_to_run_on_an_old_schema(
    url: str, engine: Engine, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    upgrade_to(engine, "0001")
    config = tmp_path / "aggregator.toml"
    config.write_text(f'database_url = "{url}"\n[worker]\nmigrate_on_start = false\n')

    assert main(["--config", str(config), "sources", "list"]) == 1
    assert "aggregator db upgrade" in capsys.readouterr().err

    assert main(["--config", str(config), "db", "upgrade"]) == 0
    assert f"0001 -> {head_revision()}" in capsys.readouterr().out
    assert main(["--config", str(config), "db", "current"]) == 0
    assert head_revision() in capsys.readouterr().out
    assert main(["--config", str(config), "sources", "list"]) == 0
