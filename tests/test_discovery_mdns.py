"""mDNS discovery through zeroconf between network namespaces this test makes (three
members on one bridged link, multicast never on the host's network): each finds the others
at their announced gossip port with their node name from TXT, a member that stops sends its
goodbye and leaves the others' lists, another service type is not seen; and how
``mdns_service`` is written (Bifrost's ``_bifrost._tcp``) is normalised."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from backend_support import NetnsLan, netns_available
from rainbridge.cluster.discovery.base import DiscoveryConfigError
from rainbridge.cluster.discovery.mdns import make, normalise_service
from rainbridge.config.schema import DiscoveryConfig
from support import eventually

MEMBER = str(Path(__file__).with_name("mdns_member.py"))
GOSSIP = 7946


@pytest.mark.parametrize("text", ["_bifrost._tcp", "_bifrost._tcp.local", "_bifrost._tcp.local."])
def test_bifrost_service_forms_are_normalised(text):
    assert normalise_service(text) == "_bifrost._tcp.local."


def test_a_bad_service_type_names_the_field():
    with pytest.raises(DiscoveryConfigError, match=r"discovery\.mdns_service: expected"):
        normalise_service("bifrost")
    config = DiscoveryConfig(enabled=True, type="mdns", service_name="rainbridge")
    assert make(config, ("10.0.0.1", 1), "a", {}).service_type == "_rainbridge._tcp.local."
    with pytest.raises(DiscoveryConfigError, match=r"discovery\.mdns_service: required"):
        make(DiscoveryConfig(enabled=True, type="mdns"), ("10.0.0.1", 1), "a", {})


class Member:
    """A member process in a namespace; ``seen`` is its latest report."""

    def __init__(self, lan: NetnsLan, index: int, node: str, service: str) -> None:
        self.node = node
        self.ip = lan.ips[index]
        self.proc = subprocess.Popen(
            lan.command(index, sys.executable, MEMBER, self.ip, str(GOSSIP), node, service),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.seen: dict = {}
        self.stopped = False
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            report = json.loads(line)
            if report.get("stopped"):
                self.stopped = True
            else:
                self.seen = report

    def candidates(self) -> set[str]:
        return {f"{ip}:{port}" for ip, port in self.seen.get("candidates", [])}

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.write(b"stop\n")
            self.proc.stdin.flush()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._reader.join(5)


@pytest.fixture
def lan():
    why = netns_available()
    if why:
        pytest.skip(why)
    net = NetnsLan("md", 4).up()
    yield net
    net.down()


def test_members_in_three_namespaces_find_each_other_and_see_goodbyes(lan):
    members = [Member(lan, i, f"gw-{i}", "_bifrost._tcp") for i in range(3)]
    stranger = Member(lan, 3, "other-app", "_other._tcp")
    try:
        addrs = [f"{m.ip}:{GOSSIP}" for m in members]

        def everyone_sees_the_others():
            seen = [m.candidates() for m in members]
            want = [set(addrs) - {a} for a in addrs]
            return seen == want or seen

        eventually(everyone_sees_the_others, 20, "three members see each other")
        assert members[0].seen["nodes"] == {addrs[1]: "gw-1", addrs[2]: "gw-2"}  # from TXT
        assert members[0].seen["healthy"]
        assert stranger.candidates() == set()  # another service type is another cluster
        members[2].stop()
        assert members[2].stopped
        eventually(lambda: (members[0].candidates(), members[1].candidates())
                   == ({addrs[1]}, {addrs[0]}) or (members[0].candidates(),
                                                    members[1].candidates()),
                   10, "gw-2's goodbye removes it")
    finally:
        for m in [*members, stranger]:
            m.stop()
