"""Token requests and a token-minting fetch for the ``TokenCache`` tests (no Entra involved)."""

from __future__ import annotations

import anyio

from entra_mw._acquisition._types import AccessToken, TokenRequest
from entra_mw.testing import FakeClock

TENANT = "aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"
CLIENT = "11111111-2222-3333-4444-555555555555"


def app_request(scope: str = "api://downstream/.default", **kw: object) -> TokenRequest:
    return TokenRequest(flow="app", scopes=(scope,), client_id=CLIENT, tenant=TENANT, **kw)  # type: ignore[arg-type]


def obo_request(assertion: str = "user-1", **kw: object) -> TokenRequest:
    return TokenRequest(
        flow="obo",
        scopes=("api://downstream/read",),
        client_id=CLIENT,
        tenant=TENANT,
        user_assertion=assertion,
        **kw,  # type: ignore[arg-type]
    )


class Fetcher:
    """Mints ``secret-token-<n>`` on ``clock`` (``n`` counts calls): ``lifetime`` seconds, optional
    ``refresh_in``; raises ``error`` when set."""

    def __init__(self, clock: FakeClock, *, lifetime: float = 3600, refresh_in: float | None = None) -> None:
        self.clock = clock
        self.lifetime = lifetime
        self.refresh_in = refresh_in
        self.calls = 0
        self.error: Exception | None = None

    def __call__(self, req: TokenRequest) -> AccessToken:
        self.calls += 1
        if self.error is not None:
            raise self.error
        now = self.clock.time()
        return AccessToken(
            token=f"secret-token-{self.calls}",
            expires_on=now + self.lifetime,
            refresh_on=None if self.refresh_in is None else now + self.refresh_in,
            scopes=req.scopes,
            tenant=req.tenant,
        )

    async def afetch(self, req: TokenRequest) -> AccessToken:
        await anyio.lowlevel.checkpoint()
        return self(req)
