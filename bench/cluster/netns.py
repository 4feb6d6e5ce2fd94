"""The benchmark's own network namespace: loopback only, with nftables for loss and counters.

Everything runs inside one namespace made for the run (``rbbench-<random>``): its loopback
is private, so members can use fixed ports on 127.x addresses, and nftables rules there
(packet loss, byte counters) touch nothing else on the machine. The harness re-executes
itself inside the namespace; the outer process deletes it afterwards and kills any process
still in it (by pid, from ``ip netns pids``), also after Ctrl-C.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys

TABLE = "rbbench"


def _run(*cmd: str, input: str | None = None) -> str:
    out = subprocess.run(cmd, capture_output=True, text=True, input=input, timeout=30)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: {(out.stderr or out.stdout).strip()}")
    return out.stdout


def unavailable() -> str | None:
    """Why the benchmark cannot make its namespace here (None: it can)."""
    if sys.platform != "linux":
        return "network namespaces need Linux"
    if os.geteuid() != 0:
        return "creating a network namespace needs root"
    for tool, package in (("ip", "iproute2"), ("nft", "nftables")):
        if shutil.which(tool) is None:
            return f"`{tool}` is missing (apt-get install {package})"
    return None


def run_inside(argv: list[str]) -> int:
    """Create a namespace, run ``argv`` (+ ``--netns NAME``) inside it, clean up; exit code."""
    name = f"rbbench-{secrets.token_hex(3)}"
    _run("ip", "netns", "add", name)
    child: subprocess.Popen | None = None
    try:
        _run("ip", "-n", name, "link", "set", "lo", "up")
        child = subprocess.Popen(["ip", "netns", "exec", name, *argv, "--netns", name])
        # SIGTERM (e.g. from `timeout`): pass it on and clean up like Ctrl-C, instead of
        # dying here and leaving the namespace behind.
        signal.signal(signal.SIGTERM, lambda *_: (child.send_signal(signal.SIGTERM), _interrupt()))
        while True:
            try:
                return child.wait()
            except KeyboardInterrupt:  # the child got the Ctrl-C too and is cleaning up
                try:
                    return child.wait(30)
                except subprocess.TimeoutExpired:
                    child.kill()
                    return child.wait()
    finally:
        if child is not None and child.poll() is None:
            child.kill()
            child.wait()
        _kill_leftovers(name)
        subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=30)


def _interrupt() -> None:
    raise KeyboardInterrupt


def _kill_leftovers(name: str) -> None:
    out = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True, timeout=30)
    for pid in out.stdout.split():
        try:
            os.kill(int(pid), signal.SIGCONT)
            os.kill(int(pid), signal.SIGKILL)
        except (ProcessLookupError, ValueError):
            pass


class Firewall:
    """nftables inside the namespace: random loss per cluster and tx byte counters."""

    def __init__(self) -> None:
        _run("nft", "-f", "-", input=(
            f"table inet {TABLE} {{\n"
            "  chain loss { type filter hook input priority 0; policy accept; }\n"
            "  chain tx { type filter hook output priority 0; policy accept; }\n"
            "}\n"
        ))
        self._loss: dict[str, int] = {}

    def set_loss(self, cidr: str, percent: int, port: int = 7946) -> None:
        """Drop ``percent`` % of the member-to-member packets (UDP and TCP) of the cluster
        in ``cidr``, independently per packet (nftables ``numgen random``); 0 removes it.

        A packet belongs to the cluster if it comes from ``port`` on an address in ``cidr``
        or goes to ``port`` on one — not if both ends are in ``cidr``: memberlist (Serf)
        dials TCP without binding, so inside the namespace its push-pulls and fallback
        pings come from 127.0.0.1 (rainbridge binds its member address). Matching on both
        ends let Serf's TCP ping through untouched, which hid Serf's failed probes at 10 %
        loss. Each packet gets one draw: both rules ``goto`` the same drop chain."""
        if percent:
            self._loss[cidr] = percent
        else:
            self._loss.pop(cidr, None)
        rules = [f"flush chain inet {TABLE} loss"]
        for net, pct in self._loss.items():
            chain = self._chain(net)
            rules += [
                f"add chain inet {TABLE} {chain}",
                f"flush chain inet {TABLE} {chain}",
                f"add rule inet {TABLE} {chain} numgen random mod 1000 < {pct * 10} counter drop",
                f"add rule inet {TABLE} loss ip saddr {net} th sport {port} goto {chain}",
                f"add rule inet {TABLE} loss ip daddr {net} th dport {port} goto {chain}",
            ]
        _run("nft", "-f", "-", input="\n".join(rules) + "\n")

    @staticmethod
    def _chain(cidr: str) -> str:
        return "drop_" + cidr.split("/")[0].replace(".", "_")

    def dropped(self, cidr: str) -> int:
        """Packets dropped so far for the cluster in ``cidr`` (0 if it never had loss)."""
        try:
            data = json.loads(_run("nft", "-j", "list", "chain", "inet", TABLE, self._chain(cidr)))
        except RuntimeError:
            return 0
        return sum(expr["counter"]["packets"] for item in data.get("nftables", [])
                   for expr in item.get("rule", {}).get("expr", []) if "counter" in expr)

    def count(self, ips: list[str], cidrs: list[str] = (), port: int = 7946) -> None:
        """Count the bytes each of ``ips`` sends (replaces the previous set), and per
        cluster in ``cidrs`` the bytes sent *from 127.0.0.1* to its member ``port``:
        memberlist (Serf) dials TCP without binding, so in the namespace its push-pulls and
        TCP pings leave from 127.0.0.1, not from the member's address (see ``set_loss``);
        counting by source address alone missed them (the answers, sent from the member's
        address, were counted)."""
        rules = [f"flush chain inet {TABLE} tx"]
        rules += [f"add rule inet {TABLE} tx ip saddr {ip} counter" for ip in ips]
        rules += [f'add rule inet {TABLE} tx ip saddr 127.0.0.1 ip daddr {cidr} th dport {port} '
                  f'counter comment "unbound {cidr}"' for cidr in cidrs]
        _run("nft", "-f", "-", input="\n".join(rules) + "\n")

    def sent_bytes(self) -> dict[str, int]:
        """Bytes by source address, and ``"unbound <cidr>"`` for each cluster's unbound
        TCP (see ``count``)."""
        data = json.loads(_run("nft", "-j", "list", "chain", "inet", TABLE, "tx"))
        out: dict[str, int] = {}
        for item in data.get("nftables", []):
            rule = item.get("rule")
            if not rule:
                continue
            ip, count = None, 0
            for expr in rule["expr"]:
                if "match" in expr:
                    ip = expr["match"]["right"]
                elif "counter" in expr:
                    count = expr["counter"]["bytes"]
            key = rule.get("comment") or ip
            if isinstance(key, str):
                out[key] = count
        return out
