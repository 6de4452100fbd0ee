"""One transport for an engine that talks to FakeEntra *and* to a downstream API.

``EntraAuth`` sends everything (discovery, keys, token endpoint, downstream calls) through one seam, so the
end-to-end tests compose a transport that gives requests for the API's host to a handler and everything else
to FakeEntra.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import httpx2

Handler = Callable[[httpx2.Request], httpx2.Response]


class RoutingTransport(httpx2.BaseTransport, httpx2.AsyncBaseTransport):
    """Route by host: ``routes[host]`` answers that host's requests; ``fallback`` / ``afallback`` the rest."""

    def __init__(
        self,
        routes: Mapping[str, Handler],
        *,
        fallback: httpx2.BaseTransport,
        afallback: httpx2.AsyncBaseTransport,
    ) -> None:
        self._routes = {host.lower(): handler for host, handler in routes.items()}
        self._fallback = fallback
        self._afallback = afallback
        self.seen: list[str] = []

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        handler = self._routes.get(request.url.host.lower())
        self.seen.append(request.url.host)
        if handler is None:
            return self._fallback.handle_request(request)
        request.read()
        return handler(request)

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        handler = self._routes.get(request.url.host.lower())
        self.seen.append(request.url.host)
        if handler is None:
            return await self._afallback.handle_async_request(request)
        await request.aread()
        return handler(request)
