from __future__ import annotations

import contextlib
import io
import json
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from entra_mw import EntraAuth, EntraConfig, Principal
from entra_mw._emulator import EmulatorError, read_settings, run_emulator
from entra_mw._term import Palette
from entra_mw.cli import main
from entra_mw.testing import FakeEntra

JWT = re.compile(r"eyJ[\w-]+\.[\w-]+\.[\w-]*")

pytestmark = pytest.mark.loopback


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), out=out, err=err)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "cache"
    monkeypatch.setenv("XDG_CACHE_HOME", str(folder))
    return folder


@contextlib.contextmanager
def emulator(env_file: Path, *, seed: str = "entra-mw", port: int = 0) -> Iterator[tuple[dict[str, str], io.StringIO]]:
    stop = threading.Event()
    out = io.StringIO()
    result: list[int] = []
    errors: list[BaseException] = []

    def serve() -> None:
        try:
            result.append(run_emulator(port=port, env_file=env_file, seed=seed, out=out, stop=stop))
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while "Press Ctrl+C" not in out.getvalue() and not errors:
        assert time.monotonic() < deadline, "the emulator did not start"
        time.sleep(0.02)
    try:
        if errors:
            raise errors[0]
        yield read_settings(env_file), out
    finally:
        stop.set()
        thread.join(10)
    assert errors or result == [0]


# -- demo ---------------------------------------------------------------------------------------------------------


def test_demo_runs_every_flow_and_prints_no_token() -> None:
    code, text, _ = run("demo")
    assert code == 0, text
    assert "8 of 8 steps worked" in text
    assert "■ 1/8 Sign-in" in text and "■ 8/8 Never forward" in text
    for label in ("T1 (", "T2 (", "TR (On-Behalf-Of", "TR (agent user token via user_fic)", "TR (app-only"):
        assert label in text
    # The agent On-Behalf-Of heading names T1; the demo says that T1 came from the cache there.
    agent_obo = text.split("Agent On-Behalf-Of", 1)[1].split("■", 1)[0]
    assert "T1: no request; the T1 obtained in step 4 came from the cache" in agent_obo
    assert "T1 (" not in agent_obo
    assert "xms_par_app_azp" in text
    assert "signature: <elided>" in text
    assert "\x1b[" not in text, "colour on a stream that is not a terminal"
    assert JWT.search(text) is None, "a token was printed"


def test_demo_does_not_import_the_command_line_module() -> None:
    code = "import sys, entra_mw._demo; sys.exit('entra_mw.cli' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_demo_without_the_demo_extra_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "uvicorn", None)  # what `import uvicorn` sees when it is not installed
    code, out, err = run("demo")
    assert code == 2 and out == ""
    assert err.count("\n") == 1
    assert "pip install 'entra-mw[demo]'" in err


# -- decode -------------------------------------------------------------------------------------------------------


def test_decode_writes_json_to_stdout_and_the_warning_to_stderr(fake_entra: FakeEntra) -> None:
    scn = fake_entra.quickstart()
    token = fake_entra.app_token(scn.client, resource=scn.api)
    code, out, err = run("decode", f"Bearer {token}")
    assert code == 0
    assert err.startswith("NOT VERIFIED")
    data = json.loads(out)  # all of stdout is JSON, so `| jq` works
    assert data["claims"]["aud"] == scn.api.app_id
    assert data["signature"] == "<elided>"
    assert set(data["dates"]) == {"iat", "nbf", "exp"}
    assert data["dates"]["exp"].endswith("Z") and data["dates"]["exp"].startswith("2027-")
    assert token.rsplit(".", 1)[1] not in out + err


@pytest.mark.parametrize(
    ("bad", "says"),
    [
        ("", "3 dot-separated parts; this has 1"),
        ("a.b", "this has 2"),
        ("a.b.c.d.e", "encrypted token (JWE)"),
        ("x.y.z", "the header (part 1 of 3) is not"),
        ("eyJhbGciOiJub25lIn0.W10.x", "the payload (part 2 of 3) is JSON but not an object"),
        ("eyJhbGciOiJub25lIn0.bm90IGpzb24.x", "the payload (part 2 of 3) is not JSON"),
        ("eyJhbGciOiJub25lIn0..x", "the payload (part 2 of 3) is empty"),
        ("eyJhbGciOiJub25lIn0.eyJleHAiOk5hTn0.x", "the payload (part 2 of 3) is not JSON"),  # {"exp":NaN}
    ],
)
def test_decode_bad_input_says_which_part(bad: str, says: str) -> None:
    code, out, err = run("decode", bad)
    assert code == 2 and out == ""
    assert err.startswith("entra-mw decode: ") and err.count("\n") == 1
    assert says in err


# -- help, usage errors, colour ---------------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["demo", "emulator", "token", "decode", "sidecar"])
def test_every_subcommand_help_has_an_example(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([command, "--help"]) == 0
    text = capsys.readouterr().out
    assert "example" in text and f"entra-mw {command}" in text.split("example", 1)[1]


@pytest.mark.parametrize(
    "argv",
    [
        ["emulator", "--port", "70000"],
        ["emulator", "--port", "http"],
        ["token", "--app", "--agent"],
        ["nonsense"],
        [],
    ],
)
def test_usage_errors_are_one_line(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("entra-mw")


def test_colour_only_on_a_terminal_and_never_with_no_color(monkeypatch: pytest.MonkeyPatch) -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm")
    assert Palette(Tty()).good("ok") == "\x1b[32mok\x1b[0m"
    assert Palette(io.StringIO()).good("ok") == "ok"
    monkeypatch.setenv("NO_COLOR", "1")
    assert Palette(Tty()).good("ok") == "ok"


# -- emulator -------------------------------------------------------------------------------------------------


def test_emulator_settings_have_one_section_per_role(cache: Path, tmp_path: Path) -> None:
    env_file = tmp_path / "emu.env"
    with emulator(env_file) as (settings, out):
        assert oct(env_file.stat().st_mode & 0o777) == "0o600"
        text = env_file.read_text()
        for heading in ("The protected API", "The calling client", "The agent blueprint"):
            assert heading in text
        # The protected API's id is AzureAd__ClientId: an app loading these settings accepts the tokens.
        assert settings["AzureAd__ClientId"] not in (
            settings["ENTRA_EMULATOR_CLIENT_ID"],
            settings["ENTRA_EMULATOR_BLUEPRINT_ID"],
        )
        bundle = Path(settings["SSL_CERT_FILE"]).read_text()
        assert bundle.count("BEGIN CERTIFICATE") > 1, "the CA bundle should also hold the system CAs"
        assert Path(settings["ENTRA_EMULATOR_CA_FILE"]).read_text() in bundle
        assert settings["REQUESTS_CA_BUNDLE"] == settings["SSL_CERT_FILE"]
        for secret in ("AzureAd__ClientCredentials__0__ClientSecret", "ENTRA_EMULATOR_CLIENT_SECRET"):
            assert settings[secret] not in out.getvalue()
        auth = EntraAuth(EntraConfig.from_env(settings), verify=settings["SSL_CERT_FILE"])
        try:
            auth.startup()  # metadata and keys over HTTPS, trusting the bundle
        finally:
            auth.close()


def test_emulator_default_settings_file_is_in_the_cache_dir(cache: Path) -> None:
    with emulator(cache / "entra-mw" / "emulator.env") as (_, out):
        assert str(cache / "entra-mw" / "emulator.env") in out.getvalue()
        code, token, err = run("token", "--user", "alice", "--scope", "Weather.Read")  # found without --env-file
        assert code == 0, err
        assert JWT.fullmatch(token.strip())


def test_emulator_is_the_same_after_a_restart(cache: Path, tmp_path: Path) -> None:
    env_file = tmp_path / "emu.env"
    with emulator(env_file) as (first, _):
        ca = Path(first["ENTRA_EMULATOR_CA_FILE"]).read_bytes()
    with emulator(env_file) as (second, _):
        assert Path(second["ENTRA_EMULATOR_CA_FILE"]).read_bytes() == ca
    for port_bound in ("AzureAd__Instance", "IDENTITY_ENDPOINT", "ENTRA_EMULATOR_SIGN_IN_URL"):
        first.pop(port_bound)  # port 0: a free port each time
        second.pop(port_bound)
    assert first == second
    with emulator(tmp_path / "other.env", seed="another") as (other, _):
        assert other["AzureAd__TenantId"] != first["AzureAd__TenantId"]
        assert other["ENTRA_EMULATOR_CLIENT_SECRET"] != first["ENTRA_EMULATOR_CLIENT_SECRET"]


def test_a_token_from_before_a_restart_is_still_accepted(cache: Path, tmp_path: Path) -> None:
    env_file = tmp_path / "emu.env"
    with emulator(env_file) as (settings, _):
        code, token, _ = run("token", "--env-file", str(env_file), "--user", "alice", "--scope", "Weather.Read")
        assert code == 0
    with emulator(env_file) as (settings, _):
        auth = EntraAuth(EntraConfig.from_env(settings), verify=settings["SSL_CERT_FILE"])
        try:
            assert auth.validate(token.strip()).scopes == frozenset({"Weather.Read"})
        finally:
            auth.close()


def test_emulator_refuses_a_symlinked_settings_file(cache: Path, tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    link = tmp_path / "emu.env"
    link.symlink_to(victim)
    with pytest.raises(EmulatorError, match="symlink"):
        run_emulator(port=0, env_file=link, out=io.StringIO(), stop=threading.Event())
    assert victim.read_text() == "precious\n"


def test_emulator_tightens_an_existing_settings_file(cache: Path, tmp_path: Path) -> None:
    env_file = tmp_path / "emu.env"
    env_file.write_text("STALE=1\n")
    env_file.chmod(0o644)
    stop = threading.Event()
    stop.set()  # serve, write the settings, stop at once
    assert run_emulator(port=0, env_file=env_file, out=io.StringIO(), stop=stop) == 0
    assert oct(env_file.stat().st_mode & 0o777) == "0o600"
    assert "STALE" not in env_file.read_text()


def test_emulator_port_in_use_and_unwritable_file_are_one_line(
    cache: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        code, _, err = run("emulator", "--port", str(port), "--env-file", str(tmp_path / "e.env"))
    assert code == 2 and err.count("\n") == 1
    assert f"port {port} is in use" in err
    blocker = tmp_path / "file"
    blocker.write_text("")
    code, _, err = run("emulator", "--port", "0", "--env-file", str(blocker / "e.env"))
    assert code == 2 and err.count("\n") == 1
    assert "cannot write the settings file" in err


def test_emulator_logs_each_request_without_tokens_or_secrets(cache: Path, tmp_path: Path) -> None:
    env_file = tmp_path / "emu.env"
    with emulator(env_file) as (settings, out):
        assert run("token", "--env-file", str(env_file), "--user", "alice", "--scope", "Weather.Read")[0] == 0
        assert run("token", "--env-file", str(env_file), "--agent", "--user", "bob")[0] == 0
        assert run("token", "--env-file", str(env_file), "--user", "alice", "--scope", "Nope")[0] == 2
        # The banner shows the test users' password (they sign in with it); the request log never does.
        log = out.getvalue().split("Press Ctrl+C to stop.", 1)[1]
    assert re.search(r"token grant=password client=weather-client user=alice@\S+ scopes=\S+/Weather.Read → 200", log)
    assert re.search(r"token grant=client_credentials client=weather-agent-blueprint user=- agent=weather-agent", log)
    assert re.search(r"token grant=jwt-bearer client=weather-agent user=bob@\S+ .* → 200", log)
    assert re.search(r"token grant=password .*/Nope → 400 invalid_client AADSTS65005", log)
    assert re.search(r"jwks GET /\S+/discovery/v2.0/keys → 200", log)
    assert JWT.search(log) is None, "a token or assertion was logged"
    for name, value in settings.items():
        if "SECRET" in name.upper() or "PASSWORD" in name.upper():
            assert value not in log


# -- token --------------------------------------------------------------------------------------------------------


def test_token_for_each_kind_is_accepted_by_the_protected_api(cache: Path, tmp_path: Path) -> None:
    env_file = tmp_path / "emu.env"
    with emulator(env_file) as (settings, _):
        auth = EntraAuth(EntraConfig.from_env(settings), verify=settings["SSL_CERT_FILE"])
        try:

            def principal(*argv: str) -> Principal:
                code, out, err = run("token", "--env-file", str(env_file), *argv)
                assert code == 0, err
                assert out.count("\n") == 1, "the token alone on stdout"
                return auth.validate(out.strip())

            user = principal("--user", "alice", "--scope", "Weather.Read")
            assert user.scopes == frozenset({"Weather.Read"})
            assert (user.preferred_username or "").startswith("alice@")
            app = principal("--app", "--role", "Weather.Read.All")
            assert app.is_app and "Weather.Read.All" in app.roles
            agent = principal("--agent")
            assert agent.is_agent and agent.is_app
            agent_obo = principal("--agent", "--user", "alice", "--scope", "Weather.Read")
            assert agent_obo.is_agent
            assert (agent_obo.preferred_username or "").startswith("alice@")
            agent_user = principal("--agent", "--agent-user")
            assert (agent_user.preferred_username or "").startswith("weather-agent@")
        finally:
            auth.close()
        code, out, err = run("token", "--env-file", str(env_file), "--app", "--role", "Weather.Write.All")
        assert code == 2 and out == "" and err.count("\n") == 1
        assert "not granted Weather.Write.All" in err
        code, out, err = run("token", "--env-file", str(env_file), "--user", "carol")
        assert code == 2 and "no test user 'carol'" in err


def test_token_decode_shows_claims_not_the_token(cache: Path, tmp_path: Path) -> None:
    env_file = tmp_path / "emu.env"
    with emulator(env_file):
        code, out, _ = run(
            "token", "--env-file", str(env_file), "--user", "bob", "--scope", "Weather.Write", "--decode"
        )
    assert code == 0
    data = json.loads(out)
    assert data["claims"]["scp"] == "Weather.Write"
    assert JWT.search(out) is None


def test_token_without_an_emulator_is_one_line(cache: Path, tmp_path: Path) -> None:
    code, out, err = run("token", "--user", "alice")
    assert code == 2 and out == "" and err.count("\n") == 1
    assert "no emulator settings at" in err and "entra-mw emulator" in err
    env_file = tmp_path / "emu.env"
    with emulator(env_file):
        pass  # the settings stay; the emulator is gone
    code, out, err = run("token", "--env-file", str(env_file), "--user", "alice")
    assert code == 2 and out == "" and err.count("\n") == 1
    assert "does not answer" in err and "is `entra-mw emulator` running?" in err
    for kind in ("--app", "--agent"):  # through the library's acquisition, in a process of its own (no log capture)
        done = subprocess.run(
            [sys.executable, "-m", "entra_mw.cli", "token", "--env-file", str(env_file), kind],
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode == 2 and done.stdout == ""
        assert done.stderr.count("\n") == 1 and "is `entra-mw emulator` running" in done.stderr, done.stderr


def test_token_in_process_needs_no_emulator(cache: Path) -> None:
    code, out, err = run("token", "--in-process", "--agent", "--agent-user", "--decode")
    assert code == 0, err
    data = json.loads(out)
    assert data["claims"]["preferred_username"].startswith("weather-agent@")
    code, out, err = run("token", "--in-process", "--user", "alice")
    assert code == 0 and JWT.fullmatch(out.strip())
    assert "no running API trusts its signing key" in err


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["token"], "say whose token"),
        (["token", "--app", "--user", "alice"], "--app"),
        (["token", "--agent-user"], "--agent-user needs --agent"),
        (["token", "--user", "alice", "--role", "X"], "--role applies to app-only tokens"),
        (["token", "--agent", "--scope", "Weather.Read"], "--scope applies to tokens for a user"),
    ],
)
def test_token_argument_mistakes_are_one_line(argv: list[str], says: str) -> None:
    code, out, err = run(*argv)
    assert code == 2 and out == "" and err.count("\n") == 1
    assert says in err


def test_emulator_runs_the_passwordless_web_app_chain(
    cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The web app has no secret: the emulator's managed-identity endpoint gives its identity a token for
    # api://AzureADTokenExchange, which the emulator accepts as the web app's federated credential.
    from entra_mw import ManagedIdentityAssertion
    from entra_mw._tokenview import decode_token

    env_file = tmp_path / "emu.env"
    with emulator(env_file) as (settings, out):
        printed = out.getvalue()
        assert settings["ENTRA_EMULATOR_SIGN_IN_URL"] in printed
        assert settings["ENTRA_EMULATOR_USER_PASSWORD"] in printed  # the test users' credentials are shown
        monkeypatch.setenv("IDENTITY_ENDPOINT", settings["IDENTITY_ENDPOINT"])
        monkeypatch.setenv("IDENTITY_HEADER", settings["IDENTITY_HEADER"])
        config = EntraConfig(
            tenant_id=settings["AzureAd__TenantId"],
            client_id=settings["ENTRA_EMULATOR_WEB_CLIENT_ID"],
            instance=settings["AzureAd__Instance"],
            credentials=[ManagedIdentityAssertion(client_id=settings["ENTRA_EMULATOR_MANAGED_IDENTITY_CLIENT_ID"])],
        )
        with EntraAuth(config, verify=settings["SSL_CERT_FILE"]) as web:
            header = web.downstream().authorization_header(
                "weather", scopes=[f"api://{settings['AzureAd__ClientId']}/.default"], app=True
            )
        claims = decode_token(header.removeprefix("Bearer "))[1]
        assert claims["azp"] == settings["ENTRA_EMULATOR_WEB_CLIENT_ID"]
        assert claims["azpacr"] == "2"  # a signed assertion, not a secret
        assert settings["IDENTITY_HEADER"] not in out.getvalue()
