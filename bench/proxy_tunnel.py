"""What an upstream proxy costs the upstream client (issue 14, proxy_config).

Against a minimal keep-alive HTTP origin in its own process (a fixed 2-byte answer, so the
proxy's share is not hidden behind the origin's work), on 127.0.0.1:

* **setup**: opening a new connection and sending one request on it: direct, through
  tinyproxy (HTTP CONNECT with Basic auth) and through microsocks (SOCKS5 with
  username/password); median and p99 over N fresh connections;
* **steady**: sequential requests on one kept-alive connection (direct, or one tunnel),
  requests per second and median latency: the per-request cost of relaying through the proxy
  (``--rounds`` runs per path, interleaved; the median run kept).

    .venv/bin/python bench/proxy_tunnel.py [--connections 300] [--seconds 2] [--rounds 5]

Needs tinyproxy and microsocks (Debian packages) and python-socks (``rainbridge[socks]``).
Prints a table and writes bench/results/proxy_tunnel.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rainbridge.upstream import HttpProxy, Socks5Proxy, UpstreamClient

HOST = "127.0.0.1"
USER, PASSWORD = "bench", "bench-pass-0123456789"
RESULTS = Path(__file__).resolve().parent / "results" / "proxy_tunnel.json"

ORIGIN = r'''
import asyncio, sys
ANSWER = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}"
async def serve(reader, writer):
    try:
        while True:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(ANSWER)
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    writer.close()
async def main():
    server = await asyncio.start_server(serve, "127.0.0.1", int(sys.argv[1]), backlog=1024)
    print("ready", flush=True)
    await server.serve_forever()
asyncio.run(main())
'''


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def wait_port(port: int, proc: subprocess.Popen, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args[0]} exited with {proc.returncode}")
        try:
            socket.create_connection((HOST, port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port} after {timeout}s")


def start(argv: list[str], port: int, log: Path) -> subprocess.Popen:
    proc = subprocess.Popen(argv, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    wait_port(port, proc)
    return proc


def head(port: int) -> bytes:
    return b"GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n\r\n" % port


async def setup_ms(proxy, origin_port: int, n: int) -> list[float]:
    """Each sample: a new client (so a new connection), one request, closed."""
    out = []
    for _ in range(n):
        client = UpstreamClient(connect_timeout=5)
        pool = client.origin(f"http://{HOST}:{origin_port}", proxy=proxy)
        started = time.perf_counter()
        await (await client.request(pool, head(origin_port), b"", 5)).read()
        out.append((time.perf_counter() - started) * 1000)
        await client.close()
    return out


async def steady(proxy, origin_port: int, seconds: float) -> tuple[float, float]:
    client = UpstreamClient(connect_timeout=5)
    pool = client.origin(f"http://{HOST}:{origin_port}", proxy=proxy)
    request = head(origin_port)
    await (await client.request(pool, request, b"", 5)).read()  # the connection (tunnel) is open
    latencies = []
    end = time.perf_counter() + seconds
    while (now := time.perf_counter()) < end:
        await (await client.request(pool, request, b"", 5)).read()
        latencies.append(time.perf_counter() - now)
    await client.close()
    return len(latencies) / seconds, statistics.median(latencies) * 1e6


def p99(values: list[float]) -> float:
    return statistics.quantiles(values, n=100)[98]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--connections", type=int, default=300)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--rounds", type=int, default=5, help="steady runs per path, interleaved (median kept)")
    args = parser.parse_args()
    for tool in ("tinyproxy", "microsocks"):
        if not shutil.which(tool):
            sys.exit(f"{tool} is not installed (apt-get install {tool})")
    work = Path(tempfile.mkdtemp(prefix="proxy-bench-"))
    procs: list[subprocess.Popen] = []
    try:
        origin_port, http_port, socks_port = free_port(), free_port(), free_port()
        procs.append(start([sys.executable, "-c", ORIGIN, str(origin_port)], origin_port, work / "origin.log"))
        conf = work / "tinyproxy.conf"
        conf.write_text(f"Port {http_port}\nListen {HOST}\nTimeout 30\nMaxClients 1000\nLogLevel Warning\n"
                        f"Allow {HOST}\nBasicAuth {USER} {PASSWORD}\nConnectPort {origin_port}\nDisableViaHeader Yes\n")
        procs.append(start(["tinyproxy", "-d", "-c", str(conf)], http_port, work / "tinyproxy.log"))
        procs.append(start(["microsocks", "-i", HOST, "-p", str(socks_port), "-u", USER, "-P", PASSWORD],
                           socks_port, work / "microsocks.log"))
        targets = {
            "direct": None,
            "http CONNECT (tinyproxy)": HttpProxy.from_url(f"http://{HOST}:{http_port}", USER, PASSWORD),
            "socks5 (microsocks)": Socks5Proxy.from_url(f"socks5://{HOST}:{socks_port}", USER, PASSWORD),
        }
        results = {}
        for name, proxy in targets.items():
            samples = asyncio.run(setup_ms(proxy, origin_port, args.connections))
            results[name] = {"setup_median_ms": round(statistics.median(samples), 3), "setup_p99_ms": round(p99(samples), 3)}
        runs: dict[str, list[tuple[float, float]]] = {name: [] for name in targets}
        for _ in range(args.rounds):  # interleaved, so drift and a noisy neighbour hit every path alike
            for name, proxy in targets.items():
                runs[name].append(asyncio.run(steady(proxy, origin_port, args.seconds)))
        for name, found in runs.items():
            results[name]["steady_rps"] = round(statistics.median(r for r, _ in found))
            results[name]["steady_median_us"] = round(statistics.median(m for _, m in found), 1)
        print(f"{'path':28} {'new conn + 1 req (ms)':>24} {'kept alive: req/s':>18} {'median (µs)':>12}")
        for name, r in results.items():
            print(f"{name:28} {r['setup_median_ms']:>11.3f} (p99 {r['setup_p99_ms']:6.3f}) {r['steady_rps']:>18} "
                  f"{r['steady_median_us']:>12.1f}")
        RESULTS.parent.mkdir(exist_ok=True)
        RESULTS.write_text(json.dumps({"date": time.strftime("%Y-%m-%d"), "connections": args.connections,
                                       "seconds": args.seconds, "rounds": args.rounds, "results": results}, indent=2) + "\n")
        print(f"written: {RESULTS}")
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
