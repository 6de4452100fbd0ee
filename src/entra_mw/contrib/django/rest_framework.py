"""Django REST Framework: ``EntraAuthentication`` (``request.user`` / ``request.auth`` from the bearer token) and
``HasScopes`` (a permission for scopes or app roles).

::

    REST_FRAMEWORK = {
        "DEFAULT_AUTHENTICATION_CLASSES": ["entra_mw.contrib.django.rest_framework.EntraAuthentication"],
        "UNAUTHENTICATED_USER": None,      # optional: keeps django.contrib.auth out of anonymous requests
    }

    class Forecast(APIView):
        permission_classes = [HasScopes(scopes=["Weather.Read"], roles=["Weather.Read.All"])]

        def get(self, request):
            principal = request.auth.principal          # request.auth is the AuthContext
            ...

A request without a token is not authenticated (DRF answers 401 with ``WWW-Authenticate: Bearer`` when a
permission needs a user); a token that is sent and refused is answered with the core's own status, challenge
and JSON body.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any, ClassVar

from rest_framework.authentication import BaseAuthentication
from rest_framework.exceptions import APIException
from rest_framework.permissions import BasePermission
from rest_framework.request import Request

from ..._context import AuthContext
from ..._principal import Principal
from ..._requirements import Requirement
from ...errors import ConfigurationError, EntraError, MissingToken
from .conf import get_user_sync
from .middleware import ATTRIBUTE, get_context_or_authenticate

__all__ = ["EntraAuthentication", "EntraUser", "HasScopes", "RefusedByEntra"]


class RefusedByEntra(APIException):
    """An :class:`~entra_mw.EntraError` as DRF renders exceptions: the error's status, its JSON body as
    ``detail``, its ``WWW-Authenticate`` challenge and ``Retry-After``."""

    def __init__(self, error: EntraError) -> None:
        super().__init__(detail=error.body_dict())
        self.status_code = error.status_code
        self.error = error
        # DRF's exception handler sends these two as WWW-Authenticate and Retry-After.
        self.auth_header = error.www_authenticate
        retry_after = dict(error.headers()).get("Retry-After")
        self.wait = math.ceil(float(retry_after)) if retry_after is not None else None


class EntraUser:
    """``request.user`` for a verified token: no database row, nothing stored. ``pk`` is the caller's object
    id (``oid``; ``sub`` when absent), ``username`` its ``preferred_username`` (the client id for apps).

    Set ``ENTRA_MW_USER_SYNC`` to hand out your own ``User`` instead.
    """

    is_authenticated = True
    is_anonymous = False
    is_active = True
    is_staff = False
    is_superuser = False

    def __init__(self, principal: Principal) -> None:
        self.principal = principal
        self.pk = principal.oid or principal.sub
        self.username = principal.preferred_username or principal.client_id or self.pk or ""

    @property
    def id(self) -> str | None:
        return self.pk

    def get_username(self) -> str:
        return self.username

    def has_perm(self, perm: str, obj: object = None) -> bool:
        return False

    def has_perms(self, perms: Iterable[str], obj: object = None) -> bool:
        return False

    def has_module_perms(self, app_label: str) -> bool:
        return False

    def __str__(self) -> str:
        return self.username

    def __repr__(self) -> str:
        return f"EntraUser(pk={self.pk!r}, username={self.username!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, EntraUser) and other.pk == self.pk

    def __hash__(self) -> int:
        return hash(self.pk)


class EntraAuthentication(BaseAuthentication):
    """DRF authentication from the bearer token: ``request.user`` is an :class:`EntraUser` (or what
    ``ENTRA_MW_USER_SYNC`` returns) and ``request.auth`` the :class:`~entra_mw.AuthContext` (``.principal``,
    ``.downstream``). Uses ``request.entra`` when ``EntraMiddleware`` ran, else authenticates itself.
    """

    def authenticate(self, request: Request) -> tuple[Any, AuthContext] | None:
        try:
            ctx = get_context_or_authenticate(request._request)
        except ConfigurationError:
            raise
        except EntraError as exc:
            raise RefusedByEntra(exc) from None
        principal = ctx.principal
        if principal is None:
            return None  # no token: let other authenticators try; permissions answer 401 with our challenge
        sync = get_user_sync()
        return (EntraUser(principal) if sync is None else sync(principal)), ctx

    def authenticate_header(self, request: Request) -> str:
        # What the core answers a request without a token with: a bare challenge (RFC 6750 §3.1).
        return MissingToken("").www_authenticate or "Bearer"


class _EntraPermission(BasePermission):
    requirement: ClassVar[Requirement] = Requirement()

    def has_permission(self, request: Request, view: Any) -> bool:
        ctx = request.auth if isinstance(request.auth, AuthContext) else getattr(request._request, ATTRIBUTE, None)
        if not isinstance(ctx, AuthContext) or ctx.principal is None:
            return False  # DRF: 401 with the authenticate header when nobody authenticated, else 403
        try:
            self.requirement.check(ctx.principal)
        except EntraError as exc:
            raise RefusedByEntra(exc) from None
        return True


def HasScopes(
    *, scopes: Sequence[str] = (), roles: Sequence[str] = (), tenants: Sequence[str] | None = None
) -> type[BasePermission]:
    """A DRF permission class: the caller's token must have one of ``scopes`` (delegated) or one of ``roles``
    (app roles); neither given means any valid entra_mw token. A token without them gets 403
    ``insufficient_scope`` with ``scope="..."`` in the challenge, raised by the permission itself (DRF's own
    403 carries no challenge); no token gets 401. With DRF's ``|``, put it last (``IsAdminUser | HasScopes(...)``):
    its refusal ends the check.

    ::

        permission_classes = [HasScopes(scopes=["Weather.Read"], roles=["Weather.Read.All"])]
    """
    requirement = Requirement(scopes=scopes, roles=roles, tenants=tenants)
    label = ",".join((*requirement.scopes, *requirement.roles)) or "authenticated"
    return type(f"HasScopes[{label}]", (_EntraPermission,), {"requirement": requirement, "__module__": __name__})
