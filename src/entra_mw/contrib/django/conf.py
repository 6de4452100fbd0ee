"""The settings the Django integration reads, always at use time (so ``override_settings`` works), and the
engine built from them.

- ``ENTRA_MW``: a mapping of :meth:`~entra_mw.EntraConfig.from_mapping` names, an ``EntraConfig``, or ``"env"``
  for the official sidecar's ``AzureAd__*`` / ``DownstreamApis__*`` variables.
- ``ENTRA_MW_AUTH_FACTORY``: a callable (or its dotted path) taking the ``EntraConfig`` and returning the
  ``EntraAuth`` to use — how tests hand the engine FakeEntra's transport and apps a custom HTTP client.
- ``ENTRA_MW_USER_SYNC``: a callable (or its dotted path) taking the verified ``Principal`` and returning the
  ``request.user`` the DRF authentication class hands out (for example a ``User`` it gets or creates). Off by
  default: no database access per request.
- ``ENTRA_MW_REQUIRED``: ``False`` (the default) lets the middleware pass requests without a token on with an
  anonymous context; ``True`` makes it answer them with 401 itself, except under ``ENTRA_MW_EXCLUDE_PATHS``.
- ``ENTRA_MW_EXCLUDE_PATHS``: paths (``"/healthz"``) and subtrees (``"/static/*"``) where ``ENTRA_MW_REQUIRED``
  does not apply (a token that is sent is still checked, and views there may still use ``require``).

The engine is built on first use and kept until one of these settings changes (Django's ``setting_changed``
signal, sent by ``override_settings``); the replaced engine is closed.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

from django.conf import settings
from django.core.signals import setting_changed

from ..._engine import EntraAuth
from ..._middleware import PathExclusions
from ..._principal import Principal
from ..._settings import auth_from_settings, load_factory
from ...errors import ConfigurationError

__all__ = [
    "AUTH_FACTORY",
    "EXCLUDE_PATHS",
    "REQUIRED",
    "SETTING",
    "USER_SYNC",
    "MiddlewareSettings",
    "get_auth",
    "get_middleware_settings",
    "get_user_sync",
    "middleware_settings",
]

SETTING = "ENTRA_MW"
AUTH_FACTORY = "ENTRA_MW_AUTH_FACTORY"
USER_SYNC = "ENTRA_MW_USER_SYNC"
REQUIRED = "ENTRA_MW_REQUIRED"
EXCLUDE_PATHS = "ENTRA_MW_EXCLUDE_PATHS"

UserSync = Callable[[Principal], Any]

_UNSET: Any = object()


@dataclass(frozen=True, slots=True, kw_only=True)
class MiddlewareSettings:
    required: bool
    exclude_paths: PathExclusions


def middleware_settings() -> MiddlewareSettings:
    """``ENTRA_MW_REQUIRED`` and ``ENTRA_MW_EXCLUDE_PATHS``, checked; ``ConfigurationError`` naming the bad one."""
    required = getattr(settings, REQUIRED, False)
    if not isinstance(required, bool):
        raise ConfigurationError(f"{REQUIRED} must be True or False, not {required!r}", key=REQUIRED)
    paths = getattr(settings, EXCLUDE_PATHS, ())
    try:
        exclusions = PathExclusions(paths)
    except TypeError:
        raise ConfigurationError(f"{EXCLUDE_PATHS} must be a list of paths", key=EXCLUDE_PATHS) from None
    except ConfigurationError as exc:
        raise ConfigurationError(f"{EXCLUDE_PATHS}: {exc.description}", key=EXCLUDE_PATHS) from None
    return MiddlewareSettings(required=required, exclude_paths=exclusions)


class _State:
    """The engine, the user-sync hook and the middleware options built from the settings; dropped when they
    change."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.auth: EntraAuth | None = None
        self.user_sync: UserSync | None = _UNSET
        self.middleware: MiddlewareSettings | None = None

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

    def get_middleware_settings(self) -> MiddlewareSettings:
        found = self.middleware
        if found is None:
            found = self.middleware = middleware_settings()
        return found

    def reset(self, setting: str) -> None:
        if setting == USER_SYNC:
            self.user_sync = _UNSET
            return
        if setting in (REQUIRED, EXCLUDE_PATHS):
            self.middleware = None
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


def get_middleware_settings() -> MiddlewareSettings:
    """The middleware's ``ENTRA_MW_REQUIRED`` and ``ENTRA_MW_EXCLUDE_PATHS`` (read once, until they change)."""
    return _state.get_middleware_settings()


def _setting_changed(*, setting: str, **kwargs: Any) -> None:
    if setting in (SETTING, AUTH_FACTORY, USER_SYNC, REQUIRED, EXCLUDE_PATHS):
        _state.reset(setting)


setting_changed.connect(_setting_changed, dispatch_uid="entra_mw.contrib.django.conf")
