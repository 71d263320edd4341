"""A headless Chromium for looking at rendered HTML: the tests' browser checks and
``makewatch render --png`` share it.

Contract:

- Only the system Chromium and its driver are used (Debian's ``chromium`` and
  ``chromium-driver``: /usr/bin/chromium, /usr/bin/chromedriver, or ``MAKEWATCH_CHROMIUM`` /
  ``MAKEWATCH_CHROMEDRIVER``). Nothing is downloaded: selenium-manager is bypassed by giving
  selenium both paths, and Chromium's own background traffic is switched off.
- selenium is optional (the ``browser`` extra); without it, or without the binaries,
  :class:`Browser` raises :class:`BrowserUnavailable` whose text says what to install.
- One :class:`Browser` is one Chromium process; open it once and load many pages.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from types import TracebackType
from typing import Any

CHROMIUM_CANDIDATES = ("chromium", "chromium-browser", "google-chrome")
CHROMEDRIVER_CANDIDATES = ("chromedriver",)

# Headless Chromium does not open a window narrower than 500 px; phone widths are emulated
# through the DevTools protocol instead (Emulation.setDeviceMetricsOverride).
WINDOW_SIZE = (1024, 900)
# A phone's height, for "above the fold" at 390 px (an iPhone 12-15's CSS viewport).
PHONE_HEIGHT_PX = 844
DESKTOP_HEIGHT_PX = 900
# Below this width a page is emulated as a mobile device (mobile viewport rules apply).
MOBILE_BELOW_PX = 600

# Run as root in a container with no internet: no sandbox (root), no /dev/shm (small in
# containers), and none of the calls home (updates, sync, safe browsing) that would hang.
CHROMIUM_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
    "--no-first-run",
    "--hide-scrollbars",
)

INSTALL_HINT = (
    "install makewatch[browser] (pip install 'makewatch[browser]') and the system Chromium "
    "with its driver (Debian: apt-get install chromium chromium-driver)"
)


class BrowserUnavailable(RuntimeError):
    """selenium, Chromium or chromedriver is missing; the text says which and what to do."""


def _which(env: str, names: tuple[str, ...]) -> str | None:
    if os.environ.get(env):
        path = os.environ[env]
        return path if os.access(path, os.X_OK) else None
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    return None


def find_binaries() -> tuple[str, str] | None:
    """(chromium, chromedriver) paths, or None when either is missing."""
    chromium = _which("MAKEWATCH_CHROMIUM", CHROMIUM_CANDIDATES)
    driver = _which("MAKEWATCH_CHROMEDRIVER", CHROMEDRIVER_CANDIDATES)
    return (chromium, driver) if chromium and driver else None


def unavailable_reason() -> str | None:
    """Why no :class:`Browser` can start here, or None when one can."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return f"selenium is not installed: {INSTALL_HINT}"
    if find_binaries() is None:
        return f"no chromium and chromedriver on PATH: {INSTALL_HINT}"
    return None


class Browser:
    """A headless Chromium driven by selenium. Use as a context manager."""

    def __init__(self) -> None:
        reason = unavailable_reason()
        if reason:
            raise BrowserUnavailable(reason)
        from selenium import webdriver
        from selenium.webdriver.chrome.options import Options
        from selenium.webdriver.chrome.service import Service

        chromium, driver = find_binaries()  # type: ignore[misc]
        self._profile = tempfile.TemporaryDirectory(prefix="makewatch-chromium-")
        options = Options()
        options.binary_location = chromium
        for flag in CHROMIUM_FLAGS:
            options.add_argument(flag)
        options.add_argument(f"--window-size={WINDOW_SIZE[0]},{WINDOW_SIZE[1]}")
        options.add_argument(f"--user-data-dir={self._profile.name}")
        # Given the driver's path, selenium-manager is not run (it would try to download one).
        service = Service(executable_path=driver)
        try:
            self.driver = webdriver.Chrome(service=service, options=options)
        except Exception:
            self._profile.cleanup()
            raise
        self.width = 0
        self.height = 0

    def __enter__(self) -> Browser:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        try:
            self.driver.quit()
        finally:
            self._profile.cleanup()

    def set_viewport(self, width: int, height: int | None = None) -> None:
        """Emulate a viewport of ``width`` CSS px (mobile below :data:`MOBILE_BELOW_PX`)."""
        mobile = width < MOBILE_BELOW_PX
        if height is None:
            height = PHONE_HEIGHT_PX if mobile else DESKTOP_HEIGHT_PX
        self.driver.execute_cdp_cmd(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile},
        )
        self.width, self.height = width, height

    def load(self, path: Path, width: int, height: int | None = None) -> None:
        """Open the HTML file ``path`` at a viewport of ``width`` px."""
        self.set_viewport(width, height)
        self.driver.get(path.resolve().as_uri())

    def js(self, script: str, *args: Any) -> Any:
        """Run ``script`` (a function body: ``return ...``) in the page."""
        return self.driver.execute_script(script, *args)

    def screenshot(self, png: Path, *, full_page: bool = True) -> None:
        """Write a PNG of the page: the whole document's height when ``full_page``."""
        if full_page:
            doc_height = int(self.js("return document.documentElement.scrollHeight"))
            self.driver.execute_cdp_cmd(
                "Emulation.setDeviceMetricsOverride",
                {
                    "width": self.width,
                    "height": max(self.height, doc_height),
                    "deviceScaleFactor": 1,
                    "mobile": self.width < MOBILE_BELOW_PX,
                },
            )
        png.parent.mkdir(parents=True, exist_ok=True)
        try:
            if not self.driver.save_screenshot(str(png)):
                raise OSError(f"Chromium wrote no screenshot to {png}")
        finally:
            if full_page:
                self.set_viewport(self.width, self.height)


def screenshot_html(html: str, png: Path, *, width: int = 800) -> None:
    """Render ``html`` in a headless Chromium at ``width`` px and write a full-page PNG."""
    with tempfile.TemporaryDirectory(prefix="makewatch-render-") as tmp:
        page = Path(tmp) / "page.html"
        page.write_text(html, encoding="utf-8")
        with Browser() as browser:
            browser.load(page, width)
            browser.screenshot(png)
