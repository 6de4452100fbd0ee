"""Any request headers whatsoever give a clean answer: 400/401/403/503 (or 200 for a valid token), never an
exception from the middleware."""

from __future__ import annotations

import asyncio
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from entra_mw import Requirement
from entra_mw._bearer import bearer_token
from entra_mw.asgi import EntraMiddleware
from entra_mw.errors import InvalidRequest, MissingToken
from entra_mw.wsgi import EntraWSGIMiddleware

from ._support import Result, drive, http_scope, recording_app, stub_auth

CLEAN = {200, 400, 401, 403, 503}

_value_parts = st.sampled_from(
    [
        b"Bearer ",
        b"bearer ",
        b"Basic ",
        b"good",
        b"down",
        b"bad",
        b", ",
        b",",
        b" ",
        b"\t",
        b"=",
        b"\x00",
        b"\xff",
        b"eyJ",
    ]
)
header_values = st.one_of(
    st.binary(max_size=200),
    st.lists(_value_parts, max_size=8).map(b"".join),
)
header_names = st.one_of(st.sampled_from([b"authorization", b"Authorization", b"x-other"]), st.binary(max_size=20))
headers = st.lists(st.tuples(header_names, header_values), max_size=4)
queries = st.one_of(
    st.binary(max_size=60), st.sampled_from([b"", b"access_token=x", b"access%5ftoken=1", b"a=1&b=%", b"%"])
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(headers=headers, query=queries, required=st.booleans(), ws=st.booleans(), need_scope=st.booleans())
def test_asgi_any_headers_give_a_clean_answer(
    headers: list[tuple[bytes, bytes]], query: bytes, required: bool, ws: bool, need_scope: bool
) -> None:
    auth = stub_auth()
    seen = Result()
    requirement = Requirement(scopes=("Files.Write",)) if need_scope else None
    mw = EntraMiddleware(recording_app(seen), auth=auth, required=required, requirement=requirement)
    scope = http_scope(headers=headers, query=query, type_="websocket" if ws else "http")
    if ws:
        scope["extensions"] = {"websocket.http.response": {}}
    out = asyncio.run(drive(mw, scope, Result()))
    if seen.scope is None:
        assert out.status in CLEAN - {200}
    else:
        assert "entra_mw" in seen.scope
    auth.close()


@settings(max_examples=300, deadline=None)
@given(
    value=st.one_of(st.none(), st.text(max_size=120), header_values.map(lambda b: b.decode("latin-1"))),
    query=st.text(max_size=40),
)
def test_wsgi_any_header_gives_a_clean_answer(value: str | None, query: str) -> None:
    auth = stub_auth()
    seen: list[bool] = []

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        seen.append(True)
        start_response("200 OK", [])
        return [b""]

    mw = EntraWSGIMiddleware(app, auth=auth)
    environ: dict[str, Any] = {"PATH_INFO": "/", "QUERY_STRING": query}
    if value is not None:
        environ["HTTP_AUTHORIZATION"] = value
    statuses: list[str] = []
    mw(environ, lambda status, headers, exc_info=None: statuses.append(status))
    assert len(statuses) == 1
    assert int(statuses[0].split()[0]) in CLEAN
    auth.close()


@given(values=st.lists(st.one_of(st.binary(max_size=80), st.text(max_size=80)), max_size=3), query=queries)
def test_bearer_token_raises_only_auth_errors(values: list[bytes | str], query: bytes) -> None:
    try:
        token = bearer_token(values, query)
    except (MissingToken, InvalidRequest):
        return
    else:
        assert token.rstrip("=")  # RFC 6750 §2.1: at least one b64token character before any '='
        assert token.isascii()
        assert " " not in token
