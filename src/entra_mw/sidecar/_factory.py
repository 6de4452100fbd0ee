"""``create_app``: the sidecar ASGI app on one engine, and the outbound TLS trust."""

from __future__ import annotations

import contextlib
import os
import ssl
from collections.abc import AsyncIterator, Mapping
from dataclasses import replace

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import Route

from .._config import EntraConfig
from .._engine import EntraAuth
from ..errors import ConfigurationError
from ._app import HostFiltering, LoopbackOnly, SidecarRoutes
from ._options import SidecarOptions

__all__ = ["create_app", "trust_context"]

_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


def trust_context(environ: Mapping[str, str] | None = None) -> ssl.SSLContext:
    """The TLS trust for outbound calls: the system's CAs, plus the bundle named by ``SSL_CERT_FILE`` when set
    (how a local FakeEntra, or a corporate CA, is trusted)."""
    env = os.environ if environ is None else environ
    context = ssl.create_default_context()
    cafile = env.get("SSL_CERT_FILE")
    if cafile:
        try:
            context.load_verify_locations(cafile=cafile)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigurationError(
                f"SSL_CERT_FILE={cafile!r} is not a readable PEM CA bundle ({type(exc).__name__})", key="SSL_CERT_FILE"
            ) from None
    return context


def create_app(
    config: EntraConfig | None = None,
    *,
    auth: EntraAuth | None = None,
    options: SidecarOptions | None = None,
    environ: Mapping[str, str] | None = None,
) -> Starlette:
    """The sidecar as an ASGI app.

    ``config`` defaults to ``EntraConfig.from_env(environ)``; as in the official sidecar, tokens with neither
    ``scp`` nor ``roles`` are accepted (``AllowWebApiToBeAuthorizedByACL`` is forced on). ``auth`` injects a
    ready engine instead (its configuration is used as is; the app does not close it). ``options`` defaults to
    the ``Sidecar__*`` settings of the config and ``ASPNETCORE_ENVIRONMENT``. ``environ`` (default
    ``os.environ``) is where ``SSL_CERT_FILE`` and ``ASPNETCORE_ENVIRONMENT`` are read.

    ::

        app = create_app(EntraConfig.from_env(), options=SidecarOptions(development=True))
    """
    env = os.environ if environ is None else environ
    owned = auth is None
    if auth is None:
        base = config if config is not None else EntraConfig.from_env(env)
        auth = EntraAuth(replace(base, allow_acl_authorization=True), verify=trust_context(env))
    elif config is not None and config is not auth.config:
        raise ConfigurationError("give either config or auth, not both", key="config")
    opts = options if options is not None else SidecarOptions.from_config(auth.config, env)
    engine = auth

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        if owned:
            await engine.aclose()

    if opts.development:
        middleware: list[Middleware] = []
    elif opts.compatibility == "1.0":
        middleware = [Middleware(HostFiltering, allowed=opts.allowed_hosts)]
    else:
        middleware = [Middleware(LoopbackOnly)]
    app = Starlette(
        routes=[Route("/{path:path}", SidecarRoutes(engine, opts).dispatch, methods=_METHODS)],
        middleware=middleware,
        lifespan=lifespan,
    )
    app.state.entra_auth = engine
    app.state.sidecar_options = opts
    return app
