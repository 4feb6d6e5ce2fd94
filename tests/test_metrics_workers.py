"""--workers 2: whichever worker the kernel hands a scrape to answers for the whole pod."""

from __future__ import annotations

from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)

from support import GatewayProcess
from test_metrics import chat, config, one, samples, scrape

REQUESTS = 40  # each on its own connection: SO_REUSEPORT spreads them over both workers


def test_every_scrape_of_a_two_worker_pod_counts_every_request(mock, tmp_path):
    gw = GatewayProcess(tmp_path, config(mock.url), workers=2)
    try:
        for _ in range(REQUESTS):
            assert chat(gw.url, "openai/gpt-4o-mini", {"x-bf-dim-env": "prod"})[0] == 200
        for _ in range(6):  # each scrape is a new connection, to either worker
            found = samples(scrape(gw.url)[1])
            assert one(found, "bifrost_upstream_requests_total", provider="openai", env="prod") == REQUESTS
            assert one(found, "http_requests_total", status="200", env="prod") == REQUESTS
            assert one(found, "bifrost_upstream_latency_seconds_count", provider="openai", is_success="true") == REQUESTS
            assert one(found, "rainbridge_provider_active_requests", provider="openai") == 0
        content_type, text = scrape(gw.url, "application/openmetrics-text; version=1.0.0")
        assert content_type.startswith("application/openmetrics-text")
        families = {f.name: f for f in openmetrics_families(text)}
        [total] = [s.value for s in families["bifrost_upstream_requests"].samples if s.name.endswith("_total")]
        assert total == REQUESTS
    finally:
        code = gw.stop()
        # (once in CI under heavy load the pod outlived the 15 s stop and was killed: the log
        # tail says which step of the drain it was in)
        assert code == 0, gw.log()[-4000:]
    assert "left out of this scrape" not in gw.log()


def test_merging_sums_equal_series_and_takes_the_minimum_of_up_gauges():
    from rainbridge.telemetry.pod import Merged

    def worker(requests: float, up: float, queue: float) -> list:
        return [["bifrost_upstream_requests", "counter", "", "", [["bifrost_upstream_requests_total", {"provider": "a"}, requests]]],
                ["rainbridge_store_up", "gauge", "", "", [["rainbridge_store_up", {"store": "config"}, up]]],
                ["rainbridge_provider_queue_depth", "gauge", "", "", [["rainbridge_provider_queue_depth", {"provider": "a"}, queue]]]]

    merged = {f.name: f.samples[0].value for f in Merged([worker(3, 1, 2), worker(4, 0, 5)]).collect()}
    assert merged == {"bifrost_upstream_requests": 7, "rainbridge_store_up": 0, "rainbridge_provider_queue_depth": 7}
