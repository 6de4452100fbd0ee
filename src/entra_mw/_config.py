"""Configuration values: :class:`EntraConfig` and :class:`DownstreamApi`.

Both are frozen, keyword-only dataclasses that validate themselves. ``EntraConfig.from_env`` reads the official
sidecar's environment variables (spec §2), so a sidecar ConfigMap works unchanged; ``from_mapping`` reads a nested
dict (Django settings, Flask config) using the same names as the constructor.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from types import MappingProxyType
from typing import Any, Final
from urllib.parse import quote, urlsplit

from ._ids import DOMAIN, META_TENANTS, SUPPORTED_ALGORITHMS, is_guid, is_loopback_host, without_userinfo
from .credentials import (
    CREDENTIAL_TYPES,
    TOKEN_EXCHANGE_AUDIENCE,
    AssertionCallback,
    CertificateCredential,
    ClientSecret,
    Credential,
    ManagedIdentityAssertion,
    SignedAssertionFile,
)
from .errors import ConfigurationError

__all__ = ["DownstreamApi", "EntraConfig"]

_HTTP_METHODS: Final = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})


def _frozen_map(value: Mapping[str, Any] | None, key: str) -> Mapping[str, Any]:
    if value is None:
        return MappingProxyType({})
    if not isinstance(value, Mapping):
        raise ConfigurationError(f"{key} must be a mapping", key=key)
    return MappingProxyType(dict(value))


def _str_tuple(value: Any, key: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return tuple(v for v in value.split() if v)
    if not isinstance(value, Iterable):
        raise ConfigurationError(f"{key} must be a sequence of strings", key=key)
    out = tuple(value)
    for item in out:
        if not isinstance(item, str) or not item:
            raise ConfigurationError(f"{key} must contain non-empty strings, got {item!r}", key=key)
    return out


@dataclass(frozen=True, slots=True, kw_only=True)
class DownstreamApi:
    """One named downstream API (the sidecar's ``DownstreamApis:{name}`` section, spec §2.3).

    ::

        DownstreamApi(base_url="https://graph.microsoft.com/v1.0/", scopes=("User.Read",))
        DownstreamApi(base_url="https://api.contoso.com/", scopes=("api://weather/.default",), request_app_token=True)

    ``scopes``: what to ask Entra for (app tokens use the first, which must end in ``/.default``).
    ``request_app_token``: app-only (client credentials) instead of On-Behalf-Of the caller.
    ``relative_path``/``http_method``: defaults for :meth:`Downstream.call`.
    ``extra_headers``/``extra_query``: added to every call (reserved headers such as ``Authorization`` refused).
    ``tenant``: a tenant override for token requests. ``max_response_bytes``: responses larger than this fail.
    ``timeout``: seconds the whole call may take (connect, send, headers and body).
    ``repr`` masks the values of ``extra_headers`` and ``extra_query`` (subscription and function keys).
    ``base_url=""`` declares an API that is only asked for authorization headers (the sidecar's
    ``DownstreamApis:{name}`` with no ``BaseUrl``); :meth:`Downstream.call` refuses it.
    """

    base_url: str
    scopes: Sequence[str] = ()
    request_app_token: bool = False
    relative_path: str = ""
    http_method: str = "GET"
    extra_headers: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    extra_query: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    accept_header: str = "application/json"
    content_type: str = "application/json"
    tenant: str | None = None
    max_response_bytes: int = 10 * 1024 * 1024
    timeout: float = 30.0

    def __post_init__(self) -> None:
        if not isinstance(self.base_url, str):
            raise ConfigurationError("DownstreamApi.base_url is required", key="BaseUrl")
        parts = urlsplit(self.base_url)
        if self.base_url and (parts.scheme not in ("https", "http") or not parts.hostname):
            raise ConfigurationError(
                f"DownstreamApi.base_url must be an absolute http(s) URL, got {without_userinfo(self.base_url)!r}",
                key="BaseUrl",
            )
        if parts.query or parts.fragment or parts.username or parts.password:
            raise ConfigurationError(
                "DownstreamApi.base_url must not carry a query, fragment or credentials", key="BaseUrl"
            )
        object.__setattr__(self, "scopes", _str_tuple(self.scopes, "Scopes"))
        method = str(self.http_method or "GET").upper()
        if method not in _HTTP_METHODS:
            raise ConfigurationError(
                f"DownstreamApi.http_method {self.http_method!r} is not supported", key="HttpMethod"
            )
        object.__setattr__(self, "http_method", method)
        object.__setattr__(self, "extra_headers", _frozen_map(self.extra_headers, "ExtraHeaderParameters"))
        object.__setattr__(self, "extra_query", _frozen_map(self.extra_query, "ExtraQueryParameters"))
        if self.max_response_bytes <= 0:
            raise ConfigurationError("max_response_bytes must be positive", key="max_response_bytes")

    def __repr__(self) -> str:
        # Header and query values are often keys (Ocp-Apim-Subscription-Key, ?code=): names only.
        parts = []
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in ("extra_headers", "extra_query"):
                value = {name: "***" for name in value}
            parts.append(f"{f.name}={value!r}")
        return f"DownstreamApi({', '.join(parts)})"


@dataclass(frozen=True, slots=True, kw_only=True)
class EntraConfig:
    """Everything one app needs to validate Entra tokens and get tokens for downstream APIs.

    ::

        config = EntraConfig(
            tenant_id="72f988bf-86f1-41af-91ab-2d7cd011db47",
            client_id="11111111-2222-3333-4444-555555555555",
            audiences=("api://weather",),
            credentials=[ClientSecret(os.environ["CLIENT_SECRET"])],
            downstream_apis={"graph": DownstreamApi(base_url="https://graph.microsoft.com/v1.0/",
                                                     scopes=("User.Read",))},
        )

    Identity: ``tenant_id`` (a GUID, a domain, ``common`` or ``organizations``), ``client_id`` (this app, the agent
    blueprint), ``instance`` (the cloud's login host).

    Validation: ``audiences`` (accepted in addition to ``client_id`` for v2 tokens and ``api://{client_id}`` for
    v1 tokens), ``valid_issuers`` (extra issuer templates, ``{tenantid}`` substituted), ``allowed_tenants``
    (multi-tenant allow-list; ``None`` with ``common``/``organizations`` accepts **any** tenant), ``clock_skew``,
    ``algorithms`` (RS256 only by default), ``allow_acl_authorization`` (accept tokens with neither ``scp`` nor
    ``roles``; off by default, IDW10201), ``extra_query_parameters`` (added to the metadata address, e.g.
    ``{"appid": client_id}`` for app-specific signing keys), ``max_token_bytes``, JWKS refresh timings and the
    validated-token cache size and lifetime cap. ``allow_insecure_http``: fetch metadata and keys over plain
    ``http://``; only for a loopback ``instance`` (a local emulator), refused for any other host.

    Acquisition: ``credentials`` (tried in order), ``send_x5c``, ``downstream_apis``, the token cache (L1 size,
    optional Redis ``redis_url``, key prefix and encryption key), ``token_refresh_margin`` and retry limits.
    """

    tenant_id: str
    client_id: str
    instance: str = "https://login.microsoftonline.com/"
    audiences: Sequence[str] = ()
    valid_issuers: Sequence[str] = ()
    allowed_tenants: Sequence[str] | None = None
    clock_skew: int = 300
    algorithms: Sequence[str] = ("RS256",)
    allow_acl_authorization: bool = False
    extra_query_parameters: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    max_token_bytes: int = 16 * 1024
    jwks_refresh_interval: float = 12 * 3600.0
    jwks_refresh_cooldown: float = 300.0
    jwks_unknown_kid_cache_size: int = 1024
    validated_token_cache_size: int = 10_000
    validated_token_cache_ttl: float = 300.0
    #: Plain-http metadata and keys: for a loopback ``instance`` only (refused otherwise). Off by default.
    allow_insecure_http: bool = False
    # Acquisition
    credentials: Sequence[Credential] = ()
    send_x5c: bool = False
    downstream_apis: Mapping[str, DownstreamApi] = field(default_factory=lambda: MappingProxyType({}))
    token_cache_size: int = 100_000
    token_refresh_margin: float = 300.0
    token_request_retries: int = 2
    token_request_max_wait: float = 30.0
    redis_url: str | None = field(default=None, repr=False)
    redis_key_prefix: str = "entra_mw:"
    cache_encryption_key: str | None = field(default=None, repr=False)
    acquisition_workers: int = 16
    http_timeout: float = 10.0
    #: Values of the sidecar's ``Sidecar:*`` section and other keys kept for the sidecar service (read-only).
    sidecar_options: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    #: ``AzureAd:Scopes``: the scope ``/Validate`` requires (sidecar compatibility).
    validate_scopes: str | None = None

    def __post_init__(self) -> None:
        for name in ("tenant_id", "client_id", "instance"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip():
                raise ConfigurationError(f"{name} is required", key=name)
        tenant = self.tenant_id.strip()
        if tenant.lower() in META_TENANTS:
            tenant = tenant.lower()
        elif not (is_guid(tenant) or DOMAIN.match(tenant)):
            raise ConfigurationError(
                f"tenant_id must be a GUID, a domain, 'common' or 'organizations'; got {self.tenant_id!r}",
                key="tenant_id",
            )
        if tenant == "consumers":
            raise ConfigurationError("tenant_id 'consumers' (personal accounts only) is not supported", key="tenant_id")
        object.__setattr__(self, "tenant_id", tenant)
        client_id = self.client_id.strip()
        if not is_guid(client_id):
            # Entra application (client) ids are GUIDs; anything else would never match a token's aud or azp.
            raise ConfigurationError(
                f"client_id must be the application (client) id, a GUID; got {self.client_id!r}", key="client_id"
            )
        object.__setattr__(self, "client_id", client_id)
        instance = self.instance.strip()
        parts = urlsplit(instance)
        if parts.scheme not in ("https", "http") or not parts.hostname or parts.query or parts.fragment:
            raise ConfigurationError(
                f"instance must be an https:// URL, got {without_userinfo(self.instance)!r}", key="instance"
            )
        if not instance.endswith("/"):
            instance += "/"
        object.__setattr__(self, "instance", instance)
        if not isinstance(self.allow_insecure_http, bool):
            raise ConfigurationError("allow_insecure_http must be True or False", key="allow_insecure_http")
        if self.allow_insecure_http and not is_loopback_host(parts.hostname):
            raise ConfigurationError(
                "allow_insecure_http is only for a loopback instance (127.0.0.1, ::1, localhost), "
                f"got {parts.hostname!r}",
                key="allow_insecure_http",
            )
        object.__setattr__(self, "audiences", _str_tuple(self.audiences, "audiences"))
        object.__setattr__(self, "valid_issuers", _str_tuple(self.valid_issuers, "valid_issuers"))
        if self.allowed_tenants is not None:
            allowed = _str_tuple(self.allowed_tenants, "allowed_tenants")
            # Tokens carry the tenant GUID in tid; a domain here would never match and fail closed, silently.
            not_guids = [t for t in allowed if not is_guid(t)]
            if not_guids:
                raise ConfigurationError(
                    f"allowed_tenants must hold tenant ids (GUIDs), got {not_guids}", key="allowed_tenants"
                )
            object.__setattr__(self, "allowed_tenants", tuple(t.lower() for t in allowed))
        object.__setattr__(self, "algorithms", _str_tuple(self.algorithms, "algorithms"))
        bad_alg = [a for a in self.algorithms if a not in SUPPORTED_ALGORITHMS]
        if bad_alg or not self.algorithms:
            raise ConfigurationError(
                f"algorithms must be a non-empty subset of {'/'.join(SUPPORTED_ALGORITHMS)}, got {bad_alg}",
                key="algorithms",
            )
        if not isinstance(self.clock_skew, int | float) or self.clock_skew < 0 or self.clock_skew > 3600:
            raise ConfigurationError("clock_skew must be between 0 and 3600 seconds", key="clock_skew")
        object.__setattr__(
            self, "extra_query_parameters", _frozen_map(self.extra_query_parameters, "extra_query_parameters")
        )
        creds = self.credentials
        if isinstance(creds, CREDENTIAL_TYPES):
            creds = (creds,)
        creds = tuple(creds)
        for cred in creds:
            if not isinstance(cred, CREDENTIAL_TYPES):
                raise ConfigurationError(
                    f"credentials must be credential objects, got {type(cred).__name__}", key="credentials"
                )
        object.__setattr__(self, "credentials", creds)
        apis = _frozen_map(self.downstream_apis, "downstream_apis")
        for name, api in apis.items():
            if not isinstance(api, DownstreamApi):
                raise ConfigurationError(f"downstream_apis[{name!r}] must be a DownstreamApi", key="downstream_apis")
        object.__setattr__(self, "downstream_apis", apis)
        object.__setattr__(self, "sidecar_options", _frozen_map(self.sidecar_options, "sidecar_options"))
        for name in ("max_token_bytes", "validated_token_cache_size", "token_cache_size", "acquisition_workers"):
            if getattr(self, name) <= 0:
                raise ConfigurationError(f"{name} must be positive", key=name)

    # -- derived values --------------------------------------------------------------------------------

    @property
    def is_multi_tenant(self) -> bool:
        """True for ``common`` and ``organizations``: issuers are checked per token's ``tid``."""
        return self.tenant_id in META_TENANTS

    @property
    def authority(self) -> str:
        """``{instance}{tenant_id}``, e.g. ``https://login.microsoftonline.com/contoso.onmicrosoft.com``."""
        return f"{self.instance}{self.tenant_id}"

    def metadata_url(self, version: str = "2.0") -> str:
        """The OpenID configuration address (v2 by default; ``"1.0"`` for the v1 issuer document)."""
        base = f"{self.authority}/v2.0" if version == "2.0" else self.authority
        url = f"{base}/.well-known/openid-configuration"
        if self.extra_query_parameters:
            url += "?" + "&".join(
                f"{quote(str(k), safe='')}={quote(str(v), safe='')}" for k, v in self.extra_query_parameters.items()
            )
        return url

    @property
    def token_exchange_scope(self) -> str:
        return TOKEN_EXCHANGE_AUDIENCE + "/.default"

    # -- named constructors ----------------------------------------------------------------------------

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any]) -> EntraConfig:
        """Build from a dict using the constructor's names (Django's ``ENTRA_MW``, Flask's config).

        Upper-case names are accepted too (``TENANT_ID``). ``downstream_apis`` may map names to dicts;
        ``credentials`` may hold dicts such as ``{"client_secret": "..."}`` or ``{"certificate_path": "..."}``.
        """
        if not isinstance(mapping, Mapping):
            raise ConfigurationError("configuration must be a mapping", key="ENTRA_MW")
        known = {f.name for f in fields(cls)}
        kwargs: dict[str, Any] = {}
        for raw_key, value in mapping.items():
            key = str(raw_key).lower()
            if key not in known:
                raise ConfigurationError(f"unknown configuration key {raw_key!r}", key=str(raw_key))
            kwargs[key] = value
        if "downstream_apis" in kwargs:
            apis: dict[str, DownstreamApi] = {}
            raw_apis = kwargs["downstream_apis"]
            if not isinstance(raw_apis, Mapping):
                raise ConfigurationError("downstream_apis must be a mapping", key="downstream_apis")
            for name, spec in raw_apis.items():
                if isinstance(spec, DownstreamApi):
                    apis[name] = spec
                elif isinstance(spec, Mapping):
                    try:
                        apis[name] = DownstreamApi(**{str(k).lower(): v for k, v in spec.items()})
                    except TypeError as exc:
                        raise ConfigurationError(
                            f"downstream_apis[{name!r}]: {exc}", key=f"downstream_apis.{name}"
                        ) from None
                else:
                    raise ConfigurationError(f"downstream_apis[{name!r}] must be a mapping", key="downstream_apis")
            kwargs["downstream_apis"] = apis
        if "credentials" in kwargs:
            raw_creds = kwargs["credentials"]
            if isinstance(raw_creds, (Mapping, *CREDENTIAL_TYPES)):
                raw_creds = [raw_creds]
            kwargs["credentials"] = tuple(_credential_from_mapping(c, i) for i, c in enumerate(raw_creds))
        for key in ("audiences", "valid_issuers", "allowed_tenants", "algorithms"):
            if key in kwargs and isinstance(kwargs[key], list):
                kwargs[key] = tuple(kwargs[key])
        try:
            return cls(**kwargs)
        except TypeError as exc:
            raise ConfigurationError(str(exc)) from None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> EntraConfig:
        """Read the official sidecar's variables, so a sidecar ConfigMap works unchanged.

        ``AzureAd__Instance``, ``AzureAd__TenantId``, ``AzureAd__ClientId`` (or ``AzureAd__Authority``),
        ``AzureAd__Audience``, ``AzureAd__TokenValidationParameters__ValidAudiences__N``/``ValidIssuers__N``/
        ``ClockSkew``, ``AzureAd__ExtraQueryParameters__{k}``, ``AzureAd__SendX5C``, ``AzureAd__Scopes``,
        ``AzureAd__AllowWebApiToBeAuthorizedByACL``, ``AzureAd__ClientCredentials__N__*``,
        ``DownstreamApis__{name}__*``, ``TokenCache__RedisConnection``, ``Sidecar__*`` and
        ``AZURE_FEDERATED_TOKEN_FILE``. Names are matched case-insensitively and ``:`` works as ``__``, as in
        ASP.NET configuration. ``ENTRA_MW_REDIS_URL`` and ``ENTRA_MW_CACHE_ENCRYPTION_KEY`` set the token cache.
        A key that looks like a misspelt one (``AzureAd__ClientSecrt``) is an error; other keys this library
        does not use are logged. Errors name the variable as it was written.

        ::

            config = EntraConfig.from_env({"AzureAd__TenantId": "contoso.onmicrosoft.com",
                                           "AzureAd__ClientId": "11111111-2222-3333-4444-555555555555"})
        """
        from ._env import config_from_env

        return config_from_env(cls, os.environ if environ is None else environ)


def _credential_from_mapping(value: Any, index: int) -> Credential:
    if isinstance(value, CREDENTIAL_TYPES):
        return value  # type: ignore[no-any-return]
    if not isinstance(value, Mapping):
        raise ConfigurationError(f"credentials[{index}] must be a credential or a mapping", key="credentials")
    spec = {str(k).lower(): v for k, v in value.items()}
    if "client_secret" in spec:
        return ClientSecret(spec["client_secret"])
    if {"certificate_path", "certificate_pem", "certificate_base64"} & spec.keys():
        return CertificateCredential(
            path=spec.get("certificate_path"),
            pem=spec.get("certificate_pem"),
            base64=spec.get("certificate_base64"),
            password=spec.get("certificate_password"),
            send_x5c=bool(spec.get("send_x5c", False)),
        )
    if "signed_assertion_file" in spec:
        return SignedAssertionFile(path=spec["signed_assertion_file"] or None)
    if "managed_identity" in spec:
        mi = spec["managed_identity"]
        return ManagedIdentityAssertion(client_id=mi if isinstance(mi, str) and mi else None)
    if "assertion_callback" in spec:
        return AssertionCallback(spec["assertion_callback"])
    # The sidecar's own names work too: {"SourceType": "ClientSecret", "ClientSecret": "..."}.
    if "sourcetype" in spec:
        from ._env import EnvTree, credential_from_env

        tree = EnvTree({f"x__{k}": str(v) for k, v in value.items()}).section("x")
        cred = credential_from_env(tree, f"credentials[{index}]", {})
        if cred is None:
            raise ConfigurationError(f"credentials[{index}] is skipped", key="credentials")
        return cred
    raise ConfigurationError(f"credentials[{index}]: unknown credential {sorted(spec)}", key="credentials")


def sequence_of(value: Sequence[str] | str | None) -> tuple[str, ...]:
    """Normalise a scope argument: ``None`` → ``()``, a space-separated string → its parts."""
    return _str_tuple(value, "scopes")
