from __future__ import annotations

import json

import pytest

from entra_mw import errors
from entra_mw.errors import (
    AuthError,
    ConfigurationError,
    EntraError,
    InsufficientScope,
    InvalidRequest,
    InvalidToken,
    MissingToken,
    ProviderUnavailable,
    TokenAcquisitionError,
)


def test_tree() -> None:
    for auth_cls in (MissingToken, InvalidRequest, InvalidToken, InsufficientScope):
        assert issubclass(auth_cls, AuthError)
    for cls in (AuthError, ProviderUnavailable, TokenAcquisitionError, ConfigurationError):
        assert issubclass(cls, EntraError)
    assert sorted(errors.__all__) == errors.__all__


def test_missing_token_is_a_bare_challenge() -> None:
    err = MissingToken()
    assert err.status_code == 401
    assert err.error is None
    assert err.www_authenticate == "Bearer"
    assert dict(err.headers())["WWW-Authenticate"] == "Bearer"


def test_invalid_token_challenge() -> None:
    err = InvalidToken("The token has expired.", reason="expired")
    assert err.status_code == 401
    assert err.www_authenticate == 'Bearer error="invalid_token", error_description="The token has expired."'
    assert json.loads(err.body()) == {"error": "invalid_token", "error_description": "The token has expired."}


def test_insufficient_scope_carries_scope() -> None:
    err = InsufficientScope(["Files.Read", "Files.Write"])
    assert err.status_code == 403
    assert err.www_authenticate is not None
    assert 'error="insufficient_scope"' in err.www_authenticate
    assert 'scope="Files.Read Files.Write"' in err.www_authenticate
    assert json.loads(err.body())["scope"] == "Files.Read Files.Write"


def test_mcp_challenge_parameters() -> None:
    err = InvalidToken("bad").with_challenge(
        resource_metadata="https://api.example.com/.well-known/oauth-protected-resource", scope=["mcp.tools"]
    )
    header = err.www_authenticate
    assert header is not None
    assert 'resource_metadata="https://api.example.com/.well-known/oauth-protected-resource"' in header
    assert 'scope="mcp.tools"' in header


@pytest.mark.parametrize("text", ['quote " here', "back\\slash", "new\r\nline", "uni\u00e9code", "\x00"])
def test_descriptions_cannot_break_the_header(text: str) -> None:
    header = InvalidToken(text).www_authenticate
    assert header is not None
    inner = header.split('error_description="', 1)[1][:-1]
    assert '"' not in inner and "\\" not in inner and "\r" not in inner and "\n" not in inner
    header.encode("ascii")


def test_invalid_request_and_provider_unavailable() -> None:
    assert InvalidRequest("two Authorization headers").status_code == 400
    unavailable = ProviderUnavailable("signing keys unavailable")
    assert unavailable.status_code == 503
    assert unavailable.www_authenticate is None
    assert ("Retry-After", "5") in unavailable.headers()


def test_token_acquisition_error_status_and_repr() -> None:
    consent = TokenAcquisitionError(
        "AADSTS65001: consent", error="invalid_grant", suberror="consent_required", error_codes=[65001], http_status=400
    )
    assert consent.status_code == 401
    assert consent.aadsts == "AADSTS65001"
    assert consent.www_authenticate is not None
    mfa = TokenAcquisitionError(
        "AADSTS50079",
        error="interaction_required",
        error_codes=[50079],
        claims='{"access_token":{"acrs":{"essential":true}}}',
        http_status=400,
    )
    assert mfa.status_code == 401
    assert mfa.www_authenticate is not None and "claims=" in mfa.www_authenticate
    client = TokenAcquisitionError("AADSTS7000215", error="invalid_client", error_codes=[7000215], http_status=401)
    assert client.status_code == 502
    assert client.www_authenticate is None
    outage = TokenAcquisitionError("unreachable")
    assert outage.status_code == 503
    assert "AADSTS7000215" not in repr(outage)


def _every_error() -> list[EntraError]:
    from entra_mw import DownstreamCallError, DownstreamRequestError

    return [
        MissingToken("A bearer token is required."),
        InvalidRequest("two headers"),
        InvalidToken("expired", reason="expired"),
        InsufficientScope(["Weather.Read"]),
        ProviderUnavailable("no keys"),
        TokenAcquisitionError("consent", error="invalid_grant", suberror="consent_required", http_status=400),
        TokenAcquisitionError("AADSTS65001", error="invalid_grant", error_codes=[65001], http_status=400),
        TokenAcquisitionError("throttled", error="temporarily_unavailable", http_status=429, retry_after=12.2),
        TokenAcquisitionError("AADSTS500133", error="invalid_grant", error_codes=[500133], http_status=400),
        TokenAcquisitionError("bad client", error="invalid_client", error_codes=[7000215], http_status=401),
        TokenAcquisitionError("unreachable"),
        DownstreamRequestError("unsafe path", reason="unsafe_path"),
        DownstreamRequestError("no caller", reason="no_caller", status_code=401),
        DownstreamCallError("down", api="graph"),
        DownstreamCallError("slow", api="graph", status_code=504, reason="timeout"),
        ConfigurationError("AzureAd__ClientId must be a GUID", key="AzureAd__ClientId"),
        EntraError("anything"),
    ]


def render(exc: EntraError) -> tuple[int, dict[str, str], dict[str, object]]:
    """What any adapter does: status, headers and body from the error alone."""
    return exc.status_code, dict(exc.headers()), json.loads(exc.body())


@pytest.mark.parametrize("exc", _every_error(), ids=lambda e: f"{type(e).__name__}-{e.reason}")
def test_any_error_renders_from_status_headers_and_body(exc: EntraError) -> None:
    status, headers, body = render(exc)
    assert 400 <= status <= 599
    assert headers["Content-Type"] == "application/json"
    assert headers["Cache-Control"] == "no-store"
    assert isinstance(body["error"], str) and body["error"]
    for name, value in exc.headers():
        name.encode("ascii")
        value.encode("latin-1")
    if status == 503:
        assert int(headers["Retry-After"]) >= 1
    if status in (401, 403):
        assert headers["WWW-Authenticate"].startswith("Bearer")


def test_specific_statuses() -> None:
    statuses = [e.status_code for e in _every_error()]
    assert statuses == [401, 400, 401, 403, 503, 401, 403, 503, 401, 502, 503, 400, 401, 502, 504, 500, 500]


def test_retry_after_is_rounded_up() -> None:
    exc = TokenAcquisitionError("throttled", http_status=429, retry_after=12.2)
    assert ("Retry-After", "13") in exc.headers()


def test_configuration_error_does_not_leak_its_message() -> None:
    body = json.loads(ConfigurationError("secret-ish AzureAd__ClientSecret detail", key="k").body())
    assert "AzureAd__ClientSecret" not in json.dumps(body)
    assert body["error"] == "server_error"


def test_with_challenge_returns_a_copy_and_leaves_the_original() -> None:
    original = MissingToken("A bearer token is required.")
    copy = original.with_challenge(realm="api", resource_metadata="https://r/.well-known/oauth-protected-resource")
    assert copy is not original and isinstance(copy, MissingToken)
    assert original.www_authenticate == "Bearer"
    assert copy.www_authenticate == (
        'Bearer realm="api", resource_metadata="https://r/.well-known/oauth-protected-resource"'
    )
    unavailable = ProviderUnavailable("no keys")
    assert unavailable.with_challenge(realm="x") is unavailable
