"""A token cache that records every request and mints opaque tokens without calling Entra.

It is injected through ``EntraAuth(config, token_cache=...)`` so the URL, header and response-handling tests
of ``Downstream`` need no token endpoint; the flows themselves are tested end to end against FakeEntra.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Awaitable, Callable
from typing import Any, cast

from entra_mw import DownstreamApi, EntraAuth, EntraConfig, Principal
from entra_mw._acquisition._types import AccessToken, TokenRequest
from entra_mw.credentials import ClientSecret

TENANT = "11111111-2222-3333-4444-555555555555"
OTHER_TENANT = "99999999-8888-7777-6666-555555555555"
CLIENT = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"
AGENT = "a9e1a9e1-0000-4000-8000-000000000001"
USER_OID = "0b0b0b0b-1111-4222-8333-444444444444"
CALLER_TID = "33333333-4444-4555-8666-777777777777"


class RecordingCache:
    def __init__(self) -> None:
        self.requests: list[TokenRequest] = []

    def _mint(self, req: TokenRequest) -> AccessToken:
        self.requests.append(req)
        return AccessToken(token=f"downstream-token-{len(self.requests)}", expires_on=4_000_000_000.0)

    def peek(self, key: str) -> AccessToken | None:
        return None  # never a hit: every request reaches get_or_fetch and is recorded

    def get_or_fetch(self, req: TokenRequest, fetch: Callable[[TokenRequest], AccessToken]) -> AccessToken:
        return self._mint(req)

    async def aget_or_fetch(
        self, req: TokenRequest, afetch: Callable[[TokenRequest], Awaitable[AccessToken]]
    ) -> AccessToken:
        return self._mint(req)

    def close(self) -> None:
        pass

    async def aclose(self) -> None:
        pass


def make_auth(
    apis: dict[str, DownstreamApi],
    cache: RecordingCache,
    *,
    transport: Any = None,
    tenant_id: str = TENANT,
) -> EntraAuth:
    config = EntraConfig(
        tenant_id=tenant_id, client_id=CLIENT, credentials=(ClientSecret("s3cr3t"),), downstream_apis=apis
    )
    return EntraAuth(config, transport=transport, async_transport=transport, token_cache=cast("Any", cache))


def jwt(claims: dict[str, Any], signature: str = "c2ln") -> str:
    """An unsigned JWS-shaped token carrying ``claims`` (``Downstream`` reads a caller token's claims; a cache
    in front of it never verifies a signature)."""

    def part(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'RS256', 'typ': 'JWT'})}.{part(claims)}.{signature}"


def caller_pair(
    n: int = 1, *, oid: str = USER_OID, tid: str = CALLER_TID, exp: float = 4_000_000_000.0
) -> tuple[Principal, str]:
    """Caller number ``n``: a token and the ``Principal`` validated from it."""
    claims = {"oid": oid, "sub": f"sub-{oid}", "tid": tid, "scp": "access_as_user", "exp": exp, "uti": f"uti-{n}"}
    return Principal(claims), jwt(claims)
