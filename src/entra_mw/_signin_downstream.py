"""A :class:`~entra_mw.Downstream` for a signed-in web user: delegated tokens come from the user's session (its
refresh token, through MSAL's silent flow) instead of On-Behalf-Of a caller's bearer token.

Everything else is Downstream's own: API names and scopes from the configuration, URL and header safety rules,
the claims-challenge retry, and the engine's token cache in front — keyed by a digest of the session (so never
shared across sessions or users), with single flight per session and API (N concurrent requests of one session →
one refresh). The session is the token source of a view of the engine's token service
(:meth:`~entra_mw._tokens.TokenService.with_source`).
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

from ._downstream import Downstream
from ._principal import Principal
from .errors import DownstreamRequestError

if TYPE_CHECKING:
    from ._acquisition._types import AccessToken, TokenRequest
    from ._signin import User, WebSignIn

__all__ = ["SessionDownstream"]

# The cache key's "caller" part for a session: never a JWT, so never equal to a bearer token's digest.
_SESSION_MARK = "entra_mw-signin-session:"


class SessionDownstream(Downstream):
    """Built by :meth:`WebSignIn.downstream`; the same interface as every :class:`~entra_mw.Downstream`::

        header = signin.downstream(session_id).authorization_header("weather")
        response = signin.downstream(session_id).call("weather", "forecast")
    """

    __slots__ = ("_session_id", "_signin")

    def __init__(self, signin: WebSignIn, session_id: str, user: User) -> None:
        # Only the session's digest stands for the caller (never the session id itself).
        marker = _SESSION_MARK + hashlib.sha256(session_id.encode()).hexdigest()
        tokens = signin.auth._tokens.with_source(_SessionSource(signin, session_id))
        super().__init__(tokens, principal=Principal(dict(user.claims)), token=marker)
        self._signin = signin
        self._session_id = session_id

    def __repr__(self) -> str:
        oid = self._principal.oid if self._principal is not None else None
        return f"SessionDownstream(user_oid={oid!r})"

    def for_agent(self, agent_id: str, *, username: str | None = None, user_id: str | None = None) -> Downstream:
        raise DownstreamRequestError(
            "acting as an agent identity is not available for a signed-in web user; use auth.downstream()",
            reason="agent_for_session",
        )

    def _check_caller(self) -> tuple[float | None, str | None]:
        # No bearer token to decode: the session's tokens live as long as Entra says, and belong to its user.
        principal = self._principal
        return None, principal.oid if principal is not None else None



class _SessionSource:
    """The token source of a signed-in session: its tokens through MSAL's silent flow (on a cache miss only)."""

    __slots__ = ("_session_id", "_signin")

    def __init__(self, signin: WebSignIn, session_id: str) -> None:
        self._signin = signin
        self._session_id = session_id

    def fetch(self, req: TokenRequest) -> AccessToken:
        return self._signin.session_token(
            self._session_id, scopes=req.scopes, force_refresh=req.force_refresh, claims=req.claims
        )

    async def afetch(self, req: TokenRequest) -> AccessToken:
        return await self._signin.asession_token(
            self._session_id, scopes=req.scopes, force_refresh=req.force_refresh, claims=req.claims
        )
