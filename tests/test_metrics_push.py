"""plugins.telemetry.config.push_gateway against a real Prometheus Pushgateway (Debian's
``prometheus-pushgateway``) on a loopback port, with basic auth: pushes arrive at the
configured interval under job/instance, carry the request metrics, survive a Pushgateway
that is down at first, and the group is deleted when the gateway shuts down gracefully."""

from __future__ import annotations

import base64
import shutil
import urllib.request
import warnings

import pytest

from support import HOST, GatewayProcess, Proc, eventually, free_port
from test_metrics import chat, config

pytestmark = pytest.mark.skipif(shutil.which("prometheus-pushgateway") is None,
                                reason="needs Debian's prometheus-pushgateway")

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    # bcrypt hashes for the Pushgateway's web config: the stdlib's crypt (Python 3.11/3.12).
    crypt = pytest.importorskip("crypt", reason="needs the crypt module (Python < 3.13) to hash the password")

USER, PASSWORD = "pusher", "push-s3cret"
JOB, INSTANCE = "rainbridge-test", "pod-a"


class Pushgateway:
    def __init__(self, tmp, port: int):
        web = tmp / "web.yml"
        hashed = crypt.crypt(PASSWORD, crypt.mksalt(crypt.METHOD_BLOWFISH))
        web.write_text(f"basic_auth_users:\n  {USER}: '{hashed}'\n")
        self.url = f"http://{HOST}:{port}"
        self.proc = Proc(["prometheus-pushgateway", f"--web.listen-address={HOST}:{port}", f"--web.config.file={web}",
                          f"--persistence.file={tmp / 'pushgateway.data'}"], tmp / f"pushgateway-{port}.log")
        eventually(lambda: self.text() is not None, 20, "the Pushgateway answers")

    def text(self) -> str:
        auth = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        req = urllib.request.Request(self.url + "/metrics", headers={"authorization": f"Basic {auth}"})
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.read().decode()

    def value(self, name: str, **labels) -> float | None:
        from prometheus_client.parser import text_string_to_metric_families

        for family in text_string_to_metric_families(self.text()):
            for s in family.samples:
                if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                    return s.value
        return None

    def stop(self) -> None:
        self.proc.stop()


def push_config(mock_url: str, port: int, interval: int = 1) -> dict:
    push = {"enabled": True, "push_gateway_url": f"http://{HOST}:{port}", "job_name": JOB, "instance_id": INSTANCE,
            "push_interval": interval, "basic_auth": {"username": USER, "password": "env.TEST_PUSH_PASSWORD"}}
    return {**config(mock_url), "plugins": [{"name": "telemetry", "enabled": True, "config": {"push_gateway": push}}]}


def test_pushes_at_the_interval_and_deletes_the_group_on_shutdown(mock, tmp_path):
    port = free_port(HOST)
    pushgw = Pushgateway(tmp_path, port)
    gw = GatewayProcess(tmp_path, push_config(mock.url, port), env={"TEST_PUSH_PASSWORD": PASSWORD})
    try:
        for _ in range(3):
            assert chat(gw.url, "openai/gpt-4o-mini")[0] == 200
        group = {"job": JOB, "instance": INSTANCE}
        eventually(lambda: pushgw.value("bifrost_upstream_requests_total", **group, provider="openai") == 3, 10,
                   "three requests pushed")
        assert pushgw.value("bifrost_input_tokens_total", **group, provider="openai") > 0
        first = pushgw.value("push_time_seconds", **group)
        eventually(lambda: pushgw.value("push_time_seconds", **group) > first, 5, "a second push one interval later")
        assert gw.stop() == 0
        assert pushgw.value("push_time_seconds", **group) is None  # the group is gone
        assert "could not delete" not in gw.log()
    finally:
        gw.stop()
        pushgw.stop()


def test_a_pushgateway_down_at_first_gets_the_numbers_once_it_is_up(mock, tmp_path):
    port = free_port(HOST)
    gw = GatewayProcess(tmp_path, push_config(mock.url, port), env={"TEST_PUSH_PASSWORD": PASSWORD})
    pushgw = None
    try:
        eventually(lambda: "push to" in gw.log() and "failed" in gw.log(), 10, "a failed push logged")
        assert chat(gw.url, "openai/gpt-4o-mini")[0] == 200  # requests are served meanwhile
        pushgw = Pushgateway(tmp_path, port)
        eventually(lambda: pushgw.value("bifrost_upstream_requests_total", job=JOB, instance=INSTANCE) == 1, 10,
                   "the request pushed after the retries")
        assert PASSWORD not in gw.log()
    finally:
        gw.stop()
        if pushgw is not None:
            pushgw.stop()
