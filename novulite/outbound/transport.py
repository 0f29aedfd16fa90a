"""An httpx transport that checks every destination before it connects.

The host name of each new connection is resolved once, each address is checked
against the policy, and the socket connects to a checked address, so a second DNS
answer cannot swap in another one (DNS rebinding). TLS still verifies the
certificate against the host name of the URL. The transport never reads proxy
settings from the environment, and it never follows redirects: callers that do
send each hop through it again.
"""

from __future__ import annotations

import contextlib
import functools
import ipaddress
import socket
import ssl
import typing
from collections.abc import Iterator

import httpcore
import httpx

from novulite.outbound.policy import IPAddress, OutboundPolicy, OutboundRefused


class UnknownHost(Exception):
    """A host name that does not exist in DNS."""

    def __init__(self, host: str, error: socket.gaierror) -> None:
        super().__init__(f"the host name {host} does not resolve: {error.strerror}")
        self.host = host


def resolve(host: str, port: int) -> list[IPAddress]:
    """Return the addresses of `host` in the resolver's order, without duplicates.

    Raises UnknownHost when the name does not exist, and httpcore.ConnectError when
    the lookup itself failed and may succeed later.
    """
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        if exc.errno in (socket.EAI_NONAME, getattr(socket, "EAI_NODATA", socket.EAI_NONAME)):
            raise UnknownHost(host, exc) from exc
        raise httpcore.ConnectError(f"looking up {host} failed: {exc.strerror}") from exc
    addresses: list[IPAddress] = []
    for info in infos:
        # An IPv6 socket address may carry a zone such as %eth0, which ip_address rejects.
        address = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
        if address not in addresses:
            addresses.append(address)
    return addresses


class GuardedBackend(httpcore.SyncBackend):
    """httpcore's blocking backend, connecting only to addresses the policy allows."""

    def __init__(self, policy: OutboundPolicy) -> None:
        self._policy = policy

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: typing.Iterable[typing.Any] | None = None,
    ) -> httpcore.NetworkStream:
        allowed: list[IPAddress] = []
        refusal: OutboundRefused | None = None
        for address in resolve(host, port):
            try:
                self._policy.check(host, address)
            except OutboundRefused as exc:
                refusal = refusal or exc
            else:
                allowed.append(address)
        if not allowed:
            raise refusal or httpcore.ConnectError(f"{host} has no address")
        last_error: Exception | None = None
        for address in allowed:
            try:
                # An address literal makes the parent connect without another lookup.
                return super().connect_tcp(str(address), port, timeout, local_address, socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last_error = exc
        assert last_error is not None
        raise last_error


_ERRORS: tuple[tuple[type[Exception], type[httpx.TransportError]], ...] = (
    (httpcore.ConnectTimeout, httpx.ConnectTimeout),
    (httpcore.ReadTimeout, httpx.ReadTimeout),
    (httpcore.WriteTimeout, httpx.WriteTimeout),
    (httpcore.PoolTimeout, httpx.PoolTimeout),
    (httpcore.ConnectError, httpx.ConnectError),
    (httpcore.ReadError, httpx.ReadError),
    (httpcore.WriteError, httpx.WriteError),
    (httpcore.RemoteProtocolError, httpx.RemoteProtocolError),
    (httpcore.LocalProtocolError, httpx.LocalProtocolError),
)


@contextlib.contextmanager
def _httpx_errors() -> Iterator[None]:
    """Raise httpcore's errors as the httpx errors of the same name, as httpx's own transport does."""
    try:
        yield
    except tuple(source for source, _ in _ERRORS) as exc:
        target = next(target for source, target in _ERRORS if isinstance(exc, source))
        raise target(str(exc)) from exc


class _ResponseStream(httpx.SyncByteStream):
    def __init__(self, stream: typing.Iterable[bytes]) -> None:
        self._stream = stream

    def __iter__(self) -> Iterator[bytes]:
        with _httpx_errors():
            yield from self._stream

    def close(self) -> None:
        close = getattr(self._stream, "close", None)
        if close is not None:
            close()


@functools.cache
def _ssl_context() -> ssl.SSLContext:
    # Loading the CA bundle takes milliseconds, so every client shares one context.
    return httpx.create_ssl_context(trust_env=False)


class GuardedTransport(httpx.BaseTransport):
    def __init__(self, policy: OutboundPolicy) -> None:
        self._pool = httpcore.ConnectionPool(
            ssl_context=_ssl_context(),
            network_backend=GuardedBackend(policy),
            max_connections=4,
        )

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        assert isinstance(request.stream, httpx.SyncByteStream)
        core_request = httpcore.Request(
            method=request.method,
            url=httpcore.URL(
                scheme=request.url.raw_scheme,
                host=request.url.raw_host,
                port=request.url.port,
                target=request.url.raw_path,
            ),
            headers=request.headers.raw,
            content=request.stream,
            extensions=request.extensions,
        )
        with _httpx_errors():
            response = self._pool.handle_request(core_request)
        assert isinstance(response.stream, typing.Iterable)
        return httpx.Response(
            status_code=response.status,
            headers=response.headers,
            stream=_ResponseStream(response.stream),
            extensions=response.extensions,
        )

    def close(self) -> None:
        self._pool.close()


def guarded_client(policy: OutboundPolicy, user_agent: str) -> httpx.Client:
    """Return a client whose connections pass the policy; it follows no redirects."""
    return httpx.Client(
        transport=GuardedTransport(policy),
        follow_redirects=False,
        trust_env=False,
        headers={"User-Agent": user_agent},
    )
