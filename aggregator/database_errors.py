"""Database failures told as one line naming the database and what to do.

The CLI catches SQLAlchemy's errors at its boundary (a corrupt SQLite file, an
unreachable PostgreSQL server) and prints `describe(...)` instead of a traceback.
Passwords in URLs are never shown.
"""

from __future__ import annotations

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, SQLAlchemyError

from aggregator.values import hide_password

# (words in the driver's message, what to do); the first that matches speaks.
_ADVICE = (
    (
        ("file is not a database", "malformed", "not a database"),
        "restore it from a backup or move it away to start afresh",
    ),
    (
        ("unable to open database file",),
        "check that its folder exists and that this user may write there",
    ),
    (("readonly", "read-only"), "check that this user may write the file and its folder"),
    (("database is locked",), "another process holds it; wait for it or stop it, then retry"),
    (("disk is full", "no space"), "free some disk space, then retry"),
    (
        ("password authentication failed", "no password supplied", "role"),
        "check the user and password in database_url (or AGGREGATOR_DATABASE_URL)",
    ),
    (
        ("does not exist",),
        "create the database (createdb) or fix the name in database_url",
    ),
    (
        ("connection refused", "could not connect", "connection failed", "timeout", "timed out"),
        "check that the database server runs and that database_url "
        "(or AGGREGATOR_DATABASE_URL) points at it",
    ),
)
_DEFAULT_ADVICE = "check database_url (or AGGREGATOR_DATABASE_URL) and the database server"


def database_name(url: str) -> str:
    """The SQLite file's path, or the URL with its password hidden."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        return hide_password(url)
    if parsed.get_backend_name() == "sqlite":
        return parsed.database or ":memory:"
    return parsed.render_as_string(hide_password=True)


def describe(error: BaseException, url: str) -> str:
    """`database NAME: what went wrong (driver); what to do`, on one line."""
    reason, driver = _reason(error)
    lowered = reason.lower()
    advice = next(
        (advice for words, advice in _ADVICE if any(word in lowered for word in words)),
        _DEFAULT_ADVICE,
    )
    where = f" ({driver})" if driver else ""
    return f"database {database_name(url)}: {reason}{where}; {advice}"


def is_database_error(error: BaseException) -> bool:
    """An SQLAlchemy error, or one of ours that a database error caused."""
    return isinstance(error, SQLAlchemyError) or isinstance(error.__cause__, SQLAlchemyError)


def _reason(error: BaseException) -> tuple[str, str]:
    cause = error if isinstance(error, SQLAlchemyError) else error.__cause__
    if isinstance(cause, DBAPIError) and cause.orig is not None:
        original = cause.orig
        driver = type(original).__module__.split(".")[0]
        text = str(original)
    else:
        driver, text = "", str(cause if cause is not None else error)
    # Drivers write several lines (psycopg adds hints); one line, passwords hidden.
    return hide_password(" ".join(text.split())) or type(error).__name__, driver
