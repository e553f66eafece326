"""Debian's Chromium, headless, for the browser tests (.ci/run installs the `chromium` package)."""

from __future__ import annotations

import os
import shutil

import pytest

# Headless as root in a sandbox with a closed network: without the background-networking flags Chromium keeps
# opening connections the machine refuses.
HEADLESS_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
)


def chromium_binary() -> str:
    """The Chromium to run; missing, the test fails in CI (CI=true) and is skipped elsewhere."""
    found = next((shutil.which(n) for n in ("chromium", "chromium-browser") if shutil.which(n)), None)
    if found:
        return found
    message = (
        "headless Chromium is not installed: `apt-get install -y chromium` (Debian) — .ci/run installs it before "
        "`make test`"
    )
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(message)
    pytest.skip(message)
