"""mDNS discovery through zeroconf between network namespaces this test makes (three
members on one bridged link, multicast never on the host's network): each finds the others
at their announced gossip port with their node name from TXT, a member that stops sends its
goodbye and leaves the others' lists, another service type is not seen; and how
``mdns_service`` is written (Bifrost's ``_bifrost._tcp``) is normalised."""

from __future__ import annotations

import pytest

from backend_support import MdnsMember, NetnsLan, netns_available
from rainbridge.cluster.discovery.base import DiscoveryConfigError
from rainbridge.cluster.discovery.mdns import make, normalise_service
from rainbridge.config.schema import DiscoveryConfig
from support import eventually

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


@pytest.fixture
def lan():
    why = netns_available()
    if why:
        pytest.skip(why)
    net = NetnsLan("md", 4).up()
    yield net
    net.down()


def test_members_in_three_namespaces_find_each_other_and_see_goodbyes(lan):
    members = [MdnsMember(lan, i, f"gw-{i}", "_bifrost._tcp") for i in range(3)]
    stranger = MdnsMember(lan, 3, "other-app", "_other._tcp")
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
