"""Inputs of ``Downstream`` that must become a library error with a status before any token is asked for:
non-ASCII header values, NaN in ``json=``, lone surrogates, reserved proxy and App Service headers, agent-user
names that only look alike; secrets kept out of reprs and error text; the overall deadline of a call."""

from __future__ import annotations

import math
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anyio
import httpx2
import pytest

from entra_mw import ConfigurationError, DownstreamApi, EntraConfig, EntraError
from entra_mw._acquisition._types import TokenRequest
from entra_mw._downstream import DownstreamCallError, DownstreamRequestError, is_reserved_header

from ._recording import AGENT, RecordingCache, make_auth

BASE = "https://api.example.com/v1/"


def recorder(seen: list[httpx2.Request]) -> Any:
    def handle(request: httpx2.Request) -> httpx2.Response:
        seen.append(request)
        return httpx2.Response(200)

    return handle


def engine(handler: Any = None, cache: RecordingCache | None = None, **options: Any) -> Any:
    settings: dict[str, Any] = {"base_url": BASE, "scopes": ("api://weather/.default",), "request_app_token": True}
    settings.update(options)
    transport = httpx2.MockTransport(handler or (lambda request: httpx2.Response(200, json={"ok": True})))
    return make_auth({"weather": DownstreamApi(**settings)}, cache or RecordingCache(), transport=transport)


# -- item 9: every input is checked before a token is asked for --------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"headers": {"X-Name": "Zoë"}},
        {"headers": {"X-Name": "\u2028"}},
        {"json": {"value": math.nan}},
        {"json": {"value": math.inf}},
        {"json": [float("-inf")]},
        {"json": {"text": "\ud800"}},
        {"json": {1j: "complex keys are not JSON"}},
        {"content": "lone \udc80 surrogate"},
        {"params": {"q": "\ud800"}},
        {"headers": {"X-Name\n": "v"}},
    ],
)
def test_bad_inputs_are_400_before_any_token(kwargs: dict[str, Any]) -> None:
    cache = RecordingCache()
    seen: list[httpx2.Request] = []
    auth = engine(recorder(seen), cache)
    with pytest.raises(DownstreamRequestError) as info:
        auth.downstream().call("weather", "x", **kwargs)
    assert info.value.status_code == 400
    assert cache.requests == []  # no token was acquired for a call that could never be sent
    assert seen == []


@pytest.mark.anyio
async def test_async_bad_inputs_are_400_before_any_token() -> None:
    cache = RecordingCache()
    auth = engine(cache=cache)
    for kwargs in ({"json": {"v": math.nan}}, {"headers": {"X": "é"}}, {"content": "\udfff"}):
        with pytest.raises(DownstreamRequestError):
            await auth.downstream().acall("weather", "x", **kwargs)
    assert cache.requests == []


def test_json_is_sent_compact_utf8_with_its_content_type() -> None:
    seen: list[httpx2.Request] = []
    auth = engine(recorder(seen), content_type="text/plain")
    auth.downstream().call("weather", "x", method="POST", json={"t": "é", "n": [1, 2.5]})
    (request,) = seen
    assert request.content == '{"t":"é","n":[1,2.5]}'.encode()
    assert request.headers["content-type"] == "application/json"


# -- item 14: headers proxies and App Service authentication trust -------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "Cookie",
        "cookie",
        "X-Forwarded-For",
        "X-Forwarded-Host",
        "x-forwarded-proto",
        "X-Original-URL",
        "X-Rewrite-URL",
        "X-MS-CLIENT-PRINCIPAL",
        "X-MS-CLIENT-PRINCIPAL-ID",
        "x-ms-client-principal-name",
        "X-MS-CLIENT-PRINCIPAL-IDP",
    ],
)
def test_proxy_and_app_service_headers_are_reserved(name: str) -> None:
    assert is_reserved_header(name)
    cache = RecordingCache()
    auth = engine(cache=cache)
    with pytest.raises(DownstreamRequestError) as info:
        auth.downstream().call("weather", "x", headers={name: "v"})
    assert info.value.reason == "reserved_header"
    assert cache.requests == []
    with pytest.raises(DownstreamRequestError):
        engine(extra_headers={name: "v"}).downstream().call("weather", "x")


# -- item 8: agent users are named in ASCII and GUIDs in one form -----------------------------------------------


@pytest.mark.parametrize(
    "username",
    [
        "\u212aelvin@contoso.com",  # KELVIN SIGN, which str.lower() turns into 'k'
        "kelvin@contoso.com\u200b",
        "\uff4belvin@contoso.com",  # fullwidth k
        "kelv\u0131n@contoso.com",  # dotless i
        "k\u0130lvin@contoso.com",
    ],
)
def test_non_ascii_agent_usernames_are_refused(username: str) -> None:
    with pytest.raises(DownstreamRequestError, match="ASCII"):
        engine().downstream().for_agent(AGENT, username=username)


def test_agent_usernames_fold_with_ascii_rules_only() -> None:
    cache = RecordingCache()
    auth = engine(cache=cache)
    for name in ("Kelvin@Contoso.com", "kelvin@contoso.com"):
        auth.downstream().for_agent(AGENT, username=name).authorization_header("x", scopes=["User.Read"])
    first, second = cache.requests
    assert first.cache_key() == second.cache_key()
    # A request built by hand with a look-alike never shares the key of the ASCII name.
    look_alike = TokenRequest(
        flow="agent_user",
        scopes=("User.Read",),
        client_id=first.client_id,
        tenant=first.tenant,
        agent_id=AGENT,
        username="\u212aelvin@contoso.com",
    )
    assert look_alike.cache_key() != first.cache_key()
    assert look_alike.l1_key() != first.l1_key()


@pytest.mark.parametrize(
    "guid",
    [
        "{a9e1a9e1-0000-4000-8000-000000000001}",
        "urn:uuid:a9e1a9e1-0000-4000-8000-000000000001",
        "a9e1a9e100004000800000000000000001",
        "a9e1a9e1-00004000-8000-0000-00000001",  # hyphens moved, still 36 characters
        "a9e1a9e1-0000-4000-8000-00000000000\u0661",  # an Arabic-Indic digit
    ],
)
def test_guids_must_be_in_canonical_form(guid: str) -> None:
    downstream = engine().downstream()
    with pytest.raises(DownstreamRequestError, match="GUID"):
        downstream.for_agent(guid)
    with pytest.raises(DownstreamRequestError, match="GUID"):
        downstream.for_agent(AGENT, user_id=guid)


# -- item 10: secrets stay out of reprs and error text ----------------------------------------------------------


def test_extra_header_and_query_values_are_masked_in_reprs() -> None:
    api = DownstreamApi(
        base_url=BASE,
        extra_headers={"Ocp-Apim-Subscription-Key": "sub-key-123"},
        extra_query={"code": "function-key-456"},
    )
    config = EntraConfig(
        tenant_id="contoso.onmicrosoft.com",
        client_id="11111111-2222-3333-4444-555555555555",
        downstream_apis={"fn": api},
    )
    for text in (repr(api), repr(config), str(config)):
        assert "sub-key-123" not in text
        assert "function-key-456" not in text
        assert "Ocp-Apim-Subscription-Key" in text  # the names stay: they help debugging
    assert api.extra_headers["Ocp-Apim-Subscription-Key"] == "sub-key-123"  # the values are still used


@pytest.mark.parametrize(
    "url",
    ["ftp://admin:hunter2@api.example.com/", "https://admin:hunter2@api.example.com/", "ws://admin:hunter2@x/"],
)
def test_base_url_credentials_are_not_repeated_in_errors(url: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        DownstreamApi(base_url=url)
    assert "hunter2" not in str(info.value)
    assert "admin" not in str(info.value)


def test_instance_credentials_are_not_repeated_in_errors() -> None:
    with pytest.raises(ConfigurationError) as info:
        EntraConfig(tenant_id="contoso.onmicrosoft.com", client_id="c", instance="ftp://admin:hunter2@login.example/")
    assert "hunter2" not in str(info.value)


# -- item 7: one deadline for the whole call ---------------------------------------------------------------------


def drip_forever() -> Iterator[bytes]:
    while True:
        time.sleep(0.05)
        yield b"x"


async def adrip_forever() -> AsyncIterator[bytes]:
    while True:
        await anyio.sleep(0.05)
        yield b"x"


def test_a_dripping_api_is_cut_off_at_the_deadline() -> None:
    auth = engine(lambda request: httpx2.Response(200, content=drip_forever()), timeout=0.5)
    started = time.monotonic()
    with pytest.raises(DownstreamCallError) as info:
        auth.downstream().call("weather", "x")
    assert time.monotonic() - started < 2.0
    assert info.value.status_code == 504
    assert info.value.reason == "timeout"


@pytest.mark.anyio
async def test_async_dripping_api_is_cut_off_at_the_deadline() -> None:
    async def handler(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(200, content=adrip_forever())

    auth = engine(handler, timeout=0.5)
    started = time.monotonic()
    with pytest.raises(DownstreamCallError) as info:
        await auth.downstream().acall("weather", "x")
    assert time.monotonic() - started < 2.0
    assert info.value.status_code == 504


@pytest.mark.anyio
async def test_async_stalled_headers_are_cut_off_at_the_deadline() -> None:
    async def handler(request: httpx2.Request) -> httpx2.Response:
        await anyio.sleep(30)
        return httpx2.Response(200)

    auth = engine(handler, timeout=0.3)
    started = time.monotonic()
    with pytest.raises(DownstreamCallError) as info:
        await auth.downstream().acall("weather", "x")
    assert time.monotonic() - started < 2.0
    assert info.value.status_code == 504


def test_every_error_here_is_an_entra_error_with_a_status() -> None:
    auth = engine(timeout=0.5)
    for kwargs in ({"json": {"v": math.nan}}, {"headers": {"Cookie": "a=b"}}):
        with pytest.raises(EntraError) as info:
            auth.downstream().call("weather", "x", **kwargs)
        assert getattr(info.value, "status_code", None) == 400
