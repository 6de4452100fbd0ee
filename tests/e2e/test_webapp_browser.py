"""example_apps/webapp_calls_api in a real browser (headless Chromium): a person signs in on FakeEntra's page,
consents, comes back, sees the API's answer, signs out; and the refusals a browser can provoke.

The web app authenticates itself with a managed identity used as a federated credential (FakeEntra's
managed-identity endpoint): no secret anywhere in the chain.
"""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest
from example_apps.webapp_calls_api.local import Running, run_locally
from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

from entra_mw._signin import PENDING_COOKIE, SESSION_COOKIE

from ._chromium import chromium, require_chromium, spki_hash

pytestmark = [pytest.mark.loopback]


@pytest.fixture
def running() -> Iterator[Running]:
    require_chromium()
    with run_locally(web_port=0, api_port=0) as scenario:
        yield scenario


@pytest.fixture
def browser(running: Running, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[WebDriver]:
    monkeypatch.setenv("SE_OFFLINE", "true")
    entra = urllib.parse.urlsplit(running.entra.base_url)
    assert entra.hostname is not None and entra.port is not None
    with chromium(tmp_path / "profile", trust_spki=spki_hash(entra.hostname, entra.port)) as driver:
        yield driver


# A page that navigates away while an element is read (a redirect after a click) makes Chromium answer with a
# generic inspector error rather than a stale-element one; both mean "look again".
_RETRY: tuple[type[Exception], ...] = (StaleElementReferenceException, WebDriverException)


def wait_for(driver: WebDriver, css: str) -> str:
    def text(d: WebDriver) -> tuple[str] | None:
        found = d.find_elements(By.CSS_SELECTOR, css)
        return (str(found[0].text),) if found else None  # a tuple: an empty text still ends the wait

    result = WebDriverWait(driver, 20, ignored_exceptions=_RETRY).until(text)
    assert result is not None  # until() returns only a truthy value
    return result[0]


def wait_text(driver: WebDriver, css: str, text: str) -> None:
    WebDriverWait(driver, 20, ignored_exceptions=_RETRY).until(
        ec.text_to_be_present_in_element((By.CSS_SELECTOR, css), text)
    )


def on_entra(driver: WebDriver, running: Running) -> bool:
    return str(driver.current_url).startswith(running.entra.base_url)


def fill_sign_in(driver: WebDriver, username: str, password: str) -> None:
    wait_for(driver, "#username")
    driver.find_element(By.ID, "username").clear()
    driver.find_element(By.ID, "username").send_keys(username)
    driver.find_element(By.ID, "password").send_keys(password)
    driver.find_element(By.ID, "submit").click()


def hold_form_post(driver: WebDriver) -> None:
    """Stop the next page's scripts, so FakeEntra's form_post answer waits to be read (or changed)."""
    driver.execute_cdp_cmd("Emulation.setScriptExecutionDisabled", {"value": True})


def release_form_post(driver: WebDriver) -> dict[str, str]:
    """The fields of a held form_post answer; scripts are allowed again (the page's own one has not run)."""
    wait_for(driver, "#response")
    fields = {
        str(e.get_attribute("name")): str(e.get_attribute("value"))
        for e in driver.find_elements(By.CSS_SELECTOR, "#response input[type=hidden]")
    }
    driver.execute_cdp_cmd("Emulation.setScriptExecutionDisabled", {"value": False})
    return fields


def test_sign_in_call_the_api_and_sign_out(running: Running, browser: WebDriver) -> None:
    browser.get(running.web_url)
    assert "You are not signed in" in wait_for(browser, "body")
    browser.find_element(By.ID, "sign-in").click()
    wait_for(browser, "#username")
    assert on_entra(browser, running)
    fill_sign_in(browser, running.username, running.password)
    wait_text(browser, "h1", "Permissions requested")
    assert "access_as_user" in wait_for(browser, "#scopes")
    browser.find_element(By.ID, "accept").click()
    assert "Alice Example" in wait_for(browser, "#user")
    assert browser.current_url == running.web_url

    cookies = {c["name"]: c for c in browser.get_cookies()}
    session = cookies[SESSION_COOKIE]
    assert session["httpOnly"] is True and session["sameSite"] == "Lax" and session["path"] == "/"
    assert not session["value"].startswith("eyJ") and len(session["value"]) == 43
    assert PENDING_COOKIE not in cookies
    assert not any(c["value"].startswith("eyJ") for c in browser.get_cookies())

    browser.find_element(By.ID, "call-api").click()
    assert wait_for(browser, "#api-status") == "200"
    answer = json.loads(wait_for(browser, "#api-answer"))
    user = running.fake.registry.users
    alice = next(u for u in user.values() if u.upn == running.username)
    assert answer["oid"] == alice.object_id and answer["tid"] == running.tenant_id
    assert answer["scopes"] == ["access_as_user"] and answer["client_id"] == running.web_client_id
    assert "the API validated your token" in answer["message"]

    browser.find_element(By.ID, "sign-out").click()
    wait_text(browser, "body", "You are not signed in")
    assert urllib.parse.urlsplit(browser.current_url).netloc == urllib.parse.urlsplit(running.web_url).netloc
    assert SESSION_COOKIE not in {c["name"] for c in browser.get_cookies()}
    browser.get(running.web_url + "call-api")  # Entra's session ended too: its sign-in page again
    wait_for(browser, "#username")
    assert on_entra(browser, running)


def test_wrong_password_stays_on_entra(running: Running, browser: WebDriver) -> None:
    browser.get(running.web_url + "auth/login")
    fill_sign_in(browser, running.username, "not-the-password")
    assert "AADSTS50126" in wait_for(browser, "#error")
    assert on_entra(browser, running)
    assert SESSION_COOKIE not in {c["name"] for c in browser.get_cookies()}


def sign_in_held(running: Running, browser: WebDriver, path: str = "auth/login") -> dict[str, str]:
    browser.get(running.web_url + path)
    fill_sign_in(browser, running.username, running.password)
    wait_for(browser, "#accept")  # each test has a new FakeEntra: the user has not consented yet
    hold_form_post(browser)
    browser.find_element(By.ID, "accept").click()
    return release_form_post(browser)


def post_to_callback(browser: WebDriver, fields: dict[str, str]) -> None:
    browser.execute_script(
        "const f = document.getElementById('response');"
        "for (const [k, v] of Object.entries(arguments[0])) { f.elements[k].value = v; }"
        "f.submit();",
        fields,
    )


def test_tampered_state_is_refused(running: Running, browser: WebDriver) -> None:
    fields = sign_in_held(running, browser)
    post_to_callback(browser, {"state": fields["state"][:-2] + "xx"})
    wait_text(browser, "p", "does not match")
    assert "Sign-in failed" in browser.title
    assert SESSION_COOKIE not in {c["name"] for c in browser.get_cookies()}


def post_form(browser: WebDriver, action: str, fields: dict[str, str]) -> None:
    browser.execute_script(
        "const f = document.createElement('form'); f.method = 'post'; f.action = arguments[0];"
        "for (const [k, v] of Object.entries(arguments[1])) {"
        "  const i = document.createElement('input'); i.type = 'hidden'; i.name = k; i.value = v; f.appendChild(i); }"
        "document.body.appendChild(f); f.submit();",
        action,
        fields,
    )


def test_replayed_code_is_refused(running: Running, browser: WebDriver) -> None:
    fields = sign_in_held(running, browser)
    post_to_callback(browser, {})
    assert "Alice Example" in wait_for(browser, "#user")
    session = browser.get_cookie(SESSION_COOKIE)
    assert session is not None
    # The same answer posted again from the same browser: the sign-in it belonged to was used once.
    post_form(browser, running.web_url + "auth/callback", fields)
    wait_text(browser, "h1", "Sign-in failed")
    assert "No sign-in was started" in wait_for(browser, "p")
    again = browser.get_cookie(SESSION_COOKIE)
    assert again is not None and again["value"] == session["value"]  # still signed in as before, nothing new


def test_next_off_site_lands_on_the_app(running: Running, browser: WebDriver) -> None:
    fields = sign_in_held(running, browser, "auth/login?next=" + urllib.parse.quote("https://evil.example/x"))
    assert fields["code"]
    post_to_callback(browser, {})
    assert "Alice Example" in wait_for(browser, "#user")
    assert browser.current_url == running.web_url


def test_code_without_the_pkce_verifier_is_useless(running: Running, browser: WebDriver) -> None:
    fields = sign_in_held(running, browser)
    # Someone holding the code — and even the web app's own credential — cannot redeem it without the verifier,
    # which never left the web app's server.
    entra = running.entra
    with httpx2.Client(verify=entra.ssl_context()) as http:
        mi = http.get(
            entra.managed_identity_endpoint,
            params={
                "api-version": "2019-08-01",
                "resource": "api://AzureADTokenExchange",
                "client_id": running.managed_identity_client_id,
            },
            headers={"X-IDENTITY-HEADER": entra.managed_identity_env()["IDENTITY_HEADER"]},
        ).json()["access_token"]
        token_endpoint = f"{entra.authority(running.tenant_id)}/oauth2/v2.0/token"
        form = {
            "grant_type": "authorization_code",
            "client_id": running.web_client_id,
            "code": fields["code"],
            "redirect_uri": running.web_url + "auth/callback",
            "scope": f"openid {running.api_scope}",
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            "client_assertion": mi,
        }
        missing = http.post(token_endpoint, data=form).json()
        guessed = http.post(token_endpoint, data={**form, "code_verifier": "A" * 43}).json()
    assert missing["error"] == "invalid_request" and "code_verifier" in missing["error_description"]
    assert guessed["error"] == "invalid_grant" and 501481 in guessed["error_codes"]
    assert "access_token" not in missing and "access_token" not in guessed
