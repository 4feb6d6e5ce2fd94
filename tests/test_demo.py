"""``rainbridge demo`` answers a chat completion within seconds, with no network or keys."""

import signal
import sys
import time

import openai

from support import Proc, wait_http


def test_demo_answers_quickly_and_stops_cleanly(tmp_path):
    started = time.monotonic()
    demo = Proc([sys.executable, "-m", "rainbridge", "demo", "--port", "0"], tmp_path / "demo.log")
    try:
        url = demo.wait_for(r"a gateway at (http://\S+) in front", timeout=20).group(1)
        mock_url = demo.wait_for(r"in front of a fake provider at (http://\S+?)\.\n").group(1)
        wait_http(url + "/health", proc=demo)
        client = openai.OpenAI(base_url=url + "/v1", api_key="demo", max_retries=0)
        reply = client.chat.completions.create(model="openai/gpt-4o-mini", messages=[{"role": "user", "content": "Hello!"}])
        assert reply.choices[0].message.content == "This is a mock response from gpt-4o-mini: Hello!"
        assert time.monotonic() - started < 15
        out = demo.output()
        assert "curl " + url + "/v1/chat/completions" in out
        assert 'OpenAI(base_url="' + url + '/v1"' in out
    finally:
        code = demo.stop(signal.SIGINT)
    assert code == 0, demo.output()
    # The fake provider went away with the demo.
    try:
        wait_http(mock_url + "/mock/stats", timeout=1)
        raise AssertionError("the fake provider is still running")
    except (TimeoutError, RuntimeError):
        pass


def test_cluster_demo_with_an_unreachable_postgres_says_so_and_starts_nothing(tmp_path):
    dsn = "postgresql://demo:hunter2-secret@127.0.0.1:1/nothing"
    demo = Proc([sys.executable, "-m", "rainbridge", "demo", "--cluster", "3", "--postgres", dsn], tmp_path / "demo.log")
    assert demo.popen.wait(30) == 2
    out = demo.output()
    assert "rainbridge: cannot connect to PostgreSQL at postgresql://demo:***@127.0.0.1:1/nothing" in out
    assert "hunter2-secret" not in out
    assert "replicas of one gateway" not in out
