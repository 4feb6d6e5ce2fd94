"""The optional ServiceMonitor scrapes each pod once: it selects the gateway Service and not
the headless one (the same pods, not-ready ones included, on the same `http` port)."""

from __future__ import annotations

import pytest

from helm_support import SEED_FILES, one, render


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


@pytest.mark.parametrize("seed", [*SEED_FILES, None])
def test_the_service_monitor_selects_only_the_gateway_service(seed):
    objects = render(*([seed] if seed else []), sets=("serviceMonitor.enabled=true",))
    monitor = one(objects, "ServiceMonitor")
    selector = monitor["spec"]["selector"]["matchLabels"]
    services = [o for o in objects if o["kind"] == "Service"]
    assert len(services) == 2  # the gateway and the headless one (gossip / StatefulSet identity)
    chosen = [s["metadata"]["name"] for s in services if selects(selector, s["metadata"]["labels"])]
    assert chosen == ["bifrost"]
    gateway = one(objects, "Service", "bifrost")
    assert monitor["spec"]["endpoints"][0]["port"] in {p["name"] for p in gateway["spec"]["ports"]}
