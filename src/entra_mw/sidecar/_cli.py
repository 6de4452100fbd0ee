"""``entra-mw sidecar``: the sidecar API under uvicorn, configured by the official container's variables."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Mapping
from typing import Any, TextIO
from urllib.parse import urlsplit

__all__ = ["ENVIRONMENT_HELP", "add_sidecar_parser", "listen_address", "run_sidecar"]

DEFAULT_PORT = 5000

ENVIRONMENT_HELP = """\
environment (the official sidecar's variables; ':' works as '__', names are case-insensitive):
  AzureAd__Instance                 login host, e.g. https://login.microsoftonline.com/
  AzureAd__TenantId                 tenant GUID or domain (common/organizations for multi-tenant)
  AzureAd__ClientId                 this app: the agent blueprint (audience of /Validate, client of every grant)
  AzureAd__Authority                instead of Instance + TenantId
  AzureAd__Audience                 an extra accepted audience
  AzureAd__TokenValidationParameters__ValidAudiences__N, __ValidIssuers__N, __ValidIssuer, __ClockSkew
  AzureAd__AllowedTenants__N        multi-tenant allow-list (tenant GUIDs)
  AzureAd__ExtraQueryParameters__K  added to the metadata address (e.g. appid)
  AzureAd__SendX5C                  send the certificate chain in client assertions
  AzureAd__Scopes                   the one scope /Validate requires
  AzureAd__ClientSecret             a client secret (when no ClientCredentials are given)
  AzureAd__ClientCredentials__N__SourceType   tried in order of N:
      ClientSecret                       __ClientSecret
      Path                               __CertificateDiskPath, __CertificatePassword (PEM or PFX)
      Base64Encoded                      __Base64EncodedValue, __CertificatePassword
      SignedAssertionFilePath            __SignedAssertionFileDiskPath (or __SignedAssertionFilePath);
                                         default AZURE_FEDERATED_TOKEN_FILE, then AZURE_ACCESS_TOKEN_FILE
      SignedAssertionFromManagedIdentity __ManagedIdentityClientId, __TokenExchangeUrl
                                         (IDENTITY_ENDPOINT + IDENTITY_HEADER, or IMDS)
  AzureAd__ClientCredentials__N__Skip          skip this credential
  DownstreamApis__NAME__BaseUrl                the API's base URL (none: authorization headers only)
  DownstreamApis__NAME__Scopes__N              scopes (or one space-separated DownstreamApis__NAME__Scopes)
  DownstreamApis__NAME__RequestAppToken        true: app tokens (client credentials / autonomous agent)
  DownstreamApis__NAME__RelativePath, __HttpMethod, __AcceptHeader, __ContentType
  DownstreamApis__NAME__ExtraHeaderParameters__K, __ExtraQueryParameters__K, __AcquireTokenOptions__Tenant
  Sidecar__AllowOverrides__GetAuthorizationHeader                 default true
  Sidecar__AllowOverrides__GetAuthorizationHeaderUnauthenticated  default false
  Sidecar__AllowOverrides__CallDownstreamApi                      default true
  Sidecar__AllowOverrides__CallDownstreamApiUnauthenticated       default false
  Sidecar__AllowOutboundRedirects   follow a downstream API's redirects (default false)
  ASPNETCORE_ENVIRONMENT            Development: any caller address, /openapi/v1.json served
  ENTRA_MW_SIDECAR_COMPAT           1.0: behave as the official 1.0.x (overrides and agent parameters on every
                                    route; Host-header filtering by AllowedHosts instead of loopback-only callers)
  AllowedHosts                      with ENTRA_MW_SIDECAR_COMPAT=1.0: accepted Host names (';'-separated, * any)
  ASPNETCORE_URLS, ASPNETCORE_HTTP_PORTS   where to listen when --host/--port are not given
                                    (http://+:5000 listens on every interface)
  TokenCache__RedisConnection       Redis shared by replicas (host:6379,password=...,ssl=true or redis://...)
  ENTRA_MW_REDIS_URL, ENTRA_MW_CACHE_ENCRYPTION_KEY   the same, and the key that encrypts cached tokens
  SSL_CERT_FILE                     a CA bundle to trust as well (a local FakeEntra, a corporate CA)
  Logging__LogLevel__Default        Debug, Information (default), Warning, Error: the service's log lines on stderr
  ENTRA_MW_AUTH_FACTORY             dotted path of a callable taking the EntraConfig, returning an EntraAuth

example (against `entra-mw emulator`, as its agent blueprint):
  set -a; . ~/.cache/entra-mw/emulator.env; set +a
  export AzureAd__ClientId=$ENTRA_EMULATOR_BLUEPRINT_ID
  export AzureAd__ClientCredentials__0__ClientSecret=$ENTRA_EMULATOR_BLUEPRINT_SECRET
  entra-mw sidecar                  # http://127.0.0.1:5000
  curl -H "Authorization: Bearer $(entra-mw token --user alice --api $ENTRA_EMULATOR_BLUEPRINT_ID \\
       --scope access_agent)" http://127.0.0.1:5000/Validate
"""


def add_sidecar_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``sidecar`` on the ``entra-mw`` command's subparsers."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "sidecar",
        help="serve the official sidecar's HTTP API (/Validate, /AuthorizationHeader/{api}, ...) on loopback",
        description="The Microsoft Entra SDK for Agent ID (auth sidecar) HTTP API on entra-mw's engine, "
        "configured exactly as the official container is.",
        epilog=ENVIRONMENT_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--host", default=None, help="address to listen on (default 127.0.0.1: loopback only)")
    parser.add_argument("--port", type=int, default=None, help=f"port to listen on (default {DEFAULT_PORT})")
    parser.set_defaults(func=run_sidecar)
    return parser


def listen_address(host: str | None, port: int | None, environ: Mapping[str, str]) -> tuple[str, int]:
    """``--host``/``--port`` first, then ``ASPNETCORE_URLS`` (first http URL), then ``ASPNETCORE_HTTP_PORTS``,
    then ``127.0.0.1:5000``. Raises ``ValueError`` naming the setting at fault."""
    env_host, env_port = "127.0.0.1", DEFAULT_PORT
    urls = (environ.get("ASPNETCORE_URLS") or "").strip()
    ports = (environ.get("ASPNETCORE_HTTP_PORTS") or "").strip()
    if urls:
        first = urls.split(";")[0].strip()
        if first.lower().startswith("https://"):
            raise ValueError("ASPNETCORE_URLS: https is not served; terminate TLS in front or use an http:// URL")
        # urlsplit does not accept '+' or '*' as a host; swap them for a placeholder first.
        wildcard = "://+" in first or "://*" in first
        parts = urlsplit(first.replace("://+", "://wildcard").replace("://*", "://wildcard"))
        if parts.scheme != "http":
            raise ValueError(f"ASPNETCORE_URLS must hold http:// URLs, got {first!r}")
        try:
            env_port = parts.port or 80
        except ValueError:
            raise ValueError(f"ASPNETCORE_URLS has an invalid port: {first!r}") from None
        name = parts.hostname or ""
        env_host = "0.0.0.0" if wildcard else "127.0.0.1" if name == "localhost" else name  # noqa: S104
    elif ports:
        first = ports.split(";")[0].split(",")[0].strip()
        if not first.isdigit():
            raise ValueError(f"ASPNETCORE_HTTP_PORTS must be a port number, got {ports!r}")
        env_port = int(first)
    chosen_port = port if port is not None else env_port
    if not 0 <= chosen_port <= 65535:
        raise ValueError(f"--port must be between 0 and 65535, got {chosen_port}")
    return (host or env_host), chosen_port


_LEVELS = {
    "trace": logging.DEBUG,
    "debug": logging.DEBUG,
    "information": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
    "none": logging.CRITICAL + 10,
}


def _log_to_stderr(environ: Mapping[str, str]) -> None:
    """The service's own log lines (never a token or secret) on stderr, at ``Logging__LogLevel__Default``
    (ASP.NET's names: Debug, Information, Warning ...; default Information)."""
    wanted = next((v for k, v in environ.items() if k.replace(":", "__").lower() == "logging__loglevel__default"), "")
    logger = logging.getLogger("entra_mw")
    logger.setLevel(_LEVELS.get(wanted.strip().lower(), logging.INFO))
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logger.addHandler(handler)


def run_sidecar(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    """Serve until interrupted; configuration errors are one line on ``err`` and exit code 2."""
    try:
        import uvicorn

        from ._factory import create_app, trust_context
    except ImportError as exc:
        err.write(f"entra-mw sidecar: needs the sidecar extra (pip install 'entra-mw[sidecar]'): {exc.name}\n")
        return 2
    from .._config import EntraConfig
    from .._engine import EntraAuth
    from .._settings import load_factory
    from ..errors import ConfigurationError

    env = os.environ
    try:
        host, port = listen_address(args.host, args.port, env)
        config = EntraConfig.from_env(env)
        factory = load_factory(env.get("ENTRA_MW_AUTH_FACTORY"))
        if factory is None:
            app = create_app(config, environ=env)
        else:
            from dataclasses import replace

            auth = factory(replace(config, allow_acl_authorization=True))
            if not isinstance(auth, EntraAuth):
                raise ConfigurationError(
                    "ENTRA_MW_AUTH_FACTORY did not return an EntraAuth", key="ENTRA_MW_AUTH_FACTORY"
                )
            app = create_app(auth=auth, environ=env)
        trust_context(env)  # fail now, not on the first request, when SSL_CERT_FILE is unreadable
    except (ConfigurationError, ValueError) as exc:
        err.write(f"entra-mw sidecar: {exc}\n")
        return 2
    _log_to_stderr(env)
    mode = "Development" if app.state.sidecar_options.development else "Production"
    shown = f"[{host}]" if ":" in host else host
    out.write(f"entra-mw sidecar: listening on http://{shown}:{port} ({mode}; tenant {config.tenant_id})\n")
    out.flush()
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host=host,
            port=port,
            log_level="warning",
            access_log=False,  # request lines carry agent ids and override values
            proxy_headers=False,  # the caller's socket address decides the loopback check, never a header
            server_header=False,
            lifespan="on",
        )
    )
    server.run()
    return 0
