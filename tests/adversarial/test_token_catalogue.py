"""Each attack token of the catalogue, sent as ``Authorization: Bearer <token>`` to every adapter: the verdict is
the core's (the same through every adapter), each answer keeps the rules, and neither the answer nor any log
record carries the token."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ._adapters import ADAPTERS, Adapters, World
from ._catalogue import catalogue
from ._catalogue import expected as allowed
from ._rules import check_reply, token_parts

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(120)]


async def test_every_adapter_gives_the_cores_verdict(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    adapters = Adapters(world)
    tokens = catalogue(world)
    mismatches: list[str] = []
    async with adapters.running():
        for name, token in tokens:
            header = f"Bearer {token}".encode("latin-1")
            expected = world.verdict(header)
            if expected not in allowed(name):
                mismatches.append(f"core: {name}: {expected}")
            for adapter in ADAPTERS:
                reply = await adapters.send(adapter, [(b"authorization", header)])
                check_reply(adapter, reply, token_parts(token))
                if reply.status != expected:
                    mismatches.append(f"{adapter}: {name}: {reply.status} (core {expected})")
    assert not mismatches, "\n".join(mismatches)
    logged = "\n".join(r.getMessage() for r in caplog.records)
    for name, token in tokens:
        for part in token_parts(token):
            assert part not in logged, name


_SETTINGS = settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)
# Bytes a token may legally hold (RFC 6750 b64token) plus a few that it may not.
_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~+/= \t,\"é"


async def test_mutated_tokens_get_one_verdict(world: World, caplog: pytest.LogCaptureFixture) -> None:
    """A valid token with characters replaced, inserted or deleted anywhere: every adapter gives the core's
    verdict and nothing leaks."""
    caplog.set_level(logging.DEBUG)
    token = world.user_token("Tools.Use")
    mutated: list[str] = []

    @_SETTINGS
    @given(
        st.lists(
            st.tuples(
                st.sampled_from(["replace", "insert", "delete"]),
                st.integers(0, len(token) - 1),
                st.sampled_from(_ALPHABET),
            ),
            min_size=1,
            max_size=3,
        )
    )
    def collect(edits: list[tuple[str, int, str]]) -> None:
        out = token
        for kind, position, char in edits:
            at = min(position, len(out) - 1)
            if kind == "replace":
                out = out[:at] + char + out[at + 1 :]
            elif kind == "insert":
                out = out[:at] + char + out[at:]
            elif len(out) > 1:
                out = out[:at] + out[at + 1 :]
        mutated.append(out)

    collect()
    adapters = Adapters(world)
    mismatches: list[str] = []
    async with adapters.running():
        for candidate in mutated:
            header = f"Bearer {candidate}".encode("latin-1")
            expected = world.verdict(header)
            for adapter in ADAPTERS:
                reply = await adapters.send(adapter, [(b"authorization", header)])
                check_reply(adapter, reply, token_parts(candidate) if expected != 200 else ())
                if reply.status != expected:
                    mismatches.append(f"{adapter}: {candidate!r}: {reply.status} (core {expected})")
    assert not mismatches, "\n".join(mismatches[:20])
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert token not in logged
    for candidate in mutated:
        assert candidate not in logged


_ODD_VALUES: list[Any] = [123, 1.5, True, None, [], ["a"], {"a": 1}, "", "x" * 3000, "令牌"]
_OTHER_CLAIMS = ["sub", "oid", "azp", "appid", "name", "preferred_username", "idtyp", "xms_par_app_azp", "uti"]


async def test_validly_signed_tokens_with_odd_claim_types(world: World) -> None:
    """Claims the core does not decide on, with any JSON type: still one verdict everywhere (the MCP SDK's
    ``AccessToken`` and DRF's user are built from them), never a 500."""
    claims = world.claims()
    header = {"typ": "JWT", "alg": "RS256", "kid": world.fake.current_kid}
    adapters = Adapters(world)
    mismatches: list[str] = []
    async with adapters.running():
        for name in _OTHER_CLAIMS:
            for value in _ODD_VALUES:
                body = {k: v for k, v in claims.items() if k != name}
                if value is not None:
                    body[name] = value
                token = world.fake.mint_raw(header, body)
                value_header = f"Bearer {token}".encode()
                expected = world.verdict(value_header)
                for adapter in ADAPTERS:
                    reply = await adapters.send(adapter, [(b"authorization", value_header)])
                    check_reply(adapter, reply)
                    if reply.status != expected:
                        mismatches.append(f"{adapter}: {name}={value!r:.30}: {reply.status} (core {expected})")
    assert not mismatches, "\n".join(mismatches[:20])
