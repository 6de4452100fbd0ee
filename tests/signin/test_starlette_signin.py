"""Web sign-in in Starlette and FastAPI: the routes, cookies, login_required and the user dependencies, against
FakeEntra in process (the core's refusals are tested once, in test_web_signin)."""

from __future__ import annotations

import urllib.parse
from collections.abc import Iterator
from http.cookiejar import DefaultCookiePolicy

import pytest
from fastapi import Depends, FastAPI
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.testclient import TestClient

from entra_mw import SignInRequired, User
from entra_mw._signin import PENDING_COOKIE, SESSION_COOKIE
from entra_mw.contrib.starlette import SignInRoutes

from .conftest import Site


def client_for(app: Starlette) -> TestClient:
    client = TestClient(app, base_url="http://localhost", follow_redirects=False)
    # Browsers send Secure cookies to http://localhost (a secure context); http.cookiejar only over https.
    client.cookies.jar.set_policy(DefaultCookiePolicy(secure_protocols=("https", "wss", "http")))
    return client


@pytest.fixture
def web(site: Site) -> SignInRoutes:
    return SignInRoutes(site.signin)


@pytest.fixture
def client(site: Site, web: SignInRoutes) -> Iterator[TestClient]:
    async def index(request: Request) -> Response:
        user = await web.user(request)
        return PlainTextResponse(f"hello {user.name}" if user else "hello stranger")

    @web.login_required
    async def me(request: Request) -> Response:
        user = await web.user(request)
        header = await web.authorization_header(request, [site.api_scope])
        return JSONResponse({"oid": user.oid, "header": header[:10]})

    async def gone(request: Request) -> Response:
        raise SignInRequired("the refresh token was revoked")

    app = Starlette(routes=[Route("/", index), Route("/me", me), Route("/gone", gone)])
    web.install(app)
    with client_for(app) as test_client:
        yield test_client


def sign_in(site: Site, client: TestClient, path: str = "/me") -> tuple[str, object]:
    first = client.get(path)
    assert first.status_code == 302
    start = client.get(first.headers["location"]) if not path.startswith("/auth/") else first
    assert start.status_code == 302 and start.headers["location"].startswith("https://login.microsoftonline.com/")
    back = client.post("/auth/callback", data=site.sign_in(start.headers["location"]))
    return back.headers.get("location", ""), back


def test_sign_in_and_back(site: Site, client: TestClient) -> None:
    assert client.get("/").text == "hello stranger"
    first = client.get("/me?tab=1")
    assert first.status_code == 302 and first.headers["location"] == "/auth/login?next=%2Fme%3Ftab%3D1"
    login = client.get(first.headers["location"])
    cookies = login.headers.get_list("set-cookie")
    pending = next(c for c in cookies if c.startswith(PENDING_COOKIE))
    assert "HttpOnly" in pending and "SameSite=none" in pending and "Secure" in pending
    assert "redirect_uri=http%3A%2F%2Flocalhost%2Fauth%2Fcallback" in login.headers["location"]
    back = client.post("/auth/callback", data=site.sign_in(login.headers["location"]))
    assert back.status_code == 303 and back.headers["location"] == "/me?tab=1"
    session = next(c for c in back.headers.get_list("set-cookie") if c.startswith(SESSION_COOKIE))
    assert "HttpOnly" in session and "SameSite=lax" in session and "Secure" not in session
    assert any(c.startswith(f'{PENDING_COOKIE}=""') for c in back.headers.get_list("set-cookie"))
    assert client.get("/me").json() == {"oid": site.s.user.object_id, "header": "Bearer eyJ"}
    assert client.get("/").text == f"hello {site.s.user.display_name}"


def test_session_rotates_and_logout_is_a_same_origin_post(site: Site, client: TestClient) -> None:
    sign_in(site, client)
    first = client.cookies.get(SESSION_COOKIE)
    sign_in(site, client, "/auth/login?next=/me")
    second = client.cookies.get(SESSION_COOKIE)
    assert first and second and first != second and not site.signin.user(first)
    assert client.get("/auth/logout").status_code == 405
    assert client.post("/auth/logout", headers={"Origin": "https://evil.example"}).status_code == 403
    out = client.post("/auth/logout", headers={"Origin": "http://localhost"})
    assert out.status_code == 303
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(out.headers["location"]).query)
    assert query["post_logout_redirect_uri"] == ["http://localhost/"]
    assert not site.signin.user(second) and client.get("/me").status_code == 302


@pytest.mark.parametrize("target", ["https://evil.example/", "//evil.example", "/\\evil.example"])
def test_next_off_site(site: Site, client: TestClient, target: str) -> None:
    location, _ = sign_in(site, client, "/auth/login?" + urllib.parse.urlencode({"next": target}))
    assert location == "/"


def test_refusals_are_pages(site: Site, client: TestClient) -> None:
    login = client.get("/auth/login")
    params = site.sign_in(login.headers["location"])
    bad = client.post("/auth/callback", data={**params, "state": "<b>x</b>"})
    assert bad.status_code == 400 and "<b>" not in bad.text and "does not match" in bad.text
    assert client.post("/auth/callback", content=b"\xff" * 10).status_code == 400
    assert client.post("/auth/callback", content=b"a=" + b"x" * 70_000).status_code == 400


def test_sign_in_required_from_an_endpoint_restarts_sign_in(site: Site, client: TestClient) -> None:
    gone = client.get("/gone?x=1")
    assert gone.status_code == 302 and gone.headers["location"] == "/auth/login?next=%2Fgone%3Fx%3D1"


def test_fastapi_dependencies(site: Site, web: SignInRoutes) -> None:
    app = FastAPI()
    web.install(app)

    @app.get("/me")
    # Defaults, not Annotated: string annotations are resolved in the module's globals, where `web` is the fixture.
    async def me(user: User = Depends(web.required_user)) -> dict[str, str | None]:
        return {"oid": user.oid}

    @app.get("/maybe")
    async def maybe(user: User = Depends(web.current_user)) -> dict[str, bool]:
        return {"signed_in": bool(user)}

    with client_for(app) as client:
        assert client.get("/maybe").json() == {"signed_in": False}
        first = client.get("/me")
        assert first.status_code == 302 and first.headers["location"] == "/auth/login?next=%2Fme"
        sign_in(site, client)
        assert client.get("/me").json() == {"oid": site.s.user.object_id}
        assert client.get("/maybe").json() == {"signed_in": True}


def test_constructor_checks(site: Site) -> None:
    with pytest.raises(TypeError):
        SignInRoutes("x")  # type: ignore[arg-type]
    for prefix in ("auth", "//evil", "/a b"):
        with pytest.raises(ValueError, match="url_prefix"):
            SignInRoutes(site.signin, url_prefix=prefix)
