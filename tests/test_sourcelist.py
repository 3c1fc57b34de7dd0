"""`aggregator sources add/remove/import/export` edit the settings file and keep its comments."""

from __future__ import annotations

import os
import stat
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


BUNDLED = Path(__file__).resolve().parent.parent / "config" / "aggregator.toml"


def test_add_takes_an_interval_with_units_as_the_file_does(config: Path) -> None:
    args = ["--config", str(config), "sources", "add", "Meduza", "https://meduza.example/rss"]
    assert main([*args, "--interval", "30s"]) == 0
    assert load_settings(config, environ={}).sources[-1].interval == 30.0
    assert main(["--config", str(config), "sources", "remove", "Meduza"]) == 0
    assert main([*args, "--interval", "2h"]) == 0
    assert load_settings(config, environ={}).sources[-1].interval == 7200.0


@pytest.mark.parametrize("interval", ["inf", "nan", "-5", "0", "soon"])
def test_add_refuses_an_interval_the_file_refuses(
    config: Path, capsys: pytest.CaptureFixture[str], interval: str
) -> None:
    args = ["--config", str(config), "sources", "add", "X", "https://x.example/feed"]
    assert main([*args, "--interval", interval]) == 2
    err = capsys.readouterr().err
    assert err.startswith('error: --interval: expected seconds or a duration like "15m"')
    assert config.read_text() == CONFIG


def test_add_leaves_one_blank_line_before_the_new_block(tmp_path: Path) -> None:
    path = tmp_path / "aggregator.toml"
    original = BUNDLED.read_text()
    path.write_text(original)
    assert main(["--config", str(path), "sources", "add", "Meduza", "https://meduza.example/"]) == 0
    text = path.read_text()
    assert text == original + '\n[[sources]]\nname = "Meduza"\nurl = "https://meduza.example/"\n'
    # and removing it gives back the file byte for byte
    assert main(["--config", str(path), "sources", "remove", "Meduza"]) == 0
    assert path.read_text() == original


def test_remove_takes_only_the_blocks_lines(tmp_path: Path) -> None:
    path = tmp_path / "aggregator.toml"
    path.write_text(
        '# Sources\n[[sources]]\nname = "A"\nurl = "http://a.example/"\n\n'
        '[[sources]]\nname = "B"  # keep\nurl = "http://b.example/"\n\n'
        '# Timelines follow\n[[timelines]]\nname = "k"\nmatch = ["K"]\n'
    )
    assert main(["--config", str(path), "sources", "remove", "B"]) == 0
    assert path.read_text() == (
        '# Sources\n[[sources]]\nname = "A"\nurl = "http://a.example/"\n\n'
        '# Timelines follow\n[[timelines]]\nname = "k"\nmatch = ["K"]\n'
    )
    assert main(["--config", str(path), "sources", "add", "C", "http://c.example/"]) == 0
    assert path.read_text() == (
        '# Sources\n[[sources]]\nname = "A"\nurl = "http://a.example/"\n\n'
        '[[sources]]\nname = "C"\nurl = "http://c.example/"\n\n'
        '# Timelines follow\n[[timelines]]\nname = "k"\nmatch = ["K"]\n'
    )


@pytest.mark.parametrize("verb", ["add", "remove", "import"])
def test_edits_keep_the_files_mode_and_owner(config: Path, tmp_path: Path, verb: str) -> None:
    config.write_text(
        config.read_text().replace("[fetch]", 'database_url = "sqlite:///x.db"\n[fetch]')
    )
    config.chmod(0o600)
    owner = (1234, 1234) if os.getuid() == 0 else (os.getuid(), os.getgid())
    if os.getuid() == 0:
        os.chown(config, *owner)
    opml = tmp_path / "feeds.opml"
    opml.write_text(
        '<opml version="2.0"><body><outline text="N" xmlUrl="https://n.example/"/></body></opml>'
    )
    commands = {
        "add": ["sources", "add", "N", "https://n.example/"],
        "remove": ["sources", "remove", "Kyiv Wire"],
        "import": ["sources", "import", str(opml)],
    }
    assert main(["--config", str(config), *commands[verb]]) == 0
    status = config.stat()
    assert stat.S_IMODE(status.st_mode) == 0o600
    assert (status.st_uid, status.st_gid) == owner
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp left


def test_an_edit_through_a_symlink_edits_the_target(config: Path, tmp_path: Path) -> None:
    link = tmp_path / "link.toml"
    link.symlink_to(config)
    assert main(["--config", str(link), "sources", "add", "N", "https://n.example/"]) == 0
    assert link.is_symlink()
    assert "https://n.example/" in config.read_text()


def test_import_refuses_every_bad_outline_naming_its_line(
    config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    opml = tmp_path / "feeds.opml"
    opml.write_text(
        '<opml version="2.0"><body>\n'
        '<outline text="A" xmlUrl="https://a.example/" interval="inf"/>\n'
        '<outline text="B" xmlUrl="https://b.example/"/>\n'
        '<outline text="C" xmlUrl="javascript:alert(1)"/>\n'
        "</body></opml>"
    )
    assert main(["--config", str(config), "sources", "import", str(opml)]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert [line.split(": ")[1:3] for line in lines] == [
        [f"{opml}:2", "interval"],
        [f"{opml}:4", "xmlUrl"],
    ]
    assert config.read_text() == CONFIG
