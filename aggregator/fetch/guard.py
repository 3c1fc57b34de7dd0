"""Which addresses a poll may reach: http(s) URLs only, and public addresses after DNS.

The check runs on the resolved addresses before every hop of a redirect chain, and the
connection is then opened to one of exactly those addresses (`GuardedBackend`, used by
aggregator.fetch.transport), so a DNS answer that changes between the check and the
connection (rebinding) gains nothing. An IPv6 address that carries an IPv4 address
(mapped, compatible, SIIT, NAT64, 6to4, Teredo) is judged by that IPv4 address too.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

import httpcore
import httpx

from aggregator.errors import FetchError

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolve = Callable[[str, int], Awaitable[list[Address]]]
"""host, port -> the addresses a connection could go to; raises socket.gaierror."""

# IPv6 prefixes whose last 32 bits are an IPv4 address a translator or tunnel reaches.
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")  # RFC 6052, well-known prefix
_NAT64_LOCAL = ipaddress.IPv6Network("64:ff9b:1::/48")  # RFC 8215, local-use
_SIIT = ipaddress.IPv6Network("::ffff:0:0:0/96")  # RFC 6145 / 7915, IPv4-translated
_COMPATIBLE = ipaddress.IPv6Network("::/96")  # RFC 4291, deprecated IPv4-compatible


async def system_resolve(host: str, port: int) -> list[Address]:
    """The operating system's resolver, off the event loop's thread."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    found: dict[Address, None] = {}  # ordered and without repeats
    for *_, sockaddr in infos:
        found[ipaddress.ip_address(sockaddr[0])] = None
    return list(found)


def checked_url(raw: str) -> httpx.URL:
    """The URL, if it is an absolute http(s) URL with a host; else a FetchError "bad_url"."""
    try:
        url = httpx.URL(raw)
    except httpx.InvalidURL as exc:
        raise FetchError(
            f"the URL is not valid ({exc}); fix the source's url", url=raw, code="bad_url"
        ) from exc
    if url.scheme not in ("http", "https"):
        scheme = f"'{url.scheme}:'" if url.scheme else "a URL without a scheme"
        raise FetchError(
            f"only http and https URLs can be polled, not {scheme}; fix the source's url",
            url=raw,
            code="bad_url",
        )
    if not url.host:
        raise FetchError("the URL has no host name; fix the source's url", url=raw, code="bad_url")
    return url


def parse_networks(text: str) -> tuple[Network, ...]:
    """Networks from "127.0.0.1/32, ::1" (CIDR or single addresses, commas or spaces)."""
    return tuple(
        ipaddress.ip_network(part, strict=False) for part in text.replace(",", " ").split()
    )


@dataclass(frozen=True)
class AddressPolicy:
    """Public addresses only, plus the networks the operator allowed by name."""

    allowed: tuple[Network, ...] = ()

    def permits(self, address: Address) -> bool:
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped  # ::ffff:127.0.0.1 is loopback in disguise
        if self._allows(address):
            return True
        if not _is_public(address):
            return False
        # 64:ff9b::a9fe:a9fe reaches 169.254.169.254 through whichever NAT64 gateway is
        # on the way: what a translator or tunnel reaches must be public too. The
        # allowed networks do not extend to it: the gateway's 127.0.0.1 is not ours.
        carried = embedded_ipv4(address) if isinstance(address, ipaddress.IPv6Address) else ()
        return all(_is_public(inner) for inner in carried)

    def _allows(self, address: Address) -> bool:
        return any(address.version == net.version and address in net for net in self.allowed)


def _is_public(address: Address) -> bool:
    return address.is_global and not address.is_multicast


def embedded_ipv4(address: ipaddress.IPv6Address) -> tuple[ipaddress.IPv4Address, ...]:
    """Every IPv4 address an IPv6 address can carry, as a translator or tunnel would read it.

    The local-use NAT64 prefix may be used with any prefix length from /48 on, so both
    the /96 place (the last 32 bits) and the /48 place of RFC 6052 are read.
    """
    found: list[ipaddress.IPv4Address] = []
    if address.ipv4_mapped is not None:
        found.append(address.ipv4_mapped)
    if address.sixtofour is not None:
        found.append(address.sixtofour)
    if address.teredo is not None:
        found += address.teredo  # (server, client); the client's XOR is already undone
    last_32_bits = ipaddress.IPv4Address(int(address) & 0xFFFF_FFFF)
    if any(address in prefix for prefix in (_NAT64, _NAT64_LOCAL, _SIIT, _COMPATIBLE)):
        found.append(last_32_bits)
    if address in _NAT64_LOCAL:
        packed = address.packed  # RFC 6052 section 2.2: bits 64-71 are skipped
        found.append(ipaddress.IPv4Address(packed[6:8] + packed[9:11]))
    return tuple(found)


class Guard:
    """Resolves each host once per cycle and refuses it if any address is not permitted.

    Refusing a name with one private address among public ones is deliberate: which of
    them a connection would use is not ours to predict.
    """

    def __init__(self, policy: AddressPolicy, resolve: Resolve) -> None:
        self._policy = policy
        self._resolve = resolve
        self._known: dict[str, list[Address]] = {}

    async def addresses(self, host: str, port: int) -> list[Address]:
        found = await self._lookup(host, port)
        for address in found:
            if not self._policy.permits(address):
                raise FetchError(
                    f"{host} resolves to {address}, a private or local address, which is "
                    "refused; set fetch.allow_private_networks = true if this source is meant "
                    "to be on your own network",
                    url=host,
                    code="private_address",
                )
        return found

    async def _lookup(self, host: str, port: int) -> list[Address]:
        literal = _ip_literal(host)
        if literal is not None:
            return [literal]
        if host not in self._known:
            try:
                found = await self._resolve(host, port)
            except socket.gaierror as exc:
                raise FetchError(
                    f"the host name {host!r} does not resolve ({exc.strerror}); "
                    "check the URL for typos",
                    url=host,
                    code="dns",
                ) from exc
            if not found:
                raise FetchError(
                    f"the host name {host!r} has no address; check the URL for typos",
                    url=host,
                    code="dns",
                )
            self._known[host] = found
        return self._known[host]


def _ip_literal(host: str) -> Address | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """Opens TCP connections only to addresses the guard vetted, never to a fresh DNS answer."""

    def __init__(self, guard: Guard, inner: httpcore.AsyncNetworkBackend | None = None) -> None:
        self._guard = guard
        self._inner = inner or httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        failure: httpcore.ConnectError | None = None
        for address in await self._guard.addresses(host, port):
            try:
                # TLS still checks the certificate against `host`: httpcore passes the
                # origin's name as server_hostname, whatever address we connected to.
                return await self._inner.connect_tcp(
                    str(address),
                    port,
                    timeout=timeout,
                    local_address=local_address,
                    socket_options=socket_options,
                )
            except httpcore.ConnectError as exc:
                failure = exc  # try the host's next address, as a resolver-driven connect would
        assert failure is not None  # addresses() never returns an empty list
        raise failure

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("unix sockets are never polled")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)
