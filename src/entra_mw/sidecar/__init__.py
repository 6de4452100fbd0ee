"""The sidecar-compatible HTTP service: the official "Microsoft Entra SDK for Agent ID" container's API on this
library's engine, for apps in any language.

::

    from entra_mw.sidecar import create_app

    app = create_app()          # EntraConfig.from_env(): AzureAd__*, DownstreamApis__*, Sidecar__*
    # uvicorn.run(app, host="127.0.0.1", port=5000), or: entra-mw sidecar --port 5000

Endpoints (spec §1): ``GET /healthz``, ``GET /Validate``, ``GET /AuthorizationHeader/{apiName}``,
``GET /AuthorizationHeaderUnauthenticated/{apiName}``, ``POST /DownstreamApi/{apiName}``,
``POST /DownstreamApiUnauthenticated/{apiName}`` and, in Development, ``GET /openapi/v1.json``. See
``docs/sidecar.md`` for the configuration and the deliberate differences from the official container.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._factory import create_app, trust_context
    from ._options import SidecarOptions

__all__ = ["SidecarOptions", "create_app", "trust_context"]


def __getattr__(name: str) -> Any:
    # Starlette is imported only when the app is built, so ``entra-mw --help`` works without the sidecar extra.
    if name in ("create_app", "trust_context"):
        from . import _factory

        return getattr(_factory, name)
    if name == "SidecarOptions":
        from ._options import SidecarOptions

        return SidecarOptions
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
