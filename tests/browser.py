"""Headless Chromium for the tests that look at a page, driven by selenium through Debian's chromedriver.

A missing browser or driver fails the test that needs it, never skips it:
scripts/setup.sh installs the Debian packages chromium and chromium-driver.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.common.exceptions import JavascriptException, StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.support.wait import WebDriverWait

BROWSERS = ("/usr/bin/chromium", "/usr/bin/chromium-browser")
DRIVERS = ("/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver")
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--force-device-scale-factor=1",  # screenshot pixels are CSS pixels
    "--hide-scrollbars",
)


def _first(candidates: tuple[str, ...], name: str) -> str:
    found = next((path for path in candidates if Path(path).is_file()), None) or shutil.which(name)
    if found is None:
        pytest.fail(
            f"{name} is not installed (looked in {', '.join(candidates)}); scripts/setup.sh installs the Debian"
            " packages chromium and chromium-driver. Browser tests fail, never skip, without them.",
            pytrace=False,
        )
    return found


@contextmanager
def chromium(width: int = 1280, height: int = 1000, *, logs: bool = False) -> Iterator[webdriver.Chrome]:
    """A fresh headless Chromium with its own profile folder, closed and removed on exit.

    ``logs``: keep the console's messages (``driver.get_log("browser")``) and every network event
    (``driver.get_log("performance")``) for the test to read.
    """
    options = webdriver.ChromeOptions()
    options.binary_location = _first(BROWSERS, "chromium")
    if logs:
        options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    profile = tempfile.mkdtemp(prefix="pilot-chromium-")
    for flag in (*FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}"):
        options.add_argument(flag)
    os.environ.setdefault("SE_OFFLINE", "true")  # selenium must never try to download a browser or driver
    driver = webdriver.Chrome(options=options, service=Service(executable_path=_first(DRIVERS, "chromedriver")))
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def platform_fonts(driver: Any, selector: str) -> list[dict[str, Any]]:
    """The platform fonts Chromium drew a node's text with (DevTools CSS.getPlatformFontsForNode)."""
    driver.execute_cdp_cmd("DOM.enable", {})
    driver.execute_cdp_cmd("CSS.enable", {})
    root = driver.execute_cdp_cmd("DOM.getDocument", {"depth": 0})["root"]["nodeId"]
    node = driver.execute_cdp_cmd("DOM.querySelector", {"nodeId": root, "selector": selector})["nodeId"]
    assert node, selector
    fonts: list[dict[str, Any]] = driver.execute_cdp_cmd("CSS.getPlatformFontsForNode", {"nodeId": node})["fonts"]
    return fonts


def wait_for_language(driver: Any, lang: str, timeout_s: float = 10) -> None:
    """Wait until the page in the browser is in ``lang`` (after a language switch navigates). The old page's
    <html> element goes stale as the new one loads, so the wait reads the document's lang afresh each time and
    retries a read that caught the page between documents."""
    WebDriverWait(driver, timeout_s, ignored_exceptions=(StaleElementReferenceException, JavascriptException)).until(
        lambda d: d.execute_script("return document.documentElement.lang") == lang
    )
