"""The OpenAPI 3.1 description served at ``/openapi/v1.json`` in Development (spec §1.2, §1.8): the same operation
names, parameters and response shapes as the official sidecar."""

from __future__ import annotations

from typing import Any

from .._version import __version__

__all__ = ["openapi_document"]

_OVERRIDE_KEYS = (
    ("optionsOverride.Scopes", "array", "Scopes to request instead of the configured ones (repeatable)."),
    ("optionsOverride.RequestAppToken", "boolean", "true: an app token (merged only when true)."),
    ("optionsOverride.BaseUrl", "string", "Ignored: the base URL is never overridable."),
    ("optionsOverride.RelativePath", "string", "Path under the API's base URL."),
    ("optionsOverride.HttpMethod", "string", "Outbound HTTP method."),
    ("optionsOverride.AcceptHeader", "string", "Outbound Accept header."),
    ("optionsOverride.ContentType", "string", "Accepted; the proxied body keeps the caller's media type."),
    ("optionsOverride.AcquireTokenOptions.Tenant", "string", "Tenant to request the token in."),
    ("optionsOverride.AcquireTokenOptions.ForceRefresh", "boolean", "Bypass the token cache."),
    ("optionsOverride.AcquireTokenOptions.Claims", "string", "A claims challenge (JSON)."),
    ("optionsOverride.AcquireTokenOptions.CorrelationId", "string", "A GUID logged with the request."),
    ("optionsOverride.AcquireTokenOptions.FmiPath", "string", "Not supported (400)."),
    ("optionsOverride.AcquireTokenOptions.LongRunningWebApiSessionKey", "string", "Not supported (400)."),
    ("optionsOverride.AcquireTokenOptions.PopPublicKey", "string", "Not supported (400)."),
    ("optionsOverride.AcquireTokenOptions.ManagedIdentity.UserAssignedClientId", "string", "Not supported (400)."),
    ("optionsOverride.ExtraHeaderParameters.{name}", "string", "A header added to the downstream request."),
    ("optionsOverride.ExtraQueryParameters.{name}", "string", "A query parameter added to the downstream URL."),
)


def _query(name: str, kind: str, description: str) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": kind}
    if kind == "array":
        schema["items"] = {"type": "string"}
    return {"name": name, "in": "query", "required": False, "description": description, "schema": schema}


def _parameters() -> list[dict[str, Any]]:
    params: list[dict[str, Any]] = [
        {"name": "apiName", "in": "path", "required": True, "schema": {"type": "string"}},
        _query("AgentIdentity", "string", "The agent identity's client id."),
        _query("AgentUsername", "string", "The agent user's UPN (needs AgentIdentity)."),
        _query("AgentUserId", "string", "The agent user's object id, a GUID (needs AgentIdentity)."),
    ]
    params.extend(_query(*key) for key in _OVERRIDE_KEYS)
    return params


def _ok(schema: str) -> dict[str, Any]:
    return {
        "description": "OK",
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}},
    }


def _problem(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/ProblemDetails"}}},
    }


def _operation(name: str, result: str, *, secured: bool) -> dict[str, Any]:
    op: dict[str, Any] = {
        "operationId": name,
        "parameters": _parameters(),
        "responses": {
            "200": _ok(result),
            "400": _problem("Bad request"),
            "401": _problem("Unauthorized"),
            "500": _problem("Unexpected error"),
        },
    }
    if secured:
        op["security"] = [{"Bearer": []}]
    return op


def openapi_document() -> dict[str, Any]:
    strings = {"type": "array", "items": {"type": "string"}}
    return {
        "openapi": "3.1.1",
        "info": {"title": "entra-mw sidecar", "version": __version__},
        "paths": {
            "/Validate": {
                "get": {
                    "operationId": "ValidateAuthorizationHeader",
                    "security": [{"Bearer": []}],
                    "responses": {"200": _ok("ValidateAuthorizationHeaderResult"), "400": _problem("Bad request")},
                }
            },
            "/AuthorizationHeader/{apiName}": {
                "get": _operation("AuthorizationHeader", "AuthorizationHeaderResult", secured=True)
            },
            "/AuthorizationHeaderUnauthenticated/{apiName}": {
                "get": _operation("AuthorizationHeaderUnauthenticated", "AuthorizationHeaderResult", secured=False)
            },
            "/DownstreamApi/{apiName}": {"post": _operation("DownstreamApi", "DownstreamApiResult", secured=True)},
            "/DownstreamApiUnauthenticated/{apiName}": {
                "post": _operation("DownstreamApiUnauthenticated", "DownstreamApiResult", secured=False)
            },
        },
        "components": {
            "securitySchemes": {"Bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
            "schemas": {
                "AuthorizationHeaderResult": {
                    "type": "object",
                    "properties": {"authorizationHeader": {"type": "string"}},
                    "required": ["authorizationHeader"],
                },
                "DownstreamApiResult": {
                    "type": "object",
                    "properties": {
                        "statusCode": {"type": "integer", "format": "int32"},
                        "headers": {"type": "object", "additionalProperties": strings},
                        "content": {"type": ["string", "null"]},
                    },
                    "required": ["statusCode", "headers", "content"],
                },
                "ValidateAuthorizationHeaderResult": {
                    "type": "object",
                    "properties": {
                        "protocol": {"type": "string"},
                        "token": {"type": "string"},
                        "claims": {"type": "object"},
                    },
                    "required": ["protocol", "token", "claims"],
                },
                "ProblemDetails": {
                    "type": "object",
                    "properties": {
                        "type": {"type": ["string", "null"]},
                        "title": {"type": ["string", "null"]},
                        "status": {"type": ["integer", "null"], "format": "int32"},
                        "detail": {"type": ["string", "null"]},
                        "instance": {"type": ["string", "null"]},
                    },
                },
            },
        },
    }
