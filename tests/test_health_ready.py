# ruff: noqa: F811  (tests take the imported `make` fixture as an argument)
"""``GET /health/ready``: 503 until the counters are loaded and, in cluster mode, the member
has synced (first push-pull done, or nobody to sync with); 503 ``draining`` (check ``drain``)
after SIGTERM;
200 otherwise. The gateway in-process through its ASGI app, a real ``serve`` process in
cluster mode on PostgreSQL, and the service's ``synced`` flag between real members."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from rainbridge.cluster.joining import SYNC_WAIT
from rainbridge.config.load import load_data
from rainbridge.gateway.gateway import Gateway
from rainbridge.server.app import App
from support import eventually, free_port, http_json, provider_config
from test_cluster_node import make, wait_until  # noqa: F401  (make: a fixture)


async def get(app: App, path: str) -> tuple[int, dict]:
    sent: list[dict] = []

    async def receive() -> dict:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": path, "headers": [], "query_string": b""}
    await app(scope, receive, send)
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return sent[0]["status"], orjson.loads(body)


async def test_ready_after_counters_load_and_not_while_draining(tmp_path, mock):
    raw = {**provider_config(mock.url), "config_store": {"enabled": True, "type": "sqlite", "config": {"path": str(tmp_path / "c.db")}}}
    gateway = Gateway(load_data(raw, {}), tmp_path)
    app = App(gateway)
    assert await get(app, "/health/ready") == (503, {"status": "not_ready", "checks": {"counters": "loading"}})
    await gateway.start()
    try:
        ready = {"counters": "loaded", "store": "reachable"}
        assert await get(app, "/health/ready") == (200, {"status": "ready", "checks": ready})
        gateway.begin_drain()
        assert await get(app, "/health/ready") == (503, {"status": "draining", "checks": {**ready, "drain": "draining"}})
    finally:
        await gateway.stop()


async def test_not_ready_while_the_store_is_unreachable_unless_db_pings_are_disabled(tmp_path, mock):
    for disabled in (False, True):
        db = tmp_path / f"c-{disabled}.db"
        raw = {**provider_config(mock.url), "client": {"disable_db_pings_in_health": disabled},
               "config_store": {"enabled": True, "type": "sqlite", "config": {"path": str(db)}}}
        gateway = Gateway(load_data(raw, {}), tmp_path)
        app = App(gateway)
        await gateway.start()
        try:
            assert (await get(app, "/health/ready"))[0] == 200
            db.unlink()  # the SQLite store's ping fails once its file is gone
            deadline = asyncio.get_running_loop().time() + 10
            while True:
                status, body = await get(app, "/health/ready")
                if disabled:  # never pinged: stays ready (for as long as we look)
                    assert (status, body) == (200, {"status": "ready", "checks": {"counters": "loaded"}})
                    if asyncio.get_running_loop().time() > deadline - 7:
                        break
                elif status == 503:
                    assert body == {"status": "not_ready", "checks": {"counters": "loaded", "store": "unreachable"}}
                    break
                assert asyncio.get_running_loop().time() < deadline, "still ready 10 s after the store went away"
                await asyncio.sleep(0.1)
        finally:
            await gateway.stop()


def test_a_cluster_member_is_ready_only_once_synced(tmp_path, mock, start_gateway, pg_database):
    host, absent = "127.0.0.41", "127.0.0.42"
    config = {
        **provider_config(mock.url),
        "config_store": {"enabled": True, "type": "postgres", "config": {"dsn": pg_database}},
        "cluster_config": {
            "enabled": True,
            "node_name": "lonely",
            "peers": [f"{absent}:{free_port(absent)}"],  # nobody answers there
            "gossip": {"port": free_port(host)},
        },
    }
    gw = start_gateway(config, "--host", host)
    status, _, body = http_json("GET", gw.url + "/health/ready")
    assert (status, body) == (503, {"status": "not_ready", "checks": {
        "counters": "loaded", "store": "reachable", "cluster": "syncing", "fleet_counters": "syncing"}})
    # No peer ever answers: after SYNC_WAIT the member is ready alone (and says so).
    eventually(lambda: http_json("GET", gw.url + "/health/ready")[0] == 200, SYNC_WAIT + 10, "ready alone")
    assert "no peer answered within 10s; ready alone" in gw.log()


async def test_synced_after_the_first_push_pull_or_alone_as_the_first_member(make):
    seed_ip, early_ip = "127.0.0.21", "127.0.0.22"
    port = free_port(seed_ip)
    peers = [f"{seed_ip}:{port}"]
    early = await make("early", early_ip, peers, start=False)
    early.joining.sync_wait = 60.0
    await early.start()
    make.started.append(early)
    await wait_until(lambda: early.node.last_push_pull_error is not None, 5, "a failed join")
    assert not early.synced
    seed = await make("seed", seed_ip, peers, port=port)  # lists only itself: the first member
    await wait_until(lambda: seed.synced, 2, "the seed synced alone")
    await wait_until(lambda: early.synced and early.joining.joined, 5, "early synced by its push-pull")


@pytest.mark.parametrize("wait", [0.5])
async def test_a_member_no_peer_answers_is_synced_alone_after_its_wait(make, wait):
    absent = "127.0.0.28"
    alone = await make("alone", "127.0.0.27", [f"{absent}:{free_port(absent)}"], start=False)
    alone.joining.sync_wait = wait
    await alone.start()
    make.started.append(alone)
    assert not alone.synced
    await wait_until(lambda: alone.synced, wait + 3, "synced alone")
    assert not alone.joining.joined

