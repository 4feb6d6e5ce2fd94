"""README: ``GET /health`` answers 503 naming the failing component when (cluster mode) this
member's gossip is not running.

Nothing outside the process can stop a member's gossip while it serves (its sockets close
only at shutdown), so this test runs the gateway in-process: the real app under uvicorn with
our HTTP protocol on a loopback socket, a real gossip member on UDP/TCP and the PostgreSQL
config store cluster mode needs. It closes the member's gossip node the way a crash of that
layer would leave it, and asks ``/health`` over HTTP.
"""

import asyncio
import json
import time

import aiohttp
import uvicorn

from rainbridge.config.load import load_file
from rainbridge.server.protocol import HttpProtocol
from rainbridge.server.run import ServeOptions, bind_socket, build_app
from support import free_port, provider_config

HOST = "127.0.0.41"


async def get_health(url):
    async with aiohttp.ClientSession() as s, s.get(url + "/health") as resp:
        return resp.status, await resp.json()


async def until(cond, timeout, what):
    """Poll an async-friendly condition (bounded)."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout}s")
        await asyncio.sleep(0.05)


async def test_health_is_503_naming_the_cluster_when_gossip_stops(mock, pg_database, tmp_path):
    gossip_port = free_port(HOST)
    config = {
        **provider_config(mock.url),
        "config_store": {"enabled": True, "type": "postgres", "config": {"dsn": pg_database}},
        # a one-member cluster: the peer list is the member itself
        "cluster_config": {"enabled": True, "node_name": "h0", "peers": [f"{HOST}:{gossip_port}"],
                           "gossip": {"port": gossip_port, "profile": "local"}},
    }
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    sock = bind_socket(HOST, 0, reuse_port=False)
    opts = ServeOptions(config_path=str(path), app_dir=str(tmp_path), host=HOST, port=sock.getsockname()[1])
    app = build_app(opts, load_file(path))
    server = uvicorn.Server(uvicorn.Config(app, http=HttpProtocol, lifespan="on", log_config=None, access_log=False))
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    url = f"http://{HOST}:{opts.port}"
    try:
        await until(lambda: server.started or serving.done(), 30, "the gateway started")
        assert not serving.done(), serving.exception()

        status, health = await get_health(url)
        assert status == 200 and health["status"] == "ok", health
        cluster = health["components"]["cluster"]
        assert cluster["status"] == "ok" and cluster["readiness"] == "ready" and cluster["alive"] == 1, cluster
        assert health["components"]["store"] == {"status": "ok", "type": "postgres"}

        await app.gateway.cluster.node.close()  # the member's gossip sockets and timers are gone

        status, health = await get_health(url)
        assert status == 503, health
        assert health["status"] == "failing"
        assert health["components"]["cluster"] == {"status": "failing", "membership": "stopped", "readiness": "ready"}
        assert health["components"]["store"]["status"] == "ok"  # only the cluster is to blame
    finally:
        server.should_exit = True
        await asyncio.wait_for(serving, 30)
