"""``Downstream``: the request-scoped object that gets tokens for downstream APIs and calls them safely.

Flow selection follows the sidecar (spec §1.4): an app token when asked for (``app=True`` or the API's
``request_app_token``); On-Behalf-Of the caller otherwise. Without a caller token, a delegated API is refused
with 401 (:class:`~entra_mw.errors.DownstreamRequestError`, ``reason="no_caller"``), as Microsoft.Identity.Web
refuses it: an app token is never
used in a user's place unless the API or the call asks for one.
:meth:`Downstream.for_agent` gives the same interface acting as an agent identity: autonomous (T1 then the
agent's client credentials, spec §3.3), agent OBO (T1 then OBO as the agent, §3.4), or agent user (T1,
T2, then ``user_fic``, §3.5).

Calls (:meth:`Downstream.call`) keep to DESIGN §5 "Downstream calls" and spec §1.6: the caller's token is
never forwarded; the URL is the configured base URL plus a checked relative path (absolute URLs, ``//host``,
dot segments, encoded slashes, backslashes, control characters and fragments are refused); reserved headers
cannot be set; redirects are not followed; the body is read up to ``max_response_bytes`` and the whole call
(connect, send, headers, body) within the API's ``timeout``; a 401 claims challenge triggers one
re-acquisition with those claims and one retry. Every input is checked before a token is asked for.

An OBO token is bound to the caller's token: it is cached no longer than that token's ``exp`` (plus the
configured clock skew), and a ``Principal`` given with the token must have been validated from it.

Tokens come from the engine's token service (:mod:`entra_mw._tokens`: cache, acquirer, plan memo), the only
part of the engine a ``Downstream`` holds. The multi-step work of a call (token, request, maybe a claims
challenge, token, request) is written once as a flow (:meth:`Downstream._call_steps`, :mod:`entra_mw._flow`)
driven by the flow runner's sync and async drivers.

Errors::

    DownstreamRequestError (EntraError, ValueError)  400: unsafe path, query, header or body; bad agent
                                                     arguments; unknown API, no scopes, app scope without
                                                     /.default, a meta-tenant; a Principal of another token
                                                     401 (reason "no_caller"): a delegated API asked for
                                                     without a caller token
    DownstreamCallError (EntraError)                 502/504: the API could not be reached, was too slow
                                                     (overall deadline), or sent too much
    TokenAcquisitionError                            from the acquirer: Entra refused or could not be reached
"""

from __future__ import annotations

import base64
import binascii
import functools
import json as _json
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import quote, unquote

import httpx2

from ._acquisition._types import (
    OIDC_SCOPES,
    AccessToken,
    Flow,
    TokenRequest,
    assertion_claims,
    caller_digest,
    scope_set,
)
from ._config import DownstreamApi, sequence_of
from ._flow import Flow as Steps
from ._flow import arun, run
from ._http import Deadline, aread_capped, read_capped
from ._ids import DOMAIN, META_TENANTS, is_guid
from ._principal import Principal
from .errors import ConfigurationError, DownstreamCallError, DownstreamRequestError

if TYPE_CHECKING:
    from ._acquisition.cache import CachedToken
    from ._tokens import TokenService

__all__ = [
    "RESERVED_HEADERS",
    "RESERVED_HEADER_PREFIXES",
    "Downstream",
    "DownstreamCallError",
    "DownstreamRequestError",
    "build_url",
    "claims_from_challenge",
    "is_reserved_header",
]

logger = logging.getLogger("entra_mw.downstream")

#: Headers a caller or a configuration may never set on a downstream call (spec §1.6; IDW PR #3793, and the
#: headers App Service authentication and reverse proxies trust, PR #3915).
RESERVED_HEADERS: Final = frozenset(
    {
        "authorization",
        "host",
        "content-length",
        "transfer-encoding",
        "connection",
        "upgrade",
        "expect",
        "proxy-authorization",
        "cookie",
        "x-forwarded-for",
        "x-forwarded-host",
        "x-forwarded-proto",
        "x-original-url",
        "x-rewrite-url",
    }
)
RESERVED_HEADER_PREFIXES: Final = ("sec-", "proxy-", "x-ms-token-", "x-ms-client-principal")

_DEFAULT_SUFFIX: Final = "/.default"
_METHODS: Final = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})
# RFC 9110 §5.6.2 token characters: a header name is a token.
_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
# A URI scheme (RFC 3986 §3.1) followed by ':' at the start of the path makes it absolute.
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*:")
_PCT = re.compile(r"%(?![0-9A-Fa-f]{2})")
# Percent-encoded '/', '\' and NUL change how a server splits or ends the path.
_ENCODED_SEPARATOR = re.compile(r"%(?:2[Ff]|5[Cc]|00)")
_MAX_CLAIMS_CHALLENGE: Final = 16 * 1024
# The claims that tie a Principal to the token it was validated from.
_IDENTITY_CLAIMS: Final = ("oid", "sub", "tid", "iss", "azp", "appid", "uti", "iat", "nbf", "exp")


# -- pure helpers: URL, headers, claims challenge ------------------------------------------------------------


def _check_text(value: str, what: str) -> None:
    # Printable ASCII only: whitespace (including a leading space before a host), CR/LF, tabs, NUL, DEL and
    # non-ASCII look-alikes (fullwidth dots) are refused; percent-encode anything else.
    for ch in value:
        if not ("\x21" <= ch <= "\x7e"):
            raise DownstreamRequestError(
                f"{what} contains whitespace, a control or a non-ASCII character; percent-encode it",
                reason="unsafe_path",
            )


def _check_path(path: str) -> tuple[str, str]:
    """Return (path, query) of a relative reference after the checks of DESIGN §5 "Downstream calls"."""
    if not isinstance(path, str):
        raise DownstreamRequestError("the relative path must be a string", reason="unsafe_path")
    if not path:
        return "", ""
    _check_text(path, "the relative path")
    if "\\" in path:
        raise DownstreamRequestError("the relative path contains a backslash", reason="unsafe_path")
    if "#" in path:
        raise DownstreamRequestError("the relative path contains a fragment ('#')", reason="unsafe_path")
    if "@" in path:
        raise DownstreamRequestError("the relative path contains '@'; percent-encode it as %40", reason="unsafe_path")
    if path.startswith("//"):
        raise DownstreamRequestError(
            "the relative path starts with '//' (a network-path reference)", reason="unsafe_path"
        )
    if _SCHEME.match(path):
        raise DownstreamRequestError(
            "the relative path is an absolute URL; give a path under the API's base URL", reason="unsafe_path"
        )
    if _PCT.search(path):
        raise DownstreamRequestError("the relative path contains a malformed percent-escape", reason="unsafe_path")
    raw_path, _, query = path.partition("?")
    raw_path = raw_path[1:] if raw_path.startswith("/") else raw_path
    if "//" in raw_path:
        raise DownstreamRequestError("the relative path contains an empty segment ('//')", reason="unsafe_path")
    if _ENCODED_SEPARATOR.search(raw_path):
        raise DownstreamRequestError("the relative path contains an encoded '/', '\\' or NUL", reason="unsafe_path")
    for segment in raw_path.split("/"):
        # Decode repeatedly so a double-encoded dot (%252e) cannot pass a proxy that decodes twice; drop
        # ';params' because some servers treat '..;' as '..'.
        decoded = segment
        for _ in range(3):
            step = unquote(decoded)
            if step == decoded:
                break
            decoded = step
        if decoded.split(";", 1)[0] in (".", "..") or "/" in decoded or "\\" in decoded:
            raise DownstreamRequestError("the relative path contains a '.' or '..' segment", reason="unsafe_path")
    return raw_path, query


def _encode_query(items: Sequence[tuple[str, str]]) -> str:
    out: list[str] = []
    for key, value in items:
        if not isinstance(key, str) or not isinstance(value, str) or not key:
            raise DownstreamRequestError(
                "query parameters must be non-empty string names with string values", reason="bad_query"
            )
        try:
            out.append(f"{quote(key, safe='')}={quote(value, safe='')}")
        except UnicodeEncodeError:
            raise DownstreamRequestError(
                "a query parameter is not valid Unicode text (a lone surrogate)", reason="bad_query"
            ) from None
    return "&".join(out)


def build_url(base_url: str, path: str = "", query: Sequence[tuple[str, str]] = ()) -> str:
    """The downstream URL: ``base_url`` (trailing ``/`` trimmed) + ``/`` + ``path`` (leading ``/`` trimmed),
    then ``query`` URL-escaped (spec §1.6 "Outbound URL"). Raises :class:`DownstreamRequestError` for any path
    that could leave the base URL.

    ::

        build_url("https://graph.microsoft.com/v1.0/", "/me/messages", [("$top", "5")])
        # 'https://graph.microsoft.com/v1.0/me/messages?%24top=5'
    """
    rel_path, rel_query = _check_path(path)
    base = base_url.rstrip("/")
    url = base + "/" + rel_path if rel_path else base
    parts = [q for q in (rel_query, _encode_query(query)) if q]
    if parts:
        url += "?" + "&".join(parts)
    # The final URL must stay on the configured origin and under the configured path (belt and braces over the
    # checks above: whatever httpx2's parser makes of it is what is sent).
    try:
        final, origin = httpx2.URL(url), httpx2.URL(base_url)
    except (httpx2.InvalidURL, ValueError, TypeError):
        raise DownstreamRequestError("the downstream URL is not valid", reason="unsafe_path") from None
    if (final.scheme, final.host, final.port) != (origin.scheme, origin.host, origin.port):
        raise DownstreamRequestError("the relative path leaves the API's origin", reason="unsafe_path")
    base_path = origin.raw_path.split(b"?", 1)[0].rstrip(b"/")
    final_path = final.raw_path.split(b"?", 1)[0]
    if base_path and final_path != base_path and not final_path.startswith(base_path + b"/"):
        raise DownstreamRequestError("the relative path leaves the API's base path", reason="unsafe_path")
    return url


def is_reserved_header(name: str) -> bool:
    """True for headers nobody may set on a downstream call (spec §1.6), compared case-insensitively.

    ::

        is_reserved_header("authorization"), is_reserved_header("Sec-Fetch-Mode")   # True, True
    """
    low = name.lower()
    return low in RESERVED_HEADERS or low.startswith(RESERVED_HEADER_PREFIXES)


def _check_header(name: object, value: object, where: str) -> tuple[str, str]:
    if not isinstance(name, str) or not _TOKEN.fullmatch(name):
        raise DownstreamRequestError(f"{where}: header names must be RFC 9110 tokens", reason="bad_header")
    if is_reserved_header(name):
        raise DownstreamRequestError(
            f"{where}: the header {name!r} is reserved and cannot be set", reason="reserved_header"
        )
    if not isinstance(value, str):
        raise DownstreamRequestError(f"{where}: the value of header {name!r} must be a string", reason="bad_header")
    # RFC 9110 §5.5: no CR, LF or NUL in a field value (header injection); other controls except HTAB too.
    if any((ch < "\x20" and ch != "\t") or ch == "\x7f" for ch in value):
        raise DownstreamRequestError(
            f"{where}: the value of header {name!r} contains a control character", reason="bad_header"
        )
    if not value.isascii():
        # Header values travel as bytes: non-ASCII text has no agreed encoding (RFC 9110 §5.5 obs-text).
        raise DownstreamRequestError(
            f"{where}: the value of header {name!r} contains non-ASCII characters; encode it first",
            reason="bad_header",
        )
    return name, value


def _build_headers(api: DownstreamApi, headers: Mapping[str, str] | None, *, has_content: bool) -> dict[str, str]:
    out: dict[str, str] = {}

    def put(name: str, value: str) -> None:
        for existing in [k for k in out if k.lower() == name.lower()]:
            del out[existing]
        out[name] = value

    if api.accept_header:
        put(*_check_header("Accept", api.accept_header, "accept_header"))
    for name, value in api.extra_headers.items():
        put(*_check_header(name, value, "DownstreamApi.extra_headers"))
    if headers is not None:
        if not isinstance(headers, Mapping):
            raise DownstreamRequestError("headers must be a mapping of names to values", reason="bad_header")
        for name, value in headers.items():
            put(*_check_header(name, value, "headers"))
    if has_content and not any(k.lower() == "content-type" for k in out) and api.content_type:
        put(*_check_header("Content-Type", api.content_type, "content_type"))
    return out


_AUTH_PARAM = re.compile(r'([A-Za-z0-9_\-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,"]*))')


def claims_from_challenge(www_authenticate: str | None) -> str | None:
    """The claims (JSON text) of a ``Bearer`` claims challenge
    (``error="insufficient_claims", claims="<base64>"``), or ``None`` when the header is not one. Malformed
    values are ignored, never raised.

    ::

        claims_from_challenge('Bearer error="insufficient_claims", claims="eyJhY2Nlc3NfdG9rZW4iOnt9fQ=="')
        # '{"access_token":{}}'
    """
    if not www_authenticate or len(www_authenticate) > 4 * _MAX_CLAIMS_CHALLENGE:
        return None
    params: dict[str, str] = {}
    for match in _AUTH_PARAM.finditer(www_authenticate):
        value = match.group(2) if match.group(2) is not None else match.group(3)
        params.setdefault(match.group(1).lower(), re.sub(r"\\(.)", r"\1", value or ""))
    if params.get("error") != "insufficient_claims" or not params.get("claims"):
        return None
    encoded = params["claims"].strip()
    if len(encoded) > _MAX_CLAIMS_CHALLENGE:
        return None
    padded = encoded + "=" * (-len(encoded) % 4)
    for decode in (base64.b64decode, base64.urlsafe_b64decode):
        try:
            text = decode(padded.encode("ascii")).decode("utf-8")
            value = _json.loads(text)
        except (ValueError, binascii.Error, UnicodeError):
            continue
        if isinstance(value, dict):
            return text
    return None


# -- token request planning ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class _Agent:
    agent_id: str
    username: str | None = None
    user_id: str | None = None


def _check_tenant(tenant: str, what: str, *, config_key: str | None = None) -> str:
    """The tenant to ask. A bad ``tenant=`` of the request is a 400; a configured one (``config_key``) that can
    never work is a ``ConfigurationError`` naming the key."""
    value = _real_tenant(tenant) if isinstance(tenant, str) else None
    if value is not None:
        return value
    if isinstance(tenant, str) and tenant.strip().lower() in META_TENANTS:
        # IDW10405: a token must be requested in a real tenant; 'common'/'organizations' only make sense for
        # sign-in, never for client credentials or OBO.
        text = (
            f"{what} is the meta-tenant {tenant.strip()!r}: app and On-Behalf-Of tokens need a specific tenant; "
            "pass tenant= or set DownstreamApi.tenant (IDW10405)"
        )
    else:
        shown = tenant[:100] if isinstance(tenant, str) else type(tenant).__name__
        text = f"{what} must be a tenant id (GUID) or a domain, got {shown!r}"
    if config_key is not None:
        raise ConfigurationError(text, key=config_key)
    raise DownstreamRequestError(text, reason="bad_tenant")


# The checks below are pure functions of a few strings that repeat on every request (the configured tenant,
# the callers' tids, the APIs' scopes), so they are memoised; the bound keeps odd inputs from growing them.
@functools.lru_cache(maxsize=1024)
def _real_tenant(tenant: str) -> str | None:
    value = tenant.strip()
    if value.lower() in META_TENANTS or not (is_guid(value) or DOMAIN.fullmatch(value)):
        return None
    return value


@functools.lru_cache(maxsize=1024)
def _normalized_scopes(wanted: tuple[str, ...], app_path: bool) -> tuple[tuple[str, ...], str] | None:
    """The scopes to ask for and their :func:`scope_set` text, or ``None`` when none is usable."""
    if app_path:
        # The app path uses only the first scope, which must be a resource's '/.default' (IDW10404, §1.4).
        first = wanted[0]
        return ((first,), scope_set((first,))) if first.endswith(_DEFAULT_SUFFIX) else None
    normalized = tuple(sorted({s for s in wanted if s.lower() not in OIDC_SCOPES}))
    return (normalized, scope_set(normalized)) if normalized else None


@dataclass(frozen=True, slots=True)
class _HitPlan:
    """What a cache hit needs: the L1 key's first 32 bytes (every part but the caller), and whether the
    caller's digest follows them."""

    prefix: bytes
    obo: bool


@dataclass(frozen=True, slots=True)
class _Call:
    """One HTTP request to send (the generator's ``yield``)."""

    method: str
    url: str
    headers: dict[str, str]
    content: bytes | None
    timeout: float
    max_bytes: int
    api: str


# -- the request-scoped object -------------------------------------------------------------------------------


class Downstream:
    """Gets tokens for downstream APIs and calls them, for one request's caller (or for the app itself).

    Built by ``auth.downstream(principal, token)``, or by the middleware at ``scope["entra_mw"].downstream``::

        header = downstream.authorization_header("graph")             # OBO for the caller, "Bearer …"
        header = await downstream.aauthorization_header("graph", app=True)   # app-only
        response = downstream.call("graph", "me/messages", params={"$top": "5"})
        agent = downstream.for_agent("00000000-0000-0000-0000-00000000a9e1")
        response = await agent.acall("weather", "forecast")           # autonomous or agent OBO

    Flow: app-only when ``app=True`` or the API sets ``request_app_token``; On-Behalf-Of the caller otherwise
    (with no caller token, that is a 401 :class:`~entra_mw.errors.DownstreamRequestError`). Tokens come from the
    engine's token cache (never shared across users, tenants, agents or scopes); an OBO token is served no
    longer than the caller's token is valid. The caller's own token is never sent to a downstream API.
    """

    __slots__ = ("_agent", "_caller", "_digest", "_principal", "_token", "_tokens")
    _caller: tuple[float | None, str | None]

    def __init__(
        self,
        tokens: TokenService,
        *,
        principal: Principal | None = None,
        token: str | None = None,
        _agent: _Agent | None = None,
    ) -> None:
        self._tokens = tokens
        self._principal = principal
        self._token = token or None
        self._agent = _agent
        self._digest: bytes | None = None  # SHA-256 of the caller's token, once a cache key has needed it
        # self._caller, set on the way to a token request: (exp, oid) of the caller's token, once checked.

    def __repr__(self) -> str:
        agent = f", agent_id={self._agent.agent_id!r}" if self._agent else ""
        oid = self._principal.oid if self._principal is not None else None
        return f"Downstream(caller_oid={oid!r}, obo={self._token is not None}{agent})"

    @property
    def principal(self) -> Principal | None:
        """The caller this object acts for, or ``None`` (app-only)."""
        return self._principal

    @property
    def agent_id(self) -> str | None:
        """The agent identity this view acts as (after :meth:`for_agent`), or ``None``."""
        return self._agent.agent_id if self._agent else None

    def for_agent(self, agent_id: str, *, username: str | None = None, user_id: str | None = None) -> Downstream:
        """The same interface acting as the agent identity ``agent_id`` (its client id), sharing this caller.

        Without a user: autonomous (app-only) when ``app=True`` or the API sets ``request_app_token``; agent
        OBO for the caller otherwise (401 without a caller token). With ``username`` (an ASCII UPN) or
        ``user_id`` (object id, a GUID in 8-4-4-4-12 form): the agent user's token (T1, T2, ``user_fic``; spec
        §3.5). Giving both is an error.

        ::

            downstream.for_agent(agent_id).authorization_header("graph")                      # TR
            downstream.for_agent(agent_id, username="agent.user@contoso.com").call("graph", "me")
        """
        if not isinstance(agent_id, str) or not is_guid(agent_id.strip()):
            raise DownstreamRequestError(
                "AgentIdentity must be the agent identity's client id (a GUID)",
                reason="bad_agent",
            )
        if username is not None and user_id is not None:
            raise DownstreamRequestError("AgentUsername and AgentUserId are mutually exclusive", reason="bad_agent")
        if username is not None:
            if not isinstance(username, str) or not username.strip():
                raise DownstreamRequestError(
                    "AgentUsername must be a non-empty user principal name", reason="bad_agent"
                )
            # ASCII only, folded with ASCII rules: Unicode case folding would let look-alikes (the KELVIN SIGN
            # for 'k') share one user's cache entry.
            if any(not ("\x21" <= ch <= "\x7e") for ch in username.strip()):
                raise DownstreamRequestError(
                    "AgentUsername must be an ASCII user principal name without whitespace or control characters",
                    reason="bad_agent",
                )
            username = username.strip()
        if user_id is not None:
            if not isinstance(user_id, str) or not is_guid(user_id.strip()):
                # The sidecar's documented message (spec §1.3.1); only the 8-4-4-4-12 form is accepted.
                raise DownstreamRequestError("AgentUserId must be a valid GUID", reason="bad_agent")
            user_id = user_id.strip().lower()
        agent = _Agent(agent_id=agent_id.strip().lower(), username=username, user_id=user_id)
        return Downstream(self._tokens, principal=self._principal, token=self._token, _agent=agent)

    # -- planning ----------------------------------------------------------------------------------------

    def _api(self, name: str, *, required: bool) -> DownstreamApi | None:
        if not isinstance(name, str) or not name:
            raise DownstreamRequestError("a downstream API name is required", reason="unknown_api")
        api = self._tokens.config.downstream_apis.get(name)
        if api is None:
            # Sidecar compatibility: names are matched case-insensitively, as .NET configuration does.
            for key, value in self._tokens.config.downstream_apis.items():
                if key.lower() == name.lower():
                    api = value
                    break
        if api is None and required:
            raise DownstreamRequestError(
                f"the downstream API {name[:100]!r} is not configured (DownstreamApis__{name[:100]})",
                reason="unknown_api",
            )
        return api

    def _flow(self, api: DownstreamApi | None, app: bool) -> Flow:
        wants_app = app or (api is not None and api.request_app_token)
        agent = self._agent
        if agent is None:
            if wants_app:
                return "app"
            if self._token is None:
                raise self._no_caller()
            return "obo"
        # Spec §1.4: the app path wins over the agent-user leg; the agent-user leg runs before OBO.
        if wants_app:
            return "agent_app"
        if agent.username is not None or agent.user_id is not None:
            return "agent_user"
        if self._token is None:
            raise self._no_caller()
        return "agent_obo"

    @staticmethod
    def _no_caller() -> DownstreamRequestError:
        # Spec §1.4: with no user, Microsoft.Identity.Web's user path ends in MsalUiRequiredException, a 401.
        # Never an app token in the user's place: the API's permissions would no longer be the user's.
        return DownstreamRequestError(
            "this API is called on behalf of a user, and the request has no caller token; "
            "sign in, or ask for an app token (app=True or DownstreamApi.request_app_token)",
            reason="no_caller",
            status_code=401,
        )

    def _target(
        self,
        name: str,
        api: DownstreamApi | None,
        *,
        scopes: Sequence[str] | str | None,
        app: bool,
        tenant: str | None,
    ) -> tuple[Flow, tuple[str, ...], str, str]:
        """What to ask for: the flow, the scopes, their scope-set text (for the cache key) and the tenant."""
        try:
            wanted = sequence_of(scopes) if scopes is not None else ()
        except (TypeError, ValueError):
            raise DownstreamRequestError(
                "scopes must be a string or a sequence of strings", reason="no_scopes"
            ) from None
        if not wanted and api is not None:
            wanted = tuple(api.scopes)
        if not wanted:
            raise DownstreamRequestError(
                f"No scopes found for the API '{name[:100]}': configure DownstreamApi.scopes "
                f"(DownstreamApis__{name[:100]}__Scopes) or pass scopes=",
                reason="no_scopes",
            )
        flow = self._flow(api, app)
        app_path = flow in ("app", "agent_app")
        normalized = _normalized_scopes(wanted, app_path)
        if normalized is None:
            text = (
                f"app tokens need a scope ending in '/.default' (e.g. 'api://x/.default'), got "
                f"{wanted[0][:200]!r} for the API '{name[:100]}' (IDW10404)"
                if app_path
                else f"No scopes found for the API '{name[:100]}' besides openid/profile/offline_access"
            )
            if scopes is None:
                # The configured scopes can never work: the operator's mistake, as the sidecar treats it (500).
                raise ConfigurationError(text, key=f"DownstreamApis__{name[:100]}__Scopes")
            raise DownstreamRequestError(text, reason="no_scopes")  # scopes= of this request
        if tenant is not None:
            resolved = _check_tenant(tenant, "tenant")
        elif api is not None and api.tenant:
            resolved = _check_tenant(
                api.tenant,
                "DownstreamApi.tenant",
                config_key=f"DownstreamApis__{name[:100]}__AcquireTokenOptions__Tenant",
            )
        elif flow in ("obo", "agent_obo") and self._principal is not None and (tid := self._principal.tid):
            # OBO runs in the caller's tenant (spec §3.9 "OBO details").
            resolved = _check_tenant(tid, "the caller's tid")
        else:
            resolved = _check_tenant(self._tokens.config.tenant_id, "tenant_id", config_key="tenant_id")
        return flow, normalized[0], normalized[1], resolved

    def _request(
        self,
        flow: Flow,
        scopes: tuple[str, ...],
        tenant: str,
        *,
        claims: str | None,
        force_refresh: bool,
        caller: bool = True,
    ) -> TokenRequest:
        """The token request of a plan: the one function both the miss path (``caller=True``) and the hit path's
        key (``caller=False``: everything but the caller, whose digest a hit appends) are built from."""
        if claims is not None and (not isinstance(claims, str) or not claims.strip()):
            raise DownstreamRequestError("claims must be a non-empty JSON claims challenge", reason="bad_claims")
        agent = self._agent
        obo = caller and flow in ("obo", "agent_obo")
        caller_exp, caller_oid = self._check_caller() if obo else (None, None)
        return TokenRequest(
            flow=flow,
            scopes=scopes,
            client_id=self._tokens.config.client_id,
            tenant=tenant,
            agent_id=agent.agent_id if agent is not None else None,
            user_assertion=self._token if obo else None,
            username=agent.username if agent is not None and flow == "agent_user" else None,
            user_object_id=agent.user_id if agent is not None and flow == "agent_user" else None,
            claims=claims,
            force_refresh=force_refresh or claims is not None,
            caller_expires_on=caller_exp,
            caller_oid=caller_oid,
        )

    def _check_caller(self) -> tuple[float | None, str | None]:
        """The caller token's ``exp`` and ``oid``; raises when the ``Principal`` given with it was not validated
        from it. Read once per ``Downstream``, on the way to a token request (a cache hit never decodes)."""
        try:
            return self._caller
        except AttributeError:  # first time: not set in __init__, which a cache hit pays for
            pass
        assert self._token is not None
        claims = assertion_claims(self._token)
        principal = self._principal
        if principal is not None and (
            claims is None or any(_claim(principal, name) != claims.get(name) for name in _IDENTITY_CLAIMS)
        ):
            # OBO tokens are bound to the caller's token (its exp, its user, its tenant): a principal of
            # another token would put them under the wrong caller.
            logger.warning("downstream: the principal given was not validated from the caller's token")
            raise DownstreamRequestError(
                "the Principal given was not validated from the caller's token; pass the principal that "
                "validate(token) returned for this token",
                reason="principal_mismatch",
            )
        exp = claims.get("exp") if claims is not None else None
        oid = principal.oid if principal is not None else claims.get("oid") if claims is not None else None
        caller = self._caller = (
            float(exp) if isinstance(exp, int | float) and not isinstance(exp, bool) else None,
            oid if isinstance(oid, str) else None,
        )
        return caller

    def _plan(
        self,
        name: str,
        api: DownstreamApi | None,
        *,
        scopes: Sequence[str] | str | None,
        app: bool,
        tenant: str | None,
        claims: str | None,
        force_refresh: bool,
    ) -> TokenRequest:
        flow, normalized, _, resolved = self._target(name, api, scopes=scopes, app=app, tenant=tenant)
        return self._request(flow, normalized, resolved, claims=claims, force_refresh=force_refresh)

    def _cached(
        self, name: str, scopes: Sequence[str] | str | None, app: bool, tenant: str | None
    ) -> CachedToken | None:
        """The cached token for this plan, found by its key alone: no ``TokenRequest`` is built.

        With the API's own scopes and tenant, the plan (flow, scopes, tenant, and so the key's first 32 bytes) is
        memoised on the engine: it depends only on the configuration, the API name, ``app``, whether there is a
        caller token, the agent view and the caller's ``tid``.
        """
        memo: tuple[object, ...] | None = None
        tokens = self._tokens
        plans = tokens.plans
        plan: _HitPlan | None = None
        principal = self._principal
        # The principal's claims are read directly: its accessors' call overhead is a measurable part of a hit.
        claims = None if principal is None else principal._claims
        if scopes is None and tenant is None and isinstance(name, str) and isinstance(app, bool):
            tid = None if claims is None else claims.get("tid")
            memo = (name, app, self._token is None, self._agent, tid if tid.__class__ is str else None)
            plan = plans.get(memo)
        if plan is None:
            flow, normalized, _, resolved = self._target(
                name, self._api(name, required=False), scopes=scopes, app=app, tenant=tenant
            )
            # The key of the very request a miss would make, less the caller (TokenRequest.l1_key: the caller's
            # digest follows these 32 bytes).
            template = self._request(flow, normalized, resolved, claims=None, force_refresh=False, caller=False)
            plan = _HitPlan(prefix=template.l1_key(), obo=flow in ("obo", "agent_obo"))
            if memo is not None:
                if len(plans) >= tokens.max_plans:
                    plans.clear()  # many tenants' callers: start over rather than grow without bound
                plans[memo] = plan
        key = plan.prefix
        if plan.obo and self._token is not None:
            digest = self._digest
            if digest is None:
                digest = self._digest = caller_digest(self._token)
            key += digest
            hit = tokens.cache.peek(key)
            if hit is not None and claims is not None:
                # The owner is the very oid object of the principal that stored the entry (the validator hands
                # out one Principal per token while it is cached), so this is mostly a pointer comparison.
                oid = claims.get("oid")
                if hit.owner is not oid and hit.owner != oid:
                    return None  # another user's principal with this token: the miss path checks and refuses
            return hit
        return tokens.cache.peek(key)

    def _header(self, token: AccessToken | CachedToken) -> str:
        if self._token is not None and token.token == self._token:
            # Defence in depth: the caller's own token must never travel downstream (DESIGN §5).
            raise DownstreamRequestError("refusing to forward the caller's token", reason="token_passthrough")
        scheme = token.token_type
        if scheme != "Bearer" and scheme.lower() == "bearer":
            scheme = "Bearer"
        return f"{scheme} {token.token}"

    def _fetch(self, req: TokenRequest) -> AccessToken:
        return self._tokens.get(req)

    async def _afetch(self, req: TokenRequest) -> AccessToken:
        return await self._tokens.aget(req)

    # -- authorization headers ---------------------------------------------------------------------------

    def authorization_header(
        self,
        api: str,
        *,
        scopes: Sequence[str] | str | None = None,
        app: bool = False,
        tenant: str | None = None,
        claims: str | None = None,
        force_refresh: bool = False,
    ) -> str:
        """``"Bearer …"`` for the downstream API named ``api`` (its configured scopes, or ``scopes``).

        ``app=True`` forces an app token; ``tenant`` overrides the tenant; ``claims`` (a JSON claims
        challenge) and ``force_refresh`` bypass the cache. An API name that is not configured works when
        ``scopes`` is given.
        Raises ``DownstreamRequestError`` (400: unknown API without ``scopes``, no scopes, app scope without
        ``/.default``, meta-tenant; 401 for a delegated API with no caller token) or
        ``TokenAcquisitionError``.

        ::

            headers = {"Authorization": downstream.authorization_header("graph")}
            downstream.authorization_header("custom", scopes=["api://weather/.default"], app=True)
        """
        if claims is None and not force_refresh:
            # The hot path: a cache hit found by its key alone.
            cached = self._cached(api, scopes, app, tenant)
            if cached is not None:
                return self._header(cached)
        req = self._plan(
            api,
            self._api(api, required=False),
            scopes=scopes,
            app=app,
            tenant=tenant,
            claims=claims,
            force_refresh=force_refresh,
        )
        return self._header(self._fetch(req))

    async def aauthorization_header(
        self,
        api: str,
        *,
        scopes: Sequence[str] | str | None = None,
        app: bool = False,
        tenant: str | None = None,
        claims: str | None = None,
        force_refresh: bool = False,
    ) -> str:
        """Async twin of :meth:`authorization_header`. ``await downstream.aauthorization_header("graph")``"""
        if claims is None and not force_refresh:
            cached = self._cached(api, scopes, app, tenant)
            if cached is not None:
                return self._header(cached)
        req = self._plan(
            api,
            self._api(api, required=False),
            scopes=scopes,
            app=app,
            tenant=tenant,
            claims=claims,
            force_refresh=force_refresh,
        )
        return self._header(await self._afetch(req))

    # -- calls -------------------------------------------------------------------------------------------

    def _call_steps(
        self,
        name: str,
        path: str,
        *,
        method: str | None,
        json: Any,
        content: bytes | str | None,
        params: Mapping[str, str] | None,
        headers: Mapping[str, str] | None,
        scopes: Sequence[str] | str | None,
        app: bool,
        tenant: str | None,
    ) -> Steps[TokenRequest | _Call, httpx2.Response]:
        api = self._api(name, required=True)
        assert api is not None
        if method is not None and not isinstance(method, str):
            raise DownstreamRequestError("method must be a string such as 'GET'", reason="bad_method")
        verb = (method or api.http_method or "GET").upper()
        if verb not in _METHODS:
            raise DownstreamRequestError(f"the HTTP method {method!r} is not supported", reason="bad_method")
        if json is not None and content is not None:
            raise DownstreamRequestError("give either json= or content=, not both", reason="bad_body")
        if content is not None and not isinstance(content, bytes | str):
            raise DownstreamRequestError("content must be bytes or str", reason="bad_body")
        # Every input is turned into bytes here, before a token is asked for: nothing can fail after it.
        body = _encode_body(json, content)
        query: list[tuple[str, str]] = list(api.extra_query.items())
        if params is not None:
            if not isinstance(params, Mapping):
                raise DownstreamRequestError("params must be a mapping of names to values", reason="bad_query")
            query.extend(params.items())
        if not api.base_url:
            raise DownstreamRequestError(
                f"The downstream API '{name}' has no BaseUrl: it is configured for authorization headers only",
                reason="unknown_api",
            )
        url = build_url(api.base_url, path or api.relative_path, query)
        base_headers = _build_headers(api, headers, has_content=content is not None)
        if json is not None and not any(k.lower() == "content-type" for k in base_headers):
            base_headers["Content-Type"] = "application/json"
        req = self._plan(name, api, scopes=scopes, app=app, tenant=tenant, claims=None, force_refresh=False)

        def request(token: AccessToken) -> _Call:
            return _Call(
                method=verb,
                url=url,
                headers={**base_headers, "Authorization": self._header(token)},
                content=body,
                timeout=api.timeout,
                max_bytes=api.max_response_bytes,
                api=name,
            )

        token: AccessToken = yield req
        response: httpx2.Response = yield request(token)
        if response.status_code == 401:
            claims = claims_from_challenge(response.headers.get("www-authenticate"))
            if claims is not None:
                # Spec §1.6 "Claims-challenge retry": re-acquire with the API's claims, retry exactly once.
                logger.info("claims challenge from downstream api=%s flow=%s; retrying once", name, req.flow)
                token = yield replace(req, claims=claims, force_refresh=True)
                response = yield request(token)
        return response

    def call(
        self,
        api: str,
        path: str = "",
        *,
        method: str | None = None,
        json: Any = None,
        content: bytes | str | None = None,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        scopes: Sequence[str] | str | None = None,
        app: bool = False,
        tenant: str | None = None,
    ) -> httpx2.Response:
        """Call the configured API ``api`` at ``path`` (default: its ``relative_path``) with a fresh token.

        ``method`` defaults to the API's ``http_method``; ``params`` are appended after its ``extra_query``;
        ``headers`` add to its ``extra_headers`` (reserved ones such as ``Authorization`` or ``Host`` raise
        :class:`DownstreamRequestError`, as does any path that could leave the base URL). The response is
        returned whatever its status (redirects are not followed); a body over ``max_response_bytes`` raises
        :class:`DownstreamCallError`. A 401 claims challenge is answered by one re-acquisition and one retry.

        ::

            response = downstream.call("graph", "me")
            response = downstream.call("todo", "items", method="POST", json={"title": "milk"})
        """
        steps = self._call_steps(
            api,
            path,
            method=method,
            json=json,
            content=content,
            params=params,
            headers=headers,
            scopes=scopes,
            app=app,
            tenant=tenant,
        )
        return run(steps, self._do)

    async def acall(
        self,
        api: str,
        path: str = "",
        *,
        method: str | None = None,
        json: Any = None,
        content: bytes | str | None = None,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        scopes: Sequence[str] | str | None = None,
        app: bool = False,
        tenant: str | None = None,
    ) -> httpx2.Response:
        """Async twin of :meth:`call`. ``response = await downstream.acall("graph", "me")``"""
        steps = self._call_steps(
            api,
            path,
            method=method,
            json=json,
            content=content,
            params=params,
            headers=headers,
            scopes=scopes,
            app=app,
            tenant=tenant,
        )
        return await arun(steps, self._ado)

    # -- I/O glue ----------------------------------------------------------------------------------------

    def _do(self, step: TokenRequest | _Call) -> Any:
        return self._fetch(step) if isinstance(step, TokenRequest) else self._send(step)

    async def _ado(self, step: TokenRequest | _Call) -> Any:
        return await self._afetch(step) if isinstance(step, TokenRequest) else await self._asend(step)

    def _send(self, call: _Call) -> httpx2.Response:
        # ``timeout`` bounds the whole call, not each read: a server dripping a byte at a time is cut off.
        deadline = Deadline(call.timeout)
        try:
            # Inside the try: the pooled client is built on first use, and a CA file that cannot be loaded is a
            # TrustStoreError (a transport error), answered like any other unreachable API.
            client = self._tokens.http.client
            request = client.build_request(
                call.method, call.url, headers=call.headers, content=call.content, timeout=call.timeout
            )
            response = client.send(request, stream=True, follow_redirects=False)
            try:
                body = _read_body(response, call, deadline)
            finally:
                response.close()
        except httpx2.TimeoutException:
            raise _unreachable(call, timeout=True) from None
        except httpx2.HTTPError:
            raise _unreachable(call, timeout=False) from None
        return _materialise(response, body, call)

    async def _asend(self, call: _Call) -> httpx2.Response:
        import anyio

        deadline = Deadline(call.timeout)
        try:
            client = self._tokens.http.aclient
            request = client.build_request(
                call.method, call.url, headers=call.headers, content=call.content, timeout=call.timeout
            )
            with anyio.fail_after(call.timeout):
                response = await client.send(request, stream=True, follow_redirects=False)
                try:
                    body = await _aread_body(response, call, deadline)
                finally:
                    await response.aclose()
        except (httpx2.TimeoutException, TimeoutError):
            raise _unreachable(call, timeout=True) from None
        except httpx2.HTTPError:
            raise _unreachable(call, timeout=False) from None
        return _materialise(response, body, call)


def _unreachable(call: _Call, *, timeout: bool) -> DownstreamCallError:
    logger.warning("downstream api=%s unreachable reason=%s", call.api, "timeout" if timeout else "transport")
    if timeout:
        return DownstreamCallError(
            f"the downstream API '{call.api}' timed out", api=call.api, status_code=504, reason="timeout"
        )
    return DownstreamCallError(f"the downstream API '{call.api}' could not be reached", api=call.api)


def _too_large(call: _Call) -> DownstreamCallError:
    logger.warning("downstream api=%s response over max_response_bytes=%d", call.api, call.max_bytes)
    return DownstreamCallError(
        f"the downstream API '{call.api}' answered with more than {call.max_bytes} bytes (max_response_bytes)",
        api=call.api,
        reason="response_too_large",
    )


def _declared_too_large(response: httpx2.Response, call: _Call) -> bool:
    declared = response.headers.get("content-length")
    if declared is None or "content-encoding" in response.headers:
        return False
    return declared.strip().isdigit() and int(declared.strip()) > call.max_bytes


def _read_body(response: httpx2.Response, call: _Call, deadline: Deadline) -> bytes:
    # Stop reading as soon as the (decoded) body passes the cap: a hostile or broken API cannot make us buffer
    # an unbounded body, compressed or not.
    if _declared_too_large(response, call):
        raise _too_large(call)
    return read_capped(response, limit=call.max_bytes, deadline=deadline, too_large=lambda: _too_large(call))


async def _aread_body(response: httpx2.Response, call: _Call, deadline: Deadline) -> bytes:
    if _declared_too_large(response, call):
        raise _too_large(call)
    return await aread_capped(response, limit=call.max_bytes, deadline=deadline, too_large=lambda: _too_large(call))


def _encode_body(json: Any, content: bytes | str | None) -> bytes | None:
    if json is not None:
        try:
            # As httpx2 sends json=, but strict: NaN and Infinity are not JSON (RFC 8259 §6).
            text = _json.dumps(json, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
            return text.encode("utf-8")
        except (TypeError, ValueError, RecursionError, UnicodeEncodeError) as exc:
            reason = "not valid Unicode text" if isinstance(exc, UnicodeEncodeError) else "not JSON-serialisable"
            raise DownstreamRequestError(
                f"json= is {reason} ({type(exc).__name__}); NaN and Infinity are not JSON", reason="bad_body"
            ) from None
    if isinstance(content, str):
        try:
            return content.encode("utf-8")
        except UnicodeEncodeError:
            raise DownstreamRequestError(
                "content is not valid Unicode text (a lone surrogate); pass bytes", reason="bad_body"
            ) from None
    return content


def _claim(principal: Principal, name: str) -> Any:
    value = principal.get(name)
    return list(value) if isinstance(value, tuple) else value


_DROPPED_WHEN_DECODED: Final = frozenset({"content-encoding", "content-length", "transfer-encoding"})


def _materialise(response: httpx2.Response, body: bytes, call: _Call) -> httpx2.Response:
    """A fully read response holding ``body``; when the body was decoded, its encoding headers no longer
    apply."""
    headers = response.headers.multi_items()
    if "content-encoding" in response.headers:
        headers = [(k, v) for k, v in headers if k.lower() not in _DROPPED_WHEN_DECODED]
    extensions = {k: v for k, v in response.extensions.items() if k in ("http_version", "reason_phrase")}
    out = httpx2.Response(
        response.status_code, headers=headers, content=body, request=response.request, extensions=extensions
    )
    logger.debug("downstream api=%s status=%d bytes=%d", call.api, out.status_code, len(body))
    return out
