"""README: "SIGTERM / Ctrl-C: stop accepting, finish in-flight requests and streams (up to
30 s), exit 0." The cap is ``RAINBRIDGE_GRACEFUL_TIMEOUT_SECONDS`` (30 by default); the test
sets it to 2 s so that a stream that would run for hours shows the cap at work quickly."""

import http.client
import json
import signal
import socket
import threading
import time

import pytest

from rainbridge.server.run import ServeOptions
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
    assert b"data: [DONE]\n" not in [line for _, line in received]  # cut, not finished
    assert "draining: finishing in-flight requests" in gw.log()


@pytest.mark.parametrize(("value", "expected"), [(None, 30.0), ("2.5", 2.5), ("0", 0.0), ("abc", 30.0), ("-1", 30.0), ("nan", 30.0)])
def test_the_drain_cap_comes_from_the_environment(monkeypatch, value, expected):
    if value is None:
        monkeypatch.delenv("RAINBRIDGE_GRACEFUL_TIMEOUT_SECONDS", raising=False)
    else:
        monkeypatch.setenv("RAINBRIDGE_GRACEFUL_TIMEOUT_SECONDS", value)
    assert ServeOptions().graceful_timeout == expected
