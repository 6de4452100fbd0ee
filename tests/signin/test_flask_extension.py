"""Web sign-in through the Flask extension: EntraMW(app, auth=..., sign_in=...) and app.config["ENTRA_MW_SIGNIN"]."""

from __future__ import annotations

import pytest
from flask import Flask

from entra_mw import ConfigurationError, EntraAuth, EntraConfig
from entra_mw._signin import SESSION_COOKIE
from entra_mw.contrib.flask import EntraMW, current_principal, current_user, login_required, require
from entra_mw.testing import FakeClock, FakeEntra

from .conftest import Site, make_site


def pages(app: Flask) -> Flask:
    @app.get("/")
    def index() -> str:
        return f"hello {current_user.name}" if current_user else "hello stranger"

    @app.get("/me")
    @login_required
    def me() -> str:
        return str(current_user.oid)

    @app.get("/api/who")
    @require(scopes=["Weather.Read"])
    def who() -> str:
        return str(current_principal.oid)

    return app


def test_extension_with_sign_in_serves_browsers_and_bearer_callers(site: Site) -> None:
    app = pages(Flask(__name__))
    EntraMW(app, auth=site.auth, sign_in=site.signin)
    client = app.test_client()
    assert client.get("/").text == "hello stranger"  # no bearer token needed by default with sign-in
    login = client.get("/me")
    assert login.status_code == 302 and login.headers["Location"] == "/auth/login?next=/me"
    start = client.get(login.headers["Location"])
    back = client.post("/auth/callback", data=site.sign_in(start.headers["Location"]))
    assert back.status_code == 303 and client.get_cookie(SESSION_COOKIE) is not None
    assert client.get("/me").text == site.s.user.object_id
    assert client.get("/api/who").status_code == 401  # a browser session is not a bearer caller


def test_sign_in_from_config(fake_entra: FakeEntra, fake_clock: FakeClock) -> None:
    site = make_site(fake_entra, fake_clock)
    app = pages(Flask(__name__))
    app.config["ENTRA_MW_SIGNIN"] = {"scopes": site.api_scope, "url_prefix": "/account", "after_logout": "/bye"}
    app.config["ENTRA_MW_REQUIRED"] = True  # bearer tokens everywhere, yet the sign-in routes stay reachable
    EntraMW(app, auth=site.auth)
    client = app.test_client()
    assert client.get("/").status_code == 401
    start = client.get("/account/login?next=/me")
    assert (
        start.status_code == 302
        and "redirect_uri=http%3A%2F%2Flocalhost%2Faccount%2Fcallback" in (start.headers["Location"])
    )
    site.fake.add_redirect_uri(site.web, "http://localhost/account/callback")
    start = client.get("/account/login?next=/me")
    back = client.post("/account/callback", data=site.sign_in(start.headers["Location"]))
    assert back.status_code == 303 and back.headers["Location"] == "/me"
    out = client.post("/account/logout", headers={"Origin": "http://localhost"})
    assert "post_logout_redirect_uri=http%3A%2F%2Flocalhost%2Fbye" in out.headers["Location"]
    site.auth.close()


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"scope": ["x"]}, "unknown keys"),
        ("scopes", "must be a mapping"),
        ({"url_prefix": "auth"}, "url_prefix"),
        ({"url_prefix": "//evil"}, "url_prefix"),
        ({"after_logout": "https://evil.example/"}, "after_logout"),
        ({"response_mode": "fragment"}, "response_mode"),
    ],
)
def test_bad_sign_in_settings_name_the_key(value: object, message: str) -> None:
    app = Flask(__name__)
    app.config["ENTRA_MW_SIGNIN"] = value
    with EntraAuth(
        EntraConfig(tenant_id="contoso.onmicrosoft.com", client_id="11111111-2222-3333-4444-555555555555")
    ) as auth:
        with pytest.raises(ConfigurationError, match=message) as info:
            EntraMW(app, auth=auth)
    assert "ENTRA_MW_SIGNIN" in str(info.value) or "ENTRA_MW_SIGNIN" in (info.value.key or "")


def test_sign_in_must_be_a_web_sign_in() -> None:
    with pytest.raises(TypeError, match="sign_in"):
        EntraMW(sign_in="yes")  # type: ignore[arg-type]
