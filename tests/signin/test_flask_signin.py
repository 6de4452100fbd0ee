"""Web sign-in in Flask: the routes, cookies, @login_required and current_user, against FakeEntra in process."""

from __future__ import annotations

import urllib.parse

import pytest
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from entra_mw import SignInRequired
from entra_mw._signin import PENDING_COOKIE, SESSION_COOKIE
from entra_mw.contrib._flask_signin import (
    current_user,
    init_sign_in,
    login_required,
    sign_in_of,
    user_authorization_header,
)
from entra_mw.testing import FakeClock, FakeEntra

from .conftest import Site, make_site


def build_app(site: Site) -> Flask:
    app = Flask(__name__)
    init_sign_in(app, site.signin)

    @app.get("/")
    def index() -> str:
        return f"hello {current_user.name}" if current_user else "hello stranger"

    @app.get("/me")
    @login_required
    def me() -> dict[str, object]:
        header = user_authorization_header([site.api_scope])
        return {"oid": current_user.oid, "name": current_user.name, "header": header[:10]}

    @app.get("/gone")
    @login_required
    def gone() -> str:
        raise SignInRequired("no refresh token any more")

    return app


@pytest.fixture
def app(site: Site) -> Flask:
    return build_app(site)


def set_cookies(response: TestResponse) -> dict[str, str]:
    return {h.split("=", 1)[0]: h for h in response.headers.getlist("Set-Cookie")}


def sign_in(site: Site, client: FlaskClient, path: str = "/me") -> TestResponse:
    start = client.get(path)
    if not path.startswith("/auth/login"):
        assert start.status_code == 302
        start = client.get(start.headers["Location"])
    assert start.status_code == 302
    params = site.sign_in(start.headers["Location"])
    return client.post("/auth/callback", data=params)


def test_anonymous_browser_signs_in_and_comes_back(site: Site, app: Flask) -> None:
    client = app.test_client()
    first = client.get("/me?tab=1")
    assert first.status_code == 302
    assert first.headers["Location"] == "/auth/login?next=/me?tab%3D1"
    login = client.get(first.headers["Location"])
    assert login.status_code == 302 and login.headers["Cache-Control"] == "no-store"
    assert login.headers["Location"].startswith("https://login.microsoftonline.com/")
    pending = set_cookies(login)[PENDING_COOKIE]
    assert "HttpOnly" in pending and "SameSite=None" in pending and "Secure" in pending and "Path=/" in pending
    params = site.sign_in(login.headers["Location"])
    back = client.post("/auth/callback", data=params)
    assert back.status_code == 303 and back.headers["Location"] == "/me?tab=1"
    cookies = set_cookies(back)
    session = cookies[SESSION_COOKIE]
    assert "HttpOnly" in session and "SameSite=Lax" in session and "Secure" not in session  # loopback
    assert "Expires=Thu, 01 Jan 1970" in cookies[PENDING_COOKIE]  # the pending id is dropped
    value = session.split(";", 1)[0].split("=", 1)[1]
    assert len(value) == 43 and not value.startswith("eyJ")  # an opaque random id, not a token
    me = client.get("/me?tab=1")
    assert me.status_code == 200
    assert me.json == {"oid": site.s.user.object_id, "name": site.s.user.display_name, "header": "Bearer eyJ"}
    assert client.get("/").text == f"hello {site.s.user.display_name}"


def test_cookies_are_secure_off_loopback(site: Site, app: Flask) -> None:
    client = app.test_client()
    site.fake.add_redirect_uri(site.web, "https://app.contoso.com/auth/callback")
    login = client.get("/auth/login", base_url="https://app.contoso.com")
    assert "redirect_uri=https%3A%2F%2Fapp.contoso.com%2Fauth%2Fcallback" in login.headers["Location"]
    params = site.sign_in(login.headers["Location"])
    back = client.post("/auth/callback", data=params, base_url="https://app.contoso.com")
    session = set_cookies(back)[SESSION_COOKIE]
    assert "Secure" in session and "HttpOnly" in session and "SameSite=Lax" in session


def test_tokens_never_reach_the_browser(site: Site, app: Flask) -> None:
    client = app.test_client()
    back = sign_in(site, client)
    everything = " ".join(back.headers.getlist("Set-Cookie")) + back.get_data(as_text=True)
    assert "eyJ" not in everything
    for cookie in (PENDING_COOKIE, SESSION_COOKIE):
        jar = client.get_cookie(cookie)
        assert jar is None or "." not in jar.value


def test_session_id_is_new_at_every_sign_in(site: Site, app: Flask) -> None:
    client = app.test_client()
    sign_in(site, client)
    first = client.get_cookie(SESSION_COOKIE)
    assert first is not None
    sign_in(site, client, "/auth/login?next=/me")
    second = client.get_cookie(SESSION_COOKIE)
    assert second is not None and second.value != first.value
    assert not site.signin.user(first.value)  # the old session is over
    assert site.signin.user(second.value)


def test_fixed_session_id_is_useless(site: Site, app: Flask) -> None:
    client = app.test_client()
    client.set_cookie(SESSION_COOKIE, "attacker-chosen-id")
    assert client.get("/me").status_code == 302
    sign_in(site, client)
    cookie = client.get_cookie(SESSION_COOKIE)
    assert cookie is not None and cookie.value != "attacker-chosen-id"


@pytest.mark.parametrize(
    "target", ["https://evil.example/", "//evil.example/x", "/\\evil.example", "javascript:alert(1)", "/%0d%0a"]
)
def test_next_off_site_lands_on_the_start_page(site: Site, app: Flask, target: str) -> None:
    client = app.test_client()
    back = sign_in(site, client, "/auth/login?" + urllib.parse.urlencode({"next": target}))
    expected = target if target == "/%0d%0a" else "/"
    assert back.status_code == 303 and back.headers["Location"] == expected


def test_tampered_state_gets_an_error_page(site: Site, app: Flask) -> None:
    client = app.test_client()
    login = client.get("/auth/login")
    params = site.sign_in(login.headers["Location"])
    back = client.post("/auth/callback", data={**params, "state": "<script>x</script>"})
    assert back.status_code == 400 and back.content_type.startswith("text/html")
    assert "<script>" not in back.text and "does not match" in back.text
    assert client.get_cookie(SESSION_COOKIE) is None
    assert client.get_cookie(PENDING_COOKIE) is None


def test_callback_from_another_browser_is_refused(site: Site, app: Flask) -> None:
    victim, attacker = app.test_client(), app.test_client()
    login = attacker.get("/auth/login")
    params = site.sign_in(login.headers["Location"])
    # Login CSRF: the attacker's own code and state posted from the victim's browser (no pending cookie there).
    back = victim.post("/auth/callback", data=params)
    assert back.status_code == 400 and victim.get_cookie(SESSION_COOKIE) is None


def test_logout_is_a_same_origin_post(site: Site, app: Flask) -> None:
    client = app.test_client()
    sign_in(site, client)
    cookie = client.get_cookie(SESSION_COOKIE)
    assert cookie is not None
    assert client.get("/auth/logout").status_code == 405
    refused = client.post("/auth/logout", headers={"Origin": "https://evil.example"})
    assert refused.status_code == 403 and site.signin.user(cookie.value)
    cross = client.post("/auth/logout", headers={"Sec-Fetch-Site": "cross-site"})
    assert cross.status_code == 403
    out = client.post("/auth/logout", headers={"Origin": "http://localhost", "Sec-Fetch-Site": "same-origin"})
    assert out.status_code == 303
    target = urllib.parse.urlsplit(out.headers["Location"])
    assert target.path == f"/{site.s.tenant.tenant_id}/oauth2/v2.0/logout"
    assert urllib.parse.parse_qs(target.query)["post_logout_redirect_uri"] == ["http://localhost/"]
    assert "Expires=Thu, 01 Jan 1970" in set_cookies(out)[SESSION_COOKIE]
    assert not site.signin.user(cookie.value)
    assert client.get("/me").status_code == 302


def test_login_required_turns_a_lost_session_into_a_new_sign_in(site: Site, app: Flask) -> None:
    client = app.test_client()
    sign_in(site, client)
    gone = client.get("/gone")
    assert gone.status_code == 302 and gone.headers["Location"] == "/auth/login?next=/gone"


def test_entra_unreachable_at_login_is_a_503_page(fake_entra: FakeEntra, fake_clock: FakeClock) -> None:
    site = make_site(fake_entra, fake_clock)
    app = build_app(site)
    fake_entra.faults.outage("*")
    page = app.test_client().get("/auth/login")
    assert page.status_code == 503 and "could not be reached" in page.text
    site.auth.close()


def test_setup_errors(site: Site) -> None:
    app = Flask(__name__)
    with app.test_request_context(), pytest.raises(RuntimeError, match="not set up"):
        sign_in_of()
    init_sign_in(app, site.signin)
    assert sign_in_of(app) is site.signin
    with pytest.raises(RuntimeError, match="already"):
        init_sign_in(app, site.signin)


@pytest.fixture
def plain_app() -> Flask:
    app = Flask(__name__)

    @app.get("/")
    def index() -> str:
        return "anonymous" if not current_user else "?"

    return app


def test_current_user_without_sign_in_is_anonymous(plain_app: Flask) -> None:
    assert plain_app.test_client().get("/").text == "anonymous"
