"""Value types shared by the acquisition engine, the token cache and ``Downstream``."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Final, Literal

__all__ = [
    "OIDC_SCOPES",
    "AccessToken",
    "Flow",
    "TokenRequest",
    "assertion_claims",
    "caller_digest",
    "l1_prefix",
    "request_key",
    "scope_set",
]

#: app: client credentials as this app. obo: On-Behalf-Of the caller. agent_app: autonomous agent (T1, then
#: the agent's client credentials). agent_obo: T1, then OBO as the agent. agent_user: T1, T2, then user_fic.
Flow = Literal["app", "obo", "agent_app", "agent_obo", "agent_user"]

#: Scopes MSAL adds to delegated requests itself and refuses to be given (``_decorate_scope``, spec §3.8).
OIDC_SCOPES: Final = frozenset({"openid", "profile", "offline_access"})


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
    ``caller_expires_on`` (the caller token's ``exp``) and ``caller_oid`` describe the caller of an OBO request;
    they bound the cached token's life and name its owner, and are not part of the key (the assertion is).
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
    caller_expires_on: float | None = field(default=None, compare=False)
    caller_oid: str | None = field(default=None, compare=False)
    # The keys, computed once per instance (the instance is frozen, so they cannot change).
    _key: str | None = field(default=None, init=False, repr=False, compare=False)
    _l1: bytes | None = field(default=None, init=False, repr=False, compare=False)

    def cache_key(self) -> str:
        """The canonical cache key: flow, tenant, client, agent, the user (SHA-256 of the caller's assertion,
        lowercased UPN, lowercased object id), the sorted lowercased scope set and a SHA-256 of the claims
        (DESIGN §5 "Acquisition"). It names the entry in a shared (L2) store.

        It is computed once per instance. Two requests get the same key only when every one of those parts is
        equal, so a key is never shared across users, tenants, agents, scopes or claims::

            req = TokenRequest(flow="app", scopes=("api://x/.default",), client_id="c", tenant="t")
            assert req.cache_key() == req.cache_key()
        """
        key = self._key
        if key is None:
            digest = "" if self.user_assertion is None else self._caller_digest().hex()
            key = self._request_key(digest)
            object.__setattr__(self, "_key", key)
        return key

    def l1_key(self) -> bytes:
        """The in-process cache's key for this request: 32 or 64 bytes, equal for two requests exactly when
        their :meth:`cache_key` is (up to SHA-256 collisions).

        It is :func:`l1_prefix` of every part but the caller, followed by :func:`caller_digest` of the
        caller's assertion when there is one. Being short and fixed in shape, it keeps a cache hit to a few
        cache lines however many entries are held::

            req = TokenRequest(flow="obo", scopes=("User.Read",), client_id="c", tenant="t", user_assertion="ey…")
            assert req.l1_key()[32:] == caller_digest("ey…")
        """
        key = self._l1
        if key is None:
            key = l1_prefix(self._request_key(""))
            if self.user_assertion is not None:
                key += self._caller_digest()
            object.__setattr__(self, "_l1", key)
        return key

    def _caller_digest(self) -> bytes:
        # Not kept: a miss with a shared store needs it twice (both keys), a hit never computes either key.
        assert self.user_assertion is not None
        return caller_digest(self.user_assertion)

    def _request_key(self, digest: str) -> str:
        return request_key(
            flow=self.flow,
            tenant=self.tenant,
            client_id=self.client_id,
            agent_id=self.agent_id,
            digest=digest,
            username=self.username,
            user_object_id=self.user_object_id,
            scopes=scope_set(self.scopes),
            claims=self.claims,
        )


#: A caller token larger than this is not parsed for its claims (the validator caps inbound tokens lower).
_MAX_ASSERTION_CHARS: Final = 64 * 1024


def assertion_claims(assertion: str) -> dict[str, Any] | None:
    """The claims of a caller's JWT, read **without** verifying it (its signature was checked by whoever
    validated it; this only reads its ``exp`` and identity to bound a cached token's life), or ``None`` when it
    is not a JWS whose payload is a JSON object."""
    if not isinstance(assertion, str) or len(assertion) > _MAX_ASSERTION_CHARS or assertion.count(".") != 2:
        return None
    payload = assertion.split(".")[1]
    try:
        raw = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
        claims = json.loads(raw)
    except (ValueError, binascii.Error, RecursionError):
        return None
    return claims if isinstance(claims, dict) else None


def caller_digest(assertion: str) -> bytes:
    """The SHA-256 of a caller's token (32 bytes): what stands for the caller in an L1 key."""
    return hashlib.sha256(assertion.encode()).digest()


def l1_prefix(key_without_caller: str) -> bytes:
    """The first 32 bytes of an L1 key (see :meth:`TokenRequest.l1_key`): the SHA-256 of the canonical key
    with an empty caller digest, which names every other part (flow, tenant, client, agent, user, scopes,
    claims). Computed once per plan by ``Downstream``, so a hit only hashes the caller's token.

    ::

        prefix = l1_prefix(request_key(flow="obo", tenant="t", client_id="c", agent_id=None, digest="",
                                       username=None, user_object_id=None, scopes="user.read", claims=None))
    """
    return hashlib.sha256(key_without_caller.encode()).digest()


def scope_set(scopes: tuple[str, ...]) -> str:
    """The scope set as Entra reads it (RFC 6749 §3.3: space-delimited, order-free), lowercased and sorted."""
    return scopes[0].lower() if len(scopes) == 1 else " ".join(sorted({s.lower() for s in scopes}))


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

    ``digest`` is :func:`caller_digest` of the caller's token in hex (``""`` without one) and ``scopes`` is
    :func:`scope_set` of the scopes.
    """
    # ASCII case folding only: str.lower() on non-ASCII text folds look-alikes together (the KELVIN SIGN
    # U+212A lowercases to 'k'), which would let two users share an entry. Non-ASCII text is kept as it is.
    username_part = "" if username is None else "u:" + _ascii_lower(username)
    object_id_part = "" if user_object_id is None else "o:" + _ascii_lower(user_object_id)
    claims_digest = hashlib.sha256(claims.encode()).hexdigest() if claims else ""
    agent = "" if agent_id is None else agent_id.lower()
    # Every user-bearing field has a part of its own: a request naming both a caller and a user must never
    # share a key with one naming only one of them.
    parts = (
        flow,
        tenant.lower(),
        client_id.lower(),
        agent,
        digest,
        username_part,
        object_id_part,
        scopes,
        claims_digest,
    )
    if not any(_SEP in part for part in parts):
        # The fast form: no part contains the separator, so the fixed number of parts makes it injective.
        return "v2\x1f" + "\x1f".join(parts)
    # A part carries the separator itself (only hostile or broken input does): fall back to JSON, which is
    # unambiguous and cannot be confused with the fast form (it starts with "[", not "v2").
    return json.dumps(parts, separators=(",", ":"))


def _ascii_lower(text: str) -> str:
    return text.lower() if text.isascii() else text


# ASCII "unit separator": never part of a GUID, a domain, a UPN, a scope (RFC 6749 §3.3) or a hex digest.
_SEP = "\x1f"
