"""The token service: what :class:`~entra_mw._downstream.Downstream` gets tokens from. Owned by the engine.

It holds the token cache, the *source* that answers a miss (the engine's MSAL acquirer unless another is
given), the memo of token plans that lets a cache hit skip building a ``TokenRequest``, and the configuration
and transport seam a downstream call needs. ``Downstream`` talks to this and to nothing else of the engine.

The source is pluggable: :meth:`TokenService.with_source` is a view that shares the cache, the plan memo and
the seam but asks another source on a miss (for example a signed-in session's tokens)::

    tokens = TokenService(config, http, clock)
    token = tokens.get(request)                 # cache, then the acquirer; or: await tokens.aget(request)
    session_tokens = tokens.with_source(my_session_source)

Nothing heavy loads here: the cache module on first use, the acquirer (and MSAL) on the first miss.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from ._acquisition._types import AccessToken, TokenRequest
    from ._acquisition.cache import TokenCache
    from ._acquisition.engine import Acquirer
    from ._clock import Clock
    from ._config import EntraConfig
    from ._http import HttpSeam

__all__ = ["TokenService", "TokenSource"]

logger = logging.getLogger("entra_mw.downstream")

# Memoised plans: one per API, app flag, agent view and caller tenant in use (see Downstream._cached).
_MAX_PLANS = 4096


class TokenSource(Protocol):
    """Where tokens come from on a cache miss. The engine's :class:`~entra_mw._acquisition.engine.Acquirer` is
    one; any object with these two methods is another."""

    def fetch(self, req: TokenRequest) -> AccessToken: ...

    async def afetch(self, req: TokenRequest) -> AccessToken: ...


class _Shared:
    """What every view of one service shares: the lazily built cache and acquirer, and the plan memo."""

    __slots__ = ("acquirer", "cache", "clock", "config", "http", "lock", "plans")

    def __init__(self, config: EntraConfig, http: HttpSeam, clock: Clock, cache: TokenCache | None) -> None:
        self.config = config
        self.http = http
        self.clock = clock
        self.lock = threading.Lock()
        self.cache = cache
        self.acquirer: Acquirer | None = None
        self.plans: dict[tuple[object, ...], Any] = {}


class TokenService:
    """The engine's tokens for downstream APIs: cache in front, a source behind it. See the module
    documentation."""

    __slots__ = ("_cache", "_shared", "_source", "config", "http", "plans")

    def __init__(
        self,
        config: EntraConfig,
        http: HttpSeam,
        clock: Clock,
        *,
        cache: TokenCache | None = None,
        source: TokenSource | None = None,
        _shared: _Shared | None = None,
    ) -> None:
        shared = _shared if _shared is not None else _Shared(config, http, clock, cache)
        self._shared = shared
        self._cache = shared.cache  # this view's reference, once built: a hit reads one attribute less
        self._source = source  # None: the engine's acquirer, built on the first miss
        self.config = shared.config
        self.http = shared.http
        #: The plan memo (``Downstream``'s): cleared when it reaches ``max_plans`` entries.
        self.plans = shared.plans

    max_plans = _MAX_PLANS

    def __repr__(self) -> str:
        source = "acquirer" if self._source is None else type(self._source).__name__
        return f"TokenService(client_id={self.config.client_id!r}, source={source})"

    def with_source(self, source: TokenSource) -> TokenService:
        """A view of this service that asks ``source`` on a miss, sharing the cache, plans and seam."""
        return TokenService(self.config, self.http, self._shared.clock, source=source, _shared=self._shared)

    # -- the parts, built on first use ---------------------------------------------------------------------

    @property
    def cache(self) -> TokenCache:
        cache = self._cache
        if cache is None:
            from ._acquisition.cache import TokenCache

            shared = self._shared
            with shared.lock:
                if shared.cache is None:
                    shared.cache = TokenCache.from_config(shared.config, shared.clock)
                cache = self._cache = shared.cache
        return cache

    @property
    def acquirer(self) -> Acquirer:
        """The engine's acquirer (MSAL loads with it)."""
        acquirer = self._shared.acquirer
        if acquirer is None:
            from ._acquisition.engine import Acquirer

            shared = self._shared
            with shared.lock:
                if shared.acquirer is None:
                    shared.acquirer = Acquirer(shared.config, shared.http, shared.clock)
                acquirer = shared.acquirer
        return acquirer

    @property
    def source(self) -> TokenSource:
        return self._source if self._source is not None else self.acquirer

    # -- tokens ------------------------------------------------------------------------------------------

    def get(self, req: TokenRequest) -> AccessToken:
        """The token for ``req``: from the cache, else from the source (once for concurrent callers)."""
        return self.cache.get_or_fetch(req, self._fetch)

    async def aget(self, req: TokenRequest) -> AccessToken:
        """Async twin of :meth:`get`."""
        return await self.cache.aget_or_fetch(req, self._afetch)

    # The cache calls these only on a miss, so a hit never builds the acquirer (and never imports MSAL).
    def _fetch(self, req: TokenRequest) -> AccessToken:
        logger.debug("token request flow=%s tenant=%s agent=%s", req.flow, req.tenant, req.agent_id)
        return self.source.fetch(req)

    async def _afetch(self, req: TokenRequest) -> AccessToken:
        logger.debug("token request flow=%s tenant=%s agent=%s", req.flow, req.tenant, req.agent_id)
        return await self.source.afetch(req)

    # -- lifecycle ---------------------------------------------------------------------------------------

    def close(self) -> None:
        shared = self._shared
        if shared.acquirer is not None:
            shared.acquirer.close()
        if shared.cache is not None:
            shared.cache.close()

    async def aclose(self) -> None:
        shared = self._shared
        if shared.acquirer is not None:
            shared.acquirer.close()
        if shared.cache is not None:
            await shared.cache.aclose()
