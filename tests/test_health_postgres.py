"""PostgreSQL lost and back under traffic: serving goes on, /health flips, no log entry is lost."""

import time

from support import http_json
from tcp_proxy import TcpProxy

TOKEN = "t0k3n"


def wait_status(url, status, timeout=15):
    deadline = time.monotonic() + timeout
    got = None
    while time.monotonic() < deadline:
        got = http_json("GET", url)
        if got[0] == status:
            return got
        time.sleep(0.1)
    raise AssertionError(f"{url} never answered {status}: {got}")


def test_postgres_outage_under_traffic(mock, start_gateway, pg_database):
    from urllib.parse import urlsplit

    parts = urlsplit(pg_database)
    proxy = TcpProxy(parts.hostname or "127.0.0.1", parts.port or 5432)
    proxy.start()
    try:
        dsn = f"postgresql://{parts.username}@127.0.0.1:{proxy.port}{parts.path}"
        store = {"enabled": True, "type": "postgres", "config": {"dsn": dsn, "max_open_conns": 2}}
        gw = start_gateway(
            {
                "client": {"enable_logging": True},
                "config_store": store,
                "logs_store": store,
                "providers": {"openai": {"keys": [{"value": "k"}], "network_config": {"base_url": mock.url}}},
            },
            env={"RAINBRIDGE_ADMIN_TOKEN": TOKEN},
        )
        _, _, body = wait_status(gw.url + "/health", 200)
        assert body["components"]["store"] == {"status": "ok", "type": "postgres"}
        chat = {"model": "openai/gpt-4o", "messages": [{"role": "user", "content": "x"}]}
        for _ in range(5):
            assert http_json("POST", gw.url + "/v1/chat/completions", chat)[0] == 200

        proxy.cut()
        _, _, body = wait_status(gw.url + "/health", 503)
        store_state = body["components"]["store"]
        assert store_state["status"] == "failing" and f"127.0.0.1:{proxy.port}" in store_state["error"]
        for _ in range(20):  # requests that do not need the store keep working
            assert http_json("POST", gw.url + "/v1/chat/completions", chat)[0] == 200
        deadline = time.monotonic() + 10
        while "request log write failed" not in gw.log() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert "request log write failed" in gw.log()  # kept and retried, not dropped

        proxy.start()
        wait_status(gw.url + "/health", 200)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            status, _, body = http_json("GET", gw.url + "/api/logs?limit=100", headers={"authorization": f"Bearer {TOKEN}"})
            if status == 200 and len(body["logs"]) >= 25:
                break
            time.sleep(0.2)
        assert len(body["logs"]) == 25 and body["dropped"] == 0
    finally:
        proxy.close()
