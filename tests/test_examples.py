"""The examples a newcomer copies: config/examples/, the deployment files and the README's commands.

No test fetches the example's outlets: they are checked as a user would before
deploying them, with `aggregator check-config`, and by what the file promises.
"""

from __future__ import annotations

import ipaddress
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from aggregator.cli import main
from aggregator.settings import Settings, load_settings

ROOT = Path(__file__).resolve().parent.parent
PRODUCTION = ROOT / "config" / "examples" / "production.toml"
DEMO = ROOT / "config" / "aggregator.toml"
README = (ROOT / "README.md").read_text()


def clean_environ() -> dict[str, str]:
    """This process's environment without settings overrides, as on a fresh machine."""
    return {k: v for k, v in os.environ.items() if not k.startswith("AGGREGATOR_")}


def production() -> Settings:
    return load_settings(PRODUCTION, environ={})


def section(title: str) -> str:
    """The README's text under a heading, up to the next heading of any level."""
    match = re.search(rf"^#+ {re.escape(title)}\n(.*?)(?=^#+ )", README, re.M | re.S)
    assert match, f"README has a section {title!r}"
    return match.group(1)


def code_lines(text: str) -> list[str]:
    blocks = re.findall(r"^```[a-z]*\n(.*?)^```", text, re.M | re.S)
    return [line.strip() for block in blocks for line in block.splitlines() if line.strip()]


# -- config/examples/production.toml ---------------------------------------------------


def test_the_production_example_passes_check_config() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "aggregator", "check-config", str(PRODUCTION)],
        capture_output=True,
        text=True,
        env=clean_environ(),
        cwd=ROOT,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "OK" in result.stdout


def test_the_production_example_follows_real_outlets_in_three_languages() -> None:
    sources = production().sources
    assert len(sources) >= 12
    languages = Counter(source.language for source in sources)
    assert set(languages) == {"uk", "ru", "en"} and min(languages.values()) >= 3, languages
    assert len({source.name for source in sources}) == len(sources)
    sites = set()
    for source in sources:
        url = urlsplit(source.url)
        host = url.hostname or ""
        assert url.scheme == "https", source.url
        with pytest.raises(ValueError):
            ipaddress.ip_address(host)  # a name an outlet publishes, not an address
        assert "." in host and not host.endswith((".invalid", ".example", ".test", ".local"))
        assert source.enabled, source.name
        sites.add(host.removeprefix("www.").removeprefix("feeds.").removeprefix("rss."))
    assert len(sites) >= 10, "a dozen outlets, not one outlet's sections"


def test_the_production_example_runs_no_demo_and_refuses_private_networks() -> None:
    settings = production()
    assert not settings.demo.enabled
    assert not settings.fetch.allow_private_networks
    assert settings.fetch.allowed_networks == ""
    assert "[demo]" not in PRODUCTION.read_text()


def test_the_production_example_follows_the_kursk_incursion_as_the_demo_does() -> None:
    (kursk,) = [t for t in production().timelines if t.name == "kursk"]
    (demo_kursk,) = [t for t in load_settings(DEMO, environ={}).timelines if t.name == "kursk"]
    assert kursk.match == demo_kursk.match
    assert {"Kursk", "Курськ", "Курск"} <= set(kursk.match)


# -- deployments use it -----------------------------------------------------------------


def test_compose_and_the_image_use_the_production_example() -> None:
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    mounts = compose["x-aggregator"]["volumes"]
    assert mounts == ["./config/examples/production.toml:/etc/aggregator/aggregator.toml:ro"]
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "COPY config/examples/production.toml /etc/aggregator/aggregator.toml" in dockerfile


def test_the_readmes_systemd_steps_install_the_package_before_verifying_the_unit() -> None:
    steps = code_lines(section("With systemd"))
    joined = "\n".join(steps)
    assert "config/aggregator.toml" not in joined, "the demo's settings stay out of /etc"

    def first(pattern: str) -> int:
        found = [i for i, line in enumerate(steps) if re.search(pattern, line)]
        assert found, f"a step matching {pattern!r}"
        return found[0]

    package = first(r"/opt/aggregator/bin/pip install")
    settings = first(r"install .*config/examples/production\.toml /etc/aggregator/")
    check = first(r"aggregator check-config /etc/aggregator/aggregator\.toml")
    unit = first(r"install .*deploy/aggregator\.service")
    verify = first(r"systemd-analyze verify")
    start = first(r"systemctl .*enable --now aggregator")
    assert package < settings < check < start
    assert package < unit < verify < start


def test_the_readmes_compose_section_names_the_production_example() -> None:
    text = section("With Docker Compose")
    assert "config/examples/production.toml" in text


# -- the README's commands work as written -------------------------------------------


def test_the_quick_start_says_how_the_command_gets_on_the_path() -> None:
    steps = code_lines(section("Quick start"))
    assert ". .venv/bin/activate" in steps
    activate = steps.index(". .venv/bin/activate")
    assert any(line.startswith("aggregator ") for line in steps[activate:])


def test_after_activating_the_environment_the_command_is_on_the_path() -> None:
    activate = Path(sys.prefix) / "bin" / "activate"
    if sys.prefix == sys.base_prefix or not activate.exists():
        pytest.skip("the tests do not run inside a virtual environment")
    env = {k: v for k, v in clean_environ().items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env["PATH"] = "/usr/local/bin:/usr/bin:/bin"  # a fresh shell: .venv/bin is not on it yet
    result = subprocess.run(
        ["bash", "-c", f". {activate} && command -v aggregator && aggregator --help"],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == str(activate.parent / "aggregator")
    assert "check-config" in result.stdout


def readme_subcommands() -> list[str]:
    found = set()
    for line in code_lines(README):
        match = re.match(r"^(?:\$ )?aggregator (?:--config \S+ )?([a-z][a-z-]*)", line)
        if match:
            found.add(match.group(1))
    return sorted(found)


def test_the_readme_shows_commands() -> None:
    assert {"check-config", "sources", "run", "serve", "db", "demo"} <= set(readme_subcommands())


@pytest.mark.parametrize("command", readme_subcommands())
def test_every_command_the_readme_shows_exists(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        main([command, "--help"])
    assert exit_.value.code == 0, capsys.readouterr().err
    assert capsys.readouterr().out.startswith(f"usage: aggregator {command}")
