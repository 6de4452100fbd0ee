"""System checks (``manage.py check``, run at startup): the settings are read and checked the way the first
request would use them, so a mistake shows at deploy time with a hint, not as a failing request.

===================  ========================================================================
``entra_mw.E001``    ``ENTRA_MW`` is not set
``entra_mw.E002``    ``ENTRA_MW`` is invalid (wrong type, unknown key, bad value, ``"env"`` with
                     the ``AzureAd__*`` variables missing or wrong)
``entra_mw.E003``    ``ENTRA_MW_AUTH_FACTORY`` is neither a callable nor an importable dotted path
``entra_mw.E004``    ``ENTRA_MW_USER_SYNC`` is neither a callable nor an importable dotted path
``entra_mw.E005``    ``ENTRA_MW_REQUIRED`` is not a bool, or ``ENTRA_MW_EXCLUDE_PATHS`` not a
                     list of paths (``"/healthz"``, ``"/static/*"``)
``entra_mw.W001``    ``EntraMiddleware`` comes before django-cors-headers' ``CorsMiddleware``
===================  ========================================================================

A missing middleware is not an error: the ``require`` decorator and the DRF authentication class authenticate
the request themselves. Its place matters in one case: after ``CorsMiddleware``, or its 401/403/400 answers
carry no CORS headers (browsers then hide them from the calling page) and, with ``ENTRA_MW_REQUIRED``, CORS
preflight requests (which never carry a token) are refused.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.apps import AppConfig
from django.conf import settings
from django.core.checks import CheckMessage, Error
from django.core.checks import Warning as CheckWarning

from ..._settings import config_from_setting, load_factory
from .conf import AUTH_FACTORY, SETTING, USER_SYNC, middleware_settings

__all__ = ["check_settings"]

_SETTING_HINT = (
    'Set ENTRA_MW = {"tenant_id": "<tenant GUID or domain>", "client_id": "<your API\'s application id>"} '
    '(the EntraConfig names), or ENTRA_MW = "env" to read the sidecar\'s AzureAd__* variables.'
)
_ENV_HINT = (
    'ENTRA_MW = "env" reads the sidecar\'s AzureAd__* variables from the environment of the Django process: set '
    "them before it starts (for `entra-mw emulator`: set -a; . ~/.cache/entra-mw/emulator.env; set +a), or give "
    'ENTRA_MW a mapping {"tenant_id": ..., "client_id": ...} instead.'
)
_OURS = frozenset({"entra_mw.contrib.django.EntraMiddleware", "entra_mw.contrib.django.middleware.EntraMiddleware"})
_CORS = "corsheaders.middleware.CorsMiddleware"
_MIDDLEWARE_HINT = (
    'ENTRA_MW_REQUIRED = True or False; ENTRA_MW_EXCLUDE_PATHS = ["/healthz", "/static/*"] (paths start with "/", '
    'a "*" only as a final "/*").'
)
_DOTTED_HINT = "Give a callable or a dotted path such as 'myproject.auth.{what}' to a module-level callable."


def check_settings(app_configs: Sequence[AppConfig] | None = None, **kwargs: Any) -> list[CheckMessage]:
    errors: list[CheckMessage] = []
    value = getattr(settings, SETTING, None)
    if value is None:
        errors.append(Error(f"{SETTING} is not set.", hint=_SETTING_HINT, id="entra_mw.E001"))
    else:
        try:
            config_from_setting(value, key=SETTING)
        except (ValueError, TypeError) as exc:  # ConfigurationError is a ValueError
            hint = _ENV_HINT if isinstance(value, str) and value.strip().lower() == "env" else _SETTING_HINT
            errors.append(Error(f"{SETTING} is invalid: {exc}", hint=hint, id="entra_mw.E002"))
    for name, code, what in ((AUTH_FACTORY, "E003", "build_auth"), (USER_SYNC, "E004", "sync_user")):
        try:
            load_factory(getattr(settings, name, None), key=name)
        except ValueError as exc:
            errors.append(Error(str(exc), hint=_DOTTED_HINT.format(what=what), id=f"entra_mw.{code}"))
    try:
        middleware_settings()
    except ValueError as exc:
        errors.append(Error(str(exc), hint=_MIDDLEWARE_HINT, id="entra_mw.E005"))
    middleware = list(getattr(settings, "MIDDLEWARE", None) or ())
    ours = next((i for i, name in enumerate(middleware) if name in _OURS), None)
    if ours is not None and _CORS in middleware[ours:]:
        errors.append(
            CheckWarning(
                "EntraMiddleware comes before CorsMiddleware: its refusals carry no CORS headers.",
                hint=f"Move {_CORS!r} above 'entra_mw.contrib.django.EntraMiddleware' in MIDDLEWARE.",
                id="entra_mw.W001",
            )
        )
    return errors
