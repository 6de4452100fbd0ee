"""Headless Chromium for tests: Debian's ``chromium`` and ``chromium-driver``, driven by Selenium with the system
driver (no download: the driver's path is given, and Selenium Manager is told to stay offline).

Without the browser the tests skip with the reason; with ``ENTRA_MW_REQUIRE_BROWSER=1`` (CI) they fail instead.
"""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

if TYPE_CHECKING:
    from selenium.webdriver.chrome.webdriver import WebDriver

CHROMIUM = ("chromium", "chromium-browser", "google-chrome")
DRIVER = "chromedriver"


def _find() -> tuple[str, str] | None:
    browser = next((found for name in CHROMIUM if (found := shutil.which(name))), None)
    driver = shutil.which(DRIVER) or ("/usr/bin/chromedriver" if Path("/usr/bin/chromedriver").exists() else None)
    return (browser, driver) if browser and driver else None


def require_chromium() -> tuple[str, str]:
    """The browser and driver paths; skips the test (fails it under ``ENTRA_MW_REQUIRE_BROWSER=1``) without them."""
    found = _find()
    if found is None:
        reason = "headless Chromium not installed (apt-get install chromium chromium-driver)"
        if os.environ.get("ENTRA_MW_REQUIRE_BROWSER") == "1":
            pytest.fail(f"ENTRA_MW_REQUIRE_BROWSER=1 but {reason}")
        pytest.skip(reason)
    try:
        import selenium  # noqa: F401
    except ImportError:  # pragma: no cover - a dev dependency
        if os.environ.get("ENTRA_MW_REQUIRE_BROWSER") == "1":
            pytest.fail("ENTRA_MW_REQUIRE_BROWSER=1 but selenium is not installed")
        pytest.skip("selenium not installed")
    return found


def spki_hash(host: str, port: int) -> str:
    """The base64 SHA-256 of a TLS server's public key: what ``--ignore-certificate-errors-spki-list`` pins."""
    pem = ssl.get_server_certificate((host, port))
    cert = x509.load_pem_x509_certificate(pem.encode())
    der = cert.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(hashlib.sha256(der).digest()).decode()


@contextmanager
def chromium(profile: Path, *, trust_spki: str) -> Iterator[WebDriver]:
    """A headless Chromium that trusts exactly one extra server key (FakeEntra's) and reaches only loopback.
    Set ``SE_OFFLINE=true`` around it so that Selenium Manager never fetches anything."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    browser, driver_path = require_chromium()
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-extensions",
        "--no-proxy-server",
        f"--user-data-dir={profile}",
        f"--ignore-certificate-errors-spki-list={trust_spki}",
        "--window-size=1000,800",
    ):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
