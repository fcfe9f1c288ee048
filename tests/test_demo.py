"""The demo web app a node serves, and the JavaScript client it hands out."""

from __future__ import annotations

import re
import tomllib

import httpx
import pytest
from support.nodes import REPO_ROOT, NodeFactory, NodeProcess

from service.demo import STATIC_DIR

CANONICAL_JS_CLIENT = REPO_ROOT / "clients" / "js" / "rtforge.js"


def test_served_js_client_is_the_canonical_one() -> None:
    """``clients/js/rtforge.js`` is a link to ``service/static/rtforge.js``,
    the one file the node serves and the wheel ships: there is no copy to
    keep in step."""
    assert CANONICAL_JS_CLIENT.is_symlink()
    assert CANONICAL_JS_CLIENT.resolve() == (STATIC_DIR / "rtforge.js").resolve()


def test_static_files_are_packaged() -> None:
    """Package data ships ``service/static/*``: every file the page loads
    must sit directly in that folder."""
    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    assert "static/*" in pyproject["tool"]["setuptools"]["package-data"]["service"]
    assert all(p.is_file() for p in STATIC_DIR.iterdir()), "no sub-folders in service/static"
    referenced: set[str] = set()
    for name in ("index.html", "app.js", "chat.js", "dashboard.js"):
        text = (STATIC_DIR / name).read_text()
        referenced |= set(re.findall(r"""['"]/demo/([\w.-]+)['"]""", text))
        referenced |= {"rtforge.js"} if "/clients/rtforge.js" in text else set()
    assert referenced >= {"style.css", "app.js", "chat.js", "dashboard.js", "charts.js",
                          "rtforge.js"}
    for name in referenced:
        assert (STATIC_DIR / name).is_file(), name


@pytest.fixture(scope="module")
def demo_node(module_start_node: NodeFactory) -> NodeProcess:
    return module_start_node()


@pytest.mark.parametrize(
    ("path", "media_type", "needle"),
    [
        ("/", "text/html", '<script type="module" src="/demo/app.js">'),
        ("/demo/app.js", "text/javascript", "new RtforgeClient(urls"),
        ("/demo/chat.js", "text/javascript", "chat.user_joined"),
        ("/demo/dashboard.js", "text/javascript", "dashboard:metrics"),
        ("/demo/charts.js", "text/javascript", "export function drawChart"),
        ("/demo/style.css", "text/css", ".messages"),
        ("/clients/rtforge.js", "text/javascript", "export class RtforgeClient"),
    ],
)
async def test_node_serves_the_demo(
    demo_node: NodeProcess, http: httpx.AsyncClient, path: str, media_type: str, needle: str
) -> None:
    response = await http.get(f"{demo_node.http_url}{path}")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith(media_type)
    assert "no-cache" in response.headers.get("cache-control", "")
    assert needle in response.text


async def test_served_client_matches_the_source(
    demo_node: NodeProcess, http: httpx.AsyncClient
) -> None:
    response = await http.get(f"{demo_node.http_url}/clients/rtforge.js")
    assert response.content == CANONICAL_JS_CLIENT.read_bytes()


async def test_unknown_demo_file_is_404(demo_node: NodeProcess, http: httpx.AsyncClient) -> None:
    for path in ("/demo/nope.js", "/demo/../settings.py", "/demo/%2e%2e/app.py"):
        response = await http.get(f"{demo_node.http_url}{path}")
        assert response.status_code == 404, path
    demo_node.assert_log_clean()


async def test_demo_off_serves_no_page(start_node: NodeFactory, http: httpx.AsyncClient) -> None:
    node = start_node(demo="off")
    for path in ("/", "/demo/app.js", "/demo/index.html"):
        assert (await http.get(f"{node.http_url}{path}")).status_code == 404, path
    # the JavaScript client is served all the same
    response = await http.get(f"{node.http_url}/clients/rtforge.js")
    assert response.status_code == 200
    assert response.content == CANONICAL_JS_CLIENT.read_bytes()
