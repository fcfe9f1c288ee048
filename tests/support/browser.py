"""Headless Chromium for browser tests: Debian's ``chromium`` driven by
Python ``playwright`` (downloading a browser build is not possible here).

Fixtures ``chromium`` (the binary; its absence fails the test, never a skip)
and ``browser`` (a launched playwright Browser).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

__all__ = ["CHROMIUM", "CHROMIUM_ARGS", "browser", "chromium"]

CHROMIUM = Path(os.environ.get("RTFORGE_TEST_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]

@pytest.fixture
def chromium() -> Path:
    """Debian's Chromium; its absence fails the test (never a skip)."""
    assert CHROMIUM.exists(), (
        f"{CHROMIUM} not found: install Debian's chromium (apt-get install -y chromium; "
        ".ci/run does it) or point RTFORGE_TEST_CHROMIUM at a Chromium binary"
    )
    return CHROMIUM


@pytest.fixture
async def browser(chromium: Path) -> AsyncIterator[Any]:
    try:
        from playwright.async_api import async_playwright  # noqa: PLC0415
    except ImportError as exc:  # pragma: no cover - the test extra installs it
        pytest.fail(f"the playwright package is missing (pip install -e '.[test]'): {exc}")
    async with async_playwright() as playwright:
        instance = await playwright.chromium.launch(
            executable_path=str(chromium), args=CHROMIUM_ARGS, headless=True
        )
        try:
            yield instance
        finally:
            await instance.close()
