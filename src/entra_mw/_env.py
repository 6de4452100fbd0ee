"""The official sidecar's configuration dialect: ``AzureAd__*``, ``DownstreamApis__*``, ``TokenCache__*`` and
``Sidecar__*`` environment variables (ASP.NET Core configuration: ``__`` or ``:`` separates sections, names are
case-insensitive, ``Name__0``, ``Name__1`` ... are arrays).

:meth:`EntraConfig.from_env` and the sidecar service both read it through :func:`config_from_env`. A key that looks
like a misspelling of one the official sidecar knows (``AzureAd__ClientSecrt``) is refused, naming the key as it was
written and the likely intended one; any other key this library does not use is logged once, so a ConfigMap written
for the official container keeps working.
"""

from __future__ import annotations

import difflib
import logging
import re
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import parse_qsl, quote, urlsplit

from .credentials import (
    TOKEN_EXCHANGE_AUDIENCE,
    CertificateCredential,
    ClientSecret,
    Credential,
    ManagedIdentityAssertion,
    SignedAssertionFile,
)
from .errors import ConfigurationError

if TYPE_CHECKING:
    from ._config import DownstreamApi, EntraConfig

__all__ = ["EnvTree", "config_from_env", "credential_from_env"]

logger = logging.getLogger("entra_mw.config")

_SEPARATOR = re.compile(r"__|:")

# Keys of the official sidecar's `AzureAd` section (Microsoft.Identity.Web's options, also bound onto
# JwtBearerOptions). Those this library reads are handled below; the rest are accepted and logged as unused.
_AZUREAD_READ: Final = frozenset(
    {
        "instance", "tenantid", "clientid", "authority", "audience", "audiences", "tokenvalidationparameters",
        "extraqueryparameters", "sendx5c", "allowwebapitobeauthorizedbyacl", "scopes", "allowedtenants",
        "clientcredentials", "clientsecret",
    }
)  # fmt: skip
_AZUREAD_UNUSED: Final = frozenset(
    {
        "domain", "signupsigninpolicyid", "resetpasswordpolicyid", "editprofilepolicyid", "callbackpath",
        "signedoutcallbackpath", "signedoutredirecturi", "tokendecryptioncredentials", "tokendecryptioncertificates",
        "clientcertificates", "clientcapabilities", "azureregion", "withspaauthcode", "legacycachecompatibilityenabled",
        "resetpasswordpath", "errorpath", "responsetype", "savetokens", "usepkce", "prompt", "includeerrordetails",
        "enablepiilogging", "mapinboundclaims", "requirehttpsmetadata", "metadataaddress", "savesignintoken",
        "refreshonissuerkeynotfound", "backchannel", "backchanneltimeout", "challenge", "claimsissuer",
        "enableaadsigningkeyissuervalidation", "sendclientsecret", "usebrokers", "redirecturi", "apphometenantid",
        "clientcredentialsusingmanagedidentity", "useposttokenendpoint",
    }
)  # fmt: skip
_DOWNSTREAM_KEYS: Final = frozenset(
    {
        "baseurl", "relativepath", "httpmethod", "scopes", "requestapptoken", "acceptheader", "contenttype",
        "protocolscheme", "extraheaderparameters", "extraqueryparameters", "acquiretokenoptions", "serializer",
        "deserializer", "customizehttprequestmessage",
    }
)  # fmt: skip
_CREDENTIAL_KEYS: Final = frozenset(
    {
        "sourcetype", "clientsecret", "certificatediskpath", "certificatepassword", "base64encodedvalue",
        "signedassertionfilediskpath", "signedassertionfilepath", "managedidentityclientid", "tokenexchangeurl",
        "tokenexchangeauthority", "keyvaulturl", "keyvaultcertificatename", "certificatestorepath",
        "certificatethumbprint", "certificatedistinguishedname", "certificatesubjectname", "skip",
        "useboundcredential", "customsignedassertionprovidername",
        "customsignedassertionproviderdata", "decryptkeysauthenticationoptions", "credentialtype", "certificate",
        "cachedvalue", "sourcetypename",
    }
)  # fmt: skip
# EntraConfig / DownstreamApi field names and the variables they come from, so that errors raised while building
# the values name what the user wrote.
_FIELD_VARIABLE: Final = {
    "tenant_id": ("AzureAd", "TenantId"),
    "client_id": ("AzureAd", "ClientId"),
    "instance": ("AzureAd", "Instance"),
    "audiences": ("AzureAd", "Audience"),
    "valid_issuers": ("AzureAd", "TokenValidationParameters", "ValidIssuers"),
    "allowed_tenants": ("AzureAd", "AllowedTenants"),
    "clock_skew": ("AzureAd", "TokenValidationParameters", "ClockSkew"),
    "extra_query_parameters": ("AzureAd", "ExtraQueryParameters"),
}


class EnvTree:
    """A case-insensitive view of ``A__B__C`` (or ``A:B:C``) variables as nested sections, remembering each
    variable's name as written."""

    __slots__ = ("_items", "_prefix")

    def __init__(self, env: Mapping[str, str]) -> None:
        self._prefix: tuple[str, ...] = ()
        self._items: list[tuple[tuple[str, ...], str, str]] = [
            (tuple(_SEPARATOR.split(k)), v, k) for k, v in env.items() if isinstance(k, str) and isinstance(v, str)
        ]

    def section(self, name: str) -> EnvTree:
        child = EnvTree.__new__(EnvTree)
        child._prefix = (*self._prefix, name)
        low = name.lower()
        child._items = [(p[1:], v, k) for p, v, k in self._items if len(p) > 1 and p[0].lower() == low]
        return child

    def _last(self, name: str) -> tuple[str, str] | None:
        low = name.lower()
        found = None
        for path, value, written in self._items:
            if len(path) == 1 and path[0].lower() == low:
                found = (value, written)
        return found

    def get(self, name: str) -> str | None:
        found = self._last(name)
        return found[0].strip() if found is not None else None

    def flag(self, name: str) -> bool | None:
        """``name`` as a boolean (see :func:`parse_bool`), or ``None`` when it is absent or empty."""
        value = self.get(name)
        return parse_bool(value, self.written(name)) if value else None

    def written(self, name: str) -> str:
        """The variable for ``name`` as the user wrote it, or its canonical spelling when it is absent."""
        found = self._last(name)
        if found is not None:
            return found[1]
        for path, _, written in self._items:
            if path and path[0].lower() == name.lower():
                # A section: the written prefix up to and including this name.
                parts = _SEPARATOR.split(written)
                depth = len(parts) - len(path) + 1
                return "__".join(parts[:depth])
        return "__".join((*self._prefix, name))

    def children(self) -> list[str]:
        seen: dict[str, str] = {}
        for path, _, _ in self._items:
            if len(path) > 1:
                seen.setdefault(path[0].lower(), path[0])
        return list(seen.values())

    def names(self) -> Iterator[tuple[str, str]]:
        """Each distinct first-level name (lower-cased) with one variable that spells it, as written."""
        seen: set[str] = set()
        for path, _, written in self._items:
            low = path[0].lower() if path else ""
            if low and low not in seen:
                seen.add(low)
                yield low, written

    def indices(self) -> list[str]:
        return sorted((c for c in self.children() if c.isdigit()), key=int)

    def list(self, name: str) -> list[str]:
        """``Name__0``, ``Name__1`` ... in index order, or a single space-separated ``Name``."""
        single = self.get(name)
        sub = self.section(name)
        values = [(int(p[0]), v) for p, v, _ in sub._items if len(p) == 1 and p[0].isdigit()]
        out = [v.strip() for _, v in sorted(values) if v.strip()]
        if not out and single:
            out = [s for s in single.split() if s]
        return out

    def flat(self, *, deep: bool = False) -> dict[str, str]:
        return {":".join(path): v for path, v, _ in self._items if len(path) == 1 or deep}


def _check_names(section: EnvTree, known: frozenset[str], unused: frozenset[str] = frozenset()) -> None:
    """Refuse likely misspellings of known keys; log keys that are neither read nor known to be unused."""
    vocabulary = sorted(known | unused)
    for low, written in section.names():
        if low in known or low in unused or low.isdigit():
            if low in unused:
                logger.info("configuration key %s is not used by entra_mw; ignored", written)
            continue
        close = difflib.get_close_matches(low, vocabulary, n=1, cutoff=0.8)
        if close:
            raise ConfigurationError(
                f"unknown configuration key {written} (did you mean {_respell(written, close[0])}?)", key=written
            )
        logger.warning("configuration key %s is not known to entra_mw or the sidecar; ignored", written)


def _respell(written: str, intended: str) -> str:
    # Point at the intended key in the user's own prefix: AzureAd__ClientSecrt → AzureAd__ClientSecret.
    prefix = written[: len(written) - len(written.rsplit("__", maxsplit=1)[-1].rsplit(":", maxsplit=1)[-1])]
    canonical = {k.lower(): k for k in _CANONICAL}.get(intended, intended)
    return prefix + canonical


_CANONICAL: Final = (
    "Instance", "TenantId", "ClientId", "Authority", "Audience", "Audiences", "TokenValidationParameters",
    "ExtraQueryParameters", "SendX5C", "AllowWebApiToBeAuthorizedByACL", "Scopes", "AllowedTenants",
    "ClientCredentials", "ClientSecret", "BaseUrl", "RelativePath", "HttpMethod", "RequestAppToken", "AcceptHeader",
    "ContentType", "ProtocolScheme", "ExtraHeaderParameters", "AcquireTokenOptions", "SourceType",
    "CertificateDiskPath", "CertificatePassword", "Base64EncodedValue", "SignedAssertionFileDiskPath",
    "ManagedIdentityClientId", "TokenExchangeUrl", "Skip", "CallbackPath", "Domain",
)  # fmt: skip


def parse_bool(value: str, key: str) -> bool:
    low = value.strip().lower()
    if low in ("true", "1", "yes"):
        return True
    if low in ("false", "0", "no"):
        return False
    raise ConfigurationError(f"{key} must be true or false, got {value!r}", key=key)


def parse_timespan(value: str, key: str) -> int:
    """A .NET TimeSpan (``00:05:00``) or a number of seconds."""
    text = value.strip()
    try:
        if ":" in text:
            parts = [float(p) for p in text.split(":")]
            while len(parts) < 3:
                parts.insert(0, 0.0)
            hours, minutes, seconds = parts[-3:]
            return int(hours * 3600 + minutes * 60 + seconds)
        return int(float(text))
    except ValueError:
        raise ConfigurationError(f"{key} must be a TimeSpan such as 00:05:00, got {value!r}", key=key) from None


def redis_url(conn: str, key: str) -> str:
    """Accept a ``redis://`` URL or a StackExchange.Redis string (``host:6379,password=x,ssl=true``)."""
    text = conn.strip()
    if text.startswith(("redis://", "rediss://", "unix://")):
        return text
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if not parts:
        raise ConfigurationError(f"{key} is empty", key=key)
    host = parts[0]
    opts = {k.lower(): v for k, _, v in (p.partition("=") for p in parts[1:])}
    scheme = "rediss" if opts.get("ssl", "").lower() == "true" else "redis"
    auth = f":{quote(opts['password'], safe='')}@" if opts.get("password") else ""
    if ":" not in host:
        host += ":6379"
    return f"{scheme}://{auth}{host}/0"


_UNSUPPORTED_SOURCES: Final = {
    "keyvault": "certificates from Key Vault are not built in: download the certificate and use SourceType=Path "
    "or Base64Encoded, or pass an AssertionCallback",
    "storewiththumbprint": "Windows certificate stores are not available: use SourceType=Path or Base64Encoded",
    "storewithdistinguishedname": "Windows certificate stores are not available: use SourceType=Path or Base64Encoded",
    "storewithsubjectname": "Windows certificate stores are not available: use SourceType=Path or Base64Encoded",
    "signedassertionfromvault": "vault-signed assertions are not built in: pass an AssertionCallback",
    "customsignedassertion": "custom assertion providers are configured in code: pass an AssertionCallback",
    "managedcertificate": "managed certificates are not available: use SourceType=Path or Base64Encoded",
    "autodecryptkeys": "AutoDecryptKeys is a token-decryption credential; encrypted tokens are not supported",
}
_SOURCE_NUMBERS: Final = {
    "0": "certificate",
    "1": "keyvault",
    "2": "base64encoded",
    "3": "path",
    "4": "storewiththumbprint",
    "5": "storewithdistinguishedname",
    "6": "clientsecret",
    "7": "signedassertionfrommanagedidentity",
    "8": "signedassertionfilepath",
    "9": "signedassertionfromvault",
    "10": "autodecryptkeys",
    "11": "customsignedassertion",
    "12": "managedcertificate",
    "13": "storewithsubjectname",
}


def _needed(section: EnvTree, key: str, name: str, source: str) -> str:
    value = section.get(name)
    if not value:
        raise ConfigurationError(f"{key}__{name} is required for SourceType={source}", key=f"{key}__{name}")
    return value


def credential_from_env(section: EnvTree, key: str, env: Mapping[str, str]) -> Credential | None:
    """One ``ClientCredentials__N`` entry, or ``None`` when it says ``Skip``."""
    _check_names(section, _CREDENTIAL_KEYS)
    if section.flag("Skip"):
        return None
    source_raw = section.get("SourceType")
    if not source_raw:
        raise ConfigurationError(f"{key}__SourceType is required", key=f"{key}__SourceType")
    source_key = section.written("SourceType")
    source = _SOURCE_NUMBERS.get(source_raw, source_raw.lower())
    if source in _UNSUPPORTED_SOURCES:
        raise ConfigurationError(f"{source_key}={source_raw}: {_UNSUPPORTED_SOURCES[source]}", key=source_key)
    if source == "clientsecret":
        return ClientSecret(_needed(section, key, "ClientSecret", "ClientSecret"))
    if source in ("path", "certificate"):
        return CertificateCredential(
            path=_needed(section, key, "CertificateDiskPath", "Path"),
            password=section.get("CertificatePassword") or None,
        )
    if source == "base64encoded":
        return CertificateCredential(
            base64=_needed(section, key, "Base64EncodedValue", "Base64Encoded"),
            password=section.get("CertificatePassword") or None,
        )
    if source == "signedassertionfilepath":
        path = section.get("SignedAssertionFileDiskPath") or section.get("SignedAssertionFilePath")
        return SignedAssertionFile(path=path or None)
    if source == "signedassertionfrommanagedidentity":
        audience = section.get("TokenExchangeUrl") or TOKEN_EXCHANGE_AUDIENCE
        return ManagedIdentityAssertion(client_id=section.get("ManagedIdentityClientId") or None, audience=audience)
    raise ConfigurationError(f"{source_key}={source_raw!r} is not a known credential source", key=source_key)


def _downstream_from_env(section: EnvTree, key: str) -> DownstreamApi:
    from ._config import DownstreamApi

    _check_names(section, _DOWNSTREAM_KEYS)
    # BaseUrl is optional, as in the official sidecar (spec §2.3: default null): an API configured only for
    # /AuthorizationHeader* has none, and calling it is refused.
    base_url = section.get("BaseUrl") or ""
    kwargs: dict[str, Any] = {"base_url": base_url, "scopes": tuple(section.list("Scopes"))}
    request_app_token = section.flag("RequestAppToken")
    if request_app_token is not None:
        kwargs["request_app_token"] = request_app_token
    if section.get("RelativePath") is not None:
        kwargs["relative_path"] = section.get("RelativePath") or ""
    if section.get("HttpMethod"):
        kwargs["http_method"] = section.get("HttpMethod")
    if section.get("AcceptHeader"):
        kwargs["accept_header"] = section.get("AcceptHeader")
    if section.get("ContentType"):
        kwargs["content_type"] = section.get("ContentType")
    headers = section.section("ExtraHeaderParameters").flat()
    if headers:
        kwargs["extra_headers"] = headers
    query = section.section("ExtraQueryParameters").flat()
    if query:
        kwargs["extra_query"] = query
    ato = section.section("AcquireTokenOptions")
    if ato.get("Tenant"):
        kwargs["tenant"] = ato.get("Tenant")
    try:
        return DownstreamApi(**kwargs)
    except ConfigurationError as exc:
        # DownstreamApi names its own fields (BaseUrl, HttpMethod ...): say which variable that was.
        written = section.written(exc.key) if exc.key else key
        raise ConfigurationError(f"{written}: {exc}", key=written) from None


def _authority(authority: str, key: str) -> tuple[str, str, dict[str, str]]:
    """``instance``, ``tenant`` and the extra query parameters of an ``Authority`` value. A query string moves
    into the extra query parameters, decoded once (they are encoded again when the metadata address is built)."""
    parts = urlsplit(authority)
    segments = [s for s in parts.path.split("/") if s]
    if parts.scheme != "https" or not parts.hostname or not segments or parts.username or parts.password:
        raise ConfigurationError(f"{key} is not a valid authority: {authority!r}", key=key)
    extra = dict(parse_qsl(parts.query, keep_blank_values=True)) if parts.query else {}
    return f"{parts.scheme}://{parts.netloc}/", segments[0], extra


def config_from_env(cls: type[EntraConfig], environ: Mapping[str, str]) -> EntraConfig:
    """Build ``cls`` (an :class:`EntraConfig`) from the sidecar's variables in ``environ``."""
    env = dict(environ)
    tree = EnvTree(env)
    ad = tree.section("AzureAd")
    _check_names(ad, _AZUREAD_READ, _AZUREAD_UNUSED)
    kwargs: dict[str, Any] = {}
    authority = ad.get("Authority")
    instance = ad.get("Instance")
    tenant = ad.get("TenantId")
    if authority:
        if instance or tenant:
            raise ConfigurationError(
                f"set either {ad.written('Authority')} or {ad.written('Instance')} + {ad.written('TenantId')}, "
                "not both",
                key=ad.written("Authority"),
            )
        instance, tenant, extra = _authority(authority, ad.written("Authority"))
        if extra:
            kwargs["extra_query_parameters"] = extra
    if not tenant and not ad.get("ClientId") and not instance:
        # Nothing at all: most often the settings were never loaded into this process's environment.
        raise ConfigurationError(
            "no AzureAd__* variables are set: set AzureAd__TenantId and AzureAd__ClientId in the environment "
            "(for `entra-mw emulator`, load the settings file it prints: set -a; . FILE; set +a)",
            key=ad.written("TenantId"),
        )
    if not tenant:
        raise ConfigurationError(f"{ad.written('TenantId')} is required", key=ad.written("TenantId"))
    client_id = ad.get("ClientId")
    if not client_id:
        raise ConfigurationError(f"{ad.written('ClientId')} is required", key=ad.written("ClientId"))
    kwargs["tenant_id"] = tenant
    kwargs["client_id"] = client_id
    if instance:
        kwargs["instance"] = instance
    audiences: list[str] = []
    if ad.get("Audience"):
        audiences.append(ad.get("Audience") or "")
    tvp = ad.section("TokenValidationParameters")
    audiences.extend(tvp.list("ValidAudiences"))
    audiences.extend(ad.list("Audiences"))
    if audiences:
        kwargs["audiences"] = tuple(dict.fromkeys(audiences))
    issuers = tvp.list("ValidIssuers")
    if tvp.get("ValidIssuer"):
        issuers.insert(0, tvp.get("ValidIssuer") or "")
    if issuers:
        kwargs["valid_issuers"] = tuple(issuers)
    if tvp.get("ClockSkew"):
        kwargs["clock_skew"] = parse_timespan(tvp.get("ClockSkew") or "", tvp.written("ClockSkew"))
    extra_q = ad.section("ExtraQueryParameters").flat()
    if extra_q:
        kwargs["extra_query_parameters"] = {**kwargs.get("extra_query_parameters", {}), **extra_q}
    for variable, name in (("SendX5C", "send_x5c"), ("AllowWebApiToBeAuthorizedByACL", "allow_acl_authorization")):
        flag = ad.flag(variable)
        if flag is not None:
            kwargs[name] = flag
    if ad.get("Scopes"):
        kwargs["validate_scopes"] = ad.get("Scopes")
    allowed = ad.list("AllowedTenants")
    if allowed:
        kwargs["allowed_tenants"] = tuple(allowed)
    creds: list[Credential] = []
    cred_section = ad.section("ClientCredentials")
    for index in cred_section.indices():
        cred = credential_from_env(cred_section.section(index), f"AzureAd__ClientCredentials__{index}", env)
        if cred is not None:
            creds.append(cred)
    if ad.get("ClientSecret") and not creds:
        creds.append(ClientSecret(ad.get("ClientSecret") or ""))
    kwargs["credentials"] = tuple(creds)
    apis: dict[str, DownstreamApi] = {}
    apis_section = tree.section("DownstreamApis")
    for name in apis_section.children():
        apis[name] = _downstream_from_env(apis_section.section(name), f"DownstreamApis__{name}")
    kwargs["downstream_apis"] = apis
    cache = tree.section("TokenCache")
    redis_conn = env.get("ENTRA_MW_REDIS_URL") or cache.get("RedisConnection")
    if redis_conn:
        source = "ENTRA_MW_REDIS_URL" if env.get("ENTRA_MW_REDIS_URL") else cache.written("RedisConnection")
        kwargs["redis_url"] = redis_url(redis_conn, source)
    if env.get("ENTRA_MW_CACHE_ENCRYPTION_KEY"):
        kwargs["cache_encryption_key"] = env["ENTRA_MW_CACHE_ENCRYPTION_KEY"]
    kwargs["sidecar_options"] = tree.section("Sidecar").flat(deep=True)
    try:
        return cls(**kwargs)
    except ConfigurationError as exc:
        path = _FIELD_VARIABLE.get(exc.key or "")
        if path is None:
            raise
        section = tree
        for part in path[:-1]:
            section = section.section(part)
        written = section.written(path[-1])
        message = str(exc).replace(exc.key or "", written, 1) if exc.key else str(exc)
        raise ConfigurationError(message, key=written) from None
