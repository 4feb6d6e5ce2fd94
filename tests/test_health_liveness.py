"""``GET /health`` is liveness: draining is not a failure (200 ``draining``, so a liveness
probe cannot restart a pod mid-drain and cut its streams) while readiness turns 503; a
failing store ping still fails it, as Bifrost's does, unless ``disable_db_pings_in_health``.
The gateway in-process through its ASGI app, on a real SQLite store."""

from __future__ import annotations

from rainbridge.config.load import load_data
from rainbridge.gateway.gateway import Gateway
from rainbridge.server.app import App
from support import provider_config
from test_health_ready import get


def _gateway(tmp_path, mock, name: str, disable_pings: bool) -> tuple[Gateway, App]:
    raw = {**provider_config(mock.url), "client": {"disable_db_pings_in_health": disable_pings},
           "config_store": {"enabled": True, "type": "sqlite", "config": {"path": str(tmp_path / name)}}}
    gateway = Gateway(load_data(raw, {}), tmp_path)
    return gateway, App(gateway)


async def test_liveness_stays_200_draining_while_readiness_is_503(tmp_path, mock):
    gateway, app = _gateway(tmp_path, mock, "c.db", False)
    await gateway.start()
    try:
        status, body = await get(app, "/health")
        assert (status, body["status"]) == (200, "ok")
        gateway.begin_drain()
        status, body = await get(app, "/health")
        assert (status, body["status"], body["components"]["store"]) == (200, "draining", {"status": "ok", "type": "sqlite"})
        status, body = await get(app, "/health/ready")
        assert (status, body["status"], body["checks"]["drain"]) == (503, "draining", "draining")
    finally:
        await gateway.stop()


async def test_a_draining_gateway_whose_store_fails_is_not_live_unless_db_pings_are_disabled(tmp_path, mock):
    for disabled in (False, True):
        db = tmp_path / f"c-{disabled}.db"
        gateway, app = _gateway(tmp_path, mock, db.name, disabled)
        await gateway.start()
        try:
            gateway.begin_drain()
            db.unlink()  # the SQLite store's ping fails once its file is gone
            status, body = await get(app, "/health")
            if disabled:  # never pinged: alive, draining
                assert (status, body["status"], body["components"]["store"]["checked"]) == (200, "draining", False)
            else:
                assert (status, body["status"], body["components"]["store"]["status"]) == (503, "failing", "failing")
        finally:
            await gateway.stop()
