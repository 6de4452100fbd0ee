"""Value types shared by the acquisition engine, the token cache and ``Downstream``."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Literal

__all__ = ["AccessToken", "Flow", "TokenRequest"]

#: app: client credentials as this app. obo: On-Behalf-Of the caller. agent_app: autonomous agent (T1, then
#: the agent's client credentials). agent_obo: T1, then OBO as the agent. agent_user: T1, T2, then user_fic.
Flow = Literal["app", "obo", "agent_app", "agent_obo", "agent_user"]


@dataclass(frozen=True, slots=True, kw_only=True)
class AccessToken:
    """A token from Entra. ``token`` is never in ``repr``."""

    token: str = field(repr=False)
    expires_on: float  # epoch seconds
    refresh_on: float | None = None  # epoch seconds; from Entra's ``refresh_in``
    token_type: str = "Bearer"
    scopes: tuple[str, ...] = ()
    tenant: str | None = None

    @property
    def authorization_header(self) -> str:
        return f"{self.token_type} {self.token}"


@dataclass(frozen=True, slots=True, kw_only=True)
class TokenRequest:
    """One token to get. Its :meth:`cache_key` is canonical: never shared across users, tenants or agents.

    ``user_assertion`` is the caller's token (OBO flows); it is never in ``repr`` and only its SHA-256 enters
    the key.
    ``tenant`` is the tenant to ask (``None``: the configured tenant, or for OBO the caller's ``tid``).
    """

    flow: Flow
    scopes: tuple[str, ...]
    client_id: str
    tenant: str
    agent_id: str | None = None
    user_assertion: str | None = field(default=None, repr=False)
    username: str | None = None
    user_object_id: str | None = None
    claims: str | None = None
    force_refresh: bool = False
    # The canonical key, computed once per instance (the instance is frozen, so it cannot change).
    _key: str | None = field(default=None, init=False, repr=False, compare=False)

    def cache_key(self) -> str:
        """The canonical cache key: flow, tenant, client, agent, the user (SHA-256 of the caller's assertion,
        lowercased UPN, lowercased object id), the sorted lowercased scope set and a SHA-256 of the claims
        (DESIGN §5 "Acquisition").

        It is computed once per instance. Two requests get the same key only when every one of those parts is
        equal, so a key is never shared across users, tenants, agents, scopes or claims::

            req = TokenRequest(flow="app", scopes=("api://x/.default",), client_id="c", tenant="t")
            assert req.cache_key() == req.cache_key()
        """
        key = self._key
        if key is None:
            key = self._canonical_key()
            object.__setattr__(self, "_key", key)
        return key

    def _canonical_key(self) -> str:
        # Every user-bearing field has a part of its own: a request naming both a caller and a user must never
        # share a key with one naming only one of them.
        assertion = ""
        if self.user_assertion is not None:
            assertion = hashlib.sha256(self.user_assertion.encode()).hexdigest()
        username = "" if self.username is None else "u:" + self.username.lower()
        object_id = "" if self.user_object_id is None else "o:" + self.user_object_id.lower()
        scopes = self.scopes
        scope_set = scopes[0].lower() if len(scopes) == 1 else " ".join(sorted({s.lower() for s in scopes}))
        claims = hashlib.sha256(self.claims.encode()).hexdigest() if self.claims else ""
        parts = (
            self.flow,
            self.tenant.lower(),
            self.client_id.lower(),
            (self.agent_id or "").lower(),
            assertion,
            username,
            object_id,
            scope_set,
            claims,
        )
        text = _SEP.join(parts)
        if text.count(_SEP) == len(parts) - 1:
            # The fast form: no part contains the separator, so the fixed number of parts makes it injective.
            return "v2" + _SEP + text
        # A part carries the separator itself (only hostile or broken input does): fall back to JSON, which is
        # unambiguous and cannot be confused with the fast form (it starts with "[", not "v2").
        return json.dumps(parts, separators=(",", ":"))


# ASCII "unit separator": never part of a GUID, a domain, a UPN, a scope (RFC 6749 §3.3) or a hex digest.
_SEP = "\x1f"
