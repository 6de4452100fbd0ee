"""When no signing keys can be had, every adapter answers 503 with ``Retry-After`` (not 401: the token is not at
fault, and not 500); and tokens naming unknown keys cannot make the engine fetch the key set more than once per
cooldown, whichever adapter they arrive through."""

from __future__ import annotations

import uuid

import pytest

from entra_mw.testing import FakeClock

from ._adapters import ADAPTERS, Adapters, World
from ._rules import check_reply, token_parts

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]


@pytest.mark.parametrize("fault", ["outage", "empty-key-set", "garbage"])
async def test_no_keys_is_503_everywhere(world: World, fault: str) -> None:
    token = world.user_token("Tools.Use")
    if fault == "outage":
        world.fake.faults.outage("jwks")
    elif fault == "empty-key-set":
        world.fake.faults.set("jwks", status=200, body=b'{"keys": []}')
    else:
        world.fake.faults.set("jwks", status=200, body=b"\xff{not json")
    adapters = Adapters(world)
    header = [(b"authorization", b"Bearer " + token.encode())]
    assert world.verdict(header[0][1]) == 503
    statuses = {}
    async with adapters.running():
        for adapter in ADAPTERS:
            reply = await adapters.send(adapter, header)
            check_reply(adapter, reply, token_parts(token))
            statuses[adapter] = reply.status
    assert statuses == dict.fromkeys(ADAPTERS, 503)


async def test_unknown_kids_cannot_drive_key_fetches(world: World, fake_clock: FakeClock) -> None:
    claims = world.claims()
    adapters = Adapters(world)
    async with adapters.running():
        # Warm up: the first request fetches metadata and keys.
        good = b"Bearer " + world.user_token("Tools.Use").encode()
        for adapter in ADAPTERS:
            assert (await adapters.send(adapter, [(b"authorization", good)])).status == 200
        before = world.fake.request_count("jwks")
        for round_ in range(3):
            for adapter in ADAPTERS:
                for _ in range(5):
                    kid = str(uuid.uuid4())
                    forged = world.fake.mint_raw({"typ": "JWT", "alg": "RS256", "kid": kid}, claims)
                    reply = await adapters.send(adapter, [(b"authorization", b"Bearer " + forged.encode())])
                    assert reply.status == 401, (adapter, reply.status)
            fetched = world.fake.request_count("jwks") - before
            # At most one refresh per cooldown (DESIGN §5: 5 min by default) per engine, whatever the number of
            # kids: three engines here (the sidecar's, for its AzureAd:Scopes setting, and Django's, built from
            # its settings, beside the one the others share).
            assert fetched <= 3 * (round_ + 1), fetched
            fake_clock.advance(world.config().jwks_refresh_cooldown + 1)
        # Good tokens still pass after the storm.
        for adapter in ADAPTERS:
            good = b"Bearer " + world.user_token("Tools.Use").encode()
            assert (await adapters.send(adapter, [(b"authorization", good)])).status == 200, adapter
