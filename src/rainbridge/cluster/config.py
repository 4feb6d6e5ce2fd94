"""Membership tunables (memberlist's ``Config``), with LAN / WAN / Local presets.

All durations are in seconds (floats). The presets carry memberlist's own defaults, so a
rainbridge node and a HashiCorp memberlist / Serf node with the same preset time out,
suspect and retransmit alike. ``from_bifrost_gossip`` maps Bifrost's three
``cluster_config.gossip.config`` knobs onto these tunables (see its docstring).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from ..config.schema import ClusterConfig

Profile = Literal["lan", "wan", "local"]


@dataclass(frozen=True, slots=True)
class MembershipConfig:
    """Every field of memberlist's failure detector and gossip, with LAN defaults."""

    # -- failure detection (SWIM probe) --------------------------------------------------
    probe_interval: float = 1.0
    """Seconds between probes of the next member (round-robin). Scaled ×(health score+1)."""
    probe_timeout: float = 0.5
    """Seconds to wait for a direct ack before asking ``indirect_checks`` members to help
    (the 99th percentile RTT of the network). Scaled like ``probe_interval``."""
    indirect_checks: int = 3
    """Members asked to ping a member that missed a direct ping (any one ack suffices)."""
    disable_tcp_pings: bool = False
    """Skip the TCP ping fallback that runs alongside the indirect pings."""
    ping_retransmits: int = 2
    """Direct UDP pings re-sent to a member that missed the first, spread from
    ``probe_timeout`` to the probe deadline (same sequence number; any ack counts).
    memberlist sends none (0): at 10 % loss one lost ping or ack then rests on the indirect
    pings and on a TCP ping that a lost SYN (1 s retransmission) cannot rescue in time."""
    awareness_max_multiplier: int = 8
    """Lifeguard local health: probe interval/timeout grow up to this factor when this node
    misses nacks or has to refute. 1 disables Lifeguard's self-awareness."""

    # -- suspicion (Lifeguard) -----------------------------------------------------------
    suspicion_mult: int = 4
    """Suspicion timeout = suspicion_mult · max(1, log10(N)) · probe_interval (the minimum,
    reached with ``suspicion_mult - 2`` independent confirmations)."""
    suspicion_max_timeout_mult: int = 6
    """An unconfirmed suspicion lasts this many times the minimum. 1 disables Lifeguard's
    confirmation-driven timers (a fixed timeout, as in plain SWIM)."""

    # -- dissemination -------------------------------------------------------------------
    gossip_interval: float = 0.2
    """Seconds between gossip rounds (broadcasts that could not ride on probes)."""
    gossip_nodes: int = 3
    """Members gossiped to per round."""
    gossip_to_the_dead_time: float = 30.0
    """Seconds a dead member still receives gossip (so it can learn it must refute); also
    how long dead and left members stay in the member table before they are reaped."""
    retransmit_mult: int = 4
    """Each broadcast is sent retransmit_mult · ceil(log10(N+1)) times."""
    broadcast_queue_depth: int = 4096
    """Bound on queued broadcasts; beyond it the most-transmitted (then oldest) are dropped."""
    udp_buffer_size: int = 1400
    """Largest UDP payload we send, before label/encryption/CRC overhead (see
    ``Membership(packet_overhead=...)``)."""

    # -- anti-entropy, reconnect, reaping ------------------------------------------------
    push_pull_interval: float = 30.0
    """Seconds between full-state TCP exchanges with one random member (0 disables);
    scaled up above 32 members as memberlist's ``pushPullScale``."""
    tcp_timeout: float = 10.0
    """Stream timeout for push-pull, TCP ping and reliable user messages (driver side)."""
    reconnect_interval: float = 30.0
    """Seconds between attempts to push-pull with a random failed (dead, not left) member,
    so that a healed partition merges back. memberlist leaves this to Serf; we do it."""
    reconnect_timeout: float = 24 * 3600.0
    """How long a failed member stays on the reconnect list."""
    dead_node_reclaim_time: float = 0.0
    """After this many seconds a dead member's name may be claimed from another address
    (0: never, only once it has been reaped — memberlist's default)."""

    # -- Bifrost's gossip.config.success_threshold ---------------------------------------
    success_threshold: int = 0
    """Consecutive successful probes (by this node) before a member that comes back
    (from dead, left or suspect) counts as ``healthy`` again. 0: at once."""

    def __post_init__(self) -> None:
        positive = ("probe_interval", "probe_timeout", "gossip_interval", "tcp_timeout")
        for field in positive:
            if getattr(self, field) <= 0:
                raise ValueError(f"MembershipConfig.{field} must be > 0")
        if self.probe_timeout >= self.probe_interval:
            raise ValueError("MembershipConfig.probe_timeout must be < probe_interval")
        if self.awareness_max_multiplier < 1 or self.suspicion_max_timeout_mult < 1:
            raise ValueError("multipliers must be >= 1")
        if self.suspicion_mult < 1 or self.retransmit_mult < 1:
            raise ValueError("suspicion_mult and retransmit_mult must be >= 1")
        if min(self.indirect_checks, self.gossip_nodes, self.success_threshold,
               self.ping_retransmits) < 0:
            raise ValueError("counts must be >= 0")

    # -- presets -------------------------------------------------------------------------
    @classmethod
    def lan(cls) -> MembershipConfig:
        """memberlist's DefaultLANConfig."""
        return cls()

    @classmethod
    def wan(cls) -> MembershipConfig:
        """memberlist's DefaultWANConfig: slower probes, longer timeouts."""
        return cls(
            tcp_timeout=30.0,
            suspicion_mult=6,
            push_pull_interval=60.0,
            probe_timeout=3.0,
            probe_interval=5.0,
            gossip_nodes=4,
            gossip_interval=0.5,
            gossip_to_the_dead_time=60.0,
        )

    @classmethod
    def local(cls) -> MembershipConfig:
        """memberlist's DefaultLocalConfig (loopback; many members on one machine)."""
        return cls(
            tcp_timeout=1.0,
            indirect_checks=1,
            retransmit_mult=2,
            suspicion_mult=3,
            push_pull_interval=15.0,
            probe_timeout=0.2,
            probe_interval=1.0,
            gossip_interval=0.1,
            gossip_to_the_dead_time=15.0,
        )

    @classmethod
    def profile(cls, name: Profile) -> MembershipConfig:
        presets = {"lan": cls.lan, "wan": cls.wan, "local": cls.local}
        try:
            return presets[name]()
        except KeyError:
            raise ValueError(f"unknown gossip profile {name!r} (lan, wan or local)") from None

    def replace(self, **changes: object) -> MembershipConfig:
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]

    def without_lifeguard(self) -> MembershipConfig:
        """Plain SWIM timers (for comparisons): no health scaling, fixed suspicion timeout."""
        return self.replace(awareness_max_multiplier=1, suspicion_max_timeout_mult=1)


def from_bifrost_gossip(
    timeout_seconds: float,
    success_threshold: int,
    failure_threshold: int,
    base: MembershipConfig | None = None,
) -> MembershipConfig:
    """Map Bifrost's ``cluster_config.gossip.config`` onto SWIM/Lifeguard tunables.

    - ``failure_threshold`` (F) = ``suspicion_mult``: how many probe intervals a suspected
      member has to refute (after ``F - 2`` independent confirmations) before it is
      declared dead. F=3 is memberlist's Local value, 4 its LAN value.
    - ``timeout_seconds`` (T) = the expected time from a crash until every member has
      declared it dead, in a cluster of up to 10 members: about one interval until some
      member probes it, one for the failing probe, F intervals of confirmed suspicion, so
      ``probe_interval = T / (F + 2)``. The probe timeout stays the profile's (it is an RTT
      bound, not a detection knob) unless that would exceed half the interval. Larger
      clusters scale the suspicion part by log10(N), as memberlist does.
    - ``success_threshold`` (S) = consecutive successful probes before a member that came
      back from dead/left/suspect counts as healthy again (``Member.healthy``), which damps
      flapping members. Membership itself (JOIN) is not delayed.

    Bifrost's documented example {10, 3, 3} gives a 2 s probe interval, 0.5 s probe timeout
    and suspicion multiplier 3.
    """
    if timeout_seconds <= 0:
        raise ValueError("cluster_config.gossip.config.timeout_seconds must be > 0")
    if failure_threshold < 1:
        raise ValueError("cluster_config.gossip.config.failure_threshold must be >= 1")
    if success_threshold < 0:
        raise ValueError("cluster_config.gossip.config.success_threshold must be >= 0")
    base = base or MembershipConfig.lan()
    probe_interval = timeout_seconds / (failure_threshold + 2)
    probe_timeout = min(base.probe_timeout, probe_interval / 2)
    return base.replace(
        probe_interval=probe_interval,
        probe_timeout=probe_timeout,
        suspicion_mult=failure_threshold,
        success_threshold=success_threshold,
    )


BROKER_REFUSED = (
    "broker mode is not supported: rainbridge members sync with each other directly (a "
    "mesh: gossip plus point-to-point messages on the gossip port). Remove "
    "cluster_config.type or set it to \"mesh\"; cluster_config.broker is then ignored"
)


def knob_problems(cluster: ClusterConfig) -> list[tuple[str, str, str]]:
    """Bifrost's ``type`` / ``grpc`` / ``broker`` knobs, as (path, message, severity):
    ``type: broker`` is an error (start-up refuses it), a ``grpc`` block or a ``broker``
    block in mesh mode a warning (accepted, not used)."""
    out: list[tuple[str, str, str]] = []
    if cluster.type == "broker":
        out.append(("$.cluster_config.type", BROKER_REFUSED, "error"))
    elif cluster.broker is not None:
        out.append(("$.cluster_config.broker", "ignored: used only with type \"broker\"", "warning"))
    if cluster.grpc is not None:
        out.append(
            (
                "$.cluster_config.grpc",
                f"no dedicated sync channel is built: counter sync rides the gossip port "
                f"(gossip.port {cluster.gossip.port}, UDP and TCP); grpc.port "
                f"{cluster.grpc.port} is not opened",
                "warning",
            )
        )
    return out
