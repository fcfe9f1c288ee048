"""``infra/``: the docker-compose stack is valid, its parts agree with each
other, and every Grafana dashboard queries only metrics a node exports.

The compose file is checked with ``docker compose config`` (or the Debian
``docker-compose`` package's ``docker-compose config``); when neither tool
exists the test fails: ``.ci/run`` installs one. Metric names are taken from
a live node's ``/metrics`` and compared with the metric names in every
PromQL expression of the dashboards.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from support.nodes import REPO_ROOT, NodeProcess

INFRA = REPO_ROOT / "infra"
COMPOSE_FILE = INFRA / "docker-compose.yml"
DASHBOARDS = sorted((INFRA / "grafana" / "dashboards").glob("*.json"))
NODES = ("rtforge-1", "rtforge-2", "rtforge-3")
SERVICES = {
    "nats", "redis", *NODES, "nginx", "otel-collector", "jaeger", "prometheus", "grafana",
}

_PROMQL_KEYWORDS = frozenset({
    "by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless",
    "bool", "offset", "inf", "nan",
})


def _compose_command() -> list[str]:
    """``docker compose`` when the plugin works, else ``docker-compose``."""
    docker = shutil.which("docker")
    if docker is not None:
        probe = subprocess.run(
            [docker, "compose", "version"], capture_output=True, timeout=60, check=False
        )
        if probe.returncode == 0:
            return [docker, "compose"]
    legacy = shutil.which("docker-compose")
    if legacy is not None:
        return [legacy]
    pytest.fail(
        "neither `docker compose` nor `docker-compose` is installed; "
        "install one (Debian: apt-get install docker-compose; .ci/run does)",
        pytrace=False,
    )


def _compose(*args: str) -> str:
    command = [*_compose_command(), "-f", str(COMPOSE_FILE), *args]
    result = subprocess.run(
        command, cwd=INFRA, capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, (
        f"{' '.join(command)} failed ({result.returncode}):\n{result.stderr}{result.stdout}"
    )
    return result.stdout


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    """The compose file as ``config`` resolves it."""
    config: dict[str, Any] = yaml.safe_load(_compose("config"))
    return config


def test_the_compose_file_passes_compose_config(compose: dict[str, Any]) -> None:
    assert set(compose["services"]) >= SERVICES


def test_every_node_is_built_from_the_infra_dockerfile_and_traces_to_the_collector(
    compose: dict[str, Any],
) -> None:
    for name in NODES:
        service = compose["services"][name]
        assert service["build"]["dockerfile"] == "infra/Dockerfile"
        env = service["environment"]
        assert env["RTFORGE_NODE_ID"] == name
        assert env["RTFORGE_NATS_URL"] == "nats://nats:4222"
        assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://otel-collector:4318"
        assert env["OTEL_EXPORTER_OTLP_PROTOCOL"] == "http/protobuf"
    assert (INFRA / "Dockerfile").is_file()
    collector = yaml.safe_load((INFRA / "otel-collector" / "config.yaml").read_text())
    assert collector["receivers"]["otlp"]["protocols"]["http"]["endpoint"].endswith(":4318")
    assert collector["service"]["pipelines"]["traces"]["exporters"] == ["otlp/jaeger"]
    assert collector["exporters"]["otlp/jaeger"]["endpoint"] == "jaeger:4317"


def test_prometheus_scrapes_every_node_directly() -> None:
    config = yaml.safe_load((INFRA / "prometheus" / "prometheus.yml").read_text())
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "rtforge"]
    targets = {t for group in job["static_configs"] for t in group["targets"]}
    assert targets == {f"{name}:3000" for name in NODES}


def test_nginx_proxies_websockets_with_the_deployment_settings() -> None:
    text = (INFRA / "nginx" / "nginx.conf").read_text()
    ws = text[text.index("location /ws"):]
    ws = ws[: ws.index("}")]
    for directive in (
        "proxy_http_version 1.1;",
        "proxy_set_header Upgrade $http_upgrade;",
        'proxy_set_header Connection "upgrade";',
        "proxy_set_header Host $host;",
        "proxy_set_header X-Real-IP $remote_addr;",
        "proxy_read_timeout 86400;",
    ):
        assert directive in ws, f"location /ws lacks {directive}"
    for name in NODES:
        assert f"server {name}:3000;" in text


def test_grafana_provisions_the_datasources_and_dashboards_the_compose_file_mounts(
    compose: dict[str, Any],
) -> None:
    provisioning = INFRA / "grafana" / "provisioning"
    sources = yaml.safe_load((provisioning / "datasources" / "datasources.yaml").read_text())
    uids = {s["uid"]: s["type"] for s in sources["datasources"]}
    assert uids == {"prometheus": "prometheus", "jaeger": "jaeger"}
    providers = yaml.safe_load((provisioning / "dashboards" / "dashboards.yaml").read_text())
    path = providers["providers"][0]["options"]["path"]
    volumes = " ".join(str(v) for v in compose["services"]["grafana"]["volumes"])
    assert path in volumes
    for dashboard in DASHBOARDS:
        for ref in _datasource_refs(json.loads(dashboard.read_text())):
            assert ref in uids, f"{dashboard.name} uses unknown datasource {ref!r}"


# -- dashboards --------------------------------------------------------------------


def _walk(node: Any) -> Any:
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from _walk(value)


def _datasource_refs(dashboard: dict[str, Any]) -> set[str]:
    return {
        node["datasource"]["uid"]
        for node in _walk(dashboard)
        if isinstance(node.get("datasource"), dict) and "uid" in node["datasource"]
    }


def _promql(dashboard: dict[str, Any]) -> list[str]:
    """Every PromQL expression: panel targets and query variables."""
    found = []
    for node in _walk(dashboard):
        source = node.get("datasource")
        prometheus = isinstance(source, dict) and source.get("type") == "prometheus"
        if prometheus and isinstance(node.get("expr"), str):
            found.append(node["expr"])
        if prometheus and node.get("type") == "query":
            query = node.get("query")
            found.append(query["query"] if isinstance(query, dict) else str(query))
    return found


def metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression (or a Grafana ``label_values``)."""
    expr = re.sub(r"label_values\(\s*([^,]+?)\s*,\s*\w+\s*\)", r"\1", expr)
    expr = re.sub(r'"(?:\\.|[^"\\])*"', '""', expr)  # strings
    expr = re.sub(r"\{[^}]*\}", " ", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", " ", expr)  # ranges and subqueries
    expr = re.sub(
        r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr
    )
    expr = re.sub(r"\$\{?\w+\}?", " ", expr)  # Grafana variables
    names = set()
    for match in re.finditer(r"(?<![\w.])[A-Za-z_:][A-Za-z0-9_:]*", expr):
        token = match.group(0)
        if expr[match.end():].lstrip().startswith("("):
            continue  # a function or an aggregation
        if token.lower() in _PROMQL_KEYWORDS:
            continue
        names.add(token)
    return names


def test_the_promql_name_extractor_reads_what_dashboards_write() -> None:
    assert metric_names(
        'histogram_quantile(0.99, sum by (instance, le) '
        '(rate(rtforge_backplane_publish_seconds_bucket{instance=~"$instance"}[$__rate_interval])))'
    ) == {"rtforge_backplane_publish_seconds_bucket"}
    assert metric_names("label_values(rtforge_node_info, instance)") == {"rtforge_node_info"}
    assert metric_names(
        "sum(rate(a_total[5m])) by (route) / on(instance) group_left(node_id) b_info"
    ) == {"a_total", "b_info"}
    assert metric_names("1e3 * x and bool y offset 5m") == {"x", "y"}


def test_dashboards_load_and_have_the_fleet_and_tracing_views() -> None:
    titles = {}
    for path in DASHBOARDS:
        dashboard = json.loads(path.read_text())
        assert dashboard["uid"] and dashboard["title"] and dashboard["panels"], path.name
        titles[dashboard["uid"]] = dashboard
    assert {"rtforge-fleet", "rtforge-tracing"} <= set(titles)
    fleet = " ".join(_promql(titles["rtforge-fleet"]))
    for metric in (
        "rtforge_connections", "rtforge_deliveries_total",
        "rtforge_slow_consumer_disconnects_total", "rtforge_backplane_publish_seconds_bucket",
    ):
        assert metric in fleet, f"the fleet dashboard does not show {metric}"
    tracing = titles["rtforge-tracing"]
    assert any(p.get("type") == "traces" for p in tracing["panels"])


def test_dashboards_query_only_metrics_a_node_exports(node: NodeProcess) -> None:
    text = httpx.get(f"{node.http_url}/metrics", trust_env=False, timeout=10).text
    exported = {
        sample.name
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
    used: dict[str, set[str]] = {}
    for path in DASHBOARDS:
        for expr in _promql(json.loads(path.read_text())):
            for name in metric_names(expr):
                used.setdefault(name, set()).add(path.name)
    assert used, "no PromQL found in the dashboards"
    unknown = {name: sorted(files) for name, files in used.items() if name not in exported}
    assert not unknown, f"dashboards query metrics no node exports: {unknown}"


def test_docs_describe_every_exported_rtforge_metric(node: NodeProcess) -> None:
    text = httpx.get(f"{node.http_url}/metrics", trust_env=False, timeout=10).text
    families = {f.name for f in text_string_to_metric_families(text)}
    docs = (REPO_ROOT / "docs" / "observability.md").read_text()
    # A counter's ``*_created`` sample (its creation time) is documented once, in general.
    undocumented = sorted(
        name for name in families
        if name.startswith("rtforge_") and not name.endswith("_created") and name not in docs
    )
    assert not undocumented, f"docs/observability.md does not describe {undocumented}"
