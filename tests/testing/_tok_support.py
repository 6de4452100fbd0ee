"""Token-endpoint test helpers: raw form posts, assertion builders and a tiny MSAL ``http_client``."""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Mapping
from typing import Any

import httpx2
import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from entra_mw.testing import FakeEntra, Scenario

AUTHORITY_HOST = "login.microsoftonline.com"
EXCHANGE_SCOPE = "api://AzureADTokenExchange/.default"


def token_url(tenant: str, *, v1: bool = False, host: str = AUTHORITY_HOST) -> str:
    return f"https://{host}/{tenant}/oauth2/token" if v1 else f"https://{host}/{tenant}/oauth2/v2.0/token"


def post(
    fake: FakeEntra,
    tenant: str,
    data: Mapping[str, str] | None = None,
    *,
    headers: Mapping[str, str] | None = None,
    content: bytes | None = None,
    v1: bool = False,
    params: Mapping[str, str] | None = None,
) -> httpx2.Response:
    with httpx2.Client(transport=fake.transport) as client:
        if content is not None:
            return client.post(token_url(tenant, v1=v1), content=content, headers=headers, params=params)
        return client.post(token_url(tenant, v1=v1), data=dict(data or {}), headers=headers, params=params)


def claims_of(token: str) -> dict[str, Any]:
    """Unverified claims (tests only look at what they were given)."""
    out: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
    return out


def error_of(response: httpx2.Response) -> tuple[int, str, int]:
    body = response.json()
    return response.status_code, body["error"], body["error_codes"][0]


def t1(fake: FakeEntra, s: Scenario, agent_id: str | None = None) -> str:
    response = post(
        fake,
        s.tenant.tenant_id,
        {
            "grant_type": "client_credentials",
            "client_id": s.blueprint.app_id,
            "client_secret": s.blueprint_secret,
            "scope": EXCHANGE_SCOPE,
            "fmi_path": agent_id or s.agent.app_id,
        },
    )
    assert response.status_code == 200, response.text
    token: str = response.json()["access_token"]
    return token


def agent_form(fake: FakeEntra, s: Scenario, **extra: str) -> dict[str, str]:
    form = {
        "client_id": s.agent.app_id,
        "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        "client_assertion": t1(fake, s),
    }
    form.update(extra)
    return form


def t2(fake: FakeEntra, s: Scenario) -> str:
    response = post(
        fake,
        s.tenant.tenant_id,
        agent_form(fake, s, grant_type="client_credentials", scope=EXCHANGE_SCOPE),
    )
    assert response.status_code == 200, response.text
    token: str = response.json()["access_token"]
    return token


def cert_assertion(
    private_pem: bytes,
    cert_pem: bytes,
    *,
    client_id: str,
    audience: str,
    alg: str = "PS256",
    header_kind: str = "x5t#S256",
    now: float | None = None,
    lifetime: int = 600,
    issuer: str | None = None,
) -> str:
    """A client assertion as MSAL builds it (msal/oauth2cli/assertion.py)."""
    cert = x509.load_pem_x509_certificate(cert_pem)
    der = cert.public_bytes(serialization.Encoding.DER)
    headers: dict[str, Any] = {}
    if header_kind == "x5t#S256":
        headers["x5t#S256"] = base64.urlsafe_b64encode(cert.fingerprint(hashes.SHA256())).decode()
    elif header_kind == "x5t":
        headers["x5t"] = base64.urlsafe_b64encode(cert.fingerprint(hashes.SHA1())).decode()
    elif header_kind == "x5c":
        headers["x5c"] = [base64.b64encode(der).decode()]
    issued = time.time() if now is None else now
    payload = {
        "aud": audience,
        "iss": issuer or client_id,
        "sub": issuer or client_id,
        "exp": int(issued) + lifetime,
        "iat": int(issued),
        "jti": str(uuid.uuid4()),
    }
    return jwt.encode(payload, private_pem, algorithm=alg, headers=headers)


class MsalHttp:
    """MSAL's ``http_client`` contract: ``get``/``post`` answering status_code, text, headers."""

    def __init__(self, client: httpx2.Client) -> None:
        self.client = client
        self.posts: list[dict[str, Any]] = []

    def get(self, url: str, params: Any = None, headers: Any = None, **kwargs: Any) -> httpx2.Response:
        return self.client.get(url, params=params, headers=headers)

    def post(
        self, url: str, params: Any = None, data: Any = None, headers: Any = None, **kwargs: Any
    ) -> httpx2.Response:
        # MSAL hands certificate assertions over as bytes (oauth2cli/assertion.py ``_str2bytes``); requests
        # form-encodes bytes as their text, whereas httpx would send ``str(b"...")``.
        form = {k: v.decode() if isinstance(v, bytes) else v for k, v in dict(data or {}).items()}
        self.posts.append({"url": url, "data": form, "headers": dict(headers or {})})
        return self.client.post(url, params=params, data=form, headers=headers)

    def close(self) -> None:
        self.client.close()


def dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))
