"""End to end in a real headless Chromium: the demo app on a NATS cluster.

Two pages on two different nodes join one chat room; a message typed in one
appears in the other and the presence counts update. Then the first page's
node is killed: its JavaScript client (which was given both nodes' URLs)
reconnects to the other node, re-subscribes, and the chat goes on. A third
page watches the dashboard. Screenshots go to ``tests/artifacts/`` (set
``RTFORGE_UPDATE_SCREENSHOTS=1`` to also refresh ``docs/img/``).

Needs Debian's ``chromium`` at ``/usr/bin/chromium`` (``.ci/run`` installs it)
and the ``playwright`` Python package; without them this test fails, it
never skips.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest
from support.cluster import Cluster, ClusterFactory
from support.nodes import REPO_ROOT

pytestmark = [pytest.mark.slow, pytest.mark.cluster]

ARTIFACTS = REPO_ROOT / "tests" / "artifacts"
DOC_IMAGES = REPO_ROOT / "docs" / "img"
TIMEOUT_MS = 15_000
VIEWPORT = {"width": 1200, "height": 720}


def demo_url(home: Any, nodes: list[Any], **query: str) -> str:
    urls = ",".join(n.ws_url for n in nodes)
    extra = "".join(f"&{k}={v}" for k, v in query.items())
    return f"{home.http_url}/?nodes={urls}{extra}"


def save(name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS / name


async def expect_in_room(page: Any, node: Any, room: str, online: int) -> None:
    """The page is connected to ``node``, in ``room``, showing ``online`` members."""
    from playwright.async_api import expect  # noqa: PLC0415

    await expect(page.locator("#status")).to_have_attribute(
        "data-state", "open", timeout=TIMEOUT_MS
    )
    await expect(page.locator("#status-text")).to_contain_text(f"{node.host}:{node.port}")
    await expect(page.locator("#room-title")).to_have_text(f"#{room}")
    await expect(page.locator("#presence")).to_have_text(f"{online} online", timeout=TIMEOUT_MS)


async def say(page: Any, text: str, *readers: Any, click: bool = False) -> None:
    """Type ``text`` into ``page``'s chat; it must appear last on every reader."""
    from playwright.async_api import expect  # noqa: PLC0415

    await page.locator("#text").fill(text)
    if click:
        await page.locator("#send").click()
    else:
        await page.locator("#text").press("Enter")
    for reader in readers:
        await expect(reader.locator("#messages li.message").last).to_contain_text(
            text, timeout=TIMEOUT_MS
        )


@pytest.mark.timeout(240)
async def test_chat_across_nodes_survives_a_killed_node(
    make_cluster: ClusterFactory, browser: Any
) -> None:
    from playwright.async_api import expect  # noqa: PLC0415

    cluster: Cluster = make_cluster("nats", nodes=2, lease_ttl=2.0)
    first, second = cluster.nodes
    room = "general"  # the cluster has a name of its own: no other test shares its rooms
    errors: list[str] = []

    async def open_page(url: str) -> Any:
        context = await browser.new_context(viewport=VIEWPORT)
        page = await context.new_page()
        page.on("pageerror", lambda exc: errors.append(f"{url}: {exc}"))
        await page.goto(url)
        return page

    alice = await open_page(demo_url(first, [first, second], user="Alice", room=room))
    bob = await open_page(demo_url(second, [second, first], user="Bob", room=room))
    watcher = await open_page(
        demo_url(second, [second, first], user="Watcher", room="ops") + "#dashboard"
    )

    await expect_in_room(alice, first, room, 2)
    await expect_in_room(bob, second, room, 2)
    await expect(alice.locator("#messages")).to_contain_text(
        f"Bob joined #{room}", timeout=TIMEOUT_MS
    )

    # a message typed on one node appears on the other, and back
    await say(alice, "Hello from Alice on the first node", bob, alice)
    await say(bob, "Hi Alice, Bob here on the second node", alice, bob, click=True)
    for page in (alice, bob):
        await expect(page.locator("#messages li.message")).to_have_count(2)
    await alice.screenshot(path=str(save("chat.png")))

    # the dashboard sees both nodes and draws them
    await expect(watcher.locator("#node-rows tr")).to_have_count(2, timeout=TIMEOUT_MS)
    await expect(watcher.locator("#m-nodes")).to_have_text("2")
    await expect(watcher.locator("#m-connections")).to_have_text("3", timeout=TIMEOUT_MS)
    await watcher.wait_for_timeout(6000)  # a few seconds of points on the charts
    await watcher.screenshot(path=str(save("dashboard.png")))

    # kill Alice's node: her page moves to the other node and keeps chatting
    first.kill()
    await expect(alice.locator("#messages")).to_contain_text(
        "reconnected via", timeout=TIMEOUT_MS
    )
    # the dead node's connection leaves the count within its lease (2 s)
    await expect_in_room(alice, second, room, 2)
    assert await alice.evaluate("window.rtforge.url") == second.ws_url
    assert await alice.evaluate("window.rtforge.channels()") == [f"chat:{room}"]
    await say(alice, "Still here after my node died", bob, alice)
    await say(bob, "Welcome back", alice, bob)
    await expect(bob.locator("#presence")).to_have_text("2 online", timeout=TIMEOUT_MS)
    await expect(watcher.locator("#m-nodes")).to_have_text("1", timeout=TIMEOUT_MS)
    await alice.screenshot(path=str(save("chat-after-failover.png")))
    await watcher.screenshot(path=str(save("dashboard-after-failover.png")))

    assert errors == [], errors
    if os.environ.get("RTFORGE_UPDATE_SCREENSHOTS") == "1":
        DOC_IMAGES.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(ARTIFACTS / "chat-after-failover.png", DOC_IMAGES / "chat.png")
        shutil.copyfile(ARTIFACTS / "dashboard.png", DOC_IMAGES / "dashboard.png")
