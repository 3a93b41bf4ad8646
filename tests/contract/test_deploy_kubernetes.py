"""deploy/kubernetes: rendered by the real kustomize, validated against the Kubernetes OpenAPI
schemas, and checked against the settings authz really reads and the Envoy config it runs.

Tools: `kubectl kustomize` (kustomize built into kubectl) and `kubernetes-validate`
(installed by deploy/install-tools.sh). A missing tool fails the tests: CI installs them.
"""

from __future__ import annotations

import copy
import dataclasses
import importlib.util
import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import referencing
import yaml

import authz
from authz.settings.addresses import split_host_port
from authz.settings.load import load_settings
from authz.settings.model import Settings
from tests.harness import ROOT, assert_envoy_config_valid

KUBE = ROOT / "deploy" / "kubernetes"
BASE = KUBE / "base"
OVERLAY = KUBE / "overlays" / "example"
SCHEMAS = KUBE / "schemas"
# The oldest Kubernetes the manifests are for (preStop `sleep`, matchLabelKeys, unhealthy pod
# eviction policy are all on by default from 1.30) and the newest schema set available.
KUBERNETES_VERSIONS = ("1.30.0", "1.37.0")
CRD_SCHEMAS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "servicemonitor-monitoring-v1.json",
    ("monitoring.coreos.com/v1", "PrometheusRule"): "prometheusrule-monitoring-v1.json",
    ("cert-manager.io/v1", "Certificate"): "certificate-cert-manager-v1.json",
    ("cert-manager.io/v1", "Issuer"): "issuer-cert-manager-v1.json",
}
EXPECTED_OBJECTS = {
    ("ServiceAccount", "authz"),
    ("ServiceAccount", "envoy-gateway"),
    ("ConfigMap", "authz-settings"),
    ("ConfigMap", "envoy-gateway"),
    ("Service", "authz"),
    ("Service", "authz-grpc"),
    ("Service", "envoy-gateway"),
    ("Deployment", "authz"),
    ("Deployment", "envoy-gateway"),
    ("PodDisruptionBudget", "authz"),
    ("PodDisruptionBudget", "envoy-gateway"),
    ("HorizontalPodAutoscaler", "authz"),
    ("NetworkPolicy", "authz"),
    ("NetworkPolicy", "envoy-gateway"),
    ("ServiceMonitor", "authz"),
    ("ServiceMonitor", "envoy-gateway"),
    ("PrometheusRule", "authz"),
}

Obj = dict[str, Any]


def _kustomize(path: Path) -> list[Obj]:
    if shutil.which("kubectl") is None:
        pytest.fail("kubectl not found (deploy/install-tools.sh checks for it)")
    done = subprocess.run(
        ["kubectl", "kustomize", str(path)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc is not None]


@pytest.fixture(scope="module")
def base() -> list[Obj]:
    return _kustomize(BASE)


@pytest.fixture(scope="module")
def overlay() -> list[Obj]:
    return _kustomize(OVERLAY)


def _one(objects: list[Obj], kind: str, name: str) -> Obj:
    """The object of `kind` whose name is `name` (or, for generated ConfigMaps, `name-<hash>`)."""
    found = [o for o in objects if o["kind"] == kind and _base_name(o) == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
    return found[0]


def _base_name(obj: Obj) -> str:
    name: str = obj["metadata"]["name"]
    if obj["kind"] == "ConfigMap":
        return name.rsplit("-", 1)[0]
    return name


def _crd_validator(api_version: str, kind: str) -> Any:
    registry: referencing.Registry[Any] = referencing.Registry()
    for path in SCHEMAS.glob("*.json"):
        contents = json.loads(path.read_text())
        registry = registry.with_resource(
            contents["$id"], referencing.Resource.from_contents(contents)
        )
    schema = json.loads((SCHEMAS / CRD_SCHEMAS[(api_version, kind)]).read_text())
    return jsonschema.Draft202012Validator(schema, registry=registry)


def _validate(obj: Obj, version: str) -> None:
    key = (obj["apiVersion"], obj["kind"])
    if key in CRD_SCHEMAS:
        _crd_validator(*key).validate(obj)
    else:
        kubernetes_validate.validate(obj, version, strict=True)


# ---- rendering and schemas ----


@pytest.mark.parametrize("which", ["base", "overlay"])
def test_renders_every_object_and_each_validates(
    which: str, request: pytest.FixtureRequest
) -> None:
    objects: list[Obj] = request.getfixturevalue(which)
    assert {(o["kind"], _base_name(o)) for o in objects} == EXPECTED_OBJECTS
    for obj in objects:
        for version in KUBERNETES_VERSIONS:
            try:
                _validate(obj, version)
            except Exception as exc:
                pytest.fail(f"{obj['kind']}/{obj['metadata']['name']} (k8s {version}): {exc}")


def test_validation_rejects_what_a_cluster_would(base: list[Obj]) -> None:
    # The checks above must be able to fail: a misspelt field, a wrong type, a CRD typo.
    deployment = copy.deepcopy(_one(base, "Deployment", "authz"))
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbes"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        _validate(deployment, KUBERNETES_VERSIONS[0])
    hpa = copy.deepcopy(_one(base, "HorizontalPodAutoscaler", "authz"))
    hpa["spec"]["minReplicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        _validate(hpa, KUBERNETES_VERSIONS[0])
    monitor = copy.deepcopy(_one(base, "ServiceMonitor", "authz"))
    monitor["spec"]["endpoints"][0]["intervall"] = "15s"
    with pytest.raises(jsonschema.ValidationError):
        _validate(monitor, KUBERNETES_VERSIONS[0])
    rule = copy.deepcopy(_one(base, "PrometheusRule", "authz"))
    rule["spec"]["groups"][1]["rules"][0]["for"] = "two minutes"
    with pytest.raises(jsonschema.ValidationError):
        _validate(rule, KUBERNETES_VERSIONS[0])


def test_secret_example_validates_and_fits_the_deployment(base: list[Obj]) -> None:
    secret = yaml.safe_load((BASE / "secret.example.yaml").read_text())
    for version in KUBERNETES_VERSIONS:
        _validate(secret, version)
    volume = _volume(_pod(base, "authz"), "hs256")
    assert volume["secret"]["secretName"] == secret["metadata"]["name"]
    mount = _mount(_container(base, "authz"), "hs256")
    path = _settings_env(base)["AUTHZ_HS256_SECRET_FILE"]
    assert path == f"{mount['mountPath']}/{next(iter(secret['stringData']))}"
    # The placeholder must not be a usable secret: authz refuses anything under 32 bytes.
    assert all(len(line.encode()) < 32 for line in secret["stringData"]["secrets"].splitlines())


# ---- authz: the Deployment against the settings authz reads ----


def _pod(objects: list[Obj], name: str) -> Obj:
    spec: Obj = _one(objects, "Deployment", name)["spec"]["template"]["spec"]
    return spec


def _container(objects: list[Obj], name: str) -> Obj:
    containers: list[Obj] = _pod(objects, name)["containers"]
    assert len(containers) == 1
    return containers[0]


def _ports(container: Obj) -> dict[str, int]:
    return {p["name"]: p["containerPort"] for p in container["ports"]}


def _volume(pod: Obj, name: str) -> Obj:
    return next(v for v in pod["volumes"] if v["name"] == name)


def _mount(container: Obj, name: str) -> Obj:
    return next(m for m in container["volumeMounts"] if m["name"] == name)


def _settings_env(objects: list[Obj]) -> dict[str, str]:
    data: dict[str, str] = _one(objects, "ConfigMap", "authz-settings")["data"]
    return data


def _env_names() -> set[str]:
    return {"AUTHZ_" + f.name.upper() for f in dataclasses.fields(Settings)}


def _loaded(objects: list[Obj], tmp_path: Path) -> Settings:
    """The settings authz builds from the rendered ConfigMap, the Secret mounted at tmp_path."""
    env = dict(_settings_env(objects))
    secret_file = tmp_path / "secrets"
    secret_file.write_text("s" * 48 + "\n")
    env["AUTHZ_HS256_SECRET_FILE"] = str(secret_file)
    return load_settings(None, None, env)


@pytest.mark.parametrize("which", ["base", "overlay"])
def test_settings_configmap_is_what_authz_reads(
    which: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    objects: list[Obj] = request.getfixturevalue(which)
    env = _settings_env(objects)
    unknown = set(env) - _env_names()
    assert not unknown, f"authz reads no such setting: {sorted(unknown)}"
    container = _container(objects, "authz")
    assert [e["configMapRef"]["name"] for e in container["envFrom"]] == [
        _one(objects, "ConfigMap", "authz-settings")["metadata"]["name"]
    ]
    settings = _loaded(objects, tmp_path)
    ports = _ports(container)
    assert split_host_port(settings.grpc_address)[1] == ports["grpc"]
    assert split_host_port(settings.http_address)[1] == ports["metrics"]
    # Listening on loopback inside a pod would make it unreachable for Envoy and kubelet.
    assert split_host_port(settings.grpc_address)[0] in ("0.0.0.0", "::", "[::]")
    assert split_host_port(settings.http_address)[0] in ("0.0.0.0", "::", "[::]")
    if which == "overlay":
        assert settings.jwks_url is not None and settings.issuer is not None


def test_settings_check_can_fail(tmp_path: Path) -> None:
    # The env-name check above sees a typo, and the real loader rejects a bad value.
    assert "AUTHZ_GRPC_ADRESS" not in _env_names()
    with pytest.raises(Exception, match="AUTHZ_GRPC_ADDRESS"):
        load_settings(None, None, {"AUTHZ_GRPC_ADDRESS": "nowhere", "AUTHZ_HS256_SECRET": "s" * 40})


def test_authz_deployment_probes_resources_and_security(base: list[Obj]) -> None:
    deployment = _one(base, "Deployment", "authz")
    assert deployment["spec"]["replicas"] >= 2
    pod = _pod(base, "authz")
    container = _container(base, "authz")
    assert container["args"][0] == "serve"
    # Probes: readiness and startup on /readyz (key material loaded), liveness on /healthz.
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert container["startupProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 60
    for kind in ("requests", "limits"):
        assert set(container["resources"][kind]) == {"cpu", "memory"}
    pod_security = pod["securityContext"]
    assert pod_security["runAsNonRoot"] is True and pod_security["runAsUser"] != 0
    assert pod_security["seccompProfile"] == {"type": "RuntimeDefault"}
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    keys = {c["topologyKey"] for c in pod["topologySpreadConstraints"]}
    assert keys == {"kubernetes.io/hostname", "topology.kubernetes.io/zone"}
    # A subPath mount never sees kubelet's symlink swap: rotation would need a restart.
    assert "subPath" not in _mount(container, "hs256")
    assert _mount(container, "tmp")["mountPath"] == "/tmp"
    grace = pod["terminationGracePeriodSeconds"]
    assert container["lifecycle"]["preStop"]["sleep"]["seconds"] < grace


def test_authz_image_is_this_version(base: list[Obj], overlay: list[Obj]) -> None:
    assert _container(base, "authz")["image"] == f"authz:{authz.__version__}"
    assert _container(overlay, "authz")["image"].endswith(f"/authz:{authz.__version__}")


def test_services_reach_named_container_ports(base: list[Obj]) -> None:
    for service_name, deployment_name in [
        ("authz", "authz"),
        ("authz-grpc", "authz"),
        ("envoy-gateway", "envoy-gateway"),
    ]:
        service = _one(base, "Service", service_name)
        pod_labels = _one(base, "Deployment", deployment_name)["spec"]["template"]["metadata"][
            "labels"
        ]
        assert service["spec"]["selector"].items() <= pod_labels.items()
        ports = _ports(_container(base, deployment_name))
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in ports, f"{service_name}: {port}"
    grpc_ports = [
        p
        for s in ("authz", "authz-grpc")
        for p in _one(base, "Service", s)["spec"]["ports"]
        if p["name"] == "grpc"
    ]
    # HTTP/2 must be recognisable from the Service alone (meshes, gateway controllers).
    assert all(p["appProtocol"] == "kubernetes.io/h2c" for p in grpc_ports)
    assert _one(base, "Service", "authz-grpc")["spec"]["clusterIP"] == "None"


def test_disruption_budget_autoscaler_and_monitors_select_the_right_things(
    base: list[Obj],
) -> None:
    for name in ("authz", "envoy-gateway"):
        labels = _one(base, "Deployment", name)["spec"]["template"]["metadata"]["labels"]
        pdb = _one(base, "PodDisruptionBudget", name)
        assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
        policy = _one(base, "NetworkPolicy", name)
        assert policy["spec"]["podSelector"]["matchLabels"].items() <= labels.items()
        named = _ports(_container(base, name))
        for rule in policy["spec"]["ingress"]:
            assert all(p["port"] in named for p in rule["ports"])
        monitor = _one(base, "ServiceMonitor", name)
        selected = [
            s
            for s in base
            if s["kind"] == "Service"
            and monitor["spec"]["selector"]["matchLabels"].items()
            <= s["metadata"]["labels"].items()
        ]
        scraped = [
            s["metadata"]["name"]
            for s in selected
            for p in s["spec"]["ports"]
            if p["name"] == monitor["spec"]["endpoints"][0]["port"]
        ]
        # Exactly one Service carries the scraped port: no duplicate targets.
        assert scraped == [name]
    hpa = _one(base, "HorizontalPodAutoscaler", "authz")
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "authz",
    }
    assert hpa["spec"]["minReplicas"] >= 2


def test_only_envoy_reaches_grpc_and_only_prometheus_reaches_metrics(base: list[Obj]) -> None:
    policy = _one(base, "NetworkPolicy", "authz")
    by_port = {rule["ports"][0]["port"]: rule["from"] for rule in policy["spec"]["ingress"]}
    assert set(by_port) == {"grpc", "metrics"}
    envoy_labels = _one(base, "Deployment", "envoy-gateway")["spec"]["template"]["metadata"][
        "labels"
    ]
    assert [p["podSelector"]["matchLabels"] for p in by_port["grpc"]] == [
        {"app.kubernetes.io/name": envoy_labels["app.kubernetes.io/name"]}
    ]
    prometheus = by_port["metrics"][0]
    assert prometheus["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "prometheus"}
    assert "namespaceSelector" in prometheus


# ---- the Envoy gateway and its config ----


def _envoy_copy() -> Obj:
    config: Obj = yaml.safe_load((BASE / "gateway-envoy.yaml").read_text())
    return config


def test_gateway_configmap_is_the_generated_envoy_config(base: list[Obj]) -> None:
    configmap = _one(base, "ConfigMap", "envoy-gateway")
    assert configmap["data"]["envoy.yaml"] == (BASE / "gateway-envoy.yaml").read_text()
    volume = _volume(_pod(base, "envoy-gateway"), "config")
    assert volume["configMap"]["name"] == configmap["metadata"]["name"]


def test_generated_copies_are_fresh() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "deploy" / "sync.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr


def _differences(a: Any, b: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    if isinstance(a, dict) and isinstance(b, dict):
        for key in a.keys() | b.keys():
            if key not in a or key not in b:
                yield (*path, key)
            else:
                yield from _differences(a[key], b[key], (*path, key))
    elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            yield from _differences(x, y, (*path, i))
    elif a != b:
        yield path


def test_gateway_config_differs_from_envoy_yaml_only_in_addresses() -> None:
    source: Obj = yaml.safe_load((ROOT / "envoy.yaml").read_text())
    deployed = _envoy_copy()
    static, deployed_static = source["static_resources"], deployed["static_resources"]
    # The additions: one listener and one cluster for the admin's read-only endpoints.
    assert [x["name"] for x in deployed_static["listeners"]] == [
        *(x["name"] for x in static["listeners"]),
        "prometheus_stats",
    ]
    assert [x["name"] for x in deployed_static["clusters"]] == [
        *(x["name"] for x in static["clusters"]),
        "envoy_admin",
    ]
    trimmed = copy.deepcopy(deployed)
    trimmed["static_resources"]["listeners"].pop()
    trimmed["static_resources"]["clusters"].pop()
    hosts: dict[str, str] = {}
    for path in _differences(source, trimmed):
        assert path[:2] == ("static_resources", "clusters"), path
        cluster = trimmed["static_resources"]["clusters"][path[2]]
        if path[3:] == ("type",):
            assert cluster["type"] == "STRICT_DNS"
            continue
        assert path[3:6] == ("load_assignment", "endpoints", 0) and path[-1] == "address", path
        hosts[cluster["name"]] = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0][
            "endpoint"
        ]["address"]["socket_address"]["address"]
    assert hosts == {"authz": "authz-grpc", "ant_media": "ant-media"}
    # The admin interface itself stays on loopback; only two read-only paths are routed.
    assert deployed["admin"] == source["admin"]
    assert deployed["admin"]["address"]["socket_address"]["address"] == "127.0.0.1"


def test_gateway_deployment_matches_its_config(base: list[Obj]) -> None:
    config = _envoy_copy()
    listeners = {x["name"]: x for x in config["static_resources"]["listeners"]}
    ports = _ports(_container(base, "envoy-gateway"))
    assert ports["http"] == listeners["ams_gateway"]["address"]["socket_address"]["port_value"]
    stats = listeners["prometheus_stats"]["address"]["socket_address"]
    assert ports["stats"] == stats["port_value"] and stats["address"] == "0.0.0.0"
    container = _container(base, "envoy-gateway")
    assert container["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "stats"}
    assert (
        container["args"][container["args"].index("--config-path") + 1] == "/etc/envoy/envoy.yaml"
    )
    assert _mount(container, "config")["mountPath"] == "/etc/envoy"
    monitor = _one(base, "ServiceMonitor", "envoy-gateway")["spec"]["endpoints"][0]
    assert monitor["path"] == "/stats/prometheus"
    # Envoy's authz cluster names the headless Service on its gRPC port.
    authz_cluster = next(c for c in config["static_resources"]["clusters"] if c["name"] == "authz")
    address = authz_cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"][
        "address"
    ]["socket_address"]
    service = _one(base, "Service", address["address"])
    assert any(p["port"] == address["port_value"] for p in service["spec"]["ports"])
    assert _ports(_container(base, "authz"))["grpc"] == address["port_value"]


def test_real_envoy_accepts_the_gateway_config() -> None:
    assert_envoy_config_valid(BASE / "gateway-envoy.yaml", timeout=120)


def _sync_module() -> Any:
    spec = importlib.util.spec_from_file_location("deploy_sync", ROOT / "deploy" / "sync.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_sync_refuses_a_config_it_cannot_move_into_the_cluster() -> None:
    sync = _sync_module()
    source: Obj = yaml.safe_load((ROOT / "envoy.yaml").read_text())
    assert sync.gateway_config(source) == _envoy_copy()
    # A new loopback cluster (say, a JWKS fetcher) would silently point at the pod itself.
    extra = copy.deepcopy(source)
    jwks = copy.deepcopy(extra["static_resources"]["clusters"][-1])
    jwks["name"] = "jwks"
    jwks["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"][
        "socket_address"
    ]["port_value"] = 8443
    extra["static_resources"]["clusters"].append(jwks)
    with pytest.raises(sync.SyncError, match="jwks"):
        sync.gateway_config(extra)
    renamed = copy.deepcopy(source)
    renamed["static_resources"]["clusters"][0]["name"] = "ext_authz"
    with pytest.raises(sync.SyncError, match="authz"):
        sync.gateway_config(renamed)
