"""`aggregator sources add/remove/import/export` edit the settings file and keep its comments."""

from __future__ import annotations

from pathlib import Path

import pytest

from aggregator.cli import main
from aggregator.settings import load_settings

CONFIG = """# my sources
[fetch]
concurrency = 4  # keep it low

[[sources]]
name = "Kyiv Wire"   # the wire
url = "https://kyiv.example/feed"
"""


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "aggregator.toml"
    path.write_text(CONFIG)
    return path


def test_add_and_remove_keep_comments(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["--config", str(config), "sources", "add", "Meduza", "https://meduza.example/rss"]
    assert main([*args, "--language", "ru", "--interval", "600", "--tag", "russia"]) == 0
    settings = load_settings(config, environ={})
    added = settings.sources[-1]
    assert (added.name, added.language, added.interval, added.tags) == (
        "Meduza",
        "ru",
        600.0,
        ("russia",),
    )
    assert "# the wire" in config.read_text() and "# keep it low" in config.read_text()
    assert main(["--config", str(config), "sources", "remove", "Kyiv Wire"]) == 0
    assert [s.name for s in load_settings(config, environ={}).sources] == ["Meduza"]


def test_add_refuses_a_bad_url_and_leaves_the_file(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--config", str(config), "sources", "add", "X", "ftp://x/feed"]) == 2
    assert "not an http or https URL" in capsys.readouterr().err
    assert config.read_text() == CONFIG


def test_remove_unknown_names_the_command_to_list(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--config", str(config), "sources", "remove", "Nope"]) == 2
    assert "sources list" in capsys.readouterr().err


def test_opml_export_then_import_round_trips(config: Path, tmp_path: Path) -> None:
    opml = tmp_path / "feeds.opml"
    assert main(["--config", str(config), "sources", "export", str(opml)]) == 0
    other = tmp_path / "other.toml"
    other.write_text("")
    assert main(["--config", str(other), "sources", "import", str(opml)]) == 0
    imported = load_settings(other, environ={}).sources
    assert [(s.name, s.url) for s in imported] == [("Kyiv Wire", "https://kyiv.example/feed")]
    # importing again adds nothing twice
    assert main(["--config", str(other), "sources", "import", str(opml)]) == 0
    assert len(load_settings(other, environ={}).sources) == 1
