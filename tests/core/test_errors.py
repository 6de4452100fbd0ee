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
