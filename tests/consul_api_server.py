"""A Consul agent's HTTP API for tests, serving only what service discovery uses. No real
Consul can run here; this one follows the public API documentation:

- Register a service, ``PUT /v1/agent/service/register``
  (https://developer.hashicorp.com/consul/api-docs/agent/service#register-service): JSON
  body ``Name``, ``ID`` (default: the name), ``Address``, ``Port``, ``Check`` or
  ``Checks`` (here TCP checks: ``TCP``, ``Interval``, ``Timeout``,
  ``DeregisterCriticalServiceAfter``, optional initial ``Status``); keys
  are matched case-insensitively (Consul decodes with Go's encoding/json) and in
  snake_case; ``?replace-existing-checks``. Needs ``service:write``.
- Deregister, ``PUT /v1/agent/service/deregister/:service_id``: 404 ``Unknown service ID``
  for an unknown id.
- List service instances, ``GET /v1/health/service/:service``
  (https://developer.hashicorp.com/consul/api-docs/health#list-service-instances-for-service):
  entries ``{Node, Service, Checks}``; ``?passing`` keeps instances whose every check
  (``serfHealth`` and the service's) is ``passing``; a service's address empty means its
  node's.
- Blocking queries (https://developer.hashicorp.com/consul/api-docs/features/blocking):
  every response carries ``X-Consul-Index``; with ``?index=N`` the request waits until
  the index exceeds N or ``wait`` runs out (Go duration, default 5m, at most 10m, plus a
  random jitter of up to wait/16), then answers with the current result.
- Checks (https://developer.hashicorp.com/consul/docs/services/usage/checks#tcp-checks):
  a TCP check passes when a TCP connection to ``TCP`` opens within ``Timeout``; a new
  check starts ``critical``. Test knob: checks run every ``check_every`` seconds instead
  of their ``Interval`` so tests need not wait 10 s.
- ACL (https://developer.hashicorp.com/consul/api-docs/api-structure#authentication):
  with ``acl_token`` set, the token comes from ``X-Consul-Token``, ``Authorization:
  Bearer`` or ``?token=``; an unknown token is 403 ``ACL not found``; no token is the
  anonymous token: writes are 403 ``Permission denied``, reads are filtered to nothing
  (``X-Consul-Results-Filtered-By-ACLs: true``).

``requests`` records (method, path, query, token given and valid) of every request;
``stop``/``start`` take the agent away and back (it keeps its registrations, as an agent
with a data dir does).
"""

from __future__ import annotations

import asyncio
import json
import random
import re
from pathlib import Path

from aiohttp import web

from backend_support import ThreadedApp

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)$")
_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def go_duration(text: str | None, default: float) -> float:
    if not text:
        return default
    m = _DURATION.match(str(text).strip())
    if m is None:
        raise ValueError(f"time: invalid duration {text!r}")
    return float(m.group(1)) * _UNITS[m.group(2)]


def _fold(obj):
    """Keys lower-cased without underscores: Consul's case-insensitive, snake_case-tolerant
    decoding of request bodies."""
    if isinstance(obj, dict):
        return {k.lower().replace("_", ""): _fold(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_fold(v) for v in obj]
    return obj


def _status(service: dict) -> str:
    """An instance's aggregate status: critical if any check is."""
    statuses = {c["status"] for c in service["checks"]}
    return next((s for s in ("critical", "warning") if s in statuses), "passing")


class ConsulAgent:
    def __init__(self, tmp: Path | None = None, acl_token: str | None = None,
                 host: str = "127.0.0.1", check_every: float = 0.2,
                 node: str = "agent-1", node_address: str = "127.0.0.1") -> None:
        self.acl_token = acl_token
        self.check_every = check_every
        self.node = node
        self.node_address = node_address
        self.index = 10
        self.services: dict[str, dict] = {}  # id -> registration (folded) + status + index
        self.requests: list[tuple[str, str, dict, bool | None]] = []
        self._changed = asyncio.Event()
        self._checker: asyncio.Task | None = None
        self.app = ThreadedApp(self._make_app, host)

    @property
    def address(self) -> str:
        return f"{self.app.host}:{self.app.port}"

    def start(self) -> None:
        self.app.start()

    def stop(self) -> None:
        self.app.stop()

    def close(self) -> None:
        self.app.close()

    def registered(self) -> dict[str, dict]:
        return self.app.call(lambda: json.loads(json.dumps(self.services)))

    def statuses(self) -> dict[str, str]:
        return self.app.call(lambda: {i: _status(s) for i, s in self.services.items()})

    # --- internals (server loop) -----------------------------------------------------
    def _bump(self) -> None:
        self.index += 1
        self._changed.set()
        self._changed = asyncio.Event()

    def _make_app(self) -> web.Application:
        app = web.Application()
        app.router.add_put("/v1/agent/service/register", self._register)
        app.router.add_put("/v1/agent/service/deregister/{id}", self._deregister)
        app.router.add_get("/v1/health/service/{name}", self._health)
        app.on_startup.append(self._start_checks)
        app.on_cleanup.append(self._stop_checks)
        return app

    async def _start_checks(self, _app) -> None:
        self._checker = asyncio.get_running_loop().create_task(self._run_checks())

    async def _stop_checks(self, _app) -> None:
        if self._checker is not None:
            self._checker.cancel()

    async def _run_checks(self) -> None:
        while True:
            for service in list(self.services.values()):
                for check in service["checks"]:
                    if not check.get("tcp"):
                        continue
                    host, _, port = check["tcp"].rpartition(":")
                    try:
                        timeout = go_duration(check.get("timeout"), 10.0)
                        async with asyncio.timeout(timeout):
                            _, writer = await asyncio.open_connection(host.strip("[]"),
                                                                      int(port))
                        writer.close()
                        status = "passing"
                    except (OSError, TimeoutError, ValueError):
                        status = "critical"
                    if status != check["status"]:
                        check["status"] = status
                        self._bump()
                        service["modify_index"] = self.index
            await asyncio.sleep(self.check_every)

    def _token(self, request: web.Request) -> bool | None:
        """None: ACLs disabled; True: the configured token; False: anonymous. Raises 403
        for a token that does not exist."""
        if self.acl_token is None:
            return None
        token = (request.headers.get("X-Consul-Token")
                 or request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
                 or request.query.get("token"))
        if not token:
            return False
        if token != self.acl_token:
            raise web.HTTPForbidden(text="ACL not found")
        return True

    def _log(self, request: web.Request, token: bool | None) -> None:
        self.requests.append((request.method, request.path, dict(request.query), token))

    async def _register(self, request: web.Request) -> web.Response:
        token = self._token(request)
        self._log(request, token)
        if token is False:
            raise web.HTTPForbidden(text="Permission denied")
        try:
            body = _fold(json.loads(await request.read()))
            name = body["name"]
            checks = list(body.get("checks") or []) + ([body["check"]] if body.get("check")
                                                       else [])
            for check in checks:
                go_duration(check.get("interval"), 10.0)
                go_duration(check.get("timeout"), 10.0)
                check["status"] = check.get("status") or "critical"  # a new check: critical
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise web.HTTPBadRequest(text=f"Request decode failed: {exc}") from None
        service_id = body.get("id") or name
        self._bump()
        self.services[service_id] = {
            "id": service_id, "name": name, "address": body.get("address") or "",
            "port": body.get("port") or 0, "tags": body.get("tags") or [],
            "meta": body.get("meta") or {}, "checks": checks,
            "modify_index": self.index,
        }
        return web.Response(status=200)

    async def _deregister(self, request: web.Request) -> web.Response:
        token = self._token(request)
        self._log(request, token)
        if token is False:
            raise web.HTTPForbidden(text="Permission denied")
        if self.services.pop(request.match_info["id"], None) is None:
            raise web.HTTPNotFound(text=f'Unknown service ID "{request.match_info["id"]}"')
        self._bump()
        return web.Response(status=200)

    def _entries(self, name: str, passing: bool) -> list[dict]:
        out = []
        for s in self.services.values():
            if s["name"] != name or (passing and _status(s) != "passing"):
                continue
            checks = [{"Node": self.node, "CheckID": "serfHealth", "Name": "Serf Health Status",
                       "Status": "passing", "ServiceID": "", "ServiceName": ""}]
            for i, check in enumerate(s["checks"], 1):
                check_id = f"service:{s['id']}" + (f":{i}" if len(s["checks"]) > 1 else "")
                checks.append({"Node": self.node, "CheckID": check_id,
                               "Name": f"Service '{name}' check", "Status": check["status"],
                               "ServiceID": s["id"], "ServiceName": name})
            out.append({
                "Node": {"ID": "0d6d4c5c-0000-4000-8000-000000000001", "Node": self.node,
                         "Address": self.node_address, "Datacenter": "dc1",
                         "TaggedAddresses": {"lan": self.node_address}, "Meta": {}},
                "Service": {"ID": s["id"], "Service": name, "Tags": s["tags"],
                            "Address": s["address"], "Port": s["port"], "Meta": s["meta"],
                            "ModifyIndex": s["modify_index"]},
                "Checks": checks,
            })
        return out

    async def _health(self, request: web.Request) -> web.Response:
        token = self._token(request)
        self._log(request, token)
        name = request.match_info["name"]
        passing = "passing" in request.query and request.query["passing"] not in ("0", "false")
        try:
            index = int(request.query.get("index") or 0)
            wait = min(go_duration(request.query.get("wait"), 300.0), 600.0)
        except ValueError as exc:
            raise web.HTTPBadRequest(text=str(exc)) from None
        if index and index >= self.index:
            changed = self._changed
            # also wakes on changes to other services, as Consul's index may (documented)
            with_jitter = wait + random.uniform(0, wait / 16)
            try:
                async with asyncio.timeout(with_jitter):
                    await changed.wait()
            except TimeoutError:
                pass
        headers = {"X-Consul-Index": str(self.index), "X-Consul-KnownLeader": "true",
                   "X-Consul-LastContact": "0"}
        entries = self._entries(name, passing)
        if token is False:
            entries = []
            headers["X-Consul-Results-Filtered-By-ACLs"] = "true"
        return web.json_response(entries, headers=headers)
