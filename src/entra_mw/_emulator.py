"""``entra-mw emulator``: FakeEntra over HTTPS on loopback, for apps in any language during local development."""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path
from typing import TextIO

__all__ = ["run_emulator"]


def run_emulator(
    *, port: int = 0, env_file: str = "entra-emulator.env", out: TextIO, stop: threading.Event | None = None
) -> int:
    """Serve a FakeEntra with the quickstart directory until interrupted.

    The settings an app needs (``AzureAd__*`` variables, the client secrets of the fake directory and the CA file
    to trust) are written to ``env_file`` with owner-only permissions, never printed.
    """
    from .testing import FakeEntra

    fake = FakeEntra()
    scenario = fake.quickstart()
    served = fake.serve(port=port)
    try:
        lines = [
            "# FakeEntra emulator settings (a local fake directory; these secrets are worthless elsewhere)",
            f"AzureAd__Instance={served.base_url}",
            f"AzureAd__TenantId={scenario.tenant.tenant_id}",
            f"AzureAd__ClientId={scenario.blueprint.app_id}",
            "AzureAd__ClientCredentials__0__SourceType=ClientSecret",
            f"AzureAd__ClientCredentials__0__ClientSecret={scenario.blueprint_secret}",
            f"ENTRA_EMULATOR_CA_FILE={served.ca_file}",
            f"ENTRA_EMULATOR_API_CLIENT_ID={scenario.api.app_id}",
            f"ENTRA_EMULATOR_CLIENT_ID={scenario.client.app_id}",
            f"ENTRA_EMULATOR_CLIENT_SECRET={scenario.client_secret}",
            f"ENTRA_EMULATOR_USER={scenario.user.upn}",
            f"ENTRA_EMULATOR_USER_PASSWORD={scenario.user_password}",
            f"ENTRA_EMULATOR_AGENT_ID={scenario.agent.app_id}",
            f"ENTRA_EMULATOR_AGENT_USER={scenario.agent_user.upn}",
            f"SSL_CERT_FILE={served.ca_file}",
        ]
        path = Path(env_file)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.fchmod(fd, 0o600)  # the mode argument applies only when the file is created
        with os.fdopen(fd, "w") as fh:
            fh.write("\n".join(lines) + "\n")
        out.write(f"FakeEntra is serving at {served.base_url}\n")
        out.write(f"  tenant      {scenario.tenant.tenant_id} ({scenario.tenant.domain})\n")
        out.write(f"  weather api {scenario.api.app_id}\n")
        out.write(f"  blueprint   {scenario.blueprint.app_id}\n")
        out.write(f"  agent       {scenario.agent.app_id}\n")
        out.write(f"  CA file     {served.ca_file}\n")
        out.write(f"Settings (with the fake secrets) written to {path.resolve()}\n")
        out.write("Press Ctrl+C to stop.\n")
        out.flush()
        event = stop or threading.Event()
        if stop is None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, lambda *_: event.set())
        try:
            while not event.wait(0.5):
                pass
        except KeyboardInterrupt:
            pass
    finally:
        served.close()
        fake.close()
    out.write("FakeEntra stopped.\n")
    return 0
