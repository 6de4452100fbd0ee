"""The settings the Django integration reads, always at use time (so ``override_settings`` works), and the
engine built from them.

- ``ENTRA_MW``: a mapping of :meth:`~entra_mw.EntraConfig.from_mapping` names, an ``EntraConfig``, or ``"env"``
  for the official sidecar's ``AzureAd__*`` / ``DownstreamApis__*`` variables.
- ``ENTRA_MW_AUTH_FACTORY``: a callable (or its dotted path) taking the ``EntraConfig`` and returning the
  ``EntraAuth`` to use — how tests hand the engine FakeEntra's transport and apps a custom HTTP client.
- ``ENTRA_MW_USER_SYNC``: a callable (or its dotted path) taking the verified ``Principal`` and returning the
  ``request.user`` the DRF authentication class hands out (for example a ``User`` it gets or creates). Off by
  default: no database access per request.

The engine is built on first use and kept until one of these settings changes (Django's ``setting_changed``
signal, sent by ``override_settings``); the replaced engine is closed.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, cast

from django.conf import settings
from django.core.signals import setting_changed

from ..._engine import EntraAuth
from ..._principal import Principal
from ..._settings import auth_from_settings, load_factory

__all__ = ["AUTH_FACTORY", "SETTING", "USER_SYNC", "get_auth", "get_user_sync"]

SETTING = "ENTRA_MW"
AUTH_FACTORY = "ENTRA_MW_AUTH_FACTORY"
USER_SYNC = "ENTRA_MW_USER_SYNC"

UserSync = Callable[[Principal], Any]

_UNSET: Any = object()


class _State:
    """The engine and the user-sync hook built from the current settings; dropped when they change."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.auth: EntraAuth | None = None
        self.user_sync: UserSync | None = _UNSET

    def get_auth(self) -> EntraAuth:
        auth = self.auth
        if auth is None:
            with self.lock:
                if self.auth is None:
                    self.auth = auth_from_settings(
                        getattr(settings, SETTING, None), getattr(settings, AUTH_FACTORY, None), key=SETTING
                    )
                auth = self.auth
        return auth

    def get_user_sync(self) -> UserSync | None:
        hook = self.user_sync
        if hook is _UNSET:
            # load_factory reads any dotted path to a callable; the name in errors is the setting's.
            hook = cast("UserSync | None", load_factory(getattr(settings, USER_SYNC, None), key=USER_SYNC))
            self.user_sync = hook
        return hook

    def reset(self, setting: str) -> None:
        if setting == USER_SYNC:
            self.user_sync = _UNSET
            return
        with self.lock:
            auth, self.auth = self.auth, None
        if auth is not None:
            auth.close()


_state = _State()


def get_auth() -> EntraAuth:
    """The engine for the current ``ENTRA_MW`` / ``ENTRA_MW_AUTH_FACTORY`` settings (built on first use).

    Raises :class:`~entra_mw.ConfigurationError` naming the setting when it is missing or invalid (the system
    checks report the same problems at startup).
    """
    return _state.get_auth()


def get_user_sync() -> UserSync | None:
    """The ``ENTRA_MW_USER_SYNC`` hook, or ``None`` (the default)."""
    return _state.get_user_sync()


def _setting_changed(*, setting: str, **kwargs: Any) -> None:
    if setting in (SETTING, AUTH_FACTORY, USER_SYNC):
        _state.reset(setting)


setting_changed.connect(_setting_changed, dispatch_uid="entra_mw.contrib.django.conf")
