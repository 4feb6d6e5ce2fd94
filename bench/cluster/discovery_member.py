"""One rainbridge cluster member built from a ``cluster_config`` (discovery included), for
the time-to-full-membership benchmark (``bench/discovery_bench.py``).

    python bench/cluster/discovery_member.py CONFIG_JSON HTTP_IP

The member is a ``ClusterService`` as the gateway builds it (peers, the discovery backend,
the address filter, the join loop), without the HTTP server and store, so that ten of them
fit a small machine. Says on stdout, one line each (the harness timestamps the lines):

    STARTED                 the service has started (sockets bound, backend started)
    ALIVE n                 n members alive in our view (each change)
    SYNCED                  readiness (``ClusterService.synced``)

SIGTERM or SIGINT: leave (bounded), exit 0. The environment is the backend's (a pod's
service account variables for kubernetes).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys

import msgspec

from rainbridge.cluster.messages import NodeState
from rainbridge.cluster.service import ClusterEnv, ClusterService
from rainbridge.config.schema import ClusterConfig

POLL_S = 0.02  # how often the view is looked at (the harness's resolution)


def _say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


async def main(config_text: str, http_ip: str) -> None:
    cfg = msgspec.convert(json.loads(config_text), ClusterConfig)
    service = ClusterService(cfg, ClusterEnv(http_host=http_ip, http_port=8000), environ=os.environ,
                             clock_interval=None)
    await service.start()
    _say("STARTED")
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    last, synced = -1, False
    while not stop.is_set():
        node = service.node
        assert node is not None
        alive = sum(1 for m in node.members() if m.state == NodeState.ALIVE)
        if alive != last:
            last = alive
            _say(f"ALIVE {alive}")
        if service.synced and not synced:
            synced = True
            _say("SYNCED")
        try:
            await asyncio.wait_for(stop.wait(), POLL_S)
        except TimeoutError:
            pass
    await service.stop()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
