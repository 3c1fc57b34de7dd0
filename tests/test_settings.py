"""The settings file: defaults, overrides and errors that name file, key and line."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from aggregator.cli import main
from aggregator.errors import ConfigError
from aggregator.settings import documented_settings, load_settings, parse_settings

ROOT = Path(__file__).resolve().parent.parent
GOOD = """
database_url = "sqlite:///x.db"

[fetch]
concurrency = 4

[[sources]]
name = "Kyiv Wire"
url = "https://example.org/feed.xml"
interval = "15m"
language = "uk"
tags = ["ukraine"]

[[timelines]]
name = "kursk"
title = "Kursk"
match = ["Kursk", "Курськ"]
"""


def test_bundled_config_is_valid() -> None:
    settings = load_settings(ROOT / "config" / "aggregator.toml", environ={})
    assert settings.sources, "the bundled config lists the demo outlets"
    assert any(t.name == "kursk" for t in settings.timelines)


def test_values_are_read_and_typed() -> None:
    settings = parse_settings(GOOD, file="a.toml", environ={})
    assert settings.fetch.concurrency == 4
    assert settings.sources[0].interval == 900.0
    assert settings.sources[0].tags == ("ukraine",)
    assert settings.timelines[0].match == ("Kursk", "Курськ")
    assert settings.resolved_database_url == "sqlite:///x.db"


def test_environment_overrides_the_file() -> None:
    settings = parse_settings(
        GOOD,
        environ={
            "AGGREGATOR_DATABASE_URL": "postgresql+psycopg://db/agg",
            "AGGREGATOR_FETCH__CONCURRENCY": "9",
            "AGGREGATOR_SERVER__ENABLED": "false",
        },
    )
    assert settings.database_url == "postgresql+psycopg://db/agg"
    assert settings.fetch.concurrency == 9
    assert settings.server.enabled is False


@pytest.mark.parametrize(
    ("text", "key", "line", "reason"),
    [
        ("[fetch]\nconcurency = 3\n", "fetch.concurency", 2, "unknown key"),
        ('[fetch]\nconcurrency = "many"\n', "fetch.concurrency", 2, "expected a whole number"),
        ('[[sources]]\nname = "a"\nurl = "ftp://x/feed"\n', "sources[0].url", 3, "not an http"),
        ('[[sources]]\nname = "a"\n', "sources[0]", 1, "missing required key 'url'"),
        (
            '[[sources]]\nname = "a"\nurl = "http://x/f"\nintervall = 5\n',
            "sources[0].intervall",
            4,
            "unknown key",
        ),
        ('[cluster]\nmethod = "magic"\n', "cluster.method", 2, "expected one of"),
        ('[[timelines]]\nname = "Kursk Now"\nmatch = ["Kursk"]\n', "timelines[0].name", 2, "URL"),
        ("colour = 1\n", "colour", 1, "unknown key"),
    ],
)
def test_errors_name_file_key_and_line(text: str, key: str, line: int, reason: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_settings(text, file="conf.toml", environ={})
    error = caught.value
    assert (error.file, error.key, error.line) == ("conf.toml", key, line)
    assert reason in str(error)
    assert str(error).startswith(f"conf.toml:{line}: {key}: ")


def test_broken_toml_reports_the_line() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_settings("[fetch]\nconcurrency = = 3\n", file="conf.toml", environ={})
    assert caught.value.line == 2


def test_check_config_exits_2_and_names_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('[server]\nport = "eighty"\n')
    assert main(["check-config", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{path}:2: server.port: expected a whole number" in err


def test_check_config_accepts_a_good_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "good.toml"
    path.write_text(GOOD)
    assert main(["check-config", str(path)]) == 0
    assert "OK (1 sources, 1 timelines)" in capsys.readouterr().out


def test_missing_file_says_what_to_do(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--config", "/nonexistent/agg.toml", "poll", "--once"]) == 2
    assert "file not found" in capsys.readouterr().err


def test_readme_documents_every_setting() -> None:
    readme = (ROOT / "README.md").read_text()
    missing = [key for key, _, _ in documented_settings() if f"`{key}`" not in readme]
    assert not missing, f"README.md does not document: {missing}"


def test_readme_quick_start_has_the_two_commands() -> None:
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert re.search(r"^scripts/run$", readme, re.M)
    assert re.search(r"^scripts/test$", readme, re.M)
    assert "scripts/test" in ci


def test_a_misspelt_environment_override_is_an_error() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_settings(GOOD, environ={"AGGREGATOR_FETCH__CONCURENCY": "3"})
    assert caught.value.key == "AGGREGATOR_FETCH__CONCURENCY"
    with pytest.raises(ConfigError):
        parse_settings(GOOD, environ={"AGGREGATOR_DATABSE_URL": "sqlite://"})
    # the test suite's own variables are not settings
    parse_settings(GOOD, environ={"AGGREGATOR_TEST_POSTGRES_URL": "postgresql://x"})
