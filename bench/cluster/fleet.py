"""Cluster members as processes — rainbridge members or Serf agents — and what they report.

Both kinds are timed the same way: the harness reads each process's stdout as it comes and
stamps every line with its own monotonic clock. A rainbridge member prints ``EV join|failed|
left NAME`` from its event callback (``member.py``); a Serf agent logs ``serf:
EventMemberJoin|Failed|Leave: NAME`` at the moment memberlist notifies Serf. (Serf's event
handlers and RPC event stream are coalesced by the agent for about a second, so they would
not be a fair clock.) Serf's ``memberlist: Suspect NAME has failed, no acks received`` is
logged once per failed probe, where rainbridge counts ``probe_failures``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import sys
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
PORT = 7946
CLK_TCK = os.sysconf("SC_CLK_TCK")
READY_TIMEOUT_S = 60.0

_RB_EVENT = re.compile(r"^EV (join|failed|left) (\S+)")
_SERF_EVENT = re.compile(r"serf: EventMember(Join|Failed|Leave): (\S+)")
_SERF_KIND = {"Join": "join", "Failed": "failed", "Leave": "left"}
_SERF_SUSPECT = re.compile(r"memberlist: Suspect (\S+) has failed")


class BenchError(RuntimeError):
    """A process did not start or exited early (its output tail is in the message)."""


@dataclass(eq=False)
class Member:
    name: str
    ip: str
    proc: asyncio.subprocess.Process
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    exited: asyncio.Event = field(default_factory=asyncio.Event)
    # (kind, subject) -> when this member first reported it (harness monotonic clock)
    seen: dict[tuple[str, str], float] = field(default_factory=dict)
    events: list[tuple[float, str, str]] = field(default_factory=list)
    suspects: list[tuple[float, str]] = field(default_factory=list)  # Serf: failed probes
    stats: dict | None = None
    stats_event: asyncio.Event = field(default_factory=asyncio.Event)
    tail: deque = field(default_factory=lambda: deque(maxlen=40))
    paused: bool = False

    @property
    def pid(self) -> int:
        return self.proc.pid

    def cpu_ticks(self) -> int:
        """user + system CPU of the process, in clock ticks (0 once it is gone)."""
        try:
            with open(f"/proc/{self.pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            return 0
        return int(fields[11]) + int(fields[12])

    def signal(self, sig: int) -> None:
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)


class Fleet:
    """One cluster: ``kind`` "rainbridge" or "serf", members on 127.``net``.x.y:7946."""

    def __init__(self, kind: str, profile: str, net: int, logs: Path,
                 overrides: dict | None = None) -> None:
        self.kind = kind
        self.overrides = overrides or {}  # rainbridge: MembershipConfig fields to replace
        self.profile = profile
        self.net = net
        self.logs = logs
        self.members: dict[str, Member] = {}
        self._readers: list[asyncio.Task] = []

    @property
    def cidr(self) -> str:
        return f"127.{self.net}.0.0/16"

    def ip(self, block: int, index: int) -> str:
        return f"127.{self.net}.{block}.{index}"

    def alive_members(self) -> list[Member]:
        return [m for m in self.members.values() if m.proc.returncode is None]

    # ------------------------------------------------------------------ processes
    def _argv(self, name: str, ip: str, seed: str | None) -> list[str]:
        if self.kind == "rainbridge":
            argv = [sys.executable, str(HERE / "member.py"), name, ip, str(PORT), self.profile]
            return argv + ([seed] if seed else [])
        argv = ["serf", "agent", f"-node={name}", f"-bind={ip}:{PORT}", f"-rpc-addr={ip}:7373",
                f"-profile={self.profile}", "-log-level=info"]
        if seed:  # retried in the background, so a lossy network does not stop the agent
            argv += [f"-retry-join={seed}:{PORT}", "-retry-interval=1s"]
        return argv

    async def spawn(self, name: str, ip: str, seed: str | None) -> Member:
        proc = await asyncio.create_subprocess_exec(
            *self._argv(name, ip, seed),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1",
                 "RB_BENCH_CONFIG": json.dumps(self.overrides)},
            start_new_session=True,  # Ctrl-C reaches the harness only; it stops us in order
        )
        member = Member(name, ip, proc)
        self.members[name] = member
        self._readers.append(asyncio.create_task(self._read(member)))
        return member

    async def _read(self, m: Member) -> None:
        assert m.proc.stdout is not None
        log = (self.logs / f"{self.kind}-{m.name}.log").open("w")
        try:
            while True:
                raw = await m.proc.stdout.readline()
                if not raw:
                    break
                now = time.monotonic()
                line = raw.decode(errors="replace").rstrip()
                log.write(f"{now:.4f} {line}\n")
                m.tail.append(line)
                self._parse(m, line, now)
        finally:
            log.close()
            with contextlib.suppress(ProcessLookupError):
                await m.proc.wait()
            m.exited.set()

    def _parse(self, m: Member, line: str, now: float) -> None:
        if self.kind == "rainbridge":
            if line == "READY":
                m.ready.set()
            elif line.startswith("STATS "):
                m.stats = json.loads(line[6:])
                m.stats_event.set()
            elif match := _RB_EVENT.match(line):
                self._event(m, match.group(1), match.group(2), now)
            return
        if match := _SERF_EVENT.search(line):
            self._event(m, _SERF_KIND[match.group(1)], match.group(2), now)
        elif match := _SERF_SUSPECT.search(line):
            m.suspects.append((now, match.group(1)))
        elif "Serf agent running" in line:
            m.ready.set()

    @staticmethod
    def _event(m: Member, kind: str, subject: str, now: float) -> None:
        m.events.append((now, kind, subject))
        m.seen.setdefault((kind, subject), now)
        if kind == "join":  # a later return is a new life: forget how the old one ended
            m.seen.pop(("failed", subject), None)
            m.seen.pop(("left", subject), None)

    async def wait_ready(self, members: list[Member], timeout: float = READY_TIMEOUT_S) -> None:
        for m in members:
            _, pending = await asyncio.wait(
                [asyncio.create_task(m.ready.wait()), asyncio.create_task(m.exited.wait())],
                timeout=timeout, return_when=asyncio.FIRST_COMPLETED,
            )
            for task in pending:
                task.cancel()
            if not m.ready.is_set():
                tail = "\n".join(m.tail)
                raise BenchError(f"{self.kind} member {m.name} did not start:\n{tail}")

    async def stop(self, m: Member, sig: int = signal.SIGKILL, timeout: float = 10.0) -> None:
        m.signal(signal.SIGCONT)
        m.signal(sig)
        try:
            await asyncio.wait_for(m.exited.wait(), timeout)
        except TimeoutError:
            m.signal(signal.SIGKILL)
            await asyncio.wait_for(m.exited.wait(), 10)

    async def close(self) -> None:
        """Kill every member (no leave) and wait for them."""
        for m in self.members.values():
            m.signal(signal.SIGCONT)
            m.signal(signal.SIGKILL)
        for m in self.members.values():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(m.exited.wait(), 10)
        for task in self._readers:
            task.cancel()
        await asyncio.gather(*self._readers, return_exceptions=True)

    # ------------------------------------------------------------------ observations
    async def wait_seen(
        self, kinds: tuple[str, ...], subject: str, observers: list[Member], timeout: float
    ) -> dict[str, tuple[str, float]] | None:
        """Until every observer reported one of ``kinds`` about ``subject``: observer name ->
        (kind, first time). None if that did not happen within ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            got: dict[str, tuple[str, float]] = {}
            for o in observers:
                hits = [(o.seen[(k, subject)], k) for k in kinds if (k, subject) in o.seen]
                if hits:
                    t, k = min(hits)
                    got[o.name] = (k, t)
            if len(got) == len(observers):
                return got
            if time.monotonic() > deadline:
                return None
            await asyncio.sleep(0.02)

    def deaths(self, since: float, until: float, subjects: set[str] | None = None) -> Counter:
        """(observer, subject) -> how many failed events, in [since, until]."""
        out: Counter = Counter()
        for m in self.members.values():
            for t, kind, subject in m.events:
                if kind == "failed" and since <= t <= until and (
                    subjects is None or subject in subjects
                ):
                    out[(m.name, subject)] += 1
        return out

    async def probe_failures(self, members: list[Member]) -> int:
        """Failed probes so far, summed over ``members`` (rainbridge: its counter, asked
        with SIGUSR1; Serf: its "Suspect ... no acks received" log lines)."""
        if self.kind == "serf":
            return sum(len(m.suspects) for m in members)
        total = 0
        for m in members:
            m.stats_event.clear()
            m.signal(signal.SIGUSR1)
        for m in members:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(m.stats_event.wait(), 10)
            total += (m.stats or {}).get("m.probe_failures", 0)
        return total
