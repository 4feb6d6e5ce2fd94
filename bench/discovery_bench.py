"""Time from start to full membership, per discovery backend (issue 16).

    .venv/bin/python bench/discovery_bench.py [--sizes 3,10] [--trials 3]
                                              [--backends static,dns,etcd,udp,consul,kubernetes] [--out FILE]

N members (``bench/cluster/discovery_member.py``: a ``ClusterService`` built from
``cluster_config`` as the gateway builds it, without HTTP and store) start together from
nothing on 127.0.0.120 … (one gossip port for all, as pods of one chart), each knowing only
its backend's configuration; the clock runs from the first launch until every member's view
holds N alive members ("full"). Also: the same from the last member's ``STARTED`` (Python
start-up and imports excluded), and the last member's readiness (``SYNCED``).

Backends, each against a real server where one runs here:
- **static**: ``peers`` lists all N addresses.
- **dns**: real dnsmasq on a loopback port, A records of ``rb.test`` for all N (a headless
  service with ``publishNotReadyAddresses``), ``dns_server`` pointed at it.
- **etcd**: real etcd (Debian ``etcd-server``), fresh data dir per trial.
- **udp**: signed broadcasts on 127.255.255.255 (every socket on the port hears them).
- **consul**: ``tests/consul_api_server.py`` (the API test server; no Consul runs here).
  Its TCP checks run every 0.2 s (a real agent: the registered interval).
- **kubernetes**: ``tests/k8s_api_server.py`` (list + watch over TLS, a service account).
  The harness plays the kubelet: each pod is put Running and not Ready at launch, and Ready
  when its member reports ``SYNCED`` (readiness probe period 0; the chart's adds to it).
  The backend lists only Ready pods, so members that start together each find nobody at
  first, are ready alone, and meet at the next discovery round.

Timings are the defaults (``lan`` profile, Bifrost gossip mapping, discovery every 5 s).
Writes JSON (default ``bench/results/discovery.json``) and prints a table.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
MEMBER = BENCH / "cluster" / "discovery_member.py"
DEFAULT_OUT = BENCH / "results" / "discovery.json"
FULL_BOUND_S = 90.0  # a trial that has not converged by then is recorded as failed
SECRET = "discovery-bench-secret-0123456789abcdef"


def free_port(ip: str = "127.0.0.1") -> int:
    """A port free for TCP and UDP on ``ip``."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u, socket.socket() as t:
            u.bind((ip, 0))
            port = u.getsockname()[1]
            try:
                t.bind((ip, port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port")


class Dnsmasq:
    """dnsmasq answering ``*.test`` from a hosts file, no upstream, no cache."""

    def __init__(self, tmp: Path, records: dict[str, list[str]]) -> None:
        self.port = free_port()
        hosts = tmp / "hosts"
        hosts.write_text("".join(f"{ip} {name}\n" for name, ips in records.items() for ip in ips))
        args = [shutil.which("dnsmasq") or "dnsmasq", "--no-daemon", f"--port={self.port}",
                "--listen-address=127.0.0.1", "--bind-interfaces", "--no-resolv", "--no-hosts",
                "--conf-file=/dev/null", "--pid-file=", "--user=root", f"--addn-hosts={hosts}",
                "--local=/test/", "--cache-size=0"]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        _wait(lambda: _udp_dns_answers(self.port), 10, "dnsmasq")

    def stop(self) -> None:
        _stop(self.proc)


def _udp_dns_answers(port: int) -> bool:
    query = bytes.fromhex("12340100000100000000000002726204746573740000010001")  # rb.test A
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(0.3)
        try:
            s.sendto(query, ("127.0.0.1", port))
            return len(s.recv(512)) > 12
        except OSError:
            return False


class Etcd:
    def __init__(self, tmp: Path) -> None:
        self.port, peer_port = free_port(), free_port()
        client, peer = f"http://127.0.0.1:{self.port}", f"http://127.0.0.1:{peer_port}"
        args = [shutil.which("etcd") or "etcd", "--name", "b", "--data-dir", str(tmp / "etcd"),
                "--listen-client-urls", client, "--advertise-client-urls", client,
                "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
                "--initial-cluster", f"b={peer}", "--log-level", "error"]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.endpoint = client

        def healthy() -> bool:
            try:
                with urllib.request.urlopen(client + "/health", timeout=1) as r:
                    return b'"true"' in r.read()
            except OSError:
                return False

        _wait(healthy, 30, "etcd")

    def stop(self) -> None:
        _stop(self.proc)


class Kubernetes:
    def __init__(self, tmp: Path) -> None:
        sys.path.insert(0, str(ROOT / "tests"))
        from k8s_api_server import KubernetesApiServer  # the API test server (a thread)

        self.api = KubernetesApiServer(tmp)
        self.api.start()
        self.environ = self.api.environ

    def pod(self, i: int, ip: str, ready: bool) -> None:
        self.api.put_pod(f"rb-{i}", ip, {"app": "rb-bench"}, ready=ready)

    def stop(self) -> None:
        self.api.close()


class Consul:
    def __init__(self, tmp: Path) -> None:
        sys.path.insert(0, str(ROOT / "tests"))
        from consul_api_server import ConsulAgent  # the API test server (aiohttp, a thread)

        self.agent = ConsulAgent(tmp)
        self.agent.start()
        self.address = self.agent.address

    def stop(self) -> None:
        self.agent.close()


def _wait(cond, bound: float, what: str) -> None:
    deadline = time.monotonic() + bound
    while not cond():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not start within {bound:.0f} s")
        time.sleep(0.1)


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def configs(backend: str, n: int, ips: list[str], port: int, server) -> list[dict]:
    out = []
    for i in range(n):
        c: dict = {"enabled": True, "node_name": f"d{i}", "gossip": {"port": port}}
        if backend == "static":
            c["peers"] = [f"{x}:{port}" for x in ips]
        elif backend == "dns":
            c["discovery"] = {"enabled": True, "type": "dns", "dns_names": ["rb.test"],
                              "dns_server": f"127.0.0.1:{server.port}"}
        elif backend == "etcd":
            c["discovery"] = {"enabled": True, "type": "etcd", "service_name": "rb-bench",
                              "etcd_endpoints": [server.endpoint]}
        elif backend == "udp":
            c["discovery"] = {"enabled": True, "type": "udp", "service_name": "rb-bench",
                              "allowed_address_space": ["127.0.0.0/8"],
                              "udp_broadcast_port": server, "udp_secret": SECRET}
        elif backend == "kubernetes":
            c["discovery"] = {"enabled": True, "type": "kubernetes",
                              "k8s_label_selector": "app=rb-bench"}
        elif backend == "consul":
            c["discovery"] = {"enabled": True, "type": "consul", "service_name": "rb-bench",
                              "consul_address": server.address}
        out.append(c)
    return out


async def trial(backend: str, n: int, tmp: Path) -> dict:
    ips = [f"127.0.0.{120 + i}" for i in range(n)]
    port = free_port(ips[0])
    server = None
    if backend == "dns":
        server = Dnsmasq(tmp, {"rb.test": ips})
    elif backend == "etcd":
        server = Etcd(tmp)
    elif backend == "consul":
        server = Consul(tmp)
    elif backend == "kubernetes":
        server = Kubernetes(tmp)
    elif backend == "udp":
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("0.0.0.0", 0))
            server = s.getsockname()[1]
    procs: list[asyncio.subprocess.Process] = []
    started: dict[int, float] = {}
    synced: dict[int, float] = {}
    full: dict[int, float] = {}
    try:
        env = {**os.environ, **getattr(server, "environ", {})}
        t0 = time.monotonic()
        for i, cfg in enumerate(configs(backend, n, ips, port, server)):
            if isinstance(server, Kubernetes):
                server.pod(i, ips[i], ready=False)
            procs.append(await asyncio.create_subprocess_exec(
                sys.executable, str(MEMBER), json.dumps(cfg), ips[i], env=env,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
                start_new_session=True))

        async def read(i: int, proc: asyncio.subprocess.Process) -> None:
            assert proc.stdout is not None
            async for raw in proc.stdout:
                line, at = raw.decode().strip(), time.monotonic() - t0
                if line == "STARTED":
                    started[i] = at
                elif line == "SYNCED":
                    synced[i] = at
                    if isinstance(server, Kubernetes):  # the kubelet's readiness probe
                        await asyncio.to_thread(server.pod, i, ips[i], True)
                elif line.startswith("ALIVE "):
                    if int(line.split()[1]) >= n:
                        full.setdefault(i, at)
                    else:
                        full.pop(i, None)  # lost someone again: not full yet

        readers = [asyncio.create_task(read(i, p)) for i, p in enumerate(procs)]
        deadline = t0 + FULL_BOUND_S
        while (len(full) < n or len(synced) < n) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        ok = len(full) == n
        result = {
            "ok": ok,
            "full_s": round(max(full.values()), 3) if ok else None,
            "full_after_started_s": (round(max(full.values()) - max(started.values()), 3)
                                     if ok and len(started) == n else None),
            "last_started_s": round(max(started.values()), 3) if started else None,
            "last_synced_s": round(max(synced.values()), 3) if len(synced) == n else None,
        }
    finally:
        for p in procs:
            with contextlib.suppress(ProcessLookupError):
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                await asyncio.wait_for(p.wait(), 10)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    p.kill()
                await p.wait()
        for r in locals().get("readers", []):
            r.cancel()
        if server is not None and not isinstance(server, int):
            server.stop()
    return result


def summary(rows: list[dict]) -> dict:
    done = [r for r in rows if r["ok"]]

    def stat(key: str) -> dict:
        xs = [r[key] for r in done if r[key] is not None]
        if not xs:
            return {}
        return {"median": round(statistics.median(xs), 2), "max": round(max(xs), 2)}

    return {"trials": len(rows), "converged": len(done), "full_s": stat("full_s"),
            "full_after_started_s": stat("full_after_started_s"),
            "last_started_s": stat("last_started_s"), "last_synced_s": stat("last_synced_s")}


def table(results: list[dict]) -> str:
    head = (f"{'backend':10} {'N':>3} {'ok':>5} {'full med':>9} {'full max':>9} "
            f"{'after start med':>16} {'max':>6} {'ready max':>10}")
    lines = [head]
    for r in results:
        s = r["summary"]
        f, a, y = s["full_s"], s["full_after_started_s"], s["last_synced_s"]
        lines.append(
            f"{r['backend']:10} {r['n']:>3} {s['converged']:>2}/{s['trials']:<2} "
            f"{f.get('median', float('nan')):>9.2f} {f.get('max', float('nan')):>9.2f} "
            f"{a.get('median', float('nan')):>16.2f} {a.get('max', float('nan')):>6.2f} "
            f"{y.get('max', float('nan')):>10.2f}")
    return "\n".join(lines)


async def run(args: argparse.Namespace) -> list[dict]:
    results = []
    for backend in args.backends.split(","):
        for n in (int(x) for x in args.sizes.split(",")):
            rows = []
            for t in range(args.trials):
                tmp = Path(tempfile.mkdtemp(prefix=f"rb-disc-{backend}-{n}-"))
                try:
                    row = await trial(backend, n, tmp)
                finally:
                    shutil.rmtree(tmp, ignore_errors=True)
                rows.append(row)
                print(f"[{time.strftime('%H:%M:%S')}] {backend} N={n} trial {t + 1}: {row}",
                      flush=True)
            results.append({"backend": backend, "n": n, "trials": rows, "summary": summary(rows)})
    return results


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="3,10")
    p.add_argument("--trials", type=int, default=3)
    p.add_argument("--backends", default="static,dns,etcd,udp,consul,kubernetes")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = p.parse_args()
    machine = {"date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
               "cpu_count": os.cpu_count(), "load_avg_start": os.getloadavg()}
    results = asyncio.run(run(args))
    machine["load_avg_end"] = os.getloadavg()
    text = table(results)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": machine, "settings": vars(args) | {"out": str(args.out)},
                                    "results": results, "table": text}, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
