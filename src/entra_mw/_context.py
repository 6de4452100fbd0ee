"""``AuthContext``: what the middleware attaches to each request at ``scope["entra_mw"]`` / ``environ["entra_mw"]``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._principal import Principal
from .errors import MissingToken

if TYPE_CHECKING:
    from ._downstream import Downstream
    from ._engine import EntraAuth
    from ._requirements import Requirement

__all__ = ["AuthContext"]


class AuthContext:
    """The request's verified caller (or none, in optional mode) and a lazily built :class:`Downstream`.

    ``token`` is the caller's raw bearer token, kept only so ``downstream`` can perform On-Behalf-Of; it is never
    shown in ``repr``.
    """

    __slots__ = ("_downstream", "auth", "principal", "token")

    def __init__(self, auth: EntraAuth, principal: Principal | None, token: str | None) -> None:
        self.auth = auth
        self.principal = principal
        self.token = token
        self._downstream: Downstream | None = None

    @property
    def is_authenticated(self) -> bool:
        return self.principal is not None

    def require(self, requirement: Requirement | None = None) -> Principal:
        """The caller, checked against ``requirement``: raises ``MissingToken`` (401) for an anonymous request
        and ``InsufficientScope`` (403) when the caller lacks the scopes or roles. What every ``require``
        decorator and dependency calls::

            principal = ctx.require(Requirement(scopes=["Weather.Read"]))
        """
        principal = self.principal
        if principal is None:
            raise MissingToken("A bearer token is required.", reason="missing_token")
        if requirement is not None:
            requirement.check(principal)
        return principal

    @property
    def downstream(self) -> Downstream:
        """Built on first use: OBO for the caller when there is one, app-only otherwise."""
        if self._downstream is None:
            self._downstream = self.auth.downstream(self.principal, self.token)
        return self._downstream

    def __repr__(self) -> str:
        return f"AuthContext(principal={self.principal!r})"
