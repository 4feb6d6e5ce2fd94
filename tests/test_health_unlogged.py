"""The issue's "never logged per call" for the probe endpoints: a kubelet asks /health and
/health/ready every few seconds on every pod, so neither may write a request log entry nor a
log line. A real `serve` process at debug log level, request logging on: 30 of each probe,
then one chat completion; the logs store holds exactly that one entry, and no log line names
a probe path."""

from __future__ import annotations

import time

from support import http_json, provider_config

TOKEN = "admin-token-probes-unlogged"
ADMIN = {"authorization": f"Bearer {TOKEN}"}


def test_probes_write_no_request_log_entry_and_no_log_line(tmp_path, mock, start_gateway):
    config = {**provider_config(mock.url), "client": {"enable_logging": True},
              "config_store": {"enabled": True, "type": "sqlite", "config": {"path": str(tmp_path / "c.db")}},
              "logs_store": {"enabled": True, "type": "sqlite", "config": {"path": str(tmp_path / "l.db")}}}
    gw = start_gateway(config, "--log-level", "debug", env={"RAINBRIDGE_ADMIN_TOKEN": TOKEN})
    before = len(gw.log().splitlines())
    for _ in range(30):
        assert http_json("GET", gw.url + "/health")[0] == 200
        assert http_json("GET", gw.url + "/health/ready")[0] == 200
    status, _, body = http_json("POST", gw.url + "/v1/chat/completions", body={
        "model": "openai/gpt-4o-mini", "messages": [{"role": "user", "content": "the one logged request"}]})
    assert status == 200, body

    deadline = time.monotonic() + 10
    while True:
        status, _, body = http_json("GET", gw.url + "/api/logs", headers=ADMIN)
        assert status == 200, body
        if body["logs"] or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert [(e["endpoint"], e["status"]) for e in body["logs"]] == [("chat", 200)]
    lines = gw.log().splitlines()[before:]
    assert not [line for line in lines if "/health" in line], lines
    assert len(lines) < 30, lines  # not one line per probe, whatever it says
