"""Value types shared by the acquisition engine, the token cache and ``Downstream``."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Literal

__all__ = ["AccessToken", "Flow", "TokenRequest"]

#: app: client credentials as this app. obo: On-Behalf-Of the caller. agent_app: autonomous agent (T1, then the
#: agent's client credentials). agent_obo: T1, then OBO as the agent. agent_user: T1, T2, then user_fic.
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
    """One token to get. Its :meth:`cache_key` is canonical: it never collides across users, tenants or agents.

    ``user_assertion`` is the caller's token (OBO flows); it is never in ``repr`` and only its SHA-256 enters the key.
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

    def cache_key(self) -> str:
        user = ""
        if self.user_assertion is not None:
            user = "a:" + hashlib.sha256(self.user_assertion.encode()).hexdigest()
        elif self.username is not None:
            user = "u:" + self.username.lower()
        elif self.user_object_id is not None:
            user = "o:" + self.user_object_id.lower()
        claims = hashlib.sha256(self.claims.encode()).hexdigest() if self.claims else ""
        parts = [
            "v1",
            self.flow,
            self.tenant.lower(),
            self.client_id.lower(),
            (self.agent_id or "").lower(),
            user,
            " ".join(sorted({s.lower() for s in self.scopes})),
            claims,
        ]
        return json.dumps(parts, separators=(",", ":"))
