"""FakeEntra over real HTTPS on loopback: trusted through its CA file, same answers, stops by itself."""

from __future__ import annotations

import os
import socket
import ssl
from typing import Any

import httpx2
import jwt
import pytest

from entra_mw.testing import FakeEntra

pytestmark = pytest.mark.loopback


def test_served_discovery_jwks_and_token_verification(fake_entra: FakeEntra) -> None:
    s = fake_entra.quickstart()
    tid = s.tenant.tenant_id
    with fake_entra.serve() as served, httpx2.Client(verify=served.ssl_context()) as client:
        assert served.base_url == served.instance == f"https://127.0.0.1:{served.port}/"
        doc = client.get(f"{served.base_url}{tid}/v2.0/.well-known/openid-configuration").json()
        assert doc["jwks_uri"] == f"{served.base_url}{tid}/discovery/v2.0/keys"
        assert doc["issuer"] == f"https://login.microsoftonline.com/{tid}/v2.0"
        jwks = client.get(doc["jwks_uri"])
        assert jwks.headers["content-type"].startswith("application/json")
        token = fake_entra.user_token(s.user, client=s.client, resource=s.api)
        key = jwt.PyJWKSet.from_dict(jwks.json())[jwt.get_unverified_header(token)["kid"]]
        options: Any = {"verify_nbf": False, "verify_iat": False}
        claims = jwt.decode(
            token, key, algorithms=["RS256"], audience=s.api.app_id, issuer=doc["issuer"], options=options
        )
        assert claims["scp"] == "Weather.Read"
        assert client.post(f"{served.base_url}common/v2.0/.well-known/openid-configuration").status_code == 405
    assert fake_entra.request_count("jwks") == 1


def test_untrusted_clients_fail_tls(fake_entra: FakeEntra) -> None:
    with fake_entra.serve() as served, httpx2.Client() as client:
        with pytest.raises(httpx2.ConnectError):
            client.get(f"{served.base_url}common/discovery/keys")


def test_outage_drops_the_connection(fake_entra: FakeEntra) -> None:
    fake_entra.faults.outage("jwks", times=1)
    fake_entra.faults.rate_limit("jwks", retry_after=4, times=1)
    with fake_entra.serve() as served, httpx2.Client(verify=served.ssl_context()) as client:
        with pytest.raises(httpx2.TransportError):
            client.get(f"{served.base_url}common/discovery/keys")
        r = client.get(f"{served.base_url}common/discovery/keys")
        assert r.status_code == 429
        assert r.headers["retry-after"] == "4"
        assert client.get(f"{served.base_url}common/discovery/keys").status_code == 200


def test_oversized_bodies_are_refused(fake_entra: FakeEntra) -> None:
    with fake_entra.serve() as served, httpx2.Client(verify=served.ssl_context()) as client:
        r = client.post(f"{served.base_url}common/oauth2/v2.0/token", content=b"x" * (2 << 20))
        assert r.status_code == 413


def test_stops_by_itself(fake_entra: FakeEntra) -> None:
    with fake_entra.serve() as served:
        port, ca_file = served.port, served.ca_file
        assert os.path.exists(ca_file)
        with httpx2.Client(verify=ssl.create_default_context(cafile=ca_file)) as client:
            assert client.get(f"{served.base_url}common/discovery/keys").status_code == 200
    assert served.closed
    assert not os.path.exists(ca_file)
    with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", port), timeout=2):
        pass
    served.close()  # idempotent


def test_fake_close_stops_every_server() -> None:
    fake = FakeEntra()
    first, second = fake.serve(), fake.serve()
    assert first.port != second.port
    fake.close()
    assert first.closed
    assert second.closed
