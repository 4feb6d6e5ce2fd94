"""One rainbridge cluster member for the cluster benchmark: a ``ClusterNode`` on uvloop.

    python bench/cluster/member.py NAME IP PORT PROFILE [SEED_IP]

Speaks on stdout, one line each, which the harness timestamps when it reads them (as it
does Serf's log lines, so both sides are timed the same way):

    READY                       started, and joined SEED_IP if given
    EV join|failed|left NAME    a membership event (as Serf's EventMemberJoin/Failed/Leave)
    STATS {json}                on SIGUSR1: the node's and the state machine's counters

SIGINT or SIGTERM: leave gracefully (bounded), close, exit 0. ``RB_BENCH_CONFIG`` (JSON)
replaces profile fields, e.g. ``{"ping_retransmits": 0}`` for memberlist's probe.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time

from rainbridge.cluster.config import MembershipConfig
from rainbridge.cluster.events import EventKind, MemberEvent
from rainbridge.cluster.messages import NodeState
from rainbridge.cluster.node import ClusterNode

JOIN_TIMEOUT_S = 20.0
LEAVE_TIMEOUT_S = 5.0


def _say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _on_event(event: MemberEvent) -> None:
    if event.kind == EventKind.JOIN:
        _say(f"EV join {event.member.name}")
    elif event.kind == EventKind.LEAVE:
        kind = "left" if event.member.state == NodeState.LEFT else "failed"
        _say(f"EV {kind} {event.member.name} ({event.reason})")
    elif event.kind == EventKind.SUSPECT:
        _say(f"EV suspect {event.member.name} ({event.reason})")


async def main(name: str, ip: str, port: int, profile: str, seed: str | None) -> None:
    config = MembershipConfig.profile(profile)  # type: ignore[arg-type]
    config = config.replace(**json.loads(os.environ.get("RB_BENCH_CONFIG") or "{}"))
    node = ClusterNode(name, (ip, port), config=config, on_event=_on_event)
    await node.start()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    def stats() -> None:
        assert node.membership is not None
        merged = {**node.stats, **{f"m.{k}": v for k, v in node.membership.stats.items()},
                  "local_health": node.membership.local_health}
        _say("STATS " + json.dumps(merged))

    loop.add_signal_handler(signal.SIGUSR1, stats)
    if seed:
        deadline = time.monotonic() + JOIN_TIMEOUT_S
        while await node.join([(seed, port)]) == 0:
            if time.monotonic() > deadline or stop.is_set():
                _say(f"FAILED join {seed}: {node.last_push_pull_error}")
                await node.close()
                sys.exit(1)
            await asyncio.sleep(0.2)
    _say("READY")
    await stop.wait()
    await node.leave(LEAVE_TIMEOUT_S)
    await node.close()


if __name__ == "__main__":
    args = sys.argv[1:]
    runner = asyncio.run
    try:
        import uvloop

        runner = uvloop.run  # as `rainbridge serve` runs
    except ImportError:
        pass
    runner(main(args[0], args[1], int(args[2]), args[3], args[4] if len(args) > 4 else None))
