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
``token_request_max_wait`` seconds in all, sleeping on the engine's clock; MSAL's own throttling replay is off
so retries are not multiplied. A ``Retry-After`` that outlasts those retries is remembered per request (per app
for client credentials): inside that window a request fails at once with 503 and the seconds left, without
asking Entra again. An agent id Entra does not know (its T1 refused) is remembered for ``_REFUSAL_TTL`` seconds.

The caller's token is checked before an On-Behalf-Of exchange: past its ``exp`` (no skew), the exchange is
refused locally with 401 ``invalid_token``, as Entra would refuse it (AADSTS500133).
"""

from __future__ import annotations

import copy
import logging
import math
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final, get_args

from .._clock import Clock, SystemClock, uniform
from .._config import EntraConfig
from .._http import HttpSeam
from .._ids import META_TENANTS, is_guid
from ..errors import ConfigurationError, TokenAcquisitionError
from ._types import OIDC_SCOPES, AccessToken, Flow, TokenRequest, assertion_claims

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
#: A token lifetime (``expires_in``) outside this range is not believed: Entra issues 60 to 90 minutes.
_MIN_LIFETIME: Final = 1.0
_MAX_LIFETIME: Final = 24 * 3600.0
#: How long a refused agent id (T1 refused: the agent is unknown or not the blueprint's) is remembered.
_REFUSAL_TTL: Final = 30.0
_MAX_REMEMBERED: Final = 4096
#: AADSTS500133: the user assertion (the caller's token) is not within its valid time range.
_ASSERTION_EXPIRED: Final = 500133


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
        self.agent_refused = False  # T1 refused for this agent id: remembered briefly


def _set_retry_after(error: TokenAcquisitionError, seconds: float) -> None:
    # The seconds a caller should wait (the 503's Retry-After header); rendered by the error itself.
    error.retry_after = max(1, math.ceil(seconds))


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

        token = acquirer.fetch(TokenRequest(flow="obo", scopes=("User.Read",), client_id=cid,
                                            tenant=principal.tid, user_assertion=raw_token))

    Raises ``TokenAcquisitionError`` (Entra refused, or could not be reached: ``status_code`` 503) and
    ``ConfigurationError`` (a request or credential that can never work). Never returns a cached token the
    caller asked to bypass (``force_refresh``, ``claims``).
    """

    def __init__(
        self,
        config: EntraConfig,
        http: HttpSeam,
        clock: Clock,
        *,
        jitter: Callable[[float, float], float] = uniform,
    ) -> None:
        # msal (and requests, which it imports) load here, not when entra_mw is imported.
        from ._credentials import CredentialChain
        from ._msal_http import MsalHttpClient

        self.config = config
        self._http = http
        self._clock = clock
        self._jitter = jitter
        # A clock written against the older protocol (time() and monotonic() only) sleeps for real.
        self._sleep: Callable[[float], None] = getattr(clock, "sleep", None) or SystemClock().sleep
        self._msal_http: MsalHttpClient = MsalHttpClient(
            http, clock=clock, instance=config.instance, allow_insecure_http=config.allow_insecure_http
        )
        self._mi_http: MsalHttpClient | None = None
        self._chain: CredentialChain = CredentialChain(
            config.credentials, send_x5c=config.send_x5c, mi_http=self._managed_identity_http, clock=clock
        )
        self._lock = threading.Lock()
        self._blueprints: OrderedDict[tuple[str, str], tuple[int, Any]] = OrderedDict()
        self._agents: OrderedDict[tuple[str, str, str], Any] = OrderedDict()
        self._limiters: OrderedDict[Any, anyio.CapacityLimiter] = OrderedDict()
        self._exchange_scope = config.token_exchange_scope
        # Monotonic time until which Entra asked us to wait (Retry-After), per request key.
        self._blocked: OrderedDict[tuple[str, ...], float] = OrderedDict()
        # Agent ids whose T1 Entra refused: (monotonic until, the error to raise again).
        self._refused_agents: OrderedDict[tuple[str, str, str], tuple[float, TokenAcquisitionError]] = OrderedDict()

    def __repr__(self) -> str:
        return f"Acquirer(client_id={self.config.client_id!r}, instance={self.config.instance!r})"

    # -- public ------------------------------------------------------------------------------------------

    def fetch(self, req: TokenRequest) -> AccessToken:
        """Get a token for ``req`` from Entra (or from MSAL's app-token cache for client credentials)."""
        self._validate(req)
        self._check_caller(req)
        block = self._block_key(req)
        self._fail_fast(req, block)
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
                        self._sleep(delay)
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
                self._remember(req, block, failed)
                raise err from None

    async def afetch(self, req: TokenRequest) -> AccessToken:
        """Async twin of :meth:`fetch`: MSAL is sync-only, so the work runs on a bounded worker pool
        (``config.acquisition_workers`` threads per event loop), under asyncio or trio."""
        import anyio.to_thread

        return await anyio.to_thread.run_sync(self.fetch, req, limiter=self._limiter())

    # -- what is remembered between requests ---------------------------------------------------------------

    @staticmethod
    def _block_key(req: TokenRequest) -> tuple[str, ...]:
        if req.flow in _APP_FLOWS:
            # Client credentials are throttled per app (the blueprint, or the agent), whatever the scopes.
            return (req.flow, req.tenant.lower(), req.client_id.lower(), (req.agent_id or "").lower())
        return ("request", req.cache_key())

    def _fail_fast(self, req: TokenRequest, block: tuple[str, ...]) -> None:
        now = self._clock.monotonic()
        with self._lock:
            until = self._blocked.get(block)
            if until is not None and now >= until:
                del self._blocked[block]
                until = None
            refused = None
            if req.agent_id is not None:
                agent_key = (req.tenant.lower(), req.client_id.lower(), req.agent_id.lower())
                remembered = self._refused_agents.get(agent_key)
                if remembered is not None and now >= remembered[0]:
                    del self._refused_agents[agent_key]
                elif remembered is not None:
                    refused = remembered[1]
        if refused is not None:
            logger.debug(
                "token request flow=%s agent=%s: agent refused recently; not asked again", req.flow, req.agent_id
            )
            raise copy.copy(refused)
        if until is not None:
            left = until - now
            logger.debug("token request flow=%s tenant=%s: Retry-After window, %.1f s left", req.flow, req.tenant, left)
            raise TokenAcquisitionError(
                f"Entra asked to wait before the next token request (Retry-After); {math.ceil(left)} s left",
                error="temporarily_unavailable",
                http_status=429,
                status_code=503,
                retry_after=left,
            )

    def _remember(self, req: TokenRequest, block: tuple[str, ...], failed: _Failed) -> None:
        now = self._clock.monotonic()
        if failed.retry_after is not None and failed.retry_after > 0:
            _set_retry_after(failed.error, failed.retry_after)
            with self._lock:
                self._blocked[block] = now + failed.retry_after
                self._blocked.move_to_end(block)
                while len(self._blocked) > _MAX_REMEMBERED:
                    self._blocked.popitem(last=False)
        if failed.agent_refused and req.agent_id is not None:
            agent_key = (req.tenant.lower(), req.client_id.lower(), req.agent_id.lower())
            with self._lock:
                self._refused_agents[agent_key] = (now + _REFUSAL_TTL, failed.error)
                self._refused_agents.move_to_end(agent_key)
                while len(self._refused_agents) > _MAX_REMEMBERED:
                    self._refused_agents.popitem(last=False)

    def _check_caller(self, req: TokenRequest) -> None:
        """Refuse an On-Behalf-Of exchange for a caller token already past its ``exp`` (no skew): Entra would
        answer AADSTS500133, and the caller must come back with a fresh token."""
        if req.flow not in ("obo", "agent_obo") or req.user_assertion is None:
            return
        expires = req.caller_expires_on
        if expires is None:
            claims = assertion_claims(req.user_assertion)
            exp = claims.get("exp") if claims is not None else None
            expires = float(exp) if isinstance(exp, int | float) and not isinstance(exp, bool) else None
        if expires is not None and self._clock.time() >= expires:
            logger.info("token request flow=%s refused locally: the caller's token has expired", req.flow)
            raise TokenAcquisitionError(
                "The caller's token has expired; sign in again or send a fresh token",
                error="invalid_grant",
                error_codes=(_ASSERTION_EXPIRED,),
                http_status=None,
                status_code=401,
            )

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
            if req.username and not (req.username.isascii() and req.username.isprintable() and " " not in req.username):
                raise ConfigurationError("username must be an ASCII user principal name", key="username")
            if req.user_object_id and not is_guid(req.user_object_id):
                raise ConfigurationError(
                    f"user_object_id must be a GUID, got {req.user_object_id!r}", key="user_object_id"
                )

    # -- one attempt -------------------------------------------------------------------------------------

    def _attempt(self, req: TokenRequest) -> AccessToken:
        import msal.exceptions
        import requests

        from ._msal_http import EndpointRefused, HttpStatusFailure

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
            if isinstance(exc, EndpointRefused):
                # Discovery named a token endpoint off the configured instance: the secret is never sent there.
                raise _Failed(
                    TokenAcquisitionError(
                        f"{req.flow}: Entra's metadata is unusable ({exc})",
                        error="invalid_response",
                        http_status=None,
                        status_code=502,
                    )
                ) from None
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
        except (ValueError, OverflowError) as exc:
            # OverflowError: MSAL turns an ``expires_in`` of 1e400 (infinity) into an int.
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
        try:
            return self._token_or_fail(result, leg="T1", cred=cred)
        except _Failed as failed:
            status = failed.error.http_status
            # Entra refused T1 for this agent id itself (unknown, or not this blueprint's agent).
            failed.agent_refused = not failed.retryable and failed.bad_credential is None and status == 400
            raise

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
                self._mi_http = MsalHttpClient(
                    self._http, allow_local_http=True, cache_discovery=False, clock=self._clock
                )
            return self._mi_http

    def web_app(self, token_cache: Any) -> Any:
        """An MSAL application for web sign-in (authorization code, silent refresh) with the current credential
        and ``token_cache``, the signed-in user's own cache (``None``: a throwaway one)."""
        cred = self._chain.current()
        return self._new_app(self.config.client_id, self.config.tenant_id, cred.value, token_cache=token_cache)

    def web_credential_refused(self, error: str | None, codes: Sequence[int]) -> bool:
        """After Entra refused the web app's credential on a web sign-in request: move to the next configured
        credential, as the other grants do (spec §2.2). True when there is one to try."""
        from ._credentials import is_invalid_credential_error

        if not is_invalid_credential_error(error, codes):
            return False
        return self._chain.advance(self._chain.current()) is not None

    def _new_app(
        self, client_id: str, tenant: str, credential: str | Mapping[str, Any], *, token_cache: Any = None
    ) -> Any:
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
            token_cache=token_cache if token_cache is not None else AppTokenCache(self._clock),
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
            lifetime = float(expires_in) if expires_in is not None and not isinstance(expires_in, bool) else None
        except (TypeError, ValueError, OverflowError):
            lifetime = None
        # "NaN", 1e400 and absurd lifetimes are refused: a token is cached for its lifetime (item: finite, 1 s-24 h).
        if lifetime is not None and not (math.isfinite(lifetime) and _MIN_LIFETIME <= lifetime <= _MAX_LIFETIME):
            lifetime = None
        if not isinstance(token, str) or not token or lifetime is None:
            raise self._malformed(leg)
        if not (token.isascii() and token.isprintable()) or " " in token:
            raise self._malformed(leg)  # it goes into an Authorization header
        now = self._clock.time()
        refresh_on: float | None = None
        raw_refresh = result.get("refresh_on")
        if isinstance(raw_refresh, int | float) and not isinstance(raw_refresh, bool) and math.isfinite(raw_refresh):
            # MSAL turns ``refresh_in`` into wall-clock ``refresh_on`` (it reads time.time(), not our clock);
            # carry it over to the engine's clock.
            refresh_on = now + min(lifetime, max(0.0, float(raw_refresh) - time.time()))
        token_type = result.get("token_type", "Bearer")
        if not isinstance(token_type, str) or token_type.lower() != "bearer":
            # The flows here all give Bearer tokens; anything else would be sent under a scheme nobody asked for.
            raise self._malformed(leg)
        token_type = "Bearer"
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
        # AADSTS500133 (the caller's token expired between validation and the exchange) is a 401 invalid_token
        # for the caller: TokenAcquisitionError maps it so.
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

    def _value_failure(self, leg: str, exc: ValueError | OverflowError) -> _Failed:
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

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            # Retry-After is a floor (RFC 9110 §10.2.3); jitter spreads replicas that were throttled together.
            return retry_after + self._jitter(0.0, min(1.0, 0.1 * max(retry_after, 1.0)))
        base = _BACKOFF_BASE * (2**attempt)
        return self._jitter(base / 2, base)
