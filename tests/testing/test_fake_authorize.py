"""FakeEntra's interactive side in process: /authorize, the sign-in and consent pages, the authorization_code
grant, SSO and logout, and every refusal Entra gives on the way (spec §5; ED v2-oauth2-auth-code-flow.md)."""

from __future__ import annotations

import base64
import hashlib
import secrets
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass

import httpx2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from entra_mw import EntraAuth, EntraConfig
from entra_mw.testing import App, FakeClock, FakeEntra, Scenario
from entra_mw.testing._mint import pairwise_sub

from ._browser import Browser, forms_of, location_of, redirect_params
from ._tok_support import claims_of, error_of, post

LOGIN = "https://login.microsoftonline.com"
WEB_REDIRECT = "https://app.example/auth/callback"


@dataclass
class World:
    fake: FakeEntra
    s: Scenario
    web: App
    web_secret: str
    cli: App
    browser: Browser

    @property
    def tid(self) -> str:
        return self.s.tenant.tenant_id

    @property
    def api_scope(self) -> str:
        return f"api://{self.s.api.app_id}/Weather.Read"

    def new_browser(self) -> Browser:
        return Browser(httpx2.Client(transport=self.fake.transport))


@pytest.fixture
def w(fake_entra: FakeEntra) -> Iterator[World]:
    s = fake_entra.quickstart()
    web = fake_entra.add_app(s.tenant, display_name="weather-web", redirect_uris=[WEB_REDIRECT])
    web_secret = fake_entra.add_secret(web)
    cli = fake_entra.add_public_client(
        s.tenant,
        display_name="weather-cli",
        redirect_uris=[
            "http://localhost",
            "http://localhost/callback",
            "http://localhost/signed-out",
            "http://localhost/x",
        ],
    )
    with httpx2.Client(transport=fake_entra.transport) as client:
        yield World(fake_entra, s, web, web_secret, cli, Browser(client))


def pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


def authorize_url(tenant: str, **params: str) -> str:
    return f"{LOGIN}/{tenant}/oauth2/v2.0/authorize?{urllib.parse.urlencode(params)}"


def cli_params(w: World, challenge: str, **extra: str) -> dict[str, str]:
    params = {
        "client_id": w.cli.app_id,
        "response_type": "code",
        "redirect_uri": "http://localhost:8400/callback",
        "scope": f"{w.api_scope} openid profile offline_access",
        "state": "st-123",
        "nonce": "n-456",
        "code_challenge": challenge,
        "code_challenge_method": "S256",
    }
    params.update(extra)
    return {k: v for k, v in params.items() if v}


def web_params(w: World, **extra: str) -> dict[str, str]:
    params = {
        "client_id": w.web.app_id,
        "response_type": "code",
        "redirect_uri": WEB_REDIRECT,
        "scope": f"{w.api_scope} openid profile offline_access",
        "state": "web-state",
        "nonce": "web-nonce",
    }
    params.update(extra)
    return {k: v for k, v in params.items() if v}


def sign_in(w: World, url: str, *, browser: Browser | None = None, consent: bool = True) -> httpx2.Response:
    b = browser or w.browser
    page = b.open(url)
    if page.status_code == 302:
        return page  # signed in already (SSO) and consented
    assert page.status_code == 200, page.text
    after = b.sign_in(page, w.s.user.upn, w.s.user_password)
    if consent and after.status_code == 200:
        after = b.consent(after)
    return after


def redeem(w: World, code: str, verifier: str | None, **extra: str) -> httpx2.Response:
    form = {
        "grant_type": "authorization_code",
        "client_id": w.cli.app_id,
        "code": code,
        "redirect_uri": "http://localhost:8400/callback",
        "scope": f"{w.api_scope} openid profile offline_access",
        "client_info": "1",
    }
    if verifier is not None:
        form["code_verifier"] = verifier
    form.update(extra)
    return post(w.fake, w.tid, {k: v for k, v in form.items() if v})


def cli_code(w: World, **extra: str) -> tuple[str, str]:
    verifier, challenge = pkce()
    params = redirect_params(sign_in(w, authorize_url(w.tid, **cli_params(w, challenge, **extra))))
    return params["code"], verifier


# -- the pages ------------------------------------------------------------------------------------------------


def test_sign_in_page_is_one_plain_form(w: World) -> None:
    _, challenge = pkce()
    page = w.browser.open(authorize_url(w.tid, **cli_params(w, challenge, login_hint=w.s.user.upn)))
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    assert "script-src" not in page.headers["content-security-policy"]
    forms, scripts = forms_of(page)
    assert scripts == 0
    assert len(forms) == 1
    form = forms[0]
    assert form.method == "post"
    assert form.action == f"/{w.tid}/login"
    visible = [(n, t) for n, t in form.inputs if t != "hidden"]
    assert visible == [("username", "email"), ("password", "password")]
    assert form.fields["username"] == w.s.user.upn  # login_hint prefills it
    assert '<button type="submit"' in page.text
    assert w.cli.display_name in page.text
    cookie = page.headers["set-cookie"]
    assert "HttpOnly" in cookie and "Secure" in cookie and "SameSite=Lax" in cookie


def test_public_client_code_flow_end_to_end(w: World) -> None:
    verifier, challenge = pkce()
    page = w.browser.open(authorize_url(w.tid, **cli_params(w, challenge)))
    consent = w.browser.sign_in(page, w.s.user.upn, w.s.user_password)
    assert consent.status_code == 200
    assert "Weather.Read" in consent.text
    assert set(forms_of(consent)[0][0].buttons) == {"decision"}
    params = redirect_params(w.browser.consent(consent))
    assert params["state"] == "st-123"
    assert params["session_state"]
    response = redeem(w, params["code"], verifier)
    assert response.status_code == 200, response.text
    body = response.json()
    assert {"access_token", "refresh_token", "id_token", "client_info", "expires_in", "scope"} <= set(body)
    assert body["scope"].split()[0] == f"api://{w.s.api.app_id}/Weather.Read"
    access = w.fake.decode(body["access_token"])
    assert access["aud"] == w.s.api.app_id
    assert access["scp"] == "Weather.Read"
    assert access["azp"] == w.cli.app_id
    assert access["azpacr"] == "0"
    assert access["oid"] == w.s.user.object_id
    idt = w.fake.decode(body["id_token"])
    assert idt["aud"] == w.cli.app_id
    assert idt["iss"] == f"https://login.microsoftonline.com/{w.tid}/v2.0"
    assert idt["nonce"] == "n-456"
    assert idt["tid"] == w.tid
    assert idt["oid"] == w.s.user.object_id
    assert idt["preferred_username"] == w.s.user.upn
    assert idt["name"] == w.s.user.display_name
    assert idt["ver"] == "2.0"
    assert idt["sid"] == params["session_state"]
    assert idt["sub"] == pairwise_sub(w.s.user.object_id, w.cli.app_id)
    assert idt["sub"] != pairwise_sub(w.s.user.object_id, w.web.app_id)  # pairwise per app
    assert idt["nbf"] == idt["iat"] < idt["exp"]
    # the API accepts the access token
    auth = EntraAuth(
        EntraConfig(tenant_id=w.tid, client_id=w.s.api.app_id), transport=w.fake.transport, clock=w.fake.clock
    )
    assert auth.validate(body["access_token"]).scopes == frozenset({"Weather.Read"})
    auth.close()
    # the refresh token works without a secret for a public client
    refreshed = post(
        w.fake,
        w.tid,
        {
            "grant_type": "refresh_token",
            "client_id": w.cli.app_id,
            "refresh_token": body["refresh_token"],
            "scope": w.api_scope,
        },
    )
    assert refreshed.status_code == 200, refreshed.text
    assert w.fake.request_count("token:authorization_code") == 1
    assert w.fake.request_count("authorize") == 1
    assert w.fake.request_count("login") == 1
    assert w.fake.request_count("consent") == 1


def test_confidential_client_form_post_without_pkce(w: World) -> None:
    page = w.browser.open(authorize_url(w.tid, **web_params(w, response_mode="form_post")))
    answer = w.browser.consent(w.browser.sign_in(page, w.s.user.upn, w.s.user_password))
    assert answer.status_code == 200
    forms, scripts = forms_of(answer)
    assert forms[0].action == WEB_REDIRECT
    assert forms[0].method == "post"
    assert forms[0].fields["state"] == "web-state"
    assert scripts == 1  # submits itself; the Continue button works without JavaScript
    assert "Continue" in answer.text
    code = forms[0].fields["code"]
    form = {
        "grant_type": "authorization_code",
        "client_id": w.web.app_id,
        "client_secret": w.web_secret,
        "code": code,
        "redirect_uri": WEB_REDIRECT,
        "scope": f"{w.api_scope} openid profile offline_access",
    }
    body = post(w.fake, w.tid, form).json()
    assert claims_of(body["access_token"])["azpacr"] == "1"
    assert claims_of(body["id_token"])["nonce"] == "web-nonce"


def test_confidential_client_may_use_pkce_plain_or_s256(w: World) -> None:
    verifier = secrets.token_urlsafe(48)
    params = redirect_params(
        sign_in(w, authorize_url(w.tid, **web_params(w, code_challenge=verifier, code_challenge_method="plain")))
    )
    form = {
        "grant_type": "authorization_code",
        "client_id": w.web.app_id,
        "client_secret": w.web_secret,
        "code": params["code"],
        "redirect_uri": WEB_REDIRECT,
        "code_verifier": verifier,
    }
    assert post(w.fake, w.tid, form).status_code == 200


def test_sso_session_prompts_and_consent_memory(w: World) -> None:
    first, _ = cli_code(w)
    assert first
    # same browser: signed in and consented, so straight back with a code
    _, challenge = pkce()
    again = w.browser.open(authorize_url(w.tid, **cli_params(w, challenge)))
    assert "code" in redirect_params(again)
    silent = w.browser.open(authorize_url(w.tid, **cli_params(w, challenge, prompt="none")))
    assert "code" in redirect_params(silent)
    # prompt=login asks for the password again; prompt=consent shows the consent page again
    assert w.browser.open(authorize_url(w.tid, **cli_params(w, challenge, prompt="login"))).status_code == 200
    consent_again = w.browser.open(authorize_url(w.tid, **cli_params(w, challenge, prompt="consent")))
    assert consent_again.status_code == 200
    assert forms_of(consent_again)[0][0].action == f"/{w.tid}/consent"
    # another browser has no session: prompt=none answers login_required at the redirect URI
    with httpx2.Client(transport=w.fake.transport) as other:
        cold = Browser(other).open(authorize_url(w.tid, **cli_params(w, challenge, prompt="none")))
    err = redirect_params(cold)
    assert err["error"] == "login_required"
    assert err["error_description"].startswith("AADSTS50058: ")
    assert err["state"] == "st-123"


def test_prompt_none_without_consent_is_consent_required(w: World) -> None:
    cli_code(w)  # signed in (and consented for the cli)
    _, challenge = pkce()
    other_api = w.fake.add_app(w.s.tenant, display_name="orders", scopes=("Orders.Read",))
    scope = f"api://{other_api.app_id}/Orders.Read openid"
    err = redirect_params(w.browser.open(authorize_url(w.tid, **cli_params(w, challenge, scope=scope, prompt="none"))))
    assert err["error"] == "consent_required"
    assert err["error_description"].startswith("AADSTS65001: ")


def test_pre_authorized_client_sees_no_consent_page(w: World) -> None:
    w.fake.pre_authorize(w.s.api, w.cli, ["Weather.Read"])
    verifier, challenge = pkce()
    page = w.browser.open(authorize_url(w.tid, **cli_params(w, challenge)))
    params = redirect_params(w.browser.sign_in(page, w.s.user.upn, w.s.user_password))
    assert redeem(w, params["code"], verifier).status_code == 200
    with pytest.raises(ValueError, match="exposes no scope"):
        w.fake.pre_authorize(w.s.api, w.cli, ["Nope"])


def test_declined_consent_is_access_denied(w: World) -> None:
    _, challenge = pkce()
    page = w.browser.open(authorize_url(w.tid, **cli_params(w, challenge)))
    denied = w.browser.consent(w.browser.sign_in(page, w.s.user.upn, w.s.user_password), accept=False)
    err = redirect_params(denied)
    assert err["error"] == "access_denied"
    assert err["error_description"].startswith("AADSTS65004: ")


def test_sign_in_only_gets_a_graph_token_and_an_id_token(w: World) -> None:
    verifier, challenge = pkce()
    code = redirect_params(sign_in(w, authorize_url(w.tid, **cli_params(w, challenge, scope="openid profile"))))
    body = redeem(w, code["code"], verifier, scope="openid profile").json()
    assert claims_of(body["access_token"])["aud"] == "00000003-0000-0000-c000-000000000000"
    assert claims_of(body["id_token"])["aud"] == w.cli.app_id
    assert "refresh_token" not in body  # no offline_access


def test_loopback_redirect_uris_match_any_port_but_not_other_paths(w: World) -> None:
    _, challenge = pkce()
    ok = w.browser.open(authorize_url(w.tid, **cli_params(w, challenge, redirect_uri="http://localhost:51234/")))
    assert ok.status_code == 200
    bad = w.browser.open(authorize_url(w.tid, **cli_params(w, challenge, redirect_uri="http://localhost:5/y")))
    assert bad.status_code == 400
    assert "AADSTS50011" in bad.text


# -- refusals at /authorize --------------------------------------------------------------------------------------


def test_untrusted_requests_are_answered_on_the_page(w: World) -> None:
    _, challenge = pkce()
    cases = {
        "AADSTS700016": cli_params(w, challenge, client_id="00000000-0000-0000-0000-00000000dead"),
        "AADSTS50011": cli_params(w, challenge, redirect_uri="https://evil.example/steal"),
        "AADSTS900144": cli_params(w, challenge, client_id=""),
    }
    for code, params in cases.items():
        page = w.browser.open(authorize_url(w.tid, **params))
        assert page.status_code == 400, code
        assert "location" not in page.headers
        assert f"{code}:" in page.text
        assert "evil.example/steal" not in page.headers.get("location", "")
    unknown_tenant = w.browser.open(authorize_url("nowhere.example", **cli_params(w, challenge)))
    assert "AADSTS90002" in unknown_tenant.text
    # the redirect URI is not reflected unescaped
    page = w.browser.open(authorize_url(w.tid, **cli_params(w, challenge, redirect_uri='https://x/"><b>')))
    assert '"><b>' not in page.text


@pytest.mark.parametrize(
    ("extra", "error", "code"),
    [
        ({"response_type": "token"}, "unsupported_response_type", 700051),
        ({"response_type": "id_token"}, "unsupported_response_type", 700054),
        ({"response_type": "magic"}, "unsupported_response_type", 70005),
        ({"response_type": ""}, "invalid_request", 900144),
        ({"code_challenge": "", "code_challenge_method": ""}, "invalid_request", 9002325),
        ({"code_challenge_method": "plain"}, "invalid_request", 50149),
        ({"code_challenge": "short"}, "invalid_request", 501491),
        ({"prompt": "always"}, "invalid_request", 90023),
        ({"scope": ""}, "invalid_request", 900144),
        ({"scope": "api://nowhere/x.read"}, "invalid_resource", 500011),
        ({"scope": "{api}/Nope.Write"}, "invalid_client", 650053),
        ({"resource": "https://mcp.example.test/mcp"}, "invalid_target", 9010010),
    ],
)
def test_bad_requests_return_to_the_redirect_uri(w: World, extra: dict[str, str], error: str, code: int) -> None:
    _, challenge = pkce()
    values = {k: v.replace("{api}", f"api://{w.s.api.app_id}") for k, v in extra.items()}
    answer = w.browser.open(authorize_url(w.tid, **cli_params(w, challenge, **values)))
    assert location_of(answer).startswith("http://localhost:8400/callback?")
    err = redirect_params(answer)
    assert err["error"] == error
    assert err["error_description"].startswith(f"AADSTS{code}: ")
    assert "Trace ID:" in err["error_description"]
    assert err["state"] == "st-123"
    assert "code" not in err


def test_matching_resource_indicator_is_accepted(w: World) -> None:
    verifier, challenge = pkce()
    resource = f"api://{w.s.api.app_id}"
    code = redirect_params(sign_in(w, authorize_url(w.tid, **cli_params(w, challenge, resource=resource))))["code"]
    assert redeem(w, code, verifier, resource=resource).status_code == 200


def test_errors_use_the_response_mode(w: World) -> None:
    answer = w.browser.open(authorize_url(w.tid, **web_params(w, response_type="token", response_mode="form_post")))
    form = forms_of(answer)[0][0]
    assert form.action == WEB_REDIRECT
    assert form.fields["error"] == "unsupported_response_type"
    fragment = w.browser.open(authorize_url(w.tid, **web_params(w, response_type="token", response_mode="fragment")))
    assert "#error=unsupported_response_type" in location_of(fragment)
    bad_mode = w.browser.open(authorize_url(w.tid, **web_params(w, response_mode="carrier-pigeon")))
    assert redirect_params(bad_mode)["error_description"].startswith("AADSTS70007: ")


# -- the sign-in post -------------------------------------------------------------------------------------------


def test_wrong_password_and_unknown_user_stay_on_the_page(w: World) -> None:
    _, challenge = pkce()
    page = w.browser.open(authorize_url(w.tid, **cli_params(w, challenge)))
    wrong = w.browser.sign_in(page, w.s.user.upn, "not-the-password")
    assert wrong.status_code == 200
    assert "AADSTS50126" in wrong.text
    assert "fakeentra_session" not in wrong.headers.get("set-cookie", "")
    assert "not-the-password" not in wrong.text
    unknown = w.browser.sign_in(wrong, "nobody@contoso.onmicrosoft.com", "x")
    assert "AADSTS50034" in unknown.text
    agent_user = w.browser.sign_in(unknown, w.s.agent_user.upn, "x")  # agent users have no password
    assert "AADSTS50034" in agent_user.text or "AADSTS50126" in agent_user.text
    ok = w.browser.consent(w.browser.sign_in(agent_user, w.s.user.upn, w.s.user_password))
    assert "code" in redirect_params(ok)


def test_sign_in_posts_from_elsewhere_are_refused(w: World) -> None:
    _, challenge = pkce()
    page = w.browser.open(authorize_url(w.tid, **cli_params(w, challenge)))
    form = forms_of(page)[0][0]
    data = {**form.fields, "username": w.s.user.upn, "password": w.s.user_password}
    url = f"{LOGIN}/{w.tid}/login"
    # another site makes the victim's browser post a form: no SameSite=Lax cookie comes with it
    with httpx2.Client(transport=w.fake.transport) as attacker:
        forged = attacker.post(url, data=data)
    assert forged.status_code == 403
    # the flow is burnt: even the real page cannot use it now
    page2 = w.browser.open(authorize_url(w.tid, **cli_params(w, challenge)))
    form2 = forms_of(page2)[0][0]
    wrong_token = w.browser.client.post(url, data={**form2.fields, "csrf": "x" * 43, "username": "a", "password": "b"})
    assert wrong_token.status_code == 403
    unknown_flow = w.browser.client.post(url, data={**form2.fields, "flow": "nope"})
    assert "AADSTS50089" in unknown_flow.text
    assert w.browser.client.get(url).status_code == 405


def test_pending_sign_in_expires(w: World, fake_clock: FakeClock) -> None:
    _, challenge = pkce()
    page = w.browser.open(authorize_url(w.tid, **cli_params(w, challenge)))
    fake_clock.advance(16 * 60)
    late = w.browser.sign_in(page, w.s.user.upn, w.s.user_password)
    assert late.status_code == 400
    assert "AADSTS50089" in late.text


# -- the authorization_code grant -------------------------------------------------------------------------------


def test_code_is_single_use_and_a_replay_revokes_its_refresh_token(w: World) -> None:
    code, verifier = cli_code(w)
    first = redeem(w, code, verifier).json()
    assert error_of(redeem(w, code, verifier)) == (400, "invalid_grant", 54005)
    refresh = post(
        w.fake,
        w.tid,
        {"grant_type": "refresh_token", "client_id": w.cli.app_id, "refresh_token": first["refresh_token"]},
    )
    assert error_of(refresh) == (400, "invalid_grant", 70000)


def test_code_binding_refusals(w: World, fake_clock: FakeClock) -> None:
    code, verifier = cli_code(w)
    assert error_of(redeem(w, code, "x" * 43)) == (400, "invalid_grant", 501481)
    assert error_of(redeem(w, code, None)) == (400, "invalid_request", 900144)
    assert error_of(redeem(w, code, verifier, redirect_uri="http://localhost:9999/other")) == (
        400,
        "invalid_grant",
        500112,
    )
    other = w.fake.add_public_client(w.s.tenant, redirect_uris=["http://localhost"])
    assert error_of(redeem(w, code, verifier, client_id=other.app_id)) == (400, "invalid_grant", 70000)
    assert error_of(redeem(w, code, verifier, client_secret="s3cret")) == (401, "invalid_client", 700025)
    assert error_of(redeem(w, "1.Anot-a-code", verifier)) == (400, "invalid_grant", 70000)
    assert error_of(redeem(w, "", verifier)) == (400, "invalid_request", 900144)
    other_tenant = w.fake.add_tenant(domain="fabrikam.onmicrosoft.com")
    moved = post(
        w.fake,
        other_tenant.tenant_id,
        {
            "grant_type": "authorization_code",
            "client_id": w.cli.app_id,
            "code": code,
            "redirect_uri": "http://localhost:8400/callback",
            "code_verifier": verifier,
        },
    )
    assert error_of(moved)[2] in (700005, 700016)
    # none of the refusals used the code up
    assert redeem(w, code, verifier).status_code == 200
    late, late_verifier = cli_code(w)
    fake_clock.advance(601)
    assert error_of(redeem(w, late, late_verifier)) == (400, "invalid_grant", 70008)


def test_confidential_client_must_authenticate_to_redeem(w: World) -> None:
    params = redirect_params(sign_in(w, authorize_url(w.tid, **web_params(w))))
    form = {
        "grant_type": "authorization_code",
        "client_id": w.web.app_id,
        "code": params["code"],
        "redirect_uri": WEB_REDIRECT,
    }
    assert error_of(post(w.fake, w.tid, form)) == (401, "invalid_client", 7000218)
    assert error_of(post(w.fake, w.tid, {**form, "client_secret": "wrong"})) == (401, "invalid_client", 7000215)
    assert post(w.fake, w.tid, {**form, "client_secret": w.web_secret}).status_code == 200


def test_mismatched_resource_indicator_at_the_token_endpoint(w: World) -> None:
    code, verifier = cli_code(w)
    assert error_of(redeem(w, code, verifier, resource="https://mcp.example.test")) == (
        400,
        "invalid_target",
        9010010,
    )


def test_max_age_puts_auth_time_in_the_id_token(w: World, fake_clock: FakeClock) -> None:
    verifier, challenge = pkce()
    code = redirect_params(sign_in(w, authorize_url(w.tid, **cli_params(w, challenge, max_age="600"))))["code"]
    idt = claims_of(redeem(w, code, verifier).json()["id_token"])
    assert idt["auth_time"] == int(fake_clock.time())
    fake_clock.advance(700)
    # the session is older than max_age: sign in again
    assert w.browser.open(authorize_url(w.tid, **cli_params(w, challenge, max_age="600"))).status_code == 200


# -- logout -----------------------------------------------------------------------------------------------------


def test_logout_redirects_only_to_registered_uris_and_ends_the_session(w: World) -> None:
    code, verifier = cli_code(w)
    id_token = redeem(w, code, verifier).json()["id_token"]
    logout = f"{LOGIN}/{w.tid}/oauth2/v2.0/logout"
    back = w.browser.client.get(
        logout,
        params={
            "post_logout_redirect_uri": "http://localhost:8400/signed-out",
            "client_id": w.cli.app_id,
            "state": "s",
        },
    )
    assert location_of(back) == "http://localhost:8400/signed-out?state=s"
    assert "Max-Age=0" in back.headers["set-cookie"]
    _, challenge = pkce()
    # signed out: the next authorize asks for the password again
    assert w.browser.open(authorize_url(w.tid, **cli_params(w, challenge))).status_code == 200
    by_hint = w.browser.client.get(
        logout, params={"post_logout_redirect_uri": "http://localhost/x", "id_token_hint": id_token}
    )
    assert location_of(by_hint) == "http://localhost/x"
    evil = w.browser.client.get(
        logout, params={"post_logout_redirect_uri": "https://evil.example/", "client_id": w.cli.app_id}
    )
    assert evil.status_code == 200
    assert "location" not in evil.headers
    assert "AADSTS50011" in evil.text
    anonymous = w.browser.client.get(logout, params={"post_logout_redirect_uri": "http://localhost/x"})
    assert "location" not in anonymous.headers  # no app named: nothing to check it against
    assert w.fake.request_count("logout") == 4


def test_registry_validates_redirect_uris(fake_entra: FakeEntra) -> None:
    tenant = fake_entra.quickstart().tenant
    with pytest.raises(ValueError, match="plain http"):
        fake_entra.add_app(tenant, redirect_uris=["http://app.example/cb"])
    with pytest.raises(ValueError, match="absolute"):
        fake_entra.add_public_client(tenant, redirect_uris=["/relative"])
    app = fake_entra.add_app(tenant)
    fake_entra.add_redirect_uri(app, "https://a.example/cb", "https://a.example/cb")
    assert app.redirect_uris == ["https://a.example/cb"]


def test_redirect_uris_with_control_characters_are_refused(fake_entra: FakeEntra) -> None:
    tenant = fake_entra.quickstart().tenant
    with pytest.raises(ValueError, match="control"):
        fake_entra.add_app(tenant, redirect_uris=["https://a.example/cb\r\nX-Injected: 1"])


PATHS = ["oauth2/v2.0/authorize", "login", "consent", "oauth2/v2.0/logout", "oauth2/logout"]
FIELDS = [
    "client_id",
    "redirect_uri",
    "response_type",
    "response_mode",
    "scope",
    "state",
    "nonce",
    "prompt",
    "login_hint",
    "max_age",
    "code_challenge",
    "code_challenge_method",
    "resource",
    "flow",
    "csrf",
    "username",
    "password",
    "decision",
    "post_logout_redirect_uri",
    "id_token_hint",
]


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    path=st.sampled_from(PATHS),
    method=st.sampled_from(["GET", "POST", "PUT"]),
    values=st.dictionaries(
        st.sampled_from(FIELDS),
        st.one_of(
            st.text(max_size=60),
            st.sampled_from(["code", "form_post", "none", "S256", "plain", "accept", "http://localhost/callback"]),
        ),
    ),
    tenant=st.sampled_from(["common", "organizations", "contoso.onmicrosoft.com", "x", "%00"]),
)
def test_any_interactive_request_gets_a_clear_answer(
    w: World, path: str, method: str, values: dict[str, str], tenant: str
) -> None:
    if "client_id" in values and values["client_id"] == "":
        values["client_id"] = w.cli.app_id
    url = f"{LOGIN}/{tenant}/{path}"
    if method == "GET":
        response = w.browser.client.get(url, params=values)
    else:
        response = w.browser.client.request(method, url, data=values)
    assert 200 <= response.status_code < 500, (response.status_code, response.text[:300])
    if response.status_code == 302:  # only ever to a registered redirect URI
        assert response.headers["location"].startswith(("http://localhost", WEB_REDIRECT))


def test_fake_sign_in_plays_the_person(w: World) -> None:
    verifier, challenge = pkce()
    url = authorize_url(w.tid, **cli_params(w, challenge))
    answer = w.fake.sign_in(url, username=w.s.user.upn, password=w.s.user_password)
    assert answer["state"] == "st-123"
    assert redeem(w, answer["code"], verifier).status_code == 200
    form_post = w.fake.sign_in(
        authorize_url(w.tid, **web_params(w, response_mode="form_post")),
        username=w.s.user.upn,
        password=w.s.user_password,
    )
    assert set(form_post) == {"code", "state", "session_state"}
    declined = w.fake.sign_in(
        authorize_url(w.tid, **cli_params(w, challenge, prompt="consent")),
        username=w.s.user.upn,
        password=w.s.user_password,
        consent=False,
    )
    assert declined["error"] == "access_denied"
    with pytest.raises(ValueError, match="AADSTS50126"):
        w.fake.sign_in(url, username=w.s.user.upn, password="wrong")
    with pytest.raises(ValueError, match="AADSTS50011"):
        w.fake.sign_in(
            authorize_url(w.tid, **cli_params(w, challenge, redirect_uri="https://evil.example/")),
            username=w.s.user.upn,
            password=w.s.user_password,
        )
    # with the same client, the SSO session answers without a password
    first = w.fake.sign_in(url, username=w.s.user.upn, password=w.s.user_password, client=w.browser.client)
    again = w.fake.sign_in(url, username="ignored", password="ignored", client=w.browser.client)
    assert first["session_state"] == again["session_state"]


def test_graph_user_read_needs_no_consent_page(w: World) -> None:
    verifier, challenge = pkce()
    url = authorize_url(w.tid, **cli_params(w, challenge, scope="User.Read openid offline_access"))
    answer = w.fake.sign_in(url, username=w.s.user.upn, password=w.s.user_password)
    body = redeem(w, answer["code"], verifier, scope="User.Read openid offline_access").json()
    access = claims_of(body["access_token"])
    assert (access["aud"], access["scp"]) == ("00000003-0000-0000-c000-000000000000", "User.Read")
    # Entra names Graph's permissions by their short names in the answer (see test_token_endpoint).
    assert body["scope"].startswith("User.Read")
    mail = authorize_url(w.tid, **cli_params(w, challenge, scope="Mail.Read openid", prompt="none"))
    assert w.fake.sign_in(mail, username=w.s.user.upn, password=w.s.user_password)["error"] in (
        "consent_required",
        "login_required",
    )
