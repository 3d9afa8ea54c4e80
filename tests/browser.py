"""Headless Chromium for the tests that check a page renders: the browser, a screenshot, and whether it shows
anything. ``GUIDEDRL_REQUIRE_CHROMIUM`` (set in CI, after ``make chromium``) turns a missing browser into a failure."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from PIL import Image

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"]


def chromium() -> str:
    """The browser's path; skips the test without one, unless GUIDEDRL_REQUIRE_CHROMIUM asks for it."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None and os.environ.get("GUIDEDRL_REQUIRE_CHROMIUM"):
        pytest.fail("chromium is required here (make chromium installs Debian's package)")
    if found is None:
        pytest.skip("chromium is not installed (make chromium)")
    return found


def screenshot(url: str, shot: Path, size: str = "1400,2400") -> Image.Image:
    """``url`` rendered at ``size`` (width,height) into ``shot``, in a fresh profile beside it, opened."""
    subprocess.run([chromium(), *FLAGS, f"--user-data-dir={shot.parent / (shot.stem + '_profile')}",
                    f"--screenshot={shot}", f"--window-size={size}", url], check=True, capture_output=True,
                   timeout=120)
    return Image.open(shot)


def painted(image: Image.Image) -> bool:
    """Not one flat colour: no grey level covers 97% of the pixels, so text and figures were drawn."""
    histogram = image.convert("L").histogram()
    return max(histogram) < 0.97 * sum(histogram)
