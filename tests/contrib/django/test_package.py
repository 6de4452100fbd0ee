"""The DRF module imports Django and DRF and no other framework; the public names are the pinned ones."""

from __future__ import annotations

import entra_mw.contrib.django as integration

from ..._imports import loaded_after


def test_the_drf_module_imports_django_and_drf_only() -> None:
    imports = "entra_mw.contrib.django.rest_framework, entra_mw.contrib.django.apps"
    assert loaded_after(imports, ("starlette", "fastapi", "flask", "werkzeug", "mcp")) == set()


def test_public_names() -> None:
    assert integration.__all__ == sorted(integration.__all__)
    assert set(integration.__all__) == {"EntraMiddleware", "get_context", "require"}
    from django.apps import apps

    assert apps.get_app_config("entra_mw").name == "entra_mw.contrib.django"
