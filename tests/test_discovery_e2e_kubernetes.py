"""Real gateways forming a cluster through Kubernetes discovery: four ``rainbridge serve``
processes, each a "pod" of ``k8s_api_server`` (pod IP = its loopback IP, service account
env as in a pod), find each other from nothing (three), a fourth joins by scale-up, one
leaves (its pod deleted), a ready pod outside ``allowed_address_space`` is never contacted,
and the API server going away leaves the cluster intact until it returns."""

from __future__ import annotations

import pytest

from discovery_fleet import DiscoveryFleet, Gateway, gateway_config
from k8s_api_server import KubernetesApiServer
from support import eventually, free_port

HOSTS = ["127.0.0.101", "127.0.0.102", "127.0.0.103", "127.0.0.104"]
OUTSIDE = "127.0.0.120"
APP = {"app.kubernetes.io/name": "rainbridge"}


@pytest.fixture
def api(tmp_path):
    server = KubernetesApiServer(tmp_path)
    server.start()
    yield server
    server.close()


def test_gateways_form_a_cluster_through_kubernetes(tmp_path, api, pg_database, mock,
                                                    monkeypatch):
    for key, value in api.environ.items():
        monkeypatch.setenv(key, value)  # what the kubelet gives each pod
    discovery = {"type": "kubernetes", "k8s_label_selector": "app.kubernetes.io/name=rainbridge",
                 "allowed_address_space": ["127.0.0.96/28"]}
    # a ready pod of the selection whose IP is outside the allowed address space
    api.put_pod("stranger", OUTSIDE, APP)

    def pod_ready(i: int) -> None:  # its readiness probe passed
        api.put_pod(f"rainbridge-{i}", HOSTS[i], APP)

    with DiscoveryFleet(tmp_path, "k", HOSTS, OUTSIDE, mock.url, pg_database, discovery) as fleet:
        first = fleet.form(on_ready=pod_ready)
        fourth = fleet.scale_up(first, on_ready=pod_ready)  # the HPA scales up
        eventually(lambda: fourth.status()["discovery"]["rejected"].get("address_space", 0) >= 1,
                   10, "the stranger's pod IP rejected")
        fleet.never_contacted()
        requests = {(verb, path) for verb, path, _ in api.requests}
        assert requests <= {("LIST", "/api/v1/namespaces/rainbridge/pods"),
                            ("WATCH", "/api/v1/namespaces/rainbridge/pods")}

        api.delete_pod("rainbridge-1")  # scale-down: its pod goes, the member leaves
        rest = fleet.leave([*first, fourth], first[1])

        fleet.outage(rest, api.stop, api.start)


def test_a_gateway_outside_a_pod_stops_at_start_up_naming_the_service_account(
        tmp_path, pg_database, mock, monkeypatch):
    for key in ("KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT"):
        monkeypatch.delenv(key, raising=False)
    empty = tmp_path / "no-serviceaccount"
    empty.mkdir()
    monkeypatch.setenv("RAINBRIDGE_K8S_SERVICEACCOUNT_DIR", str(empty))
    port = free_port(HOSTS[0])
    discovery = {"type": "kubernetes", "k8s_label_selector": "app=rainbridge"}
    g = Gateway(tmp_path, "lost", HOSTS[0],
                gateway_config(mock.url, pg_database, "lost", port, discovery))
    try:
        assert g.proc.popen.wait(30) != 0
        out = g.proc.output()
        assert "cluster_config.discovery.type: kubernetes discovery needs the pod's " \
               "in-cluster service account" in out
        assert "Traceback" not in out
    finally:
        g.stop()
