"""Declarative authorization requirements, evaluated by the core after the signature is verified.

::

    Requirement(scopes=["Weather.Read"])                        # delegated: any of these in scp
    Requirement(roles=["Weather.Read.All"])                     # app-only: any of these in roles
    Requirement(scopes=["Weather.Read"], roles=["Weather.Read.All"])  # scope OR app permission
    Requirement(tenants=["72f988bf-..."])                        # caller's tid must be listed

A failure raises ``InsufficientScope`` (403, ``scope="..."`` in the challenge).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from ._principal import Principal
from .errors import ConfigurationError, InsufficientScope

__all__ = ["Requirement"]


def _tuple(value: Iterable[str] | str | None, name: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return tuple(value.split())
    out = tuple(value)
    if not all(isinstance(v, str) and v for v in out):
        raise ConfigurationError(f"Requirement.{name} must hold non-empty strings", key=name)
    return out


@dataclass(frozen=True, slots=True, kw_only=True)
class Requirement:
    """What a route needs from a valid token. Empty fields impose nothing.

    ``scopes`` and ``roles`` together mean *scope or app permission* (Microsoft.Identity.Web's
    ``RequiredScopeOrAppPermission``); either alone must be matched by at least one value. ``tenants`` limits the
    caller's ``tid``.
    """

    scopes: Sequence[str] = ()
    roles: Sequence[str] = ()
    tenants: Sequence[str] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "scopes", _tuple(self.scopes, "scopes"))
        object.__setattr__(self, "roles", _tuple(self.roles, "roles"))
        if self.tenants is not None:
            object.__setattr__(self, "tenants", tuple(t.lower() for t in _tuple(self.tenants, "tenants")))

    def check(self, principal: Principal) -> None:
        """Raise :class:`InsufficientScope` unless ``principal`` satisfies this requirement."""
        if self.tenants is not None and (principal.tid or "").lower() not in self.tenants:
            raise InsufficientScope(
                (), "The caller's tenant is not allowed to use this resource.", reason="tenant_not_allowed"
            )
        if not self.scopes and not self.roles:
            return
        if self.scopes and principal.scopes.intersection(self.scopes):
            return
        if self.roles and principal.roles.intersection(self.roles):
            return
        raise InsufficientScope(self.scopes or self.roles)

    def is_satisfied_by(self, principal: Principal) -> bool:
        try:
            self.check(principal)
        except InsufficientScope:
            return False
        return True
