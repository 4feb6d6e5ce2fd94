"""/health with a PostgreSQL config store: 503 naming the store while it is unreachable, 200 after."""

import os
import time
from urllib.parse import urlsplit

import pytest

from support import http_json
from tcp_proxy import TcpProxy

DSN = os.environ.get("RAINBRIDGE_TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test")


@pytest.fixture
def pg_proxy():
    parts = urlsplit(DSN)
    proxy = TcpProxy(parts.hostname or "127.0.0.1", parts.port or 5432)
    proxy.start()
    yield proxy, parts
    proxy.close()


def wait_status(url, status, timeout=15):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = http_json("GET", url)
        if got[0] == status:
            return got
        time.sleep(0.1)
    raise AssertionError(f"{url} never answered {status}: {got}")


def test_health_follows_postgres_reachability(mock, start_gateway, pg_proxy):
    proxy, parts = pg_proxy
    dsn = f"postgresql://{parts.username}@127.0.0.1:{proxy.port}{parts.path}"
    gw = start_gateway({
        "config_store": {"enabled": True, "type": "postgres", "config": {"dsn": dsn, "max_open_conns": 2}},
        "providers": {"openai": {"keys": [{"value": "k"}], "network_config": {"base_url": mock.url}}},
    })
    _, _, body = wait_status(gw.url + "/health", 200)
    assert body["components"]["store"] == {"status": "ok", "type": "postgres"}
    proxy.cut()
    _, _, body = wait_status(gw.url + "/health", 503)
    store = body["components"]["store"]
    assert store["status"] == "failing" and f"127.0.0.1:{proxy.port}" in store["error"]
    # Requests that do not need the store keep working.
    status, _, _ = http_json("POST", gw.url + "/v1/chat/completions", {"model": "openai/gpt-4o", "messages": [{"role": "user", "content": "x"}]})
    assert status == 200
    proxy.start()
    wait_status(gw.url + "/health", 200)
