"""One mDNS discovery member, run inside a test's network namespace by
``test_discovery_mdns``: ``python mdns_member.py IP PORT NODE SERVICE``. Prints a JSON line
``{"candidates": [[ip, port]...], "nodes": {...}, "healthy": bool}`` whenever what it sees
changes, and ``contacts``: how many TCP connections and UDP packets reached its gossip port
(a stranger's proof that nobody dialled it); stops (sending its goodbye) when its standard
input closes or says ``stop``."""

from __future__ import annotations

import asyncio
import json
import socket
import sys

from rainbridge.cluster.discovery.mdns import make
from rainbridge.config.schema import DiscoveryConfig


async def main(ip: str, port: int, node: str, service: str) -> None:
    config = DiscoveryConfig(enabled=True, type="mdns", mdns_service=service)
    d = make(config, (ip, port), node, {})
    await d.start()
    loop = asyncio.get_running_loop()
    contacts = [0]

    def count(*_args) -> None:
        contacts[0] += 1

    class Udp(asyncio.DatagramProtocol):
        def datagram_received(self, data, addr) -> None:
            count()

    tcp = await asyncio.start_server(lambda r, w: (count(), w.close()), ip, port)
    udp, _ = await loop.create_datagram_endpoint(Udp, local_addr=(ip, port),
                                                 family=socket.AF_INET)
    stdin = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
    stop = asyncio.ensure_future(stdin.readline())
    last = None
    try:
        for _ in range(3000):  # 5 minutes at most
            seen = {"candidates": sorted(await d.candidates()),
                    "nodes": {f"{a[0]}:{a[1]}": n for a, n in sorted(d.nodes.items())},
                    "healthy": d.health.healthy, "contacts": contacts[0]}
            if seen != last:
                print(json.dumps(seen), flush=True)
                last = seen
            done, _ = await asyncio.wait([stop], timeout=0.1)
            if done:
                break
    finally:
        stop.cancel()
        tcp.close()
        udp.close()
        await d.stop()
        print(json.dumps({"stopped": True}), flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]))
