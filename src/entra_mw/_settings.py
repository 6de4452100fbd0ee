"""Engines built from framework settings (Django's ``ENTRA_MW``, Flask's ``app.config["ENTRA_MW"]``), one rule for
every adapter: the setting is a mapping of :meth:`EntraConfig.from_mapping` names, an :class:`EntraConfig`, or the
string ``"env"`` (the official sidecar's ``AzureAd__*`` variables); the engine is ``EntraAuth(config)`` unless an
``ENTRA_MW_AUTH_FACTORY`` (a callable, or its dotted path) taking the config builds it.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

from ._config import EntraConfig
from ._engine import EntraAuth
from .errors import ConfigurationError

__all__ = ["AuthFactory", "auth_from_settings", "config_from_setting", "load_factory"]

AuthFactory = Callable[[EntraConfig], EntraAuth]


def config_from_setting(value: object, *, key: str = "ENTRA_MW") -> EntraConfig:
    """An :class:`EntraConfig` from a settings value; ``ConfigurationError`` naming ``key`` otherwise."""
    if isinstance(value, EntraConfig):
        return value
    if isinstance(value, str):
        if value.strip().lower() == "env":
            return EntraConfig.from_env()
        raise ConfigurationError(f'{key} must be a mapping, an EntraConfig or "env", got the string {value!r}', key=key)
    if isinstance(value, Mapping):
        return EntraConfig.from_mapping(value)
    if value is None:
        raise ConfigurationError(
            f'{key} is not set: give a mapping such as {{"tenant_id": ..., "client_id": ...}}, '
            'or "env" to read the AzureAd__* variables',
            key=key,
        )
    raise ConfigurationError(f'{key} must be a mapping, an EntraConfig or "env", not {type(value).__name__}', key=key)


def load_factory(value: object, *, key: str = "ENTRA_MW_AUTH_FACTORY") -> AuthFactory | None:
    """The factory named by a settings value: ``None``, a callable, or a dotted path ``"pkg.module.name"`` (or
    ``"pkg.module:name"``)."""
    if value is None or value == "":
        return None
    if callable(value):
        return value
    if not isinstance(value, str):
        raise ConfigurationError(f"{key} must be a callable or a dotted path, not {type(value).__name__}", key=key)
    module_name, sep, attr = value.partition(":")
    if not sep:
        module_name, _, attr = value.rpartition(".")
    if not module_name or not attr:
        raise ConfigurationError(f"{key} must be a dotted path such as 'myapp.auth.build', got {value!r}", key=key)
    try:
        target: Any = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigurationError(f"{key} names {value!r}, which cannot be imported: {exc}", key=key) from None
    if not callable(target):
        raise ConfigurationError(f"{key} names {value!r}, which is not callable", key=key)
    return target  # type: ignore[no-any-return]


def auth_from_settings(value: object, factory: object = None, *, key: str = "ENTRA_MW") -> EntraAuth:
    """The engine for a settings value and an optional factory (see the module docstring)."""
    config = config_from_setting(value, key=key)
    build = load_factory(factory)
    auth = EntraAuth(config) if build is None else build(config)
    if not isinstance(auth, EntraAuth):
        raise ConfigurationError(
            f"ENTRA_MW_AUTH_FACTORY returned {type(auth).__name__}, not an EntraAuth", key="ENTRA_MW_AUTH_FACTORY"
        )
    return auth
