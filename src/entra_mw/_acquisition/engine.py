"""The token acquisition engine: MSAL Python drives the grants, behind our HTTP seam (DESIGN §3, spec §3).

::

    acquirer = Acquirer(config, http, clock)
    token = acquirer.fetch(TokenRequest(flow="app", scopes=("api://weather/.default",),
                                        client_id=config.client_id, tenant=config.tenant_id))
    token = await acquirer.afetch(request)        # off the event loop, on a bounded worker pool

Flows (``TokenRequest.flow``), spec §3.2 to §3.5:

* ``app``: the blueprint's client credentials (``/.default`` scopes only, IDW10404).
* ``obo``: On-Behalf-Of the caller (``user_assertion``).
* ``agent_app``: T1 = blueprint client credentials for ``api://AzureADTokenExchange/.default`` with
  ``fmi_path=agent_id``; then the agent's client credentials with T1 as its client assertion.
* ``agent_obo``: T1, then OBO as the agent.
* ``agent_user``: T1, T2 = the agent's exchange token, then ``user_fic`` with T2 for ``username`` or
  ``user_object_id`` (exactly one).

MSAL objects: one blueprint application per tenant and one agent application per (tenant, agent), both in
bounded LRU maps; their token caches hold app tokens only (the caller's cache sits in front and keeps
OBO/user tokens, which MSAL never reads back, spec §3.8). Retries: 429/5xx/unreachable are retried up to
``config.token_request_retries`` times, honouring ``Retry-After`` with jitter, within
``token_request_max_wait`` seconds in all; MSAL's own throttling replay is off so retries are not multiplied.
"""

from __future__ import annotations

import logging
import random
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final, get_args

from .._clock import Clock
from .._config import META_TENANTS, EntraConfig, _is_guid
from .._http import HttpSeam
from ..errors import ConfigurationError, TokenAcquisitionError
from ._types import OIDC_SCOPES, AccessToken, Flow, TokenRequest

if TYPE_CHECKING:
    import anyio

    from ._credentials import CredentialChain, LoadedCredential
    from ._msal_http import MsalHttpClient

__all__ = ["Acquirer"]

logger = logging.getLogger("entra_mw.acquisition")

_FLOWS: Final = frozenset(get_args(Flow))
_APP_FLOWS: Final = frozenset({"app", "agent_app"})
_TENANT: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.-]{0,252}$")
_MAX_BLUEPRINT_APPS: Final = 256
_MAX_AGENT_APPS: Final = 1024
_MAX_LIMITERS: Final = 8
_BACKOFF_BASE: Final = 0.25
_MAX_DESCRIPTION: Final = 400


class _Failed(Exception):
    """One attempt failed; the retry loop decides what happens next. Never escapes :meth:`Acquirer.fetch`."""

    def __init__(
        self,
        error: TokenAcquisitionError,
        *,
        retryable: bool = False,
        retry_after: float | None = None,
        bad_credential: LoadedCredential | None = None,
    ) -> None:
        super().__init__(error.description)
        self.error = error
        self.retryable = retryable
        self.retry_after = retry_after
        self.bad_credential = bad_credential


def _first_line(text: Any) -> str:
    if not isinstance(text, str):
        return ""
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line[:_MAX_DESCRIPTION]


def _int_codes(value: Any) -> tuple[int, ...]:
    if not isinstance(value, list | tuple):
        return ()
    out: list[int] = []
    for item in value:
        if isinstance(item, int) and not isinstance(item, bool):
            out.append(item)
        elif isinstance(item, str) and item.isdigit():
            out.append(int(item))
    return tuple(out)


def _opt_str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


class Acquirer:
    """Gets tokens from Entra through MSAL, for every flow of spec §3. Thread-safe; one per engine.

    ::

        token = auth.acquirer.fetch(TokenRequest(flow="obo", scopes=("User.Read",), client_id=cid,
                                                 tenant=principal.tid, user_assertion=raw_token))

    Raises ``TokenAcquisitionError`` (Entra refused, or could not be reached: ``status_code`` 503) and
    ``ConfigurationError`` (a request or credential that can never work). Never returns a cached token the
    caller asked to bypass (``force_refresh``, ``claims``).
    """

    def __init__(self, config: EntraConfig, http: HttpSeam, clock: Clock) -> None:
        # msal (and requests, which it imports) load here, not when entra_mw is imported.
        from ._credentials import CredentialChain
        from ._msal_http import MsalHttpClient

        self.config = config
        self._http = http
        self._clock = clock
        self._msal_http: MsalHttpClient = MsalHttpClient(http)
        self._mi_http: MsalHttpClient | None = None
        self._chain: CredentialChain = CredentialChain(
            config.credentials, send_x5c=config.send_x5c, mi_http=self._managed_identity_http, clock=clock
        )
        self._lock = threading.Lock()
        self._blueprints: OrderedDict[tuple[str, str], tuple[int, Any]] = OrderedDict()
        self._agents: OrderedDict[tuple[str, str, str], Any] = OrderedDict()
        self._limiters: OrderedDict[Any, anyio.CapacityLimiter] = OrderedDict()
        self._exchange_scope = config.token_exchange_scope

    def __repr__(self) -> str:
        return f"Acquirer(client_id={self.config.client_id!r}, instance={self.config.instance!r})"

    # -- public ------------------------------------------------------------------------------------------

    def fetch(self, req: TokenRequest) -> AccessToken:
        """Get a token for ``req`` from Entra (or from MSAL's app-token cache for client credentials)."""
        self._validate(req)
        retries = max(0, int(self.config.token_request_retries))
        budget = max(0.0, float(self.config.token_request_max_wait))
        attempt = 0
        waited = 0.0
        switched = False
        while True:
            self._msal_http.reset_exchange()
            try:
                return self._attempt(req)
            except _Failed as failed:
                if failed.bad_credential is not None and not switched:
                    switched = True
                    if self._chain.advance(failed.bad_credential) is not None:
                        self._drop_blueprints()
                        continue
                if failed.retryable and attempt < retries:
                    delay = self._delay(attempt, failed.retry_after)
                    if waited + delay <= budget:
                        logger.info(
                            "token request retry flow=%s tenant=%s in %.2fs (attempt %d/%d) http_status=%s",
                            req.flow,
                            req.tenant,
                            delay,
                            attempt + 1,
                            retries,
                            failed.error.http_status,
                        )
                        time.sleep(delay)
                        waited += delay
                        attempt += 1
                        continue
                err = failed.error
                logger.warning(
                    "token request failed flow=%s tenant=%s client=%s agent=%s error=%s codes=%s "
                    "correlation_id=%s http_status=%s",
                    req.flow,
                    req.tenant,
                    req.client_id,
                    req.agent_id,
                    err.error,
                    list(err.error_codes),
                    err.correlation_id,
                    err.http_status,
                )
                raise err from None

    async def afetch(self, req: TokenRequest) -> AccessToken:
        """Async twin of :meth:`fetch`: MSAL is sync-only, so the work runs on a bounded worker pool
        (``config.acquisition_workers`` threads per event loop), under asyncio or trio."""
        import anyio.to_thread

        return await anyio.to_thread.run_sync(self.fetch, req, limiter=self._limiter())

    def close(self) -> None:
        """Drop the MSAL applications and their caches (the HTTP pool belongs to the engine)."""
        with self._lock:
            self._blueprints.clear()
            self._agents.clear()
        self._msal_http.close()
        if self._mi_http is not None:
            self._mi_http.close()

    def msal_cache_sizes(self) -> dict[str, int]:
        """Access tokens held in MSAL's caches: ``{"blueprint": n, "agents": n, "apps": n}`` (for tests and
        diagnostics; the caches hold app tokens only, so OBO and agent-user traffic does not grow them)."""
        with self._lock:
            blueprints = [app for _, app in self._blueprints.values()]
            agents = list(self._agents.values())
        return {
            "blueprint": sum(app.token_cache.access_token_count() for app in blueprints),
            "agents": sum(app.token_cache.access_token_count() for app in agents),
            "apps": len(blueprints) + len(agents),
        }

    # -- validation (spec §3, DESIGN §5) --------------------------------------------------------------

    def _validate(self, req: TokenRequest) -> None:
        if req.flow not in _FLOWS:
            raise ConfigurationError(f"unknown token flow {req.flow!r}", key="flow")
        if not self.config.instance.startswith("https://"):
            raise ConfigurationError(
                f"token acquisition needs an https:// instance, got {self.config.instance!r}", key="instance"
            )
        tenant = req.tenant
        if not isinstance(tenant, str) or not _TENANT.match(tenant):
            raise ConfigurationError(f"invalid tenant {tenant!r} for a token request", key="tenant")
        if tenant.lower() in META_TENANTS:
            # IDW10405: a token is always issued by one tenant; 'common'/'organizations' cannot be asked.
            raise ConfigurationError(
                f"IDW10405: tokens cannot be acquired from the meta-tenant {tenant!r}; give a tenant id "
                "(the caller's 'tid' for OBO, or a tenant override)",
                key="tenant",
            )
        if not isinstance(req.client_id, str) or not req.client_id.strip():
            raise ConfigurationError("client_id is required for token requests", key="client_id")
        scopes = req.scopes
        if not scopes or any(not isinstance(s, str) or not s or any(c.isspace() for c in s) for s in scopes):
            raise ConfigurationError(
                f"scopes must be non-empty strings without spaces, got {list(scopes)!r}", key="scopes"
            )
        if req.flow in _APP_FLOWS:
            bad = [s for s in scopes if not s.endswith("/.default")]
            if bad:
                raise ConfigurationError(
                    "IDW10404: app tokens need scopes ending in '/.default' (e.g. 'api://weather/.default'), "
                    f"got {bad!r}",
                    key="scopes",
                )
        elif not [s for s in scopes if s.lower() not in OIDC_SCOPES]:
            raise ConfigurationError(
                "user tokens need at least one resource scope besides openid/profile/offline_access",
                key="scopes",
            )
        if req.flow in ("obo", "agent_obo") and not (isinstance(req.user_assertion, str) and req.user_assertion):
            raise ConfigurationError(
                f"flow {req.flow!r} needs the caller's token (user_assertion)", key="user_assertion"
            )
        if req.flow.startswith("agent_"):
            agent = req.agent_id
            if not isinstance(agent, str) or not agent or len(agent) > 256 or any(c.isspace() for c in agent):
                raise ConfigurationError(f"flow {req.flow!r} needs an agent identity id", key="agent_id")
        if req.flow == "agent_user":
            if req.username and req.user_object_id:
                raise ConfigurationError(
                    "an agent user is named by username (UPN) or by user_object_id, not both",
                    key="username/user_object_id",
                )
            if not req.username and not req.user_object_id:
                raise ConfigurationError(
                    "an agent user needs a username (UPN) or a user_object_id", key="username/user_object_id"
                )
            if req.user_object_id and not _is_guid(req.user_object_id):
                raise ConfigurationError(
                    f"user_object_id must be a GUID, got {req.user_object_id!r}", key="user_object_id"
                )

    # -- one attempt -------------------------------------------------------------------------------------

    def _attempt(self, req: TokenRequest) -> AccessToken:
        import msal.exceptions
        import requests

        from ._msal_http import HttpStatusFailure

        try:
            result, leg, cred = self._run(req)
        except (_Failed, ConfigurationError):
            raise
        except TokenAcquisitionError as exc:
            retryable = exc.http_status is None or exc.http_status == 429 or exc.http_status >= 500
            raise _Failed(exc, retryable=retryable) from None
        except requests.RequestException as exc:
            if isinstance(exc, HttpStatusFailure):
                raise self._http_failure(req.flow) from None
            raise _Failed(
                TokenAcquisitionError(
                    f"Entra could not be reached ({exc})",
                    error="temporarily_unavailable",
                    http_status=None,
                ),
                retryable=True,
            ) from None
        except msal.exceptions.MsalServiceError:
            # MSAL raises this for HTTP >= 500 (oauth2cli/oauth2.py ``raise_for_status``).
            raise self._http_failure(req.flow) from None
        except ValueError as exc:
            raise self._value_failure(req.flow, exc) from None
        except RecursionError:
            # MSAL parses every answer with json.loads, which raises this (not ValueError) for deeply nested JSON.
            raise self._malformed(req.flow) from None
        return self._to_token(req, result, leg, cred)

    def _run(self, req: TokenRequest) -> tuple[dict[str, Any], str, LoadedCredential | None]:
        scopes = list(req.scopes)
        claims = req.claims or None
        if req.flow == "app":
            app, cred = self._blueprint(req.tenant, req.client_id)
            return self._for_client(app, scopes, claims, req.force_refresh), "app", cred
        if req.flow == "obo":
            app, cred = self._blueprint(req.tenant, req.client_id)
            result = app.acquire_token_on_behalf_of(
                req.user_assertion, self._user_scopes(scopes), claims_challenge=claims
            )
            return result, "obo", cred
        assert req.agent_id is not None  # checked by _validate
        agent = self._agent(req.tenant, req.client_id, req.agent_id)
        if req.flow == "agent_app":
            return self._for_client(agent, scopes, claims, req.force_refresh), "agent", None
        if req.flow == "agent_obo":
            result = agent.acquire_token_on_behalf_of(
                req.user_assertion, self._user_scopes(scopes), claims_challenge=claims
            )
            return result, "agent_obo", None
        t2 = self._token_or_fail(agent.acquire_token_for_client([self._exchange_scope]), leg="T2", cred=None)
        result = agent.acquire_token_by_user_federated_identity_credential(
            self._user_scopes(scopes),
            t2,
            username=req.username or None,
            user_object_id=None if req.username else req.user_object_id,
            claims_challenge=claims,
        )
        return result, "user_fic", None

    @staticmethod
    def _user_scopes(scopes: list[str]) -> list[str]:
        return [s for s in scopes if s.lower() not in OIDC_SCOPES]

    @staticmethod
    def _for_client(app: Any, scopes: list[str], claims: str | None, force_refresh: bool) -> dict[str, Any]:
        if force_refresh and not claims:
            # MSAL refuses force_refresh on acquire_token_for_client (application.py); dropping the cached
            # entry for these scopes makes it ask Entra. A claims challenge bypasses its cache by itself.
            cache = app.token_cache
            stale = list(
                cache.search(
                    cache.CredentialType.ACCESS_TOKEN,
                    target=scopes,
                    query={"client_id": app.client_id, "home_account_id": None},
                )
            )
            for entry in stale:
                cache.remove_at(entry)
        result: dict[str, Any] = app.acquire_token_for_client(scopes, claims_challenge=claims)
        return result

    def _t1(self, tenant: str, client_id: str, agent_id: str) -> str:
        """Leg T1 (spec §3.2): the blueprint's exchange token for one agent (cached by MSAL per fmi_path)."""
        app, cred = self._blueprint(tenant, client_id)
        result = app.acquire_token_for_client([self._exchange_scope], fmi_path=agent_id)
        return self._token_or_fail(result, leg="T1", cred=cred)

    def _token_or_fail(self, result: Any, *, leg: str, cred: LoadedCredential | None) -> str:
        token = result.get("access_token") if isinstance(result, dict) else None
        if isinstance(token, str) and token:
            logger.debug("%s token from %s", leg, result.get("token_source", "identity_provider"))
            return token
        if isinstance(result, dict) and "error" in result:
            raise self._result_failure(result, leg=leg, cred=cred)
        raise self._malformed(leg)

    # -- MSAL applications ---------------------------------------------------------------------------

    def _managed_identity_http(self) -> MsalHttpClient:
        from ._msal_http import MsalHttpClient

        with self._lock:
            if self._mi_http is None:
                self._mi_http = MsalHttpClient(self._http, allow_local_http=True, cache_discovery=False)
            return self._mi_http

    def _new_app(self, client_id: str, tenant: str, credential: str | Mapping[str, Any]) -> Any:
        import msal

        from .._version import __version__
        from ._msal_http import AppTokenCache, NoThrottleHttpCache

        return msal.ConfidentialClientApplication(
            client_id,
            client_credential=credential,
            authority=f"{self.config.instance}{tenant}",
            # The instance is configured explicitly; FakeEntra on 127.0.0.1 and sovereign hosts need no
            # central validation (spec §5.5).
            instance_discovery=False,
            token_cache=AppTokenCache(self._clock),
            http_client=self._msal_http,
            http_cache=NoThrottleHttpCache(),
            app_name="entra-mw",
            app_version=__version__,
        )

    def _blueprint(self, tenant: str, client_id: str) -> tuple[Any, LoadedCredential]:
        cred = self._chain.current()
        key = (tenant.lower(), client_id.lower())
        with self._lock:
            entry = self._blueprints.get(key)
            if entry is not None and entry[0] == cred.index:
                self._blueprints.move_to_end(key)
                return entry[1], cred
        app = self._new_app(client_id, tenant, cred.value)
        logger.debug("blueprint client built tenant=%s client=%s credential=%s", tenant, client_id, cred.label)
        with self._lock:
            entry = self._blueprints.get(key)
            if entry is not None and entry[0] == cred.index:
                return entry[1], cred
            self._blueprints[key] = (cred.index, app)
            self._blueprints.move_to_end(key)
            while len(self._blueprints) > _MAX_BLUEPRINT_APPS:
                self._blueprints.popitem(last=False)
        return app, cred

    def _agent(self, tenant: str, client_id: str, agent_id: str) -> Any:
        key = (tenant.lower(), client_id.lower(), agent_id.lower())
        with self._lock:
            app = self._agents.get(key)
            if app is not None:
                self._agents.move_to_end(key)
                return app

        def t1_assertion() -> str:
            return self._t1(tenant, client_id, agent_id)

        # The agent has no credential of its own: its client assertion is a fresh, MSAL-cached T1 (§3.3).
        app = self._new_app(agent_id, tenant, {"client_assertion": t1_assertion})
        logger.debug("agent client built tenant=%s agent=%s", tenant, agent_id)
        with self._lock:
            existing = self._agents.get(key)
            if existing is not None:
                return existing
            self._agents[key] = app
            while len(self._agents) > _MAX_AGENT_APPS:
                self._agents.popitem(last=False)
        return app

    def _drop_blueprints(self) -> None:
        with self._lock:
            self._blueprints.clear()

    def _limiter(self) -> anyio.CapacityLimiter:
        import anyio
        import anyio.lowlevel

        token = anyio.lowlevel.current_token()
        with self._lock:
            limiter = self._limiters.get(token)
            if limiter is None:
                limiter = self._limiters[token] = anyio.CapacityLimiter(self.config.acquisition_workers)
                while len(self._limiters) > _MAX_LIMITERS:
                    self._limiters.popitem(last=False)
            return limiter

    # -- results and errors ------------------------------------------------------------------------------

    def _to_token(self, req: TokenRequest, result: Any, leg: str, cred: LoadedCredential | None) -> AccessToken:
        if not isinstance(result, dict):
            raise self._malformed(leg)
        if "error" in result:
            raise self._result_failure(result, leg=leg, cred=cred)
        token = result.get("access_token")
        expires_in = result.get("expires_in")
        try:
            lifetime = float(expires_in) if expires_in is not None else None
        except (TypeError, ValueError):
            lifetime = None
        if not isinstance(token, str) or not token or lifetime is None or lifetime <= 0:
            raise self._malformed(leg)
        now = self._clock.time()
        refresh_on: float | None = None
        raw_refresh = result.get("refresh_on")
        if isinstance(raw_refresh, int | float) and not isinstance(raw_refresh, bool):
            # MSAL turns ``refresh_in`` into wall-clock ``refresh_on``; carry it over to the engine's clock.
            refresh_on = now + max(0.0, float(raw_refresh) - time.time())
        token_type = result.get("token_type")
        token_type = "Bearer" if not isinstance(token_type, str) or token_type.lower() == "bearer" else token_type
        source = result.get("token_source", "identity_provider")
        log = logger.info if source == "identity_provider" else logger.debug
        log(
            "token acquired flow=%s tenant=%s client=%s agent=%s scopes=%s source=%s expires_in=%d",
            req.flow,
            req.tenant,
            req.client_id,
            req.agent_id,
            " ".join(req.scopes),
            source,
            int(lifetime),
        )
        return AccessToken(
            token=token,
            expires_on=now + lifetime,
            refresh_on=refresh_on,
            token_type=token_type,
            scopes=tuple(req.scopes),
            tenant=req.tenant,
        )

    def _result_failure(self, result: Mapping[str, Any], *, leg: str, cred: LoadedCredential | None) -> _Failed:
        from ._credentials import is_invalid_credential_error

        exchange = self._msal_http.last_exchange()
        status = exchange.status if exchange is not None and exchange.status >= 400 else 400
        error = _opt_str(result.get("error"))
        codes = _int_codes(result.get("error_codes"))
        description = _first_line(result.get("error_description")) or (error or "token request refused")
        failure = TokenAcquisitionError(
            f"{leg}: {description}",
            error=error,
            suberror=_opt_str(result.get("suberror")),
            error_codes=codes,
            correlation_id=_opt_str(result.get("correlation_id")),
            trace_id=_opt_str(result.get("trace_id")),
            claims=_opt_str(result.get("claims")),
            http_status=status,
        )
        retryable = status == 429 or status >= 500 or error == "temporarily_unavailable"
        bad = cred if cred is not None and is_invalid_credential_error(error, codes) else None
        return _Failed(
            failure,
            retryable=retryable,
            retry_after=exchange.retry_after if exchange is not None else None,
            bad_credential=bad,
        )

    def _http_failure(self, leg: str) -> _Failed:
        exchange = self._msal_http.last_exchange()
        status = exchange.status if exchange is not None else 500
        body = exchange.error_body if exchange is not None else None
        if body is not None and "error" in body:
            return self._result_failure(body, leg=leg, cred=None)
        return _Failed(
            TokenAcquisitionError(
                f"{leg}: Entra answered HTTP {status}", error="temporarily_unavailable", http_status=status
            ),
            retryable=True,
            retry_after=exchange.retry_after if exchange is not None else None,
        )

    def _value_failure(self, leg: str, exc: ValueError) -> _Failed:
        exchange = self._msal_http.last_exchange()
        if exchange is None:
            # No answer was read: MSAL refused its input. That is a configuration problem, not an outage.
            raise ConfigurationError(f"token request refused by MSAL: {_first_line(str(exc))}", key="acquisition")
        if exchange.status >= 400:
            if exchange.error_body is not None and "error" in exchange.error_body:
                # e.g. tenant discovery refused (unknown tenant, AADSTS90002) while building the client.
                return self._result_failure(exchange.error_body, leg=leg, cred=None)
            return _Failed(
                TokenAcquisitionError(
                    f"{leg}: Entra answered HTTP {exchange.status} without a usable body",
                    error="invalid_response",
                    http_status=exchange.status,
                ),
                retryable=exchange.status == 429 or exchange.status >= 500,
                retry_after=exchange.retry_after,
            )
        return self._malformed(leg)

    @staticmethod
    def _malformed(leg: str) -> _Failed:
        return _Failed(
            TokenAcquisitionError(
                f"{leg}: Entra's answer could not be understood", error="invalid_response", http_status=502
            ),
            retryable=True,
        )

    @staticmethod
    def _delay(attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            # Retry-After is a floor (RFC 9110 §10.2.3); jitter spreads replicas that were throttled together.
            return retry_after + random.uniform(0.0, min(1.0, 0.1 * max(retry_after, 1.0)))  # noqa: S311
        base = _BACKOFF_BASE * (2**attempt)
        return random.uniform(base / 2, base)  # noqa: S311
