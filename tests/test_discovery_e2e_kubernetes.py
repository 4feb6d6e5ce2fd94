"""Real gateways forming a cluster through Kubernetes discovery: four ``rainbridge serve``
processes, each a "pod" of ``k8s_api_server`` (pod IP = its loopback IP, service account
env as in a pod), find each other from nothing (three), a fourth joins by scale-up, one
leaves (its pod deleted), a ready pod outside ``allowed_address_space`` is never contacted,
and the API server going away leaves the cluster intact until it returns."""

from __future__ import annotations

import socket

import pytest

from discovery_support import Gateway, gateway_config, sees
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
    port = free_port(HOSTS[0])
    for h in [*HOSTS[1:], OUTSIDE]:
        with socket.socket() as s:
            try:
                s.bind((h, port))
            except OSError:
                pytest.skip(f"gossip port {port} taken on {h}")
    listener = socket.socket()
    listener.bind((OUTSIDE, port))
    listener.listen()
    listener.setblocking(False)
    for key, value in api.environ.items():
        monkeypatch.setenv(key, value)  # what the kubelet gives each pod
    discovery = {"type": "kubernetes", "k8s_label_selector": "app.kubernetes.io/name=rainbridge",
                 "allowed_address_space": ["127.0.0.96/28"]}
    # a ready pod of the selection whose IP is outside the allowed address space
    api.put_pod("stranger", OUTSIDE, APP)
    gateways: list[Gateway] = []

    def launch(i: int) -> Gateway:
        g = Gateway(tmp_path, f"k{i}", HOSTS[i],
                    gateway_config(mock.url, pg_database, f"k{i}", port, discovery))
        gateways.append(g)
        return g

    try:
        first = [launch(i) for i in range(3)]
        for i, g in enumerate(first):
            g.ready()
            api.put_pod(f"rainbridge-{i}", HOSTS[i], APP)  # its readiness probe passed
        eventually(lambda: sees(first, {"k0", "k1", "k2"}), 30, "three members from nothing")
        fourth = launch(3).ready()  # the HPA scales up
        api.put_pod("rainbridge-3", HOSTS[3], APP)
        everyone = [*first, fourth]
        eventually(lambda: sees(everyone, {"k0", "k1", "k2", "k3"}), 30, "the fourth joined")
        eventually(lambda: fourth.status()["discovery"]["rejected"].get("address_space", 0) >= 1,
                   10, "the stranger's pod IP rejected")
        with pytest.raises(BlockingIOError):
            listener.accept()  # not one connection to the address outside the space
        requests = {(verb, path) for verb, path, _ in api.requests}
        assert requests <= {("LIST", "/api/v1/namespaces/rainbridge/pods"),
                            ("WATCH", "/api/v1/namespaces/rainbridge/pods")}

        first[1].stop()  # scale-down: the member leaves, its pod goes
        api.delete_pod("rainbridge-1")
        rest = [first[0], first[2], fourth]
        eventually(lambda: sees(rest, {"k0", "k2", "k3"}), 30, "k1 left")

        api.stop()
        eventually(lambda: rest[0].status()["discovery"]["status"] == "degraded", 15,
                   "degraded")
        assert rest[0].status()["health"]["discovery"] == "degraded"
        assert sees(rest, {"k0", "k2", "k3"}) is True
        api.start()
        eventually(lambda: all(g.status()["discovery"]["status"] == "healthy" for g in rest),
                   40, "recovered")
        assert sees(rest, {"k0", "k2", "k3"}) is True
    finally:
        for g in gateways:  # all drain at once, then each is waited for
            if g.proc.popen.poll() is None:
                g.proc.popen.terminate()
        for g in gateways:
            g.stop()
        listener.close()


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
