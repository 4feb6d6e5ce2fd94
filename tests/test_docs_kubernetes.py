"""docs/kubernetes.md's commands name what the chart really renders: the Secrets it creates
are the ones the pods reference (and none is missing), the objects `kubectl` and `helm` are
pointed at exist under those names for release `bifrost`, the paths and CLI commands exist,
and the numbers it quotes are the chart's defaults."""

from __future__ import annotations

import re
import subprocess
import sys

import yaml

from helm_support import CHART, SEEDS, config_json, one, render
from rainbridge.config.load import load_data
from rainbridge.gateway.gateway import Gateway
from rainbridge.server.app import App
from support import provider_config

DOC = (CHART.parent.parent.parent / "docs" / "kubernetes.md").read_text()
COMMANDS = "\n".join(re.findall(r"```sh\n(.*?)```", DOC, re.S)).replace("\\\n", " ")


def rendered(tmp_path) -> list[dict]:
    """cluster-values.yaml + the doc's my-values.yaml, as the doc installs them."""
    example = DOC.split("`my-values.yaml`:\n\n```yaml\n", 1)[1].split("```", 1)[0]
    path = tmp_path / "my-values.yaml"
    path.write_text(example)
    return render(str(SEEDS / "cluster-values.yaml"), str(path))


def test_the_secrets_the_doc_creates_are_exactly_the_ones_the_pods_reference(tmp_path):
    created = set()
    for name, literals in re.findall(r"kubectl create secret generic (\S+)((?: +--from-literal=[\w.-]+=\S+)+)", COMMANDS):
        created |= {(name, key) for key in re.findall(r"--from-literal=([\w.-]+)=", literals)}
    (container,) = one(rendered(tmp_path), "Deployment")["spec"]["template"]["spec"]["containers"]
    referenced = {(e["valueFrom"]["secretKeyRef"]["name"], e["valueFrom"]["secretKeyRef"]["key"])
                  for e in container["env"] if "secretKeyRef" in e.get("valueFrom", {})}
    assert created == referenced


def test_the_objects_and_templates_the_commands_name_exist(tmp_path):
    objects = rendered(tmp_path)
    assert "helm install bifrost deploy/helm/rainbridge" in COMMANDS and "helm upgrade bifrost deploy/helm/rainbridge" in DOC
    for template in re.findall(r"--show-only (\S+)", COMMANDS):
        assert (CHART / template).is_file(), template
    for kind, name in re.findall(r"kubectl rollout status (\w+)/(\S+)", COMMANDS):
        one(objects, {"deployment": "Deployment", "statefulset": "StatefulSet"}[kind], name)
    for name, _local, remote in re.findall(r"kubectl port-forward svc/(\S+) (\d+):(\d+)", COMMANDS):
        ports = {p["port"] for p in one(objects, "Service", name)["spec"]["ports"]}
        assert int(remote) in ports
    for release in re.findall(r"helm test (\S+)", COMMANDS):
        assert release == "bifrost"
        assert [o for o in objects if o["kind"] == "Pod" and o["metadata"]["annotations"]["helm.sh/hook"] == "test"]
    assert "bifrost-headless.<namespace>.svc.cluster.local" in DOC
    one(objects, "Service", "bifrost-headless")


def test_the_http_paths_and_cli_commands_exist(tmp_path):
    app = App(Gateway(load_data(provider_config("http://127.0.0.1:9"), {}), tmp_path))
    for path in re.findall(r"localhost:8080(/[\w/]+)", COMMANDS):
        if path.startswith("/api/"):
            assert any(getattr(r, "path", None) == path for r in app.admin.app.routes), path
        else:
            assert path in app.routes, path
    for args in re.findall(r"^rainbridge (cluster status)", COMMANDS, re.M):
        result = subprocess.run([sys.executable, "-m", "rainbridge", *args.split(), "--help"],
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 0 and "--url" in result.stdout, result.stderr


def test_the_numbers_the_doc_quotes_are_the_charts(tmp_path):
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert f"`drain.acceptSeconds` ({values['drain']['acceptSeconds']})" in DOC
    assert f"`drain.graceSeconds` ({values['drain']['graceSeconds']})" in DOC
    config = load_data(yaml.safe_load(config_json(rendered(tmp_path))), env={
        "POD_NAME": "bifrost-0", "RAINBRIDGE_POSTGRES_PASSWORD": "x", "RAINBRIDGE_ENCRYPTION_KEY": "k" * 32,
        "OPENAI_API_KEY": "sk"}).config
    assert (config.drain.accept_seconds, config.drain.grace_seconds) == (values["drain"]["acceptSeconds"], values["drain"]["graceSeconds"])
    message = re.search(r"e\.g\. `(bifrost\.cluster\.enabled=true\s+needs storage\.mode=postgres)`", DOC).group(1)
    assert " ".join(message.split()) in (CHART / "templates" / "_helpers.tpl").read_text()


def test_the_rbac_check_names_the_charts_service_account_and_role():
    objects = render("cluster-k8s-discovery-values.yaml")
    account = one(objects, "ServiceAccount")["metadata"]["name"]
    (rule,) = one(objects, "Role")["rules"]
    checks = re.findall(r"kubectl auth can-i (\w+) (\w+) --as=system:serviceaccount:(\S+):(\S+) +# (yes|no)", COMMANDS)
    assert {answer for *_, answer in checks} == {"yes", "no"}
    for verb, resource, namespace, name, answer in checks:
        assert (namespace, name) == (one(objects, "Role")["metadata"]["namespace"], account)
        assert (verb in rule["verbs"] and resource in rule["resources"]) == (answer == "yes"), (verb, resource)
