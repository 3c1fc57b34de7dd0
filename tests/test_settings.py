"""The settings file: defaults, overrides and errors that name file, key and line."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from aggregator.cli import main
from aggregator.errors import ConfigError, ConfigErrors
from aggregator.opml import parse_opml
from aggregator.settings import (
    check_source,
    documented_settings,
    load_settings,
    parse_settings,
    reference_rows,
)
from aggregator.settings_schema import scalar_fields

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


def test_readme_reference_table_is_the_declarations() -> None:
    """Defaults, ranges and help as declared; on a change, paste the rows printed here."""
    readme = (ROOT / "README.md").read_text()
    table = [line for line in readme.splitlines() if re.match(r"\| `[a-z_.]+` \| `", line)]
    expected = reference_rows()
    assert table == expected, "README's reference table should read:\n" + "\n".join(expected)


def test_the_threshold_setting_names_each_methods_own_cut() -> None:
    from aggregator.cluster import RECOMMENDED_THRESHOLDS

    help = next(text for key, _, text in documented_settings() if key == "cluster.threshold")
    for method, cut in RECOMMENDED_THRESHOLDS.items():
        assert f"{method} {cut}" in help


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


# -- every value held to its declaration, wherever it comes from ----------------

# (TOML assignment, its table, what the message says); each value is out of range.
OUT_OF_RANGE = [
    ("timeout_total = nan", "fetch", "expected seconds"),
    ("timeout_total = -1", "fetch", "more than 0"),
    ("timeout_connect = inf", "fetch", "expected seconds"),
    ("timeout_read = 0", "fetch", "more than 0"),
    ("concurrency = 0", "fetch", "from 1 to 10000"),
    ("per_host_concurrency = -2", "fetch", "from 1 to 10000"),
    ("max_body_bytes = 0", "fetch", "from 1"),
    ("max_redirects = -1", "fetch", "from 0 to 100"),
    ("default_interval = inf", "fetch", "at most 365 days"),
    ("min_interval = 0", "fetch", "more than 0"),
    ("max_interval = 1e300", "fetch", "at most 365 days"),
    ("jitter = nan", "fetch", "from 0 to 1"),
    ('allowed_networks = "127.0.0.1/33"', "fetch", "'127.0.0.1/33' is not a network"),
    ('user_agent = "agg\\nX-Evil: 1"', "fetch", "printable ASCII"),
    ("threshold = 1", "cluster", "below 1"),
    ("window_hours = -5", "cluster", "more than 0"),
    ("window_hours = inf", "cluster", "more than 0"),
    ("min_sources = 0", "publish", "from 1"),
    ("max_items = 0", "publish", "from 1"),
    ("max_stories = -1", "publish", "from 1"),
    ('base_url = "http://[::1"', "publish", "not an http or https URL"),
    ('websub_hub = "ftp://hub"', "publish", "not an http or https URL"),
    ('language = "english please"', "publish", "a language code like en"),
    ("port = 0", "server", "from 1 to 65535"),
    ('host = "a b"', "server", "not a host name"),
    ("cycle_seconds = 0", "worker", "more than 0"),
    ("lease_seconds = nan", "worker", "expected seconds"),
    ("retention_days = 0", "worker", "more than 0"),
    ("retention_days = -1", "worker", "more than 0"),
    ("retention_days = inf", "worker", "more than 0"),
    ("port = 70000", "demo", "from 1 to 65535"),
    ("seconds_per_day = -10", "demo", "more than 0"),
]


@pytest.mark.parametrize(("assignment", "table", "reason"), OUT_OF_RANGE)
def test_out_of_range_values_are_refused(assignment: str, table: str, reason: str) -> None:
    key = f"{table}.{assignment.split(' =')[0]}"
    with pytest.raises(ConfigError) as caught:
        parse_settings(f"[{table}]\n{assignment}\n", file="conf.toml", environ={})
    assert str(caught.value).startswith(f"conf.toml:2: {key}: ")
    assert reason in caught.value.reason


def test_every_number_is_declared_with_bounds() -> None:
    """A new numeric setting cannot slip in without its range."""

    unbounded = [
        key
        for key, declared in scalar_fields()
        if declared.type in ("int", "float") and declared.metadata.get("bounds") is None
    ]
    assert not unbounded


@pytest.mark.parametrize(("assignment", "table", "reason"), OUT_OF_RANGE)
def test_an_override_is_refused_with_the_files_message(
    assignment: str, table: str, reason: str
) -> None:
    leaf, value = (part.strip() for part in assignment.split("=", 1))
    if value.startswith('"'):
        value = value[1:-1].replace("\\n", "\n")
    variable = f"AGGREGATOR_{table.upper()}__{leaf.upper()}"
    with pytest.raises(ConfigError) as from_file:
        parse_settings(f"[{table}]\n{assignment}\n", file="conf.toml", environ={})
    with pytest.raises(ConfigError) as from_env:
        parse_settings("", file="conf.toml", environ={variable: value})
    assert from_env.value.reason == from_file.value.reason
    assert from_env.value.variable == f"{variable}={value}"
    assert str(from_env.value).startswith(f"{variable}={value}: {table}.{leaf}: ")


def test_a_source_interval_of_inf_is_refused_everywhere_alike(tmp_path: Path) -> None:
    text = '[[sources]]\nname = "a"\nurl = "http://a.example/feed"\ninterval = inf\n'
    with pytest.raises(ConfigError) as from_file:
        parse_settings(text, file="conf.toml", environ={})
    assert str(from_file.value).startswith("conf.toml:4: sources[0].interval: ")
    assert "got inf" in from_file.value.reason
    opml = (
        b'<opml version="2.0"><body>\n'
        b'<outline text="a" xmlUrl="http://a.example/feed" interval="inf"/></body></opml>'
    )
    with pytest.raises(ConfigError) as from_opml:
        parse_opml(opml, file="feeds.opml")
    assert str(from_opml.value).startswith("feeds.opml:2: interval: ")
    with pytest.raises(ConfigError) as from_cli:
        check_source(
            {"name": "a", "url": "http://a.example/feed", "interval": "inf"},
            names={"interval": "--interval"},
        )
    assert str(from_cli.value).startswith("--interval: ")
    assert from_file.value.reason == from_opml.value.reason == from_cli.value.reason


def test_durations_take_units_in_sections_and_sources() -> None:
    settings = parse_settings(
        '[worker]\ncycle_seconds = "1m"\n[fetch]\nmax_interval = "2d"\n'
        '[[sources]]\nname = "a"\nurl = "http://a.example/"\ninterval = "30s"\n',
        environ={"AGGREGATOR_FETCH__TIMEOUT_TOTAL": "2m"},
    )
    assert settings.worker.cycle_seconds == 60.0
    assert settings.fetch.max_interval == 2 * 86400.0
    assert settings.fetch.timeout_total == 120.0
    assert settings.sources[0].interval == 30.0


def test_every_mistake_is_reported_at_once_in_file_order() -> None:
    text = (
        'log_level = "LOUD"\n'  # 1
        "[fetch]\n"
        "timeout_total = nan\n"  # 3
        'allowed_networks = "127.0.0.1/33"\n'  # 4
        "[worker]\n"
        "retention_days = 0\n"  # 6
        "[[sources]]\n"
        'name = "a"\n'
        'url = "gopher://a"\n'  # 9
        "interval = inf\n"  # 10
    )
    with pytest.raises(ConfigErrors) as caught:
        parse_settings(text, file="conf.toml", environ={"AGGREGATOR_SERVER__PORT": "x"})
    found = [(p.line, p.key) for p in caught.value.problems]
    assert found == [
        (1, "log_level"),
        (3, "fetch.timeout_total"),
        (4, "fetch.allowed_networks"),
        (6, "worker.retention_days"),
        (9, "sources[0].url"),
        (10, "sources[0].interval"),
        (None, "server.port"),
    ]


def test_check_config_prints_every_mistake_one_per_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("[fetch]\nconcurency = 3\ntimeout_total = -1\n\n[cluster]\nwindow_hours = -5\n")
    assert main(["check-config", str(path)]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert lines == [
        f"error: {path}:2: fetch.concurency: unknown key; [fetch] takes "
        "allow_private_networks, allowed_networks, concurrency, default_interval, "
        "jitter, max_body_bytes, max_interval, max_redirects, min_interval, "
        "per_host_concurrency, timeout_connect, timeout_read, timeout_total, user_agent",
        f'error: {path}:3: fetch.timeout_total: expected seconds or a duration like "15m", '
        "more than 0 and at most 1 day; got -1",
        f"error: {path}:6: cluster.window_hours: expected a number more than 0 and "
        "at most 87600, got -5",
    ]


def test_an_overrides_mistake_names_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "good.toml"
    path.write_text(GOOD + "\n[server]\nport = 8080\n")
    monkeypatch.setenv("AGGREGATOR_SERVER__PORT", "notaport")
    assert main(["check-config", str(path)]) == 2
    assert capsys.readouterr().err == (
        "error: AGGREGATOR_SERVER__PORT=notaport: server.port: "
        "expected a whole number, got 'notaport'\n"
    )


def test_an_overrides_password_is_not_shown() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_settings(
            "", environ={"AGGREGATOR_DATABASE_URL": "nodriver://user:hunter2@db.example/agg"}
        )
    assert "hunter2" not in str(caught.value)
    assert "AGGREGATOR_DATABASE_URL=nodriver://user:***@db.example/agg" in str(caught.value)


def test_errors_point_at_the_key_in_its_own_table() -> None:
    text = "[server]\nport = 8080\n\n[demo]\nport = 0\n"
    with pytest.raises(ConfigError) as caught:
        parse_settings(text, file="conf.toml", environ={})
    assert (caught.value.key, caught.value.line) == ("demo.port", 5)


def test_a_reload_refuses_what_check_config_refuses(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    from aggregator.reload import ConfigWatcher

    path = tmp_path / "aggregator.toml"
    path.write_text(GOOD)
    watcher = ConfigWatcher(path)
    path.write_text(
        GOOD.replace('interval = "15m"', "interval = inf") + "[worker]\nretention_days = 0\n"
    )
    with caplog.at_level("ERROR", logger="aggregator.reload"):
        assert watcher.poll() is None  # the running worker keeps its last good settings
    assert main(["check-config", str(path)]) == 2
    err = capsys.readouterr().err  # also holds the log line, once an earlier test set up logs
    refused = [
        line.removeprefix("error: ") for line in err.splitlines() if line.startswith("error: ")
    ]
    assert len(refused) == 2
    (record,) = caplog.records
    assert "\n" not in record.getMessage()  # one log line, every mistake in it
    assert all(problem in record.getMessage() for problem in refused)


NUMBERS = [(key, declared) for key, declared in scalar_fields() if declared.type != "str"]


@hypothesis_settings(max_examples=300, deadline=None)
@given(
    setting=st.sampled_from([key for key, declared in NUMBERS if declared.type != "bool"]),
    number=st.one_of(
        st.floats(allow_nan=True, allow_infinity=True),
        st.integers(min_value=-(2**40), max_value=2**40),
    ),
)
def test_the_file_and_the_environment_judge_every_number_alike(setting: str, number: float) -> None:
    """Whatever the number, a file and an override take the same value or refuse it
    with the same message."""
    table, key = setting.split(".")
    written = repr(number) if isinstance(number, float) else str(number)
    toml = {"nan": "nan", "inf": "inf", "-inf": "-inf"}.get(written, written)
    outcomes = []
    for text, environ in (
        (f"[{table}]\n{key} = {toml}\n", {}),
        ("", {f"AGGREGATOR_{table.upper()}__{key.upper()}": written}),
    ):
        try:
            outcomes.append(getattr(getattr(parse_settings(text, environ=environ), table), key))
        except ConfigError as exc:
            outcomes.append(exc.reason)
    assert outcomes[0] == outcomes[1] or all(o != o for o in outcomes)  # nan != nan
