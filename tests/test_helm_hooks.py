"""The chart's `helm test` hook (templates/tests/test-ready.yaml): a pod that runs the
rainbridge image itself (the slim image has no curl) and asks the Service's /health/ready.

Rendered by the real helm binary and validated against the Kubernetes 1.30 schemas; its
labels must select nothing of the release (Service, PodDisruptionBudget, Kubernetes
discovery). The script it renders is then run as the pod would run it, against a real
`rainbridge serve` process: it fails (exit 1, the failing check printed) while the member is
still syncing, and passes once the member is ready."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import kubernetes_validate

from helm_support import config_json, one, render
from rainbridge.cluster.joining import SYNC_WAIT
from support import free_port, provider_config

K8S_VERSION = "1.30.0"


def hook_pods(objects: list[dict]) -> list[dict]:
    return [o for o in objects if o["kind"] == "Pod" and o["metadata"].get("annotations", {}).get("helm.sh/hook") == "test"]


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def run_hook(pod: dict, url: str, attempts: int, interval: float) -> subprocess.CompletedProcess:
    """The pod's container command with its env, the Service URL swapped for a loopback one."""
    (container,) = pod["spec"]["containers"]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["READY_URL"].endswith("/health/ready")
    env.update(READY_URL=url, READY_ATTEMPTS=str(attempts), READY_INTERVAL_SECONDS=str(interval))
    command = [sys.executable if arg == "python3" else arg for arg in container["command"] + container["args"]]
    return subprocess.run(command, capture_output=True, text=True, timeout=attempts * (interval + 6) + 10,
                          env={**os.environ, **env})


def test_the_test_hook_pod_asks_the_services_readiness_with_the_gateway_image():
    for values in (("cluster-values.yaml",), ("ha-production-values.yaml",), ()):
        objects = render(*values)
        (pod,) = hook_pods(objects)
        kubernetes_validate.validate(pod, K8S_VERSION, strict=True)
        assert pod["metadata"]["annotations"]["helm.sh/hook-delete-policy"] == "before-hook-creation,hook-succeeded"
        assert pod["spec"]["restartPolicy"] == "Never"
        (container,) = pod["spec"]["containers"]
        workload = one(objects, "StatefulSet" if not values else "Deployment")
        (gateway,) = workload["spec"]["template"]["spec"]["containers"]
        assert container["image"] == gateway["image"]
        assert container["command"] == ["python3", "-c"] and "urllib.request" in container["args"][0]
        assert container["securityContext"] == gateway["securityContext"]
        service = one(objects, "Service", "bifrost")
        env = {e["name"]: e["value"] for e in container["env"]}
        assert env["READY_URL"] == f"http://{service['metadata']['name']}:{service['spec']['ports'][0]['port']}/health/ready"
        assert (env["READY_ATTEMPTS"], env["READY_INTERVAL_SECONDS"]) == ("30", "2")
        # the hook pod is no gateway: nothing of the release selects it
        labels = pod["metadata"]["labels"]
        assert not selects(service["spec"]["selector"], labels)
        assert not selects(one(objects, "Service", "bifrost-headless")["spec"]["selector"], labels)
        assert not selects(workload["spec"]["selector"]["matchLabels"], labels)
        for pdb in (o for o in objects if o["kind"] == "PodDisruptionBudget"):
            assert not selects(pdb["spec"]["selector"]["matchLabels"], labels)


def test_the_hook_pod_is_not_selected_by_kubernetes_discovery():
    objects = render("cluster-k8s-discovery-values.yaml")
    (pod,) = hook_pods(objects)
    selector = json.loads(config_json(objects))["cluster_config"]["discovery"]["k8s_label_selector"]
    wanted = dict(term.split("=", 1) for term in selector.split(","))
    assert not selects(wanted, pod["metadata"]["labels"])
    assert selects(wanted, one(objects, "Deployment")["spec"]["template"]["metadata"]["labels"])


def test_the_test_hook_can_be_turned_off():
    assert not hook_pods(render("cluster-values.yaml", sets=("helmTest.enabled=false",)))


def test_the_rendered_hook_script_fails_while_syncing_and_passes_once_ready(mock, start_gateway, pg_database):
    host, absent = "127.0.0.43", "127.0.0.44"
    gw = start_gateway({
        **provider_config(mock.url),
        "config_store": {"enabled": True, "type": "postgres", "config": {"dsn": pg_database}},
        "cluster_config": {"enabled": True, "node_name": "hooked", "gossip": {"port": free_port(host)},
                           "peers": [f"{absent}:{free_port(absent)}"]},  # nobody answers: syncing for SYNC_WAIT
    }, "--host", host)
    (pod,) = hook_pods(render("cluster-values.yaml"))

    failed = run_hook(pod, gw.url + "/health/ready", attempts=2, interval=0.2)
    assert failed.returncode == 1, failed.stdout + failed.stderr
    lines = failed.stdout.splitlines()
    assert len(lines) == 2 and all(line.startswith("503 ") and '"cluster":"syncing"' in line for line in lines), lines

    # ready alone after SYNC_WAIT: the hook's retries carry it there
    passed = run_hook(pod, gw.url + "/health/ready", attempts=int(SYNC_WAIT) + 10, interval=1)
    assert passed.returncode == 0, passed.stdout + passed.stderr
    assert passed.stdout.splitlines()[-1].startswith('200 {"status":"ready"')


def test_the_rendered_hook_script_reports_an_unreachable_service():
    (pod,) = hook_pods(render("cluster-values.yaml"))
    port = free_port("127.0.0.45")  # nothing listens there
    failed = run_hook(pod, f"http://127.0.0.45:{port}/health/ready", attempts=2, interval=0.1)
    assert failed.returncode == 1
    assert [line.split(" ", 1)[0] for line in failed.stdout.splitlines()] == ["unreachable:", "unreachable:"]
