"""``EntraAuth``: the one engine per app. It owns the transport seam, the key store, the validator, the token
acquirer and the token cache; adapters hold one and call it. Nothing is fetched at construction.
"""

from __future__ import annotations

import ssl
import threading
from types import TracebackType
from typing import TYPE_CHECKING, Any

import httpx2

from ._clock import Clock, SystemClock
from ._config import EntraConfig
from ._downstream import Downstream
from ._http import HttpSeam
from ._principal import Principal

if TYPE_CHECKING:
    from ._acquisition.cache import TokenCache
    from ._acquisition.engine import Acquirer
    from ._validation import TokenValidator

__all__ = ["EntraAuth"]


class EntraAuth:
    """The engine: validates inbound tokens and gets tokens for downstream APIs. Build one per app.

    ::

        auth = EntraAuth(EntraConfig.from_env())
        principal = auth.validate(token)            # or: await auth.avalidate(token)
        header = auth.downstream(principal, token).authorization_header("graph")

    ``transport``/``async_transport`` carry every request (tests pass ``fake_entra.transport`` and
    ``fake_entra.async_transport``). ``token_cache`` shares one token cache between engines. ``clock`` is any
    object with ``time()`` and ``monotonic()``.
    """

    def __init__(
        self,
        config: EntraConfig,
        *,
        transport: httpx2.BaseTransport | None = None,
        async_transport: httpx2.AsyncBaseTransport | None = None,
        token_cache: TokenCache | None = None,
        clock: Clock | None = None,
        verify: ssl.SSLContext | str | bool = True,
    ) -> None:
        if not isinstance(config, EntraConfig):
            raise TypeError("EntraAuth needs an EntraConfig")
        self.config = config
        self.clock: Clock = clock if clock is not None else SystemClock()
        self.http = HttpSeam(
            transport=transport, async_transport=async_transport, timeout=config.http_timeout, verify=verify
        )
        self.http.check_url(config.instance, what="instance")
        self._lock = threading.Lock()
        self._validator: TokenValidator | None = None
        self._acquirer: Acquirer | None = None
        self._token_cache: TokenCache | None = token_cache
        # Downstream's memo of token plans per API (flow, scopes, tenant, key frame); the config never changes.
        self._downstream_plans: dict[tuple[object, ...], Any] = {}

    def __repr__(self) -> str:
        return f"EntraAuth(tenant_id={self.config.tenant_id!r}, client_id={self.config.client_id!r})"

    # -- lazily built parts -----------------------------------------------------------------------------

    @property
    def validator(self) -> TokenValidator:
        validator = self._validator
        if validator is None:
            from ._validation import TokenValidator

            with self._lock:
                if self._validator is None:
                    self._validator = TokenValidator(self.config, self.http, self.clock)
                validator = self._validator
        return validator

    @property
    def acquirer(self) -> Acquirer:
        acquirer = self._acquirer
        if acquirer is None:
            from ._acquisition.engine import Acquirer

            with self._lock:
                if self._acquirer is None:
                    self._acquirer = Acquirer(self.config, self.http, self.clock)
                acquirer = self._acquirer
        return acquirer

    @property
    def token_cache(self) -> TokenCache:
        cache = self._token_cache
        if cache is None:
            from ._acquisition.cache import TokenCache

            with self._lock:
                if self._token_cache is None:
                    self._token_cache = TokenCache.from_config(self.config, self.clock)
                cache = self._token_cache
        return cache

    # -- validation --------------------------------------------------------------------------------------

    def validate(self, token: str) -> Principal:
        """Verify a bearer token and return its claims. Raises ``InvalidToken`` (401) or
        ``ProviderUnavailable`` (503). Never raises anything else for any input."""
        return self.validator.validate(token)

    async def avalidate(self, token: str) -> Principal:
        """Async twin of :meth:`validate`; key fetches do not block the event loop."""
        return await self.validator.avalidate(token)

    def startup(self) -> None:
        """Fetch metadata and keys now (optional; otherwise the first request does)."""
        self.validator.refresh()

    async def astartup(self) -> None:
        await self.validator.arefresh()

    # -- acquisition -------------------------------------------------------------------------------------

    def downstream(self, principal: Principal | None = None, token: str | None = None) -> Downstream:
        """A request-scoped :class:`Downstream` acting for ``principal`` (whose raw ``token`` enables OBO), or
        app-only when both are ``None``."""
        # Imported at module level: an import statement here would cost more than the rest of a cache hit.
        return Downstream(self, principal=principal, token=token)

    # -- lifecycle ---------------------------------------------------------------------------------------

    def close(self) -> None:
        if self._acquirer is not None:
            self._acquirer.close()
        if self._token_cache is not None:
            self._token_cache.close()
        self.http.close()

    async def aclose(self) -> None:
        if self._acquirer is not None:
            self._acquirer.close()
        if self._token_cache is not None:
            await self._token_cache.aclose()
        await self.http.aclose()

    def __enter__(self) -> EntraAuth:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> EntraAuth:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    def _debug_state(self) -> dict[str, Any]:
        return {"validator": self._validator is not None, "acquirer": self._acquirer is not None}
