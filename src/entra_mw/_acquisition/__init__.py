"""Token acquisition: value types (:mod:`._types`), the MSAL-backed engine (:mod:`.engine`), the token cache.

Kept import-light: nothing here imports MSAL; :class:`.engine.Acquirer` loads it when it is built.
"""

from __future__ import annotations

from ._types import AccessToken, Flow, TokenRequest

__all__ = ["AccessToken", "Flow", "TokenRequest"]
