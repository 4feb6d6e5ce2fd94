"""README: "SIGTERM / Ctrl-C: stop accepting, finish in-flight requests and streams (up to
60 s), exit 0." The cap is ``RAINBRIDGE_GRACEFUL_TIMEOUT_SECONDS`` (or the drain config); the
test sets it to 2 s so that a stream that would run for hours shows the cap at work quickly."""

import http.client
import json
import signal
import socket
import threading
import time

import pytest

from rainbridge.config.schema import DrainConfig
from rainbridge.server.drain import DrainTimes, drain_times
from support import eventually, provider_config

CAP = 2.0


def test_sigterm_stops_accepting_and_the_drain_cap_ends_a_stream_that_never_ends(mock, start_gateway):
    gw = start_gateway(provider_config(mock.url), env={"RAINBRIDGE_GRACEFUL_TIMEOUT_SECONDS": str(CAP)})
    host, port = gw.url.removeprefix("http://").rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=CAP + 30)
    # 100,000 chunks 100 ms apart: close to three hours
    body = {"model": "openai/gpt-4o", "stream": True, "messages": [{"role": "user", "content": "hi"}],
            "mock": {"stream_chunks": 100_000, "chunk_delay_ms": 100}}
    conn.request("POST", "/v1/chat/completions", body=json.dumps(body), headers={"content-type": "application/json"})
    response = conn.getresponse()
    assert response.status == 200
    received: list[tuple[float, bytes]] = []

    def read():
        try:
            for line in iter(response.readline, b""):
                received.append((time.monotonic(), line))
        except (OSError, http.client.HTTPException):
            pass  # cut by the drain cap: what the test is about

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    eventually(lambda: len(received) >= 4 or len(received), 10, "the stream started")

    signalled = time.monotonic()
    gw.proc.popen.send_signal(signal.SIGTERM)

    def refused():
        try:
            socket.create_connection((host, int(port)), timeout=1).close()
        except ConnectionRefusedError:
            return True
        return "a new connection was accepted"

    eventually(refused, CAP, "new connections refused while draining")
    assert gw.proc.popen.poll() is None, "exited at once instead of draining"
    code = gw.proc.popen.wait(timeout=CAP + 20)  # not the 30 s default, not the stream's hours
    exited = time.monotonic()
    reader.join(timeout=5)
    conn.close()

    assert code == 0, gw.log()
    assert exited - signalled >= CAP * 0.9, exited - signalled  # the stream was given its time
    after_signal = [line for at, line in received if at > signalled and line.startswith(b"data: ")]
    assert len(after_signal) >= 5, "the stream did not go on while draining"
    assert not reader.is_alive(), "the client's connection was left open"
    data = [line for _, line in received if line.startswith(b"data: ")]
    # cut, not finished: the last event says why, then [DONE]
    assert data[-1] == b"data: [DONE]\n"
    assert json.loads(data[-2].removeprefix(b"data: "))["error"]["type"] == "server_shutting_down"
    assert "draining: finishing in-flight requests" in gw.log()


@pytest.mark.parametrize(("value", "expected"), [(None, 60.0), ("2.5", 2.5), ("0", 0.0), ("abc", 60.0), ("-1", 60.0), ("nan", 60.0)])
def test_the_drain_cap_comes_from_the_environment(value, expected):
    env = {} if value is None else {"RAINBRIDGE_GRACEFUL_TIMEOUT_SECONDS": value}
    assert drain_times(DrainConfig(), env).grace_s == expected


def test_drain_env_overrides_config_and_the_accept_window_stays_inside_the_grace():
    config = DrainConfig(accept_seconds=5, grace_seconds=40)
    assert drain_times(config, {}) == DrainTimes(accept_s=5, grace_s=40)
    assert drain_times(config, {"RAINBRIDGE_DRAIN_ACCEPT_SECONDS": "1", "RAINBRIDGE_DRAIN_GRACE_SECONDS": "20",
                                "RAINBRIDGE_GRACEFUL_TIMEOUT_SECONDS": "99"}) == DrainTimes(accept_s=1, grace_s=20)
    assert drain_times(config, {"RAINBRIDGE_GRACEFUL_TIMEOUT_SECONDS": "3"}) == DrainTimes(accept_s=3, grace_s=3)


def test_a_stream_on_the_anthropic_route_cut_by_the_drain_ends_with_an_error_event(mock, start_gateway):
    grace = 1.5
    gw = start_gateway(provider_config(mock.url), env={"RAINBRIDGE_DRAIN_GRACE_SECONDS": str(grace)})
    host, port = gw.url.removeprefix("http://").rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=grace + 30)
    body = {"model": "openai/gpt-4o", "max_tokens": 50, "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    conn.request("POST", "/anthropic/v1/messages", body=json.dumps(body), headers={
        "content-type": "application/json", "x-bf-eh-x-mock-stream-chunks": "100000", "x-bf-eh-x-mock-chunk-delay-ms": "100"})
    response = conn.getresponse()
    assert response.status == 200
    first = response.readline()
    assert first.startswith(b"event: message_start"), first
    gw.proc.popen.send_signal(signal.SIGTERM)
    rest = response.read().split(b"\n\n")  # bounded by the grace: the server ends the stream
    events = [e for e in rest if e.strip()]
    assert events[-1].startswith(b"event: error\ndata: "), events[-2:]
    error = json.loads(events[-1].split(b"data: ", 1)[1])["error"]
    assert "shutting down" in error["message"]
    assert gw.proc.popen.wait(timeout=grace + 20) == 0
    conn.close()
