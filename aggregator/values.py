"""Parsers and range checks for setting values, shared by every way a value arrives.

The settings file, environment overrides, `sources add` and OPML import all pass
their values through these functions, so one value is refused everywhere with one
message. Each raises `InvalidValue` carrying only the message; the caller adds
where the value came from (file and line, variable, option or outline).
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

DAY = 86400.0
YEAR = 365 * DAY
_UNITS = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": DAY}
_DURATION = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*")
# printable ASCII: httpx refuses anything else in a header value, at every request
_HEADER_VALUE = re.compile(r"[\x20-\x7e]+")
_HOST = re.compile(r"[A-Za-z0-9.-]{1,253}|[0-9A-Fa-f:.]+")
_TYPE_NAMES = {bool: "true or false", int: "a whole number", float: "a number", str: "a string"}


class InvalidValue(ValueError):
    """A value a setting cannot take; the message says what it takes instead."""


@dataclass(frozen=True)
class Bounds:
    """The numbers a setting admits; every admitted number is also finite."""

    at_least: float | None = None
    more_than: float | None = None
    at_most: float | None = None
    below: float | None = None

    def admits(self, value: float) -> bool:
        return (
            (isinstance(value, int) or math.isfinite(value))  # a huge int would overflow
            and (self.at_least is None or value >= self.at_least)
            and (self.more_than is None or value > self.more_than)
            and (self.at_most is None or value <= self.at_most)
            and (self.below is None or value < self.below)
        )

    def describe(self, shown: Callable[[float], str] | None = None) -> str:
        """ "from 1 to 65535", "more than 0 and at most 1 day"...; `shown` writes a bound."""
        write = shown or _number
        if self.at_least is not None and self.at_most is not None:
            return f"from {write(self.at_least)} to {write(self.at_most)}"
        low = (
            f"at least {write(self.at_least)}"
            if self.at_least is not None
            else f"more than {write(self.more_than)}"
            if self.more_than is not None
            else ""
        )
        high = (
            f"at most {write(self.at_most)}"
            if self.at_most is not None
            else f"below {write(self.below)}"
            if self.below is not None
            else ""
        )
        return " and ".join(part for part in (low, high) if part)


def _number(value: float) -> str:
    return f"{value:.0f}" if float(value).is_integer() else f"{value:g}"


def span(seconds: float) -> str:
    """A duration's bound as people say it: "1 day", "365 days", "0", "90 seconds"."""
    if seconds and seconds % DAY == 0:
        days = int(seconds // DAY)
        return f"{days} day{'s' if days != 1 else ''}"
    return _number(seconds) if not seconds else f"{_number(seconds)} seconds"


def _shown(value: float) -> str:
    """A refused number as its writer would write it: -1 whether it came as -1, -1.0 or "-1"."""
    if isinstance(value, int) or (math.isfinite(value) and value.is_integer()):
        return str(int(value))
    return repr(value)


def typed(value: Any, kind: type) -> Any:
    """The value as `kind`, accepting 3 for a float and 3.0 for an int, never a bool as a number."""
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind is int and isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, bool) is not (kind is bool) or not isinstance(value, kind):
        raise InvalidValue(f"expected {_TYPE_NAMES[kind]}, got {value!r}")
    return value


def from_text(text: str, kind: type) -> Any:
    """An environment variable's text as `kind`; the checks after it are the file's."""
    if kind is bool:
        lowered = text.strip().lower()
        if lowered not in ("true", "false"):
            raise InvalidValue(f"expected true or false, got {text!r}")
        return lowered == "true"
    if kind in (int, float):
        try:
            return int(text.strip()) if kind is int else float(text.strip())
        except ValueError:
            pass
        try:  # "3.0" or "nan" for a whole number: judged by `typed`, as the file's 3.0 is
            return float(text.strip())
        except ValueError:
            raise InvalidValue(f"expected {_TYPE_NAMES[kind]}, got {text!r}") from None
    return text


def in_bounds(value: float, bounds: Bounds) -> float:
    if not bounds.admits(value):
        raise InvalidValue(f"expected a number {bounds.describe()}, got {_shown(value)}")
    return value


def duration(value: Any, bounds: Bounds) -> float:
    """Seconds from 900, 900.0, "900", "15m", "2h", "1d" or "30s", within `bounds`."""
    what = f'expected seconds or a duration like "15m", {bounds.describe(span)}'
    if isinstance(value, str):
        match = _DURATION.fullmatch(value)
        if match:
            value = float(match.group(1)) * _UNITS[match.group(2)]
        else:
            try:  # "inf", "-5", "1e3": numbers written as text, judged as numbers
                value = float(value.strip())
            except ValueError:
                raise InvalidValue(f"{what}; got {value!r}") from None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidValue(f"{what}; got {value!r}")
    seconds = float(value)
    if not bounds.admits(seconds):
        raise InvalidValue(f"{what}; got {_shown(seconds)}")
    return seconds


def one_of(value: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise InvalidValue(f"expected one of {', '.join(choices)}, got {value!r}")
    return value


def networks(text: str) -> str:
    """CIDR networks or addresses separated by commas or spaces, as the fetch guard reads them."""
    for part in text.replace(",", " ").split():
        try:
            ipaddress.ip_network(part, strict=False)
        except ValueError:
            raise InvalidValue(
                f"{part!r} is not a network; write CIDR like 10.0.0.0/8 or an address "
                "like 127.0.0.1, separated by commas"
            ) from None
    return text


def http_url(url: str) -> str:
    """An absolute http(s) URL with a host and a valid port; the text is returned as written."""
    problem = f"{url!r} is not an http or https URL; write the full address, like https://host/feed"
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 -- raises ValueError on a port out of range
    except ValueError:
        raise InvalidValue(problem) from None
    if parts.scheme not in ("http", "https") or not parts.hostname or any(c.isspace() for c in url):
        raise InvalidValue(problem)
    return url


def database_url(url: str) -> str:
    """'' or an SQLAlchemy URL whose dialect is known (its driver is imported only to connect)."""
    if not url:
        return url
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    example = "such as sqlite:///data/aggregator.db or postgresql+psycopg://user@host/db"
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        raise InvalidValue(f"not an SQLAlchemy URL; write one {example}") from None
    try:
        parsed.get_dialect().import_dbapi()
    except NoSuchModuleError:
        raise InvalidValue(
            f"unknown database kind {parsed.drivername!r}; write a URL {example}"
        ) from None
    except ImportError as exc:
        raise InvalidValue(
            f"the driver {exc.name} for {parsed.drivername} is not installed; install it "
            "(for PostgreSQL: pip install 'aggregator[postgres]')"
        ) from None
    return url


def header_value(text: str) -> str:
    if not _HEADER_VALUE.fullmatch(text):
        raise InvalidValue("expected printable ASCII text on one line (an HTTP header's value)")
    return text


def host(text: str) -> str:
    if not _HOST.fullmatch(text):
        raise InvalidValue(f"{text!r} is not a host name or IP address, like 127.0.0.1 or ::")
    return text


def not_empty(text: str) -> str:
    if not text.strip():
        raise InvalidValue("must not be empty")
    return text


_LANGUAGE = re.compile(r"[A-Za-z]{2,8}(-[A-Za-z0-9]{1,8})*")  # BCP 47's shape, as feeds carry it


def language(text: str) -> str:
    """A language tag like en, uk or pt-BR."""
    text = text.strip()
    if not _LANGUAGE.fullmatch(text):
        raise InvalidValue(f"expected a language code like en, uk or pt-BR, got {text!r}")
    return text


def optional_language(text: str) -> str:
    """A language tag, or "" for none."""
    return language(text) if text.strip() else ""


def primary_language(tag: str) -> str:
    """A language tag's primary subtag, lower-cased: "en-US", "EN" and "en" are one language.

    The clusterer keeps statistics per language and weighs reports in two languages
    apart from reports in one, and feeds write one language many ways.
    """
    return tag.strip().split("-", 1)[0].split("_", 1)[0].casefold()


def hide_password(url: str) -> str:
    """The URL with any password replaced by ***, for messages and logs."""
    return re.sub(r"(?<=://)([^:/@]*):[^@/]*@", r"\1:***@", url)
