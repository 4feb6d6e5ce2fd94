"""A Kubernetes API server for tests, serving only what pod discovery uses: list and watch
of ``/api/v1/namespaces/{namespace}/pods``. No real API server can run here; this one
follows the public API documentation:

- API concepts (https://kubernetes.io/docs/reference/using-api/api-concepts/): a list
  returns a ``PodList`` whose ``metadata.resourceVersion`` is the collection's version; a
  watch (``?watch=1&resourceVersion=N``) streams newline-delimited JSON watch events
  ``{"type": ADDED|MODIFIED|DELETED|BOOKMARK|ERROR, "object": ...}`` of changes after N,
  ending after ``timeoutSeconds``; ``resourceVersion`` unset or ``0`` starts with synthetic
  ADDED events of the current state; "When the requested resourceVersion is too old ... the
  server responds with 410 Gone" (on a watch: an ERROR event carrying a ``Status`` with
  ``code: 410, reason: Expired``); ``allowWatchBookmarks=true`` may bring BOOKMARK events
  whose object holds only ``metadata.resourceVersion``.
- Watch with a label selector: an object modified into the selection arrives as ADDED, out
  of it as DELETED (the watch cache's filtering).
- Label selectors (https://kubernetes.io/docs/concepts/overview/working-with-objects/labels/):
  equality-based ``k=v``, ``k==v``, ``k!=v`` and set-based ``k in (a,b)``, ``k notin (a,b)``,
  ``k``, ``!k``, comma = AND; a malformed selector is 400 BadRequest.
- Authentication (https://kubernetes.io/docs/reference/access-authn-authz/authentication/):
  ``Authorization: Bearer <service account token>`` over TLS, else 401 with a ``Status``;
  RBAC allows ``pods: get, list, watch`` in the granted namespaces only, else 403.
- Pod (https://kubernetes.io/docs/reference/kubernetes-api/workload-resources/pod-v1/):
  ``status.phase``, ``status.podIP``, ``status.conditions[type=Ready]``,
  ``metadata.deletionTimestamp``.

It writes the pod's service account folder (``token``, ``ca.crt``, ``namespace``) and
gives the environment a pod would have. ``requests`` records each request (verb path,
query) so tests can assert what was asked; ``stop``/``start`` take the API away and back.
"""

from __future__ import annotations

import asyncio
import json
import re
import ssl
import uuid
from pathlib import Path

from aiohttp import web

from backend_support import ThreadedApp, make_tls


def status(code: int, reason: str, message: str) -> dict:
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason, "code": code}


_TERM = re.compile(
    r"^\s*(?:(?P<not>!)\s*(?P<nkey>[\w./-]+)"
    r"|(?P<skey>[\w./-]+)\s+(?P<op>in|notin)\s*\((?P<values>[^)]*)\)"
    r"|(?P<ekey>[\w./-]+)\s*(?P<eop>==|=|!=)\s*(?P<evalue>[\w./-]*)"
    r"|(?P<key>[\w./-]+))\s*$")


def parse_selector(text: str):
    """A predicate on a labels dict; ValueError for a malformed selector."""
    terms, depth, start = [], 0, 0
    for i, ch in enumerate(text + ","):
        depth += ch == "("
        depth -= ch == ")"
        if ch == "," and depth == 0:
            part = text[start:i]
            start = i + 1
            if not part.strip():
                if text.strip():
                    raise ValueError("empty term")
                continue
            m = _TERM.match(part)
            if m is None:
                raise ValueError(f"unable to parse requirement: {part!r}")
            terms.append(m.groupdict())

    def matches(labels: dict) -> bool:
        for t in terms:
            if t["nkey"] is not None:
                ok = t["nkey"] not in labels
            elif t["skey"] is not None:
                values = {v.strip() for v in t["values"].split(",")}
                ok = (labels.get(t["skey"]) in values) if t["op"] == "in" else (
                    labels.get(t["skey"]) not in values)
            elif t["ekey"] is not None:
                same = labels.get(t["ekey"]) == t["evalue"]
                ok = (t["ekey"] in labels and same) if t["eop"] != "!=" else not same
            else:
                ok = t["key"] in labels
            if not ok:
                return False
        return True

    return matches


class KubernetesApiServer:
    """Pods in namespaces, a resourceVersion counter, the event history since the oldest
    retained version, and open watches. State changes run on the server's loop."""

    def __init__(self, tmp: Path, namespace: str = "rainbridge", token: str = "sa-token-1",
                 host: str = "127.0.0.1", granted: tuple[str, ...] | None = None) -> None:
        self.namespace = namespace
        self.token = token
        self.granted = set(granted or (namespace,))
        ca, cert, key = make_tls(tmp / "k8s-tls", host)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert, key)
        self.serviceaccount_dir = tmp / "serviceaccount"
        self.serviceaccount_dir.mkdir(exist_ok=True)
        (self.serviceaccount_dir / "token").write_text(token)
        (self.serviceaccount_dir / "ca.crt").write_bytes(ca.read_bytes())
        (self.serviceaccount_dir / "namespace").write_text(namespace)
        self.rv = 100
        self.oldest = 100  # watches from an older version get 410 Gone
        self.pods: dict[tuple[str, str], dict] = {}
        self.history: list[tuple[int, str, dict | None, dict | None]] = []  # rv, type, new, old
        self.watchers: set[asyncio.Queue] = set()
        self.requests: list[tuple[str, str, dict]] = []
        self.app = ThreadedApp(self._make_app, host, context)
        self.app.on_stop.append(self._end_watches)

    # --- what a pod sees -------------------------------------------------------------
    @property
    def environ(self) -> dict[str, str]:
        return {"KUBERNETES_SERVICE_HOST": self.app.host,
                "KUBERNETES_SERVICE_PORT": str(self.app.port),
                "RAINBRIDGE_K8S_SERVICEACCOUNT_DIR": str(self.serviceaccount_dir)}

    def start(self) -> None:
        self.app.start()

    def stop(self) -> None:
        self.app.stop()

    def close(self) -> None:
        self.app.close()

    # --- state changes (thread-safe) -------------------------------------------------
    def put_pod(self, name: str, ip: str | None, labels: dict[str, str], *, phase: str = "Running",
                ready: bool = True, namespace: str | None = None, deleting: bool = False) -> None:
        self.app.call(self._put, namespace or self.namespace, name, ip, labels, phase, ready,
                      deleting)

    def delete_pod(self, name: str, namespace: str | None = None) -> None:
        self.app.call(self._delete, namespace or self.namespace, name)

    def compact(self) -> None:
        """Forget the history (etcd compaction) and end open watches, so a client resuming
        from a version it saw gets 410 Gone."""
        def run():
            self.history.clear()
            self.oldest = self.rv + 1
            self._end_watches()
        self.app.call(run)

    def bookmark(self) -> None:
        """A BOOKMARK to every watch that allowed bookmarks."""
        self.app.call(lambda: self._publish((self.rv, "BOOKMARK", None, None)))

    def end_watches(self) -> None:
        """End open watches as ``timeoutSeconds`` would (the client resumes)."""
        self.app.call(self._end_watches)

    def open_watches(self) -> int:
        return self.app.call(lambda: len(self.watchers))

    def watch_versions(self) -> list[str]:
        return [q.get("resourceVersion", "") for verb, _, q in list(self.requests)
                if verb == "WATCH"]

    # --- internals (server loop) -----------------------------------------------------
    def _put(self, ns, name, ip, labels, phase, ready, deleting) -> None:
        old = self.pods.get((ns, name))
        self.rv += 1
        uid = old["metadata"]["uid"] if old else str(uuid.uuid4())
        pod = {
            "kind": "Pod", "apiVersion": "v1",
            "metadata": {"name": name, "namespace": ns, "uid": uid, "labels": dict(labels),
                         "resourceVersion": str(self.rv),
                         "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"containers": [{"name": "gateway", "image": "rainbridge"}]},
            "status": {"phase": phase,
                       "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]},
        }
        if deleting:
            pod["metadata"]["deletionTimestamp"] = "2026-01-01T00:01:00Z"
        if ip:
            pod["status"]["podIP"] = ip
            pod["status"]["podIPs"] = [{"ip": ip}]
        self.pods[(ns, name)] = pod
        self._record("MODIFIED" if old else "ADDED", pod, old)

    def _delete(self, ns, name) -> None:
        old = self.pods.pop((ns, name), None)
        if old is None:
            return
        self.rv += 1
        gone = json.loads(json.dumps(old))
        gone["metadata"]["resourceVersion"] = str(self.rv)
        self._record("DELETED", gone, old)

    def _record(self, kind, new, old) -> None:
        entry = (self.rv, kind, new, old)
        self.history.append(entry)
        self._publish(entry)

    def _publish(self, entry) -> None:
        for q in self.watchers:
            q.put_nowait(entry)

    def _end_watches(self) -> None:
        for q in self.watchers:
            q.put_nowait(None)

    def _make_app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/api/v1/namespaces/{namespace}/pods", self._pods)
        app.router.add_route("*", "/{tail:.*}", self._not_found)
        return app

    async def _not_found(self, request: web.Request) -> web.Response:
        self.requests.append((request.method, request.path, dict(request.query)))
        return web.json_response(status(404, "NotFound", "the server could not find the "
                                         "requested resource"), status=404)

    async def _pods(self, request: web.Request) -> web.StreamResponse:
        ns = request.match_info["namespace"]
        q = dict(request.query)
        watching = q.get("watch", "").lower() in ("1", "true")
        self.requests.append(("WATCH" if watching else "LIST", request.path, q))
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return web.json_response(status(401, "Unauthorized", "Unauthorized"), status=401)
        if ns not in self.granted:
            verb = "watch" if watching else "list"
            return web.json_response(status(
                403, "Forbidden", f'pods is forbidden: User "system:serviceaccount:'
                f'{self.namespace}:default" cannot {verb} resource "pods" in API group "" '
                f'in the namespace "{ns}"'), status=403)
        try:
            matches = parse_selector(q.get("labelSelector", ""))
        except ValueError as exc:
            return web.json_response(status(400, "BadRequest", str(exc)), status=400)

        def selected(pod):
            return pod is not None and pod["metadata"]["namespace"] == ns and matches(
                pod["metadata"].get("labels", {}))

        if not watching:
            items = [p for (n, _), p in sorted(self.pods.items()) if n == ns and selected(p)]
            return web.json_response({"kind": "PodList", "apiVersion": "v1",
                                      "metadata": {"resourceVersion": str(self.rv)},
                                      "items": items})
        return await self._watch(request, q, selected)

    async def _watch(self, request, q, selected) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        bookmarks = q.get("allowWatchBookmarks", "").lower() in ("1", "true")
        timeout = float(q.get("timeoutSeconds") or 1800)
        queue: asyncio.Queue = asyncio.Queue()
        self.watchers.add(queue)

        async def send(kind, obj):
            await response.write(json.dumps({"type": kind, "object": obj}).encode() + b"\n")

        async def deliver(entry) -> None:
            rv, kind, new, old = entry
            if kind == "BOOKMARK":
                if bookmarks:
                    await send("BOOKMARK", {"kind": "Pod", "apiVersion": "v1",
                                            "metadata": {"resourceVersion": str(rv)}})
                return
            was, now = selected(old), selected(new)
            if kind == "DELETED":
                if was:
                    await send("DELETED", new)
            elif now and not was:
                await send("ADDED", new)
            elif was and not now:
                await send("DELETED", new)
            elif now:
                await send(kind, new)

        try:
            version = q.get("resourceVersion", "")
            if version in ("", "0"):
                for pod in [p for _, p in sorted(self.pods.items()) if selected(p)]:
                    await send("ADDED", pod)
            else:
                try:
                    since = int(version)
                except ValueError:
                    await send("ERROR", status(400, "BadRequest",
                                               f"invalid resource version: {version!r}"))
                    return response
                if since < self.oldest:
                    await send("ERROR", status(
                        410, "Expired", f"too old resource version: {since} ({self.oldest})"))
                    return response
                for entry in [e for e in self.history if e[0] > since]:
                    await deliver(entry)
            async with asyncio.timeout(timeout):
                while (entry := await queue.get()) is not None:
                    await deliver(entry)
        except (TimeoutError, ConnectionResetError):
            pass
        finally:
            self.watchers.discard(queue)
        return response
