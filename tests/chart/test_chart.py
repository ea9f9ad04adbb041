"""The Helm chart, linted and rendered with the real Helm v4 SDK, every object schema-checked.

Run: `python3 -m pytest tests/chart`. Needs PyPI `helm-python-sdk`, `kubernetes-validate`, `pyyaml`
and `pytest`. The imports below are unconditional on purpose: without the SDK these tests fail
(CI installs it) instead of being skipped.
"""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import jsonschema
import pytest
import yaml

import helm_python as helm
import kubernetes_validate
from kubernetes_validate import utils as kv_utils

ROOT = Path(__file__).resolve().parents[2]
CHART_DIR = ROOT / "charts" / "sessionstore-operator"
RELEASE = "sessionstore-operator"
NAMESPACE = "sessionstore-system"

# The chart's minimum (Chart.yaml kubeVersion), the API the operator is built against
# (k8s-openapi feature v1_33), and the newest schemas kubernetes-validate 1.37 ships.
KUBERNETES_VERSIONS = ["1.29.0", "1.33.0", "1.37.0"]

# Kinds from CRDs that kubernetes-validate has no schema for; checked by STRUCTURAL_SCHEMAS below.
PROMETHEUS_OPERATOR_KINDS = {("monitoring.coreos.com/v1", "ServiceMonitor"),
                             ("monitoring.coreos.com/v1", "PrometheusRule")}

# The verbs the operator's code calls (README "RBAC"): (apiGroup, resource) -> verbs.
CONTRACT_RULES = {
    ("sessionstore.dev", "sessionstores"): {"list", "watch"},
    ("sessionstore.dev", "sessionstores/status"): {"patch"},
    ("apps", "statefulsets"): {"get", "list", "watch", "create", "patch"},
    ("", "services"): {"get", "list", "watch", "create", "patch"},
    ("", "configmaps"): {"get", "list", "watch", "create", "patch"},
    ("", "secrets"): {"get", "create", "patch"},
    ("", "pods"): {"list", "watch", "patch", "delete"},
    ("events.k8s.io", "events"): {"create", "patch"},
    ("", "events"): {"list"},
    ("networking.k8s.io", "networkpolicies"): {"get", "list", "watch", "create", "patch"},
    ("policy", "poddisruptionbudgets"): {"get", "list", "watch", "create", "patch", "delete"},
    ("cert-manager.io", "certificates"): {"get", "create", "patch"},
    ("monitoring.coreos.com", "servicemonitors"): {"get", "create", "patch", "delete"},
}
LEASE_RULES = {("coordination.k8s.io", "leases"): {"get", "create", "patch"}}

# RUN_CONTRACT.md metric names: alerts may only use these.
CONTRACT_METRICS = {
    "sessionstore_reconciles_total", "sessionstore_reconcile_errors_total",
    "sessionstore_reconcile_duration_seconds", "sessionstore_api_requests_total",
    "sessionstore_stores", "sessionstore_used_memory_bytes", "sessionstore_max_memory_bytes",
    "sessionstore_connected_clients", "sessionstore_session_keys",
    "sessionstore_keys_without_ttl", "sessionstore_hit_ratio", "sessionstore_evicted_keys_total",
    "sessionstore_expired_keys_total", "sessionstore_rejected_connections_total",
    "sessionstore_replica_link_up", "sessionstore_store_degraded",
}

WATCHED = ["shop", "payments"]
ALL_FEATURES = {
    "serviceMonitor": {"enabled": True, "labels": {"release": "kube-prometheus-stack"}},
    "prometheusRule": {"enabled": True, "labels": {"release": "kube-prometheus-stack"}},
    "networkPolicy": {"enabled": True},
    "watchNamespaces": WATCHED,
}

# Every values set the chart is linted, rendered and validated with.
SCENARIOS = {
    "defaults": {},
    "all-features-namespaced": ALL_FEATURES,
    "all-features-cluster-wide": {**ALL_FEATURES, "watchNamespaces": []},
    "single-replica-no-election": {"replicaCount": 1, "leaderElection": {"enabled": False}},
    "pinned-api-server": {
        "networkPolicy": {"enabled": True, "apiServerCIDRs": ["10.0.0.1/32", "fd00::1/128"]},
        "image": {"repository": "registry.example.com/sso",
                  "digest": "sha256:" + "ab" * 32, "pullPolicy": "Always"},
        "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [{"matchExpressions": [
                {"key": "node-role", "operator": "In", "values": ["infra"]}]}]}}},
        "tolerations": [{"key": "infra", "operator": "Exists", "effect": "NoSchedule"}],
        "nodeSelector": {"kubernetes.io/os": "linux"},
        "priorityClassName": "system-cluster-critical",
        "imagePullSecrets": [{"name": "regcred"}],
    },
}


def _load_render_deploy():
    spec = importlib.util.spec_from_file_location("render_deploy",
                                                  ROOT / "scripts" / "render-deploy.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


render_deploy = _load_render_deploy()


def render(values: dict | None = None) -> list[dict]:
    return render_deploy.render_objects(CHART_DIR, values=values, name=RELEASE,
                                        namespace=NAMESPACE)


def of_kind(objects: list[dict], kind: str) -> list[dict]:
    return [o for o in objects if o["kind"] == kind]


def one(objects: list[dict], kind: str) -> dict:
    found = of_kind(objects, kind)
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


@pytest.fixture(scope="module", params=sorted(SCENARIOS))
def scenario(request) -> tuple[str, dict, list[dict]]:
    values = SCENARIOS[request.param]
    return request.param, values, render(values)


# --- lint ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("kube_version", ["v1.29.0", "v1.33.0"])
@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_lint_has_no_finding_above_info(name: str, kube_version: str) -> None:
    report = helm.lint(CHART_DIR, SCENARIOS[name], strict=True, namespace=NAMESPACE,
                       kube_version=kube_version)
    assert report["total_charts_linted"] == 1
    assert report["errors"] == []
    above_info = [m for m in report["messages"] if m["severity"] > 1]
    assert above_info == [], above_info


def test_lint_reports_a_broken_chart(tmp_path: Path) -> None:
    # Proves the lint assertion above can fail: the same chart with a bad template is an error.
    broken = tmp_path / "sessionstore-operator"
    with helm.Chart.load(CHART_DIR) as chart:
        chart.save_dir(tmp_path)
    (broken / "templates" / "broken.yaml").write_text("{{ .Values.nope.deeper }}\n")
    report = helm.lint(broken, strict=True)
    assert any(m["severity"] == 3 for m in report["messages"]), report


# --- schema validation of every rendered object --------------------------------------------------

def test_kubernetes_validate_supports_the_chosen_versions() -> None:
    supported = {kv_utils.major_minor(v) for v in kv_utils.all_versions()}
    for version in KUBERNETES_VERSIONS:
        assert kv_utils.major_minor(version) in supported, (version, sorted(supported))


def _prometheus_operator_schema(spec_schema: dict) -> dict:
    return {
        "type": "object", "additionalProperties": False,
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"const": "monitoring.coreos.com/v1"},
            "kind": {"type": "string"},
            "metadata": {
                "type": "object", "additionalProperties": False, "required": ["name", "namespace"],
                "properties": {
                    "name": {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"},
                    "namespace": {"type": "string"},
                    "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                },
            },
            "spec": spec_schema,
        },
    }


DURATION = {"type": "string", "pattern": r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?"
                                          r"(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"}
STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
LABEL_SELECTOR = {"type": "object", "additionalProperties": False,
                  "properties": {"matchLabels": STRING_MAP,
                                 "matchExpressions": {"type": "array"}}}

# The subset of prometheus-operator's v1 CRD schemas (ServiceMonitor, PrometheusRule) this chart
# uses, strict: a misspelt field fails here as it would be pruned or refused by the API server.
STRUCTURAL_SCHEMAS = {
    "ServiceMonitor": _prometheus_operator_schema({
        "type": "object", "additionalProperties": False, "required": ["selector", "endpoints"],
        "properties": {
            "selector": LABEL_SELECTOR,
            "namespaceSelector": {"type": "object", "additionalProperties": False, "properties": {
                "any": {"type": "boolean"},
                "matchNames": {"type": "array", "items": {"type": "string"}}}},
            "endpoints": {"type": "array", "minItems": 1, "items": {
                "type": "object", "additionalProperties": False, "properties": {
                    "port": {"type": "string"}, "path": {"type": "string"},
                    "scheme": {"enum": ["http", "https"]},
                    "interval": DURATION, "scrapeTimeout": DURATION}}},
        },
    }),
    "PrometheusRule": _prometheus_operator_schema({
        "type": "object", "additionalProperties": False, "required": ["groups"],
        "properties": {"groups": {"type": "array", "items": {
            "type": "object", "additionalProperties": False, "required": ["name", "rules"],
            "properties": {
                "name": {"type": "string", "minLength": 1},
                "rules": {"type": "array", "minItems": 1, "items": {
                    "type": "object", "additionalProperties": False,
                    "required": ["alert", "expr"],
                    "properties": {
                        "alert": {"type": "string", "pattern": r"^[A-Za-z_][A-Za-z0-9_]*$"},
                        "expr": {"type": "string", "minLength": 1},
                        "for": DURATION,
                        "labels": STRING_MAP,
                        "annotations": STRING_MAP}}}}}}},
    }),
}


def validate_object(obj: dict, version: str) -> str:
    """Strict schema validation; returns how the object was checked (never silently skipped)."""
    key = (obj["apiVersion"], obj["kind"])
    if key in PROMETHEUS_OPERATOR_KINDS:
        jsonschema.Draft202012Validator(STRUCTURAL_SCHEMAS[obj["kind"]]).validate(obj)
        return "structural"
    kubernetes_validate.validate(obj, version, strict=True)
    return "kubernetes-validate"


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_rendered_object_validates_strictly(scenario, version: str) -> None:
    name, _, objects = scenario
    assert objects, name
    for obj in objects:
        try:
            validate_object(obj, version)
        except (kubernetes_validate.ValidationError, jsonschema.ValidationError) as e:
            path = ".".join(str(p) for p in e.path)
            pytest.fail(f"{name}: {obj['kind']}/{obj['metadata']['name']} at {path}: {e.message}")
        except kubernetes_validate.SchemaNotFoundError as e:
            pytest.fail(f"{name}: no schema for {obj['kind']} ({e.message}); add it explicitly")


def test_strict_validation_rejects_an_unknown_field() -> None:
    # Proves strict mode is on: a field the API does not know fails for native and CRD kinds.
    objects = render(ALL_FEATURES)
    deployment = json.loads(json.dumps(one(objects, "Deployment")))
    deployment["spec"]["template"]["spec"]["containers"][0]["readOnlyRootFileSystem"] = True
    with pytest.raises(kubernetes_validate.ValidationError):
        validate_object(deployment, KUBERNETES_VERSIONS[-1])
    rule = json.loads(json.dumps(one(objects, "PrometheusRule")))
    rule["spec"]["groups"][0]["rules"][0]["expression"] = "up"
    with pytest.raises(jsonschema.ValidationError):
        validate_object(rule, KUBERNETES_VERSIONS[-1])


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_chart_crd_validates(version: str) -> None:
    with helm.Chart.load(CHART_DIR) as chart:
        crds = chart.crds
    assert [c["filename"] for c in crds] == \
        ["sessionstore-operator/crds/sessionstore.dev_sessionstores.yaml"]
    source = (ROOT / "crds" / "sessionstore.dev_sessionstores.yaml").read_text()
    for crd in crds:
        assert crd["data"] == source, "chart CRD differs from crds/: see tests/chart_sync.rs"
        kubernetes_validate.validate(yaml.safe_load(crd["data"]), version, strict=True)


# --- values schema ------------------------------------------------------------------------------

@pytest.mark.parametrize("values", [
    {"replicas": 2},                                   # misspelt replicaCount
    {"image": {"repository": "x", "pullPolicy": "Sometimes"}},
    {"logFormat": "xml"},
    {"watchNamespaces": ["Not_A_Namespace"]},
    {"networkPolicy": {"enabled": True, "extra": 1}},
    {"healthIntervalSeconds": 0},
])
def test_values_schema_rejects_bad_values(values: dict) -> None:
    with pytest.raises(helm.HelmError):
        render(values)


def test_two_replicas_without_leader_election_is_refused() -> None:
    with pytest.raises(helm.HelmError, match="leaderElection"):
        render({"replicaCount": 2, "leaderElection": {"enabled": False}})


# --- RBAC ---------------------------------------------------------------------------------------

def rules_of(role: dict) -> dict[tuple[str, str], set[str]]:
    granted: dict[tuple[str, str], set[str]] = {}
    for rule in role["rules"]:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                granted.setdefault((group, resource), set()).update(rule["verbs"])
    return granted


def assert_least_privilege(role: dict) -> None:
    for rule in role["rules"]:
        for field in ("apiGroups", "resources", "verbs", "resourceNames", "nonResourceURLs"):
            assert "*" not in rule.get(field, []), (role["metadata"]["name"], rule)
        assert "nonResourceURLs" not in rule
        if "secrets" in rule["resources"]:
            assert not {"list", "watch", "deletecollection"} & set(rule["verbs"]), rule
    assert "aggregationRule" not in role


def test_rbac_has_no_wildcard_and_no_secret_list_watch(scenario) -> None:
    name, _, objects = scenario
    roles = of_kind(objects, "ClusterRole") + of_kind(objects, "Role")
    assert roles, name
    for role in roles:
        assert_least_privilege(role)


def test_least_privilege_check_catches_a_secret_watch() -> None:
    role = {"metadata": {"name": "bad"},
            "rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "watch"]}]}
    with pytest.raises(AssertionError):
        assert_least_privilege(role)


def test_cluster_wide_mode_grants_exactly_the_contract() -> None:
    objects = render()
    cluster_role = one(objects, "ClusterRole")
    assert rules_of(cluster_role) == CONTRACT_RULES
    binding = one(objects, "ClusterRoleBinding")
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                                  "name": cluster_role["metadata"]["name"]}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": RELEASE,
                                    "namespace": NAMESPACE}]
    lease_role = one(objects, "Role")
    assert lease_role["metadata"]["namespace"] == NAMESPACE
    assert rules_of(lease_role) == LEASE_RULES
    named = [r for r in lease_role["rules"] if r.get("resourceNames")]
    assert named and all(r["resourceNames"] == [RELEASE] for r in named)
    assert {v for r in named for v in r["verbs"]} == {"get", "patch"}


def test_namespaced_mode_uses_a_role_per_watched_namespace() -> None:
    objects = render({"watchNamespaces": WATCHED})
    assert of_kind(objects, "ClusterRole") == []
    assert of_kind(objects, "ClusterRoleBinding") == []
    roles = {r["metadata"]["namespace"]: r for r in of_kind(objects, "Role")
             if r["metadata"]["name"] == RELEASE}
    assert sorted(roles) == sorted(WATCHED)
    for role in roles.values():
        assert rules_of(role) == CONTRACT_RULES
    bindings = {b["metadata"]["namespace"]: b for b in of_kind(objects, "RoleBinding")
                if b["metadata"]["name"] == RELEASE}
    assert sorted(bindings) == sorted(WATCHED)
    for binding in bindings.values():
        assert binding["roleRef"]["kind"] == "Role"
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": RELEASE,
                                        "namespace": NAMESPACE}]
    lease = [r for r in of_kind(objects, "Role") if r["metadata"]["name"].endswith("-election")]
    assert [r["metadata"]["namespace"] for r in lease] == [NAMESPACE]
    env = container_env(one(objects, "Deployment"))
    assert env["WATCH_NAMESPACES"] == "shop,payments"


def test_optional_api_rules_can_be_dropped() -> None:
    granted = rules_of(one(render({"rbac": {"certManager": False, "serviceMonitors": False}}),
                           "ClusterRole"))
    assert ("cert-manager.io", "certificates") not in granted
    assert ("monitoring.coreos.com", "servicemonitors") not in granted
    assert ("", "secrets") in granted


def test_no_lease_role_without_leader_election() -> None:
    objects = render({"replicaCount": 1, "leaderElection": {"enabled": False}})
    assert of_kind(objects, "Role") == []
    assert container_env(one(objects, "Deployment"))["LEADER_ELECTION"] == "false"


# --- the Deployment -----------------------------------------------------------------------------

def container_env(deployment: dict) -> dict[str, object]:
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def restricted_violations(pod_spec: dict) -> list[str]:
    """Pod Security Standards `restricted` checks for a pod template (1.29+ rules)."""
    problems = []
    pod_sc = pod_spec.get("securityContext", {})
    for field in ("hostNetwork", "hostPID", "hostIPC"):
        if pod_spec.get(field):
            problems.append(field)
    for volume in pod_spec.get("volumes", []):
        if "hostPath" in volume:
            problems.append(f"hostPath volume {volume['name']}")
    for container in pod_spec.get("initContainers", []) + pod_spec["containers"]:
        sc = container.get("securityContext", {})
        name = container["name"]
        if sc.get("privileged"):
            problems.append(f"{name}: privileged")
        if sc.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{name}: allowPrivilegeEscalation must be false")
        if sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")) is not True:
            problems.append(f"{name}: runAsNonRoot must be true")
        if sc.get("runAsUser", pod_sc.get("runAsUser")) == 0:
            problems.append(f"{name}: runAsUser 0")
        seccomp = sc.get("seccompProfile", pod_sc.get("seccompProfile", {})).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            problems.append(f"{name}: seccompProfile {seccomp}")
        caps = sc.get("capabilities", {})
        if "ALL" not in caps.get("drop", []):
            problems.append(f"{name}: capabilities must drop ALL")
        if set(caps.get("add", [])) - {"NET_BIND_SERVICE"}:
            problems.append(f"{name}: adds {caps['add']}")
        if container.get("ports") and any(p.get("hostPort") for p in container["ports"]):
            problems.append(f"{name}: hostPort")
        # Beyond the profile: what this project promises for the operator itself.
        if sc.get("readOnlyRootFilesystem") is not True:
            problems.append(f"{name}: readOnlyRootFilesystem must be true")
        if sc.get("runAsUser", pod_sc.get("runAsUser")) != 65532:
            problems.append(f"{name}: must run as uid 65532")
    return problems


def test_restricted_check_catches_violations() -> None:
    pod = {"containers": [{"name": "c", "securityContext": {"capabilities": {"add": ["NET_ADMIN"]}}}]}
    assert len(restricted_violations(pod)) >= 5


def test_deployment_is_restricted_and_follows_the_run_contract(scenario) -> None:
    name, values, objects = scenario
    deployment = one(objects, "Deployment")
    pod = deployment["spec"]["template"]
    spec = pod["spec"]
    assert restricted_violations(spec) == [], name
    assert spec["automountServiceAccountToken"] is True  # it talks to the API server
    assert spec["serviceAccountName"] == RELEASE

    labels = pod["metadata"]["labels"]
    assert labels["app.kubernetes.io/name"] == "sessionstore-operator"
    assert labels["app.kubernetes.io/instance"] == RELEASE
    assert deployment["spec"]["selector"]["matchLabels"] == {
        "app.kubernetes.io/name": "sessionstore-operator", "app.kubernetes.io/instance": RELEASE}

    (container,) = spec["containers"]
    assert container["args"][0] == "run"
    assert container["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]

    env = container_env(deployment)
    assert env["POD_NAMESPACE"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    assert env["POD_NAME"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert env["HTTP_ADDR"] == "0.0.0.0:8080"
    assert env["LOG_LEVEL"] == "info" and env["LOG_FORMAT"] == "json"
    assert env["HEALTH_INTERVAL_SECONDS"] == "30"
    # The operator lets its own pods into each store's NetworkPolicy with these labels.
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert dict(kv.split("=", 1) for kv in env["OPERATOR_POD_LABELS"].split(",")) == selector
    assert env["MONITORING_NAMESPACE_LABELS"] == "kubernetes.io/metadata.name=monitoring"
    # Each store's DNS egress goes to these pods only (README "Who can connect").
    assert env["DNS_NAMESPACE"] == "kube-system"
    assert env["DNS_POD_LABELS"] == "k8s-app=kube-dns"
    watched = values.get("watchNamespaces")
    assert env.get("WATCH_NAMESPACES") == (",".join(watched) if watched else None)


def test_two_replicas_spread_and_keep_one_through_drains() -> None:
    objects = render()
    deployment = one(objects, "Deployment")
    assert deployment["spec"]["replicas"] == 2
    assert container_env(deployment)["LEADER_ELECTION"] == "true"
    spec = deployment["spec"]["template"]["spec"]
    keys = {c["topologyKey"] for c in spec["topologySpreadConstraints"]}
    assert keys == {"topology.kubernetes.io/zone", "kubernetes.io/hostname"}
    assert all(c["whenUnsatisfiable"] == "ScheduleAnyway" for c in spec["topologySpreadConstraints"])
    anti = spec["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert anti[0]["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    pdb = one(objects, "PodDisruptionBudget")
    assert pdb["spec"] == {"minAvailable": 1,
                           "selector": deployment["spec"]["selector"]}


def test_single_replica_has_no_pdb() -> None:
    objects = render({"replicaCount": 1})
    assert of_kind(objects, "PodDisruptionBudget") == []
    assert "topologySpreadConstraints" not in one(objects, "Deployment")["spec"]["template"]["spec"]


def test_image_digest_wins_over_tag() -> None:
    deployment = one(render(SCENARIOS["pinned-api-server"]), "Deployment")
    image = deployment["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image == "registry.example.com/sso@sha256:" + "ab" * 32


# --- NetworkPolicy, Service, monitoring ----------------------------------------------------------

def ports_of(rule: dict) -> set[tuple[str, int]]:
    return {(p["protocol"], p["port"]) for p in rule["ports"]}


def test_store_images_are_passed_only_when_set() -> None:
    env = container_env(one(render(), "Deployment"))
    assert "REDIS_IMAGE" not in env and "EXPORTER_IMAGE" not in env
    assert "VALKEY_IMAGE" not in env
    env = container_env(one(render({"storeImages": {
        "redis": "mirror.example/redis:7.2.5",
        "valkey": "mirror.example/valkey/valkey:8.0.1",
        "exporter": "mirror.example/redis_exporter:v1.63.0"}}), "Deployment"))
    assert env["REDIS_IMAGE"] == "mirror.example/redis:7.2.5"
    assert env["VALKEY_IMAGE"] == "mirror.example/valkey/valkey:8.0.1"
    assert env["EXPORTER_IMAGE"] == "mirror.example/redis_exporter:v1.63.0"


def test_network_policy_is_off_by_default() -> None:
    assert of_kind(render(), "NetworkPolicy") == []


def test_operator_network_policy() -> None:
    objects = render(ALL_FEATURES)
    policy = one(objects, "NetworkPolicy")["spec"]
    assert policy["podSelector"]["matchLabels"] == \
        one(objects, "Deployment")["spec"]["selector"]["matchLabels"]
    assert policy["policyTypes"] == ["Ingress", "Egress"]
    (ingress,) = policy["ingress"]
    assert ingress["from"] == [{"namespaceSelector": {"matchLabels": {
        "kubernetes.io/metadata.name": "monitoring"}}}]
    assert ports_of(ingress) == {("TCP", 8080)}

    api, dns, redis = policy["egress"]
    assert ports_of(api) == {("TCP", 443), ("TCP", 6443)} and "to" not in api
    assert ports_of(dns) == {("UDP", 53), ("TCP", 53)}
    assert dns["to"] == [{"namespaceSelector": {"matchLabels": {
        "kubernetes.io/metadata.name": "kube-system"}},
        "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}]
    assert ports_of(redis) == {("TCP", 6379), ("TCP", 26379)}
    (peer,) = redis["to"]
    assert peer["podSelector"] == {"matchLabels": {"app.kubernetes.io/name": "sessionstore"}}
    assert peer["namespaceSelector"] == {"matchExpressions": [
        {"key": "kubernetes.io/metadata.name", "operator": "In", "values": WATCHED}]}


def test_network_policy_api_server_cidrs() -> None:
    policy = one(render(SCENARIOS["pinned-api-server"]), "NetworkPolicy")["spec"]
    assert policy["egress"][0]["to"] == [{"ipBlock": {"cidr": "10.0.0.1/32"}},
                                         {"ipBlock": {"cidr": "fd00::1/128"}}]
    assert policy["egress"][2]["to"][0]["namespaceSelector"] == {}


def test_metrics_service_and_service_monitor() -> None:
    objects = render(ALL_FEATURES)
    service = one(objects, "Service")
    selector = one(objects, "Deployment")["spec"]["selector"]["matchLabels"]
    assert service["spec"]["selector"] == selector
    assert service["spec"]["ports"] == [{"name": "http", "port": 8080, "targetPort": "http",
                                         "protocol": "TCP"}]
    monitor = one(objects, "ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    # The ServiceMonitor must select the metrics Service by its labels.
    assert monitor["spec"]["selector"]["matchLabels"].items() <= \
        service["metadata"]["labels"].items()
    assert monitor["spec"]["endpoints"][0]["port"] == "http"
    assert monitor["spec"]["endpoints"][0]["path"] == "/metrics"
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}


def test_monitoring_objects_are_off_by_default() -> None:
    objects = render()
    assert of_kind(objects, "ServiceMonitor") == []
    assert of_kind(objects, "PrometheusRule") == []


METRIC_NAME = re.compile(r"\b(sessionstore_[a-z_]+)\b")


def test_prometheus_rule_alerts_use_contract_metrics() -> None:
    rule = one(render(ALL_FEATURES), "PrometheusRule")
    alerts = {r["alert"]: r for g in rule["spec"]["groups"] for r in g["rules"]}
    required = {
        "SessionStoreDegraded": "sessionstore_store_degraded",
        "SessionStoreEvictingSessions": "sessionstore_evicted_keys_total",
        "SessionStoreMemoryHigh": "sessionstore_used_memory_bytes",
        "SessionStoreRejectingConnections": "sessionstore_rejected_connections_total",
        "SessionStoreReplicaLinkDown": "sessionstore_replica_link_up",
    }
    for alert, metric in required.items():
        assert metric in alerts[alert]["expr"], alert
    for alert in alerts.values():
        used = set(METRIC_NAME.findall(alert["expr"]))
        assert used and used <= CONTRACT_METRICS, (alert["alert"], used - CONTRACT_METRICS)
        assert alert["labels"]["severity"] in {"warning", "critical"}
        assert alert["annotations"]["summary"] and alert["annotations"]["description"]
        # Alert templating must reach Prometheus unexpanded by Helm.
        assert "{{ $labels.namespace }}" in alert["annotations"]["summary"] or \
            alert["alert"].startswith("SessionStoreOperator")
    memory = alerts["SessionStoreMemoryHigh"]["expr"]
    assert "sessionstore_max_memory_bytes > 0" in memory
    assert re.search(r">\s*0\.85\s*$", memory), memory


def test_memory_threshold_is_configurable() -> None:
    rule = one(render({**ALL_FEATURES, "prometheusRule": {"enabled": True,
                                                          "memoryThresholdPercent": 70}}),
               "PrometheusRule")
    (memory,) = [r["expr"] for g in rule["spec"]["groups"] for r in g["rules"]
                 if r["alert"] == "SessionStoreMemoryHigh"]
    assert re.search(r">\s*0\.7\s*$", memory), memory


# --- deploy/ ------------------------------------------------------------------------------------

def test_deploy_operator_yaml_matches_a_fresh_render() -> None:
    committed = (ROOT / "deploy" / "operator.yaml").read_text()
    assert committed == render_deploy.operator_yaml(CHART_DIR), \
        "deploy/operator.yaml is stale: run `bash scripts/regenerate.sh` and commit it"


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_deploy_manifests_validate(version: str) -> None:
    objects = [o for o in yaml.safe_load_all((ROOT / "deploy" / "operator.yaml").read_text()) if o]
    namespace = one(objects, "Namespace")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    for obj in objects:
        validate_object(obj, version)
        if obj["kind"] != "Namespace" and obj["kind"] not in ("ClusterRole", "ClusterRoleBinding"):
            assert obj["metadata"]["namespace"] == NAMESPACE, obj["metadata"]


def example_documents() -> list[tuple[str, dict]]:
    docs = []
    for path in sorted((ROOT / "deploy" / "examples").glob("*.yaml")):
        docs += [(path.name, d) for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def test_examples_validate() -> None:
    crd = yaml.safe_load((ROOT / "crds" / "sessionstore.dev_sessionstores.yaml").read_text())
    (version,) = crd["spec"]["versions"]
    store_schema = version["schema"]["openAPIV3Schema"]
    kinds = []
    for name, doc in example_documents():
        kinds.append(doc["kind"])
        if doc["kind"] == "SessionStore":
            assert doc["apiVersion"] == "sessionstore.dev/v1alpha1", name
            jsonschema.Draft202012Validator(store_schema).validate(doc)
        else:
            kubernetes_validate.validate(doc, KUBERNETES_VERSIONS[-1], strict=True)
    assert kinds.count("SessionStore") >= 2 and "Deployment" in kinds


def test_example_app_consumes_the_connection_secret() -> None:
    (app,) = [d for _, d in example_documents() if d["kind"] == "Deployment"]
    stores = {(d["metadata"]["namespace"], d["metadata"]["name"]): d
              for _, d in example_documents() if d["kind"] == "SessionStore"}
    namespace = app["metadata"]["namespace"]
    pod = app["spec"]["template"]
    refs = [e["valueFrom"]["secretKeyRef"] for c in pod["spec"]["containers"]
            for e in c.get("env", []) if "secretKeyRef" in e.get("valueFrom", {})]
    mounted = [v["secret"]["secretName"] for v in pod["spec"]["volumes"] if "secret" in v]
    for secret in [r["name"] for r in refs] + mounted:
        assert secret.endswith("-connection")
        store = stores[(namespace, secret.removesuffix("-connection"))]
        # The app's pods are the ones the store lets in.
        assert store["spec"]["clients"]["podSelector"]["matchLabels"].items() <= \
            pod["metadata"]["labels"].items()
    assert {r["key"] for r in refs} <= {"type", "provider", "host", "port", "username",
                                       "password", "previous-password", "uri", "ca.crt"}
    assert refs and mounted


# --- admission policy (Kubernetes 1.30+) --------------------------------------------------------

VAP_API = render_deploy.ADMISSION_POLICY_API
VAP_KINDS = set(render_deploy.ADMISSION_POLICY_KINDS)
# The versions with admissionregistration.k8s.io/v1 ValidatingAdmissionPolicy (GA in 1.30).
VAP_VERSIONS = [v for v in KUBERNETES_VERSIONS
                if tuple(int(p) for p in v.split(".")[:2]) >= (1, 30)]


def render_on(kube_version: str, values: dict | None = None,
              api_versions: list[str] | None = None) -> list[dict]:
    return render_deploy.render_objects(CHART_DIR, values=values, name=RELEASE,
                                        namespace=NAMESPACE, kube_version=f"v{kube_version}",
                                        api_versions=api_versions)


def test_admission_policy_only_where_the_api_exists() -> None:
    # Without the API (older clusters, and `helm template` defaults) nothing is rendered.
    assert not [o for o in render() if o["kind"] in VAP_KINDS]
    assert not [o for o in render_on("1.29.0") if o["kind"] in VAP_KINDS]
    # With it: on by default, off with the value.
    on = [o for o in render_on("1.30.0", api_versions=[VAP_API]) if o["kind"] in VAP_KINDS]
    assert sorted(o["kind"] for o in on) == sorted(VAP_KINDS)
    off = render_on("1.30.0", {"admissionPolicy": {"enabled": False}}, api_versions=[VAP_API])
    assert not [o for o in off if o["kind"] in VAP_KINDS]


@pytest.mark.parametrize("version", VAP_VERSIONS)
@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_admission_policy_validates_strictly(name: str, version: str) -> None:
    objects = render_on(version, SCENARIOS[name], api_versions=[VAP_API])
    policies = [o for o in objects if o["kind"] in VAP_KINDS]
    assert len(policies) == 2, name
    for obj in policies:
        validate_object(obj, version)
    policy = one(objects, "ValidatingAdmissionPolicy")
    binding = one(objects, "ValidatingAdmissionPolicyBinding")
    assert binding["spec"] == {"policyName": policy["metadata"]["name"],
                               "validationActions": ["Deny"]}
    # Matched on the chart's ServiceAccount, in the release namespace, and nobody else.
    (condition,) = policy["spec"]["matchConditions"]
    account = one(objects, "ServiceAccount")["metadata"]["name"]
    assert condition["expression"] == (
        f'request.userInfo.username == "system:serviceaccount:{NAMESPACE}:{account}"')
    # Every kind the operator may write is covered (events, leases and the status excepted).
    covered = {(g, r) for rule in policy["spec"]["matchConstraints"]["resourceRules"]
               for g in rule["apiGroups"] for r in rule["resources"]}
    written = {k for k, verbs in CONTRACT_RULES.items() if verbs & {"create", "patch", "delete"}}
    assert written - covered == {("sessionstore.dev", "sessionstores/status"),
                                 ("events.k8s.io", "events")}


def test_deploy_admission_policy_yaml_matches_a_fresh_render() -> None:
    committed = (ROOT / "deploy" / "admission-policy.yaml").read_text()
    assert committed == render_deploy.admission_policy_yaml(CHART_DIR), \
        "deploy/admission-policy.yaml is stale: run python3 scripts/render-deploy.py"
    objects = [o for o in yaml.safe_load_all(committed) if o]
    assert {o["kind"] for o in objects} == VAP_KINDS
    for version in VAP_VERSIONS:
        for obj in objects:
            validate_object(obj, version)
