"""Kubernetes discovery through kubernetes_asyncio against ``k8s_api_server`` (the pods
list/watch API as documented, over TLS with a generated CA and a service account token):
ready pods only, changes followed by watch, resume with resourceVersion, relist on 410
Gone, the API going down (degraded, last pods kept) and coming back."""

from __future__ import annotations

import asyncio

import pytest

from discovery_support import degraded
from k8s_api_server import KubernetesApiServer, parse_selector
from rainbridge.cluster.discovery.base import DiscoveryConfigError
from rainbridge.cluster.discovery.kubernetes import make
from rainbridge.config.schema import DiscoveryConfig
from support import until

APP = {"app.kubernetes.io/name": "rainbridge"}
SELECTOR = "app.kubernetes.io/name=rainbridge"
SELF = ("10.244.0.1", 7946)  # our own pod: never a candidate (no packet is sent to it)


@pytest.fixture
def api(tmp_path):
    server = KubernetesApiServer(tmp_path)
    server.start()
    yield server
    server.close()


def discovery(api: KubernetesApiServer, **fields):
    config = DiscoveryConfig(enabled=True, type="kubernetes",
                             k8s_label_selector=fields.pop("selector", SELECTOR),
                             dial_timeout="2s", **fields)
    return make(config, SELF, "self", api.environ)


async def found(d, expected: set[str]):
    got = {ip for ip, _ in await d.candidates()}
    return got == expected or got


def test_label_selector_forms():
    labels = {"app": "gw", "tier": "edge"}
    assert parse_selector("app=gw,tier in (edge, core)")(labels)
    assert parse_selector("app==gw,!canary,tier")(labels)
    assert not parse_selector("app!=gw")(labels)
    assert not parse_selector("tier notin (edge)")(labels)
    with pytest.raises(ValueError):
        parse_selector("app=gw,,")


def test_the_label_selector_is_required():
    config = DiscoveryConfig(enabled=True, type="kubernetes")
    with pytest.raises(DiscoveryConfigError, match=r"discovery\.k8s_label_selector: required"):
        make(config, SELF, "self", {})


async def test_outside_a_pod_start_names_the_service_account(tmp_path):
    config = DiscoveryConfig(enabled=True, type="kubernetes", k8s_label_selector=SELECTOR)
    d = make(config, SELF, "self", {"RAINBRIDGE_K8S_SERVICEACCOUNT_DIR": str(tmp_path)})
    with pytest.raises(DiscoveryConfigError, match="in-cluster service account"):
        await d.start()


async def test_only_running_ready_selected_pods_with_an_ip_are_candidates(api):
    api.put_pod("gw-0", "10.244.0.1", APP)  # ourselves
    api.put_pod("gw-1", "10.244.0.2", APP)
    api.put_pod("gw-2", "10.244.0.3", APP, ready=False)
    api.put_pod("gw-3", "10.244.0.4", APP, phase="Pending")
    api.put_pod("gw-4", None, APP)
    api.put_pod("gw-5", "10.244.0.6", APP, deleting=True)
    api.put_pod("other", "10.244.0.7", {"app.kubernetes.io/name": "postgres"})
    api.put_pod("gw-x", "10.244.9.1", APP, namespace="elsewhere")
    d = discovery(api)
    await d.start()
    try:
        await until(lambda: found(d, {"10.244.0.2"}), 10, "only gw-1")
        assert await d.candidates() == [("10.244.0.2", 7946)]  # at our gossip port
        assert d.health.healthy and d.health.candidates == 1
        assert {(verb, path) for verb, path, _ in api.requests} <= {
            ("LIST", "/api/v1/namespaces/rainbridge/pods"),
            ("WATCH", "/api/v1/namespaces/rainbridge/pods")}  # the namespace file's
        assert all(q["labelSelector"] == SELECTOR for _, _, q in api.requests)
    finally:
        await d.stop()


async def test_the_watch_follows_pods_becoming_ready_changing_labels_and_leaving(api):
    api.put_pod("gw-1", "10.244.0.2", APP)
    d = discovery(api)
    await d.start()
    try:
        await until(lambda: found(d, {"10.244.0.2"}), 10, "gw-1")
        list_count = sum(verb == "LIST" for verb, _, _ in api.requests)
        api.put_pod("gw-2", "10.244.0.3", APP, ready=False)
        api.put_pod("gw-3", "10.244.0.4", APP)
        await until(lambda: found(d, {"10.244.0.2", "10.244.0.4"}), 10, "gw-3 added")
        api.put_pod("gw-2", "10.244.0.3", APP)  # became ready
        await until(lambda: found(d, {"10.244.0.2", "10.244.0.3", "10.244.0.4"}), 10, "gw-2")
        api.put_pod("gw-3", "10.244.0.4", {"app.kubernetes.io/name": "old"})  # relabelled
        api.put_pod("gw-2", "10.244.0.3", APP, ready=False)  # readiness probe fails
        await until(lambda: found(d, {"10.244.0.2"}), 10, "gw-2 unready, gw-3 out of selection")
        api.delete_pod("gw-1")
        await until(lambda: found(d, set()), 10, "gw-1 deleted")
        # all of it by one watch: no further list
        assert sum(verb == "LIST" for verb, _, _ in api.requests) == list_count
    finally:
        await d.stop()


async def test_an_ended_watch_resumes_from_the_last_version_seen_bookmarks_included(api):
    api.put_pod("gw-1", "10.244.0.2", APP)
    d = discovery(api)
    await d.start()
    try:
        await until(lambda: found(d, {"10.244.0.2"}), 10, "gw-1")
        await until(lambda: asyncio.to_thread(lambda: api.open_watches() == 1), 10, "watching")
        api.put_pod("unrelated", "10.244.0.9", {"app": "x"})  # moves the version on
        api.bookmark()

        async def bookmarked():
            return d.resource_version == str(api.rv) or (d.resource_version, api.rv)

        await until(bookmarked, 10, "the bookmark's version")
        seen = d.resource_version
        lists = sum(verb == "LIST" for verb, _, _ in api.requests)
        api.end_watches()

        async def resumed():
            return (api.watch_versions()[-1:] == [seen] and len(api.watch_versions()) >= 2) or (
                api.watch_versions())

        await until(resumed, 10, "a new watch from the bookmark's version")
        api.put_pod("gw-2", "10.244.0.3", APP)
        await until(lambda: found(d, {"10.244.0.2", "10.244.0.3"}), 10, "gw-2 by the new watch")
        assert sum(verb == "LIST" for verb, _, _ in api.requests) == lists
        assert d.health.healthy and d.relists == 0
    finally:
        await d.stop()


async def test_410_gone_relists_and_catches_up_on_what_the_watch_missed(api):
    api.put_pod("gw-1", "10.244.0.2", APP)
    api.put_pod("gw-2", "10.244.0.3", APP)
    d = discovery(api)
    await d.start()
    try:
        await until(lambda: found(d, {"10.244.0.2", "10.244.0.3"}), 10, "both")
        api.stop()  # the watch drops; while away, the cluster changes and compacts
        api.start()
        api.app.call(lambda: None)
        api.delete_pod("gw-1")
        api.put_pod("gw-3", "10.244.0.4", APP)
        api.compact()

        async def relisted():
            return (d.relists >= 1 and {ip for ip, _ in await d.candidates()}
                    == {"10.244.0.3", "10.244.0.4"}) or (d.relists, await d.candidates())

        await until(relisted, 15, "a relist after 410 with the current pods")
        assert d.health.healthy
    finally:
        await d.stop()


async def test_the_api_going_down_keeps_the_last_pods_then_recovers(api):
    api.put_pod("gw-1", "10.244.0.2", APP)
    d = discovery(api)
    await d.start()
    try:
        await until(lambda: found(d, {"10.244.0.2"}), 10, "gw-1")
        api.stop()

        await until(lambda: degraded(d), 10, "health degraded")
        assert await d.candidates() == [("10.244.0.2", 7946)]  # last good list kept
        assert "rainbridge" in d.health.last_error and api.token not in d.health.last_error
        api.start()
        api.put_pod("gw-2", "10.244.0.3", APP)
        await until(lambda: found(d, {"10.244.0.2", "10.244.0.3"}), 15, "back, with gw-2")
        assert d.health.healthy and d.health.failures == 0
    finally:
        await d.stop()


async def test_a_wrong_token_or_a_forbidden_namespace_is_reported_not_raised(api):
    other = discovery(api, k8s_namespace="kube-system")
    await other.start()  # reads the right token
    (api.serviceaccount_dir / "token").write_text("not-the-token")
    d = discovery(api)
    await d.start()
    try:
        async def failing():
            return (("HTTP 401" in (d.health.last_error or ""))
                    and "HTTP 403" in (other.health.last_error or "")) or (
                d.health.last_error, other.health.last_error)

        await until(failing, 10, "401 and 403 reported")
        assert "not-the-token" not in d.health.last_error
        assert await d.candidates() == [] and await other.candidates() == []
    finally:
        await d.stop()
        await other.stop()
