"""The rules every answer must keep (DESIGN §5, STYLE 3 and 9), checked the same way for every adapter."""

from __future__ import annotations

from collections.abc import Iterable

from ._adapters import JWT, Reply

ALLOWED = {200, 400, 401, 403, 503}
# The sidecar answers the official container's way (spec §1.5, §1.7): a 401/403 from JwtBearer carries no body
# and its AzureAd:Scopes check answers 403 in plain text; these adapters keep the challenge rules below but not
# the JSON body.
_CHALLENGE_WITHOUT_SCOPE = {"sidecar"}


def check_reply(adapter: str, reply: Reply, secrets: Iterable[str] = ()) -> None:
    """``reply`` is one of the allowed statuses, carries what that status needs, and leaks nothing."""
    assert reply.status in ALLOWED, (adapter, reply.status, reply.body[:300])
    body = reply.body
    assert b"Traceback" not in body and b'File "' not in body, (adapter, body[:300])
    # The sidecar's /Validate answers a good token with that token (spec §1.2): the caller's own, by contract.
    echoes = adapter == "sidecar" and reply.status == 200
    assert echoes or JWT.search(body) is None, (adapter, body[:300])
    for secret in () if echoes else secrets:
        if len(secret) >= 16:
            assert secret.encode("latin-1", "replace") not in body, adapter
            for name, value in reply.headers:
                assert secret not in value, (adapter, name)
    challenge = reply.header("WWW-Authenticate")
    if reply.status == 401:
        assert challenge is not None and challenge.lower().startswith("bearer"), (adapter, reply.headers)
    if reply.status == 403 and adapter not in _CHALLENGE_WITHOUT_SCOPE:
        assert challenge is not None and 'error="insufficient_scope"' in challenge, (adapter, reply.headers)
        assert 'scope="' in challenge, (adapter, challenge)
    if reply.status == 503:
        retry = reply.header("Retry-After")
        assert retry is not None and retry.isdigit(), (adapter, reply.headers)


def token_parts(token: str) -> list[str]:
    """The token and its segments that are long enough to recognise in a body or a log line."""
    return [token, *(part for part in token.split(".") if len(part) >= 16)]
