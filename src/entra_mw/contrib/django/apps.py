"""The Django app (label ``entra_mw``): registers the system checks when Django is ready."""

from __future__ import annotations

from django.apps import AppConfig
from django.core import checks

__all__ = ["EntraMwConfig"]


class EntraMwConfig(AppConfig):
    name = "entra_mw.contrib.django"
    label = "entra_mw"
    verbose_name = "entra_mw (Microsoft Entra ID)"

    def ready(self) -> None:
        from .checks import check_settings

        checks.register(check_settings, checks.Tags.security)
