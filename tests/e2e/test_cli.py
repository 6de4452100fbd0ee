from __future__ import annotations

import io
import json
import re
import threading
import time
from pathlib import Path

import pytest

from entra_mw.cli import main
from entra_mw.testing import FakeEntra

JWT = re.compile(r"eyJ[\w-]+\.[\w-]+\.[\w-]*")

pytestmark = pytest.mark.loopback


def test_demo_runs_every_flow_and_prints_no_token() -> None:
    out = io.StringIO()
    code = main(["demo"], out=out, err=io.StringIO())
    text = out.getvalue()
    assert code == 0, text
    assert "7 of 7 steps worked" in text
    for label in ("T1 (", "T2 (", "TR (On-Behalf-Of", "TR (agent user token via user_fic)", "TR (app-only"):
        assert label in text
    assert "xms_par_app_azp" in text
    assert "signature: <elided>" in text
    assert JWT.search(text) is None, "a token was printed"


def test_decode_labels_and_elides(fake_entra: FakeEntra) -> None:
    scn = fake_entra.quickstart()
    token = fake_entra.app_token(scn.client, resource=scn.api)
    out = io.StringIO()
    assert main(["decode", token], out=out, err=io.StringIO()) == 0
    first, rest = out.getvalue().split("\n", 1)
    assert first.startswith("NOT VERIFIED")
    data = json.loads(rest)
    assert data["claims"]["aud"] == scn.api.app_id
    assert data["signature"] == "<elided>"
    assert token.rsplit(".", 1)[1] not in out.getvalue()


@pytest.mark.parametrize("bad", ["", "a.b", "x.y.z", "a.b.c.d.e", "eyJhbGciOiJub25lIn0.W10.x"])
def test_decode_bad_input_is_a_clean_error(bad: str) -> None:
    err = io.StringIO()
    assert main(["decode", bad], out=io.StringIO(), err=err) == 2
    assert err.getvalue().startswith("entra-mw decode: ")


def test_emulator_serves_and_writes_settings(tmp_path: Path) -> None:
    import ssl

    import httpx2

    from entra_mw._emulator import run_emulator

    stop = threading.Event()
    out = io.StringIO()
    env_file = tmp_path / "emu.env"
    result: list[int] = []
    thread = threading.Thread(
        target=lambda: result.append(run_emulator(env_file=str(env_file), out=out, stop=stop)), daemon=True
    )
    thread.start()
    deadline = time.monotonic() + 20
    while not env_file.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        settings = dict(
            line.split("=", 1) for line in env_file.read_text().splitlines() if line and not line.startswith("#")
        )
        assert oct(env_file.stat().st_mode & 0o777) == "0o600"
        context = ssl.create_default_context(cafile=settings["ENTRA_EMULATOR_CA_FILE"])
        with httpx2.Client(verify=context) as client:
            doc = client.get(
                f"{settings['AzureAd__Instance']}{settings['AzureAd__TenantId']}/v2.0/.well-known/openid-configuration"
            ).json()
        assert doc["issuer"].endswith(f"/{settings['AzureAd__TenantId']}/v2.0")
        assert settings["AzureAd__ClientCredentials__0__ClientSecret"] not in out.getvalue()
    finally:
        stop.set()
        thread.join(10)
    assert result == [0]


def test_emulator_tightens_an_existing_settings_file(tmp_path: Path) -> None:
    from entra_mw._emulator import run_emulator

    env_file = tmp_path / "emu.env"
    env_file.write_text("old\n")
    env_file.chmod(0o644)
    stop = threading.Event()
    stop.set()  # serve, write the settings, stop at once
    assert run_emulator(env_file=str(env_file), out=io.StringIO(), stop=stop) == 0
    assert oct(env_file.stat().st_mode & 0o777) == "0o600"
    assert "AzureAd__TenantId=" in env_file.read_text()
