"""A 3/2 network partition between real processes, and its heal, in network namespaces.

The test builds its own network: a hub namespace with a bridge, and five member namespaces,
each linked to the bridge by a veth pair and holding one address of the private test subnet
10.231.0.0/24 (nothing is added to the machine's own namespace, and no machine address is
used or advertised). Each namespace runs one cluster member: a small script (``MEMBER``
below) around an in-process ``ClusterNode`` that prints its member table as a JSON line
whenever it changes. nftables rules in the members' namespaces drop every packet (UDP and
TCP) from the other side to cut the split; deleting the rules heals it. Nothing is
restarted: the members find each other again by themselves (reconnect: push-pull with a
random failed member), which is what the test is about.

Timings (LAN profile, shortened so the test takes ~30 s): 0.5 s probes, 0.2 s probe
timeout, suspicion ×3 (N = 5: 1.5 s with the one expected confirmation, 9 s without),
0.1 s gossip, 1 s TCP timeout (connections into the other side fail fast), reconnect every
2 s, push-pull every 5 s, dead members reaped after 5 s (so the split outlasts reaping and
the heal has to go through the reconnect list, the harder path). Every wait is bounded;
the namespaces are removed in a finalizer whatever happens.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from netns_support import network, unavailable

N = 5
SUBNET = "10.231.0"
IPS = [f"{SUBNET}.{11 + i}" for i in range(N)]
PORT = 7946
LEFT, RIGHT = [0, 1, 2], [3, 4]
TIMING = {
    "probe_interval": 0.5,
    "probe_timeout": 0.2,
    "suspicion_mult": 3,
    "gossip_interval": 0.1,
    "tcp_timeout": 1.0,
    "reconnect_interval": 2.0,
    "push_pull_interval": 5.0,
    "gossip_to_the_dead_time": 5.0,
}
FORM = 20.0  # join through one seed: a second or two; a missed gossip waits for push-pull
# Each side probes the other within a few (health-scaled) intervals, the suspicion runs
# 1.5-9 s, the death spreads: ~5 s typically; the 2-member side probes up to 8x slower.
SPLIT = 40.0
HOLD = 8.0  # past reaping (5 s) on both sides
HEAL = 30.0  # reconnect within ~2 s, then refutations and gossip

MEMBER = r'''
import asyncio, json, os, signal, sys, time
from rainbridge.cluster.config import MembershipConfig
from rainbridge.cluster.node import ClusterNode

async def main(name, ip, port, seed, timing):
    node = ClusterNode(name, (ip, port), config=MembershipConfig(**json.loads(timing)))
    await node.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    if seed != ip:
        deadline = time.monotonic() + 20
        while await node.join([(seed, port)]) == 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
    last, last_at = None, 0.0
    while not stop.is_set():
        m = node.membership
        view = {
            "members": {x.name: x.state.name.lower() for x in node.members()},
            "incarnation": m.incarnation,
            "stats": {k: m.stats[k] for k in ("reconnects", "suspicions", "deaths", "refutations")},
        }
        if view != last or time.monotonic() - last_at > 1.0:
            print(json.dumps({"pid": os.getpid(), **view}), flush=True)
            last, last_at = view, time.monotonic()
        try:
            await asyncio.wait_for(stop.wait(), 0.1)
        except TimeoutError:
            pass
    await node.close()

asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5]))
'''


class Member:
    def __init__(self, index: int, ns: str, script: Path, log: Path) -> None:
        self.name = f"p{index}"
        self.log = log
        cmd = ["ip", "netns", "exec", ns, sys.executable, str(script), self.name, IPS[index],
               str(PORT), IPS[0], json.dumps(TIMING)]
        with log.open("w") as out:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)

    def view(self) -> dict:
        lines = self.log.read_text(errors="replace").splitlines()
        for line in reversed(lines):
            if line.startswith("{"):
                try:
                    return json.loads(line)
                except ValueError:
                    continue  # a line being written
        if self.proc.poll() is not None:
            raise AssertionError(f"{self.name} exited:\n" + "\n".join(lines[-20:]))
        return {"members": {}}

    def alive(self) -> set[str]:
        return {n for n, s in self.view()["members"].items() if s == "alive"}

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)


@pytest.fixture
def net():
    with network(IPS) as lab:
        yield lab


@pytest.mark.parametrize(("ci", "outcome"), [("true", pytest.fail.Exception), ("1", pytest.fail.Exception),
                                             ("", pytest.skip.Exception), ("false", pytest.skip.Exception),
                                             (None, pytest.skip.Exception)])
def test_missing_namespaces_fail_in_ci_and_skip_elsewhere(ci, outcome):
    environ = {} if ci is None else {"CI": ci}
    with pytest.raises(outcome) as info:
        unavailable("`nft` is not installed", environ)
    assert "`nft` is not installed" in str(info.value)


@pytest.fixture
def members(net, tmp_path):
    script = tmp_path / "member.py"
    script.write_text(MEMBER)
    started: list[Member] = []
    try:
        for i, ns in enumerate(net.members):
            started.append(Member(i, ns, script, tmp_path / f"p{i}.log"))
            time.sleep(0.1)  # stagger the interpreters' start on a 2-core machine
        yield started
    finally:
        for m in started:
            m.stop()


def wait_for(cond, timeout: float, what: str) -> float:
    start = time.monotonic()
    last = None
    while time.monotonic() - start < timeout:
        last = cond()
        if last is True:
            return time.monotonic() - start
        time.sleep(0.1)
    raise AssertionError(f"{what}: not within {timeout:.0f}s (last: {last})")


def sees_exactly(members: list[Member], group: list[int]):
    """Every member of ``group`` sees exactly ``group`` alive (True), else what they see."""
    want = {members[i].name for i in group}
    seen = {members[i].name: sorted(members[i].alive()) for i in group}
    return True if all(set(s) == want for s in seen.values()) else seen


@pytest.mark.timeout(180)
def test_a_3_2_partition_splits_the_cluster_and_heals_without_restarts(net, members):
    everyone = list(range(N))
    wait_for(lambda: sees_exactly(members, everyone), FORM, "five members alive everywhere")
    pids = [m.view()["pid"] for m in members]
    assert pids == [m.proc.pid for m in members]  # `ip netns exec` execs the interpreter

    net.cut(LEFT, RIGHT)
    net.cut(RIGHT, LEFT)
    def split_views():
        left, right = sees_exactly(members, LEFT), sees_exactly(members, RIGHT)
        return True if left is True and right is True else (left, right)

    split = wait_for(split_views, SPLIT, "each side sees only itself alive")
    for side, other in ((LEFT, RIGHT), (RIGHT, LEFT)):
        for i in side:
            view = members[i].view()["members"]
            for j in other:  # declared dead (or suspect, or already reaped): not alive
                assert view.get(members[j].name) in (None, "dead", "suspect"), (i, view)
    time.sleep(HOLD)
    for side, other in ((LEFT, RIGHT), (RIGHT, LEFT)):
        for i in side:
            view = members[i].view()["members"]
            assert all(view.get(members[j].name) != "alive" for j in other), (i, view)

    net.heal()
    healed = wait_for(lambda: sees_exactly(members, everyone), HEAL,
                      "one cluster of five again after the heal")
    # nothing was restarted: the same processes, still running, found each other again
    for m, pid in zip(members, pids, strict=True):
        assert m.proc.poll() is None and m.view()["pid"] == pid
    views = [m.view() for m in members]
    assert sum(v["stats"]["reconnects"] for v in views) > 0, views
    assert all(v["stats"]["deaths"] >= len(RIGHT) for v in views), views
    print(f"split seen in {split:.1f}s, healed in {healed:.1f}s")
