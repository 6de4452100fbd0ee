"""The framework-free core of web sign-in against FakeEntra in process: the whole flow, and every refusal."""

from __future__ import annotations

import json
import logging
import urllib.parse

import pytest
from hypothesis import given
from hypothesis import strategies as st

from entra_mw import (
    ClientSecret,
    EntraAuth,
    EntraConfig,
    EntraError,
    SignInError,
    SignInRequired,
    TokenAcquisitionError,
    User,
    WebSignIn,
)
from entra_mw._signin import (
    ANONYMOUS,
    MemorySessionStore,
    _pending_key,
    cookie_attributes,
    safe_next,
    same_origin,
)
from entra_mw.testing import FakeClock, FakeEntra

from .conftest import REDIRECT, Site, make_site


def _query(url: str) -> dict[str, str]:
    return dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query))


def test_sign_in_keeps_tokens_on_the_server_and_gets_api_tokens_silently(site: Site) -> None:
    start = site.signin.start(redirect_uri=REDIRECT, next_path="/forecast?city=Oslo")
    q = _query(start.url)
    assert start.url.startswith(f"https://login.microsoftonline.com/{site.s.tenant.tenant_id}/oauth2/v2.0/authorize")
    assert q["code_challenge_method"] == "S256" and len(q["code_challenge"]) == 43
    assert q["state"] and q["nonce"] and q["redirect_uri"] == REDIRECT
    assert set(q["scope"].split()) >= {"openid", "profile", "offline_access", site.api_scope}
    assert len(start.pending_id) >= 43 and start.pending_id not in start.url

    done = site.signin.finish(start.pending_id, site.sign_in(start.url))
    assert done.next_path == "/forecast?city=Oslo"
    assert done.user.oid == site.s.user.object_id and done.user.tid == site.s.tenant.tenant_id
    assert done.user.username == site.s.user.upn and done.user.is_authenticated
    assert "session_id" not in repr(done) and done.session_id not in repr(done)
    assert site.signin.user(done.session_id) == done.user

    token = site.signin.access_token(done.session_id, scopes=[site.api_scope])
    claims = site.fake.decode(token)
    assert claims["aud"] in (site.s.api.app_id, site.s.api.identifier_uris[0])
    assert claims["oid"] == site.s.user.object_id and "Weather.Read" in claims["scp"].split()
    assert claims["azp"] == site.web.app_id
    requests_so_far = site.fake.request_count("token")
    assert site.signin.authorization_header(done.session_id, scopes=[site.api_scope]) == f"Bearer {token}"
    assert site.fake.request_count("token") == requests_so_far  # served from the session's cache


def test_another_scope_comes_from_the_refresh_token_once(site: Site) -> None:
    start = site.signin.start(redirect_uri=REDIRECT)
    done = site.signin.finish(start.pending_id, site.sign_in(start.url))
    site.fake.grant_consent(site.web, site.s.blueprint, ["access_agent"])
    scope = f"{site.s.blueprint.identifier_uris[0]}/access_agent"
    before = site.fake.request_count("token")
    other = site.signin.access_token(done.session_id, scopes=[scope])
    assert site.fake.decode(other)["aud"] in (site.s.blueprint.app_id, site.s.blueprint.identifier_uris[0])
    assert site.fake.request_count("token") == before + 1
    assert site.signin.access_token(done.session_id, scopes=[scope]) == other
    assert site.fake.request_count("token") == before + 1
    fresh = site.signin.access_token(done.session_id, scopes=[scope], force_refresh=True)
    assert fresh != other and site.fake.request_count("token") == before + 2


def test_pending_sign_in_is_used_once(site: Site) -> None:
    start = site.signin.start(redirect_uri=REDIRECT)
    params = site.sign_in(start.url)
    site.signin.finish(start.pending_id, params)
    with pytest.raises(SignInError) as info:
        site.signin.finish(start.pending_id, params)
    assert info.value.reason == "no_pending" and info.value.status_code == 400


@pytest.mark.parametrize("pending", [None, "", "made-up", "x" * 500])
def test_callback_without_a_started_sign_in_is_refused(site: Site, pending: str | None) -> None:
    with pytest.raises(SignInError) as info:
        site.signin.finish(pending, {"code": "abc", "state": "abc"})
    assert info.value.reason == "no_pending"


def test_tampered_state_is_refused_and_the_code_is_not_redeemed(site: Site) -> None:
    start = site.signin.start(redirect_uri=REDIRECT)
    params = site.sign_in(start.url)
    before = site.fake.request_count("token")
    with pytest.raises(SignInError) as info:
        site.signin.finish(start.pending_id, {**params, "state": params["state"] + "x"})
    assert info.value.reason == "state" and info.value.status_code == 400
    assert site.fake.request_count("token") == before
    with pytest.raises(SignInError):  # the pending sign-in is gone too: no second try with the right state
        site.signin.finish(start.pending_id, params)
    again = site.signin.start(redirect_uri=REDIRECT)
    with pytest.raises(SignInError) as info:  # not ASCII: still a plain refusal
        site.signin.finish(again.pending_id, {**site.sign_in(again.url), "state": "\u00e9t\u00e9"})
    assert info.value.reason == "state"


def _replant(site: Site, pending_id: str, raw: bytes) -> None:
    site.signin.store.set(_pending_key(pending_id), raw, 600)


def test_replayed_code_is_refused_by_entra(site: Site) -> None:
    start = site.signin.start(redirect_uri=REDIRECT)
    raw = site.signin.store.get(_pending_key(start.pending_id))
    assert raw is not None
    params = site.sign_in(start.url)
    site.signin.finish(start.pending_id, params)
    _replant(site, start.pending_id, raw)  # an attacker with the whole pending record still cannot reuse the code
    with pytest.raises(SignInError) as info:
        site.signin.finish(start.pending_id, params)
    assert info.value.reason == "code_refused" and info.value.status_code == 400
    assert "AADSTS54005" in info.value.description


@pytest.mark.parametrize("verifier", ["", "A" * 43])
def test_code_without_its_pkce_verifier_is_refused(site: Site, verifier: str) -> None:
    start = site.signin.start(redirect_uri=REDIRECT)
    key = _pending_key(start.pending_id)
    record = json.loads(site.signin.store.get(key) or b"{}")
    record["flow"]["code_verifier"] = verifier
    _replant(site, start.pending_id, json.dumps(record).encode())
    with pytest.raises(SignInError) as info:
        site.signin.finish(start.pending_id, site.sign_in(start.url))
    assert info.value.reason == "code_refused" and info.value.status_code == 400


def test_id_token_for_another_nonce_is_refused(site: Site) -> None:
    start = site.signin.start(redirect_uri=REDIRECT)
    key = _pending_key(start.pending_id)
    record = json.loads(site.signin.store.get(key) or b"{}")
    record["flow"]["nonce"] = "not-the-nonce-sent"
    _replant(site, start.pending_id, json.dumps(record).encode())
    with pytest.raises(SignInError) as info:
        site.signin.finish(start.pending_id, site.sign_in(start.url))
    assert info.value.reason in ("nonce", "id_token") and info.value.status_code == 400


def test_declined_consent_is_a_401_with_entras_words(site: Site) -> None:
    start = site.signin.start(redirect_uri=REDIRECT)
    with pytest.raises(SignInError) as info:
        site.signin.finish(start.pending_id, site.sign_in(start.url, consent=False))
    assert info.value.reason == "idp_error" and info.value.status_code == 401
    assert "\n" not in info.value.description and "<" not in json.dumps(info.value.body_dict())


def test_tenant_not_allowed_is_refused(fake_entra: FakeEntra, fake_clock: FakeClock) -> None:
    site = make_site(fake_entra, fake_clock)
    import dataclasses

    other = "11111111-2222-3333-4444-555555555555"
    site.auth.config = dataclasses.replace(site.auth.config, allowed_tenants=(other,))
    start = site.signin.start(redirect_uri=REDIRECT)
    with pytest.raises(SignInError) as info:
        site.signin.finish(start.pending_id, site.sign_in(start.url))
    assert info.value.status_code == 403 and info.value.reason == "tenant"
    site.auth.close()


def test_entra_unreachable_at_the_callback_is_a_503(site: Site) -> None:
    start = site.signin.start(redirect_uri=REDIRECT)
    params = site.sign_in(start.url)
    site.fake.faults.outage("token")
    with pytest.raises(EntraError) as info:
        site.signin.finish(start.pending_id, params)
    assert isinstance(info.value, TokenAcquisitionError) and info.value.status_code == 503


def test_sign_out_forgets_the_session_and_names_the_app(site: Site) -> None:
    start = site.signin.start(redirect_uri=REDIRECT)
    done = site.signin.finish(start.pending_id, site.sign_in(start.url))
    url = site.signin.sign_out(done.session_id, post_logout_redirect_uri="http://localhost/")
    assert url.startswith(f"https://login.microsoftonline.com/{site.s.tenant.tenant_id}/oauth2/v2.0/logout?")
    assert _query(url) == {"client_id": site.web.app_id, "post_logout_redirect_uri": "http://localhost/"}
    assert site.signin.user(done.session_id) is ANONYMOUS
    with pytest.raises(SignInRequired):
        site.signin.access_token(done.session_id, scopes=[site.api_scope])


def test_silent_failure_asks_for_a_new_sign_in(site: Site) -> None:
    start = site.signin.start(redirect_uri=REDIRECT)
    done = site.signin.finish(start.pending_id, site.sign_in(start.url))
    with pytest.raises(SignInRequired) as info:  # a scope never consented: no silent token
        site.signin.access_token(done.session_id, scopes=[f"{site.s.blueprint.identifier_uris[0]}/access_agent"])
    assert info.value.status_code == 401 and info.value.reason == "silent_failed"
    with pytest.raises(SignInRequired):
        site.signin.access_token("no-such-session", scopes=[site.api_scope])


def test_store_holds_no_usable_ids_and_sessions_expire(fake_entra: FakeEntra, fake_clock: FakeClock) -> None:
    store = MemorySessionStore(clock=fake_clock)
    site = make_site(fake_entra, fake_clock, store=store, session_ttl=60.0)
    start = site.signin.start(redirect_uri=REDIRECT)
    done = site.signin.finish(start.pending_id, site.sign_in(start.url))
    assert store.keys() and not any(done.session_id in key or start.pending_id in key for key in store.keys())
    fake_clock.advance(61)
    assert not site.signin.user(done.session_id)
    site.auth.close()


def test_no_token_code_or_secret_is_logged(site: Site, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    start = site.signin.start(redirect_uri=REDIRECT)
    params = site.sign_in(start.url)
    done = site.signin.finish(start.pending_id, params)
    token = site.signin.access_token(done.session_id, scopes=[site.api_scope])
    with pytest.raises(SignInError):
        site.signin.finish(start.pending_id, {**params, "state": "forged"})
    text = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("entra_mw"))
    for secret in (token, params["code"], params["state"], done.session_id, start.pending_id):
        assert secret not in text
    assert "user signed in" in text


@pytest.mark.anyio
async def test_async_twins(site: Site) -> None:
    start = await site.signin.astart(redirect_uri=REDIRECT, next_path="/x")
    done = await site.signin.afinish(start.pending_id, site.sign_in(start.url))
    assert (await site.signin.auser(done.session_id)).oid == site.s.user.object_id
    header = await site.signin.aauthorization_header(done.session_id, scopes=[site.api_scope])
    assert header.startswith("Bearer ey")
    assert "logout" in await site.signin.asign_out(done.session_id)
    assert not await site.signin.auser(done.session_id)


def test_user_value() -> None:
    assert not ANONYMOUS and ANONYMOUS.oid is None and not ANONYMOUS.is_authenticated
    user = User({"oid": "o", "tid": "t", "name": "Alice", "preferred_username": "alice@x", "roles": ["A"]})
    assert user and user.name == "Alice" and user.username == "alice@x" and user.claims["roles"] == ["A"]


@pytest.mark.parametrize(
    "value",
    ["/", "/orders?id=1", "/a/b#frag", "/%2F%2Fevil"],
)
def test_safe_next_keeps_own_paths(value: str) -> None:
    assert safe_next(value) == value


@pytest.mark.parametrize(
    "value",
    [
        None,
        42,
        "",
        "orders",
        "https://evil.example/",
        "//evil.example/",
        "/\\evil.example",
        "/\\/evil.example",
        "\\\\evil.example",
        "/\t/evil.example",
        "/\n/evil.example",
        " /x",
        "/x y",
        "javascript:alert(1)",
        "/" + "a" * 3000,
    ],
)
def test_safe_next_refuses_everything_else(value: object) -> None:
    assert safe_next(value) == "/"
    assert safe_next(value, default="/home") == "/home"


def test_cookie_attributes() -> None:
    for host in ("localhost", "localhost:5000", "127.0.0.1:8080", "[::1]:5000"):
        attrs = cookie_attributes(host)
        assert attrs["secure"] is False and attrs["httponly"] is True and attrs["samesite"] == "Lax"
    for other_host in ("app.contoso.com", "app.contoso.com:8443", "localhost.evil.example", "127.0.0.2", None):
        assert cookie_attributes(other_host)["secure"] is True
    assert cookie_attributes("localhost", cross_site_post=True) | {"max_age": 1} == {
        "httponly": True,
        "samesite": "None",
        "secure": True,
        "path": "/",
        "max_age": 1,
    }


def test_same_origin() -> None:
    assert same_origin(host="localhost:5000", origin="http://localhost:5000")
    assert same_origin(host="localhost:5000", origin=None)
    assert same_origin(host="app.contoso.com", origin="https://app.contoso.com", fetch_site="same-origin")
    assert not same_origin(host="app.contoso.com", origin="https://evil.example")
    assert not same_origin(host="app.contoso.com", origin="null")
    assert not same_origin(host="app.contoso.com", origin=None, fetch_site="cross-site")
    assert not same_origin(host="app.contoso.com", origin="https://app.contoso.com", fetch_site="same-site")
    assert not same_origin(host="localhost:5000", origin="http://localhost:5001")


def test_constructor_checks() -> None:
    from entra_mw import EntraAuth, EntraConfig, WebSignIn

    auth = EntraAuth(EntraConfig(tenant_id="contoso.onmicrosoft.com", client_id="11111111-2222-3333-4444-555555555555"))
    with pytest.raises(ValueError, match="response_mode"):
        WebSignIn(auth, response_mode="fragment")
    with pytest.raises(TypeError):
        WebSignIn(auth, scopes="api://x/read")
    assert "11111111" in repr(WebSignIn(auth))
    auth.close()


def test_query_response_mode_works_and_msal_warns(fake_entra: FakeEntra, fake_clock: FakeClock) -> None:
    site = make_site(fake_entra, fake_clock, response_mode="query")
    with pytest.warns(UserWarning, match="form_post"):
        start = site.signin.start(redirect_uri=REDIRECT)
    assert "response_mode" not in _query(start.url) or _query(start.url)["response_mode"] == "query"
    assert site.signin.pending_cookie("localhost")["samesite"] == "Lax"
    done = site.signin.finish(start.pending_id, site.sign_in(start.url))
    assert done.user.oid == site.s.user.object_id
    site.auth.close()


def test_form_post_is_the_default(site: Site) -> None:
    start = site.signin.start(redirect_uri=REDIRECT)
    assert _query(start.url)["response_mode"] == "form_post"
    assert site.signin.pending_cookie("localhost:5000") | {"max_age": 0} == {
        "httponly": True,
        "samesite": "None",
        "secure": True,
        "path": "/",
        "max_age": 0,
    }
    assert site.signin.session_cookie("localhost:5000")["samesite"] == "Lax"


def test_session_token_has_a_lifetime_and_takes_a_claims_challenge(site: Site) -> None:
    start = site.signin.start(redirect_uri=REDIRECT)
    done = site.signin.finish(start.pending_id, site.sign_in(start.url))
    token = site.signin.session_token(done.session_id, scopes=[site.api_scope])
    assert token.expires_on > site.auth.clock.time() + 600 and token.tenant == site.s.tenant.tenant_id
    before = site.fake.request_count("token")
    challenged = site.signin.session_token(done.session_id, scopes=[site.api_scope], claims='{"access_token":{}}')
    assert challenged.token != token.token and site.fake.request_count("token") == before + 1
    assert "token=" not in repr(token) and token.token not in repr(token)


@given(st.text(max_size=60) | st.from_regex(r"\A[/\\][/\\]?[ -~\t\n]{0,30}\Z"))
def test_safe_next_never_leaves_the_site(value: str) -> None:
    kept = safe_next(value)
    if kept != "/":
        assert kept == value and kept.startswith("/") and not kept.startswith("//") and "\\" not in kept
        parts = urllib.parse.urlsplit(kept)
        assert not parts.scheme and not parts.netloc
        assert not any(c.isspace() or ord(c) < 0x20 for c in kept)
        # A browser resolving it against this site stays on this site.
        assert urllib.parse.urlsplit(urllib.parse.urljoin("https://app.example/x/", kept)).netloc == "app.example"


def test_a_flood_of_logins_never_signs_anyone_out(fake_entra: FakeEntra, fake_clock: FakeClock) -> None:
    store = MemorySessionStore(clock=fake_clock, max_entries=10, max_pending=5)
    site = make_site(fake_entra, fake_clock, store=store)
    start = site.signin.start(redirect_uri=REDIRECT)
    done = site.signin.finish(start.pending_id, site.sign_in(start.url))
    for _ in range(50):
        site.signin.start(redirect_uri=REDIRECT)
    assert site.signin.user(done.session_id) and len(store) == 6
    site.auth.close()


def test_a_refused_credential_falls_back_to_the_next_one(fake_entra: FakeEntra, fake_clock: FakeClock) -> None:
    # As for the other grants (several credentials are tried in order): a secret Entra refuses does not end the
    # sign-in when another credential is configured; the same code is redeemed with the next one.
    s = fake_entra.quickstart()
    web = fake_entra.add_app(s.tenant, display_name="weather-web-2", redirect_uris=[REDIRECT])
    good = fake_entra.add_secret(web)
    config = EntraConfig(
        tenant_id=s.tenant.tenant_id,
        client_id=web.app_id,
        credentials=[ClientSecret("not-the-secret"), ClientSecret(good)],
    )
    with EntraAuth(config, transport=fake_entra.transport, clock=fake_clock) as auth:
        signin = WebSignIn(auth, scopes=[f"{s.api.identifier_uris[0]}/Weather.Read"])
        start = signin.start(redirect_uri=REDIRECT)
        answer = fake_entra.sign_in(start.url, username=s.user.upn, password=s.user_password, consent=True)
        done = signin.finish(start.pending_id, answer)
        assert done.user.oid == s.user.object_id
