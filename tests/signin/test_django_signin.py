"""Web sign-in in Django: the views from signin_urls, cookies, login_required on sync and async views, and the
settings read at use time, against FakeEntra in process."""

from __future__ import annotations

import urllib.parse
from collections.abc import Iterator

import pytest

pytest.importorskip("django")

from django.test import AsyncClient, Client, override_settings

from entra_mw import ConfigurationError, EntraConfig
from entra_mw._signin import PENDING_COOKIE, SESSION_COOKIE
from entra_mw.contrib.django.signin import get_sign_in
from tests.contrib.django._django import configure

from .conftest import Site

configure()


@pytest.fixture
def dsite(site: Site) -> Iterator[Site]:
    def factory(config: EntraConfig) -> object:
        return site.auth

    with override_settings(
        ROOT_URLCONF="tests.signin.django_urls",
        ENTRA_MW=site.auth.config,
        ENTRA_MW_AUTH_FACTORY=factory,
        ENTRA_MW_SIGNIN={"scopes": [site.api_scope], "after_logout": "/"},
    ):
        yield site


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def browser() -> Client:
    return Client(HTTP_HOST="localhost")


def sign_in(site: Site, client: Client, path: str = "/me") -> object:
    first = client.get(path)
    start = client.get(first["Location"]) if not path.startswith("/auth/") else first
    assert start.status_code == 302 and start["Location"].startswith("https://login.microsoftonline.com/")
    return client.post("/auth/callback", data=site.sign_in(start["Location"]))


def test_sign_in_and_back(dsite: Site) -> None:
    client = browser()
    assert client.get("/").content == b"hello stranger"
    first = client.get("/me?scope=x")
    assert first.status_code == 302 and first["Location"] == "/auth/login?next=%2Fme%3Fscope%3Dx"
    login = client.get(first["Location"])
    pending = login.cookies[PENDING_COOKIE]
    assert pending["httponly"] and pending["samesite"] == "None" and pending["secure"]
    assert "redirect_uri=http%3A%2F%2Flocalhost%2Fauth%2Fcallback" in login["Location"]
    back = client.post("/auth/callback", data=dsite.sign_in(login["Location"]))
    assert back.status_code == 303 and back["Location"] == "/me?scope=x"
    session = back.cookies[SESSION_COOKIE]
    assert session["httponly"] and session["samesite"] == "Lax" and not session["secure"]  # loopback
    assert back.cookies[PENDING_COOKIE].value == ""
    assert client.get("/me", {"scope": dsite.api_scope}).json() == {
        "oid": dsite.s.user.object_id,
        "header": "Bearer eyJ",
    }
    assert client.get("/").content.decode() == f"hello {dsite.s.user.display_name}"


def test_cookies_are_secure_off_loopback(dsite: Site) -> None:
    dsite.fake.add_redirect_uri(dsite.web, "https://app.contoso.com/auth/callback")
    with override_settings(ALLOWED_HOSTS=["app.contoso.com"]):
        client = Client(HTTP_HOST="app.contoso.com")
        login = client.get("/auth/login", secure=True)
        assert "redirect_uri=https%3A%2F%2Fapp.contoso.com%2Fauth%2Fcallback" in login["Location"]
        back = client.post("/auth/callback", data=dsite.sign_in(login["Location"]), secure=True)
        assert back.cookies[SESSION_COOKIE]["secure"] and back.cookies[SESSION_COOKIE]["httponly"]


def test_session_rotates_and_logout_is_a_same_origin_post(dsite: Site) -> None:
    client = browser()
    sign_in(dsite, client)
    first = client.cookies[SESSION_COOKIE].value
    sign_in(dsite, client, "/auth/login?next=/me")
    second = client.cookies[SESSION_COOKIE].value
    assert first != second and not dsite.signin.user(first) and not get_sign_in().user(first)
    assert get_sign_in().user(second)
    assert client.get("/auth/logout").status_code == 405
    assert client.post("/auth/logout", headers={"Origin": "https://evil.example"}).status_code == 403
    out = client.post("/auth/logout", headers={"Origin": "http://localhost"})
    assert out.status_code == 303
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(out["Location"]).query)
    assert query["post_logout_redirect_uri"] == ["http://localhost/"]
    assert not get_sign_in().user(second) and client.get("/me").status_code == 302


@pytest.mark.parametrize("target", ["https://evil.example/", "//evil.example", "/\\evil.example"])
def test_next_off_site(dsite: Site, target: str) -> None:
    back = sign_in(dsite, browser(), "/auth/login?" + urllib.parse.urlencode({"next": target}))
    assert back["Location"] == "/"  # type: ignore[index]


def test_refusals_are_pages(dsite: Site) -> None:
    client = browser()
    login = client.get("/auth/login")
    params = dsite.sign_in(login["Location"])
    bad = client.post("/auth/callback", data={**params, "state": "<b>x</b>"})
    assert bad.status_code == 400 and b"<b>" not in bad.content and b"does not match" in bad.content
    assert SESSION_COOKIE not in client.cookies or client.cookies[SESSION_COOKIE].value == ""
    other = browser()  # login CSRF: an answer posted from a browser that did not start the sign-in
    assert other.post("/auth/callback", data=params).status_code == 400


def test_lost_session_restarts_sign_in(dsite: Site) -> None:
    client = browser()
    sign_in(dsite, client)
    gone = client.get("/gone")
    assert gone.status_code == 302 and gone["Location"] == "/auth/login?next=%2Fgone"


@pytest.mark.anyio
async def test_async_views(dsite: Site) -> None:
    dsite.fake.add_redirect_uri(dsite.web, "https://testserver/auth/callback")
    client = AsyncClient()
    first = await client.get("/ame", secure=True)
    assert first.status_code == 302
    login = await client.get(first["Location"], secure=True)
    assert "redirect_uri=https%3A%2F%2Ftestserver%2Fauth%2Fcallback" in login["Location"]
    back = await client.post("/auth/callback", data=dsite.sign_in(login["Location"]), secure=True)
    assert back.status_code == 303 and back.cookies[SESSION_COOKIE]["secure"]
    answer = await client.get("/ame", {"scope": dsite.api_scope}, secure=True)
    assert answer.json() == {"oid": dsite.s.user.object_id, "header": "Bearer eyJ"}


def test_settings_are_read_at_use_time(dsite: Site) -> None:
    first = get_sign_in()
    assert get_sign_in() is first
    with override_settings(ENTRA_MW_SIGNIN={"scopes": [dsite.api_scope], "session_ttl": 60}):
        assert get_sign_in() is not first and get_sign_in().session_ttl == 60
    with override_settings(ENTRA_MW_SIGNIN=None), pytest.raises(ConfigurationError, match="ENTRA_MW_SIGNIN"):
        get_sign_in()
    with override_settings(ENTRA_MW_SIGNIN={"scope": "x"}), pytest.raises(ConfigurationError, match="unknown"):
        get_sign_in()
    with override_settings(ENTRA_MW_SIGNIN=dsite.signin):
        assert get_sign_in() is dsite.signin


def test_downstream_for_the_signed_in_user(dsite: Site) -> None:
    client = browser()
    assert client.get("/token", {"scope": dsite.api_scope}).status_code == 302
    sign_in(dsite, client)
    assert client.get("/token", {"scope": dsite.api_scope}).json() == {"header": "Bearer eyJ"}
    before = dsite.fake.request_count("token")
    assert client.get("/atoken", {"scope": dsite.api_scope}).json() == {"header": "Bearer eyJ"}
    assert dsite.fake.request_count("token") == before  # the engine's cache, keyed by the session
