"""The verified caller: a read-only mapping of the token's claims plus typed accessors."""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping
from types import MappingProxyType
from typing import Any

__all__ = ["Principal"]

#: Agent facet values (spec §3.7): 11 AgentIdentity, 13 AgentIDUser.
_AGENT_IDENTITY_FACET = 11
_AGENT_USER_FACET = 13


def _facets(value: Any) -> frozenset[int] | None:
    """Parse a space-separated list of integers; ``None`` when absent or when any token is not an integer."""
    if not isinstance(value, str) or not value.strip():
        return None
    out: set[int] = set()
    for part in value.split():
        if not part.isdigit() or len(part) > 9:
            return None
        out.add(int(part))
    return frozenset(out)


def _frozen(value: Any) -> Any:
    if value.__class__ is list:
        return tuple(_frozen(v) for v in value)
    if value.__class__ is dict:
        return MappingProxyType({k: _frozen(v) for k, v in value.items()})
    return value


class Principal(Mapping[str, Any]):
    """The claims of a verified token. Immutable; decide nothing from claims before verification.

    ::

        principal = auth.validate(token)
        principal["oid"], principal.tid, principal.scopes, principal.roles, principal.is_app
    """

    __slots__ = ("_claims", "_roles", "_scopes")

    def __init__(self, claims: Mapping[str, Any]) -> None:
        self._claims: dict[str, Any] = dict(claims)
        self._scopes: frozenset[str] | None = None
        self._roles: frozenset[str] | None = None

    @classmethod
    def _owning(cls, claims: dict[str, Any]) -> Principal:
        """Wrap a freshly parsed claims dict nobody else holds, without copying it (the validator's path)."""
        self = cls.__new__(cls)
        self._claims = claims
        self._scopes = None
        self._roles = None
        return self

    # Mapping protocol ---------------------------------------------------------------------------------
    def __getitem__(self, key: str) -> Any:
        # A validated principal is cached and shared by every request bearing the same token, so containers
        # come back read-only: a list as a tuple, an object as a read-only mapping.
        value = self._claims[key]
        if value.__class__ is list or value.__class__ is dict:
            return _frozen(value)
        return value

    def __iter__(self) -> Iterator[str]:
        return iter(self._claims)

    def __len__(self) -> int:
        return len(self._claims)

    def __repr__(self) -> str:
        # Claims only (never the token); a compact form with the identifying claims.
        return f"Principal(oid={self.oid!r}, tid={self.tid!r}, client_id={self.client_id!r}, is_app={self.is_app})"

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Principal):
            return self._claims == other._claims
        return NotImplemented

    def __hash__(self) -> int:
        return hash((self.oid, self.tid, self.sub, self._str("uti")))

    # Typed accessors ----------------------------------------------------------------------------------
    def _str(self, name: str) -> str | None:
        value = self._claims.get(name)
        return value if isinstance(value, str) else None

    @property
    def claims(self) -> dict[str, Any]:
        """A deep copy of the raw claims, as plain JSON types (safe to change)."""
        return copy.deepcopy(self._claims)

    @property
    def oid(self) -> str | None:
        return self._str("oid")

    @property
    def tid(self) -> str | None:
        return self._str("tid")

    @property
    def sub(self) -> str | None:
        return self._str("sub")

    @property
    def name(self) -> str | None:
        return self._str("name")

    @property
    def preferred_username(self) -> str | None:
        return self._str("preferred_username") or self._str("upn")

    @property
    def scopes(self) -> frozenset[str]:
        """Delegated permissions (``scp``, space-separated)."""
        scopes = self._scopes
        if scopes is None:
            scp = self._claims.get("scp")
            scopes = self._scopes = frozenset(scp.split()) if isinstance(scp, str) else frozenset()
        return scopes

    @property
    def roles(self) -> frozenset[str]:
        """App roles (``roles``)."""
        roles = self._roles
        if roles is None:
            raw = self._claims.get("roles")
            if isinstance(raw, list):
                roles = frozenset(r for r in raw if isinstance(r, str))
            elif isinstance(raw, str):
                roles = frozenset(raw.split())
            else:
                roles = frozenset()
            self._roles = roles
        return roles

    @property
    def token_version(self) -> str | None:
        """``"1.0"`` or ``"2.0"`` (the ``ver`` claim)."""
        return self._str("ver")

    @property
    def client_id(self) -> str | None:
        """The calling application: ``azp`` (v2) or ``appid`` (v1)."""
        return self._str("azp") or self._str("appid")

    @property
    def is_app(self) -> bool:
        """True for an app-only token (client credentials, autonomous agent).

        Uses ``idtyp`` when Entra sent it; otherwise an app-only token is one with no ``scp`` whose ``oid``
        equals its ``sub`` (the service principal authenticates as itself).
        """
        idtyp = self._str("idtyp")
        if idtyp is not None:
            return idtyp == "app"
        return "scp" not in self._claims and self.oid is not None and self.oid == self.sub

    @property
    def agent_blueprint(self) -> str | None:
        """The agent's blueprint app id (``xms_par_app_azp``), or ``None`` when absent."""
        return self._str("xms_par_app_azp")

    @property
    def is_agent(self) -> bool:
        """True when the caller is an agent identity: ``xms_par_app_azp`` present or actor facet 11."""
        if self.agent_blueprint is not None:
            return True
        facets = _facets(self._claims.get("xms_act_fct"))
        return facets is not None and _AGENT_IDENTITY_FACET in facets

    @property
    def is_agent_user(self) -> bool:
        """True when the subject is an agent user: ``xms_sub_fct`` holds 13 and only integers."""
        facets = _facets(self._claims.get("xms_sub_fct"))
        return facets is not None and _AGENT_USER_FACET in facets
