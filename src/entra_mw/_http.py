"""The one transport seam: every request entra_mw makes (discovery, keys, token endpoint, downstream APIs) goes
through the pooled httpx2 clients built here. Tests inject FakeEntra's transports; nothing patches the network.

The clients are shared by every caller of the engine, so they keep **no cookies**: a session cookie one user's
downstream API sets must never travel with another user's call, to another API or to the token endpoint.
Bodies are read through :func:`read_capped` / :func:`aread_capped`: a size cap and an overall deadline, so a
server that drips one byte at a time cannot hold a worker for longer than the deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.cookiejar
import os
import ssl
import threading
import time
import urllib.request
import weakref
from collections.abc import AsyncGenerator, Callable
from contextlib import aclosing
from typing import Final
from urllib.parse import urlsplit

import httpx2

from ._ids import is_loopback_host, without_userinfo
from .errors import ConfigurationError

__all__ = [
    "DEFAULT_TIMEOUT",
    "USER_AGENT",
    "Deadline",
    "DeadlineExceeded",
    "HttpSeam",
    "TrustStoreError",
    "aread_capped",
    "is_loopback_host",
    "read_capped",
    "tls_verification_failed",
]

DEFAULT_TIMEOUT: Final = httpx2.Timeout(10.0, connect=5.0)
USER_AGENT: Final = "entra-mw"


class TrustStoreError(httpx2.ConnectError):
    """The CA bundle (``verify=`` path or ``SSL_CERT_FILE``) cannot be loaded, so no TLS connection can be
    verified. A transport error, so every caller already answers it as the provider being unreachable."""


def tls_verification_failed(exc: BaseException) -> bool:
    """Whether a transport error was a server certificate that failed verification."""
    seen: BaseException | None = exc
    for _ in range(8):
        if seen is None:
            break
        if isinstance(seen, ssl.SSLCertVerificationError):
            return True
        seen = seen.__cause__ or seen.__context__
    return "CERTIFICATE_VERIFY_FAILED" in str(exc)


def _ssl_context(verify: ssl.SSLContext | str | bool, trust_env: bool) -> ssl.SSLContext | bool:
    """What httpx2 gets as ``verify``, built here so that a CA file that is missing or unreadable is a
    :class:`TrustStoreError` naming it, not a ``FileNotFoundError`` from deep inside the client."""
    if isinstance(verify, ssl.SSLContext) or verify is False:
        return verify
    if isinstance(verify, str):
        cafile: str | None = verify
        source = "verify="
    else:
        cafile = os.environ.get("SSL_CERT_FILE") if trust_env else None
        source = "SSL_CERT_FILE="
    try:
        if cafile:
            return ssl.create_default_context(cafile=cafile)
        return httpx2.create_ssl_context(verify=True, trust_env=trust_env)
    except FileNotFoundError:
        raise TrustStoreError(f"CA file is missing: {source}{cafile!r}") from None
    except (OSError, ssl.SSLError) as exc:
        where = f"{source}{cafile!r}" if cafile else "the system trust store"
        raise TrustStoreError(f"CA file cannot be loaded: {where} ({type(exc).__name__})") from None


class _RefuseAll(http.cookiejar.DefaultCookiePolicy):
    def set_ok(self, cookie: http.cookiejar.Cookie, request: urllib.request.Request) -> bool:
        return False

    def return_ok(self, cookie: http.cookiejar.Cookie, request: urllib.request.Request) -> bool:
        return False


def _no_cookies() -> http.cookiejar.CookieJar:
    """A cookie jar that never stores a cookie and never sends one (the pooled clients are shared by users)."""
    return http.cookiejar.CookieJar(policy=_RefuseAll())


class DeadlineExceeded(httpx2.ReadTimeout):
    """The overall deadline of one exchange passed while its body was still arriving."""


class Deadline:
    """An overall time budget for one exchange, in real (monotonic) seconds: network I/O runs on real time,
    whatever clock the engine was given.

    ::

        deadline = Deadline(30.0)
        response = client.send(request, stream=True)
        body = read_capped(response, limit=1 << 20, deadline=deadline, too_large=lambda: ValueError("big"))
    """

    __slots__ = ("_until",)

    def __init__(self, seconds: float) -> None:
        self._until = time.monotonic() + seconds  # real time on purpose: this bounds network I/O

    def remaining(self) -> float:
        return self._until - time.monotonic()  # real time: network I/O

    def check(self) -> None:
        if self.remaining() <= 0:
            raise DeadlineExceeded("the overall deadline passed while reading the response")

    def clamp(self, request: httpx2.Request) -> None:
        """Bound every later read of ``request`` by the time left (httpx2 times each read on its own)."""
        left = max(0.001, self.remaining())
        timeouts = dict(request.extensions.get("timeout") or {})
        for phase in ("connect", "read", "write", "pool"):
            current = timeouts.get(phase)
            timeouts[phase] = left if current is None else min(float(current), left)
        request.extensions["timeout"] = timeouts


def read_capped(
    response: httpx2.Response, *, limit: int, deadline: Deadline, too_large: Callable[[], Exception]
) -> bytes:
    """The decoded body of a streamed ``response``, at most ``limit`` bytes (else ``too_large()`` is raised),
    read before ``deadline`` (else :class:`DeadlineExceeded`, an ``httpx2.TimeoutException``)."""
    deadline.check()
    deadline.clamp(response.request)
    buf = bytearray()
    for chunk in response.iter_bytes():
        buf += chunk
        if len(buf) > limit:
            raise too_large()
        deadline.check()
    return bytes(buf)


async def aread_capped(
    response: httpx2.Response, *, limit: int, deadline: Deadline, too_large: Callable[[], Exception]
) -> bytes:
    """Async twin of :func:`read_capped`; the deadline also cancels a read that is waiting."""
    import anyio

    buf = bytearray()
    deadline.check()
    try:
        with anyio.fail_after(max(0.001, deadline.remaining())):
            async with aclosing(response.aiter_bytes()) as chunks:
                async for chunk in chunks:
                    buf += chunk
                    if len(buf) > limit:
                        raise too_large()
    except TimeoutError:
        raise DeadlineExceeded("the overall deadline passed while reading the response") from None
    return bytes(buf)


class HttpSeam:
    """Lazily built, pooled sync and async httpx2 clients for one engine.

    ``transport``/``async_transport`` replace the network (FakeEntra's, or an ``httpx2.MockTransport``). Whether or
    not one is injected, :meth:`check_url` allows plain ``http://`` only to loopback hosts (the key store further
    requires ``EntraConfig.allow_insecure_http``). Redirects are never followed: metadata, keys and token
    endpoints must answer directly (a redirect there is an attack or a misconfiguration, DESIGN §2). The TLS
    context is built with the first client, so a missing CA file surfaces as a :class:`TrustStoreError` on use
    (answered as the provider being unreachable), never as an exception at construction.
    """

    def __init__(
        self,
        *,
        transport: httpx2.BaseTransport | None = None,
        async_transport: httpx2.AsyncBaseTransport | None = None,
        timeout: float | httpx2.Timeout | None = None,
        verify: ssl.SSLContext | str | bool = True,
    ) -> None:
        self._transport = transport
        self._async_transport = async_transport
        self._timeout = DEFAULT_TIMEOUT if timeout is None else httpx2.Timeout(timeout)
        # A CA file path becomes an SSLContext when the first client is built (httpx2 deprecates a path).
        self._verify = verify
        self._lock = threading.Lock()
        self._client: httpx2.Client | None = None
        self._aclient: httpx2.AsyncClient | None = None  # outside asyncio (trio)
        self._async_verify: ssl.SSLContext | bool | None = None
        self._aclients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, httpx2.AsyncClient] = (
            weakref.WeakKeyDictionary()
        )
        self._closers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, AsyncGenerator[None, None]] = (
            weakref.WeakKeyDictionary()
        )

    @property
    def deadline(self) -> float:
        """Seconds one whole exchange (connect, send, headers, body) may take: the configured timeout, which
        httpx2 applies to each read on its own."""
        read = self._timeout.read
        return float(read) if read is not None else DEFAULT_TIMEOUT.read or 10.0

    @property
    def injected(self) -> bool:
        """True when a test transport replaces the network."""
        return self._transport is not None or self._async_transport is not None

    def check_url(self, url: str, *, what: str) -> None:
        """Refuse URLs that are neither https nor http to a loopback host (an injected transport changes
        nothing: a production transport with a proxy is injected too). The error never repeats a password."""
        if url.startswith("https://"):
            return
        try:
            host = urlsplit(url).hostname if url.startswith("http://") else None
        except ValueError:
            host = None
        if host is None or not is_loopback_host(host):
            raise ConfigurationError(f"{what} must be an https:// URL, got {without_userinfo(url)!r}", key=what)

    def _verify_for(self, transport: object) -> ssl.SSLContext | bool:
        if transport is not None:
            # An injected transport makes its own connections: the client's TLS settings are never used.
            return True if isinstance(self._verify, str) else self._verify
        return _ssl_context(self._verify, True)

    @property
    def client(self) -> httpx2.Client:
        client = self._client
        if client is None:
            with self._lock:
                client = self._client
                if client is None:
                    client = self._client = httpx2.Client(
                        transport=self._transport,
                        timeout=self._timeout,
                        follow_redirects=False,
                        trust_env=self._transport is None,
                        verify=self._verify_for(self._transport),
                        headers={"User-Agent": USER_AGENT},
                        cookies=_no_cookies(),
                    )
        return client

    @property
    def aclient(self) -> httpx2.AsyncClient:
        """The running event loop's pooled async client.

        A client's connections belong to the loop that opened them, so each asyncio loop gets its own: Django
        and Flask run async views under WSGI in a new loop per request, and scripts call ``asyncio.run`` more
        than once. Each is closed when its loop shuts down (``asyncio.run``, asgiref and uvicorn finalise async
        generators before closing a loop). Under trio there is one client.
        """
        try:
            loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        if loop is None:
            aclient = self._aclient
            if aclient is None:
                with self._lock:
                    aclient = self._aclient
                    if aclient is None:
                        aclient = self._aclient = self._new_aclient()
            return aclient
        aclient = self._aclients.get(loop)
        if aclient is None:
            with self._lock:
                aclient = self._aclients.get(loop)
                if aclient is None:
                    aclient = self._aclients[loop] = self._new_aclient()
                    self._closers[loop] = self._close_at_shutdown(loop, aclient)
        return aclient

    def _new_aclient(self) -> httpx2.AsyncClient:
        # One TLS context for every loop's client: loading a CA bundle costs milliseconds.
        if self._async_verify is None:
            self._async_verify = self._verify_for(self._async_transport)
        return httpx2.AsyncClient(
            transport=self._async_transport,
            timeout=self._timeout,
            follow_redirects=False,
            trust_env=self._async_transport is None,
            verify=self._async_verify,
            headers={"User-Agent": USER_AGENT},
            cookies=_no_cookies(),
        )

    def _close_at_shutdown(
        self, loop: asyncio.AbstractEventLoop, aclient: httpx2.AsyncClient
    ) -> AsyncGenerator[None, None]:
        """An async generator, started now, that closes ``aclient`` when it is finalised: the loop's
        ``shutdown_asyncgens`` does that before the loop closes (PEP 525 hooks), on that loop."""

        async def closer() -> AsyncGenerator[None, None]:
            try:
                yield
            finally:
                with self._lock:
                    self._aclients.pop(loop, None)
                    self._closers.pop(loop, None)
                await aclient.aclose()

        agen = closer()
        step = agen.asend(None)  # the first step registers it with the running loop's asyncgen hooks
        with contextlib.suppress(StopIteration):
            step.send(None)
        return agen

    def close(self) -> None:
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()

    async def aclose(self) -> None:
        """Close this loop's async client (others close with their loops) and the sync client."""
        try:
            loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        with self._lock:
            aclient, self._aclient = self._aclient, None
            closer = self._closers.get(loop) if loop is not None else None
        if aclient is not None:
            await aclient.aclose()
        if closer is not None:
            await closer.aclose()
        self.close()
