"""Django integration (app label ``entra_mw``): settings-driven engine, ``request.entra``, a view decorator,
system checks, and a DRF authentication class (:mod:`entra_mw.contrib.django.rest_framework`).

``settings.py``::

    INSTALLED_APPS = [..., "entra_mw.contrib.django"]
    MIDDLEWARE = [..., "entra_mw.contrib.django.EntraMiddleware"]
    ENTRA_MW = {"tenant_id": "...", "client_id": "..."}       # or "env": the sidecar's AzureAd__* variables

``views.py``::

    from entra_mw.contrib.django import require

    @require(scopes=["Weather.Read"])
    async def forecast(request):
        principal = request.entra.principal
        response = await request.entra.downstream.acall("forecast-api", "today")
        ...
"""

from __future__ import annotations

from .decorators import require
from .middleware import EntraMiddleware, get_context

__all__ = ["EntraMiddleware", "get_context", "require"]
