"""Every way a poll can fail, as a FetchError with a stable code and a message saying what to do.

httpx's exceptions are translated in one place (`translated`), at the boundary, so that
none reaches the pipeline; HTTP error statuses get their messages from `http_error`.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Iterator
from contextlib import contextmanager

import httpx

from aggregator.errors import FetchError
from aggregator.fetch import hints
from aggregator.settings import FetchSettings


@contextmanager
def translated(url: str, settings: FetchSettings) -> Iterator[None]:
    """Turn httpx's exceptions into FetchErrors naming `url`, the URL being requested."""
    try:
        yield
    except httpx.ConnectTimeout as exc:
        raise _error(
            url,
            "timeout",
            f"no connection within {settings.timeout_connect:g} s (fetch.timeout_connect); "
            "the server may be down or dropping our packets. Polling retries later",
        ) from exc
    except httpx.TimeoutException as exc:
        raise _error(
            url,
            "timeout",
            f"the server sent nothing for {settings.timeout_read:g} s (fetch.timeout_read); "
            "it may be overloaded. Polling retries later",
        ) from exc
    except httpx.ConnectError as exc:
        raise _connect_error(url, exc) from exc
    except (httpx.UnsupportedProtocol, httpx.InvalidURL) as exc:
        raise _error(url, "bad_url", f"the URL cannot be requested ({exc}); fix it") from exc
    except httpx.ProtocolError as exc:
        raise _error(
            url,
            "protocol",
            f"the server broke the HTTP exchange ({exc or type(exc).__name__}); "
            "usually temporary, polling retries later",
        ) from exc
    except (httpx.HTTPError, httpx.StreamError) as exc:
        raise _error(
            url, "network", f"network error ({exc or type(exc).__name__}); polling retries later"
        ) from exc


def total_timeout(url: str, settings: FetchSettings) -> FetchError:
    return _error(
        url,
        "timeout",
        f"the fetch took longer than {settings.timeout_total:g} s in all (fetch.timeout_total); "
        "the server is too slow or keeps the connection dribbling. Polling retries later",
    )


def too_many_redirects(url: str, settings: FetchSettings) -> FetchError:
    return _error(
        url,
        "too_many_redirects",
        f"more than {settings.max_redirects} redirects (fetch.max_redirects), "
        "probably a redirect loop; open the URL in a browser and fix the source's url",
    )


def bad_redirect(url: str, status: int, location: str) -> FetchError:
    return _error(
        url,
        "bad_redirect",
        f"the server answered HTTP {status} but with an unusable Location header "
        f"({location!r}); only http and https are followed. Tell the site's operator "
        "or fix the source's url",
    )


def http_error(status: int, headers: hints.Headers) -> tuple[str, str]:
    """The stable code and readable message of a final answer that is no success."""
    code = f"http_{status}"
    if status in (401, 403):
        return code, (
            f"the server refuses access (HTTP {status}); the feed may need a login or block "
            "our User-Agent. Check the URL in a browser"
        )
    if status == 404:
        return code, "the feed is not there (HTTP 404); check the URL or remove the source"
    if status == 410:
        return code, (
            "the feed is gone for good (HTTP 410), so polling stopped; fix the source's url "
            "to resume, or remove the source"
        )
    asked = headers.get("retry-after", "").strip()[:40]  # quoted, not a whole header
    wait = f", waiting as the server asked (Retry-After: {asked})" if asked else ""
    if status == 429:
        return code, (
            f"the server asks us to slow down (HTTP 429); polling backs off{wait}. "
            "A longer interval for this source may help"
        )
    if status == 503:
        return code, f"the server is unavailable for now (HTTP 503); polling retries later{wait}"
    if status >= 500:
        return code, (
            f"the server failed (HTTP {status}); usually temporary, polling retries later"
        )
    return code, f"unexpected answer HTTP {status}; check the URL in a browser"


def _connect_error(url: str, exc: httpx.ConnectError) -> FetchError:
    causes = list(_causes(exc))
    if any(isinstance(cause, ssl.SSLError) for cause in causes):
        message = (
            f"the TLS handshake failed ({exc}); the site's certificate may be invalid or "
            "expired. Tell the site's operator"
        )
        return _error(url, "tls", message)
    if any(isinstance(cause, socket.gaierror) for cause in causes):
        return _error(url, "dns", f"the host name does not resolve ({exc}); check the URL")
    if any(isinstance(cause, ConnectionRefusedError) for cause in causes) or "refused" in str(exc):
        reason = "the connection was refused: nothing listens on that port"
    else:
        reason = f"could not connect ({causes[-1]})"  # the innermost cause names the OS error
    return _error(url, "connect", f"{reason}; the server may be down. Polling retries later")


def _causes(exc: BaseException) -> Iterator[BaseException]:
    seen: BaseException | None = exc
    while seen is not None:
        yield seen
        seen = seen.__cause__ or seen.__context__


def _error(url: str, code: str, message: str) -> FetchError:
    return FetchError(message, url=url, code=code)
