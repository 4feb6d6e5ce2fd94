"""The Helm chart (deploy/helm/rainbridge) with the seed's values files, unchanged.

Rendered by the real helm binary, validated against the Kubernetes 1.30 schemas
(kubernetes-validate, strict), and the config.json it puts in the Secret loaded by
rainbridge's own loader and `rainbridge config check`."""

from __future__ import annotations

import filecmp
import json
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from click.testing import CliRunner

from helm_support import CHART, FULL, SEED_FILES, SEEDS, config_json, helm, one, render, values_args
from rainbridge import cli
from rainbridge.config.load import load_data, parse_text

K8S_VERSION = "1.30.0"
SECRET_ENV = {
    "POD_NAME": "bifrost-0",
    "RAINBRIDGE_POSTGRES_PASSWORD": "pw-from-secret",
    "RAINBRIDGE_ENCRYPTION_KEY": "k" * 32,
    "RAINBRIDGE_UDP_SECRET": "udp-secret-from-a-secret",
}
NOT_IN_CORE = {"ServiceMonitor"}  # a CRD (Prometheus operator): no schema in the Kubernetes set


def loaded_config(objects: list[dict]):
    """The rendered config.json through rainbridge's own loader, pod env as the chart sets it."""
    return load_data(parse_text(config_json(objects), "config.json"), env=SECRET_ENV)


def test_the_fixtures_are_the_seed_files_unchanged():
    shared = Path("/work/shared/seed-values")
    if not shared.exists():
        pytest.skip("the shared seed directory is not on this machine")
    names = sorted(p.name for p in shared.glob("*.yaml"))
    assert names == SEED_FILES
    assert all(filecmp.cmp(shared / n, SEEDS / n, shallow=False) for n in names)


@pytest.mark.parametrize("seed", SEED_FILES)
def test_seed_values_render_lint_strict_and_validate_against_kubernetes_1_30(seed):
    lint = helm("lint", "--strict", str(CHART), *values_args(seed), check=False)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    objects = render(seed)
    for obj in objects:
        if obj["kind"] in NOT_IN_CORE:
            continue
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
    workload = [o for o in objects if o["kind"] in ("Deployment", "StatefulSet")]
    assert len(workload) == 1


@pytest.mark.parametrize("seed", SEED_FILES)
def test_seed_config_json_passes_rainbridge_config_check(seed, tmp_path):
    # the command itself, in this process: a new interpreter per seed cost ~1 s each
    path = tmp_path / "config.json"
    path.write_text(config_json(render(seed)))
    result = CliRunner().invoke(cli.main, ["config", "check", str(path)], env=SECRET_ENV)
    assert result.exit_code == 0, result.output
    assert "error:" not in result.stdout


def test_cluster_values_config_says_what_the_values_said():
    config = loaded_config(render("cluster-values.yaml")).config
    store = config.config_store
    assert store.type == "postgres"
    assert (store.config.host, store.config.port, store.config.user, store.config.db_name, store.config.ssl_mode) == (
        "your-postgres-host.example.com", 5432, "bifrost", "bifrost", "require")
    assert store.config.password == "pw-from-secret"  # through env, from the named Secret
    assert config.encryption_key == "k" * 32
    cluster = config.cluster_config
    assert cluster.enabled and cluster.node_name == "bifrost-0"
    assert cluster.gossip.port == 7946
    timing = cluster.gossip.config
    assert (timing.timeout_seconds, timing.success_threshold, timing.failure_threshold) == (10, 3, 3)
    # no peers and no discovery: the headless service's DNS name
    assert cluster.discovery.enabled and cluster.discovery.type == "dns"
    assert cluster.discovery.dns_names == ["bifrost-headless.default.svc.cluster.local"]
    assert config.drain.accept_seconds == 5 and config.drain.grace_seconds == 60


def test_ha_production_config_says_what_the_values_said():
    loaded = loaded_config(render("ha-production-values.yaml"))
    config = loaded.config
    client = config.client
    assert (client.initial_pool_size, client.drop_excess_requests, client.enable_logging, client.enforce_governance_header) == (
        1000, True, True, True)
    cluster = config.cluster_config
    assert cluster.region == "us-east-1"
    d = cluster.discovery
    assert (d.enabled, d.type, d.k8s_namespace, d.k8s_label_selector) == (True, "kubernetes", "default", "app.kubernetes.io/name=bifrost")
    assert config.governance.is_vk_mandatory  # plugins.governance.config.is_vk_mandatory
    assert config.logs_store is not None and config.logs_store.type == "postgres"


@pytest.mark.parametrize(("seed", "expected"), [
    ("cluster-consul-discovery-values.yaml", {"type": "consul", "service_name": "bifrost-cluster",
                                              "consul_address": "consul.consul.svc.cluster.local:8500"}),
    ("cluster-etcd-discovery-values.yaml", {"type": "etcd", "service_name": "bifrost-cluster", "etcd_endpoints": [
        f"http://etcd-{i}.etcd.default.svc.cluster.local:2379" for i in range(3)]}),
    ("cluster-dns-discovery-values.yaml", {"type": "dns", "dns_names": ["bifrost-headless.default.svc.cluster.local"]}),
    ("cluster-mdns-discovery-values.yaml", {"type": "mdns", "mdns_service": "_bifrost._tcp"}),
    ("cluster-k8s-discovery-values.yaml", {"type": "kubernetes", "k8s_namespace": "default",
                                           "k8s_label_selector": "app.kubernetes.io/name=bifrost"}),
    ("allowed-address-space-values.yaml", {"type": "kubernetes", "allowed_address_space": ["10.0.0.0/8", "172.16.0.0/12"]}),
])
def test_discovery_values_become_cluster_config_discovery(seed, expected):
    discovery = loaded_config(render(seed)).config.cluster_config.discovery
    assert discovery.enabled
    for field, value in expected.items():
        assert getattr(discovery, field) == value, field


def test_static_peers_run_as_a_statefulset_behind_the_headless_service():
    objects = render("cluster-static-peers-values.yaml")
    sts = one(objects, "StatefulSet", "bifrost")
    assert sts["spec"]["serviceName"] == "bifrost-headless"  # bifrost-N.bifrost-headless resolve
    assert "volumeClaimTemplates" not in sts["spec"]  # postgres: nothing on disk to keep
    cluster = loaded_config(objects).config.cluster_config
    assert cluster.peers == [f"bifrost-{i}.bifrost-headless.default.svc.cluster.local:7946" for i in range(3)]
    assert not cluster.discovery.enabled


def test_region_values_tag_the_node():
    assert loaded_config(render("region-values.yaml")).config.cluster_config.region == "us-east-1"


def test_headless_service_publishes_gossip_on_tcp_and_udp_for_pods_not_ready():
    headless = one(render("cluster-values.yaml"), "Service", "bifrost-headless")
    spec = headless["spec"]
    assert spec["clusterIP"] == "None" and spec["publishNotReadyAddresses"] is True
    gossip = {(p["port"], p["protocol"]) for p in spec["ports"] if p["name"].startswith("gossip")}
    assert gossip == {(7946, "TCP"), (7946, "UDP")}
    assert spec["selector"]["app.kubernetes.io/name"] == "bifrost"


def test_pod_spec_probes_ports_env_drain_and_secrets_by_reference():
    objects = render("cluster-values.yaml")
    deploy = one(objects, "Deployment", "bifrost")
    pod = deploy["spec"]["template"]
    assert pod["metadata"]["labels"]["app.kubernetes.io/name"] == "bifrost"  # the seed's affinity selector
    spec = pod["spec"]
    assert spec["terminationGracePeriodSeconds"] == 90
    assert spec["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][0]["topologyKey"] == "kubernetes.io/hostname"
    (container,) = spec["containers"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"
    assert container["readinessProbe"]["httpGet"]["path"] == "/health/ready"
    assert container["lifecycle"]["preStop"]["exec"]["command"] == ["sh", "-c", "sleep 20"]
    ports = {(p["name"], p["containerPort"], p["protocol"]) for p in container["ports"]}
    assert ports == {("http", 8080, "TCP"), ("gossip", 7946, "TCP"), ("gossip-udp", 7946, "UDP")}
    env = {e["name"]: e for e in container["env"]}
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert env["POD_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
    assert env["RAINBRIDGE_POSTGRES_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": "postgres-credentials", "key": "password"}
    assert env["RAINBRIDGE_ENCRYPTION_KEY"]["valueFrom"]["secretKeyRef"] == {"name": "bifrost-encryption", "key": "encryption-key"}
    raw = json.loads(config_json(objects))
    assert raw["config_store"]["config"]["password"] == "env.RAINBRIDGE_POSTGRES_PASSWORD"
    assert raw["encryption_key"] == "env.RAINBRIDGE_ENCRYPTION_KEY"
    assert "replicas" not in deploy["spec"]  # the HPA owns the count


def test_a_config_change_changes_the_checksum_annotation():
    def checksum(*sets):
        deploy = one(render("cluster-values.yaml", sets=sets), "Deployment")
        return deploy["spec"]["template"]["metadata"]["annotations"]["checksum/config"]

    assert checksum() == checksum()
    assert checksum() != checksum("bifrost.cluster.region=eu-west-1")


def test_kubernetes_discovery_gets_a_role_that_may_get_list_watch_pods():
    objects = render("cluster-k8s-discovery-values.yaml")
    role = one(objects, "Role")
    assert role["metadata"]["namespace"] == "default"
    assert role["rules"] == [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}]
    binding = one(objects, "RoleBinding")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    account = one(objects, "ServiceAccount")["metadata"]["name"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account, "namespace": "default"}]
    assert one(objects, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"] == account
    assert not [o for o in render("cluster-dns-discovery-values.yaml") if o["kind"] in ("Role", "RoleBinding")]


def test_hpa_pdb_and_ingress_of_the_ha_production_file():
    objects = render("ha-production-values.yaml")
    hpa = one(objects, "HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (3, 15)
    targets = {m["resource"]["name"]: m["resource"]["target"]["averageUtilization"] for m in hpa["spec"]["metrics"]}
    assert targets == {"cpu": 70, "memory": 75}
    assert hpa["spec"]["behavior"]["scaleDown"] == {"stabilizationWindowSeconds": 300,
                                                    "policies": [{"type": "Pods", "value": 1, "periodSeconds": 120}]}
    assert hpa["spec"]["behavior"]["scaleUp"] == {"stabilizationWindowSeconds": 30}
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "bifrost"}
    pdb = one(objects, "PodDisruptionBudget")
    assert pdb["spec"]["maxUnavailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"] == "bifrost"
    ingress = one(objects, "Ingress")
    assert ingress["spec"]["ingressClassName"] == "nginx"
    assert ingress["spec"]["tls"] == [{"secretName": "bifrost-tls", "hosts": ["bifrost.yourdomain.com"]}]
    assert ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"] == {"name": "bifrost", "port": {"name": "http"}}
    resources = one(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]["resources"]
    assert resources["limits"] == {"cpu": "4000m", "memory": "4Gi"}


def test_service_monitor_is_optional():
    assert not [o for o in render("cluster-values.yaml") if o["kind"] == "ServiceMonitor"]
    monitor = one(render("cluster-values.yaml", sets=("serviceMonitor.enabled=true",)), "ServiceMonitor")
    assert monitor["spec"]["endpoints"][0]["path"] == "/metrics"


def test_sqlite_runs_one_statefulset_pod_with_its_own_volume():
    objects = render()
    sts = one(objects, "StatefulSet")
    assert sts["spec"]["replicas"] == 1
    assert sts["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == "data"
    assert loaded_config(objects).config.config_store.type == "sqlite"
    assert not [o for o in objects if o["kind"] in ("HorizontalPodAutoscaler", "PodDisruptionBudget")]


def test_the_rainbridge_block_is_an_alias_of_bifrost_and_wins():
    objects = render("cluster-values.yaml", sets=("rainbridge.cluster.region=eu-west-1",))
    assert loaded_config(objects).config.cluster_config.region == "eu-west-1"


def _invalid(tmp_path, name: str, values: dict, base: bool = True) -> str:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(values))
    args = (["-f", str(SEEDS / "cluster-values.yaml")] if base else []) + ["-f", str(path)]
    result = helm("template", "bifrost", str(CHART), *args, check=False)
    assert result.returncode != 0, f"{name} rendered"
    return result.stderr


@pytest.mark.parametrize(("values", "message"), [
    ({"storage": {"mode": "sqlite"}},
     "bifrost.cluster.enabled=true needs storage.mode=postgres: SQLite is single-node only"),
    ({"bifrost": {"cluster": {"discovery": {"enabled": True}}}},
     "bifrost.cluster.discovery.enabled=true needs bifrost.cluster.discovery.type"),
    ({"bifrost": {"cluster": {"discovery": {"enabled": True, "type": "consul", "consulAddress": "c:8500"}}}},
     "bifrost.cluster.discovery.serviceName is required for discovery type consul"),
    ({"bifrost": {"cluster": {"discovery": {"enabled": True, "type": "etcd", "etcdEndpoints": ["http://e:2379"]}}}},
     "bifrost.cluster.discovery.serviceName is required for discovery type etcd"),
    ({"bifrost": {"cluster": {"discovery": {"enabled": True, "type": "udp", "allowedAddressSpace": ["10.0.0.0/8"]}}}},
     "bifrost.cluster.discovery.serviceName is required for discovery type udp"),
    ({"bifrost": {"cluster": {"discovery": {"enabled": True, "type": "udp", "serviceName": "bifrost"}}}},
     "bifrost.cluster.discovery.allowedAddressSpace is required for discovery type udp"),
    ({"bifrost": {"cluster": {"discovery": {"enabled": True, "type": "udp", "serviceName": "bifrost",
                                            "allowedAddressSpace": ["10.0.0.0/8"], "udpBroadcastPort": 9999}}}},
     "bifrost.cluster.discovery.udpSecret and udpBroadcastPort are required for discovery type udp"),
    ({"postgresql": {"external": {"password": "hunter2"}}},
     "postgresql.external.password: put the password in a Secret"),
    ({"bifrost": {"cluster": {"discovery": {"enabled": True, "type": "zookeeper"}}}},
     'bifrost.cluster.discovery.type: "zookeeper" is not one of'),
])
def test_invalid_values_fail_the_render_naming_the_value(tmp_path, values, message):
    stderr = _invalid(tmp_path, "bad.yaml", values)
    assert message in stderr, stderr
    assert "hunter2" not in stderr


def test_udp_with_service_name_and_address_space_renders(tmp_path):
    path = tmp_path / "udp.yaml"
    path.write_text(yaml.safe_dump({"bifrost": {"cluster": {"discovery": {
        "enabled": True, "type": "udp", "serviceName": "bifrost", "udpBroadcastPort": 9999,
        "udpSecret": "env.RAINBRIDGE_UDP_SECRET", "allowedAddressSpace": ["10.0.0.0/8"]}}}}))
    d = loaded_config(render(str(SEEDS / "cluster-values.yaml"), str(path))).config.cluster_config.discovery
    assert (d.type, d.service_name, d.udp_broadcast_port, d.allowed_address_space) == ("udp", "bifrost", 9999, ["10.0.0.0/8"])
    assert d.udp_secret == "udp-secret-from-a-secret"  # from the pod's env, never inline in the values


def test_the_chart_and_its_rendered_manifests_pass_yamllint(tmp_path):
    # helm's toYaml writes lists at their key's indentation, the templates indent them
    rules = ("{extends: default, rules: {line-length: {max: 160}, document-start: disable, comments: {min-spaces-from-content: 1}, "
             "indentation: {spaces: consistent, indent-sequences: whatever}}}")
    rendered = tmp_path / "rendered.yaml"
    rendered.write_text(helm("template", "bifrost", str(CHART), *values_args("ha-production-values.yaml")).stdout)
    files = [str(CHART / "Chart.yaml"), str(CHART / "values.yaml"), str(rendered)]
    result = subprocess.run([sys.executable, "-m", "yamllint", "-s", "-d", rules, *files], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_full_values_files_render_alone():
    for name in FULL:
        assert one(render(name), "Deployment")


def test_the_docs_example_values_render_and_configure_providers_and_the_admin_token(tmp_path):
    text = (CHART.parent.parent.parent / "docs" / "kubernetes.md").read_text()
    example = text.split("`my-values.yaml`:\n\n```yaml\n", 1)[1].split("```", 1)[0]
    path = tmp_path / "my-values.yaml"
    path.write_text(example)
    objects = render(str(SEEDS / "cluster-values.yaml"), str(path))
    for obj in objects:
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
    env = {e["name"]: e for e in one(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["RAINBRIDGE_ADMIN_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": "rainbridge-admin", "key": "token"}
    config = load_data(parse_text(config_json(objects)), env={**SECRET_ENV, "OPENAI_API_KEY": "sk-docs"}).config
    assert config.providers["openai"].keys[0].value == "sk-docs"
    assert config.config_store.config.host == "postgres.db.svc.cluster.local"
    assert one(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]["image"] == "ghcr.io/rainbridge/rainbridge:0.1.0"
