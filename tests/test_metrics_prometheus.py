"""A real Prometheus (Debian's ``prometheus``) scrapes a ``--workers 3`` gateway every second
and answers PromQL over it: the request rate is positive, the request total is exactly what
was sent (every worker's requests, not one worker's), and the cost total is what the price
table says the answered tokens cost."""

from __future__ import annotations

import json
import shutil
import signal
import urllib.parse
import urllib.request

import pytest

from rainbridge.governance.pricing import Pricing
from support import HOST, GatewayProcess, Proc, eventually, free_port
from test_metrics import VK, chat, config

pytestmark = pytest.mark.skipif(shutil.which("prometheus") is None, reason="needs Debian's prometheus")

MODEL = "openai/gpt-4o-mini"  # priced in the built-in table
PLAIN, GOVERNED = 12, 9  # requests per batch without and with the virtual key


class Prometheus:
    def __init__(self, tmp, target: str):
        port = free_port(HOST)
        cfg = tmp / "prometheus.yml"
        cfg.write_text(json.dumps({  # YAML is a superset of JSON
            "global": {"scrape_interval": "1s", "scrape_timeout": "900ms", "evaluation_interval": "1s"},
            "scrape_configs": [{"job_name": "rainbridge", "static_configs": [{"targets": [target]}]}],
        }))
        self.url = f"http://{HOST}:{port}"
        self.proc = Proc(["prometheus", f"--config.file={cfg}", f"--storage.tsdb.path={tmp / 'tsdb'}",
                          f"--web.listen-address={HOST}:{port}"], tmp / "prometheus.log")
        eventually(self.ready, 30, "Prometheus is ready")

    def ready(self) -> bool:
        with urllib.request.urlopen(self.url + "/-/ready", timeout=5) as resp:
            return resp.status == 200

    def query(self, promql: str) -> list[float]:
        """The instant vector's values (empty: no series yet)."""
        url = self.url + "/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        with urllib.request.urlopen(url, timeout=5) as resp:
            answer = json.loads(resp.read())
        assert answer["status"] == "success", answer
        return [float(item["value"][1]) for item in answer["data"]["result"]]

    def stop(self) -> int:
        return self.proc.stop(signal.SIGTERM, timeout=30)


def send(url: str, plain: int, governed: int) -> tuple[int, int]:
    """Each request on its own connection (the kernel spreads them over the workers);
    returns the (prompt, completion) tokens the answers reported."""
    tokens_in = tokens_out = 0
    for i in range(plain + governed):
        headers = {"authorization": f"Bearer {VK}", "x-bf-dim-env": "prod"} if i < governed else None
        status, reply = chat(url, MODEL, headers)
        assert status == 200, reply
        tokens_in += reply["usage"]["prompt_tokens"]
        tokens_out += reply["usage"]["completion_tokens"]
    return tokens_in, tokens_out


def counted(prom: Prometheus, want: int) -> object:
    """True once Prometheus' pod-wide request total is ``want``, else what it answered."""
    seen = prom.query("sum(bifrost_upstream_requests_total)")
    return seen == [want] or seen


def test_prometheus_scrapes_a_three_worker_pod_and_answers_rate_and_cost(mock, tmp_path):
    gw = GatewayProcess(tmp_path, config(mock.url), workers=3)
    prom = None
    try:
        prom = Prometheus(tmp_path, urllib.parse.urlsplit(gw.url).netloc)
        eventually(lambda: prom.query('up{job="rainbridge"}') == [1.0], 30, "Prometheus scrapes the gateway")

        price = Pricing().price("openai", "gpt-4o-mini")
        assert price is not None and price.input_per_token > 0
        # Two batches with a scrape between them: the second raises series Prometheus has
        # already seen, so their rate over the last minute is above zero.
        first_in, first_out = send(gw.url, PLAIN, GOVERNED)
        first = PLAIN + GOVERNED
        eventually(lambda: counted(prom, first), 30, f"sum(bifrost_upstream_requests_total) == {first}")
        second_in, second_out = send(gw.url, PLAIN, GOVERNED)
        sent = 2 * first
        eventually(lambda: counted(prom, sent), 30, f"sum(bifrost_upstream_requests_total) == {sent}")
        [rate] = prom.query("sum(rate(bifrost_upstream_requests_total[1m]))")
        assert rate > 0
        assert prom.query('sum(http_requests_total{status="200"})') == [sent]
        assert prom.query('sum(bifrost_upstream_requests_total{virtual_key_name="alice"})') == [2 * GOVERNED]

        tokens_in, tokens_out = first_in + second_in, first_out + second_out
        assert prom.query("sum(bifrost_input_tokens_total)") == [tokens_in]
        assert prom.query("sum(bifrost_output_tokens_total)") == [tokens_out]
        expected = tokens_in * price.input_per_token + tokens_out * price.output_per_token
        [cost] = prom.query("sum(bifrost_cost_total)")
        assert cost == pytest.approx(expected, rel=1e-9)
        assert expected > 0
    finally:
        if prom is not None:
            assert prom.stop() == 0, prom.proc.output()
        assert gw.stop() == 0
    assert "left out of this scrape" not in gw.log()
