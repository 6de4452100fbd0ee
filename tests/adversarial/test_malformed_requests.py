"""Malformed requests in process, through every adapter: odd schemes, whitespace, duplicate and folded headers,
huge values, bytes outside ASCII, ``access_token`` in the query however encoded — then whatever Hypothesis makes
of the ``Authorization`` value and the query string. Every adapter must answer what the core decides (400 for a
malformed request, 401 with a bare challenge for a missing token), and keep the rules."""

from __future__ import annotations

import logging

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ._adapters import ADAPTERS, PATHS, WSGI_ADAPTERS, Adapters, Headers, World, call_wsgi, folded
from ._rules import check_reply, token_parts

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(120)]


def _cases(token: str) -> list[tuple[str, Headers, bytes]]:
    t = token.encode()
    auth = b"authorization"
    return [
        ("no header", [], b""),
        ("empty value", [(auth, b"")], b""),
        ("scheme only", [(auth, b"Bearer")], b""),
        ("scheme and space", [(auth, b"Bearer ")], b""),
        ("lower-case scheme", [(auth, b"bearer " + t)], b""),
        ("upper-case scheme", [(auth, b"BEARER " + t)], b""),
        ("tab after the scheme", [(auth, b"Bearer\t" + t)], b""),
        ("two spaces", [(auth, b"Bearer  " + t)], b""),
        ("trailing space", [(auth, b"Bearer " + t + b" ")], b""),
        ("leading space", [(auth, b" Bearer " + t)], b""),
        ("tab inside the token", [(auth, b"Bearer " + t[:10] + b"\t" + t[10:])], b""),
        ("Basic", [(auth, b"Basic dXNlcjpwYXNz")], b""),
        ("Negotiate", [(auth, b"Negotiate " + t)], b""),
        ("DPoP", [(auth, b"DPoP " + t)], b""),
        ("Bearer-like scheme", [(auth, b"Bearerx " + t)], b""),
        ("scheme with NUL", [(auth, b"Bear\x00er " + t)], b""),
        ("token with NUL", [(auth, b"Bearer " + t + b"\x00")], b""),
        ("token in quotes", [(auth, b'Bearer "' + t + b'"')], b""),
        ("folded into one value", [(auth, b"Bearer " + t + b", Bearer " + t)], b""),
        ("folded without space", [(auth, b"Bearer " + t + b",Bearer " + t)], b""),
        ("Basic folded with Bearer", [(auth, b"Basic dXNlcjpwYXNz, Bearer " + t)], b""),
        ("two headers, same token", [(auth, b"Bearer " + t), (auth, b"Bearer " + t)], b""),
        ("two headers, one empty", [(auth, b"Bearer " + t), (auth, b"")], b""),
        ("100 headers", [(auth, b"Bearer " + t)] * 100, b""),
        ("mixed-case header name", [(b"AUTHORIZATION", b"Bearer " + t)], b""),
        ("huge value", [(auth, b"Bearer " + b"A" * 200_000)], b""),
        ("bytes above 0x7f", [(auth, b"Bearer " + t[:20] + bytes(range(0x80, 0x100)))], b""),
        ("UTF-8 in the token", [(auth, "Bearer ťøķęñ".encode())], b""),
        ("CR LF in the value", [(auth, b"Bearer " + t + b"\r\nX-Evil: 1")], b""),
        ("query token alone", [], b"access_token=" + t),
        ("query token and header", [(auth, b"Bearer " + t)], b"access_token=" + t),
        ("query token, escaped underscore", [], b"access%5Ftoken=" + t),
        ("query token, escaped letter", [(auth, b"Bearer " + t)], b"%61ccess_token=x"),
        ("query token, no value", [(auth, b"Bearer " + t)], b"a=1&access_token"),
        ("query token, empty value", [(auth, b"Bearer " + t)], b"access_token="),
        ("query token, plus-encoded", [(auth, b"Bearer " + t)], b"x=1&access_token=a+b"),
        ("query token, bad escape", [(auth, b"Bearer " + t)], b"%ZZaccess_token=1&%"),
        ("query with bytes above 0x7f", [(auth, b"Bearer " + t)], b"q=\xff\xfe&access\xff=1"),
        ("query name upper-case", [(auth, b"Bearer " + t)], b"ACCESS_TOKEN=x"),
    ]


def _expected(world: World, adapter: str, headers: Headers, query: bytes) -> int:
    """The core's verdict on what ``adapter`` can hand it — or the framework's own 400 for a request it will not
    parse: Django's ASGI handler refuses a query string that is not UTF-8 before any middleware runs."""
    if adapter == "django-asgi":
        try:
            query.decode("utf-8")
        except UnicodeDecodeError:
            return 400
    return world.verdict(_core_view(adapter, headers), query)


def _core_view(adapter: str, headers: Headers) -> bytes | list[bytes] | None:
    """What the adapter can hand the core: every value (ASGI), or the server's folded value (WSGI, PEP 3333)."""
    if adapter in WSGI_ADAPTERS:
        return folded(headers)
    values = [v for k, v in headers if k.lower() == b"authorization"]
    if not values:
        return None
    return values[0] if len(values) == 1 else values


async def test_malformed_requests_through_every_adapter(world: World, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    token = world.user_token("Tools.Use")
    adapters = Adapters(world)
    mismatches: list[str] = []
    async with adapters.running():
        for name, headers, query in _cases(token):
            for adapter in ADAPTERS:
                expected = _expected(world, adapter, headers, query)
                reply = await adapters.send(adapter, headers, query)
                check_reply(adapter, reply, token_parts(token))
                if reply.status != expected:
                    mismatches.append(f"{adapter}: {name}: {reply.status} (core {expected})")
    assert not mismatches, "\n".join(mismatches)
    logged = "\n".join(r.getMessage() for r in caplog.records)
    for part in token_parts(token):
        assert part not in logged


_SETTINGS = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)
_values = st.one_of(
    st.binary(max_size=64),
    st.builds(lambda s, b: s + b, st.sampled_from([b"Bearer ", b"bearer\t", b"Basic ", b"Bearer", b""]), st.binary()),
    st.from_regex(rb"\A[Bb]earer[ \t]{0,2}[A-Za-z0-9._~+/=, -]{0,40}\Z"),
)
_queries = st.one_of(st.binary(max_size=40), st.from_regex(rb"\A[a-z_%0-9=&]{0,30}\Z"))


async def test_any_authorization_and_query(world: World) -> None:
    adapters = Adapters(world)
    seen: list[tuple[list[bytes], bytes]] = []

    @_SETTINGS
    @given(st.lists(_values, max_size=3), _queries)
    def collect(values: list[bytes], query: bytes) -> None:
        seen.append((values, query))

    collect()
    mismatches: list[str] = []
    async with adapters.running():
        for values, query in seen:
            headers = [(b"authorization", v) for v in values]
            for adapter in ADAPTERS:
                expected = _expected(world, adapter, headers, query)
                reply = await adapters.send(adapter, headers, query)
                check_reply(adapter, reply)
                if reply.status != expected:
                    mismatches.append(f"{adapter}: {values!r} {query!r}: {reply.status} (core {expected})")
    assert not mismatches, "\n".join(mismatches[:30])


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("Bearer ĀĀĀĀ", id="above-latin-1"),
        pytest.param("Bearer abc\udcff\udcfe", id="surrogate-escaped"),
        pytest.param("Bearer 令牌", id="cjk"),
    ],
)
async def test_wsgi_servers_that_decode_headers_beyond_latin_1(world: World, value: str) -> None:
    """PEP 3333 says latin-1, but some servers hand over text decoded otherwise (UTF-8, surrogateescape): such a
    value is malformed, never a crash."""
    adapters = Adapters(world)
    async with adapters.running():
        for adapter in WSGI_ADAPTERS:
            extra = {"HTTP_AUTHORIZATION": value}
            reply = call_wsgi(adapters.wsgi[adapter], PATHS[adapter], environ_extra=extra)
            check_reply(adapter, reply)
            assert reply.status == 400, (adapter, reply.status, reply.body[:200])
