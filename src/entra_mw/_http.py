"""The one transport seam: every request entra_mw makes (discovery, keys, token endpoint, downstream APIs) goes
through the pooled httpx2 clients built here. Tests inject FakeEntra's transports; nothing patches the network.
"""

from __future__ import annotations

import ssl
import threading
from typing import Final

import httpx2

from .errors import ConfigurationError

__all__ = ["DEFAULT_TIMEOUT", "HttpSeam", "USER_AGENT"]

DEFAULT_TIMEOUT: Final = httpx2.Timeout(10.0, connect=5.0)
USER_AGENT: Final = "entra-mw"


class HttpSeam:
    """Lazily built, pooled sync and async httpx2 clients for one engine.

    ``transport``/``async_transport`` replace the network (FakeEntra's, or an ``httpx2.MockTransport``). When either
    is injected, plain ``http://`` URLs are allowed (a test transport never leaves the process); otherwise every URL
    must be ``https://``. Redirects are never followed: metadata, keys and token endpoints must answer directly
    (a redirect there is an attack or a misconfiguration, DESIGN §2).
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
        # A CA file path becomes an SSLContext: httpx2 deprecates passing a path as ``verify``.
        self._verify: ssl.SSLContext | bool = (
            ssl.create_default_context(cafile=verify) if isinstance(verify, str) else verify
        )
        self._lock = threading.Lock()
        self._client: httpx2.Client | None = None
        self._aclient: httpx2.AsyncClient | None = None

    @property
    def injected(self) -> bool:
        """True when a test transport replaces the network."""
        return self._transport is not None or self._async_transport is not None

    def check_url(self, url: str, *, what: str) -> None:
        """Refuse non-https URLs unless a test transport is injected."""
        if not url.startswith("https://") and not (self.injected and url.startswith("http://")):
            raise ConfigurationError(f"{what} must be an https:// URL, got {url!r}", key=what)

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
                        verify=self._verify,
                        headers={"User-Agent": USER_AGENT},
                    )
        return client

    @property
    def aclient(self) -> httpx2.AsyncClient:
        aclient = self._aclient
        if aclient is None:
            with self._lock:
                aclient = self._aclient
                if aclient is None:
                    aclient = self._aclient = httpx2.AsyncClient(
                        transport=self._async_transport,
                        timeout=self._timeout,
                        follow_redirects=False,
                        trust_env=self._async_transport is None,
                        verify=self._verify,
                        headers={"User-Agent": USER_AGENT},
                    )
        return aclient

    def close(self) -> None:
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()

    async def aclose(self) -> None:
        with self._lock:
            aclient, self._aclient = self._aclient, None
        if aclient is not None:
            await aclient.aclose()
        self.close()
