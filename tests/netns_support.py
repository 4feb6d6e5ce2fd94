"""Network namespaces for partition tests: a hub namespace with a bridge, and one namespace
per member, linked to the bridge by a veth pair and holding one address of a private test
subnet. Nothing is added to the machine's own namespace; ``close()`` removes every namespace
(and with them their links) whatever happened.

Two ways to split the network: ``cut`` drops (nftables, in the members' namespaces) every
packet from the other side, for any split; ``unplug`` takes one member's link to the bridge
down (iproute2 only), which isolates that member from all others. Creating namespaces needs
root and Linux: a test that cannot have them fails in CI and is skipped elsewhere
(``unavailable``).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator, Sequence

import pytest

IP = ("ip", "iproute2")
NFT = ("nft", "nftables")


def run(*cmd: str, input: str | None = None) -> None:
    out = subprocess.run(cmd, capture_output=True, text=True, input=input, timeout=20)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: {out.stderr.strip() or out.stdout.strip()}")


class Net:
    """The namespaces of one test run: member ``i`` holds ``ips[i]`` on its ``eth0``."""

    def __init__(self, ips: Sequence[str]) -> None:
        self.ips = list(ips)
        self.prefix = f"rbtest-{secrets.token_hex(3)}"
        self.hub = f"{self.prefix}-hub"
        self.members = [f"{self.prefix}-{i}" for i in range(len(self.ips))]
        self.created: list[str] = []

    def add_ns(self, name: str) -> None:
        run("ip", "netns", "add", name)
        self.created.append(name)
        run("ip", "-n", name, "link", "set", "lo", "up")

    def build(self) -> None:
        self.add_ns(self.hub)
        run("ip", "-n", self.hub, "link", "add", "br0", "type", "bridge")
        run("ip", "-n", self.hub, "link", "set", "br0", "up")
        for i, ns in enumerate(self.members):
            self.add_ns(ns)
            # one end in the hub (on the bridge), the other in the member's namespace
            run("ip", "-n", self.hub, "link", "add", f"v{i}", "type", "veth", "peer", "name", "eth0", "netns", ns)
            run("ip", "-n", self.hub, "link", "set", f"v{i}", "master", "br0", "up")
            run("ip", "-n", ns, "addr", "add", f"{self.ips[i]}/24", "dev", "eth0")
            run("ip", "-n", ns, "link", "set", "eth0", "up")

    def exec_prefix(self, i: int) -> list[str]:
        """Run a command in member ``i``'s namespace (``ip netns exec`` execs it: same pid)."""
        return ["ip", "netns", "exec", self.members[i]]

    def cut(self, side: Sequence[int], other: Sequence[int]) -> None:
        """Drop everything (UDP and TCP) that reaches ``side`` from ``other`` (nftables)."""
        sources = ", ".join(self.ips[j] for j in other)
        rules = (
            "table inet rbtest_split {\n"
            "  chain input { type filter hook input priority 0; policy accept;\n"
            f"    ip saddr {{ {sources} }} counter drop\n"
            "  }\n"
            "}\n"
        )
        for i in side:
            run("ip", "netns", "exec", self.members[i], "nft", "-f", "-", input=rules)

    def heal(self) -> None:
        for ns in self.members:
            run("ip", "netns", "exec", ns, "nft", "delete", "table", "inet", "rbtest_split")

    def unplug(self, i: int) -> None:
        """Isolate member ``i``: its link to the bridge goes down (nothing in or out)."""
        run("ip", "-n", self.hub, "link", "set", f"v{i}", "down")

    def plug(self, i: int) -> None:
        run("ip", "-n", self.hub, "link", "set", f"v{i}", "up")

    def close(self) -> None:
        for ns in reversed(self.created):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=20)
        self.created.clear()


def skip_reason(tools: Sequence[tuple[str, str]] = (IP, NFT)) -> str | None:
    if sys.platform != "linux":
        return "network namespaces need Linux"
    if os.geteuid() != 0:
        return "creating network namespaces needs root (CAP_SYS_ADMIN, CAP_NET_ADMIN)"
    for tool, package in tools:
        if shutil.which(tool) is None:
            return f"`{tool}` is not installed (apt-get install {package})"
    return None


def in_ci(environ=os.environ) -> bool:
    """CI sets ``CI`` (GitHub Actions, GitLab, ...: ``true``); ``0``/``false``/empty do not count."""
    return environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def unavailable(reason: str, environ=os.environ) -> None:
    """A partition test cannot run here: a failure in CI (where namespaces must work, or
    the test would silently stop guarding anything), a skip on a developer's machine."""
    if in_ci(environ):
        pytest.fail(f"the partition test must run in CI, but {reason}", pytrace=False)
    pytest.skip(reason)


@contextlib.contextmanager
def network(ips: Sequence[str], tools: Sequence[tuple[str, str]] = (IP, NFT)) -> Iterator[Net]:
    """A built ``Net`` (or the test is skipped / failed as ``unavailable`` says)."""
    reason = skip_reason(tools)
    if reason:
        unavailable(reason)
    lab = Net(ips)
    try:
        try:
            lab.add_ns(lab.hub)
        except RuntimeError as exc:
            unavailable(f"cannot create a network namespace here: {exc}")
        lab.close()
        lab.build()
        yield lab
    finally:
        lab.close()
