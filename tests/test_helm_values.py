"""Keys the issue lists that tests/test_helm.py does not follow to their effect: the
telemetry plugin's push gateway, `replicaCount` without an HPA, `image.*`, a custom
`passwordKey`, `storage.postgresql.external` (the issue's spelling) as an alias,
`serviceAccount.*`, cluster-level `allowedAddressSpace`, `client.*` keys
turned snake_case, `lifecycle` and `resources` as given. Rendered by the real helm binary;
the config through rainbridge's own loader with the pod's env."""

from __future__ import annotations

import yaml

from helm_support import CHART, config_json, helm, one, render
from rainbridge.config.load import load_data, parse_text
from rainbridge.telemetry.push import push_settings

ENV = {"POD_NAME": "bifrost-0", "RAINBRIDGE_POSTGRES_PASSWORD": "pw", "RAINBRIDGE_ENCRYPTION_KEY": "k" * 32}


def loaded(objects: list[dict]):
    return load_data(parse_text(config_json(objects), "config.json"), env=ENV).config


def container(objects: list[dict]) -> dict:
    workload = [o for o in objects if o["kind"] in ("Deployment", "StatefulSet")]
    (only,) = workload[0]["spec"]["template"]["spec"]["containers"]
    return only


def test_the_telemetry_plugin_pushes_where_and_how_often_the_values_say():
    push = push_settings(loaded(render("ha-production-values.yaml")).plugins, ENV)
    assert push is not None
    assert (push.url, push.interval_s) == ("http://prometheus-pushgateway.monitoring.svc.cluster.local:9091", 15)


def test_replica_count_sets_replicas_when_no_hpa_owns_them():
    deploy = one(render("cluster-values.yaml", sets=("autoscaling.enabled=false",)), "Deployment")
    assert deploy["spec"]["replicas"] == 3


def test_image_keys_make_the_image_reference():
    assert container(render("cluster-values.yaml"))["image"] == "ghcr.io/rainbridge/rainbridge:v1.4.11"  # the seed's tag
    c = container(render("cluster-values.yaml", sets=("image.repository=registry.local/rb", "image.tag=0.2.0",
                                                      "image.pullPolicy=Always")))
    assert (c["image"], c["imagePullPolicy"]) == ("registry.local/rb:0.2.0", "Always")


def test_a_custom_password_key_and_ssl_mode_are_used():
    objects = render("cluster-values.yaml", sets=("postgresql.external.passwordKey=pg-pass",
                                                  "postgresql.external.sslMode=verify-full"))
    env = {e["name"]: e for e in container(objects)["env"]}
    assert env["RAINBRIDGE_POSTGRES_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": "postgres-credentials", "key": "pg-pass"}
    assert loaded(objects).config_store.config.ssl_mode == "verify-full"


def test_service_account_name_annotations_and_an_existing_one():
    objects = render("cluster-values.yaml", sets=("serviceAccount.name=gw", "serviceAccount.annotations.team=llm"))
    account = one(objects, "ServiceAccount")
    assert (account["metadata"]["name"], account["metadata"]["annotations"]) == ("gw", {"team": "llm"})
    assert one(objects, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"] == "gw"
    objects = render("cluster-values.yaml", sets=("serviceAccount.create=false", "serviceAccount.name=existing"))
    assert not [o for o in objects if o["kind"] == "ServiceAccount"]
    assert one(objects, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"] == "existing"


def test_cluster_level_allowed_address_space_becomes_the_configs_address_space():
    objects = render("cluster-values.yaml", sets=("bifrost.cluster.allowedAddressSpace={10.0.0.0/8}",))
    assert loaded(objects).cluster_config.discovery.allowed_address_space == ["10.0.0.0/8"]


def test_client_keys_lifecycle_and_resources_are_passed_as_given():
    objects = render("ha-production-values.yaml", sets=("bifrost.client.disableDbPingsInHealth=true",))
    client = loaded(objects).client
    assert (client.initial_pool_size, client.disable_db_pings_in_health) == (1000, True)
    c = container(objects)
    assert c["lifecycle"] == {"preStop": {"exec": {"command": ["sh", "-c", "sleep 20"]}}}
    assert c["resources"] == {"requests": {"cpu": "1000m", "memory": "1Gi"}, "limits": {"cpu": "4000m", "memory": "4Gi"}}


def test_gateway_and_test_hook_pods_meet_the_restricted_pod_security_standard():
    objects = render("ha-production-values.yaml")
    pods = [one(objects, "Deployment")["spec"]["template"]["spec"]]
    pods += [o["spec"] for o in objects if o["kind"] == "Pod"]
    assert len(pods) == 2
    for pod in pods:
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        for c in pod["containers"]:
            assert c["securityContext"]["allowPrivilegeEscalation"] is False
            assert c["securityContext"]["capabilities"] == {"drop": ["ALL"]}


def test_storage_postgresql_external_is_an_alias_of_postgresql_external(tmp_path):
    path = tmp_path / "alias.yaml"
    path.write_text(yaml.safe_dump({"storage": {"mode": "postgres", "postgresql": {"external": {
        "host": "pg.alias.example", "sslMode": "verify-ca", "existingSecret": "pg-alias", "passwordKey": "pw"}}}}))
    objects = render(str(path))
    store = loaded(objects).config_store.config
    assert (store.host, store.ssl_mode, store.password) == ("pg.alias.example", "verify-ca", "pw")
    env = {e["name"]: e for e in container(objects)["env"]}
    assert env["RAINBRIDGE_POSTGRES_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": "pg-alias", "key": "pw"}
    path.write_text(yaml.safe_dump({"storage": {"mode": "postgres", "postgresql": {"external": {
        "host": "h", "existingSecret": "s", "password": "hunter2"}}}}))
    refused = helm("template", "bifrost", str(CHART), "-f", str(path), check=False)
    assert refused.returncode != 0 and "put the password in a Secret" in refused.stderr
    assert "hunter2" not in refused.stderr
