"""Value types shared by the acquisition engine, the token cache and ``Downstream``."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Literal

__all__ = [
    "AccessToken",
    "Flow",
    "KeyFrame",
    "TokenRequest",
    "assertion_digest",
    "key_frame",
    "request_key",
    "scope_set",
]

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
        return request_key(
            flow=self.flow,
            tenant=self.tenant,
            client_id=self.client_id,
            agent_id=self.agent_id,
            digest="" if self.user_assertion is None else assertion_digest(self.user_assertion),
            username=self.username,
            user_object_id=self.user_object_id,
            scopes=scope_set(self.scopes),
            claims=self.claims,
        )


def assertion_digest(assertion: str) -> str:
    """The SHA-256 (hex) of a caller's token: what stands for the caller in a cache key."""
    return hashlib.sha256(assertion.encode()).hexdigest()


def scope_set(scopes: tuple[str, ...]) -> str:
    """The scope set as Entra reads it (RFC 6749 §3.3: space-delimited, order-free), lowercased and sorted."""
    return scopes[0].lower() if len(scopes) == 1 else " ".join(sorted({s.lower() for s in scopes}))


@dataclass(frozen=True, slots=True)
class KeyFrame:
    """A canonical cache key without its caller digest: ``frame.key(d)`` is :func:`request_key` of the same
    parts with ``digest=d``. Built once per plan, it makes a key one concatenation."""

    head: str
    tail: str

    def key(self, digest: str) -> str:
        return self.head + digest + self.tail


def key_frame(
    *,
    flow: str,
    tenant: str,
    client_id: str,
    agent_id: str | None,
    username: str | None,
    user_object_id: str | None,
    scopes: str,
    claims: str | None,
) -> KeyFrame | None:
    """The :class:`KeyFrame` of a token request's parts, or ``None`` when a part carries the separator (its
    key then has the JSON form: use :func:`request_key`). ``scopes`` is :func:`scope_set` of the scopes.

    ::

        frame = key_frame(flow="obo", tenant="t", client_id="c", agent_id=None, username=None,
                          user_object_id=None, scopes="user.read", claims=None)
        req = TokenRequest(flow="obo", scopes=("User.Read",), client_id="c", tenant="t", user_assertion="ey…")
        assert frame is not None and frame.key(assertion_digest("ey…")) == req.cache_key()
    """
    # Every user-bearing field has a part of its own: a request naming both a caller and a user must never
    # share a key with one naming only one of them.
    username = "" if username is None else "u:" + username.lower()
    object_id = "" if user_object_id is None else "o:" + user_object_id.lower()
    claims_digest = hashlib.sha256(claims.encode()).hexdigest() if claims else ""
    agent = "" if agent_id is None else agent_id.lower()
    head = f"v2\x1f{flow}\x1f{tenant.lower()}\x1f{client_id.lower()}\x1f{agent}\x1f"
    tail = f"\x1f{username}\x1f{object_id}\x1f{scopes}\x1f{claims_digest}"
    if head.count(_SEP) + tail.count(_SEP) != _PARTS:
        return None
    return KeyFrame(head, tail)


def request_key(
    *,
    flow: str,
    tenant: str,
    client_id: str,
    agent_id: str | None,
    digest: str,
    username: str | None,
    user_object_id: str | None,
    scopes: str,
    claims: str | None,
) -> str:
    """The canonical cache key of a token request (see :meth:`TokenRequest.cache_key`), from its parts.

    ``digest`` is :func:`assertion_digest` of the caller's token (``""`` without one) and ``scopes`` is
    :func:`scope_set` of the scopes.
    """
    frame = key_frame(
        flow=flow,
        tenant=tenant,
        client_id=client_id,
        agent_id=agent_id,
        username=username,
        user_object_id=user_object_id,
        scopes=scopes,
        claims=claims,
    )
    if frame is not None and _SEP not in digest:
        # The fast form: no part contains the separator, so the fixed number of parts makes it injective.
        return frame.key(digest)
    # A part carries the separator itself (only hostile or broken input does): fall back to JSON, which is
    # unambiguous and cannot be confused with the fast form (it starts with "[", not "v2").
    parts = (
        flow,
        tenant.lower(),
        client_id.lower(),
        "" if agent_id is None else agent_id.lower(),
        digest,
        "" if username is None else "u:" + username.lower(),
        "" if user_object_id is None else "o:" + user_object_id.lower(),
        scopes,
        hashlib.sha256(claims.encode()).hexdigest() if claims else "",
    )
    return json.dumps(parts, separators=(",", ":"))


# ASCII "unit separator": never part of a GUID, a domain, a UPN, a scope (RFC 6749 §3.3) or a hex digest.
_SEP = "\x1f"
_PARTS = 9  # between "v2" and the nine parts; one more means a part carries a separator itself
