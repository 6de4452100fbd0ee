"""``EntraAuth``: the one engine per app. It owns the transport seam, the validator (and its key store) and the
token service (token cache, acquirer, plan memo) that each :class:`~entra_mw._downstream.Downstream` is handed;
these parts are private. Adapters hold one engine and call it. Nothing is fetched at construction.
"""

from __future__ import annotations

import threading
from types import TracebackType
from typing import TYPE_CHECKING

from ._bearer import Authorization, token_from
from ._clock import Clock, SystemClock
from ._config import EntraConfig
from ._context import AuthContext
from ._principal import Principal
from ._requirements import Requirement
from .errors import AuthError, Challenge, MissingToken, ProviderUnavailable

if TYPE_CHECKING:
    import ssl

    import httpx2

    from ._acquisition.cache import TokenCache
    from ._downstream import Downstream
    from ._validation import TokenValidator

__all__ = ["EntraAuth"]


class EntraAuth:
    """The engine: validates inbound tokens and gets tokens for downstream APIs. Build one per app.

    ::

        auth = EntraAuth(EntraConfig.from_env())
        principal = auth.validate(token)            # or: await auth.avalidate(token)
        header = auth.downstream(principal, token).authorization_header("graph")

    ``transport``/``async_transport`` carry every request (tests pass ``fake_entra.transport`` and
    ``fake_entra.async_transport``). ``token_cache`` shares one token cache between engines (pass another
    engine's :attr:`token_cache`). ``clock`` is any :class:`~entra_mw._clock.Clock`.
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
        # httpx2 loads with the first engine, not with `import entra_mw`.
        from ._http import HttpSeam
        from ._tokens import TokenService

        self._http = HttpSeam(
            transport=transport, async_transport=async_transport, timeout=config.http_timeout, verify=verify
        )
        self._http.check_url(config.instance, what="instance")
        self._lock = threading.Lock()
        self._validator: TokenValidator | None = None
        # The token cache, the acquirer (built on the first miss) and Downstream's memo of token plans.
        self._tokens = TokenService(config, self._http, self.clock, cache=token_cache)
        # The Downstream class, imported on first use so that `import entra_mw` leaves MSAL and the acquisition
        # modules alone (docs/performance.md, import cost).
        self._downstream_cls: type[Downstream] | None = None
        # Whether validation is this class's own (a subclass may override validate/avalidate, as test doubles
        # do); only then may authenticate answer from the validated-token cache without calling them.
        cls = type(self)
        self._own_validation = cls.validate is EntraAuth.validate and cls.avalidate is EntraAuth.avalidate

    def __repr__(self) -> str:
        return f"EntraAuth(tenant_id={self.config.tenant_id!r}, client_id={self.config.client_id!r})"

    # -- lazily built parts -----------------------------------------------------------------------------

    @property
    def _token_validator(self) -> TokenValidator:
        validator = self._validator
        if validator is None:
            from ._validation import TokenValidator

            with self._lock:
                if self._validator is None:
                    self._validator = TokenValidator(self.config, self._http, self.clock)
                validator = self._validator
        return validator

    @property
    def token_cache(self) -> TokenCache:
        """The engine's token cache (built on first use), for sharing it with another engine
        (``EntraAuth(config, token_cache=auth.token_cache)``) and for its ``stats``, ``clear()`` and ``len()``."""
        return self._tokens.cache

    # -- validation --------------------------------------------------------------------------------------

    def validate(self, token: str) -> Principal:
        """Verify a bearer token and return its claims. Raises ``InvalidToken`` (401) or
        ``ProviderUnavailable`` (503). Never raises anything else for any input."""
        return self._token_validator.validate(token)

    async def avalidate(self, token: str) -> Principal:
        """Async twin of :meth:`validate`; key fetches do not block the event loop."""
        return await self._token_validator.avalidate(token)

    def authenticate(
        self,
        authorization: Authorization,
        *,
        query: str | bytes | None = None,
        required: bool = True,
        requirement: Requirement | None = None,
        challenge: Challenge | None = None,
    ) -> AuthContext:
        """The one call every adapter makes: find the bearer token (RFC 6750), validate it, check
        ``requirement``, and return the request's :class:`AuthContext`.

        ``authorization`` is the request's ``Authorization`` value, a sequence of every value when it carried
        several, or ``None``; ``query`` its raw query string (a token there is refused). With
        ``required=False`` a request without a token gets an anonymous context (a token that *is* sent must
        still be valid, and ``requirement`` is not checked). Raises one renderable :class:`~entra_mw.EntraError`
        (400, 401, 403 or 503) otherwise, with ``challenge``'s parameters added::

            try:
                ctx = auth.authenticate(request.headers.get("Authorization"), query=request.query_string)
            except EntraError as exc:
                return Response(exc.body(), status=exc.status_code, headers=exc.headers())
        """
        try:
            found = self._bearer(authorization, query, required)
            if found is None:
                return AuthContext(self, None, None)
            token, principal = found
            if principal is None:
                principal = self.validate(token)
            if requirement is not None:
                requirement.check(principal)
        except (AuthError, ProviderUnavailable) as exc:
            if challenge is None:
                raise
            raise challenge.apply(exc) from None
        return AuthContext(self, principal, token)

    async def aauthenticate(
        self,
        authorization: Authorization,
        *,
        query: str | bytes | None = None,
        required: bool = True,
        requirement: Requirement | None = None,
        challenge: Challenge | None = None,
    ) -> AuthContext:
        """Async twin of :meth:`authenticate`; key fetches do not block the event loop."""
        try:
            found = self._bearer(authorization, query, required)
            if found is None:
                return AuthContext(self, None, None)
            token, principal = found
            if principal is None:
                principal = await self.avalidate(token)
            if requirement is not None:
                requirement.check(principal)
        except (AuthError, ProviderUnavailable) as exc:
            if challenge is None:
                raise
            raise challenge.apply(exc) from None
        return AuthContext(self, principal, token)

    def _bearer(
        self, authorization: Authorization, query: str | bytes | None, required: bool
    ) -> tuple[str, Principal | None] | None:
        """What both twins of :meth:`authenticate` start from: ``None`` for an anonymous request that may go on,
        else the token and, when the validated-token cache already holds it, its principal. Raises what the
        bearer parse raises (``MissingToken`` when a token is required, ``InvalidRequest``)."""
        hit = self._hit(authorization, query)
        if hit is not None:
            return hit
        try:
            return token_from(authorization, query), None
        except MissingToken:
            if not required:
                return None
            raise

    def _hit(self, authorization: Authorization, query: str | bytes | None) -> tuple[str, Principal] | None:
        """The token and its principal when the request's one ``Authorization`` value is ``Bearer <t>`` with
        ``t`` in the validated-token cache and no query to look at: such a token was fully parsed and checked
        when it entered the cache, so the bearer parse (about half of a cache hit's cost) is skipped. Every
        other request takes the full path."""
        validator = self._validator
        if validator is None or query or not self._own_validation:
            return None
        if isinstance(authorization, bytes):
            if authorization[:7].lower() != b"bearer ":
                return None
            token = authorization[7:].decode("latin-1")
        elif isinstance(authorization, str):
            if authorization[:7].lower() != "bearer ":
                return None
            token = authorization[7:]
        else:
            return None
        principal = validator.cached(token)
        return None if principal is None else (token, principal)

    def startup(self) -> None:
        """Fetch metadata and keys now (optional; otherwise the first request does)."""
        self._token_validator.refresh()

    async def astartup(self) -> None:
        await self._token_validator.arefresh()

    # -- acquisition -------------------------------------------------------------------------------------

    def downstream(self, principal: Principal | None = None, token: str | None = None) -> Downstream:
        """A request-scoped :class:`Downstream` acting for ``principal`` (whose raw ``token`` enables OBO), or
        app-only when both are ``None``."""
        cls = self._downstream_cls
        if cls is None:
            from ._downstream import Downstream

            cls = self._downstream_cls = Downstream
        return cls(self._tokens, principal=principal, token=token)

    # -- lifecycle ---------------------------------------------------------------------------------------

    def close(self) -> None:
        self._tokens.close()
        self._http.close()

    async def aclose(self) -> None:
        await self._tokens.aclose()
        await self._http.aclose()

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
