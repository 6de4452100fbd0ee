"""FakeEntra's managed-identity endpoint, as App Service, Azure Functions and Container Apps expose it.

``GET {IDENTITY_ENDPOINT}?api-version=2019-08-01&resource={resource}`` with the header
``X-IDENTITY-HEADER: {IDENTITY_HEADER}`` (ED app-service managed-identity REST reference; what MSAL's
``ManagedIdentityClient`` and azure-identity's ``ManagedIdentityCredential`` send when both variables are set).
A user-assigned identity is chosen with ``client_id``, ``principal_id`` (MSAL sends ``object_id``) or
``mi_res_id``; with none of them the host's system-assigned identity answers.

The answer::

    {"access_token": "...", "expires_on": "1586984735", "resource": "...", "token_type": "Bearer",
     "client_id": "..."}

Errors are ``{"statusCode": n, "message": "..."}`` with that status, as the platform's token service sends them.
The token is the identity's app-only token for ``resource``; for ``api://AzureADTokenExchange`` it is the
federated assertion that apps trusting the identity accept (:meth:`FakeEntra.trust_managed_identity`).
"""

from __future__ import annotations

import hmac
import json
from typing import TYPE_CHECKING, Final

import httpx2

from ._mint import EXCHANGE_AUDIENCE
from ._registry import App

if TYPE_CHECKING:
    from ._fake import FakeEntra

__all__ = ["API_VERSION", "IDENTITY_HEADER", "MANAGED_IDENTITY_PATH", "handle_managed_identity"]

API_VERSION: Final = "2019-08-01"
IDENTITY_HEADER: Final = "X-IDENTITY-HEADER"
MANAGED_IDENTITY_PATH: Final = "msi/token"


def _answer(status: int, payload: object) -> httpx2.Response:
    return httpx2.Response(
        status,
        headers={"Content-Type": "application/json; charset=utf-8", "Cache-Control": "no-store"},
        content=json.dumps(payload).encode(),
    )


def _error(status: int, message: str) -> httpx2.Response:
    return _answer(status, {"statusCode": status, "message": message})


def _identity(fake: FakeEntra, params: httpx2.QueryParams) -> App | httpx2.Response:
    given = {
        name: value for name in ("client_id", "principal_id", "object_id", "mi_res_id") if (value := params.get(name))
    }
    if len(given) > 1:
        return _error(400, "Only one of client_id, principal_id (object_id) and mi_res_id may be given.")
    identities = [a for a in fake.registry.apps.values() if a.is_managed_identity]
    if not given:
        found = next((a for a in identities if a.system_assigned), None)
        if found is None:
            return _error(400, "No system-assigned managed identity is enabled on this host.")
        return found
    name, value = next(iter(given.items()))
    low = value.lower()
    for identity in identities:
        if identity.system_assigned:
            continue
        if name == "client_id" and identity.app_id == low:
            return identity
        if name in ("principal_id", "object_id") and identity.sp_object_id.lower() == low:
            return identity
        if name == "mi_res_id" and identity.mi_resource_id and identity.mi_resource_id.lower() == low:
            return identity
    return _error(400, f"No user-assigned managed identity with {name} '{value[:200]}' is assigned to this host.")


def handle_managed_identity(fake: FakeEntra, request: httpx2.Request) -> httpx2.Response:
    """Answer one managed-identity token request (see the module docstring)."""
    if request.method != "GET":
        return _error(405, f"{request.method[:16]} is not allowed; use GET.")
    header = request.headers.get(IDENTITY_HEADER, "")
    if not header or not hmac.compare_digest(header.encode(), fake.identity_header.encode()):
        # Only code on the host (which can read IDENTITY_HEADER) may ask; a forged request from elsewhere fails.
        return _error(401, f"The {IDENTITY_HEADER} header is missing or does not match IDENTITY_HEADER.")
    params = request.url.params
    version = params.get("api-version")
    if version != API_VERSION:
        return _error(400, f"api-version '{(version or '')[:20]}' is not supported; use {API_VERSION}.")
    resource = params.get("resource") or ""
    if not resource or len(resource) > 1000:
        return _error(400, "The 'resource' parameter is required.")
    with fake.lock:
        identity = _identity(fake, params)
        if isinstance(identity, httpx2.Response):
            return identity
        target = resource.rstrip("/")
        if target.lower().endswith("/.default"):
            target = target[: -len("/.default")]
        if target.lower() in ("https://graph.microsoft.com", "00000003-0000-0000-c000-000000000000"):
            fake.microsoft_graph()
        if target.lower() != EXCHANGE_AUDIENCE.lower() and fake.registry.app_by_identifier(target) is None:
            return _error(
                400,
                f"AADSTS500011: The resource principal named {target[:200]} was not found in the tenant named "
                f"{identity.tenant_id}.",
            )
        token = fake.app_token(identity, resource=target)
        exp = int(fake.decode(token)["exp"])
    return _answer(
        200,
        {
            "access_token": token,
            "expires_on": str(exp),
            "resource": resource,
            "token_type": "Bearer",
            "client_id": identity.app_id,
        },
    )
