from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from entra_mw import AuthContext, Requirement
from entra_mw.errors import ConfigurationError, InvalidToken
from entra_mw.testing import FakeEntra
from entra_mw.wsgi import EntraWSGIMiddleware

from ..asgi._support import Env, fake_env, stub_auth


@pytest.fixture
def env(fake_entra: FakeEntra) -> Iterator[Env]:
    env = fake_env(fake_entra)
    yield env
    env.auth.close()


@dataclass
class Seen:
    environ: dict[str, Any] | None = None


@dataclass
class Response:
    status: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""

    @property
    def code(self) -> int:
        return int(self.status.split()[0])

    def json(self) -> dict[str, Any]:
        out: dict[str, Any] = json.loads(self.body)
        return out


def make(env: Env, **options: Any) -> tuple[EntraWSGIMiddleware, Seen]:
    seen = Seen()

    def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        seen.environ = environ
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]

    return EntraWSGIMiddleware(app, auth=env.auth, **options), seen


def call(mw: EntraWSGIMiddleware, path: str = "/", authorization: str | None = None, query: str = "") -> Response:
    environ: dict[str, Any] = {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": path,
        "QUERY_STRING": query,
        "SERVER_NAME": "localhost",
        "SERVER_PORT": "80",
        "wsgi.url_scheme": "http",
    }
    if authorization is not None:
        environ["HTTP_AUTHORIZATION"] = authorization
    out = Response()

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        out.status = status
        out.headers = {k.lower(): v for k, v in headers}
        return lambda data: None

    out.body = b"".join(mw(environ, start_response))
    return out


def test_valid_token(env: Env) -> None:
    mw, seen = make(env)
    out = call(mw, authorization=f"Bearer {env.token}")
    assert out.status == "200 OK"
    assert seen.environ is not None
    ctx = seen.environ["entra_mw"]
    assert isinstance(ctx, AuthContext)
    assert ctx.principal is not None
    assert env.scope in ctx.principal.scopes
    assert ctx.token == env.token


def test_missing_and_other_schemes(env: Env) -> None:
    mw, seen = make(env)
    for value in (None, "", "Basic dXNlcg==", 'Digest username="a", realm="b"'):
        out = call(mw, authorization=value)
        assert out.status == "401 Unauthorized", value
        assert out.headers["www-authenticate"] == "Bearer"
        assert out.headers["content-length"] == str(len(out.body))
    assert seen.environ is None


@pytest.mark.parametrize(
    "value",
    [
        "Bearer",
        "Bearer a b",
        "Bearer \xe9",
        "Bearer good, Bearer good",  # two headers folded by the server
        "Basic dXNlcg==, Bearer good",
        "Bearer good,Basic dXNlcg==",
    ],
)
def test_malformed_or_folded_is_400(env: Env, value: str) -> None:
    mw, seen = make(env)
    out = call(mw, authorization=value)
    assert out.status == "400 Bad Request"
    assert out.json()["error"] == "invalid_request"
    assert out.headers["www-authenticate"].startswith('Bearer error="invalid_request"')
    assert seen.environ is None


def test_query_token_is_400(env: Env) -> None:
    mw, _ = make(env)
    assert call(mw, authorization=f"Bearer {env.token}", query="access_token=x").code == 400
    assert call(mw, query="access_token=x").code == 400
    assert call(mw, authorization=f"Bearer {env.token}", query="x=1").code == 200


def test_invalid_unavailable_and_requirement(env: Env) -> None:
    mw, _ = make(env)
    out = call(mw, authorization=f"Bearer {env.bad}")
    assert out.status == "401 Unauthorized"
    assert out.json()["error"] == "invalid_token"
    stub = stub_auth()
    out = call(EntraWSGIMiddleware(make(env)[0].app, auth=stub), authorization="Bearer down")
    assert out.status == "503 Service Unavailable"
    assert out.headers["retry-after"] == "5"
    stub.close()
    mw, _ = make(env, requirement=Requirement(roles=("Admin",)))
    out = call(mw, authorization=f"Bearer {env.token}")
    assert out.status == "403 Forbidden"
    assert 'scope="Admin"' in out.headers["www-authenticate"]


def test_optional_mode(env: Env) -> None:
    mw, seen = make(env, required=False)
    assert call(mw).code == 200
    assert seen.environ is not None
    assert seen.environ["entra_mw"].principal is None
    seen.environ = None
    assert call(mw, authorization=f"Bearer {env.bad}").code == 401
    assert call(mw, authorization="Bearer a b").code == 400
    assert seen.environ is None


def test_exclude_paths(env: Env) -> None:
    mw, _ = make(env, exclude_paths=["/healthz", "/static/*"])
    assert call(mw, path="/healthz").code == 200
    assert call(mw, path="/static/app.js", authorization=f"Bearer {env.bad}").code == 200
    assert call(mw, path="/static/../admin").code == 401
    assert call(mw, path="/healthzz").code == 401
    with pytest.raises(ConfigurationError):
        make(env, exclude_paths=["nope"])


def test_app_errors_propagate(env: Env) -> None:
    def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        raise InvalidToken("from the app")

    mw = EntraWSGIMiddleware(app, auth=env.auth)
    with pytest.raises(InvalidToken):
        call(mw, authorization=f"Bearer {env.token}")


def test_non_str_environ_values_are_tolerated(env: Env) -> None:
    mw, _ = make(env)
    environ: dict[str, Any] = {
        "PATH_INFO": "/",
        "HTTP_AUTHORIZATION": f"Bearer {env.token}".encode(),
        "QUERY_STRING": b"",
    }
    statuses: list[str] = []
    b"".join(mw(environ, lambda status, headers, exc_info=None: statuses.append(status)))
    assert statuses == ["200 OK"]
