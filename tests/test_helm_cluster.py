"""The chart's rendered config.json runs a real cluster: three `rainbridge serve` processes
started with the config.json and the container arguments the chart renders for the seed's
static-peers file (layered on cluster-values.yaml), each with the env the pod spec gives it.

Only what cannot exist here is substituted: the peers' pod DNS names become loopback
addresses (127.0.0.51..53, one per pod, as pod IPs; the gossip port too if 7946 is taken),
the PostgreSQL host/user/database come from the test database (passed as chart values, the
password through the env variable the Secret reference fills), the providers are the fake
provider (passed as `bifrost.extraConfig`), and --host/--port/--app-dir point at loopback and
a temp dir."""

from __future__ import annotations

import json
import signal
import sys
from urllib.parse import urlsplit

from helm_support import SEEDS, config_json, one, render
from support import (
    Proc,
    eventually,
    free_port,
    free_port_at,
    http_json,
    provider_config,
    stop_all,
    wait_http,
)

PODS = 3
HOSTS = [f"127.0.0.{51 + i}" for i in range(PODS)]
TOKEN = "test-admin-token-helm-cluster"


def _gossip_port(wanted: int) -> int:
    """The rendered port when it is free on every pod address, else one that is."""
    if all(free_port_at(h, wanted) for h in HOSTS):
        return wanted
    for _ in range(20):
        port = free_port(HOSTS[0])
        if all(free_port_at(h, port) for h in HOSTS):
            return port
    raise RuntimeError("no gossip port free on every pod address")


def test_three_gateways_from_the_rendered_static_peers_config_form_a_cluster(tmp_path, pg_database, mock):
    dsn = urlsplit(pg_database)
    sets = (f"postgresql.external.host={dsn.hostname}", f"postgresql.external.port={dsn.port or 5432}",
            f"postgresql.external.user={dsn.username}", f"postgresql.external.database={dsn.path.lstrip('/')}",
            "postgresql.external.sslMode=disable")
    providers = tmp_path / "providers-values.yaml"  # the operator's providers, as docs/kubernetes.md says
    providers.write_text(json.dumps({"bifrost": {"extraConfig": {"providers": provider_config(mock.url)["providers"]}}}))
    objects = render(str(SEEDS / "cluster-values.yaml"), str(SEEDS / "cluster-static-peers-values.yaml"), str(providers),
                     sets=sets)
    sts = one(objects, "StatefulSet", "bifrost")
    (container,) = sts["spec"]["template"]["spec"]["containers"]
    env_names = {e["name"] for e in container["env"]}
    assert {"POD_NAME", "POD_IP", "RAINBRIDGE_POSTGRES_PASSWORD", "RAINBRIDGE_ENCRYPTION_KEY"} <= env_names

    config = json.loads(config_json(objects))
    cluster = config["cluster_config"]
    port = _gossip_port(cluster["gossip"]["port"])
    cluster["gossip"]["port"] = port
    # pod DNS names -> loopback "pod IPs"
    assert cluster["peers"] == [f"bifrost-{i}.bifrost-headless.default.svc.cluster.local:7946" for i in range(PODS)]
    cluster["peers"] = [f"{h}:{port}" for h in HOSTS]
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))

    overrides = {"--config": str(path), "--host": None, "--port": "0", "--app-dir": None}
    procs: list[Proc] = []
    try:
        for i, host in enumerate(HOSTS):
            app_dir = tmp_path / f"pod-{i}"
            app_dir.mkdir()
            args = []
            for arg in container["args"]:
                name = arg.split("=", 1)[0]
                if name in overrides:
                    value = {"--host": host, "--app-dir": str(app_dir)}.get(name, overrides[name])
                    arg = f"{name}={value}"
                args.append(arg)
            env = {"POD_NAME": f"bifrost-{i}", "POD_IP": host, "POD_NAMESPACE": "default",
                   "RAINBRIDGE_POSTGRES_PASSWORD": "unused-trust-auth",
                   "RAINBRIDGE_ENCRYPTION_KEY": "helm-cluster-test-encryption-key-0123456789",
                   "RAINBRIDGE_ADMIN_TOKEN": TOKEN}
            procs.append(Proc([sys.executable, "-m", "rainbridge", *args], tmp_path / f"pod-{i}.log", env=env))
        urls = [p.wait_for(r"listening on (http://\S+)", timeout=30).group(1) for p in procs]
        for proc, url in zip(procs, urls, strict=True):
            wait_http(url + "/health", timeout=30, proc=proc)

        names = {f"bifrost-{i}" for i in range(PODS)}

        def formed():
            for url in urls:
                status, _, body = http_json("GET", url + "/api/cluster/nodes", timeout=3,
                                            headers={"authorization": f"Bearer {TOKEN}"})
                alive = {n["name"] for n in body.get("nodes", []) if n["state"] == "alive"}
                if status != 200 or alive != names:
                    return (url, status, sorted(alive))
            return True

        eventually(formed, 30, "three pods alive in every member's view")
        for url in urls:
            eventually(lambda u=url: http_json("GET", u + "/health/ready", timeout=3)[0] == 200, 20, f"{url} ready")
        status, _, body = http_json("POST", urls[1] + "/v1/chat/completions", timeout=10, body={
            "model": "openai/gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]})
        assert status == 200, body
        codes = stop_all(procs, signal.SIGTERM, timeout=30)  # the pods drain side by side
        for proc, code in zip(procs, codes, strict=True):
            assert code == 0, proc.output()
    finally:
        stop_all(procs, signal.SIGKILL, timeout=5)
