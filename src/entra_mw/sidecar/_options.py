"""The sidecar's settings (the ``Sidecar`` section and ``ASPNETCORE_ENVIRONMENT``) and the per-request parameters:
the agent parameters (spec §1.3.1, with the 400s of DESIGN §3) and ``optionsOverride.*`` (spec §1.3.2), parsed,
gated and merged into what one request asks for.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final

from .._config import DownstreamApi, EntraConfig
from .._downstream import is_reserved_header
from ..errors import ConfigurationError, DownstreamRequestError

__all__ = ["AgentParams", "Effective", "Overrides", "SidecarOptions", "effective_options"]

logger = logging.getLogger("entra_mw.sidecar")

_PREFIX: Final = "optionsoverride."

#: The four ``Sidecar:AllowOverrides:*`` flags and their defaults (spec §2.4).
_GATES: Final = {
    "getauthorizationheader": ("get_authorization_header", True),
    "getauthorizationheaderunauthenticated": ("get_authorization_header_unauthenticated", False),
    "calldownstreamapi": ("call_downstream_api", True),
    "calldownstreamapiunauthenticated": ("call_downstream_api_unauthenticated", False),
}


def _config_bool(value: str, key: str) -> bool:
    # .NET's configuration binder: bool.Parse, case-insensitive, surrounding blanks allowed.
    low = value.strip().lower()
    if low == "true":
        return True
    if low == "false":
        return False
    raise ConfigurationError(f"{key} must be true or false, got {value!r}", key=key)


def _try_bool(value: str) -> bool | None:
    low = value.strip().lower()
    return True if low == "true" else False if low == "false" else None


def _is_guid(value: str) -> bool:
    try:
        uuid.UUID(value.strip())
    except ValueError:
        return False
    return True


@dataclass(frozen=True, slots=True, kw_only=True)
class SidecarOptions:
    """What the ``Sidecar`` section and ``ASPNETCORE_ENVIRONMENT`` say (spec §2.4, §2.5).

    ::

        SidecarOptions.from_config(EntraConfig.from_env())   # Sidecar__* and ASPNETCORE_ENVIRONMENT
        SidecarOptions(get_authorization_header_unauthenticated=True, development=True)

    ``get_authorization_header`` … ``call_downstream_api_unauthenticated``: whether each route applies agent
    parameters and ``optionsOverride.*`` (``Sidecar__AllowOverrides__*``). ``allow_outbound_redirects``: follow a
    downstream API's 3xx (``Sidecar__AllowOutboundRedirects``). ``development``: ``ASPNETCORE_ENVIRONMENT`` is
    ``Development`` — any caller address is accepted and ``/openapi/v1.json`` is served.

    ``compatibility`` ``"1.0"`` (``ENTRA_MW_SIDECAR_COMPAT=1.0``) behaves as the official 1.0.x releases, for
    deployments written against them: the four override flags default to ``true`` (agent parameters are applied
    on the ``*Unauthenticated`` routes too), and instead of the loopback-only caller check the ``Host`` header must
    name one of ``allowed_hosts`` (``AllowedHosts``, ``;``-separated, ``*`` for any; default ``localhost``).
    """

    get_authorization_header: bool = True
    get_authorization_header_unauthenticated: bool = False
    call_downstream_api: bool = True
    call_downstream_api_unauthenticated: bool = False
    allow_outbound_redirects: bool = False
    development: bool = False
    compatibility: str = "1.1"
    allowed_hosts: tuple[str, ...] = ("localhost",)

    @classmethod
    def from_config(cls, config: EntraConfig, environ: Mapping[str, str] | None = None) -> SidecarOptions:
        """From ``config.sidecar_options`` (the ``Sidecar__*`` variables ``EntraConfig.from_env`` kept),
        ``ASPNETCORE_ENVIRONMENT``, ``ENTRA_MW_SIDECAR_COMPAT`` and ``AllowedHosts`` in ``environ`` (default: the
        process environment)."""
        env = os.environ if environ is None else environ

        def read(name: str) -> str:
            return (next((v for k, v in env.items() if k.upper() == name.upper()), "") or "").strip()

        compatibility = read("ENTRA_MW_SIDECAR_COMPAT") or "1.1"
        if compatibility not in ("1.0", "1.1"):
            raise ConfigurationError(
                f"ENTRA_MW_SIDECAR_COMPAT must be 1.0 or 1.1, got {compatibility!r}", key="ENTRA_MW_SIDECAR_COMPAT"
            )
        kwargs: dict[str, Any] = {"compatibility": compatibility}
        if compatibility == "1.0":
            # 1.0.x had no Sidecar:AllowOverrides: every route applied overrides and agent parameters.
            kwargs.update({attr: True for attr, _ in _GATES.values()})
            hosts = tuple(h.strip().lower() for h in read("AllowedHosts").split(";") if h.strip())
            kwargs["allowed_hosts"] = hosts or ("localhost",)
        for raw_key, value in config.sidecar_options.items():
            parts = [p.lower() for p in raw_key.split(":")]
            name = "Sidecar__" + raw_key.replace(":", "__")
            if parts == ["allowoutboundredirects"]:
                kwargs["allow_outbound_redirects"] = _config_bool(value, name)
            elif len(parts) == 2 and parts[0] == "allowoverrides" and parts[1] in _GATES:
                kwargs[_GATES[parts[1]][0]] = _config_bool(value, name)
            else:
                # ASP.NET ignores keys nothing binds; say so, since a typo silently keeps a default.
                logger.warning("unknown sidecar setting ignored key=%s", name)
        kwargs["development"] = read("ASPNETCORE_ENVIRONMENT").lower() == "development"
        return cls(**kwargs)


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentParams:
    """``AgentIdentity``, ``AgentUsername``, ``AgentUserId`` of one request (names case-insensitive)."""

    identity: str | None = None
    username: str | None = None
    user_id: str | None = None

    @property
    def present(self) -> bool:
        return bool(self.identity or self.username or self.user_id)

    @classmethod
    def from_query(cls, query: Sequence[tuple[str, str]]) -> AgentParams:
        found: dict[str, str] = {}
        for key, value in query:
            low = key.lower()
            # [FromQuery] string binding takes the first value of a repeated key.
            if low in ("agentidentity", "agentusername", "agentuserid") and low not in found:
                found[low] = value.strip()
        return cls(
            identity=found.get("agentidentity") or None,
            username=found.get("agentusername") or None,
            user_id=found.get("agentuserid") or None,
        )

    def check(self) -> None:
        """The documented 400s (DESIGN §3): a user without an agent, both user forms, a non-GUID object id."""
        if (self.username or self.user_id) and not self.identity:
            which = "AgentUsername" if self.username else "AgentUserId"
            raise DownstreamRequestError(f"{which} requires AgentIdentity to be specified", reason="bad_agent")
        if self.username and self.user_id:
            raise DownstreamRequestError("AgentUsername and AgentUserId are mutually exclusive", reason="bad_agent")
        if self.user_id and not _is_guid(self.user_id):
            raise DownstreamRequestError("AgentUserId must be a valid GUID", reason="bad_agent")


_STRING_KEYS: Final = {
    "relativepath": "relative_path",
    "httpmethod": "http_method",
    "acceptheader": "accept_header",
    "contenttype": "content_type",
    "acquiretokenoptions.tenant": "tenant",
    "acquiretokenoptions.claims": "claims",
    "acquiretokenoptions.correlationid": "correlation_id",
    "acquiretokenoptions.fmipath": "fmi_path",
    "acquiretokenoptions.longrunningwebapisessionkey": "long_running_session_key",
    "acquiretokenoptions.poppublickey": "pop_public_key",
    "acquiretokenoptions.managedidentity.userassignedclientid": "managed_identity_client_id",
}

#: Overrides the engine has no counterpart for; refused with a 400 rather than silently giving another token.
_UNSUPPORTED: Final = {
    "fmi_path": "optionsOverride.AcquireTokenOptions.FmiPath is not supported: use AgentIdentity for agent tokens",
    "long_running_session_key": "optionsOverride.AcquireTokenOptions.LongRunningWebApiSessionKey is not supported",
    "pop_public_key": "optionsOverride.AcquireTokenOptions.PopPublicKey is not supported: proof-of-possession "
    "(SHR) tokens are not issued by entra-mw; only Bearer tokens are",
    "managed_identity_client_id": "optionsOverride.AcquireTokenOptions.ManagedIdentity.UserAssignedClientId is not "
    "supported: configure a SignedAssertionFromManagedIdentity credential instead",
}


@dataclass(frozen=True, slots=True, kw_only=True)
class Overrides:
    """The ``optionsOverride.*`` parameters of one request, parsed as the official binder does (spec §1.3.2):
    unknown keys ignored, the last value of a non-list key wins, blank values skipped."""

    scopes: tuple[str, ...] = ()
    request_app_token: bool | None = None
    base_url: bool = False
    relative_path: str | None = None
    http_method: str | None = None
    accept_header: str | None = None
    content_type: str | None = None
    tenant: str | None = None
    force_refresh: bool | None = None
    claims: str | None = None
    correlation_id: str | None = None
    fmi_path: str | None = None
    long_running_session_key: str | None = None
    pop_public_key: str | None = None
    managed_identity_client_id: str | None = None
    extra_headers: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    extra_query: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    @classmethod
    def from_query(cls, query: Sequence[tuple[str, str]]) -> Overrides:
        scopes: list[str] = []
        values: dict[str, str | bool | None] = {}
        headers: dict[str, str] = {}
        params: dict[str, str] = {}
        base_url = False
        for key, value in query:
            if not key.lower().startswith(_PREFIX):
                continue
            name = key[len(_PREFIX) :]
            low = name.lower()
            if low == "scopes":
                if value.strip():
                    scopes.append(value.strip())
            elif low == "requestapptoken":
                values["request_app_token"] = _try_bool(value)
            elif low == "acquiretokenoptions.forcerefresh":
                if value.strip():
                    values["force_refresh"] = _try_bool(value)
            elif low == "baseurl":
                base_url = True
            elif low in _STRING_KEYS:
                if value.strip():
                    values[_STRING_KEYS[low]] = value.strip()
            elif low.startswith("extraheaderparameters.") and len(name) > len("extraheaderparameters.") and value:
                headers[name[len("extraheaderparameters.") :]] = value
            elif low.startswith("extraqueryparameters.") and len(name) > len("extraqueryparameters.") and value:
                params[name[len("extraqueryparameters.") :]] = value
        correlation = values.get("correlation_id")
        if isinstance(correlation, str) and not _is_guid(correlation):
            values.pop("correlation_id")  # accepted only when it is a GUID
        return cls(
            scopes=tuple(scopes),
            base_url=base_url,
            extra_headers=MappingProxyType(headers),
            extra_query=MappingProxyType(params),
            **values,  # type: ignore[arg-type]
        )

    @property
    def has_any(self) -> bool:
        """Whether anything but ``BaseUrl`` was given (``HasAny`` ignores a BaseUrl-only override)."""
        return bool(
            self.scopes
            or self.request_app_token is not None
            or self.force_refresh is not None
            or self.extra_headers
            or self.extra_query
            or any(getattr(self, name) is not None for name in _STRING_KEYS.values())
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Effective:
    """What one request asks for once the overrides are merged into the configured API (spec §1.3.2)."""

    api_name: str
    api: DownstreamApi | None
    scopes: tuple[str, ...] | None  # ``None``: the API's own scopes, unchanged (the engine's memoised hit path)
    request_app_token: bool
    tenant: str | None = None
    force_refresh: bool = False
    claims: str | None = None
    relative_path: str | None = None
    http_method: str | None = None
    accept_header: str | None = None
    extra_headers: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    extra_query: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    overridden: bool = False

    @property
    def configured_scopes(self) -> tuple[str, ...]:
        if self.scopes is not None:
            return self.scopes
        return tuple(self.api.scopes) if self.api is not None else ()


def find_api(config: EntraConfig, name: str) -> DownstreamApi | None:
    api = config.downstream_apis.get(name)
    if api is None:
        low = name.lower()
        api = next((v for k, v in config.downstream_apis.items() if k.lower() == low), None)
    return api


def effective_options(
    config: EntraConfig, api_name: str, overrides: Overrides, *, allowed: bool, route: str
) -> Effective:
    """Merge ``overrides`` into the API's configuration when the route allows them; log what is dropped."""
    api = find_api(config, api_name)
    configured_app = api is not None and api.request_app_token
    if overrides.base_url:
        # 1.1.0+: BaseUrl is never overridable (EventId 4, BaseUrlOverrideIgnored).
        logger.warning("optionsOverride.BaseUrl ignored route=%s api=%s", route, api_name)
    if not overrides.has_any:
        return Effective(api_name=api_name, api=api, scopes=None, request_app_token=configured_app)
    if not allowed:
        # EventId 3, OverridesIgnored: the whole override object is discarded.
        logger.warning("optionsOverride ignored: Sidecar__AllowOverrides disables it route=%s api=%s", route, api_name)
        return Effective(api_name=api_name, api=api, scopes=None, request_app_token=configured_app)
    for name, message in _UNSUPPORTED.items():
        if getattr(overrides, name) is not None:
            raise DownstreamRequestError(message, reason="unsupported_override")
    if overrides.correlation_id is not None:
        logger.info("sidecar request correlation_id=%s route=%s api=%s", overrides.correlation_id, route, api_name)
    headers: dict[str, str] = {}
    for header, value in overrides.extra_headers.items():
        if is_reserved_header(header):
            # Reserved names never reach the downstream request (spec §1.6); the official sidecar drops them.
            logger.warning("reserved header in optionsOverride.ExtraHeaderParameters dropped header=%s", header)
            continue
        headers[header] = value
    return Effective(
        api_name=api_name,
        api=api,
        scopes=overrides.scopes or None,
        # Merged only when true: an override cannot switch off a configured RequestAppToken.
        request_app_token=configured_app or overrides.request_app_token is True,
        tenant=overrides.tenant,
        # Always copied whenever any override is present.
        force_refresh=overrides.force_refresh is True,
        claims=overrides.claims,
        relative_path=overrides.relative_path,
        http_method=overrides.http_method,
        accept_header=overrides.accept_header,
        extra_headers=MappingProxyType(headers),
        extra_query=overrides.extra_query,
        overridden=True,
    )
