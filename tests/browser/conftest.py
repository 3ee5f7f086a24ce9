"""Fixtures for the web UI's browser tests: a headless Debian chromium driven by selenium.

- The browser runs only inside a loopback-only network namespace (as every third-party
  program in the tests does), and with every feature that would reach out on its own
  switched off (``CHROMIUM_FLAGS``), on a fresh profile under the test's ``tmp_path``.
- Missing chromium, chromium-driver or selenium skips the test naming what to install;
  under ``CI=true`` it fails instead (CI installs them, see ``.ci/run``).
- The browser's console log is kept (``goog:loggingPrefs``) so a test can assert it
  holds no error.
- ``artifact(name)`` is where a test saves a screenshot: ``tests/artifacts/<test>/``
  (ignored by git), where a developer or a CI job can pick them up after a run.
"""

from __future__ import annotations

import importlib.util
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.interop.conftest import UNSHARE_HINT, isolation_problem, skip_or_fail

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "tests" / "artifacts"

#: Nothing in the background: no updates, sync, metrics, safe-browsing lists, DNS
#: prefetch, field trials or first-run pages. (The namespace stops any packet anyway;
#: these keep the browser from trying and logging the failures.)
CHROMIUM_FLAGS = (
    "--headless=new",
    "--no-sandbox",  # the tests run as root in CI; the namespace is the isolation
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-default-apps",
    "--disable-extensions",
    "--disable-sync",
    "--disable-domain-reliability",
    "--disable-client-side-phishing-detection",
    "--disable-breakpad",
    "--disable-crash-reporter",
    "--disable-field-trial-config",
    "--disable-features=OptimizationHints,Translate,MediaRouter,DialMediaRouteProvider,"
    "CertificateTransparencyComponentUpdater,AutofillServerCommunication,InterestFeedContentSuggestions",
    "--safebrowsing-disable-auto-update",
    "--no-first-run",
    "--no-default-browser-check",
    "--no-pings",
    "--dns-prefetch-disable",
    "--metrics-recording-only",
    "--password-store=basic",
    "--use-mock-keychain",
    "--window-size=1280,800",
)


def browser_missing() -> str:
    """Why the browser tests cannot run here ("" when they can)."""
    if shutil.which("chromium") is None:
        return "chromium is not installed (Debian: apt-get install chromium chromium-driver)"
    if shutil.which("chromedriver") is None:
        return "chromedriver is not installed (Debian: apt-get install chromium-driver)"
    if importlib.util.find_spec("selenium") is None:
        return "selenium is not installed (pip install selenium, or the project's [test] extra)"
    return ""


@pytest.fixture
def loopback_only() -> None:
    why = isolation_problem()
    if why:
        skip_or_fail(f"{why}: the browser runs only in an isolated namespace; {UNSHARE_HINT}")


@pytest.fixture
def browser(tmp_path: Path, loopback_only: None) -> Iterator[Any]:
    """A headless chromium (selenium WebDriver), quit when the test ends."""
    why = browser_missing()
    if why:
        skip_or_fail(why)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(shutil.which("chromium"))
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path / 'chromium-profile'}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # A driver path given: selenium does not run its Selenium Manager (no download).
    service = Service(
        executable_path=str(shutil.which("chromedriver")), log_output=str(tmp_path / "driver.log")
    )
    driver = webdriver.Chrome(options=options, service=service)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def artifact(request: pytest.FixtureRequest) -> Callable[[str], Path]:
    """``artifact("list.png")``: a path under ``tests/artifacts/<test name>/``."""

    def path(name: str) -> Path:
        folder = ARTIFACTS / str(request.node.name)
        folder.mkdir(parents=True, exist_ok=True)
        return folder / name

    return path
