"""Downstream call safety (DESIGN §5 "Downstream calls", spec §1.6): URL building, reserved headers,
redirects, the response-size cap and the claims-challenge retry. Tokens come from a recording cache; the API
is a ``MockTransport``."""

from __future__ import annotations

import base64
import gzip
import json
from collections.abc import AsyncIterator, Callable, Iterator

import httpx2
import pytest

from entra_mw import ConfigurationError, DownstreamApi, EntraAuth
from entra_mw._downstream import (
    DownstreamCallError,
    DownstreamRequestError,
    build_url,
    claims_from_challenge,
    is_reserved_header,
)

from ._recording import RecordingCache, make_auth

BASE = "https://api.example.com/v1/"
CLAIMS = '{"access_token":{"nbf":{"essential":true,"value":"1700000000"}}}'
CHALLENGE = (
    'Bearer realm="", authorization_uri="https://login.microsoftonline.com/common/oauth2/authorize", '
    f'error="insufficient_claims", claims="{base64.b64encode(CLAIMS.encode()).decode()}"'
)

Handler = Callable[[httpx2.Request], httpx2.Response]


class Api:
    """A downstream API that records what reached it."""

    def __init__(self, handler: Handler | None = None) -> None:
        self.requests: list[httpx2.Request] = []
        self._handler = handler or (lambda request: httpx2.Response(200, json={"ok": True}))
        self.transport = httpx2.MockTransport(self._handle)

    def _handle(self, request: httpx2.Request) -> httpx2.Response:
        self.requests.append(request)
        return self._handler(request)


def engine(api: Api, cache: RecordingCache, **options: object) -> EntraAuth:
    settings: dict[str, object] = {"base_url": BASE, "scopes": ("api://weather/.default",), "request_app_token": True}
    settings.update(options)
    return make_auth({"weather": DownstreamApi(**settings)}, cache, transport=api.transport)  # type: ignore[arg-type]


# -- build_url --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("base", "path", "expected"),
    [
        ("https://api.example.com/v1/", "forecast", "https://api.example.com/v1/forecast"),
        ("https://api.example.com/v1", "/forecast", "https://api.example.com/v1/forecast"),
        ("https://api.example.com/v1//", "forecast/today", "https://api.example.com/v1/forecast/today"),
        ("https://api.example.com/v1/", "", "https://api.example.com/v1"),
        (
            "https://api.example.com/",
            "users/alice%40contoso.com",
            "https://api.example.com/users/alice%40contoso.com",
        ),
        ("https://api.example.com/", "me/messages?$top=5", "https://api.example.com/me/messages?$top=5"),
        ("https://api.example.com:8443/a/", "b", "https://api.example.com:8443/a/b"),
        ("https://api.example.com/", "x/a:b", "https://api.example.com/x/a:b"),
        ("https://api.example.com/", "...", "https://api.example.com/..."),
    ],
)
def test_build_url_joins_base_and_relative_path(base: str, path: str, expected: str) -> None:
    assert build_url(base, path) == expected


def test_build_url_escapes_and_appends_query() -> None:
    url = build_url(BASE, "search?q=1", [("a b", "c&d=e"), ("$top", "5"), ("x", "/?#")])
    assert url == "https://api.example.com/v1/search?q=1&a%20b=c%26d%3De&%24top=5&x=%2F%3F%23"


@pytest.mark.parametrize(
    "path",
    [
        "https://evil.example/x",
        "HTTP://evil.example",
        "javascript:alert(1)",
        "mailto:x",
        "a:b",
        "//evil.example/x",
        "///evil.example",
        "\\\\evil.example\\x",
        "a\\b",
        " evil.example",
        "\tforecast",
        "fore cast",
        "a\r\nHost: evil.example",
        "a\nb",
        "a\rb",
        "a\x00b",
        "a\x7fb",
        "../x",
        "a/../../x",
        "a/..",
        "./x",
        "a/./b",
        "/../x",
        "%2e%2e/x",
        "%2E%2e/x",
        "a/%2e%2E",
        ".%2e/x",
        "%2e/x",
        "%252e%252e/x",
        "a%2fb",
        "a%2F..%2Fb",
        "a%5cb",
        "a%00b",
        "..;/x",
        "a/..;jsessionid=1/b",
        "user@evil.example",
        "a#fragment",
        "%zz",
        "a%2",
        "\uff0e\uff0e/x",
        "caf\u00e9",
        "a//b",
        "a?b#c",
    ],
)
def test_build_url_rejects_unsafe_paths(path: str) -> None:
    with pytest.raises(DownstreamRequestError) as info:
        build_url(BASE, path)
    assert info.value.status_code == 400
    assert isinstance(info.value, ValueError)


def test_build_url_rejects_non_string_path() -> None:
    with pytest.raises(DownstreamRequestError):
        build_url(BASE, 42)  # type: ignore[arg-type]


@pytest.mark.parametrize("query", [[("", "x")], [("a", 1)], [(None, "x")]])
def test_build_url_rejects_bad_query(query: list[tuple[object, object]]) -> None:
    with pytest.raises(DownstreamRequestError):
        build_url(BASE, "x", query)  # type: ignore[arg-type]


# -- reserved headers -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "Authorization",
        "authorization",
        "HOST",
        "Content-Length",
        "Transfer-Encoding",
        "Connection",
        "Upgrade",
        "Expect",
        "Proxy-Authorization",
        "Proxy-Connection",
        "Sec-Fetch-Mode",
        "sec-websocket-key",
        "X-MS-TOKEN-AAD-ACCESS-TOKEN",
        "x-ms-token-aad-id-token",
    ],
)
def test_reserved_headers(name: str) -> None:
    assert is_reserved_header(name)


@pytest.mark.parametrize("name", ["Accept", "X-Request-Id", "X-MS-Client-Request-Id", "Content-Type", "Sec"])
def test_ordinary_headers(name: str) -> None:
    assert not is_reserved_header(name)


# -- claims challenge parsing -----------------------------------------------------------------------


def test_claims_from_challenge_decodes_base64() -> None:
    assert claims_from_challenge(CHALLENGE) == CLAIMS


def test_claims_from_challenge_accepts_unpadded_base64url() -> None:
    encoded = base64.urlsafe_b64encode(b'{"access_token":{"xms_cc":{"values":["cp1"]}}}').decode().rstrip("=")
    header = f'Bearer error="insufficient_claims", claims="{encoded}"'
    assert claims_from_challenge(header) == '{"access_token":{"xms_cc":{"values":["cp1"]}}}'


def test_claims_from_challenge_after_another_scheme() -> None:
    encoded = base64.b64encode(CLAIMS.encode()).decode()
    header = f'PoP nonce="abc", Bearer error="insufficient_claims", claims="{encoded}"'
    assert claims_from_challenge(header) == CLAIMS


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "Bearer",
        'Bearer error="invalid_token"',
        'Bearer error="invalid_token", claims="eyJhIjoxfQ=="',
        'Bearer error="insufficient_claims"',
        'Bearer error="insufficient_claims", claims=""',
        'Bearer error="insufficient_claims", claims="!!!not base64!!!"',
        'Bearer error="insufficient_claims", claims="bm90IGpzb24="',  # "not json"
        'Bearer error="insufficient_claims", claims="WzEsMl0="',  # [1,2]: not an object
        'Bearer error="insufficient_claims", claims="/w=="',  # not UTF-8
        'Bearer error="insufficient_claims", claims="' + "A" * 70_000 + '"',
        'Bearer error="insufficient_claims", claims="' + "A" * 20_000 + '"',
    ],
)
def test_claims_from_challenge_ignores_anything_else(header: str | None) -> None:
    assert claims_from_challenge(header) is None


# -- calls: URL, headers, token ---------------------------------------------------------------------


def test_call_sends_a_fresh_token_never_the_callers() -> None:
    api, cache = Api(), RecordingCache()
    auth = engine(api, cache, extra_query={"api-version": "2"}, extra_headers={"X-Tenant": "contoso"})
    downstream = auth.downstream(None, "the-callers-own-token")
    response = downstream.call("weather", "/forecast", params={"city": "Paris & Co"}, headers={"X-Trace": "1"})
    assert response.status_code == 200
    assert response.json() == {"ok": True}
    (sent,) = api.requests
    assert str(sent.url) == "https://api.example.com/v1/forecast?api-version=2&city=Paris%20%26%20Co"
    assert sent.headers["authorization"] == "Bearer downstream-token-1"
    assert "the-callers-own-token" not in str(sent.headers) + str(sent.url)
    assert sent.headers["accept"] == "application/json"
    assert sent.headers["x-tenant"] == "contoso"
    assert sent.headers["x-trace"] == "1"
    assert sent.method == "GET"


def test_an_api_without_base_url_gives_headers_but_is_never_called() -> None:
    api, cache = Api(), RecordingCache()
    auth = engine(api, cache, base_url="", request_app_token=True)
    downstream = auth.downstream()
    assert downstream.authorization_header("weather") == "Bearer downstream-token-1"
    with pytest.raises(DownstreamRequestError, match="has no BaseUrl") as info:
        downstream.call("weather", "/forecast")
    assert info.value.status_code == 400
    assert api.requests == []


def test_call_uses_configured_relative_path_method_and_content_type() -> None:
    api, cache = Api(), RecordingCache()
    auth = engine(api, cache, relative_path="items", http_method="post", content_type="text/csv", accept_header="*/*")
    auth.downstream().call("weather", content="a,b\n1,2")
    (sent,) = api.requests
    assert sent.url.path == "/v1/items"
    assert sent.method == "POST"
    assert sent.headers["content-type"] == "text/csv"
    assert sent.headers["accept"] == "*/*"
    assert sent.content == b"a,b\n1,2"


def test_call_json_body_and_method_override() -> None:
    api, cache = Api(), RecordingCache()
    auth = engine(api, cache)
    auth.downstream().call("weather", "items/1", method="patch", json={"title": "milk"})
    (sent,) = api.requests
    assert sent.method == "PATCH"
    assert json.loads(sent.content) == {"title": "milk"}
    assert sent.headers["content-type"] == "application/json"


def test_caller_headers_may_replace_accept_and_content_type() -> None:
    api, cache = Api(), RecordingCache()
    auth = engine(api, cache)
    headers = {"accept": "text/xml", "Content-Type": "text/xml"}
    auth.downstream().call("weather", "x", method="POST", content=b"<a/>", headers=headers)
    (sent,) = api.requests
    assert sent.headers.get_list("accept") == ["text/xml"]
    assert sent.headers.get_list("content-type") == ["text/xml"]


@pytest.mark.parametrize(
    "headers",
    [
        {"Authorization": "Bearer stolen"},
        {"authorization": "Bearer stolen"},
        {"Host": "evil.example"},
        {"Content-Length": "0"},
        {"Transfer-Encoding": "chunked"},
        {"Proxy-Authorization": "Basic x"},
        {"Sec-Fetch-Site": "none"},
        {"X-MS-TOKEN-AAD-ACCESS-TOKEN": "x"},
        {"X-Ok": "a\r\nAuthorization: Bearer x"},
        {"X-Ok": "a\nb"},
        {"X-Ok": "a\x00b"},
        {"Bad Name": "x"},
        {"Bad:Name": "x"},
        {"": "x"},
        {"X-Ok": 1},
    ],
)
def test_call_rejects_reserved_or_unsafe_headers_before_sending(headers: dict[str, object]) -> None:
    api, cache = Api(), RecordingCache()
    auth = engine(api, cache)
    with pytest.raises(DownstreamRequestError):
        auth.downstream().call("weather", "x", headers=headers)  # type: ignore[arg-type]
    assert api.requests == []
    assert cache.requests == []


@pytest.mark.parametrize("extra", [{"Authorization": "Bearer x"}, {"Host": "evil"}, {"X-Ok": "a\r\nb"}])
def test_configured_extra_headers_are_checked_too(extra: dict[str, str]) -> None:
    api, cache = Api(), RecordingCache()
    auth = engine(api, cache, extra_headers=extra)
    with pytest.raises(DownstreamRequestError):
        auth.downstream().call("weather")
    assert api.requests == []


@pytest.mark.parametrize("path", ["https://evil.example/", "//evil.example/x", "../admin", "a%2f..%2f", " x"])
def test_call_rejects_unsafe_path_before_any_token_request(path: str) -> None:
    api, cache = Api(), RecordingCache()
    auth = engine(api, cache)
    with pytest.raises(DownstreamRequestError):
        auth.downstream().call("weather", path)
    assert api.requests == []
    assert cache.requests == []


def test_configured_relative_path_is_checked_too() -> None:
    api, cache = Api(), RecordingCache()
    auth = engine(api, cache, relative_path="../../admin")
    with pytest.raises(DownstreamRequestError):
        auth.downstream().call("weather")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"method": "TRACE"},
        {"method": 7},
        {"method": "GET\r\nX: y"},
        {"json": {"a": 1}, "content": b"x"},
        {"content": 12},
        {"params": [("a", "b")]},
        {"headers": [("a", "b")]},
    ],
)
def test_call_rejects_bad_arguments(kwargs: dict[str, object]) -> None:
    api, cache = Api(), RecordingCache()
    auth = engine(api, cache)
    with pytest.raises(DownstreamRequestError):
        auth.downstream().call("weather", "x", **kwargs)  # type: ignore[arg-type]
    assert api.requests == []


def test_call_unknown_api_is_a_400_not_a_configuration_error() -> None:
    api, cache = Api(), RecordingCache()
    auth = engine(api, cache)
    with pytest.raises(DownstreamRequestError, match="'nope' is not configured") as info:
        auth.downstream().call("nope", "x")
    assert info.value.status_code == 400
    assert not isinstance(info.value, ConfigurationError)


def test_api_names_match_case_insensitively() -> None:
    api, cache = Api(), RecordingCache()
    auth = engine(api, cache)
    assert auth.downstream().call("Weather", "x").status_code == 200


# -- redirects, size cap, transport errors ----------------------------------------------------------


def test_redirects_are_returned_not_followed() -> None:
    cache = RecordingCache()
    api = Api(lambda r: httpx2.Response(302, headers={"Location": "https://evil.example/steal"}))
    auth = engine(api, cache)
    response = auth.downstream().call("weather", "x")
    assert response.status_code == 302
    assert response.headers["location"] == "https://evil.example/steal"
    assert len(api.requests) == 1


def test_declared_oversized_response_is_refused_without_reading() -> None:
    api = Api(lambda r: httpx2.Response(200, content=b"x" * 2048))
    auth = engine(api, RecordingCache(), max_response_bytes=1024)
    with pytest.raises(DownstreamCallError) as info:
        auth.downstream().call("weather", "x")
    assert info.value.status_code == 502
    assert info.value.reason == "response_too_large"
    assert "'weather'" in info.value.description


def test_streamed_oversized_response_stops_reading() -> None:
    pulled: list[int] = []

    def chunks() -> Iterator[bytes]:
        for i in range(1000):
            pulled.append(i)
            yield b"x" * 1024

    api = Api(lambda r: httpx2.Response(200, content=chunks()))
    auth = engine(api, RecordingCache(), max_response_bytes=4096)
    with pytest.raises(DownstreamCallError):
        auth.downstream().call("weather", "x")
    assert len(pulled) <= 6


def test_compressed_bomb_is_capped_on_decoded_size() -> None:
    bomb = gzip.compress(b"\0" * 5_000_000)
    gz = {"Content-Encoding": "gzip"}
    api = Api(lambda r: httpx2.Response(200, headers=gz, stream=httpx2.ByteStream(bomb)))
    auth = engine(api, RecordingCache(), max_response_bytes=64 * 1024)
    with pytest.raises(DownstreamCallError):
        auth.downstream().call("weather", "x")


def test_compressed_response_under_the_cap_is_decoded() -> None:
    payload = json.dumps({"temp": 21}).encode()
    api = Api(
        lambda r: httpx2.Response(
            200,
            headers={"Content-Encoding": "gzip", "Content-Type": "application/json"},
            stream=httpx2.ByteStream(gzip.compress(payload)),
        )
    )
    auth = engine(api, RecordingCache())
    response = auth.downstream().call("weather", "x")
    assert response.json() == {"temp": 21}
    assert "content-encoding" not in response.headers
    assert response.headers["content-length"] == str(len(payload))


def test_response_at_the_cap_is_accepted() -> None:
    api = Api(lambda r: httpx2.Response(200, content=b"y" * 1024))
    auth = engine(api, RecordingCache(), max_response_bytes=1024)
    response = auth.downstream().call("weather", "x")
    assert response.content == b"y" * 1024
    assert response.headers["content-length"] == "1024"


def test_unreachable_api_is_a_clean_502() -> None:
    def fail(request: httpx2.Request) -> httpx2.Response:
        raise httpx2.ConnectError("refused", request=request)

    auth = engine(Api(fail), RecordingCache())
    with pytest.raises(DownstreamCallError) as info:
        auth.downstream().call("weather", "x")
    assert info.value.status_code == 502
    assert info.value.api == "weather"


def test_timeout_is_a_clean_504() -> None:
    def slow(request: httpx2.Request) -> httpx2.Response:
        assert request.extensions["timeout"]["read"] == 2.5
        raise httpx2.ReadTimeout("slow", request=request)

    auth = engine(Api(slow), RecordingCache(), timeout=2.5)
    with pytest.raises(DownstreamCallError) as info:
        auth.downstream().call("weather", "x")
    assert info.value.status_code == 504


# -- claims challenge -------------------------------------------------------------------------------


def _challenging(times: int) -> Handler:
    state = {"left": times}

    def handle(request: httpx2.Request) -> httpx2.Response:
        if state["left"] > 0:
            state["left"] -= 1
            return httpx2.Response(401, headers={"WWW-Authenticate": CHALLENGE})
        return httpx2.Response(200, json={"ok": True})

    return handle


def test_claims_challenge_reacquires_once_and_retries_once() -> None:
    api, cache = Api(_challenging(1)), RecordingCache()
    auth = engine(api, cache)
    response = auth.downstream().call("weather", "x", method="POST", json={"a": 1})
    assert response.status_code == 200
    assert len(api.requests) == 2
    first, second = cache.requests
    assert first.claims is None
    assert not first.force_refresh
    assert second.claims == CLAIMS
    assert second.force_refresh
    assert second.scopes == first.scopes
    assert second.flow == first.flow
    assert api.requests[1].headers["authorization"] == "Bearer downstream-token-2"
    assert json.loads(api.requests[1].content) == {"a": 1}


def test_claims_challenge_is_retried_only_once() -> None:
    api, cache = Api(_challenging(5)), RecordingCache()
    auth = engine(api, cache)
    response = auth.downstream().call("weather", "x")
    assert response.status_code == 401
    assert len(api.requests) == 2
    assert len(cache.requests) == 2


def test_plain_401_is_not_retried() -> None:
    api = Api(lambda r: httpx2.Response(401, headers={"WWW-Authenticate": 'Bearer error="invalid_token"'}))
    cache = RecordingCache()
    response = engine(api, cache).downstream().call("weather", "x")
    assert response.status_code == 401
    assert len(api.requests) == 1
    assert len(cache.requests) == 1


# -- async twins ------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_acall_claims_challenge_and_headers() -> None:
    api, cache = Api(_challenging(1)), RecordingCache()
    auth = engine(api, cache)
    response = await auth.downstream(None, "callers-token").acall("weather", "x", params={"q": "1"})
    assert response.status_code == 200
    assert [str(r.url) for r in api.requests] == ["https://api.example.com/v1/x?q=1"] * 2
    assert cache.requests[1].claims == CLAIMS
    assert all(r.headers["authorization"].startswith("Bearer downstream-token-") for r in api.requests)
    await auth.aclose()


@pytest.mark.anyio
async def test_acall_caps_streamed_body() -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(1000):
            yield b"x" * 1024

    api = Api(lambda r: httpx2.Response(200, content=chunks()))
    auth = engine(api, RecordingCache(), max_response_bytes=4096)
    with pytest.raises(DownstreamCallError):
        await auth.downstream().acall("weather", "x")
    await auth.aclose()


@pytest.mark.anyio
async def test_acall_rejects_unsafe_input() -> None:
    api, cache = Api(), RecordingCache()
    auth = engine(api, cache)
    with pytest.raises(DownstreamRequestError):
        await auth.downstream().acall("weather", "//evil.example")
    with pytest.raises(DownstreamRequestError):
        await auth.downstream().acall("weather", "x", headers={"Authorization": "Bearer x"})
    assert api.requests == []


@pytest.mark.anyio
async def test_acall_transport_error() -> None:
    def fail(request: httpx2.Request) -> httpx2.Response:
        raise httpx2.ConnectError("refused", request=request)

    auth = engine(Api(fail), RecordingCache())
    with pytest.raises(DownstreamCallError):
        await auth.downstream().acall("weather", "x")
