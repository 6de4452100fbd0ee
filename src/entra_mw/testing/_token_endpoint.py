"""FakeEntra's token endpoint: ``POST /{tenant}/oauth2/v2.0/token`` (and v1 ``/{tenant}/oauth2/token``).

It checks what Entra checks and answers as Entra answers (spec §3, §5):

* client authentication: ``client_secret`` in the body or HTTP Basic; a ``client_assertion`` that is a
  certificate assertion (``x5t``/``x5t#S256``/``x5c``, ``aud`` = the token endpoint), a federated assertion
  matching one of the app's federated identity credentials, or an Entra-issued token (T1 for an agent, §3.3);
* grants: ``client_credentials`` (``fmi_path`` → T1; an agent gets an autonomous token or T2), ``jwt-bearer``
  OBO (and agent OBO, whose assertion targets the blueprint), ``user_fic`` (agent users, §3.5),
  ``refresh_token`` and a test-only ROPC ``password`` grant for registered users;
* errors with Entra's body (``error``, ``error_description`` = ``AADSTSnnnn: …`` plus the trace lines,
  ``error_codes``, ``trace_id``, ``correlation_id``, ``suberror``, ``claims``) and its 400/401 split (§5.2).

Every input ends in a 200 or a 4xx: request parsing and token peeking are defensive, and each refusal raises
``_OAuthError``, which renders itself.

Deliberate leniency: clients sign certificate assertions on the *system* clock (MSAL uses ``time.time()``)
while FakeEntra may run on a :class:`FakeClock`; a certificate assertion is accepted when it is within its
lifetime on either clock. Every other time check uses ``fake.clock``.

``refresh_in`` (half the lifetime) is sent only for access tokens living longer than 90 minutes: Entra sends
it for long-lived tokens, and its default lifetimes are 60-90 minutes (spec §5.1, §8).

External OIDC issuers (Kubernetes service-account tokens, GitHub Actions …) are emulated by
:func:`fake_oidc_issuer`; their public keys live on the FakeEntra instance.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import math
import re
import secrets
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, Literal
from urllib.parse import parse_qsl, unquote_plus

import httpx2
import jwt
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from .._clock import Clock
from ._interactive import pkce_matches, resource_indicator_matches
from ._keys import b64url, b64url_decode, pooled_rsa_key, rsa_jwk_numbers
from ._mint import EXCHANGE_AUDIENCE, OIDC_SCOPES, encode_jws, fmi_subject, pairwise_sub
from ._registry import TEMPLATE_TENANTS, AgentIdentity, AgentUser, App, Certificate, Tenant, User

if TYPE_CHECKING:
    from jwt.types import Options

    from ._fake import FakeEntra

__all__ = [
    "GRANTS",
    "FakeOidcIssuer",
    "TokenEndpointState",
    "fake_oidc_issuer",
    "handle_token_request",
]

_ASSERTION_TYPE: Final = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
_GRANT_JWT: Final = "urn:ietf:params:oauth:grant-type:jwt-bearer"
_GRANT_TOKEN_EXCHANGE: Final = "urn:ietf:params:oauth:grant-type:token-exchange"
GRANTS: Final = {
    "client_credentials": "client_credentials",
    _GRANT_JWT: "jwt_bearer",
    "user_fic": "user_fic",
    "refresh_token": "refresh_token",
    "password": "password",
    "authorization_code": "authorization_code",
}
"""``grant_type`` → the grant's name (counted as ``token:{name}``)."""
_RSA_ALGS: Final = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"})
_GRAPH: Final = "https://graph.microsoft.com"
_GRAPH_ID: Final = "00000003-0000-0000-c000-000000000000"
_MAX_BODY: Final = 1 << 20
_MAX_TOKEN: Final = 64 * 1024
_MAX_FIELDS: Final = 200
_ASSERTION_SKEW: Final = 300  # seconds of clock skew tolerated on client assertions
_REFRESH_TOKEN_LIFETIME: Final = 90 * 24 * 3600  # Entra's default inactivity lifetime for refresh tokens
_ID_TOKEN_LIFETIME: Final = 3600
# The claims challenge Entra sends with AADSTS50076/50079 (ED v2-oauth2-on-behalf-of-flow.md example shape).
_MFA_CHALLENGE_KEY: Final = "polids"
_MFA_POLICY_ID: Final = "9ab03e19-ed42-4168-b6b7-7001fb3e933a"
_MFA_CHALLENGE: Final = json.dumps(
    {"access_token": {_MFA_CHALLENGE_KEY: {"essential": True, "values": [_MFA_POLICY_ID]}}},
    separators=(",", ":"),
)
_SAFE_CORRELATION = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
_B64URL = re.compile(r"^[A-Za-z0-9_-]*={0,2}$")


# -- errors -------------------------------------------------------------------------------------------------


class _OAuthError(Exception):
    """An Entra error answer: AADSTS code, OAuth ``error``, text, HTTP status and optional extras (spec §5.2)."""

    def __init__(
        self,
        code: int,
        error: str,
        text: str,
        *,
        status: int = 400,
        suberror: str | None = None,
        claims: str | None = None,
    ) -> None:
        super().__init__(f"AADSTS{code}")
        self.code = code
        self.error = error
        self.text = text
        self.status = status
        self.suberror = suberror
        self.claims = claims


def _invalid_request(code: int, text: str) -> _OAuthError:
    return _OAuthError(code, "invalid_request", text)


def _missing(name: str) -> _OAuthError:
    return _invalid_request(900144, f"The request body must contain the following parameter: '{name}'.")


def _malformed(detail: str = "") -> _OAuthError:
    return _invalid_request(
        9002313, "Invalid request. Request is malformed or invalid." + (f" {detail}" if detail else "")
    )


def _invalid_client(code: int, text: str) -> _OAuthError:
    return _OAuthError(code, "invalid_client", text, status=401)


def _invalid_grant(code: int, text: str, **extra: Any) -> _OAuthError:
    return _OAuthError(code, "invalid_grant", text, **extra)


def _invalid_scope(code: int, text: str) -> _OAuthError:
    return _OAuthError(code, "invalid_scope", text)


# -- per-fake state ------------------------------------------------------------------------------------------


@dataclass(eq=False, slots=True, kw_only=True)
class _RefreshRecord:
    tenant_id: str
    client_id: str
    user_oid: str
    agent_user: bool
    confidential: bool
    resource_app_id: str
    scopes: tuple[str, ...]
    oidc: frozenset[str]
    expires_at: float
    amr: tuple[str, ...] = ()


@dataclass(eq=False, slots=True)
class TokenEndpointState:
    """What the token endpoint remembers, owned by one FakeEntra (each fake has its own)."""

    refresh_tokens: dict[str, _RefreshRecord] = field(default_factory=dict)
    oidc_issuers: dict[str, FakeOidcIssuer] = field(default_factory=dict)


# -- external OIDC issuers -----------------------------------------------------------------------------------


class FakeOidcIssuer:
    """An external OIDC issuer (a Kubernetes cluster, GitHub Actions …) whose tokens FakeEntra trusts through
    federated identity credentials.

    Example::

        k8s = fake_oidc_issuer(fake, "https://oidc.prod-aks.azure.com/tenant/cluster/")
        fake.add_federated_credential(blueprint, issuer=k8s.issuer, subject="system:serviceaccount:ns:agent")
        assertion = k8s.mint("system:serviceaccount:ns:agent", "api://AzureADTokenExchange")
    """

    __slots__ = ("_clock", "_key", "issuer", "kid")

    def __init__(self, issuer: str, *, key: rsa.RSAPrivateKey, clock: Clock) -> None:
        self.issuer = issuer
        self._key = key
        self._clock = clock
        der = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        self.kid = b64url(hashlib.sha256(der).digest())[:43]

    @property
    def public_key(self) -> rsa.RSAPublicKey:
        return self._key.public_key()

    def jwks(self) -> dict[str, Any]:
        """The issuer's JWKS document (``{"keys": [...]}``)."""
        n, e = rsa_jwk_numbers(self.public_key)
        return {"keys": [{"kty": "RSA", "use": "sig", "alg": "RS256", "kid": self.kid, "n": n, "e": e}]}

    def mint(
        self,
        subject: str,
        audience: str,
        lifetime: int = 3600,
        *,
        extra_claims: Mapping[str, Any] | None = None,
    ) -> str:
        """A Kubernetes-style projected service-account token: ``iss``, ``sub``, ``aud`` (a list), ``exp`` …

        ``subject`` is usually ``system:serviceaccount:{namespace}:{name}``.
        """
        now = int(self._clock.time())
        claims: dict[str, Any] = {
            "aud": [audience],
            "exp": now + int(lifetime),
            "iat": now,
            "iss": self.issuer,
            "jti": str(uuid.uuid4()),
            "nbf": now,
            "sub": subject,
        }
        parts = subject.split(":")
        if len(parts) == 4 and parts[:2] == ["system", "serviceaccount"]:
            claims["kubernetes.io"] = {
                "namespace": parts[2],
                "serviceaccount": {"name": parts[3], "uid": str(uuid.uuid5(uuid.NAMESPACE_URL, subject))},
            }
        if extra_claims:
            claims.update(extra_claims)
        return encode_jws({"alg": "RS256", "kid": self.kid, "typ": "JWT"}, claims, alg="RS256", key=self._key)

    def __repr__(self) -> str:
        return f"FakeOidcIssuer(issuer={self.issuer!r}, kid={self.kid!r})"


def fake_oidc_issuer(fake: FakeEntra, issuer_url: str) -> FakeOidcIssuer:
    """The external OIDC issuer ``issuer_url`` that ``fake`` trusts (created on first use, then reused).

    Example::

        k8s = fake_oidc_issuer(fake, "https://kubernetes.default.svc.cluster.local")
        token = k8s.mint("system:serviceaccount:agents:weather", "api://AzureADTokenExchange")
    """
    issuers = fake._token_state.oidc_issuers
    with fake.lock:
        found = issuers.get(issuer_url)
        if found is None:
            found = FakeOidcIssuer(issuer_url, key=pooled_rsa_key("oidc-issuer"), clock=fake.clock)
            issuers[issuer_url] = found
        return found


# -- small parsing helpers -----------------------------------------------------------------------------------


def _b64url_decode(text: str) -> bytes:
    if not _B64URL.match(text):
        raise ValueError("not base64url")
    return b64url_decode(text)


def _peek_jwt(token: str) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """Header and payload of a compact JWS, unverified; ``None`` when it is not one."""
    if len(token) > _MAX_TOKEN:
        return None
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        header = json.loads(_b64url_decode(parts[0]))
        payload = json.loads(_b64url_decode(parts[1]))
    except (ValueError, binascii.Error, UnicodeDecodeError, RecursionError):
        return None
    if not isinstance(header, dict) or not isinstance(payload, dict):
        return None
    return header, payload


def _num(value: Any) -> float | None:
    """A finite, plausible NumericDate (RFC 7519 §2), else ``None``."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        out = float(value)
    except OverflowError:
        return None
    return out if math.isfinite(out) and abs(out) < 1e11 else None


def _audiences(claims: Mapping[str, Any]) -> list[str]:
    aud = claims.get("aud")
    if isinstance(aud, str):
        return [aud]
    if isinstance(aud, list):
        return [a for a in aud if isinstance(a, str)]
    return []


def _str_claim(claims: Mapping[str, Any], name: str) -> str:
    value = claims.get(name)
    return value if isinstance(value, str) else ""


def _is_app_only(claims: Mapping[str, Any]) -> bool:
    idtyp = claims.get("idtyp")
    if idtyp == "app":
        return True
    if idtyp == "user":
        return False
    return "scp" not in claims


def _timestamp(epoch: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(epoch))


def _entra_issuer_tenant(fake: FakeEntra, iss: str) -> str | None:
    """The tenant id when ``iss`` is one of this FakeEntra's issuers (v2 or v1 form), else ``None``."""
    v2 = f"https://{fake.authority_host}/"
    if iss.startswith(v2) and iss.endswith("/v2.0"):
        return iss[len(v2) : -len("/v2.0")] or None
    v1 = "https://sts.windows.net/"
    if iss.startswith(v1) and iss.endswith("/"):
        return iss[len(v1) : -1] or None
    return None


# -- the request ---------------------------------------------------------------------------------------------


@dataclass(slots=True, kw_only=True)
class _Ctx:
    fake: FakeEntra
    request: httpx2.Request
    segment: str
    tenant: Tenant | None  # None for common/organizations until a grant resolves it
    params: dict[str, str]
    now: float
    v1: bool = False

    def get(self, name: str) -> str | None:
        value = self.params.get(name)
        return value if value else None

    def require(self, name: str) -> str:
        value = self.get(name)
        if value is None:
            raise _missing(name)
        return value

    @property
    def tenant_id(self) -> str:
        if self.tenant is None:  # pragma: no cover - grants resolve the tenant before using it
            raise _no_tenant()
        return self.tenant.tenant_id


def _no_tenant() -> _OAuthError:
    return _invalid_request(
        50059,
        "No tenant-identifying information found in either the request or implied by any provided credentials.",
    )


def _parse_body(request: httpx2.Request) -> dict[str, str]:
    ctype = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if ctype != "application/x-www-form-urlencoded":
        # Entra reads nothing from a body that is not a form, so the first required parameter is "missing".
        raise _missing("grant_type")
    body = request.read()
    if len(body) > _MAX_BODY:
        raise _malformed("The request body is too large.")
    try:
        text = body.decode("utf-8")
        pairs = parse_qsl(text, keep_blank_values=True, max_num_fields=_MAX_FIELDS)
    except (UnicodeDecodeError, ValueError) as exc:
        raise _malformed() from exc
    params: dict[str, str] = {}
    for key, value in pairs:
        if key in params and params[key] != value:
            raise _malformed(f"The parameter '{key[:40]}' is duplicated.")
        params[key] = value
    return params


def handle_token_request(fake: FakeEntra, tenant_segment: str, request: httpx2.Request) -> httpx2.Response:
    """Answer one token-endpoint request as Entra would (spec §3, §5).

    ``tenant_segment`` is the first path segment (a tenant GUID, a domain, ``common`` or ``organizations``).
    Routed here by :class:`FakeEntra` for ``POST /{tenant}/oauth2/v2.0/token`` and ``/{tenant}/oauth2/token``.

    Example::

        response = handle_token_request(fake, tenant_id, httpx2.Request("POST", url, data={...}))
    """
    cid_header = request.headers.get("client-request-id", "")
    correlation_id = cid_header if _SAFE_CORRELATION.match(cid_header) else str(uuid.uuid4())
    headers = {"client-request-id": correlation_id}
    with fake.lock:
        try:
            body = _handle(fake, tenant_segment, request, fake.clock.time())
        except _OAuthError as err:
            return fake.error_response(
                err.status,
                err.error,
                err.code,
                err.text,
                suberror=err.suberror,
                claims=err.claims,
                correlation_id=correlation_id,
                headers=headers,
            )
    headers.update({"Cache-Control": "no-store, no-cache", "Pragma": "no-cache"})
    return fake.json_response(body, headers=headers)


def _handle(fake: FakeEntra, segment: str, request: httpx2.Request, now: float) -> dict[str, Any]:
    if request.method != "POST":
        raise _invalid_request(
            900561,
            f"The endpoint only accepts POST, OPTIONS requests. Received a {request.method[:16]} request.",
        )
    tenant: Tenant | None = None
    if segment.lower() not in TEMPLATE_TENANTS:
        tenant = fake.registry.tenant(segment) if len(segment) <= 256 else None
        if tenant is None:
            raise _invalid_request(
                90002,
                f"Tenant '{segment[:100]}' not found. Check to make sure you have the correct tenant ID and "
                "are "
                "signing into the correct cloud.",
            )
    params = _parse_body(request)
    v1 = request.url.path.rstrip("/").endswith("/oauth2/token")
    ctx = _Ctx(fake=fake, request=request, segment=segment, tenant=tenant, params=params, now=now, v1=v1)
    if v1 and ctx.get("resource") and not ctx.get("scope"):
        # v1 names a resource, not scopes; its token carries every permission granted for that resource.
        ctx.params["scope"] = ctx.require("resource").rstrip("/") + "/.default"
    grant = ctx.require("grant_type")
    if grant == _GRANT_TOKEN_EXCHANGE:
        raise _OAuthError(
            82001,
            "unsupported_grant_type",
            "The token-exchange grant is not supported; use client_credentials with fmi_path.",
        )
    name = GRANTS.get(grant)
    if name is None:
        raise _OAuthError(
            70003, "unsupported_grant_type", f"The app requested an unsupported grant type '{grant[:80]}'."
        )
    fake.count(f"token:{name}")
    if name == "client_credentials":
        result = _client_credentials(ctx)
    elif name == "jwt_bearer":
        result = _on_behalf_of(ctx)
    elif name == "user_fic":
        result = _user_fic(ctx)
    elif name == "refresh_token":
        result = _refresh_token(ctx)
    elif name == "authorization_code":
        result = _authorization_code(ctx)
    else:
        result = _password(ctx)
    return _v1_shape(ctx, result) if v1 else result


def _v1_shape(ctx: _Ctx, result: dict[str, Any]) -> dict[str, Any]:
    # v1 answers carry numbers as strings plus expires_on / not_before / resource.
    out = dict(result)
    expires_in = int(result["expires_in"])
    out["expires_in"] = str(expires_in)
    out["ext_expires_in"] = str(int(result.get("ext_expires_in", expires_in)))
    out["expires_on"] = str(int(ctx.now) + expires_in)
    out["not_before"] = str(int(ctx.now))
    if ctx.get("resource"):
        out["resource"] = ctx.get("resource")
    return out


# -- clients -------------------------------------------------------------------------------------------------


@dataclass(slots=True, kw_only=True)
class _Client:
    record: App | AgentIdentity
    confidential: bool
    # How the client authenticated, as ``azpacr`` / ``appidacr`` state it: "0" public client, "1" client
    # secret, "2" certificate or signed assertion (ED access-tokens.md).
    acr: Literal["0", "1", "2"]

    @property
    def app_id(self) -> str:
        return self.record.app_id


def _lookup_client(ctx: _Ctx, client_id: str) -> App | AgentIdentity:
    registry = ctx.fake.registry
    tenant = ctx.tenant
    tenant_text = tenant.tenant_id if tenant is not None else ctx.segment
    not_found = _OAuthError(
        700016,
        "unauthorized_client",
        f"Application with identifier '{client_id[:100]}' was not found in the directory "
        f"'{tenant_text[:100]}'. "
        "This can happen if the application has not been installed by the administrator of the tenant or "
        "consented "
        "to by any user in the tenant. You may have sent your authentication request to the wrong tenant.",
    )
    agent = registry.agent(client_id)
    if agent is not None:
        if tenant is not None and agent.tenant_id.lower() != tenant.tenant_id.lower():
            raise not_found  # agent identities are single-tenant (spec §3.1)
        return agent
    app = registry.app(client_id)
    if app is None:
        raise not_found
    if tenant is not None and app.tenant_id.lower() != tenant.tenant_id.lower() and not app.multi_tenant:
        raise not_found
    return app


def _basic_credentials(ctx: _Ctx) -> tuple[str, str] | None:
    header = ctx.request.headers.get("authorization")
    if header is None:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, ValueError) as exc:
        raise _malformed("The Authorization header is malformed.") from exc
    user, sep, password = decoded.partition(":")
    if not sep:
        raise _malformed("The Authorization header is malformed.")
    # RFC 6749 §2.3.1: both parts are form-urlencoded before Basic encoding.
    return unquote_plus(user), unquote_plus(password)


def _authenticate(ctx: _Ctx, *, required: bool, grant: str) -> _Client:
    basic = _basic_credentials(ctx)
    client_id = ctx.get("client_id")
    if basic is not None:
        if client_id is not None and client_id.lower() != basic[0].lower():
            raise _malformed("The client_id in the body does not match the Authorization header.")
        client_id = basic[0]
    if client_id is None:
        raise _missing("client_id")
    record = _lookup_client(ctx, client_id)
    secret = basic[1] if basic is not None else None
    body_secret = ctx.get("client_secret")
    assertion = ctx.get("client_assertion")
    given = sum(x is not None for x in (secret, body_secret, assertion))
    if given > 1:
        raise _invalid_request(
            9002324,
            "Request should not contain more than one client credential parameters, this includes "
            "'client_secret', "
            "'client_assertion' and 'request' parameters.",
        )
    if isinstance(record, App) and record.public_client and (given or ctx.get("client_assertion_type")):
        raise _invalid_client(
            700025, "Client is public so neither 'client_assertion' nor 'client_secret' should be presented."
        )
    if assertion is not None:
        atype = ctx.get("client_assertion_type")
        if atype is None:
            raise _missing("client_assertion_type")
        if atype != _ASSERTION_TYPE:
            raise _malformed("The client_assertion_type is not supported.")
        _check_assertion(ctx, record, assertion)
        return _Client(record=record, confidential=True, acr="2")
    if ctx.get("client_assertion_type") is not None:
        raise _missing("client_assertion")
    value = secret if secret is not None else body_secret
    if value is not None:
        _check_secret(ctx, record, value)
        return _Client(record=record, confidential=True, acr="1")
    if required:
        if grant == "client_credentials":
            raise _invalid_client(
                7000216,
                "'client_assertion', 'client_secret' or 'request' is required for the 'client_credentials' grant type.",
            )
        raise _invalid_client(
            7000218,
            "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
        )
    return _Client(record=record, confidential=False, acr="0")


def _check_secret(ctx: _Ctx, record: App | AgentIdentity, value: str) -> None:
    secrets_ = record.secrets if isinstance(record, App) else []
    candidate = value.encode("utf-8", "surrogatepass")
    for secret in secrets_:
        if hmac.compare_digest(secret.value.encode("utf-8"), candidate):
            if secret.expires_at is not None and secret.expires_at <= ctx.now:
                raise _invalid_client(
                    7000222, f"The provided client secret keys for app '{record.app_id}' are expired."
                )
            return
    raise _invalid_client(
        7000215,
        "Invalid client secret provided. Ensure the secret being sent in the request is the client secret "
        "value, "
        f"not the client secret ID, for a secret added to app '{record.app_id}'.",
    )


def _check_assertion(ctx: _Ctx, record: App | AgentIdentity, assertion: str) -> None:
    peeked = _peek_jwt(assertion)
    if peeked is None:
        raise _invalid_client(50027, "JWT token is invalid or malformed.")
    header, payload = peeked
    if any(k in header for k in ("x5t", "x5t#S256", "x5c")):
        if isinstance(record, AgentIdentity):
            raise _invalid_client(
                700027, "Client assertion failed signature validation. [Reason - The key was not found.]"
            )
        _check_certificate_assertion(ctx, record, assertion, header, payload)
        return
    iss = _str_claim(payload, "iss")
    if _entra_issuer_tenant(ctx.fake, iss) is not None:
        if isinstance(record, AgentIdentity):
            _check_t1(ctx, record, assertion)
        else:
            _match_fic(record, _verified_entra_fic(ctx, assertion))
        return
    if isinstance(record, AgentIdentity):
        # Agent identities hold no credentials of their own, federated ones included (spec §3.1).
        raise _fic_issuer_mismatch(iss)
    _check_external_fic(ctx, record, assertion, header, payload)


def _time_ok(payload: Mapping[str, Any], now: float, skew: float) -> bool:
    exp = _num(payload.get("exp"))
    nbf = _num(payload.get("nbf"))
    if exp is None or exp + skew <= now:
        return False
    return not (nbf is not None and nbf - skew > now)


def _assertion_time_error(payload: Mapping[str, Any], now: float) -> _OAuthError:
    exp = _num(payload.get("exp"))
    nbf = _num(payload.get("nbf"))
    return _invalid_client(
        700024,
        f"Client assertion is not within its valid time range. Current time: {_timestamp(now)}, "
        f"assertion valid from {_timestamp(nbf) if nbf is not None else 'unspecified'}, "
        f"expiry time of assertion {_timestamp(exp) if exp is not None else 'invalid'}.",
    )


def _token_endpoints(ctx: _Ctx) -> set[str]:
    host = ctx.fake.authority_host
    url = ctx.request.url
    own = f"{url.scheme}://{url.netloc.decode('ascii', 'replace')}{url.path}"
    names = {ctx.segment}
    if ctx.tenant is not None:
        names |= {ctx.tenant.tenant_id, ctx.tenant.domain}
    out = {own.lower()}
    for name in names:
        for path in ("oauth2/v2.0/token", "oauth2/token"):
            out.add(f"https://{host}/{name}/{path}".lower())
            out.add(f"{url.scheme}://{url.netloc.decode('ascii', 'replace')}/{name}/{path}".lower())
    return out


def _assertion_alg(header: Mapping[str, Any]) -> str:
    alg = header.get("alg")
    if not isinstance(alg, str) or alg not in _RSA_ALGS:
        raise _invalid_client(
            700027,
            "Client assertion failed signature validation. [Reason - The signature algorithm is not supported.]",
        )
    return alg


def _verify_assertion_signature(assertion: str, key: Any, alg: str, options: Options) -> None:
    try:
        jwt.decode(assertion, key=key, algorithms=[alg], options=options)
    except jwt.PyJWTError as exc:
        raise _invalid_client(
            700027,
            "Client assertion failed signature validation. [Reason - The provided signature value did not match.]",
        ) from exc


def _find_certificate(app: App, header: Mapping[str, Any]) -> Certificate | None:
    x5t256 = header.get("x5t#S256")
    x5t = header.get("x5t")
    wanted: list[tuple[str, str]] = []
    if isinstance(x5t256, str):
        wanted.append(("sha256", x5t256.rstrip("=")))
    if isinstance(x5t, str):
        wanted.append(("sha1", x5t.rstrip("=")))
    x5c = header.get("x5c")
    if isinstance(x5c, list) and x5c and isinstance(x5c[0], str):
        try:
            der = base64.b64decode(x5c[0], validate=True)
        except (binascii.Error, ValueError):
            der = b""
        if der:
            wanted.append(("sha256", b64url(hashlib.sha256(der).digest())))
    for kind, value in wanted:
        for cert in app.certificates:
            registered = cert.thumbprint_sha256 if kind == "sha256" else cert.thumbprint_sha1
            if hmac.compare_digest(registered.rstrip("="), value):
                return cert
    return None


def _check_certificate_assertion(
    ctx: _Ctx, app: App, assertion: str, header: Mapping[str, Any], payload: Mapping[str, Any]
) -> None:
    alg = _assertion_alg(header)
    cert = _find_certificate(app, header)
    if cert is None:
        thumb = header.get("x5t#S256") or header.get("x5t") or ""
        thumb_text = thumb[:64] if isinstance(thumb, str) else ""
        raise _invalid_client(
            700027,
            "Client assertion failed signature validation. [Reason - The key was not found., "
            f"Thumbprint of key used by client: '{thumb_text}']",
        )
    try:
        public_key = x509.load_pem_x509_certificate(cert.pem).public_key()
    except ValueError as exc:  # pragma: no cover - registered certificates are built by FakeEntra
        raise _invalid_client(700027, "Client assertion failed signature validation.") from exc
    _verify_assertion_signature(
        assertion,
        public_key,
        alg,
        # Claims are checked below, each with its own AADSTS code.
        {
            "verify_exp": False,
            "verify_nbf": False,
            "verify_iat": False,
            "verify_aud": False,
            "verify_iss": False,
            "verify_sub": False,
            "verify_jti": False,
        },
    )
    if (
        _str_claim(payload, "iss").lower() != app.app_id.lower()
        or _str_claim(payload, "sub").lower() != app.app_id.lower()
    ):
        raise _invalid_client(700021, "Client assertion application identifier doesn't match 'client_id' parameter.")
    if not any(aud.lower() in _token_endpoints(ctx) for aud in _audiences(payload)):
        raise _invalid_client(
            50012,
            "Client assertion audience claim does not match Realm issuer. Its 'aud' must be the token endpoint.",
        )
    # MSAL signs certificate assertions on the system clock; FakeEntra may run on a FakeClock (module
    # docstring).
    if not (_time_ok(payload, ctx.now, _ASSERTION_SKEW) or _time_ok(payload, time.time(), _ASSERTION_SKEW)):
        raise _assertion_time_error(payload, ctx.now)


def _fic_issuer_mismatch(iss: str) -> _OAuthError:
    return _invalid_client(
        700211,
        f"No matching federated identity record found for presented assertion issuer '{iss[:200]}'. Please "
        "check your "
        "federated identity credential Subject, Audience and Issuer against the presented assertion.",
    )


def _match_fic(app: App, payload: Mapping[str, Any]) -> None:
    iss = _str_claim(payload, "iss")
    sub = _str_claim(payload, "sub")
    auds = _audiences(payload)
    by_issuer = [f for f in app.federated_credentials if f.issuer == iss]
    if not by_issuer:
        raise _fic_issuer_mismatch(iss)
    by_subject = [f for f in by_issuer if f.subject == sub]  # case-sensitive, as Entra compares it
    if not by_subject:
        raise _invalid_client(
            700213,
            f"No matching federated identity record found for presented assertion subject '{sub[:200]}'. "
            "Please check "
            "your federated identity credential Subject, Audience and Issuer against the presented "
            "assertion.",
        )
    if not any(a.lower() in {x.lower() for x in f.audiences} for f in by_subject for a in auds):
        raise _invalid_client(
            700212,
            "No matching federated identity record found for presented assertion audience "
            f"'{(auds or [''])[0][:200]}'. "
            "Please check your federated identity credential Subject, Audience and Issuer against the "
            "presented "
            "assertion.",
        )


def _check_external_fic(
    ctx: _Ctx, app: App, assertion: str, header: Mapping[str, Any], payload: Mapping[str, Any]
) -> None:
    _match_fic(app, payload)
    iss = _str_claim(payload, "iss")
    issuer = ctx.fake._token_state.oidc_issuers.get(iss)
    if issuer is None:
        raise _invalid_client(
            50166,
            f"Request to External OIDC endpoint failed. Unable to retrieve the signing keys of issuer '{iss[:200]}'.",
        )
    _verify_assertion_signature(
        assertion,
        issuer.public_key,
        _assertion_alg(header),
        {"verify_exp": False, "verify_nbf": False, "verify_iat": False, "verify_aud": False},
    )
    if not _time_ok(payload, ctx.now, _ASSERTION_SKEW):
        raise _assertion_time_error(payload, ctx.now)


_DECODE_ERRORS: Final = (jwt.PyJWTError, ValueError, KeyError, TypeError)


def _verify_entra(ctx: _Ctx, token: str) -> dict[str, Any] | None:
    """Claims of a token this FakeEntra issued, signature checked; ``None`` when the signature is not its own.

    Lifetime is checked by the callers (each flow has its own AADSTS code for it).
    """
    try:
        claims = ctx.fake.decode(token)
    except _DECODE_ERRORS:
        return None
    return dict(claims)


def _verified_entra_fic(ctx: _Ctx, assertion: str) -> dict[str, Any]:
    """The claims of an Entra-issued client assertion: this fake's signature, in its lifetime, app-only."""
    claims = _verify_entra(ctx, assertion)
    if claims is None:
        raise _invalid_client(700027, "Client assertion failed signature validation.")
    if not _time_ok(claims, ctx.now, 0):
        raise _assertion_time_error(claims, ctx.now)
    if not _is_app_only(claims):
        raise _invalid_client(
            700229,
            "ForbiddenTokenType: Only app-only tokens can be used as Federated Identity Credentials for AAD issuer.",
        )
    return claims


def _check_t1(ctx: _Ctx, agent: AgentIdentity, assertion: str) -> None:
    claims = _verified_entra_fic(ctx, assertion)
    iss = _str_claim(claims, "iss")
    if EXCHANGE_AUDIENCE.lower() not in {a.lower() for a in _audiences(claims)}:
        raise _invalid_client(
            700212,
            f"No matching federated identity record found for presented assertion audience "
            f"'{(_audiences(claims) or [''])[0][:200]}'.",
        )
    # T1 must come from the agent's own tenant and be issued to its blueprint (spec §3.1, §3.3).
    if _str_claim(claims, "tid").lower() != agent.tenant_id.lower():
        raise _fic_issuer_mismatch(iss)
    parent = (_str_claim(claims, "azp") or _str_claim(claims, "appid")).lower()
    if parent != agent.blueprint_app_id.lower():
        raise _fic_issuer_mismatch(iss)
    expected = fmi_subject(agent.tenant_id, agent.blueprint_app_id, agent.app_id)
    if _str_claim(claims, "sub").lower() != expected.lower():
        raise _invalid_client(
            7002137,
            "No matching federated identity record found for presented assertion subject "
            f"'{_str_claim(claims, 'sub')[:200]}'."
            " The assertion must be an exchange token requested by the agent's blueprint with fmi_path set "
            "to the "
            "agent identity's client id.",
        )


# -- scopes and resources ------------------------------------------------------------------------------------


@dataclass(slots=True, kw_only=True)
class _Scopes:
    resource: App | str | None  # str: the exchange audience
    prefix: str  # the resource identifier as the caller wrote it
    names: tuple[str, ...]  # permission names without prefix (".default" possible)
    oidc: frozenset[str]


def _resolve_resource(ctx: _Ctx, identifier: str) -> App | str:
    if identifier.rstrip("/").lower() == EXCHANGE_AUDIENCE.lower():
        return EXCHANGE_AUDIENCE
    if identifier.rstrip("/").lower() in (_GRAPH, _GRAPH_ID):
        ctx.fake.microsoft_graph()  # registered on first use, as every tenant can reach it
    app = ctx.fake.registry.app_by_identifier(identifier) if len(identifier) <= 1000 else None
    tenant = ctx.tenant
    if (
        app is not None
        and tenant is not None
        and app.tenant_id.lower() != tenant.tenant_id.lower()
        and not app.multi_tenant
    ):
        app = None
    if app is None:
        tenant_text = tenant.tenant_id if tenant is not None else ctx.segment
        raise _OAuthError(
            500011,
            "invalid_resource",
            f"The resource principal named {identifier[:200]} was not found in the tenant named "
            f"{tenant_text[:100]}. "
            "This can happen if the application has not been installed by the administrator of the tenant or "
            "consented to by any user in the tenant. You might have sent your authentication request to the "
            "wrong "
            "tenant.",
        )
    return app


def _check_resource_indicator(ctx: _Ctx, resource: App | str) -> None:
    # The v2 endpoint takes the resource from the scopes. Entra refuses an RFC 8707 ``resource`` (which MCP
    # clients send: the protected-resource document's ``resource``) that names anything else (AADSTS9010010).
    value = None if ctx.v1 else ctx.get("resource")
    if value is not None and not resource_indicator_matches(resource, value):
        raise _OAuthError(
            9010010,
            "invalid_target",
            "The resource parameter provided in the request doesn't match with the requested scopes.",
        )


def _parse_scopes(ctx: _Ctx, raw: str) -> _Scopes:
    items: list[str] = []
    for item in raw.split():
        if item not in items:
            items.append(item)
    oidc = frozenset(i.lower() for i in items if i.lower() in OIDC_SCOPES)
    rest = [i for i in items if i.lower() not in OIDC_SCOPES]
    grouped: dict[str, list[str]] = {}
    for item in rest:
        if "/" in item:
            prefix, _, name = item.rpartition("/")
        else:
            prefix, name = _GRAPH, item  # resourceless scopes are Microsoft Graph's (ED scopes doc)
        if not prefix or not name or prefix.endswith(":") or prefix.endswith(":/"):
            raise _invalid_scope(
                70011,
                f"The provided value for the input parameter 'scope' is not valid. The scope {item[:200]} is "
                "not valid.",
            )
        grouped.setdefault(prefix.rstrip("/"), []).append(name)
    if len(grouped) > 1:
        resolved = {id(_resolve_resource(ctx, p)) for p in grouped}
        if len(resolved) > 1:
            raise _invalid_scope(
                700022,
                "The provided value for the input parameter scope is not valid because it contains more than "
                "one "
                "resource. Scope " + " ".join(s[:100] for s in rest) + " is not valid.",
            )
        merged: list[str] = []
        for names in grouped.values():
            merged.extend(n for n in names if n not in merged)
        prefix = next(iter(grouped))
        grouped = {prefix: merged}
    if not grouped:
        return _Scopes(resource=None, prefix="", names=(), oidc=oidc)
    prefix, names = next(iter(grouped.items()))
    return _Scopes(resource=_resolve_resource(ctx, prefix), prefix=prefix, names=tuple(names), oidc=oidc)


# -- token responses -----------------------------------------------------------------------------------------


def _lifetime_of(token: str, now: float) -> int:
    peeked = _peek_jwt(token)
    exp = _num(peeked[1].get("exp")) if peeked is not None else None
    return max(int((exp or now + 3599) - now), 1)


def _app_response(token: str, now: float) -> dict[str, Any]:
    expires_in = _lifetime_of(token, now)
    body: dict[str, Any] = {
        "token_type": "Bearer",
        "expires_in": expires_in,
        "ext_expires_in": expires_in,
        "access_token": token,
    }
    if expires_in > 5400:
        body["refresh_in"] = expires_in // 2
    return body


def _client_info(oid: str, tid: str) -> str:
    return b64url(json.dumps({"uid": oid, "utid": tid}, separators=(",", ":")).encode())


@dataclass(frozen=True, slots=True, kw_only=True)
class _SignIn:
    """What an interactive sign-in adds to the ID token (ED id-token-claims-reference.md)."""

    nonce: str | None = None
    sid: str | None = None
    auth_time: int | None = None  # sent when the request asked for max_age (OIDC Core §3.1.2.1)


def _id_token(ctx: _Ctx, user: User | AgentUser, client_id: str, tid: str, sign_in: _SignIn | None = None) -> str:
    """A v2 ID token as Entra shapes it: ``aud`` = the client, ``sub`` pairwise per app, ``nonce`` echoed."""
    now = int(ctx.now)
    claims: dict[str, Any] = {
        "aud": client_id,
        "iss": f"https://{ctx.fake.authority_host}/{tid}/v2.0",
        "iat": now,
        "nbf": now,
        "exp": now + _ID_TOKEN_LIFETIME,
        "aio": b64url(secrets.token_bytes(48)),
    }
    if sign_in is not None and sign_in.auth_time is not None:
        claims["auth_time"] = sign_in.auth_time
    claims["name"] = user.display_name or user.upn.split("@", 1)[0]
    if sign_in is not None and sign_in.nonce is not None:
        claims["nonce"] = sign_in.nonce
    claims.update(
        {
            "oid": user.object_id,
            "preferred_username": user.upn,
            "rh": f"1.A{b64url(secrets.token_bytes(33))}.",
        }
    )
    if sign_in is not None and sign_in.sid:
        claims["sid"] = sign_in.sid
    claims.update(
        {
            "sub": pairwise_sub(user.object_id, client_id),
            "tid": tid,
            "uti": b64url(secrets.token_bytes(16)),
            "ver": "2.0",
        }
    )
    return ctx.fake.sign(claims)


def _user_response(
    ctx: _Ctx,
    *,
    client: _Client,
    user: User | AgentUser,
    parsed: _Scopes,
    require_consent: bool = True,
    amr: tuple[str, ...] = (),
    sign_in: _SignIn | None = None,
) -> dict[str, Any]:
    """A delegated grant's answer: ``user``'s token for the scopes ``parsed`` asks (see :func:`_delegated`)."""
    resource, scopes = _delegated(
        ctx, client_id=client.app_id, user_oid=user.object_id, parsed=parsed, require_consent=require_consent
    )
    _check_resource_indicator(ctx, resource)
    tid = ctx.tenant_id
    oidc = parsed.oidc
    prefix = parsed.prefix or (resource.identifier_uris[0] if resource.identifier_uris else resource.app_id)
    extra: dict[str, Any] = {"amr": list(amr)} if amr else {}
    token = ctx.fake.issue_token(
        tenant=tid,
        resource=resource,
        client=client.record,
        user=user,
        scopes=list(scopes),
        extra_claims=extra or None,
        azpacr=client.acr,
    )
    body = _app_response(token, ctx.now)
    # Entra names Microsoft Graph's permissions by their short names in the answer (`User.Read`), other
    # resources' in full form; MSAL looks cached tokens up by these strings.
    graph = prefix.rstrip("/").lower() == _GRAPH
    granted = list(scopes) if graph else [f"{prefix}/{s}" for s in scopes]
    body["scope"] = " ".join(granted + sorted(o for o in oidc if o != "offline_access"))
    if "offline_access" in oidc:
        rt = b64url(secrets.token_bytes(48))
        ctx.fake._token_state.refresh_tokens[rt] = _RefreshRecord(
            tenant_id=tid,
            client_id=client.app_id,
            user_oid=user.object_id,
            agent_user=isinstance(user, AgentUser),
            confidential=client.confidential,
            resource_app_id=resource.app_id,
            scopes=scopes,
            oidc=oidc,
            expires_at=ctx.now + _REFRESH_TOKEN_LIFETIME,
            amr=amr,
        )
        body["refresh_token"] = rt
    if "openid" in oidc:
        body["id_token"] = _id_token(ctx, user, client.app_id, tid, sign_in)
    if ctx.get("client_info") == "1":
        body["client_info"] = _client_info(user.object_id, tid)
    return body


def _delegated(
    ctx: _Ctx, *, client_id: str, user_oid: str, parsed: _Scopes, require_consent: bool = True
) -> tuple[App, tuple[str, ...]]:
    """The resource and the scopes granted for a delegated request (consent enforced; spec §5.3 AADSTS65001)."""
    resource = parsed.resource
    if resource is None:
        resource = ctx.fake.microsoft_graph()  # OpenID Connect scopes alone: the access token is Graph's
    if isinstance(resource, str):
        raise _invalid_scope(
            70011,
            "The provided value for the input parameter 'scope' is not valid. The scope "
            f"{resource}/{' '.join(parsed.names)[:100]} is not valid.",
        )
    names = parsed.names or (".default",)
    wants_default = ".default" in names
    if wants_default and len(names) > 1:
        raise _invalid_scope(
            70011,
            "The provided value for the input parameter 'scope' is not valid. '.default' cannot be combined "
            "with other scopes.",
        )
    if not wants_default:
        exposed = {s.lower(): s for s in resource.scopes}
        unknown = [n for n in names if n.lower() not in exposed]
        if unknown:
            # A well-formed scope the resource does not expose: Entra answers AADSTS65005 (invalid_client),
            # not the syntax error 70011.
            raise _OAuthError(
                65005,
                "invalid_client",
                f"The application '{client_id}' asked for scope '{unknown[0][:100]}' that doesn't exist on the "
                f"resource '{resource.app_id}'. Contact the app vendor.",
            )
        names = tuple(exposed[n.lower()] for n in names)
    consented = ctx.fake.registry.consented_scopes(client_id, resource.app_id, user_oid)
    if wants_default:
        granted = tuple(sorted(consented)) if require_consent else tuple(sorted(resource.scopes))
    else:
        granted = names
    if require_consent:
        low = {c.lower() for c in consented}
        if (wants_default and not consented) or any(n.lower() not in low for n in granted):
            raise _invalid_grant(
                65001,
                f"The user or administrator has not consented to use the application with ID '{client_id}'. "
                "Send an "
                "interactive authorization request for this user and resource.",
                suberror="consent_required",
            )
    return resource, granted


def _mfa_satisfied(ctx: _Ctx, amr: Any) -> bool:
    claims = ctx.get("claims") or ""
    return _MFA_CHALLENGE_KEY in claims or (isinstance(amr, list) and "mfa" in amr)


def _mfa_error(code: int) -> _OAuthError:
    text = (
        "Due to a configuration change made by your administrator, or because you moved to a new location, "
        "you must " + ("enroll in" if code == 50079 else "use") + " multi-factor authentication to access the resource."
    )
    return _OAuthError(code, "interaction_required", text, claims=_MFA_CHALLENGE)


# -- grants --------------------------------------------------------------------------------------------------


def _client_credentials(ctx: _Ctx) -> dict[str, Any]:
    if ctx.tenant is None:
        raise _no_tenant()
    client = _authenticate(ctx, required=True, grant="client_credentials")
    raw = ctx.require("scope")
    items = list(dict.fromkeys(raw.split()))
    if not items or any(not i.endswith("/.default") for i in items):
        bad = next((i for i in items if not i.endswith("/.default")), raw)
        raise _invalid_scope(
            70011,
            f"The provided value for the input parameter 'scope' is not valid. The scope {bad[:200]} is not "
            "valid. "
            "Client credential flows must have a scope value with /.default suffixed to the resource "
            "identifier.",
        )
    resources = [_resolve_resource(ctx, i[: -len("/.default")]) for i in items]
    if len({id(r) for r in resources}) > 1:
        raise _invalid_scope(
            700022,
            "The provided value for the input parameter scope is not valid because it contains more than one resource.",
        )
    resource = resources[0]
    _check_resource_indicator(ctx, resource)
    record = client.record
    fmi_path = ctx.get("fmi_path")
    if fmi_path is not None:
        if not (isinstance(record, App) and record.is_blueprint):
            raise _malformed("fmi_path is only supported for agent identity blueprints.")
        if resource != EXCHANGE_AUDIENCE:
            raise _invalid_scope(
                70011,
                "The provided value for the input parameter 'scope' is not valid. fmi_path requires the "
                f"scope {EXCHANGE_AUDIENCE}/.default.",
            )
        agent = ctx.fake.registry.agent(fmi_path) if len(fmi_path) <= 200 else None
        if agent is None or agent.blueprint_app_id.lower() != record.app_id.lower():
            raise _invalid_request(
                9002313,
                f"Invalid request. fmi_path '{fmi_path[:100]}' does not name an agent identity of blueprint "
                f"'{record.app_id}'.",
            )
        # T1 for an agent in another tenant is still issued here; the next leg refuses it (AADSTS700211, spec
        # §3.1).
        fmi_path = agent.app_id
    # An app token's roles are the client's grants on the resource (issue_token's default).
    token = ctx.fake.issue_token(
        tenant=ctx.tenant_id, resource=resource, client=record, fmi_path=fmi_path, azpacr=client.acr
    )
    return _app_response(token, ctx.now)


def _user_record(ctx: _Ctx, oid: str) -> User | AgentUser | None:
    registry = ctx.fake.registry
    user = registry.users.get(oid.lower())
    if user is not None:
        return user
    return registry.agent_users.get(oid.lower())


def _on_behalf_of(ctx: _Ctx) -> dict[str, Any]:
    if ctx.require("requested_token_use") != "on_behalf_of":
        raise _malformed("requested_token_use must be 'on_behalf_of'.")
    assertion = ctx.require("assertion")
    peeked = _peek_jwt(assertion)
    if peeked is None:
        raise _invalid_grant(50027, "JWT token is invalid or malformed.")
    # For a meta-tenant the user's tenant (from the assertion) is the one acting (spec §3.9).
    if ctx.tenant is None:
        tid = _str_claim(peeked[1], "tid")
        ctx.tenant = ctx.fake.registry.tenant(tid) if tid else None
        if ctx.tenant is None:
            raise _no_tenant()
    client = _authenticate(ctx, required=True, grant="jwt_bearer")
    claims = _verify_entra(ctx, assertion)
    if claims is None:
        raise _invalid_grant(50013, "Assertion failed signature validation. [Reason - The key was not found.]")
    if not _time_ok(claims, ctx.now, 0):
        exp = _num(claims.get("exp"))
        raise _invalid_grant(
            500133,
            "Assertion is not within its valid time range. Ensure that the access token is not expired "
            "before using "
            f"it for user assertion, or request a new token. Current time: {_timestamp(ctx.now)}, expiry "
            "time of "
            f"assertion {_timestamp(exp) if exp is not None else 'invalid'}.",
        )
    if _is_app_only(claims):
        raise _invalid_grant(
            7000114, f"Application '{client.app_id}' is not allowed to make application on-behalf-of calls."
        )
    record = client.record
    auds = {a.lower().rstrip("/") for a in _audiences(claims)}
    if isinstance(record, AgentIdentity):
        expected = ctx.fake.registry.app(record.blueprint_app_id)
        expected_ids = {record.blueprint_app_id.lower()}
        if expected is not None:
            expected_ids |= {u.lower().rstrip("/") for u in expected.identifier_uris}
        if not auds & expected_ids:
            raise _invalid_grant(
                50013,
                "Assertion failed signature validation. [Reason - The audience of the assertion is not the "
                "agent's "
                f"blueprint '{record.blueprint_app_id}'.]",
            )
    else:
        expected_ids = {record.app_id.lower()} | {u.lower().rstrip("/") for u in record.identifier_uris}
        if not auds & expected_ids:
            shown = next(iter(_audiences(claims)), "")[:200]
            raise _invalid_grant(
                500131,
                "Assertion audience does not match the Client app presenting the assertion. The audience in "
                "the "
                f"assertion was '{shown}' and the expected audience is '{record.app_id}' or one of the "
                "Application "
                f"Uris of this application with App ID '{record.app_id}'. The downstream client must request "
                "a token "
                "for the expected audience (the application that made the OBO request) and this application "
                "should "
                "use that token as the assertion.",
            )
    oid = _str_claim(claims, "oid")
    user = _user_record(ctx, oid) if oid else None
    if user is None:
        raise _invalid_grant(50034, "The user account does not exist in the directory.")
    if isinstance(user, User) and user.mfa_required and not _mfa_satisfied(ctx, claims.get("amr")):
        raise _mfa_error(50079)
    parsed = _parse_scopes(ctx, ctx.require("scope"))
    amr_claim = claims.get("amr")
    amr = tuple(a for a in amr_claim if isinstance(a, str)) if isinstance(amr_claim, list) else ()
    return _user_response(ctx, client=client, user=user, parsed=parsed, amr=amr)


def _user_fic(ctx: _Ctx) -> dict[str, Any]:
    if ctx.tenant is None:
        raise _no_tenant()
    client = _authenticate(ctx, required=True, grant="user_fic")
    record = client.record
    if not isinstance(record, AgentIdentity):
        raise _OAuthError(
            70003,
            "unsupported_grant_type",
            "The grant type 'user_fic' is supported only for agent identities.",
        )
    t2 = ctx.require("user_federated_identity_credential")
    username = ctx.get("username")
    user_id = ctx.get("user_id")
    if username is not None and user_id is not None:
        raise _malformed("Only one of 'username' and 'user_id' may be given.")
    if username is None and user_id is None:
        raise _missing("username")
    if _peek_jwt(t2) is None:
        raise _invalid_grant(50027, "JWT token is invalid or malformed.")
    claims = _verify_entra(ctx, t2)
    if claims is None:
        raise _invalid_grant(50013, "Assertion failed signature validation. [Reason - The key was not found.]")
    if not _time_ok(claims, ctx.now, 0):
        raise _invalid_grant(
            500133, f"Assertion is not within its valid time range. Current time: {_timestamp(ctx.now)}."
        )
    if not _is_app_only(claims):
        raise _invalid_grant(
            700229,
            "ForbiddenTokenType: Only app-only tokens can be used as Federated Identity Credentials for AAD issuer.",
        )
    # T2 is the agent's own exchange token (spec §3.5 leg 2).
    if (
        EXCHANGE_AUDIENCE.lower() not in {a.lower() for a in _audiences(claims)}
        or (_str_claim(claims, "azp") or _str_claim(claims, "appid")).lower() != record.app_id.lower()
        or _str_claim(claims, "tid").lower() != ctx.tenant_id.lower()
        or "fmi_path" in claims
        or _str_claim(claims, "sub").startswith("/eid1/")
    ):
        raise _invalid_grant(
            50013,
            "Assertion failed signature validation. [Reason - The user federated identity credential must be "
            "an "
            f"exchange token issued to agent identity '{record.app_id}' in this tenant.]",
        )
    registry = ctx.fake.registry
    agent_user = registry.agent_user(user_id if user_id is not None else username or "")
    if agent_user is None or agent_user.tenant_id.lower() != ctx.tenant_id.lower():
        raise _invalid_grant(50034, "The user account does not exist in the directory.")
    if agent_user.agent_app_id.lower() != record.app_id.lower():
        raise _invalid_grant(
            50013,
            f"The agent user is not associated with agent identity '{record.app_id}' (identityParentId).",
        )
    return _user_response(ctx, client=client, user=agent_user, parsed=_parse_scopes(ctx, ctx.require("scope")))


def _refresh_token(ctx: _Ctx) -> dict[str, Any]:
    value = ctx.require("refresh_token")
    record = ctx.fake._token_state.refresh_tokens.get(value)
    if record is None:
        raise _invalid_grant(70000, "Provided grant is invalid or malformed.")
    if record.expires_at <= ctx.now:
        raise _invalid_grant(
            700082,
            "The refresh token has expired due to inactivity. The token was issued on "
            f"{_timestamp(record.expires_at - _REFRESH_TOKEN_LIFETIME)} and was inactive for 90.00:00:00.",
        )
    if ctx.tenant is None:
        ctx.tenant = ctx.fake.registry.tenant(record.tenant_id)
        if ctx.tenant is None:
            raise _no_tenant()
    if ctx.tenant.tenant_id.lower() != record.tenant_id.lower():
        raise _invalid_grant(
            70000, "Provided grant is invalid or malformed. The refresh token was issued in another tenant."
        )
    client = _authenticate(ctx, required=record.confidential, grant="refresh_token")
    if client.app_id.lower() != record.client_id.lower():
        raise _invalid_grant(
            70000,
            "Provided grant is invalid or malformed. The refresh token was issued to a different client.",
        )
    user = (
        ctx.fake.registry.agent_users.get(record.user_oid.lower())
        if record.agent_user
        else ctx.fake.registry.users.get(record.user_oid.lower())
    )
    if user is None:
        raise _invalid_grant(50034, "The user account does not exist in the directory.")
    raw = ctx.get("scope")
    if raw is None:
        resource = ctx.fake.registry.app(record.resource_app_id)
        if resource is None:
            raise _invalid_grant(70000, "Provided grant is invalid or malformed.")
        parsed = _Scopes(resource=resource, prefix="", names=record.scopes, oidc=record.oidc)
    else:
        parsed = _parse_scopes(ctx, raw)
    body = _user_response(
        ctx, client=client, user=user, parsed=parsed, require_consent=record.confidential, amr=record.amr
    )
    # Entra rotates refresh tokens but keeps the old one valid until it expires.
    record.expires_at = max(record.expires_at, ctx.now + _REFRESH_TOKEN_LIFETIME)
    return body


def _first_resource(raw: str) -> str:
    """``raw`` with the scopes of its first resource only (plus the OIDC scopes): Entra issues one access token,
    for the first resource, when a code was obtained for several."""
    items = raw.split()
    first = next((i.rpartition("/")[0] if "/" in i else _GRAPH for i in items if i.lower() not in OIDC_SCOPES), None)
    return " ".join(
        i
        for i in items
        if i.lower() in OIDC_SCOPES or (i.rpartition("/")[0] if "/" in i else _GRAPH).lower() == (first or "").lower()
    )


def _authorization_code(ctx: _Ctx) -> dict[str, Any]:
    value = ctx.require("code")
    redirect_uri = ctx.require("redirect_uri")
    state = ctx.fake._interactive_state
    code = state.codes.get(value) if len(value) <= 1024 else None
    if code is None:
        raise _invalid_grant(70000, "Provided grant is invalid or malformed.")
    if code.redeemed:
        # A replayed code revokes what it gave (RFC 6749 §4.1.2): someone else may hold it.
        for token in code.refresh_tokens:
            ctx.fake._token_state.refresh_tokens.pop(token, None)
        raise _invalid_grant(
            54005,
            "OAuth2 Authorization code was already redeemed, please retry with a new valid code or use an existing "
            "refresh token.",
        )
    if code.expires_at <= ctx.now:
        raise _invalid_grant(
            70008,
            "The provided authorization code or refresh token has expired due to inactivity. Send a new interactive "
            "authorization request for this user and resource.",
        )
    if ctx.tenant is None:
        ctx.tenant = ctx.fake.registry.tenant(code.tenant_id)
        if ctx.tenant is None:  # pragma: no cover - tenants are never removed
            raise _no_tenant()
    elif ctx.tenant.tenant_id != code.tenant_id:
        raise _invalid_grant(
            700005,
            "Provided Authorization Code is intended to use against other tenant, thus rejected.",
        )
    client = _authenticate(ctx, required=False, grant="authorization_code")
    record = client.record
    if not client.confidential and not (isinstance(record, App) and record.public_client):
        raise _invalid_client(
            7000218,
            "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
        )
    if client.app_id != code.client_id:
        raise _invalid_grant(70000, "Provided grant is invalid or malformed. The code was issued to another client.")
    if redirect_uri != code.redirect_uri:
        raise _invalid_grant(
            500112,
            f"The reply address '{redirect_uri[:300]}' does not match the reply address '{code.redirect_uri}' "
            "provided when requesting Authorization code.",
        )
    if code.code_challenge is not None:
        verifier = ctx.require("code_verifier")
        if not pkce_matches(code, verifier):
            raise _invalid_grant(
                501481, "The Code_Verifier does not match the code_challenge supplied in the authorization request."
            )
    user = ctx.fake.registry.users.get(code.user_oid)
    if user is None:
        raise _invalid_grant(50034, "The user account does not exist in the directory.")
    parsed = _parse_scopes(ctx, _first_resource(ctx.get("scope") or code.scope))
    if parsed.resource is None:
        # Sign-in only: Entra's access token is then Microsoft Graph's, for the user's own profile.
        parsed = _Scopes(resource=ctx.fake.microsoft_graph(), prefix=_GRAPH, names=("User.Read",), oidc=parsed.oidc)
    # Reading one's own profile needs no separate grant (the sign-in page asked for none either).
    own_profile = isinstance(parsed.resource, App) and parsed.resource.app_id == _GRAPH_ID
    require_consent = not (own_profile and {n.lower() for n in parsed.names} <= {"user.read"})
    sign_in = _SignIn(nonce=code.nonce, sid=code.sid or None, auth_time=code.auth_time if code.max_age else None)
    body = _user_response(
        ctx,
        client=client,
        user=user,
        parsed=parsed,
        require_consent=require_consent,
        amr=("pwd", "mfa") if user.mfa_required else ("pwd",),
        sign_in=sign_in,
    )
    code.redeemed = True
    if "refresh_token" in body:
        code.refresh_tokens.append(body["refresh_token"])
    return body


def _password(ctx: _Ctx) -> dict[str, Any]:
    username = ctx.require("username")
    password = ctx.require("password")
    registry = ctx.fake.registry
    user = registry.user(username) if len(username) <= 256 else None
    if ctx.tenant is None and user is not None:
        ctx.tenant = registry.tenant(user.tenant_id)
    if ctx.tenant is None:
        raise _no_tenant()
    client = _authenticate(ctx, required=False, grant="password")
    bad_credentials = _invalid_grant(50126, "Error validating credentials due to invalid username or password.")
    if user is None or user.tenant_id.lower() != ctx.tenant_id.lower():
        if registry.agent_user(username) is not None:
            raise bad_credentials  # agent users have no password; only user_fic signs them in (spec §3.1)
        raise _invalid_grant(
            50034,
            f"The user account {{EUII Hidden}} does not exist in the {ctx.tenant_id} directory. To sign into "
            "this application, the account must be added to the directory.",
        )
    if user.password is None or not hmac.compare_digest(
        user.password.encode("utf-8"), password.encode("utf-8", "surrogatepass")
    ):
        raise bad_credentials
    amr: tuple[str, ...] = ("pwd",)
    if user.mfa_required:
        if not _mfa_satisfied(ctx, None):
            raise _mfa_error(50076)
        amr = ("pwd", "mfa")
    parsed = _parse_scopes(ctx, ctx.get("scope") or "openid profile offline_access")
    return _user_response(ctx, client=client, user=user, parsed=parsed, require_consent=client.confidential, amr=amr)
